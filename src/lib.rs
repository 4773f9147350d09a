//! meshprobe: a blackbox_exporter-compatible ICMP exporter built on one shared socket per family.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`app`] | the composition root: `AppState` (what every handler shares) and the HTTP layer's counters |
//! | [`charm`] | the embedded Juju charm: hooks, hook tools, cache, publishing (run when `JUJU_DISPATCH_PATH` is set) |
//! | [`config`] | the `modules:` file model, the `mesh:` section, network selectors, validation (every problem, with file and line), Go durations, and the reloadable store |
//! | [`icmp`] | the engine: packet codec, sockets, the shared-socket demultiplexer, counters |
//! | [`resolve`] | target syntax checks, DNS and blackbox's address choice, FNV-1a hash |
//! | [`lookup`] | getaddrinfo on its own bounded threads (`--dns.max-concurrency`), never the blocking pool |
//! | [`probe`] | blackbox `/probe` semantics: timeout rule, phases, per-probe metrics and log |
//! | [`burst`] | multi-packet `/probe` (`icmp.packets` > 1): paced packets, exact counts, RTT spread and jitter |
//! | [`http`] | the HTTP server and routes |
//! | [`history`] | the last `--history.limit` probes behind "Recent Probes" and `/logs?id=N` |
//! | [`self_metrics`] | the exporter's own `/metrics` |
//! | [`expo`] | Prometheus text format, written the way Go's client writes it |
//! | [`proto`] | the protobuf exposition (needed for native histograms): message types, `Accept` negotiation, text → protobuf |
//! | [`mesh`] | mesh mode: plan, discovery, peer sources, scheduler, per-target stats, the recent window, the `/mesh` page, and what `--config.check` can check offline (`mesh::check`) |
//! | [`logging`] | logfmt/json logging setup |
//! | [`ping_cli`] | `meshprobe ping` |
//! | [`trace`] | path tracing: Paris-flow probes with TTL 1..max, per-hop aggregation and mtr's loss rule, `meshprobe trace` (`trace::cli`); the mesh's automatic tracer is `mesh::trace_auto` |
//! | [`privileges`] | `--run-as`: dropping root with all of the user's groups, keeping only CAP_NET_RAW (bounding set included) when needed |
//! | [`sd_notify`] | systemd `Type=notify`: READY, RELOADING, STATUS, STOPPING and the watchdog |
//! | [`sys`] | the process's own C-library calls: open-file limit, malloc arenas and trimming, `sysconf`, interface indexes |
//! | [`web`] | `--web.config.file`: TLS (rustls), basic auth, `rate_limit` and extra headers, reloadable; binding, accepting and connection limits and timeouts; `--web.route-prefix` and `--web.external-url` (`web::prefix`) |
//!
//! Dependencies run one way: [`http`] and [`self_metrics`] → [`app`] → [`probe`], [`mesh`],
//! [`web`]; [`probe`], [`mesh`] and [`charm`] → [`config`] → [`resolve`] → [`icmp`]; [`mesh`] →
//! [`trace`] → [`icmp`]. The v4/v6
//! vocabulary is [`icmp::Family`] everywhere, and network selectors are
//! [`config::network::NetworkSelector`].
//!
//! A probe's path: [`http`] parses `/probe?target=&module=` and computes the timeout with
//! [`probe::probe_timeout`]; [`probe::run_icmp_probe`] resolves the target with [`resolve`], then
//! calls [`icmp::Pinger::echo`], which picks the shared socket for (family, socket kind, source,
//! DF), registers the probe under (address, id, seq) with a random nonce in the payload, and
//! sends with the probe's TTL on that packet. The receiving channel's task (`icmp::demux`) reads
//! replies in batches with kernel timestamps and wakes exactly the matching probe.
//! [`probe::render`] writes the metrics.
//!
//! # `unsafe`
//!
//! The crate denies `unsafe_code`. Only the ICMP socket module (`icmp::socket` and its
//! submodules) and [`sys`] allow it, and every `unsafe` block carries a `// SAFETY:` comment
//! (`clippy::undocumented_unsafe_blocks`). Privilege dropping goes through the `nix` and `caps`
//! crates.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod burst;
pub mod charm;
pub mod config;
pub mod expo;
pub mod history;
pub mod http;
pub mod icmp;
pub mod logging;
pub mod lookup;
pub mod mesh;
pub mod ping_cli;
pub mod privileges;
pub mod probe;
pub mod proto;
pub mod resolve;
pub mod sd_notify;
pub mod self_metrics;
pub mod sys;
pub mod trace;
pub mod web;
