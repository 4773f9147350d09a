//! The `mesh.trace:` section: when the mesh traces the path to a target on its own, and how.
//!
//! Owns the key names (`mesh.trace.max_per_minute`, `mesh.trace.interval`, `mesh.trace.rounds`,
//! `mesh.trace.max_hops`), their defaults and validation with errors naming the field. Running
//! the traces is `crate::mesh::trace_auto`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{format_go_duration, parse_go_duration};

/// Default `mesh.trace.max_per_minute`.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 2;
/// The shortest `mesh.trace.interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// The validated `mesh.trace` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// Most traces started per minute, all targets together (0: the mesh never traces).
    pub max_per_minute: u32,
    /// Trace every target this often too, as a baseline (`None`: only targets that turn
    /// lossy or dead).
    pub interval: Option<Duration>,
    /// Probes per hop.
    pub rounds: u32,
    pub max_hops: u8,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            max_per_minute: DEFAULT_MAX_PER_MINUTE,
            interval: None,
            rounds: 10,
            max_hops: 30,
        }
    }
}

/// `mesh.trace` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrace {
    max_per_minute: Option<i64>,
    interval: Option<String>,
    rounds: Option<i64>,
    max_hops: Option<i64>,
}

fn in_range(
    field: &str,
    value: Option<i64>,
    range: (i64, i64),
    default: i64,
) -> Result<i64, String> {
    match value {
        None => Ok(default),
        Some(n) if (range.0..=range.1).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "field \"mesh.trace.{field}\": {n} is not between {} and {}",
            range.0, range.1
        )),
    }
}

impl RawTrace {
    pub(super) fn validate(self) -> Result<TraceConfig, String> {
        let defaults = TraceConfig::default();
        let max_per_minute = in_range(
            "max_per_minute",
            self.max_per_minute,
            (0, 60),
            i64::from(defaults.max_per_minute),
        )?;
        let rounds = in_range("rounds", self.rounds, (1, 100), i64::from(defaults.rounds))?;
        let max_hops = in_range(
            "max_hops",
            self.max_hops,
            (1, 64),
            i64::from(defaults.max_hops),
        )?;
        let interval = match self.interval.as_deref().map(str::trim) {
            None | Some("off") | Some("") => None,
            Some(text) => {
                let every = parse_go_duration(text)
                    .map_err(|e| format!("field \"mesh.trace.interval\": {e}"))?;
                if every.is_zero() {
                    None
                } else if every < MIN_INTERVAL {
                    return Err(format!(
                        "field \"mesh.trace.interval\": {} is too short: at least 1m (or off)",
                        format_go_duration(every)
                    ));
                } else {
                    Some(every)
                }
            }
        };
        if interval.is_some() && max_per_minute == 0 {
            return Err(
                "field \"mesh.trace.interval\": needs mesh.trace.max_per_minute above 0 \
                 (0 turns tracing off)"
                    .into(),
            );
        }
        Ok(TraceConfig {
            max_per_minute: max_per_minute as u32,
            interval,
            rounds: rounds as u32,
            max_hops: max_hops as u8,
        })
    }
}

/// The `/config` view of `mesh.trace`.
#[derive(Serialize)]
pub(super) struct TraceView {
    max_per_minute: u32,
    interval: String,
    rounds: u32,
    max_hops: u8,
}

impl TraceConfig {
    pub(super) fn view(&self) -> TraceView {
        TraceView {
            max_per_minute: self.max_per_minute,
            interval: self
                .interval
                .map_or_else(|| "off".to_string(), format_go_duration),
            rounds: self.rounds,
            max_hops: self.max_hops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TraceConfig, String> {
        let raw: RawTrace = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        raw.validate()
    }

    #[test]
    fn defaults_trace_problems_only_twice_a_minute() {
        let config = parse("{}").expect("valid");
        assert_eq!(config, TraceConfig::default());
        assert_eq!(config.max_per_minute, 2);
        assert_eq!(config.interval, None);
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("max_per_minute: -1", "mesh.trace.max_per_minute"),
            ("max_per_minute: 61", "mesh.trace.max_per_minute"),
            ("rounds: 0", "mesh.trace.rounds"),
            ("max_hops: 65", "mesh.trace.max_hops"),
            ("interval: 10s", "at least 1m"),
            ("interval: soon", "mesh.trace.interval"),
            (
                "{interval: 5m, max_per_minute: 0}",
                "needs mesh.trace.max_per_minute",
            ),
        ];
        for (yaml, wanted) in cases {
            let error = parse(yaml).expect_err(yaml);
            assert!(error.contains(wanted), "{yaml}: {error}");
        }
        assert!(parse("bogus: 1").is_err(), "unknown keys are errors");
    }

    #[test]
    fn a_schedule_and_limits_are_kept() {
        let config =
            parse("{interval: 10m, max_per_minute: 6, rounds: 20, max_hops: 16}").expect("valid");
        assert_eq!(config.interval, Some(Duration::from_secs(600)));
        assert_eq!(
            (config.max_per_minute, config.rounds, config.max_hops),
            (6, 20, 16)
        );
        assert_eq!(parse("interval: off").expect("valid").interval, None);
    }
}
