//! Helpers for the resource-exhaustion tests (issue 13): what the exporter process holds
//! (`/proc/<pid>`: RSS, threads, descriptors), timed requests, many concurrent requests, and
//! many raw connections held open from inside a namespace. Every connection goes to the
//! loopback of a namespace the test created.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Exporter, HttpResponse, build_request, http_exchange, in_namespace};

/// What a process holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> ProcStats {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        ProcStats {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds,
        }
    }

    /// The larger of each field.
    pub fn max(self, other: ProcStats) -> ProcStats {
        ProcStats {
            rss_kib: self.rss_kib.max(other.rss_kib),
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
        }
    }
}

/// One `Connection: close` request, with how long it took (errors count as answers here).
pub fn timed_request(
    exporter: &Exporter,
    path: &str,
    headers: &[(&str, &str)],
) -> (Duration, std::io::Result<HttpResponse>) {
    let started = Instant::now();
    let result = exporter.request("GET", path, headers);
    (started.elapsed(), result)
}

/// Worst latency (and the last failure, if any) of `path` polled every `every` for `period`,
/// with the exporter's process figures at their highest over the same time.
#[derive(Debug, Default)]
pub struct Watch {
    pub worst: Duration,
    pub samples: usize,
    pub failures: Vec<String>,
    pub peak: ProcStats,
}

pub fn watch(exporter: &Exporter, paths: &[&str], period: Duration, every: Duration) -> Watch {
    let mut watch = Watch::default();
    let until = Instant::now() + period;
    while Instant::now() < until {
        for path in paths {
            let (took, result) = timed_request(exporter, path, &[]);
            watch.worst = watch.worst.max(took);
            watch.samples += 1;
            match result {
                Ok(response) if response.status == 200 => {}
                Ok(response) => watch
                    .failures
                    .push(format!("{path}: HTTP {}", response.status)),
                Err(error) => watch.failures.push(format!("{path}: {error}")),
            }
        }
        watch.peak = watch.peak.max(ProcStats::read(exporter.child.id()));
        std::thread::sleep(every);
    }
    watch
}

/// Sends every path at once, one thread (and connection) each, from inside the exporter's
/// namespace; returns the threads to join.
pub fn fire_concurrent(
    exporter: &Exporter,
    paths: Vec<String>,
) -> Vec<std::thread::JoinHandle<std::io::Result<HttpResponse>>> {
    paths
        .into_iter()
        .map(|path| {
            let namespace = exporter.namespace.clone();
            let port = exporter.port;
            std::thread::spawn(move || {
                in_namespace(&namespace, move || {
                    http_exchange(port, &build_request("GET", &path, &[]))
                })
            })
        })
        .collect()
}

/// Opens up to `count` TCP connections to 127.0.0.1:`port` inside `namespace` from source
/// address `source` (any 127.x address; a different one than the health checks use) and
/// returns the ones that connected, after writing `send` on each.
pub fn hold_connections(
    namespace: &str,
    port: u16,
    source: &str,
    count: usize,
    send: &'static [u8],
) -> Vec<TcpStream> {
    let source: std::net::IpAddr = source.parse().expect("source address");
    in_namespace(namespace, move || {
        use std::io::Write;
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .expect("socket");
            if socket.bind(&SocketAddr::new(source, 0).into()).is_err() {
                break;
            }
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            if socket
                .connect_timeout(&target.into(), Duration::from_secs(2))
                .is_err()
            {
                break;
            }
            let mut stream: TcpStream = socket.into();
            let _ = stream.write_all(send);
            held.push(stream);
        }
        held
    })
}

/// How many of `streams` the server has closed (a read returns end of file or an error
/// rather than blocking).
pub fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    use std::io::Read;
    let mut closed = 0;
    for stream in streams.iter_mut() {
        let _ = stream.set_nonblocking(true);
        let mut buffer = [0u8; 512];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    closed
}

/// One `Connection: close` exchange with 127.0.0.1:`port` from source address `source` (a
/// 127.x address, so the exporter sees a different client), inside `namespace`.
pub fn request_from(
    namespace: &str,
    source: &str,
    port: u16,
    request: String,
) -> std::io::Result<HttpResponse> {
    use std::io::{Read, Write};
    let source: std::net::IpAddr = source
        .parse()
        .map_err(|_| std::io::Error::other("bad source address"))?;
    in_namespace(namespace, move || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        super::parse_response(&raw)
    })
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
