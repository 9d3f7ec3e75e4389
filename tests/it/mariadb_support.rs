//! Private MariaDB servers for replica tests: a primary with a binary log and a
//! replica of it by GTID, each with its own datadir, port and socket in a temp dir owned by
//! the `mysql` user. The machine's server on 3306 is never touched. Every wait is bounded, and
//! both servers are killed and their files removed on drop, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};

use crate::support::{closed_port, poll_until, unique};

/// The least-privilege account the daemon uses (the grants of docs/src/probes/mysql_replica.md).
pub const DAEMON_USER: &str = "lagbudget";
pub const DAEMON_PASSWORD: &str = "lb-test-secret-pw";

/// A MariaDB primary and one replica of it.
pub struct MariaDbPair {
    pub primary_port: u16,
    pub replica_port: u16,
    dir: PathBuf,
    primary: Option<Child>,
    replica: Option<Child>,
}

impl MariaDbPair {
    /// Installs one datadir, copies it for the replica, starts both servers, creates the
    /// replication and daemon accounts on the primary and starts replication by GTID.
    pub async fn start() -> MariaDbPair {
        let mariadbd = mariadbd();
        let dir = std::env::temp_dir().join(unique("lagbudget_mariadb"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Owned by `pair` from here on, so a failure below still removes it.
        let mut pair = MariaDbPair {
            primary_port: closed_port(),
            replica_port: closed_port(),
            dir,
            primary: None,
            replica: None,
        };
        chown_mysql(&pair.dir);
        let primary_data = pair.dir.join("primary");
        install_datadir(&primary_data);
        // A copy of a fresh datadir is a fresh server: quicker than a second install.
        let status = Command::new("cp")
            .args([
                "-a",
                path_str(&primary_data),
                path_str(&pair.dir.join("replica")),
            ])
            .status()
            .expect("cp");
        assert!(status.success(), "copying the datadir");
        pair.primary = Some(pair.spawn(&mariadbd, "primary", pair.primary_port, 1));
        pair.replica = Some(pair.spawn(&mariadbd, "replica", pair.replica_port, 2));
        let mut primary = pair.wait_accepting(pair.primary_port).await;
        let mut replica = pair.wait_accepting(pair.replica_port).await;
        primary
            .query_drop(format!(
                "CREATE USER repl@'%' IDENTIFIED BY 'repl-pw';
                 GRANT REPLICATION SLAVE ON *.* TO repl@'%';
                 CREATE USER {DAEMON_USER}@'%' IDENTIFIED BY '{DAEMON_PASSWORD}';
                 GRANT CREATE, INSERT, UPDATE, SELECT ON lagbudget.* TO {DAEMON_USER}@'%';
                 GRANT SLAVE MONITOR ON *.* TO {DAEMON_USER}@'%';
                 CREATE DATABASE app;
                 CREATE TABLE app.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY,
                                          at DOUBLE NOT NULL) ENGINE=InnoDB;"
            ))
            .await
            .expect("accounts on the primary");
        replica
            .query_drop(format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl',
                 MASTER_PASSWORD='repl-pw', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
                 START SLAVE;",
                pair.primary_port
            ))
            .await
            .expect("start replication");
        // The accounts replicate too: the replica is in sync once the daemon's user is there.
        let replica = tokio::sync::Mutex::new(replica);
        let synced = poll_until(Duration::from_secs(30), || async {
            let users: Option<u64> = replica
                .lock()
                .await
                .query_first(format!(
                    "SELECT COUNT(*) FROM mysql.user WHERE user = '{DAEMON_USER}'"
                ))
                .await
                .expect("count users");
            (users == Some(1)).then_some(())
        })
        .await;
        if synced.is_none() {
            panic!(
                "the replica did not catch up within 30 s: {}",
                pair.replica_status().await
            );
        }
        pair
    }

    fn spawn(&self, mariadbd: &Path, name: &str, port: u16, server_id: u32) -> Child {
        let data = self.dir.join(name);
        let log = std::fs::File::create(self.dir.join(format!("{name}.out"))).expect("log");
        Command::new(mariadbd)
            .args([
                "--no-defaults".to_owned(),
                format!("--datadir={}", path_str(&data)),
                "--user=mysql".to_owned(),
                format!("--port={port}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!(
                    "--socket={}",
                    path_str(&self.dir.join(format!("{name}.sock")))
                ),
                format!(
                    "--pid-file={}",
                    path_str(&self.dir.join(format!("{name}.pid")))
                ),
                format!(
                    "--log-error={}",
                    path_str(&self.dir.join(format!("{name}.err")))
                ),
                format!("--server-id={server_id}"),
                "--log-bin=mysql-bin".to_owned(),
                "--skip-name-resolve".to_owned(),
                "--innodb-buffer-pool-size=16M".to_owned(),
                "--innodb-use-native-aio=0".to_owned(),
                "--innodb-flush-log-at-trx-commit=2".to_owned(),
                "--sync-binlog=0".to_owned(),
            ])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", mariadbd.display()))
    }

    async fn wait_accepting(&self, port: u16) -> Conn {
        poll_until(Duration::from_secs(30), || async {
            Conn::new(root_opts(port)).await.ok()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "MariaDB on port {port} did not accept connections within 30 s; log:\n{}",
                self.logs()
            )
        })
    }

    fn logs(&self) -> String {
        ["primary.err", "replica.err"]
            .iter()
            .map(|file| std::fs::read_to_string(self.dir.join(file)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The daemon's source URL for the primary or the replica.
    pub fn url(&self, port: u16) -> String {
        format!("mysql://{DAEMON_USER}:{DAEMON_PASSWORD}@127.0.0.1:{port}")
    }

    pub async fn root(&self, port: u16) -> Conn {
        Conn::new(root_opts(port))
            .await
            .unwrap_or_else(|e| panic!("root on port {port}: {e}"))
    }

    /// `STOP SLAVE SQL_THREAD`, `START SLAVE` and the like, on the replica.
    pub async fn on_replica(&self, sql: &str) {
        let mut conn = self.root(self.replica_port).await;
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
    }

    /// `Slave_IO_Running`, `Slave_SQL_Running` and `Seconds_Behind_Master` as MariaDB reports
    /// them (`NULL` shown as such).
    pub async fn replica_status(&self) -> String {
        let mut conn = self.root(self.replica_port).await;
        let row: Option<Row> = conn.query_first("SHOW SLAVE STATUS").await.expect("status");
        let _ = conn.disconnect().await;
        let Some(row) = row else {
            return "not a replica".to_owned();
        };
        let get = |name: &str| -> String {
            match row.get_opt::<Option<String>, &str>(name) {
                Some(Ok(Some(value))) => value,
                Some(Ok(None)) => "NULL".to_owned(),
                _ => "?".to_owned(),
            }
        };
        format!(
            "Slave_IO_Running={} Slave_SQL_Running={} Seconds_Behind_Master={} Last_Error={:?}",
            get("Slave_IO_Running"),
            get("Slave_SQL_Running"),
            get("Seconds_Behind_Master"),
            get("Last_Error")
        )
    }

    /// Kills the replica (SIGKILL): the probe must go down, never read as caught up.
    pub fn kill_replica(&mut self) {
        if let Some(mut child) = self.replica.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the primary (SIGKILL): the heartbeat writer fails from then on.
    pub fn kill_primary(&mut self) {
        if let Some(mut child) = self.primary.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed replica again on the same port and datadir; replication resumes.
    pub async fn restart_replica(&mut self) {
        let child = self.spawn(&mariadbd(), "replica", self.replica_port, 2);
        self.replica = Some(child);
        let mut conn = self.wait_accepting(self.replica_port).await;
        // A replica killed mid-way restarts with its threads stopped unless told otherwise.
        let _ = conn.query_drop("START SLAVE").await;
        let _ = conn.disconnect().await;
    }
}

impl Drop for MariaDbPair {
    fn drop(&mut self) {
        for child in [self.primary.take(), self.replica.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mariadb-install-db` into `data`. Tried twice: a bootstrap server can fail to start when
/// several tests (or other suites) start servers at the same moment.
fn install_datadir(data: &Path) {
    let mut last = String::new();
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(data);
        let output = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", path_str(data)),
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                // Passed to the bootstrap server: no Linux AIO contexts to run out of.
                "--innodb-use-native-aio=0",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("mariadb-install-db must be installed for this test (scripts/test installs mariadb-server): {e}")
            });
        if output.status.success() {
            return;
        }
        last = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    panic!("mariadb-install-db failed twice:\n{last}");
}

fn root_opts(port: u16) -> Opts {
    Opts::from_url(&format!("mysql://root@127.0.0.1:{port}/mysql")).expect("root URL")
}

/// The server binary: `/usr/sbin` is not on every PATH.
fn mariadbd() -> PathBuf {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("mariadbd must be installed for this test (scripts/test installs mariadb-server)")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn chown_mysql(dir: &Path) {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        let status = Command::new("chown")
            .args(["-R", "mysql:mysql", path_str(dir)])
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", dir.display());
    }
}
