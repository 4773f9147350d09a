//! The test suite's own rule (CONTRIBUTING.md, "The test suite"): a test that needs root, network namespaces or a
//! system tool is `#[ignore = "needs …"]`d, so that a plain `cargo test` lists it as ignored
//! instead of passing it without running, and `./test.sh` runs it with `--include-ignored`.
//! This reads every file under tests/ and checks that each `#[test]` whose body calls one of
//! the `require_*` checks, or starts the charm simulator, carries that attribute.

use std::path::{Path, PathBuf};

/// Calls that mark a test as needing root or a system tool.
const NEEDS: [&str; 6] = [
    "require_namespaces!()",
    "Sim::new()",
    "require_tool(",
    "require_chromium(",
    "require_blackbox(",
    "require_promtool(",
];
const TEST_ATTRIBUTE: &str = "#[test]";

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read tests/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(name, attributes, body)` of every top-level `#[test]` function in `text`; a body ends at
/// the first line that is a lone `}`.
fn tests_in(text: &str) -> Vec<(&str, &str, &str)> {
    let mut tests = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(TEST_ATTRIBUTE) {
        let item = &rest[at..];
        let Some(fn_at) = item.find("fn ") else { break };
        let body = &item[fn_at..];
        let body = &body[..body.find("\n}\n").map_or(body.len(), |end| end + 3)];
        let name = body[3..].split('(').next().unwrap_or_default();
        tests.push((name, &item[..fn_at], body));
        rest = &item[TEST_ATTRIBUTE.len()..];
    }
    tests
}

#[test]
fn tests_that_need_root_or_tools_are_ignored() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let own = root.join("test_rules.rs");
    let mut checked = 0;
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != own) {
        let text = std::fs::read_to_string(file).expect("read test file");
        for (name, attributes, body) in tests_in(&text) {
            checked += 1;
            let needs = NEEDS.iter().any(|call| body.contains(call));
            if needs && !attributes.contains("#[ignore = \"needs ") {
                offenders.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(checked > 50, "found only {checked} tests under tests/");
    assert!(
        offenders.is_empty(),
        "these tests need root or a system tool but are not #[ignore = \"needs …\"]d, so a plain \
         `cargo test` would fail them as non-root: {offenders:#?}"
    );
}

#[test]
fn the_rule_sees_a_test_without_the_attribute() {
    let text = "#[test]\nfn a() {\n    require_namespaces!();\n}\n\n#[test]\n\
                #[ignore = \"needs root\"]\nfn b() {\n    require_tool(X, \"x\");\n}\n";
    let tests = tests_in(text);
    assert_eq!(tests.len(), 2);
    assert_eq!(tests[0].0, "a");
    assert!(!tests[0].1.contains("#[ignore"));
    assert_eq!(tests[1].0, "b");
    assert!(tests[1].1.contains("#[ignore = \"needs "));
    assert!(tests[1].2.contains("require_tool("));
}
