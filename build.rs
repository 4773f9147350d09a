//! Records what `meshprobe --version` shows besides the crate version: the git commit (when
//! built from a git checkout with git installed), the build date (`SOURCE_DATE_EPOCH` when set,
//! for reproducible builds) the compiler's version and the target platform. Anything it cannot find becomes
//! `unknown`: the build never fails for want of git or `date`.

use std::process::Command;

/// Runs `program args` and returns its trimmed stdout if it succeeded with some output.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=MESHPROBE_BUILD_COMMIT");
    // A new commit moves HEAD or the branch it points at; rebuild then (only for paths that
    // exist: cargo reruns every time for a missing one).
    for reference in ["HEAD", "packed-refs"] {
        watch_git_path(reference);
    }
    if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
        watch_git_path(&branch);
    }
    let commit = std::env::var("MESHPROBE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => output(
            "date",
            &["-u", "-d", &format!("@{epoch}"), "+%Y%m%d-%H:%M:%S"],
        ),
        Err(_) => output("date", &["-u", "+%Y%m%d-%H:%M:%S"]),
    }
    .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rust_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let platform = format!(
        "{}/{}",
        std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_else(|_| "unknown".into()),
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "unknown".into())
    );
    println!("cargo:rustc-env=MESHPROBE_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=MESHPROBE_PLATFORM={platform}");
    println!("cargo:rustc-env=MESHPROBE_BUILD_DATE={date}");
    println!("cargo:rustc-env=MESHPROBE_RUST_VERSION={rust_version}");
}

fn watch_git_path(reference: &str) {
    if let Some(path) = output("git", &["rev-parse", "--git-path", reference])
        && std::path::Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
}
