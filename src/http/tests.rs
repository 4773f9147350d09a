//! Unit tests of `http/`, kept beside it so the module itself stays readable.

use super::*;

#[test]
fn query_parsing_follows_blackbox_and_names_what_strict_refuses() {
    assert_eq!(
        parse_probe_query("target=198.18.0.1&module=icmp&debug=true"),
        ProbeQuery {
            target: Some("198.18.0.1".into()),
            module: Some("icmp".into()),
            debug: true,
            problems: vec![],
        }
    );
    let twice = parse_probe_query("target=a&target=b&module=m&module=n");
    assert_eq!(
        twice.target.as_deref(),
        Some("a"),
        "first value wins, as in Go"
    );
    assert_eq!(twice.module.as_deref(), Some("m"));
    assert_eq!(twice.problems.len(), 2);
    assert!(twice.problems[0].contains("given twice"));
    assert!(parse_probe_query("target=a&target=a").problems.is_empty());
    let yes = parse_probe_query("target=a&debug=yes");
    assert!(!yes.debug);
    assert!(yes.problems[0].contains("debug must be"));
    assert!(parse_probe_query("debug=true&debug=false").debug);
    assert!(parse_probe_query("%%%&&==").problems.is_empty());
    assert_eq!(
        parse_probe_query("target=fe80%3A%3A1%25eth0").target,
        Some("fe80::1%eth0".into())
    );
}

#[test]
fn listen_addresses() {
    assert_eq!(parse_listen_address(":9115").map(|a| a[0].port()), Ok(9115));
    assert_eq!(
        parse_listen_address("127.0.0.1:80").map(|a| a[0].to_string()),
        Ok("127.0.0.1:80".into())
    );
    assert!(parse_listen_address(":x").is_err());
    assert!(parse_listen_address("nohostport").is_err());
}
