//! The `meshprobe` binary: flags, runtime setup, and dispatch to `serve` (default), `ping`,
//! `trace` or `check-config`. All behaviour lives in the library; see its `# Layout` section.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshprobe::app::{AppState, ExporterCounters};
use meshprobe::config::store::ConfigStore;
use meshprobe::history::ProbeHistory;
use meshprobe::http;
use meshprobe::icmp::{Family, Pinger, check_permissions};
use meshprobe::logging::{self, LogFormat, LogLevel};
use meshprobe::mesh::discovery::{self, DiscoveryOptions};
use meshprobe::mesh::runner::Mesh;
use meshprobe::ping_cli::{self, PingArgs};
use meshprobe::privileges;
use meshprobe::probe::ProbeOptions;
use meshprobe::sd_notify::{self, Notifier};
use meshprobe::sys;
use meshprobe::trace::cli::{self as trace_cli, TraceArgs};
use meshprobe::web::prefix::RoutePrefix;
use meshprobe::web::{WebConfig, WebStore, limits, listener};
use tokio::net::TcpListener;

/// `--version`, laid out as blackbox's (build.rs records the commit, date and compiler).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision: ",
    env!("MESHPROBE_BUILD_COMMIT"),
    ")\n  build date:       ",
    env!("MESHPROBE_BUILD_DATE"),
    "\n  rust version:     ",
    env!("MESHPROBE_RUST_VERSION"),
    "\n  platform:         ",
    env!("MESHPROBE_PLATFORM"),
);

/// A Go duration above zero, for the timeout flags.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match meshprobe::config::duration::parse_go_duration(text)? {
        duration if duration.is_zero() => Err("must be above 0".into()),
        duration => Ok(duration),
    }
}

/// blackbox_exporter-compatible ICMP exporter and peer mesh prober.
#[derive(Debug, Parser)]
#[command(name = "meshprobe", version, long_version = LONG_VERSION, about)]
struct Cli {
    /// Configuration file (blackbox.yml format). Without it, the embedded default is used.
    #[arg(long = "config.file")]
    config_file: Option<PathBuf>,
    /// Validate the configuration file and exit.
    #[arg(long = "config.check", overrides_with = "no_config_check")]
    config_check: bool,
    /// kingpin's negation of --config.check, accepted as blackbox accepts it.
    #[arg(long = "no-config.check", hide = true, overrides_with = "config_check")]
    no_config_check: bool,
    /// kingpin's extra help flags, accepted as blackbox accepts them.
    #[arg(long = "help-long", hide = true, action = clap::ArgAction::HelpLong)]
    help_long: Option<bool>,
    #[arg(long = "help-man", hide = true, action = clap::ArgAction::HelpLong)]
    help_man: Option<bool>,
    /// Address to listen on for HTTP (repeatable).
    #[arg(long = "web.listen-address", default_value = ":9115")]
    listen_addresses: Vec<String>,
    /// Use the listening sockets systemd passes (socket activation: LISTEN_FDS, LISTEN_PID)
    /// instead of --web.listen-address.
    #[arg(long = "web.systemd-socket", overrides_with = "no_systemd_socket")]
    systemd_socket: bool,
    /// kingpin's negation of --web.systemd-socket.
    #[arg(
        long = "no-web.systemd-socket",
        hide = true,
        overrides_with = "systemd_socket"
    )]
    no_systemd_socket: bool,
    /// The URL under which meshprobe is reachable (e.g. behind a reverse proxy); its path is the
    /// default route prefix and the base of the pages' links.
    #[arg(long = "web.external-url")]
    external_url: Option<String>,
    /// Prefix for all HTTP endpoints [default: the path of --web.external-url].
    #[arg(long = "web.route-prefix")]
    route_prefix: Option<String>,
    /// How many recent probes the landing page lists, with their debug logs at /logs?id=N
    /// (0 keeps none and skips capturing their logs).
    #[arg(long = "history.limit", default_value_t = 100)]
    history_limit: usize,
    /// Seconds subtracted from Prometheus's scrape timeout to get the probe timeout.
    #[arg(long = "timeout-offset", default_value_t = 0.5)]
    timeout_offset: f64,
    /// Log level of the main logger.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    log_level: LogLevel,
    /// Log level for per-probe log lines, which are logged at debug as blackbox does
    /// [default: --log.level].
    #[arg(long = "log.prober", value_enum)]
    log_prober: Option<LogLevel>,
    /// Log format.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    log_format: LogFormat,
    /// Export phase="rtt" as 0 on failed probes, exactly like blackbox (default: omit the sample).
    #[arg(long = "compat.rtt-zero-on-failure")]
    rtt_zero_on_failure: bool,
    /// Answer 400 to a /probe target that cannot be a hostname or IP address (host:port, a URL,
    /// [::1]), to conflicting duplicate parameters and to debug= other than true/false. By default
    /// these are answered as blackbox does: 200 with probe_success 0 (reason="invalid_target")
    /// for the target; first value wins and no debug for the others.
    #[arg(long = "probe.strict")]
    strict_requests: bool,
    /// TLS, basic auth and response headers, in exporter-toolkit's web-config.yml format.
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
    /// Switch to this user after binding the listeners, keeping only CAP_NET_RAW (and only if
    /// ping sockets are not allowed for the user's group).
    #[arg(long = "run-as")]
    run_as: Option<String>,
    /// Most probes running at once; beyond it /probe answers 503 immediately.
    #[arg(long = "probe.max-concurrency", default_value_t = 10_000)]
    max_concurrent_probes: usize,
    /// Most host-name lookups in flight; beyond it a probe of a name fails at once
    /// (reason="resolution"). Each lookup has its own thread until getaddrinfo returns.
    #[arg(long = "dns.max-concurrency", default_value_t = meshprobe::lookup::DEFAULT_MAX_CONCURRENCY)]
    dns_max_concurrency: usize,
    /// Most open HTTP connections, all listeners together (capped at the open-file limit minus
    /// 64). At the limit the connection idle the longest is closed to admit a new one; when all
    /// are busy, the new one gets 503.
    #[arg(long = "web.max-connections", default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How long a client may take to send a request's headers: from connecting (TLS handshake
    /// included) or from the first byte of a later request on a kept-alive connection.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = positive_duration)]
    read_header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    #[arg(long = "web.idle-timeout", default_value = "2m", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// Tokio worker threads. One thread serves about 60k probes/s; more only help on many cores.
    #[arg(long = "runtime.worker-threads", default_value_t = 1)]
    worker_threads: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the exporter (the default).
    Serve,
    /// Ping a host with the exporter's engine.
    Ping(PingArgs),
    /// Trace the path to a host (mtr-style, Paris flow) with the exporter's engine.
    Trace(TraceArgs),
    /// Validate the configuration file and exit.
    CheckConfig(CheckConfigArgs),
    /// List this machine's networks as mesh mode sees them.
    Networks {
        /// Include link-local addresses.
        #[arg(long)]
        link_local: bool,
        /// Include interfaces that are down.
        #[arg(long)]
        all: bool,
    },
}

/// The files `check-config` validates (also accepted before the subcommand).
#[derive(Debug, Clone, clap::Args)]
struct CheckConfigArgs {
    /// Configuration file (blackbox.yml format). Without it, the embedded default is checked.
    #[arg(long = "config.file")]
    config_file: Option<PathBuf>,
    /// Web config file (exporter-toolkit's web-config.yml) to check too.
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Run by Juju (the charm's dispatch script): handle the hook or action, nothing else.
    if let Some(code) = meshprobe::charm::dispatch_from_env() {
        return code;
    }
    let cli = Cli::parse();
    sys::raise_open_file_limit();
    // Two malloc arenas are plenty for one worker thread plus the blocking pool.
    sys::limit_malloc_arenas(2);
    logging::init(cli.log_level, cli.log_prober, cli.log_format);
    match cli.command {
        Some(Command::Ping(ref args)) => match build_runtime(cli.worker_threads) {
            Ok(runtime) => {
                let code = runtime.block_on(ping_cli::run(args.clone()));
                ExitCode::from(u8::try_from(code).unwrap_or(2))
            }
            Err(code) => code,
        },
        Some(Command::Trace(ref args)) => match build_runtime(cli.worker_threads) {
            Ok(runtime) => {
                let code = runtime.block_on(trace_cli::run(args.clone()));
                ExitCode::from(u8::try_from(code).unwrap_or(2))
            }
            Err(code) => code,
        },
        Some(Command::CheckConfig(ref args)) => {
            let config_file = args.config_file.clone().or(cli.config_file.clone());
            let web_config_file = args.web_config_file.clone().or(cli.web_config_file.clone());
            check_config(config_file, web_config_file)
        }
        Some(Command::Networks { link_local, all }) => {
            let options = DiscoveryOptions {
                include_link_local: link_local,
                include_down: all,
            };
            match discovery::local_networks(options) {
                Ok(networks) => {
                    print!("{}", discovery::render_table(&networks));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("meshprobe networks: cannot list interfaces: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ if cli.config_check => check_config(cli.config_file, cli.web_config_file),
        _ => run_server(cli),
    }
}

fn build_runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads.max(1))
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("meshprobe: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// Loads the config, binds the listeners and drops root (all before any other thread exists,
/// because capabilities are per thread), then runs the server.
fn run_server(cli: Cli) -> ExitCode {
    let store = match ConfigStore::load(cli.config_file.clone()) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(%error, "Error loading config");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(file = %store.source_name(), "Loaded config file");
    log_other_probers(&store.current());
    // Before --run-as: the key file may be readable by root only.
    let web = match WebStore::load(cli.web_config_file.clone()) {
        Ok(web) => web,
        Err(error) => {
            tracing::error!(%error, "Error loading web config");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = web.path() {
        let current = web.current();
        tracing::info!(
            file = %path.display(),
            tls = current.tls_enabled(),
            basic_auth_users = current.basic_auth_users(),
            "Loaded web config file"
        );
    }
    let routes = match RoutePrefix::new(cli.external_url.as_deref(), cli.route_prefix.as_deref()) {
        Ok(routes) => routes,
        Err(error) => {
            tracing::error!(%error, "Error parsing the external URL or route prefix");
            return ExitCode::FAILURE;
        }
    };
    let mut listeners = Vec::new();
    if cli.systemd_socket {
        match sys::systemd_listeners() {
            Ok(passed) => listeners = passed,
            Err(error) => {
                tracing::error!(%error, "Error taking the systemd sockets");
                return ExitCode::FAILURE;
            }
        }
    }
    let addresses_to_bind = if cli.systemd_socket {
        &[][..]
    } else {
        &cli.listen_addresses[..]
    };
    for text in addresses_to_bind {
        let addresses = match http::parse_listen_address(text) {
            Ok(addresses) => addresses,
            Err(error) => {
                tracing::error!(%error, "Error parsing listen address");
                return ExitCode::FAILURE;
            }
        };
        for address in addresses {
            match listener::bind(address) {
                Ok(listener) => listeners.push(listener),
                Err(error) => {
                    tracing::error!(%address, %error, "Error listening on address");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Some(user) = &cli.run_as {
        match privileges::drop_to(user) {
            Ok(dropped) => tracing::info!(
                user = %dropped.user,
                uid = dropped.uid,
                gid = dropped.gid,
                kept_cap_net_raw = dropped.kept_net_raw,
                "Dropped root privileges"
            ),
            Err(error) => {
                tracing::error!(%error, "Cannot switch to --run-as user");
                return ExitCode::FAILURE;
            }
        }
    }
    match build_runtime(cli.worker_threads) {
        Ok(runtime) => runtime.block_on(serve(cli, store, web, listeners, routes)),
        Err(code) => code,
    }
}

/// Modules of blackbox's other probers load, but their /probe answers 400: say so once.
fn log_other_probers(config: &meshprobe::config::Config) {
    let others: Vec<String> = config
        .modules
        .iter()
        .filter(|(_, module)| !module.is_icmp())
        .map(|(name, module)| format!("{name} ({})", module.prober))
        .collect();
    if !others.is_empty() {
        tracing::warn!(
            modules = %others.join(", "),
            "Modules of other probers are configured; /probe answers 400 for them (keep blackbox_exporter for those)"
        );
    }
}

fn check_config(config_file: Option<PathBuf>, web_config_file: Option<PathBuf>) -> ExitCode {
    if let Some(path) = &web_config_file {
        match WebConfig::load(path) {
            Ok(_) => tracing::info!(file = %path.display(), "Web config file is ok"),
            Err(error) => {
                tracing::error!(%error, "Error loading web config");
                return ExitCode::FAILURE;
            }
        }
    }
    match ConfigStore::load(config_file) {
        Ok(store) => {
            let config = store.current();
            let problems = config
                .mesh
                .as_ref()
                .map(meshprobe::mesh::check::offline_problems)
                .unwrap_or_default();
            if !problems.is_empty() {
                tracing::error!(file = %store.source_name(), "Error checking the mesh section");
                for problem in &problems {
                    eprintln!("{}: {problem}", store.source_name());
                }
                return ExitCode::FAILURE;
            }
            tracing::info!(file = %store.source_name(), "Config file is ok exiting...");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // One log line, then the diagnostic as a person reads it: every problem on its own
            // line, the parser's source excerpt with its caret intact.
            tracing::error!(file = %error.file, "Error loading config");
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    cli: Cli,
    store: ConfigStore,
    web: WebStore,
    listeners: Vec<std::net::TcpListener>,
    routes: RoutePrefix,
) -> ExitCode {
    for family in [Family::V4, Family::V6] {
        match check_permissions(family) {
            Ok(kind) => {
                tracing::info!(
                    ip_protocol = family_name(family),
                    socket = kind.as_str(),
                    "ICMP sockets available"
                )
            }
            Err(error) => {
                tracing::error!(ip_protocol = family_name(family), %error, "ICMP probes will fail")
            }
        }
    }
    meshprobe::lookup::set_max_concurrency(cli.dns_max_concurrency);
    configure_connection_limits(&cli);
    let pinger = Pinger::new();
    let mesh = Mesh::start(pinger.clone(), store.current().mesh.clone());
    let state = Arc::new(AppState {
        config: store,
        pinger,
        counters: ExporterCounters::default(),
        timeout_offset: cli.timeout_offset,
        probe_options: ProbeOptions {
            rtt_zero_on_failure: cli.rtt_zero_on_failure,
            strict_requests: cli.strict_requests,
        },
        max_concurrent_probes: cli.max_concurrent_probes,
        web,
        mesh,
        history: ProbeHistory::new(cli.history_limit),
        routes,
    });
    tracing::debug!(route_prefix = state.routes.display(), "Serving routes");
    let mut listening_on = Vec::new();
    for listener in listeners {
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                if let Ok(local) = listener.local_addr() {
                    tracing::info!(address = %local, "Listening on address");
                    listening_on.push(local.to_string());
                }
                tokio::spawn(http::serve(listener, Arc::clone(&state)));
            }
            Err(error) => {
                tracing::error!(%error, "Error listening on address");
                return ExitCode::FAILURE;
            }
        }
    }
    let notifier = Arc::new(Notifier::from_env());
    tokio::spawn(reload_on_sighup(Arc::clone(&state), Arc::clone(&notifier)));
    if let Some(interval) = sd_notify::watchdog_interval_from_env() {
        tokio::spawn(sd_notify::keep_watchdog_fed(
            Arc::clone(&notifier),
            interval,
        ));
    }
    let serving = format!("Serving on {}", listening_on.join(", "));
    notifier.ready(&serving);
    wait_for_shutdown().await;
    notifier.stopping();
    tracing::info!("Received SIGTERM, exiting gracefully...");
    ExitCode::SUCCESS
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip4",
        Family::V6 => "ip6",
    }
}

/// Applies the connection flags, with the limit capped below the open-file limit (raised to its
/// hard limit at startup) so that connections cannot use up the descriptors.
fn configure_connection_limits(cli: &Cli) {
    let nofile = limits::open_file_limit();
    let max_connections = limits::cap_to_open_files(cli.max_connections.max(1), nofile);
    if max_connections < cli.max_connections {
        tracing::warn!(
            requested = cli.max_connections,
            max_connections,
            open_file_limit = nofile.unwrap_or(0),
            "--web.max-connections lowered to fit the open-file limit"
        );
    }
    limits::configure(limits::Limits {
        max_connections,
        header_timeout: cli.read_header_timeout,
        idle_timeout: cli.idle_timeout,
    });
}

/// SIGHUP (systemd's `ExecReload`) reloads both config files; systemd sees the reload through
/// `RELOADING=1` and the `READY=1` that ends it, with the outcome in `STATUS=`.
async fn reload_on_sighup(state: Arc<AppState>, notifier: Arc<Notifier>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    while hangups.recv().await.is_some() {
        notifier.reloading();
        // Logs its own outcome; a bad file keeps the running config.
        let status = match http::reload_configs(&state) {
            Ok(()) => "Reloaded configuration".to_string(),
            Err(error) => format!("Reload failed, running the previous configuration: {error}"),
        };
        notifier.ready(&status);
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
