//! `meshprobe trace HOST`: an mtr-style report from the exporter's engine.
//!
//! Owns the subcommand's flags and their checks, resolution of the host (as `meshprobe ping`
//! does), and printing the report as text or JSON. The trace itself is [`super::trace`].

use std::time::Duration;

use super::{TraceOptions, render, trace};
use crate::icmp::Pinger;
use crate::ping_cli::resolve_for_command;

/// Options of the `trace` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Hostname or IP address to trace.
    pub host: String,
    /// Rounds: probes per hop.
    #[arg(short = 'c', long = "count", default_value_t = 10)]
    pub count: u32,
    /// Highest TTL (hop limit) probed.
    #[arg(short = 'm', long = "max-hops", default_value_t = 30)]
    pub max_hops: u8,
    /// Seconds between the starts of two rounds.
    #[arg(short = 'i', long = "interval", default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds each probe waits for its answer.
    #[arg(short = 'W', long = "timeout", default_value_t = 1.0)]
    pub timeout: f64,
    /// Payload size in bytes (0 means blackbox's 28-byte default; at least 8 keeps the Paris
    /// flow).
    #[arg(short = 's', long = "size", default_value_t = 0)]
    pub size: usize,
    /// Source address to send from.
    #[arg(short = 'I', long = "source")]
    pub source: Option<std::net::IpAddr>,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Print the report as JSON.
    #[arg(long = "json")]
    pub json: bool,
}

impl TraceArgs {
    /// The trace options, or what is wrong with the flags.
    pub fn options(&self) -> Result<TraceOptions, String> {
        if !(1..=1000).contains(&self.count) {
            return Err("count must be between 1 and 1000".into());
        }
        if self.max_hops == 0 || self.max_hops > 64 {
            return Err("max-hops must be between 1 and 64".into());
        }
        if !(self.interval.is_finite() && (0.01..=60.0).contains(&self.interval)) {
            return Err("interval must be between 0.01 and 60 seconds".into());
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 60.0) {
            return Err("timeout must be above 0 and at most 60 seconds".into());
        }
        if self.size != 0 && !(8..=crate::icmp::packet::MAX_PAYLOAD_SIZE).contains(&self.size) {
            return Err(format!(
                "size must be 0 (the 28-byte default) or 8 to {} (the Paris flow needs 8 bytes)",
                crate::icmp::packet::MAX_PAYLOAD_SIZE
            ));
        }
        Ok(TraceOptions {
            max_hops: self.max_hops,
            rounds: self.count,
            timeout: Duration::from_secs_f64(self.timeout),
            round_interval: Duration::from_secs_f64(self.interval),
            payload_size: self.size,
            source: self.source,
            ..TraceOptions::default()
        })
    }
}

/// Runs the trace and prints it; returns the exit code: 0 when the destination was reached,
/// 1 when not, 2 for bad flags, an unresolvable host or no ICMP socket.
pub async fn run(args: TraceArgs) -> i32 {
    let options = match args.options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("meshprobe trace: {message}");
            return 2;
        }
    };
    let target = match resolve_for_command("trace", &args.host, args.ipv4, args.ipv6).await {
        Ok(target) => target,
        Err(message) => {
            eprintln!("{message}");
            return 2;
        }
    };
    let pinger = Pinger::new();
    let traced = trace(&pinger, target.address, target.scope_id, &options).await;
    let printed = if args.json {
        format!("{:#}\n", render::json(&traced))
    } else {
        render::text(&traced)
    };
    // A closed stdout (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), printed.as_bytes());
    if traced.report.reached() { 0 } else { 1 }
}
