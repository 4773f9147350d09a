//! Test support: a namespace test network, the real meshprobe binary running inside it, and a
//! small HTTP client and metrics parser (`client.rs`) that work from inside a namespace.
//!
//! Every packet a test sends stays inside namespaces created here, addressed from 198.18.0.0/15
//! and 2001:2::/48 (DESIGN.md). Namespaces are deleted on drop. Tests that need namespaces or a
//! system tool are `#[ignore]`d and fail, never skip, when run without them (`needs.rs`). Files
//! go to one scratch directory per test process, removed when the process exits.

#![allow(dead_code)]

pub mod attack;
pub mod browser;
pub mod client;
pub mod fake_peer;
pub mod grafana;
pub mod hostile;
pub mod needs;
pub mod prometheus;
pub mod web;

pub use client::*;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

/// Runs a command and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails the calling test unless this process can create network namespaces. Tests that call it
/// are `#[ignore]`d: a plain `cargo test` lists them as ignored, `./test.sh` runs them as root.
#[macro_export]
macro_rules! require_namespaces {
    () => {
        support::needs::namespaces()
    };
}

/// A network namespace that is deleted on drop, with its /etc/netns files.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(role: &str) -> Namespace {
        Namespace::with_prefix("mpt", role)
    }

    /// A namespace named `<prefix>-<pid>-<n>-<role>` (test files use their own prefix).
    pub fn with_prefix(prefix: &str, role: &str) -> Namespace {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{id}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        namespace.exec("ip", &["link", "set", "lo", "up"]);
        namespace.sysctl("net.ipv4.icmp_ratelimit", "0");
        namespace.sysctl("net.ipv6.icmp.ratelimit", "0");
        // The namespace-wide ICMP budget (1000/s, burst 50 by default) would make a busy test
        // router drop some of its ICMP errors.
        namespace.sysctl("net.ipv4.icmp_msgs_per_sec", "1000000");
        namespace.sysctl("net.ipv4.icmp_msgs_burst", "1000000");
        // No duplicate address detection: link-local addresses are usable at once.
        namespace.sysctl("net.ipv6.conf.default.accept_dad", "0");
        namespace.sysctl("net.ipv6.conf.all.accept_dad", "0");
        namespace
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs `ip -batch` inside the namespace with the given lines.
    pub fn ip_batch(&self, lines: &str) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.as_bytes())
            .expect("write batch");
        assert!(
            child.wait().expect("ip -batch").success(),
            "ip -batch failed"
        );
    }

    /// Writes /etc/netns/<name>/<file>, which `ip netns exec` bind-mounts over /etc/<file>.
    pub fn etc_file(&self, file: &str, content: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns dir");
        std::fs::write(dir.join(file), content).expect("write /etc/netns file");
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live here).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_namespace(&self.name, f)
    }
}

/// Runs `f` on a new thread that has entered the named namespace.
pub fn in_namespace<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns file");
        // SAFETY: setns affects this thread only; the fd is a valid namespace file.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Creates a veth pair between two namespaces with the given interface names.
pub fn veth(a: &Namespace, a_if: &str, b: &Namespace, b_if: &str) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.exec("ip", &["link", "set", a_if, "up"]);
    b.exec("ip", &["link", "set", b_if, "up"]);
}

/// The standard test network:
///
/// ```text
///  prober (198.18.0.1, 2001:2::1) --p0/r0-- router (198.18.0.254, 2001:2::fe)
///  router (198.18.1.254, 2001:2:0:1::fe) --r1/t0 (MTU 1280)-- target (198.18.1.1, 2001:2:0:1::1,
///                                                               198.18.4.0/22 answering)
/// ```
/// The router also has an `unreachable` route for 198.18.8.0/24 and 2001:2:0:8::/64 (it answers
/// with ICMP destination unreachable) and a `blackhole` route for 198.18.9.0/24 and
/// 2001:2:0:9::/64 (silence).
pub struct TestNet {
    pub prober: Namespace,
    pub router: Namespace,
    pub target: Namespace,
}

pub const TARGET_V4: &str = "198.18.1.1";
pub const TARGET_V6: &str = "2001:2:0:1::1";
pub const UNREACHABLE_V4: &str = "198.18.8.1";
pub const UNREACHABLE_V6: &str = "2001:2:0:8::1";
pub const SILENT_V4: &str = "198.18.9.1";
pub const SILENT_V6: &str = "2001:2:0:9::1";
pub const PROBER_SECOND_V4: &str = "198.18.0.2";

const PROBER_ADDRESSES: &str = "addr add 198.18.0.1/24 dev p0\naddr add 198.18.0.2/24 dev p0\n\
     addr add 2001:2::1/64 dev p0 nodad\n\
     route add default via 198.18.0.254\nroute add default via 2001:2::fe\n";

/// Links the router to a target namespace over r1/t0 (MTU 1280) with the standard addresses.
fn connect_target(router: &Namespace, target: &Namespace) {
    veth(router, "r1", target, "t0");
    router.exec("ip", &["link", "set", "r1", "mtu", "1280"]);
    target.exec("ip", &["link", "set", "t0", "mtu", "1280"]);
    router.ip_batch(
        "addr add 198.18.1.254/24 dev r1\naddr add 2001:2:0:1::fe/64 dev r1 nodad\n\
         route add 198.18.4.0/22 via 198.18.1.1\n",
    );
    target.ip_batch(
        "addr add 198.18.1.1/24 dev t0\naddr add 2001:2:0:1::1/64 dev t0 nodad\n\
         route add default via 198.18.1.254\nroute add default via 2001:2:0:1::fe\n",
    );
}

impl TestNet {
    pub fn new() -> TestNet {
        let prober = Namespace::new("p");
        let router = Namespace::new("r");
        let target = Namespace::new("t");
        veth(&prober, "p0", &router, "r0");
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        prober.ip_batch(PROBER_ADDRESSES);
        router.ip_batch(
            "addr add 198.18.0.254/24 dev r0\naddr add 2001:2::fe/64 dev r0 nodad\n\
             route add unreachable 198.18.8.0/24\nroute add blackhole 198.18.9.0/24\n\
             route add unreachable 2001:2:0:8::/64\nroute add blackhole 2001:2:0:9::/64\n",
        );
        connect_target(&router, &target);
        // Names for resolution tests, and a resolver address that answers nothing but ICMP
        // port unreachable, so lookups of unknown names fail fast without leaving the namespaces.
        prober.etc_file(
            "hosts",
            "127.0.0.1 localhost\n198.18.1.1 peer-v4.test\n2001:2:0:1::1 peer-v6.test\n\
             198.18.1.1 peer-dual.test\n2001:2:0:1::1 peer-dual.test\n",
        );
        prober.etc_file(
            "resolv.conf",
            "nameserver 198.18.0.254\noptions timeout:1 attempts:1\n",
        );
        let net = TestNet {
            prober,
            router,
            target,
        };
        net.wait_for_ipv6();
        net
    }

    /// Replaces the target namespace with a fresh one wired up the same way (after a fault test
    /// deleted or broke the old one).
    pub fn rebuild_target(&mut self) {
        self.target = Namespace::new("t");
        connect_target(&self.router, &self.target);
    }

    /// Re-adds the prober's addresses and default routes (after its link went down).
    pub fn restore_prober_addresses(&self) {
        self.prober
            .ip_batch(&PROBER_ADDRESSES.replace(" add ", " replace "));
    }

    /// Adds `count` addresses from 198.18.4.0/22 to the target (for the concurrency test).
    pub fn add_target_addresses(&self, count: usize) -> Vec<String> {
        let addresses: Vec<String> = (0..count)
            .map(|i| format!("198.18.{}.{}", 4 + (i + 1) / 256, (i + 1) % 256))
            .collect();
        let batch: String = addresses
            .iter()
            .map(|a| format!("addr add {a}/32 dev t0\n"))
            .collect();
        self.target.ip_batch(&batch);
        addresses
    }

    fn wait_for_ipv6(&self) {
        // `nodad` addresses are usable at once; routes need the links up, which they are.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real meshprobe binary, running inside a namespace; killed (by PID) on drop.
pub struct Exporter {
    pub child: Child,
    pub namespace: String,
    pub port: u16,
    pub stderr_path: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_meshprobe")
}

impl Exporter {
    /// Starts `meshprobe` with `args` plus a listen address, and waits until it answers.
    pub fn start(namespace: &Namespace, args: &[&str]) -> Exporter {
        Self::start_program(namespace, binary(), args, 9115)
    }

    pub fn start_program(
        namespace: &Namespace,
        program: &str,
        args: &[&str],
        port: u16,
    ) -> Exporter {
        Self::start_with_env(namespace, program, args, port, &[])
    }

    /// Like [`Exporter::start_program`], with extra environment variables for the exporter.
    pub fn start_with_env(
        namespace: &Namespace,
        program: &str,
        args: &[&str],
        port: u16,
        envs: &[(&str, &str)],
    ) -> Exporter {
        let listen = format!("127.0.0.1:{port}");
        let stderr_path = scratch_dir().join(format!("{}-{port}.log", namespace.name));
        let stderr = File::create(&stderr_path).expect("create log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace.name, program])
            .args(args)
            .arg(format!("--web.listen-address={listen}"))
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start exporter");
        let exporter = Exporter {
            child,
            namespace: namespace.name.clone(),
            port,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if exporter
                .try_get("/-/healthy", &[])
                .is_ok_and(|r| r.status == 200)
            {
                return exporter;
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not start: {}",
                exporter.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.request("GET", path, headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn post(&self, path: &str) -> HttpResponse {
        self.request("POST", path, &[])
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log()))
    }

    fn try_get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
        self.request("GET", path, headers)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<HttpResponse> {
        let port = self.port;
        let request = build_request(method, path, headers);
        in_namespace(&self.namespace, move || http_exchange(port, &request))
    }

    /// Sends SIGHUP (to our own child's PID).
    pub fn sighup(&self) {
        // `ip netns exec` execs the program, so the child's PID is the exporter's.
        // SAFETY: kill on a PID we spawned and still own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics").body)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// FNV-1a 32 of an address, as blackbox's probe_ip_addr_hash (independent test implementation).
pub fn fnv1a(address: std::net::IpAddr) -> f64 {
    let bytes = match address {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut hash: u32 = 2_166_136_261;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(16_777_619);
    }
    f64::from(hash)
}

/// This test process's scratch directory, `<temp dir>/meshprobe-test-<pid>` (mode 755, so that
/// `nobody` can reach files in it), created on first use and removed when the process exits:
/// libtest ends the process through `exit` whether tests passed or failed, which runs the
/// `atexit` handler registered here. Only a killed test process leaves it behind.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_scratch_dir() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshprobe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the scratch dir");
        // SAFETY: registers a plain `extern "C" fn()` with no arguments, as atexit requires.
        let rc = unsafe { libc::atexit(remove_scratch_dir) };
        assert_eq!(rc, 0, "atexit failed");
        dir
    })
}

/// A fresh, empty directory inside [`scratch_dir`].
pub fn fresh_dir() -> PathBuf {
    let dir = scratch_dir().join(NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).expect("create a scratch subdirectory");
    dir
}

/// Writes a config file into a fresh directory inside [`scratch_dir`] and returns its path.
pub fn write_config(name: &str, content: &str) -> PathBuf {
    let path = fresh_dir().join(name);
    std::fs::write(&path, content).expect("write config");
    path
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Raises this test process's open-file limit to the hard limit (for thousands of connections).
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is valid for reading and writing.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Fails the calling test unless `program` (an absolute path) is installed; says which Debian
/// package provides it. Tests that call it are `#[ignore]`d (`./test.sh` installs the package).
pub fn require_tool(program: &str, package: &str) {
    needs::tool(program, package);
}

/// The repository's root, where the example files live.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}
