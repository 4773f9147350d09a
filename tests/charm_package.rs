//! The packed charm: `charm/pack.sh` builds a zip with an executable dispatch, the binary,
//! metadata.yaml / config.yaml / actions.yaml split out of charmcraft.yaml, and manifest.yaml.
//! This test packs the real binary and checks what Juju's charm reader (juju/juju
//! `internal/charm`: charmarchive.go, meta.go, manifest.go, base.go) requires: a manifest whose
//! bases have a name, a string channel and supported architectures (without one, Juju 4 refuses
//! the charm and Juju 3 finds no bases); that every declared base's glibc is at least the highest
//! GLIBC_ symbol version the packed binary needs (objdump -T) and its architecture is the
//! binary's; metadata with name, summary and description, a container-scoped requires for a
//! subordinate and no reserved `juju-` names; typed config defaults; valid action names; and the
//! relations the charm publishes to.

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
        ("manifest.yaml", ""),
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
    assert_eq!(
        metadata["provides"]["grafana-dashboard"]["interface"],
        "grafana_dashboard"
    );
    assert!(metadata.get("parts").is_none() && metadata.get("config").is_none());
    for key in ["name", "summary", "description"] {
        assert!(metadata[key].is_string(), "metadata {key} must be a string");
    }
    // A manifest makes the metadata "v2", where min-juju-version and series are refused.
    for key in ["min-juju-version", "series", "deployment"] {
        assert!(
            metadata.get(key).is_none(),
            "metadata v2 must not have {key}"
        );
    }
    for role in ["provides", "requires", "peers"] {
        for (name, relation) in metadata[role].as_object().into_iter().flatten() {
            let container = relation["scope"] == "container";
            let reserved = name == "juju" || name.starts_with("juju-");
            assert!(
                !reserved || (role == "requires" && container),
                "{role} {name} uses a reserved name"
            );
            assert!(relation["interface"].is_string(), "{role} {name}");
        }
    }

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
    check_manifest(out);
}

/// glibc of each Ubuntu release (its libc6 package).
fn glibc_of(channel: &str) -> Option<(u32, u32)> {
    match channel {
        "20.04" => Some((2, 31)),
        "22.04" => Some((2, 35)),
        "24.04" => Some((2, 39)),
        _ => None,
    }
}

/// Juju's supported architectures (core/arch).
const ARCHITECTURES: &[&str] = &["amd64", "arm64", "ppc64el", "s390x", "riscv64"];

/// Extracts one archive member to a file.
fn extract(archive: &std::path::Path, name: &str, to: &std::path::Path) {
    let status = Command::new("python3")
        .args(["-c", "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))"])
        .arg(archive)
        .arg(name)
        .arg(to)
        .status()
        .expect("python3");
    assert!(status.success(), "extract {name}");
}

fn check_manifest(archive: &std::path::Path) {
    let text = entry(archive, "manifest.yaml");
    let manifest = yaml(&text, "manifest.yaml");
    let bases = manifest["bases"].as_array().expect("manifest has bases");
    assert!(!bases.is_empty(), "{text}");
    // The binary as packed: highest GLIBC_ version and architecture.
    let binary = std::env::temp_dir().join(format!("meshprobe-packed-{}", std::process::id()));
    extract(archive, "meshprobe", &binary);
    let symbols = Command::new("objdump")
        .arg("-T")
        .arg(&binary)
        .output()
        .expect("objdump (binutils) is installed");
    assert!(symbols.status.success());
    let needed = String::from_utf8_lossy(&symbols.stdout)
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("the binary links glibc");
    let header = Command::new("objdump")
        .arg("-f")
        .arg(&binary)
        .output()
        .expect("objdump -f");
    let header = String::from_utf8_lossy(&header.stdout).to_string();
    let arch = if header.contains("architecture: i386:x86-64") {
        "amd64"
    } else if header.contains("architecture: aarch64") {
        "arm64"
    } else {
        panic!("unexpected binary architecture: {header}")
    };
    let _ = std::fs::remove_file(&binary);
    for base in bases {
        assert_eq!(base["name"], "ubuntu", "{base}");
        // Juju's schema wants a string; an unquoted 24.04 would be a float.
        let channel = base["channel"].as_str().expect("channel is a string");
        let glibc = glibc_of(channel).unwrap_or_else(|| panic!("unknown base {channel}"));
        assert!(
            glibc >= needed,
            "ubuntu@{channel} has glibc {glibc:?}, the packed binary needs GLIBC_{needed:?}"
        );
        let archs = base["architectures"].as_array().expect("architectures");
        assert!(!archs.is_empty(), "{base}");
        for a in archs {
            let a = a.as_str().expect("architecture string");
            assert!(ARCHITECTURES.contains(&a), "{a} is not a Juju architecture");
            assert_eq!(a, arch, "declared {a}, the binary is {arch}");
        }
    }
    // Config defaults match their types; action names are what Juju accepts.
    let config = yaml(&entry(archive, "config.yaml"), "config.yaml");
    for (name, option) in config["options"].as_object().expect("options") {
        let kind = option["type"].as_str().expect("type");
        let default = &option["default"];
        let ok = match kind {
            "string" => default.is_string() || default.is_null(),
            "int" => default.is_i64() || default.is_u64() || default.is_null(),
            "float" => default.is_number() || default.is_null(),
            "boolean" => default.is_boolean() || default.is_null(),
            _ => false,
        };
        assert!(ok, "config {name}: type {kind}, default {default}");
    }
    let actions = yaml(&entry(archive, "actions.yaml"), "actions.yaml");
    for name in actions.as_object().expect("actions").keys() {
        let valid = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-');
        assert!(valid, "action name {name}");
    }
}
