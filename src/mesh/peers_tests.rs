//! Unit tests of `peers.rs`: sources combined, errors reported once per change, labels
//! cleaned, and the allow-list applied.

use std::path::Path;

use super::*;
use crate::config::mesh::DnsPeer;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshprobe-peers-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn group(targets: &[&str], labels: &[(&str, &str)]) -> TargetGroup {
    TargetGroup {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        labels: std::sync::Arc::new(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

#[tokio::test]
async fn files_are_reread_on_change_and_bad_content_keeps_the_last_good() {
    let dir = temp_dir("reread");
    let json = write(
        &dir,
        "peers.json",
        r#"[{"targets": ["198.18.0.2"], "labels": {"peer": "b"}}]"#,
    );
    let yaml = write(
        &dir,
        "peers.yml",
        "- targets: [\"2001:2::3\"]\n  labels: {peer: c, network: lab}\n",
    );
    let mut loader = PeerLoader::new(PeerSources {
        files: vec![json.clone(), yaml.clone()],
        ..PeerSources::default()
    });
    let first = loader.refresh().await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert!(first.changed);
    let peers: Vec<&str> = first.entries.iter().map(PeerEntry::peer).collect();
    assert_eq!(peers, ["b", "c"]);
    assert_eq!(first.entries[1].labels["network"], *"lab");
    assert!(!loader.refresh().await.changed);

    write(
        &dir,
        "peers.json",
        r#"[{"targets": ["198.18.0.2", "198.18.0.4"], "labels": {"peer": "b"}}]"#,
    );
    let grown = loader.refresh().await;
    assert!(grown.changed);
    assert_eq!(grown.entries.len(), 3);

    write(
        &dir,
        "peers.json",
        "[{\"targets\": [\"not-an-ip\"], \"labels\": {\"peer\": \"b\"}}]",
    );
    let broken = loader.refresh().await;
    assert_eq!(broken.errors.len(), 1, "{:?}", broken.errors);
    assert!(broken.errors[0].contains("not-an-ip"));
    assert_eq!(broken.new_errors, broken.errors, "a new problem is logged");
    assert_eq!(broken.entries.len(), 3, "the last good content stays");
    assert!(!broken.changed);
    let again = loader.refresh().await;
    assert_eq!(again.errors, broken.errors, "still counted");
    assert!(again.new_errors.is_empty(), "but not logged again");

    std::fs::remove_file(&json).expect("remove");
    let missing = loader.refresh().await;
    assert_eq!(missing.errors.len(), 1);
    assert_eq!(missing.new_errors.len(), 1, "a different problem is logged");
    assert_eq!(missing.entries.len(), 3);
    assert!(
        missing.recovered.is_empty(),
        "still broken: {:?}",
        missing.recovered
    );

    write(
        &dir,
        "peers.json",
        r#"[{"targets": ["198.18.0.2"], "labels": {"peer": "b"}}]"#,
    );
    let fixed = loader.refresh().await;
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(fixed.recovered.len(), 1, "the recovery is logged");
    assert!(
        fixed.recovered[0].starts_with("peers file "),
        "{:?}",
        fixed.recovered
    );
    assert!(loader.refresh().await.recovered.is_empty(), "once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_sd_requires_peer_labels_addresses_and_unreserved_label_names() {
    let path = Path::new("x.json");
    let limits = FileLimits {
        max_bytes: 1 << 20,
        max_targets: 100,
    };
    let parse = |text: &str| parse_file_sd(text.as_bytes(), path, limits);
    assert!(parse("[{\"targets\": [\"198.18.0.1\"]}]").is_err());
    assert!(
        parse("[{\"targets\": [\"198.18.0.1:9100\"], \"labels\": {\"peer\": \"a\"}}]").is_err()
    );
    assert!(parse("{\"targets\": []}").is_err());
    assert_eq!(parse(""), Ok(Vec::new()));
    assert_eq!(parse("[]"), Ok(Vec::new()));
    for name in [
        "le",
        "quantile",
        "type",
        "__meta_x",
        "address",
        "ip_protocol",
        "a-b",
        "0a",
    ] {
        let text = format!(
            "[{{\"targets\": [\"198.18.0.1\"], \"labels\": {{\"peer\": \"a\"}}}},\
             {{\"targets\": [\"198.18.0.2\"], \"labels\": {{\"peer\": \"b\", \"{name}\": \"x\"}}}}]"
        );
        let error = parse(&text).expect_err(name);
        assert!(
            error.starts_with("entry 2 (peer \"b\"): ") && error.contains(name),
            "{name}: {error}"
        );
    }
}

#[test]
fn label_values_lose_hidden_characters_and_are_capped() {
    assert_eq!(clean_label_value("node-b"), None);
    assert_eq!(clean_label_value("ünïcode ok"), None);
    assert_eq!(
        clean_label_value("evil\u{202E}gnp.exe\u{0}\u{7}\u{200B}\u{2066}x"),
        Some("evilgnp.exex".to_string())
    );
    let long = "n".repeat(5000);
    let capped = clean_label_value(&long).expect("capped");
    assert_eq!(capped.chars().count(), MAX_LABEL_VALUE_CHARS);
    assert!(capped.starts_with(&"n".repeat(119)) && capped.contains('~'));
    let other = clean_label_value(&format!("{long}x")).expect("capped");
    assert_ne!(capped, other, "long names stay apart");
    let labels = LabelSet::new([("peer", "\u{202E}\u{0}"), ("rack", "r1")]);
    let cleaned = cleaned_labels(&labels);
    assert!(cleaned["peer"].starts_with("peer-"), "{cleaned:?}");
    assert_eq!(cleaned.get("rack"), Some("r1"));
}

#[tokio::test]
async fn allowed_targets_and_cleaning_apply_to_every_source() {
    let dir = temp_dir("allowed");
    let file = write(
        &dir,
        "peers.json",
        "[{\"targets\": [\"198.18.0.7\", \"10.0.0.1\"], \"labels\": {\"peer\": \"f\\u202eile\"}}]",
    );
    let mut loader = PeerLoader::new(PeerSources {
        static_groups: vec![
            group(&["198.18.0.5"], &[("peer", "inside")]),
            group(&["198.19.0.5"], &[("peer", "outside")]),
        ],
        files: vec![file],
        dns: vec![DnsPeer {
            name: "localhost".into(),
            labels: BTreeMap::new(),
        }],
        allowed_targets: vec!["198.18.0.0/24".parse().expect("net")],
        ..PeerSources::default()
    });
    let snapshot = loader.refresh().await;
    let kept: Vec<(String, &str)> = snapshot
        .entries
        .iter()
        .map(|e| (e.address.to_string(), e.peer()))
        .collect();
    assert_eq!(
        kept,
        [
            ("198.18.0.5".to_string(), "inside"),
            ("198.18.0.7".to_string(), "file")
        ]
    );
    // 10.0.0.1 from the file, 198.19.0.5 from static, and localhost's addresses.
    assert!(snapshot.not_allowed >= 3, "{}", snapshot.not_allowed);
    let mut out = String::new();
    render(&mut out);
    assert!(out.contains("meshprobe_mesh_peers_not_allowed "), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
