//! Unit tests of the web config model: what loads, and that every refusal names the file and
//! the field. Real certificates and real TLS clients are in `tests/web_security.rs`.

use super::*;

const FILE: &str = "/etc/meshprobe/web.yml";

fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(text, Path::new(FILE))
}

fn error(text: &str) -> String {
    let error = parse(text).expect_err("should be refused");
    assert_eq!(error.file, FILE);
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("web config file {FILE}: ")),
        "{shown}"
    );
    shown
}

fn hash() -> String {
    bcrypt::hash_with_salt("pw", 4, [1; 16])
        .expect("hash")
        .format_for_version(bcrypt::Version::TwoY)
}

#[test]
fn empty_and_comment_only_files_mean_plain_http() {
    for text in ["", "\n", "# nothing\n", "---\n"] {
        let config = parse(text).expect("loads");
        assert!(!config.tls_enabled());
        assert_eq!(config.basic_auth_users(), 0);
    }
}

#[test]
fn auth_and_headers_without_tls() {
    let text = format!(
        "basic_auth_users:\n  alice: {}\nhttp_server_config:\n  http2: true\n  headers:\n    \
         X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n",
        hash()
    );
    let config = parse(&text).expect("loads");
    assert_eq!(config.basic_auth_users(), 1);
    assert!(!config.tls_enabled());
    assert_eq!(config.headers.len(), 2);
    assert!(
        config
            .headers
            .iter()
            .any(|(name, value)| name == "x-frame-options" && value == "deny")
    );
}

#[test]
fn refusals_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("tls_server_config: [", "error parsing YAML"),
        ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
        ("tls_server_config:\n  cert_fil: x\n", "cert_fil"),
        ("http_server_config:\n  header: {}\n", "header"),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "tls_server_config.cert_file: cannot read /etc/meshprobe/missing.crt",
        ),
        (
            "tls_server_config:\n  cert_file: x\n  key_file: y\n  min_version: TLS10\n",
            "tls_server_config.min_version: TLS10 is not supported",
        ),
        (
            "http_server_config:\n  headers:\n    Server: meshprobe\n",
            "http_server_config.headers.Server",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n",
            "http_server_config.headers.X-Frame-Options: invalid value",
        ),
        (
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
            "X-Content-Type-Options",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n",
            "basic_auth_users.alice",
        ),
        ("basic_auth_users:\n  alice:\n", "basic_auth_users.alice"),
        (
            "rate_limit:\n  interval: 1s\n  burst: 0\n",
            "rate_limit.burst",
        ),
        ("rate_limit:\n  burst: 1\n  rate: 3\n", "rate"),
        (
            "tls_server_config:\n  min_version: TLS13\n",
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
        ),
        (
            "tls_server_config:\n  cert: x\n",
            "missing one of key_file or key",
        ),
    ];
    for (text, expected) in cases {
        let shown = error(text);
        assert!(shown.contains(expected), "{text:?}: {shown}");
    }
}

#[test]
fn rate_limit_loads_and_keeps_its_bucket_across_unchanged_reloads() {
    let config = parse("rate_limit:\n  interval: 1h\n  burst: 1\n").expect("loads");
    assert!(config.rate_limit.as_ref().is_some_and(|l| l.allow()));
    assert!(
        parse("rate_limit:\n  burst: 5\n")
            .expect("loads")
            .rate_limit
            .is_none()
    );
    let dir = std::env::temp_dir().join(format!("meshprobe-web-rl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("web.yml");
    std::fs::write(&path, "rate_limit:\n  interval: 1h\n  burst: 1\n").expect("write");
    let store = WebStore::load(Some(path.clone())).expect("loads");
    let limiter = |store: &WebStore| store.current().rate_limit.clone().expect("limited");
    assert!(limiter(&store).allow());
    assert_eq!(store.reload(), Ok(true));
    assert!(
        !limiter(&store).allow(),
        "an unchanged reload keeps the spent bucket"
    );
    std::fs::write(&path, "rate_limit:\n  interval: 1h\n  burst: 2\n").expect("write");
    assert_eq!(store.reload(), Ok(true));
    assert!(limiter(&store).allow(), "new settings start a full bucket");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_secret_key_is_not_echoed() {
    let shown = error(
        "tls_server_config:\n  cert: notpem\n  key: \"-----BEGIN PRIVATE KEY-----\\nc2VjcmV0\\n\"\n",
    );
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
}

#[test]
fn reload_keeps_the_old_config_when_the_new_one_is_bad() {
    let dir = std::env::temp_dir().join(format!("meshprobe-web-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  alice: {}\n", hash())).expect("write");
    let store = WebStore::load(Some(path.clone())).expect("loads");
    assert_eq!(store.current().basic_auth_users(), 1);
    std::fs::write(&path, "basic_auth_users: [\n").expect("write");
    let error = store.reload().expect_err("bad file");
    assert!(error.to_string().contains("web.yml"), "{error}");
    assert_eq!(store.current().basic_auth_users(), 1);
    std::fs::write(&path, "").expect("write");
    assert_eq!(store.reload(), Ok(true));
    assert_eq!(store.current().basic_auth_users(), 0);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(WebStore::disabled().reload(), Ok(false));
}
