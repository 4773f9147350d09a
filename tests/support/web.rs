//! Helpers for the web security tests: throwaway certificates made with the `openssl` CLI, an
//! exporter start that waits for the port to accept instead of an HTTP health check (the port
//! may speak TLS or demand a password), and real TLS clients (`curl`, `openssl s_client`) run
//! inside the test namespace with `ip netns exec`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Namespace, binary, in_namespace, run, scratch_dir};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory in the test process's scratch directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(role: &str) -> TempDir {
        let path = scratch_dir().join(format!(
            "web-{}-{role}",
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, content).expect("write file");
        path
    }

    pub fn file(&self, name: &str) -> String {
        self.path
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A test CA with a server certificate (127.0.0.1, localhost) and a client certificate, plus
/// a self-signed "rogue" client certificate the CA never issued. All keys are P-256.
/// Files: ca.crt, server.crt/.key, client.crt/.key, rogue.crt/.key.
pub fn generate_pki(dir: &TempDir) {
    let f = |name: &str| dir.file(name);
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2";
    openssl(&format!(
        "req -x509 {ec} -keyout {} -out {} -subj /CN=meshprobe-test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        f("ca.key"),
        f("ca.crt")
    ));
    for (serial, name, usage, san) in [
        (1, "server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
        (2, "client", "clientAuth", "DNS:prometheus.test"),
    ] {
        let ext = dir.write(
            &format!("{name}.ext"),
            &format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\nsubjectAltName={san}\n"
            ),
        );
        openssl(&format!(
            "req {ec} -keyout {} -out {} -subj /CN={name}",
            f(&format!("{name}.key")),
            f(&format!("{name}.csr"))
        ));
        openssl(&format!(
            "x509 -req -in {} -CA {} -CAkey {} -set_serial {serial} -days 2 -extfile {} -out {}",
            f(&format!("{name}.csr")),
            f("ca.crt"),
            f("ca.key"),
            path(&ext),
            f(&format!("{name}.crt"))
        ));
    }
    openssl(&format!(
        "req -x509 {ec} -keyout {} -out {} -subj /CN=rogue",
        f("rogue.key"),
        f("rogue.crt")
    ));
}

/// Runs openssl with a space-separated argument line (the temp paths have no spaces).
fn openssl(line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    run("openssl", &args);
}

/// A bcrypt hash of `password` in the `$2y$` form htpasswd writes, at the lowest cost (fast in
/// debug builds).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_result(password, 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY)
}

/// meshprobe running in a namespace, started without an HTTP health check; killed (by its
/// PID) on drop.
pub struct WebExporter {
    pub child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl WebExporter {
    /// Starts meshprobe with `args` on 127.0.0.1:`port` and waits until the port accepts.
    pub fn start(namespace: &Namespace, args: &[&str], port: u16) -> WebExporter {
        let log_path = scratch_dir().join(format!("{}-web-{port}.log", namespace.name));
        let log = std::fs::File::create(&log_path).expect("create log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &namespace.name, binary()])
            .args(args)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start exporter");
        let mut exporter = WebExporter {
            child,
            port,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let name = namespace.name.clone();
        loop {
            let name = name.clone();
            let up = in_namespace(&name, move || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return exporter;
            }
            if let Ok(Some(status)) = exporter.child.try_wait() {
                panic!("exporter exited with {status}: {}", exporter.log());
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
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGHUP to our own child (`ip netns exec` execs, so its PID is the exporter's).
    pub fn sighup(&self) {
        // SAFETY: kill on a PID we spawned and still own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// Waits until the log contains `text`.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WebExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Runs meshprobe with `args` in `namespace` and waits for it to exit (at most 20 s, then it
/// is killed and the test fails). Returns the exit code and stderr.
pub fn run_to_exit(namespace: &Namespace, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, binary()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshprobe");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let output = child.wait_with_output().expect("collect output");
            return (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshprobe {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What curl got.
#[derive(Debug)]
pub struct CurlResult {
    /// curl's exit code (0 = transfer done; 35 = TLS handshake failed; 56 = receive failed).
    pub exit: Option<i32>,
    /// The HTTP status, 0 when there was no response.
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub stderr: String,
}

/// Runs `curl -sS -D - <args>` inside `namespace` (10 s limit).
pub fn curl(namespace: &Namespace, args: &[&str]) -> CurlResult {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespace.name,
            "curl",
            "-sS",
            "--max-time",
            "10",
        ])
        .args(["-D", "-", "--write-out", "\n@@status@@%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (response, status) = stdout
        .rsplit_once("\n@@status@@")
        .unwrap_or((stdout.as_str(), "0"));
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    CurlResult {
        exit: output.status.code(),
        status: status.trim().parse().unwrap_or(0),
        headers: headers.to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// [`curl`] with a space-separated argument line (no argument may contain a space).
pub fn curl_line(namespace: &Namespace, line: &str) -> CurlResult {
    curl(namespace, &line.split_whitespace().collect::<Vec<_>>())
}

/// Asserts that `haystack` contains every needle, showing `haystack` otherwise.
pub fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "no {needle:?} in:\n{haystack}");
    }
}

/// Runs `openssl s_client -connect 127.0.0.1:<port> <args>` inside `namespace` with `input` on
/// stdin; returns the output (stdout and stderr together).
pub fn s_client(namespace: &Namespace, port: u16, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &namespace.name, "timeout", "10", "openssl"])
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("s_client output")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
