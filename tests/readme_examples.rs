//! Every YAML example in the README can be copied as it is: each meshprobe config block (one
//! with a top-level `modules:`, `mesh:` or `allowed_targets:`) passes `meshprobe --config.check`,
//! and each Prometheus block (a whole `scrape_configs:` file, or a scrape job to go under one)
//! passes `promtool check config` where promtool is installed. Nothing here sends a packet.
//! The README's peers file is its example, config/peers.example.json, put where the snippet
//! says, since `--config.check` reads peers files too.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

const PROMTOOL: &str = "/usr/bin/promtool";
const INSTALLED_PEERS: &str = "/etc/meshprobe/peers.json";

/// (line of the opening fence, text) of every ```yaml block.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```yaml") => {
                current = Some((index + 1, String::new()));
            }
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn has_top_level_key(text: &str, keys: &[&str]) -> bool {
    text.lines()
        .any(|line| keys.iter().any(|key| line.starts_with(&format!("{key}:"))))
}

fn failure(what: &str, line: usize, output: &std::process::Output) -> String {
    format!(
        "README.md:{line}: {what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn readme_yaml_examples_are_valid() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let markdown = std::fs::read_to_string(&readme).expect("read README.md");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/peers.example.json");
    let example_peers = write_config(
        "peers.json",
        &std::fs::read_to_string(example).expect("read config/peers.example.json"),
    );
    let mut failures = Vec::new();
    let mut meshprobe_configs = 0;
    for (line, text) in yaml_blocks(&markdown) {
        if has_top_level_key(&text, &["modules", "mesh", "allowed_targets"]) {
            meshprobe_configs += 1;
            // The README's peers file is config/peers.example.json installed in /etc/meshprobe;
            // --config.check reads it, so put that example where the snippet points.
            let text = text.replace(INSTALLED_PEERS, path_str(&example_peers));
            let file = write_config("readme.yml", &text);
            let output = Command::new(binary())
                .args(["--config.check", "--config.file", path_str(&file)])
                .output()
                .expect("run meshprobe --config.check");
            if !output.status.success() {
                failures.push(failure("meshprobe --config.check", line, &output));
            }
        } else if Path::new(PROMTOOL).exists()
            && (has_top_level_key(&text, &["scrape_configs"])
                || text.trim_start().starts_with("- job_name"))
        {
            let whole = if has_top_level_key(&text, &["scrape_configs"]) {
                text.clone()
            } else {
                format!("scrape_configs:\n{text}")
            };
            let file = write_config("prometheus.yml", &whole);
            let output = Command::new(PROMTOOL)
                .args(["check", "config", path_str(&file)])
                .output()
                .expect("run promtool");
            if !output.status.success() {
                failures.push(failure("promtool check config", line, &output));
            }
        }
        // Web config examples name certificate files and a bcrypt hash to fill in; their
        // fields are checked by the web config's own tests.
    }
    assert!(
        meshprobe_configs >= 3,
        "found only {meshprobe_configs} meshprobe config blocks: is the extraction broken?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
