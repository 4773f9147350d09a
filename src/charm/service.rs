//! The meshprobe service on the unit's machine: its systemd unit and config file, and the
//! systemctl calls that install, start, reload, stop and remove it.
//!
//! Owns the generated files' content. The service binary is the charm's own `meshprobe` (the
//! charm directory survives between hooks and is replaced on upgrade, when the service is
//! restarted). Membership changes never touch the service: they only rewrite the peers file it
//! watches.

use std::path::Path;

use super::model::{CharmConfig, SharedNetwork};
use super::state::{Paths, write_if_changed};
use super::tools::HookTools;
use crate::config::Config;

const SERVICE: &str = "meshprobe.service";

/// The standalone unit (`config/meshprobe.service`); the charm's unit is derived from it, so
/// both get the same hardening, `Type=notify` and watchdog.
pub const STANDALONE_UNIT: &str = include_str!("../../config/meshprobe.service");

/// The systemd unit for a charm directory and port: the standalone unit with the charm's binary,
/// config file and port, and without the standalone-only comments and `/etc/default` file.
pub fn unit_file(charm_dir: &Path, config_file: &Path, port: u16) -> String {
    let mut unit = String::from("# Written by the meshprobe charm; changes are overwritten.\n");
    let mut in_section = false;
    for line in STANDALONE_UNIT.lines() {
        in_section |= line.starts_with('[');
        if !in_section || line.starts_with("EnvironmentFile=") || line.starts_with("Documentation=")
        {
            continue;
        }
        if line.starts_with("Description=") {
            unit.push_str("Description=meshprobe ICMP exporter and mesh prober (Juju charm)");
        } else if line.starts_with("ExecStart=") {
            unit.push_str(&format!(
                "ExecStart={binary} --config.file={config} --web.listen-address=:{port}",
                binary = charm_dir.join("meshprobe").display(),
                config = config_file.display(),
            ));
        } else {
            unit.push_str(line);
        }
        unit.push('\n');
    }
    unit
}

/// The service's config file: the user's modules, `allowed_targets`, and (mesh modes) the mesh
/// section reading the peers file. Validated with the same parser the service uses.
pub fn config_file(
    config: &CharmConfig,
    own_networks: &[SharedNetwork],
    paths: &Paths,
) -> Result<String, String> {
    let mut text = String::from("# Written by the meshprobe charm; changes are overwritten.\n");
    let allowed: Vec<String> = if config.allowed_targets.is_empty() {
        let mut cidrs: Vec<String> = own_networks.iter().map(|n| n.cidr.to_string()).collect();
        cidrs.sort();
        cidrs.dedup();
        cidrs
    } else {
        config.allowed_targets.clone()
    };
    if !allowed.is_empty() {
        let quoted: Vec<String> = allowed.iter().map(|c| format!("{c:?}")).collect();
        text.push_str(&format!("allowed_targets: [{}]\n", quoted.join(", ")));
    }
    if config.mode.mesh() {
        text.push_str(&format!(
            "mesh:\n  interval: {:?}\n  refresh_interval: 2s\n  peers:\n    files: [{:?}]\n",
            config.interval,
            paths.peers_file().display().to_string()
        ));
    }
    let modules = config.modules.trim();
    if modules.is_empty() {
        let embedded = crate::config::EMBEDDED_CONFIG;
        text.push_str(embedded);
    } else if modules.starts_with("modules:") {
        text.push_str(modules);
    } else {
        text.push_str("modules:\n");
        for line in modules.lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Config::parse(&text, "charm config").map_err(|e| format!("modules: {}", e.message))?;
    Ok(text)
}

/// Writes the unit and config files; returns (unit changed, config changed).
pub fn write_files(
    tools: &dyn HookTools,
    paths: &Paths,
    charm_dir: &Path,
    config: &CharmConfig,
    own_networks: &[SharedNetwork],
) -> Result<(bool, bool), String> {
    let config_text = config_file(config, own_networks, paths)?;
    let unit_text = unit_file(charm_dir, &paths.service_config(), config.port);
    let io = |e: std::io::Error| format!("cannot write service files: {e}");
    let config_changed =
        write_if_changed(&paths.service_config(), config_text.as_bytes()).map_err(io)?;
    let unit_changed = write_if_changed(&paths.systemd_unit(), unit_text.as_bytes()).map_err(io)?;
    if unit_changed {
        tools
            .systemctl(&["daemon-reload"])
            .map_err(|e| e.to_string())?;
        tools
            .systemctl(&["enable", SERVICE])
            .map_err(|e| e.to_string())?;
    }
    Ok((unit_changed, config_changed))
}

pub fn start(tools: &dyn HookTools) -> Result<(), String> {
    tools
        .systemctl(&["start", SERVICE])
        .map_err(|e| e.to_string())
}

pub fn restart(tools: &dyn HookTools) -> Result<(), String> {
    tools
        .systemctl(&["restart", SERVICE])
        .map_err(|e| e.to_string())
}

/// SIGHUP: the service re-reads its config without dropping counters.
pub fn reload(tools: &dyn HookTools) -> Result<(), String> {
    tools
        .systemctl(&["reload", SERVICE])
        .map_err(|e| e.to_string())
}

pub fn stop(tools: &dyn HookTools) -> Result<(), String> {
    tools
        .systemctl(&["stop", SERVICE])
        .map_err(|e| e.to_string())
}

/// Disables the service and removes every file the charm wrote.
pub fn remove(tools: &dyn HookTools, paths: &Paths) -> Result<(), String> {
    let _ = tools.systemctl(&["disable", SERVICE]);
    for path in [
        paths.systemd_unit(),
        paths.service_config(),
        paths.peers_file(),
        paths.cache(),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
        }
    }
    tools
        .systemctl(&["daemon-reload"])
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::model::Mode;

    fn config(modules: &str) -> CharmConfig {
        CharmConfig {
            mode: Mode::Both,
            networks: vec!["all".into()],
            interval: "1s".into(),
            modules: modules.into(),
            port: 9115,
            allowed_targets: Vec::new(),
            group: String::new(),
            paths_between_groups: 2,
        }
    }

    #[test]
    fn charm_unit_keeps_every_hardening_line_of_the_standalone_unit() {
        let unit = unit_file(
            Path::new("/var/lib/juju/agents/unit-m-0/charm"),
            Path::new("/var/lib/meshprobe/meshprobe.yml"),
            9200,
        );
        assert!(unit.contains(
            "\nExecStart=/var/lib/juju/agents/unit-m-0/charm/meshprobe \
             --config.file=/var/lib/meshprobe/meshprobe.yml --web.listen-address=:9200\n"
        ));
        assert!(!unit.contains("EnvironmentFile=") && !unit.contains("$ARGS"));
        let kept = |line: &&str| {
            !line.starts_with('#')
                && !line.is_empty()
                && ![
                    "ExecStart=",
                    "Description=",
                    "Documentation=",
                    "EnvironmentFile=",
                ]
                .iter()
                .any(|key| line.starts_with(key))
        };
        let standalone: Vec<&str> = STANDALONE_UNIT.lines().filter(kept).collect();
        assert!(standalone.contains(&"Type=notify"));
        assert!(standalone.contains(&"AmbientCapabilities=CAP_NET_RAW"));
        for line in standalone {
            assert!(unit.lines().any(|l| l == line), "charm unit lacks {line:?}");
        }
    }

    #[test]
    fn config_file_is_valid_for_every_modules_form() {
        let paths = Paths {
            root: "/tmp/x".into(),
        };
        let networks = [SharedNetwork {
            address: "198.18.10.1".parse().unwrap(),
            cidr: "198.18.10.0/24".parse().unwrap(),
            interface: "eth0".into(),
        }];
        for modules in [
            "",
            "modules:\n  icmp:\n    prober: icmp\n",
            "icmp:\n  prober: icmp\n  timeout: 3s\n",
        ] {
            let text = config_file(&config(modules), &networks, &paths).expect("valid");
            let parsed = Config::parse(&text, "t").expect("parses");
            assert!(parsed.modules.contains_key("icmp"));
            assert_eq!(parsed.allowed_targets.len(), 1);
            assert!(parsed.mesh.is_some());
        }
        assert!(config_file(&config("icmp: [broken"), &networks, &paths).is_err());
        assert!(
            config_file(
                &config("icmp:\n  prober: icmp\n  icmp:\n    ttl: 300\n"),
                &networks,
                &paths
            )
            .is_err()
        );
    }
}
