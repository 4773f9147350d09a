//! A real Prometheus (Debian's `prometheus` package) inside a test namespace, and helpers to
//! read its HTTP API answers. Killed by PID on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Namespace, build_request, grafana, http_exchange, in_namespace, repo_path};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const PROMETHEUS_PORT: u16 = 9090;

/// A Prometheus server inside a namespace; killed (by PID) on drop.
pub struct Prometheus {
    child: Child,
    namespace: String,
    log_path: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config`, storing into `data_dir`, with `extra_flags` (e.g.
    /// `--enable-feature=native-histograms`).
    pub fn start(
        namespace: &Namespace,
        config: &Path,
        data_dir: &Path,
        extra_flags: &[&str],
    ) -> Prometheus {
        let log_path = data_dir.with_extension("log");
        let log = File::create(&log_path).expect("prometheus log");
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace.name, PROMETHEUS])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .args(extra_flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            namespace: namespace.name.clone(),
            log_path,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An instant query; `Err` with Prometheus's error text for a failed one.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let data = self.api(&format!("/api/v1/query?query={encoded}"))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The `data` of a successful API answer.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let request = build_request("GET", path, &[]);
        let response = in_namespace(&self.namespace, move || {
            http_exchange(PROMETHEUS_PORT, &request)
        })
        .map_err(|e| format!("prometheus not answering: {e}"))?;
        let body: Value = serde_json::from_str(&response.body)
            .map_err(|e| format!("bad JSON from prometheus ({e}): {}", response.body))?;
        if body["status"] != "success" {
            return Err(format!("{path}: {}", body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// Runs every query of config/grafana-dashboard.json (variables substituted); those whose
    /// expression `must_answer` picks must return data.
    pub fn check_dashboard(&self, must_answer: impl Fn(&str) -> bool) {
        let dashboard = grafana::load_dashboard();
        let variables = grafana::variable_names(&dashboard);
        for query in grafana::queries(&dashboard) {
            let expr = grafana::substitute(&query.expr, &variables);
            let result = self
                .query(&expr)
                .unwrap_or_else(|e| panic!("{}: {e}", query.place));
            if must_answer(&query.expr) {
                assert!(
                    !result.is_empty(),
                    "{} returned nothing: {expr}",
                    query.place
                );
            }
        }
    }

    /// Polls `promql` until `accept` holds for its result (30 s at most).
    pub fn wait_for(&self, promql: &str, accept: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(promql);
            if let Ok(samples) = &result
                && accept(samples)
            {
                return samples.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {promql}: last result {result:?}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a sample in a query result.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The samples whose label `key` equals `wanted`.
pub fn with_label<'a>(samples: &'a [Value], key: &str, wanted: &str) -> Vec<&'a Value> {
    samples
        .iter()
        .filter(|s| s["metric"][key] == wanted)
        .collect()
}

pub fn single_value(samples: &[Value], key: &str, wanted: &str) -> f64 {
    let matching = with_label(samples, key, wanted);
    assert_eq!(matching.len(), 1, "{key}={wanted} in {samples:?}");
    value(matching[0])
}

/// config/prometheus.yml with the test's targets, 1 s intervals and nothing else changed (the
/// relabel rules and the mesh job are used as shipped).
pub fn prometheus_config(probe_targets: &[&str]) -> String {
    let text = std::fs::read_to_string(repo_path("config/prometheus.yml")).expect("example");
    let mut config: Value = serde_saphyr::from_str(&text).expect("example parses");
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["scrape_timeout"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let jobs = config["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs");
    let probe_job = jobs
        .iter_mut()
        .find(|job| job["metrics_path"] == "/probe")
        .expect("a /probe job");
    probe_job["static_configs"] = serde_json::json!([{ "targets": probe_targets }]);
    // JSON is YAML: Prometheus reads it as is.
    serde_json::to_string_pretty(&config).expect("serialize")
}
