//! meshprobe: a blackbox_exporter-compatible ICMP exporter built on one shared socket per family.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`charm`] | the embedded Juju charm: hooks, hook tools, cache, publishing (run when `JUJU_DISPATCH_PATH` is set) |
//! | [`config`] | the `modules:` file model, validation, Go durations, and the reloadable store |
//! | [`icmp`] | the engine: packet codec, sockets, the shared-socket demultiplexer, counters |
//! | [`resolve`] | target syntax checks, DNS and blackbox's address choice, FNV-1a hash |
//! | [`probe`] | blackbox `/probe` semantics: timeout rule, phases, per-probe metrics and log |
//! | [`http`] | the HTTP server and routes |
//! | [`self_metrics`] | the exporter's own `/metrics` |
//! | [`expo`] | Prometheus text format, written the way Go's client writes it |
//! | [`proto`] | the protobuf exposition (needed for native histograms): message types, `Accept` negotiation, text → protobuf |
//! | [`mesh`] | mesh mode: plan, discovery, peer sources, scheduler, per-target stats, the recent window and the `/mesh` page |
//! | [`logging`] | logfmt/json logging setup |
//! | [`ping_cli`] | `meshprobe ping` |
//! | [`privileges`] | `--run-as`: dropping root, keeping only CAP_NET_RAW when needed |
//! | [`sd_notify`] | systemd `Type=notify`: READY, RELOADING, STATUS, STOPPING and the watchdog |
//! | [`web`] | `--web.config.file`: TLS (rustls), basic auth and extra headers, reloadable |
//!
//! A probe's path: [`http`] parses `/probe?target=&module=` and computes the timeout with
//! [`probe::probe_timeout`]; [`probe::run_icmp_probe`] resolves the target with [`resolve`], then
//! calls [`icmp::Pinger::echo`], which picks the shared socket for (family, socket kind, source,
//! TTL, DF), registers the probe under (address, id, seq) with a random nonce in the payload,
//! sends, and waits. The socket's receiver task (`icmp::pinger`) reads replies in batches with
//! kernel timestamps and wakes exactly the matching probe. [`probe::render`] writes the metrics.

pub mod charm;
pub mod config;
pub mod expo;
pub mod http;
pub mod icmp;
pub mod logging;
pub mod mesh;
pub mod ping_cli;
pub mod privileges;
pub mod probe;
pub mod proto;
pub mod resolve;
pub mod sd_notify;
pub mod self_metrics;
pub mod web;
