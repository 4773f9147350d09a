//! `--web.config.file` with real clients: HTTPS with basic auth (curl), plain HTTP on the TLS
//! port, client certificates (required, verified, any), TLS versions and cipher suites
//! (`openssl s_client`), reloads that keep the old web config when the new one is bad, broken
//! files that stop the exporter with exit code 1, and basic auth without TLS.
//!
//! Certificates are generated per test with the `openssl` CLI. The exporter and the clients run
//! only inside namespaces the test creates.

mod support;

use std::time::{Duration, Instant};

use support::web::{
    CurlResult, TempDir, WebExporter, assert_contains, bcrypt_hash, curl_line, generate_pki,
    run_to_exit, s_client, text,
};
use support::*;

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

fn assert_status(result: &CurlResult, status: u16) {
    assert_eq!(result.status, status, "expected HTTP {status}: {result:#?}");
}

fn start(namespace: &Namespace, web_config: &std::path::Path, port: u16) -> WebExporter {
    WebExporter::start(
        namespace,
        &["--web.config.file", path_str(web_config)],
        port,
    )
}

/// TLS + basic auth + headers: the right password gets metrics and probes, everything else a
/// 401 with `WWW-Authenticate: Basic` on every endpoint; plain HTTP on the TLS port gets Go's
/// 400 text at once; reloads (POST and SIGHUP) swap passwords and keep the running web config
/// when the new file is broken.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn https_with_basic_auth() {
    require_namespaces!();
    let net = TestNet::new();
    let dir = TempDir::new("https");
    generate_pki(&dir);
    let web_config = |password: &str| {
        format!(
            "{TLS}http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
             X-Content-Type-Options: nosniff\nbasic_auth_users:\n  alice: {}\n",
            bcrypt_hash(password)
        )
    };
    // Relative cert paths resolve against the web config's directory, not the working dir.
    let web = dir.write("web.yml", &web_config("old-secret"));
    let exporter = start(&net.prober, &web, 9443);
    exporter.wait_for_log("Loaded web config file");
    assert_contains(&exporter.log(), &["tls=true", "basic_auth_users=1"]);
    let ca = dir.file("ca.crt");
    let https = |options: &str, path: &str| {
        curl_line(
            &net.prober,
            &format!("--cacert {ca} {options} https://127.0.0.1:9443{path}"),
        )
    };

    let ok = https("-u alice:old-secret", "/metrics");
    assert_status(&ok, 200);
    assert_contains(&ok.body, &["meshprobe_build_info"]);
    let headers = ok.headers.to_ascii_lowercase();
    assert_contains(
        &headers,
        &["x-frame-options: deny", "x-content-type-options: nosniff"],
    );
    // Again: now served from the cache of successful checks.
    assert_status(&https("-u alice:old-secret", "/metrics"), 200);
    let probe = https(
        "-u alice:old-secret",
        &format!("/probe?module=icmp&target={TARGET_V4}"),
    );
    assert_status(&probe, 200);
    assert_contains(&probe.body, &["probe_success 1"]);

    for user in ["alice:wrong", "bob:old-secret", "alice:"] {
        let denied = https(&format!("-u {user}"), "/metrics");
        assert_status(&denied, 401);
        assert!(!denied.body.contains("meshprobe_build_info"));
    }
    for path in ["/metrics", "/-/healthy", "/", "/config", "/probe?target=x"] {
        let denied = https("", path);
        assert_status(&denied, 401);
        let headers = denied.headers.to_ascii_lowercase();
        assert_contains(
            &headers,
            &["www-authenticate: basic", "x-frame-options: deny"],
        );
    }

    // Plain HTTP to the TLS port: Go's answer at once, not a hang or a reset.
    let started = Instant::now();
    let plain = curl_line(&net.prober, "http://127.0.0.1:9443/metrics");
    assert_status(&plain, 400);
    assert_eq!(
        plain.body,
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    assert_eq!(plain.exit, Some(0), "{plain:#?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Reload by POST with a new password: the old one stops working.
    dir.write("web.yml", &web_config("new-secret"));
    assert_status(&https("-u alice:old-secret -X POST", "/-/reload"), 200);
    assert_status(&https("-u alice:old-secret", "/metrics"), 401);
    assert_status(&https("-u alice:new-secret", "/metrics"), 200);

    // A broken web config: POST answers 500 naming the file and field; the running one stays.
    dir.write("web.yml", &format!("{TLS}  bogus: 1\n"));
    let broken = https("-u alice:new-secret -X POST", "/-/reload");
    assert_status(&broken, 500);
    assert_contains(&broken.body, &[path_str(&web), "bogus"]);
    assert_status(&https("-u alice:new-secret", "/metrics"), 200);

    // SIGHUP reloads the web config too; a bad one is logged and ignored.
    exporter.sighup();
    exporter.wait_for_log("Error reloading web config");
    assert_status(&https("-u alice:new-secret", "/metrics"), 200);
    dir.write("web.yml", &web_config("old-secret"));
    exporter.sighup();
    exporter.wait_for_log("Reloaded web config file");
    assert_status(&https("-u alice:old-secret", "/metrics"), 200);
}

/// RequireAndVerifyClientCert: no client certificate, or one the CA did not issue, fails the
/// handshake; the CA's client certificate gets through (curl and openssl s_client).
/// RequireAnyClientCert accepts any certificate but still requires one. Inline PEM (`cert:`,
/// `key:`) works too.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn client_certificates() {
    require_namespaces!();
    let namespace = Namespace::new("wc");
    let dir = TempDir::new("mtls");
    generate_pki(&dir);
    let verify = dir.write(
        "verify.yml",
        &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"),
    );
    let pem = |name: &str| {
        let text = std::fs::read_to_string(dir.file(name)).expect("read pem");
        text.trim_end().replace('\n', "\n    ")
    };
    let any = dir.write(
        "any.yml",
        &format!(
            "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n  \
             client_auth_type: RequireAnyClientCert\n",
            pem("server.crt"),
            pem("server.key")
        ),
    );
    let _verifying = start(&namespace, &verify, 9443);
    let _any = start(&namespace, &any, 9444);
    let ca = dir.file("ca.crt");
    let get = |port: u16, options: &str| {
        curl_line(
            &namespace,
            &format!("--cacert {ca} {options} https://127.0.0.1:{port}/metrics"),
        )
    };
    let client = format!(
        "--cert {} --key {}",
        dir.file("client.crt"),
        dir.file("client.key")
    );
    let rogue = format!(
        "--cert {} --key {}",
        dir.file("rogue.crt"),
        dir.file("rogue.key")
    );

    for version in ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"] {
        let none = get(9443, version);
        assert_eq!(
            none.status, 0,
            "{version}: no certificate must fail: {none:#?}"
        );
        assert_contains(&none.stderr, &["certificate required"]);
    }
    let stranger = get(9443, &rogue);
    assert_eq!(
        stranger.status, 0,
        "a certificate from another CA: {stranger:#?}"
    );
    assert_contains(&stranger.stderr, &["alert certificate unknown"]);
    let good = get(9443, &client);
    assert_status(&good, 200);
    assert_contains(&good.body, &["meshprobe_build_info"]);
    let (crt, key) = (dir.file("client.crt"), dir.file("client.key"));
    let handshake = s_client(
        &namespace,
        9443,
        &[
            "-CAfile",
            &ca,
            "-cert",
            &crt,
            "-key",
            &key,
            "-verify_return_error",
        ],
        "",
    );
    assert!(handshake.status.success(), "{}", text(&handshake));

    assert_status(&get(9444, &rogue), 200);
    assert_status(&get(9444, &client), 200);
    let none = get(9444, "");
    assert_eq!(
        none.status, 0,
        "RequireAnyClientCert without a certificate: {none:#?}"
    );
}

/// min_version TLS13 refuses a TLS 1.2-only client and serves a TLS 1.3 one; max_version TLS12
/// with one cipher suite makes TLS 1.2 with exactly that suite.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn tls_versions_and_cipher_suites() {
    require_namespaces!();
    let namespace = Namespace::new("wv");
    let dir = TempDir::new("versions");
    generate_pki(&dir);
    let tls13 = dir.write("tls13.yml", &format!("{TLS}  min_version: TLS13\n"));
    let tls12 = dir.write(
        "tls12.yml",
        &format!(
            "{TLS}  max_version: TLS12\n  curve_preferences: [CurveP256]\n  \
             cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n"
        ),
    );
    let _tls13 = start(&namespace, &tls13, 9443);
    let _tls12 = start(&namespace, &tls12, 9444);
    let ca = dir.file("ca.crt");

    let old = s_client(&namespace, 9443, &["-CAfile", &ca, "-tls1_2"], "");
    assert!(
        !old.status.success(),
        "TLS 1.2 client accepted: {}",
        text(&old)
    );
    assert_contains(&text(&old), &["protocol version"]);
    let url = "https://127.0.0.1:9443/metrics";
    let old = curl_line(
        &namespace,
        &format!("--cacert {ca} --tlsv1.2 --tls-max 1.2 {url}"),
    );
    assert_eq!((old.status, old.exit), (0, Some(35)), "{old:#?}");
    let new = s_client(&namespace, 9443, &["-CAfile", &ca, "-tls1_3"], "");
    assert!(new.status.success(), "{}", text(&new));
    assert_contains(&text(&new), &["TLSv1.3"]);
    assert_status(
        &curl_line(&namespace, &format!("--cacert {ca} --tlsv1.3 {url}")),
        200,
    );

    let pinned = s_client(&namespace, 9444, &["-CAfile", &ca], "");
    assert!(pinned.status.success(), "{}", text(&pinned));
    assert_contains(
        &text(&pinned),
        &["TLSv1.2, Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"],
    );
    let too_new = s_client(&namespace, 9444, &["-CAfile", &ca, "-tls1_3"], "");
    assert!(!too_new.status.success(), "{}", text(&too_new));
}

/// A broken web config stops the exporter at startup with exit code 1 and a message that
/// names the file and the field; `--config.check` checks the web config too.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn broken_web_config_exits_1() {
    require_namespaces!();
    let namespace = Namespace::new("wb");
    let dir = TempDir::new("broken");
    generate_pki(&dir);
    // (file, content with {TLS} for the valid TLS lines, what the error must say)
    let cases: &[(&str, &str, &str)] = &[
        ("yaml.yml", "tls_server_config: [\n", "error parsing YAML"),
        (
            "unknown.yml",
            "{TLS}  certfile: x\n",
            "unknown field `certfile`",
        ),
        (
            "top.yml",
            "basic_auth:\n  a: b\n",
            "unknown field `basic_auth`",
        ),
        (
            "missing.yml",
            "tls_server_config:\n  cert_file: nothere.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file: cannot read",
        ),
        (
            "tls10.yml",
            "{TLS}  min_version: TLS10\n",
            "tls_server_config.min_version: TLS10 is not supported",
        ),
        (
            "mismatch.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            "do not fit together",
        ),
        (
            "noca.yml",
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "cipher.yml",
            "{TLS}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
            "tls_server_config.cipher_suites",
        ),
        (
            "hash.yml",
            "basic_auth_users:\n  alice: hunter2\n",
            "basic_auth_users.alice",
        ),
        (
            "header.yml",
            "http_server_config:\n  headers:\n    Server: x\n",
            "http_server_config.headers.Server",
        ),
    ];
    for (name, content, expected) in cases {
        let file = dir.write(name, &content.replace("{TLS}", TLS));
        let file = path_str(&file);
        let listen = "--web.listen-address=127.0.0.1:9443";
        let (code, stderr) = run_to_exit(&namespace, &["--web.config.file", file, listen]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_contains(&stderr, &[file, expected]);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let absent = dir.file("absent.yml");
    let (code, stderr) = run_to_exit(&namespace, &["--web.config.file", &absent]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_contains(&stderr, &[&absent, "error reading file"]);

    let tls10 = dir.file("tls10.yml");
    let (code, stderr) = run_to_exit(&namespace, &["--config.check", "--web.config.file", &tls10]);
    assert_eq!(code, Some(1), "{stderr}");
    let good = dir.write("good.yml", TLS);
    let (code, stderr) = run_to_exit(
        &namespace,
        &["check-config", "--web.config.file", path_str(&good)],
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// Basic auth on plain HTTP: curl with and without the password, and a raw request with a
/// malformed `Authorization` header.
#[test]
#[ignore = "needs root and network namespaces: run with --include-ignored (./test.sh)"]
fn basic_auth_without_tls() {
    require_namespaces!();
    let namespace = Namespace::new("wa");
    let dir = TempDir::new("plain");
    let users = format!(
        "basic_auth_users:\n  alice: {}\n  bob: {}\n",
        bcrypt_hash("alice-pw"),
        bcrypt_hash("bob-pw")
    );
    let exporter = start(&namespace, &dir.write("web.yml", &users), 9115);
    exporter.wait_for_log("tls=false");
    let get = |options: &str, path: &str| {
        curl_line(
            &namespace,
            &format!("{options} http://127.0.0.1:9115{path}"),
        )
    };
    let ok = get("-u alice:alice-pw", "/metrics");
    assert_status(&ok, 200);
    assert_contains(&ok.body, &["meshprobe_build_info"]);
    assert_status(&get("-u bob:bob-pw", "/-/healthy"), 200);
    assert_status(&get("-u bob:alice-pw", "/-/healthy"), 401);
    let denied = get("", "/metrics");
    assert_status(&denied, 401);
    assert_contains(
        &denied.headers.to_ascii_lowercase(),
        &["www-authenticate: basic"],
    );
    assert_eq!(denied.body, "Unauthorized\n");
    let request = build_request("GET", "/metrics", &[("Authorization", "Basic !!!")]);
    let raw = namespace.enter(move || http_exchange(9115, &request));
    assert_eq!(raw.expect("raw request").status, 401);
}
