//! Headless Chromium for page tests: loads a URL inside a test namespace (so the browser can reach
//! nothing but the namespace's own links) with a fresh, empty profile, and returns the DOM it
//! built or writes a screenshot. Also a small reader for the attributes of serialized elements.
//!
//! Tests that use it are `#[ignore]`d and fail when `/usr/bin/chromium` is missing, saying how to
//! install it. A browser that hangs is killed (by its PID) after a minute.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Namespace;

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The flags every run uses (no sandbox: tests run as root).
pub const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);
static NEXT_PROFILE: AtomicUsize = AtomicUsize::new(0);

/// Fails the calling test unless Chromium is installed.
pub fn require_chromium() {
    super::require_tool(CHROMIUM, "chromium");
}

/// Runs Chromium in `namespace` with `args` and a fresh profile directory; panics with its
/// stderr when it fails or hangs.
fn run(namespace: &Namespace, args: &[&str]) -> Output {
    let profile = super::scratch_dir().join(format!(
        "chromium-{}",
        NEXT_PROFILE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).expect("create profile dir");
    let user_data_dir = format!("--user-data-dir={}", profile.display());
    let child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, CHROMIUM])
        .args(FLAGS)
        .arg(&user_data_dir)
        .args(args)
        // Keep everything the browser writes inside the throw-away profile.
        .env("HOME", &profile)
        .env("XDG_CONFIG_HOME", profile.join("config"))
        .env("XDG_CACHE_HOME", profile.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    let started = Instant::now();
    // Wait on another thread so a hung browser can be killed by its PID.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output = match receiver.recv_timeout(BROWSER_DEADLINE) {
        Ok(output) => output.expect("wait for chromium"),
        Err(_) => {
            // SAFETY: kill on the PID of the child we spawned, which has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("chromium did not finish within {BROWSER_DEADLINE:?}");
        }
    };
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium {args:?} failed after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The DOM Chromium built for `url`, serialized.
pub fn dump_dom(namespace: &Namespace, url: &str) -> String {
    let output = run(namespace, &["--dump-dom", url]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes a PNG screenshot of `url` at `width`×`height` to `path`.
pub fn screenshot(namespace: &Namespace, url: &str, path: &Path, width: u32, height: u32) {
    let target = format!("--screenshot={}", path.display());
    let size = format!("--window-size={width},{height}");
    run(namespace, &[&target, &size, url]);
}

/// Width and height from a PNG's IHDR chunk, or `None` when `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let signature = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != signature || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let number =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((number(16), number(20)))
}

/// The directory for CI artifacts: `<target dir>/artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = target_tmp.parent().unwrap_or(target_tmp).join("artifacts");
    std::fs::create_dir_all(&dir).expect("create artifacts dir");
    dir
}

/// One serialized start tag: its name and attributes (entities decoded).
#[derive(Debug, Clone)]
pub struct Element {
    pub tag: String,
    pub attributes: BTreeMap<String, String>,
}

impl Element {
    pub fn attribute(&self, name: &str) -> &str {
        self.attributes.get(name).map_or("", String::as_str)
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.attribute("class")
            .split_whitespace()
            .any(|c| c == class)
    }
}

fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every start tag named `tag` in serialized HTML, with its attributes.
pub fn elements(html: &str, tag: &str) -> Vec<Element> {
    let opening = format!("<{tag}");
    let mut found = Vec::new();
    for (start, _) in html.match_indices(&opening) {
        let rest = &html[start + opening.len()..];
        if !rest.starts_with([' ', '>', '/']) {
            continue;
        }
        let mut attributes = BTreeMap::new();
        let mut cursor = rest;
        loop {
            cursor = cursor.trim_start();
            if cursor.is_empty() || cursor.starts_with('>') || cursor.starts_with("/>") {
                break;
            }
            let name_end = cursor
                .find(|c: char| c == '=' || c == '>' || c.is_whitespace())
                .unwrap_or(cursor.len());
            let name = cursor[..name_end].to_string();
            cursor = &cursor[name_end..];
            let mut value = String::new();
            if let Some(quoted) = cursor.strip_prefix("=\"") {
                let value_end = quoted.find('"').unwrap_or(quoted.len());
                value = decode_entities(&quoted[..value_end]);
                cursor = quoted.get(value_end + 1..).unwrap_or("");
            }
            attributes.insert(name, value);
        }
        found.push(Element {
            tag: tag.to_string(),
            attributes,
        });
    }
    found
}
