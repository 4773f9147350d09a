//! The packed charm: `charm/pack.sh` builds a zip with an executable dispatch, the binary, and
//! metadata.yaml / config.yaml / actions.yaml split out of charmcraft.yaml. This test packs the
//! real binary and checks the metadata Juju reads: a subordinate on juju-info (container scope),
//! the peer relation, the three Prometheus endpoints, the config options and the actions.

use std::process::Command;

use serde_json::Value;

fn yaml(text: &str, name: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
}

fn entry(archive: &std::path::Path, name: &str) -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode())"])
        .arg(archive)
        .arg(name)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The packed charm's path, removed on drop (also when an assertion fails).
struct Packed(std::path::PathBuf);

impl Drop for Packed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn packed_charm_has_juju_metadata_for_a_subordinate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let packed =
        Packed(std::env::temp_dir().join(format!("meshprobe-test-{}.charm", std::process::id())));
    let out = packed.0.as_path();
    let status = Command::new(root.join("charm/pack.sh"))
        .env("MESHPROBE_BINARY", env!("CARGO_BIN_EXE_meshprobe"))
        .env("OUT", out)
        .status()
        .expect("run pack.sh");
    assert!(status.success());
    let listing = Command::new("python3")
        .args(["-c", "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16))"])
        .arg(out)
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    for (file, mode) in [
        ("dispatch", "0o755"),
        ("meshprobe", "0o755"),
        ("metadata.yaml", ""),
        ("config.yaml", ""),
        ("actions.yaml", ""),
    ] {
        let line = listing
            .lines()
            .find(|l| l.split(' ').next() == Some(file))
            .unwrap_or_else(|| panic!("{file} missing: {listing}"));
        assert!(line.ends_with(mode), "{line}");
    }

    let metadata = yaml(&entry(out, "metadata.yaml"), "metadata.yaml");
    assert_eq!(metadata["name"], "meshprobe");
    assert_eq!(metadata["subordinate"], true);
    assert_eq!(metadata["requires"]["juju-info"]["interface"], "juju-info");
    assert_eq!(metadata["requires"]["juju-info"]["scope"], "container");
    assert_eq!(metadata["peers"]["mesh"]["interface"], "meshprobe_mesh");
    assert_eq!(
        metadata["provides"]["metrics-endpoint"]["interface"],
        "prometheus_scrape"
    );
    assert_eq!(metadata["provides"]["cos-agent"]["interface"], "cos_agent");
    assert_eq!(metadata["provides"]["cos-agent"]["scope"], "container");
    assert_eq!(
        metadata["provides"]["prometheus-manual"]["interface"],
        "prometheus-manual"
    );
    assert!(metadata.get("parts").is_none() && metadata.get("config").is_none());

    let config = yaml(&entry(out, "config.yaml"), "config.yaml");
    for (option, kind, default) in [
        ("mode", "string", Value::from("mesh")),
        ("networks", "string", Value::from("all")),
        ("interval", "string", Value::from("1s")),
        ("modules", "string", Value::from("")),
        ("port", "int", Value::from(9115)),
        ("allowed-targets", "string", Value::from("")),
    ] {
        assert_eq!(config["options"][option]["type"], kind, "{option}");
        assert_eq!(config["options"][option]["default"], default, "{option}");
    }
    let actions = yaml(&entry(out, "actions.yaml"), "actions.yaml");
    for action in ["show-targets", "probe", "show-jobs"] {
        assert!(actions[action]["description"].is_string(), "{action}");
    }
    assert_eq!(actions["probe"]["required"], serde_json::json!(["target"]));
    // The dispatch script execs the binary next to it.
    assert!(
        entry(out, "dispatch").contains("exec \"${JUJU_CHARM_DIR:-$(dirname \"$0\")}/meshprobe\"")
    );
}
