//! What a test needs from the machine: root with network namespaces, or a system tool.
//!
//! Tests that need either are `#[ignore]`d, so a plain `cargo test` (as any user) lists them as
//! ignored instead of passing them without running. `./test.sh` (as root) installs the tools and
//! runs them with `--include-ignored`. A test that runs was asked for, so a missing prerequisite
//! fails it with a message naming the fix; it never skips. Shared by `support` and the charm
//! simulator (`charm_sim`, included by path), and free of other test code.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// How to run the ignored tests, for failure messages.
const HOW: &str =
    "run the ignored tests as root with ./test.sh (or `cargo test -- --include-ignored`)";

/// Panics unless this process can create network namespaces (root, iproute2). Checked once per
/// process by creating and deleting a namespace.
pub fn namespaces() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let name = format!("mpt-check-{}", std::process::id());
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ip (apt-get install iproute2): {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`ip netns add` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        Ok(())
    });
    if let Err(why) = check {
        panic!("this test needs root and network namespaces ({why}); {HOW}");
    }
}

/// Panics unless `program` (an absolute path) is installed, naming the Debian package.
pub fn tool(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "this test needs {program} (apt-get install --no-install-recommends {package}); {HOW}"
    );
}
