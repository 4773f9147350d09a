//! `meshprobe ping HOST`: a human-friendly ping on the same engine the exporter uses.
//!
//! Owns argument handling, per-reply lines and the closing summary (iputils style). Each echo is
//! one [`Pinger::echo`] call, so what this prints is exactly what `/probe` would measure.

use std::time::{Duration, Instant};

use crate::icmp::{Answer, EchoFailure, EchoRequest, Family, Pinger, check_permissions};
use crate::resolve;

/// Options of the `ping` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Hostname or IP address to ping.
    pub host: String,
    /// Stop after this many echo requests (default: until interrupted).
    #[arg(short = 'c', long = "count")]
    pub count: Option<u64>,
    /// Seconds between echo requests.
    #[arg(short = 'i', long = "interval", default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long = "timeout", default_value_t = 1.0)]
    pub timeout: f64,
    /// Payload size in bytes (0 means blackbox's 28-byte default).
    #[arg(short = 's', long = "size", default_value_t = 0)]
    pub size: usize,
    /// TTL / hop limit of the requests.
    #[arg(short = 't', long = "ttl", default_value_t = 64)]
    pub ttl: u8,
    /// Set the DF bit (IPv4).
    #[arg(short = 'M', long = "dont-fragment")]
    pub dont_fragment: bool,
    /// Source address to send from.
    #[arg(short = 'I', long = "source")]
    pub source: Option<std::net::IpAddr>,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
}

/// Resolves a command's host as `ping` and `trace` do (`-4`/`-6`, else IPv4 with fallback)
/// and checks that an ICMP socket can be opened for it; the error is the line to print.
pub async fn resolve_for_command(
    command: &str,
    host: &str,
    ipv4: bool,
    ipv6: bool,
) -> Result<resolve::ResolvedTarget, String> {
    let (preferred, fallback) = match (ipv4, ipv6) {
        (true, _) => (Family::V4, false),
        (_, true) => (Family::V6, false),
        _ => (Family::V4, true),
    };
    let fail = |message: String| format!("meshprobe {command}: {message}");
    resolve::check_target_syntax(host).map_err(fail)?;
    let target = resolve::resolve(host, preferred, fallback)
        .await
        .map_err(|error| fail(error.to_string()))?;
    check_permissions(Family::of(&target.address)).map_err(|error| fail(error.to_string()))?;
    Ok(target)
}

#[derive(Default)]
struct Summary {
    transmitted: u64,
    received: u64,
    errors: u64,
    rtts_ms: Vec<f64>,
}

/// Runs the ping loop; returns the process exit code (0 if any reply came back).
pub async fn run(args: PingArgs) -> i32 {
    if !(args.interval.is_finite() && args.interval >= 0.001) {
        eprintln!("meshprobe ping: interval must be at least 0.001 seconds");
        return 2;
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        eprintln!("meshprobe ping: timeout must be a positive number of seconds");
        return 2;
    }
    if args.size > crate::icmp::packet::MAX_PAYLOAD_SIZE {
        eprintln!(
            "meshprobe ping: size must be at most {}",
            crate::icmp::packet::MAX_PAYLOAD_SIZE
        );
        return 2;
    }
    let target = match resolve_for_command("ping", &args.host, args.ipv4, args.ipv6).await {
        Ok(target) => target,
        Err(message) => {
            eprintln!("{message}");
            return 2;
        }
    };
    let pinger = Pinger::new();
    let request = EchoRequest {
        destination: target.address,
        scope_id: target.scope_id,
        source: args.source,
        ttl: Some(args.ttl),
        dont_fragment: args.dont_fragment,
        payload_size: args.size,
    };
    let payload = crate::icmp::packet::payload_len(args.size);
    println!(
        "PING {} ({}): {payload} data bytes",
        args.host, target.address
    );
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if args.count.is_some_and(|count| summary.transmitted >= count) {
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = ticker.tick() => {}
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout);
        summary.transmitted += 1;
        // The engine's sequence numbers start at a random value; show ping's 1, 2, 3...
        let icmp_seq = summary.transmitted;
        let result = tokio::select! {
            _ = &mut ctrl_c => break,
            result = pinger.echo(&request, deadline) => result,
        };
        match result.outcome {
            Ok(Answer::Echo {
                rtt,
                hop_limit,
                kernel_timestamp,
                ..
            }) => {
                summary.received += 1;
                let ms = rtt.as_secs_f64() * 1000.0;
                summary.rtts_ms.push(ms);
                let ttl = hop_limit.map_or_else(String::new, |t| format!(" ttl={t}"));
                let clock = if kernel_timestamp {
                    ""
                } else {
                    " (user-space clock)"
                };
                println!(
                    "{} bytes from {}: icmp_seq={}{ttl} time={ms:.3} ms{clock}",
                    payload + crate::icmp::packet::ECHO_HEADER_LEN,
                    target.address,
                    icmp_seq
                );
            }
            Ok(Answer::IcmpError {
                kind, code, from, ..
            }) => {
                summary.errors += 1;
                let from = from.map_or_else(|| "?".to_string(), |a| a.to_string());
                println!(
                    "From {from} icmp_seq={icmp_seq} {} (code {code})",
                    kind.as_str().replace('_', " ")
                );
            }
            Err(EchoFailure::Timeout) => println!("Request timeout for icmp_seq={icmp_seq}"),
            Err(error) => {
                summary.errors += 1;
                println!("icmp_seq={icmp_seq}: {error}");
                if matches!(error, EchoFailure::Socket(_)) {
                    break;
                }
            }
        }
    }
    print_summary(&args.host, &summary, started.elapsed());
    if summary.received > 0 { 0 } else { 1 }
}

fn print_summary(host: &str, summary: &Summary, elapsed: Duration) {
    let loss = if summary.transmitted == 0 {
        0.0
    } else {
        100.0 * (summary.transmitted - summary.received) as f64 / summary.transmitted as f64
    };
    println!("\n--- {host} ping statistics ---");
    let errors = if summary.errors > 0 {
        format!(", +{} errors", summary.errors)
    } else {
        String::new()
    };
    println!(
        "{} packets transmitted, {} received{errors}, {loss:.1}% packet loss, time {}ms",
        summary.transmitted,
        summary.received,
        elapsed.as_millis()
    );
    let rtts: Vec<Duration> = summary
        .rtts_ms
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    // The same statistics a multi-packet /probe exports.
    if let Some(spread) = crate::burst::RttSpread::of(&rtts) {
        let ms = |seconds: f64| seconds * 1000.0;
        println!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(spread.min),
            ms(spread.mean),
            ms(spread.max),
            ms(spread.stddev)
        );
    }
}
