//! Unit tests of `config/mod.rs`, kept beside it so the module itself stays readable.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yml")
}

#[test]
fn every_validation_problem_is_reported_with_its_line() {
    let text = "allowed_targets: [nope]\nmodules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: 300\n  icmp:\n    prober: icmp\n    icmp:\n      payload_size: -1\n";
    let message = parse(text).expect_err("invalid").message;
    assert!(message.starts_with("3 problems:"), "{message}");
    assert!(message.contains("test.yml:6: module \"a\""), "{message}");
    assert!(
        message.contains("test.yml:10: module \"icmp\""),
        "{message}"
    );
    assert!(
        message.contains("test.yml:1: field \"allowed_targets\""),
        "{message}"
    );
}

#[test]
fn parser_errors_name_the_file_and_the_type_in_user_words() {
    let message = parse("modules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: x\n")
        .expect_err("invalid")
        .message;
    assert!(message.contains("test.yml:5:12"), "{message}");
    assert!(message.contains("expected an integer"), "{message}");
    let message = parse("modules:\n  a:\n    prober: icmp\n    icmp:\n      dont_fragment: 3\n")
        .expect_err("invalid")
        .message;
    assert!(message.contains("expected boolean"), "{message}");
}

#[test]
fn type_errors_and_validation_problems_are_reported_together() {
    let text =
        "modules:\n  a:\n    prober: icmp\n    icmp:\n      ttl: abc\n  b:\n    prober: nope\n";
    let message = parse(text).expect_err("invalid").message;
    assert!(message.starts_with("2 problems:"), "{message}");
    assert!(message.contains("expected an integer"), "{message}");
    assert!(message.contains("test.yml:7: module \"b\""), "{message}");
}

#[test]
fn every_type_error_is_reported_not_just_the_first() {
    // As blackbox reports both (its yaml.v3 collects unmarshal errors).
    let text = "modules:\n  a:\n    prober: icmp\n    timeout: 5\n    icmp:\n      ttl: abc\n      ip_protocol_fallback: maybe # comment\n";
    let message = parse(text).expect_err("invalid").message;
    assert!(message.contains("3 problems:"), "{message}");
    assert!(
        message.contains("test.yml:4:14: 5 has no unit"),
        "{message}"
    );
    assert!(
        message.contains("test.yml:6:12: expected an integer"),
        "{message}"
    );
    assert!(
        message.contains("test.yml:7:29: expected boolean"),
        "{message}"
    );
    // A duplicate key cannot be blanked away: one error, with its excerpt.
    let message = parse("modules:\n  a:\n    prober: icmp\n  a:\n    prober: x\n")
        .expect_err("invalid")
        .message;
    assert!(!message.contains("problems"), "{message}");
    assert!(message.contains("given twice"), "{message}");
}

#[test]
fn problems_after_an_unknown_or_repeated_key_are_reported_too() {
    let text = "modules:\n  a:\n    prober: icmp\n    colour:\n      shade: blue\n    icmp:\n      ttl: abc\n  b:\n    prober: icmp\n    icmp:\n      ttl: 5\n      ttl: 6\n      payload_size: xyz\n";
    let message = parse(text).expect_err("invalid").message;
    assert!(message.contains("4 problems:"), "{message}");
    for expected in [
        "test.yml:4:5: unknown field `colour`",
        "test.yml:7:12: expected an integer",
        "test.yml:12:7: key \"ttl\" is given twice",
        "test.yml:13:21: expected an integer",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

#[test]
fn embedded_default_has_the_three_icmp_modules() {
    let config = Config::embedded();
    let names: Vec<&str> = config.modules.keys().map(String::as_str).collect();
    assert_eq!(names, ["icmp", "icmp_ip4", "icmp_ip6"]);
    assert_eq!(config.modules["icmp"].icmp, IcmpSettings::default());
    assert_eq!(
        config.modules["icmp_ip4"].icmp.preferred_ip_protocol,
        Family::V4
    );
    assert!(!config.modules["icmp_ip6"].icmp.ip_protocol_fallback);
}

#[test]
fn blackbox_file_with_other_probers_loads() {
    let config = parse(
            "modules:\n  http_2xx:\n    prober: http\n    http:\n      valid_status_codes: [200]\n  \
             tcp_connect:\n    prober: tcp\n  icmp_example:\n    prober: icmp\n    timeout: 5s\n    \
             icmp:\n      preferred_ip_protocol: \"ip4\"\n      source_ip_address: \"127.0.0.1\"\n",
        )
        .expect("valid config");
    assert!(!config.modules["http_2xx"].is_icmp());
    let icmp = &config.modules["icmp_example"];
    assert_eq!(icmp.timeout, Duration::from_secs(5));
    assert_eq!(
        icmp.icmp.source_ip_address,
        Some("127.0.0.1".parse().unwrap())
    );
}

#[test]
fn errors_name_file_module_and_field() {
    let cases = [
        ("payload_size: -1", "icmp.payload_size"),
        ("payload_size: 70000", "icmp.payload_size"),
        ("source_ip_address: 10.0.0.300", "icmp.source_ip_address"),
        ("preferred_ip_protocol: ipv6", "icmp.preferred_ip_protocol"),
        ("ttl: -1", "cannot be negative"),
        ("ttl: 256", "cannot exceed 255"),
    ];
    for (line, expected) in cases {
        let text = format!("modules:\n  bad_module:\n    prober: icmp\n    icmp:\n      {line}\n");
        let error = parse(&text).expect_err(line).to_string();
        assert!(error.contains("test.yml"), "{error}");
        assert!(error.contains("bad_module"), "{error}");
        assert!(error.contains(expected), "{line}: {error}");
    }
}

#[test]
fn unknown_keys_duplicates_and_bad_timeouts_fail() {
    for text in [
        "modules:\n  m:\n    prober: icmp\n    icmp:\n      dont_fragmnet: true\n",
        "modules:\n  m:\n    prober: icmp\n  m:\n    prober: icmp\n",
        "modules:\n  m:\n    prober: icmp\n    timeout: 5\n",
        "modules:\n  m:\n    prober: icmp\n    timeout: 5d\n",
        "modules:\n  m:\n    prober: ping\n",
        "modules:\n  m:\n    timeout: 5s\n",
        "moduels: {}\n",
        "",
        "modules: [1, 2]\n",
    ] {
        assert!(parse(text).is_err(), "should fail: {text:?}");
    }
}

#[test]
fn yaml_merge_keys_and_yaml11_bools_work_like_yaml_v3() {
    let config = parse(
        "base: &base\n  prober: icmp\n  timeout: 3s\nmodules:\n  a:\n    <<: *base\n    icmp:\n      dont_fragment: yes\n",
    );
    // `base` is an unknown top-level key, as in blackbox; merge keys still work inside modules.
    assert!(config.is_err());
    let config = parse(
            "modules:\n  a: &a\n    prober: icmp\n    timeout: 3s\n  b:\n    <<: *a\n    icmp:\n      dont_fragment: yes\n",
        )
        .expect("merge keys");
    assert_eq!(config.modules["b"].timeout, Duration::from_secs(3));
    assert!(config.modules["b"].icmp.dont_fragment);
}

#[test]
fn allowed_targets_combine_global_and_module_lists() {
    let config = parse(
            "allowed_targets: [198.18.0.0/15, \"2001:2::/48\"]\nmodules:\n  any:\n    prober: icmp\n  \
             narrow:\n    prober: icmp\n    icmp:\n      allowed_targets: [198.18.1.1, 198.18.2.0/24]\n",
        )
        .expect("valid");
    let any = &config.modules["any"];
    let narrow = &config.modules["narrow"];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(config.allows(any, ip("198.19.255.1")));
    assert!(config.allows(any, ip("2001:2::5")));
    assert!(!config.allows(any, ip("10.0.0.1")));
    assert!(config.allows(narrow, ip("198.18.1.1")));
    assert!(config.allows(narrow, ip("198.18.2.77")));
    assert!(!config.allows(narrow, ip("198.18.1.2")));
    let error = parse(
        "modules:\n  m:\n    prober: icmp\n    icmp:\n      allowed_targets: [10.0.0.0/33]\n",
    )
    .expect_err("bad CIDR");
    assert!(
        error.to_string().contains("icmp.allowed_targets"),
        "{error}"
    );
    assert!(parse("allowed_targets: [nonsense]\nmodules: {}\n").is_err());
}

#[test]
fn dump_round_trips() {
    let config = Config::embedded();
    let dumped = config.to_yaml();
    assert!(dumped.contains("preferred_ip_protocol: ip4"), "{dumped}");
    assert!(dumped.contains("preferred_ip_protocol: ip6"), "{dumped}");
    assert_eq!(Config::parse(&dumped, "dump").expect("dump parses"), config);
    // A multi-packet module dumps its burst keys, and they parse back the same.
    let burst = parse(
            "modules:\n  burst:\n    prober: icmp\n    timeout: 3s\n    icmp:\n      packets: 5\n      packet_interval: 250ms\n      min_received: 3\n",
        )
        .expect("valid");
    let dumped = burst.to_yaml();
    assert!(dumped.contains("packet_interval: 250ms"), "{dumped}");
    assert_eq!(Config::parse(&dumped, "dump").expect("dump parses"), burst);
}
