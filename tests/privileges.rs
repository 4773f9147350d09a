//! Privilege handling with the real binary run as an unprivileged user (nobody): without raw
//! socket rights or a usable ping_group_range it says exactly how to fix it; with
//! ping_group_range opened it works unprivileged through ping sockets.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

/// A copy of the binary that user `nobody` can execute wherever the checkout lives.
fn binary_for_nobody() -> std::path::PathBuf {
    let dir = fresh_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.join("meshprobe");
    std::fs::copy(binary(), &path).expect("copy binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn ping_as_nobody(net: &TestNet, target: &str) -> std::process::Output {
    let binary = binary_for_nobody();
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.prober.name,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&binary)
        .args(["ping", "-c", "2", "-i", "0.1", target])
        .output()
        .expect("run ping as nobody")
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn unprivileged_user_without_rights_gets_the_three_fixes() {
    require_namespaces!();
    let net = TestNet::new();
    let output = ping_as_nobody(&net, TARGET_V4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for fix in ["root", "CAP_NET_RAW", "ping_group_range"] {
        assert!(stderr.contains(fix), "message lacks {fix}: {stderr}");
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn unprivileged_user_pings_through_ping_sockets_when_allowed() {
    require_namespaces!();
    let net = TestNet::new();
    net.prober
        .sysctl("net.ipv4.ping_group_range", "0 2147483647");
    for target in [TARGET_V4, TARGET_V6] {
        let output = ping_as_nobody(&net, target);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("2 packets transmitted, 2 received"),
            "{stdout}"
        );
        // ping's numbering, not the engine's random sequence numbers.
        for seq in [1, 2] {
            assert!(
                stdout.contains(&format!("bytes from {target}: icmp_seq={seq} ")),
                "{stdout}"
            );
        }
    }
}

#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn ping_reports_errors_and_loss() {
    require_namespaces!();
    let net = TestNet::new();
    let run = |args: &[&str]| {
        let mut full = vec![binary(), "ping"];
        full.extend_from_slice(args);
        Command::new("ip")
            .args(["netns", "exec", &net.prober.name])
            .args(&full)
            .output()
            .expect("ping")
    };
    let unreachable = run(&["-c", "1", UNREACHABLE_V4]);
    let stdout = String::from_utf8_lossy(&unreachable.stdout);
    assert_eq!(unreachable.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("From 198.18.0.254") && stdout.contains("destination unreachable"),
        "{stdout}"
    );
    let silent = run(&["-c", "2", "-i", "0.1", "-W", "0.2", SILENT_V4]);
    let stdout = String::from_utf8_lossy(&silent.stdout);
    assert!(
        stdout.contains("2 packets transmitted, 0 received, 100.0% packet loss"),
        "{stdout}"
    );
    let bad = run(&["-c", "1", "host:1"]);
    assert_eq!(bad.status.code(), Some(2));
}
