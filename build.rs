//! Bakes the git revision into the binary for `lagbudget_build_info`. Outside a git checkout
//! (a source tarball, a Docker build context without .git) the revision is "unknown".

use std::process::Command;

fn main() {
    let revision = std::env::var("LAGBUDGET_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LAGBUDGET_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=LAGBUDGET_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
