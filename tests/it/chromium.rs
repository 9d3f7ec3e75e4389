//! Headless Chromium for the suite's browser checks (the status page in `paging.rs`, the
//! embeddable example in `example_updating.rs`): one bounded run per call, with a profile of
//! its own, killed if it outlives its limit. Chromium is the Debian package `chromium`, which
//! `scripts/test` installs when run as root.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails with a message naming the package when Chromium is not installed.
pub fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: this test needs the Debian package `chromium` \
         (scripts/test installs it when run as root: apt-get install chromium)"
    );
}

/// Runs Chromium headless with `args` and `url`; kills it after `limit`.
pub fn chromium(args: &[String], url: &str, dir: &Path, name: &str) -> (String, String) {
    let profile = dir.join(format!("chromium-profile-{name}"));
    let stdout_path = dir.join(format!("chromium-{name}.out"));
    let stderr_path = dir.join(format!("chromium-{name}.err"));
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
    let limit = Duration::from_secs(45);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}):\n{stderr}"
    );
    println!("chromium {name}: {:.2} s", started.elapsed().as_secs_f64());
    (stdout, stderr)
}
