//! What `--config.check` verifies about the `mesh:` section beyond the file's own syntax,
//! where it can be done offline on this host: every peers file exists and parses (a missing
//! file, a trailing comma in JSON), and every interface named in `networks:` exists here.
//!
//! It reads files and asks the kernel for interface indexes; it never resolves a name or sends
//! a packet, so DNS peers and Juju spaces are left to the running service.

use crate::config::mesh::MeshConfig;
use crate::config::network::NetworkSelector;
use crate::mesh::peer_file::{FileLimits, WatchedFile};

/// Every problem found, each naming the peers file or the network selector.
pub fn offline_problems(mesh: &MeshConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let limits = FileLimits::of(&mesh.peers);
    for path in &mesh.peers.files {
        let mut file = WatchedFile::default();
        file.refresh(path, limits);
        if let Some(problem) = file.problem() {
            problems.push(format!("mesh.peers.files: {}: {problem}", path.display()));
        }
    }
    for selector in &mesh.networks {
        if let NetworkSelector::Interface(name) = selector {
            let exists = std::ffi::CString::new(name.as_str())
                .ok()
                .and_then(|c_name| crate::sys::interface_index(&c_name))
                .is_some();
            if !exists {
                problems.push(format!(
                    "mesh.networks: there is no interface {name:?} on this host"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn missing_and_broken_peer_files_and_unknown_interfaces_are_reported() {
        let dir = std::env::temp_dir().join(format!("meshprobe-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let broken = dir.join("broken.json");
        std::fs::write(&broken, "[{\"targets\": [\"198.18.0.1\"]},]").expect("write");
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            "[{\"targets\": [\"198.18.0.1\"], \"labels\": {\"peer\": \"a\"}}]",
        )
        .expect("write");
        let missing = dir.join("missing.json");
        let text = format!(
            "mesh:\n  networks: [lo, mpnosuch0]\n  peers:\n    files: [{}, {}, {}]\n",
            good.display(),
            broken.display(),
            missing.display()
        );
        let config = Config::parse(&text, "test.yml").expect("valid syntax");
        let mesh = config.mesh.expect("mesh");
        let problems = offline_problems(&mesh);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("broken.json: invalid JSON: trailing comma"),
            "{problems:?}"
        );
        assert!(problems[1].contains("missing.json"), "{problems:?}");
        assert!(problems[2].contains("mpnosuch0"), "{problems:?}");
    }
}
