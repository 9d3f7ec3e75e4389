//! A scripted MongoDB replica set for `mongodb` tests: `tests/peers/mongodb_peer.py`, one
//! MockupDB server per member on free ports of 127.0.0.1, started from the project's venv
//! (`scripts/test` installs mockupdb and pymongo into `.venv`) and killed on drop. Not a
//! database: the test sets each member's state and optime, the primary's oplog and clock, and
//! whether a member applies the heartbeat collection; the peer answers `hello`,
//! `replSetGetStatus`, `find` and `update` from that state with documents shaped as MongoDB
//! 6/7 documents them.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

use serde_json::Value;

use crate::support::PATIENCE;

pub struct MongoPeer {
    pub ports: Vec<u16>,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl MongoPeer {
    /// Starts a set of `members` members: member 0 PRIMARY, the others SECONDARY, every optime
    /// at (1, 1) in term 1, the primary's clock the real one.
    pub fn start(members: usize) -> MongoPeer {
        let python = python();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mongodb_peer.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(members.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} could not start: {e}; run scripts/test, which installs mockupdb into .venv",
                    python.display()
                )
            });
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = channel();
        // A thread owns the blocking reads, so that every wait for a line is bounded.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut peer = MongoPeer {
            ports: Vec::new(),
            child,
            stdin,
            lines,
        };
        let first = peer.line("the peer's ports");
        let ports = first
            .strip_prefix("ports ")
            .unwrap_or_else(|| panic!("the peer said {first:?}, not its ports"));
        peer.ports = ports
            .split_whitespace()
            .map(|port| port.parse().expect("a port"))
            .collect();
        assert_eq!(peer.ports.len(), members);
        peer
    }

    fn line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("no line from the MongoDB peer for {what}: {e}"))
    }

    /// The name of member `index`, as the set and the config call it.
    pub fn member(&self, index: usize) -> String {
        format!("127.0.0.1:{}", self.ports[index])
    }

    /// A URI seeding every member, for set `rs0`.
    pub fn uri(&self) -> String {
        let hosts: Vec<String> = (0..self.ports.len()).map(|i| self.member(i)).collect();
        format!("mongodb://{}/?replicaSet=rs0", hosts.join(","))
    }

    /// Merges `change` into the peer's state (see the script's header) and waits until it
    /// took effect.
    pub fn set(&mut self, change: Value) {
        writeln!(self.stdin, "{change}").expect("write to the peer");
        self.stdin.flush().expect("flush");
        let answer = self.line("an answer to a change");
        assert_eq!(answer, "ok", "the peer refused {change}");
    }
}

impl Drop for MongoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// LAGBUDGET_PYTHON, else `.venv/bin/python` of this package.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("LAGBUDGET_PYTHON") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs mockupdb into .venv (or set \
         LAGBUDGET_PYTHON)",
        path.display()
    );
    path
}
