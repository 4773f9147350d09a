//! Just enough PromQL lexing to rewrite the queries the charm ships (config/meshprobe-rules.yml
//! and the two Grafana dashboards) for COS: add label matchers to every vector selector, as
//! cos-tool's `transform --label-matcher` does for the COS libraries, and rename or add a label in
//! grouping clauses (`by (…)`) and matchers.
//!
//! Owns the token rules: strings, `{…}` matcher blocks, `[…]` ranges, numbers, keywords,
//! aggregation operators and function calls. It is not a parser and does not validate: the tests
//! run every rewritten expression through promtool.

/// Words that are never metric names in the positions we scan.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];

/// Aggregation operators: `sum by (x) (…)` is not followed by `(` directly.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a label list in parentheses.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// One label matcher to add: the label it matches on (a selector that already matches on it is
/// left alone; empty for text that names no label) and its text, e.g. `juju_model="m"`.
pub struct Matcher {
    pub name: String,
    pub text: String,
}

impl Matcher {
    /// `name<op>"value"`, the value quoted and escaped as PromQL wants it.
    pub fn new(name: &str, op: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            text: format!("{name}{op}{value:?}"),
        }
    }

    /// Raw text that matches no label of its own (COS's `%%juju_topology%%` placeholder).
    pub fn raw(text: &str) -> Matcher {
        Matcher {
            name: String::new(),
            text: text.to_string(),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `start` (quote char included).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

/// Index of the bracket closing the one at `start` (strings skipped); `len` when unbalanced.
fn closing(chars: &[char], start: usize) -> usize {
    let (open, close) = (chars[start], matching(chars[start]));
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn matching(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// The identifier starting at `start` and the index just past it.
fn read_word(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && is_ident(chars[end]) {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

/// Copies the string literal or bracketed block at `i` (if there is one) to `out` and returns
/// the index after it.
fn copy_opaque(chars: &[char], i: usize, out: &mut String) -> Option<usize> {
    let end = match chars[i] {
        '"' | '\'' | '`' => skip_string(chars, i),
        '{' | '[' => (closing(chars, i) + 1).min(chars.len()),
        _ => return None,
    };
    out.extend(&chars[i..end]);
    Some(end)
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The label names a matcher block (without braces) already uses.
fn block_labels(block: &str) -> Vec<String> {
    let chars: Vec<char> = block.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut expect_name = true;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
            continue;
        }
        if expect_name && is_ident_start(c) {
            let (word, end) = read_word(&chars, i);
            names.push(word);
            i = end;
            expect_name = false;
            continue;
        }
        if c == ',' {
            expect_name = true;
        }
        i += 1;
    }
    names
}

/// Adds `matchers` to every vector selector of `expr`, skipping labels a selector already
/// matches on. `metric` becomes `metric{m}`, `metric{a="b"}` becomes `metric{m,a="b"}`.
pub fn inject(expr: &str, matchers: &[Matcher]) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 64);
    let mut i = 0;
    let render = |existing: &str| -> String {
        let present = block_labels(existing);
        matchers
            .iter()
            .filter(|m| m.name.is_empty() || !present.contains(&m.name))
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let emit_block = |out: &mut String, start: usize| -> usize {
        // `start` is at '{'; returns the index after '}'.
        let end = closing(&chars, start).min(chars.len().saturating_sub(1));
        let inner: String = chars[start + 1..end].iter().collect();
        let added = render(&inner);
        out.push('{');
        out.push_str(&added);
        if !added.is_empty() && !inner.trim().is_empty() {
            out.push(',');
        }
        out.push_str(&inner);
        out.push('}');
        end + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                let end = skip_string(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '[' => {
                let end = (closing(&chars, i) + 1).min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
            }
            '{' => i = emit_block(&mut out, i),
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let (word, end) = read_word(&chars, i);
                i = end;
                out.push_str(&word);
                let next = next_non_space(&chars, i);
                let next_char = chars.get(next).copied();
                if GROUPING.contains(&word.as_str()) && next_char == Some('(') {
                    let end = (closing(&chars, next) + 1).min(chars.len());
                    out.extend(&chars[i..end]);
                    i = end;
                } else if KEYWORDS.contains(&word.as_str())
                    || AGGREGATIONS.contains(&word.as_str())
                    || next_char == Some('(')
                {
                    // Keyword, aggregation or function call: not a selector.
                } else if next_char == Some('{') {
                    out.extend(&chars[i..next]);
                    i = emit_block(&mut out, next);
                } else {
                    out.push('{');
                    out.push_str(&render(""));
                    out.push('}');
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Applies `edit` to every label list after `by`/`without`/`on`/`ignoring`/`group_*`
/// (the text between the parentheses) and returns the new expression.
pub fn edit_groupings(expr: &str, mut edit: impl FnMut(&[String]) -> Vec<String>) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 32);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(end) = copy_opaque(&chars, i, &mut out) {
            i = end;
            continue;
        }
        if is_ident_start(c) && (i == 0 || !is_ident(chars[i - 1])) {
            let (word, end) = read_word(&chars, i);
            i = end;
            out.push_str(&word);
            let next = next_non_space(&chars, i);
            if GROUPING.contains(&word.as_str()) && chars.get(next) == Some(&'(') {
                let end = closing(&chars, next).min(chars.len());
                let inner: String = chars[next + 1..end].iter().collect();
                let labels: Vec<String> = inner
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                out.extend(&chars[i..next]);
                out.push('(');
                out.push_str(&edit(&labels).join(", "));
                out.push(')');
                i = (end + 1).min(chars.len());
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Renames label `from` to `to` in matcher blocks and grouping clauses.
pub fn rename_label(expr: &str, from: &str, to: &str) -> String {
    let renamed = edit_groupings(expr, |labels| {
        labels
            .iter()
            .map(|l| if l == from { to.to_string() } else { l.clone() })
            .collect()
    });
    let chars: Vec<char> = renamed.chars().collect();
    let mut out = String::with_capacity(renamed.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                let end = skip_string(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
            }
            '{' => {
                let end = closing(&chars, i).min(chars.len().saturating_sub(1));
                let mut j = i + 1;
                out.push('{');
                while j < end {
                    let c = chars[j];
                    if c == '"' || c == '\'' || c == '`' {
                        let e = skip_string(&chars, j);
                        out.extend(&chars[j..e]);
                        j = e;
                    } else if is_ident_start(c) && !is_ident(chars[j - 1]) {
                        let (word, next) = read_word(&chars[..end], j);
                        j = next;
                        out.push_str(if word == from { to } else { &word });
                    } else {
                        out.push(c);
                        j += 1;
                    }
                }
                out.push('}');
                i = end + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_go_into_every_selector_and_nowhere_else() {
        let matchers = [
            Matcher::new("juju_model", "=", "m"),
            Matcher::new("juju_application", "=", "a"),
        ];
        let cases = [
            ("up", r#"up{juju_model="m",juju_application="a"}"#),
            (
                "probe_success == 0",
                r#"probe_success{juju_model="m",juju_application="a"} == 0"#,
            ),
            (
                r#"sum by (job, le) (rate(x_bucket{peer="p"}[5m])) / sum(y) by (job)"#,
                r#"sum by (job, le) (rate(x_bucket{juju_model="m",juju_application="a",peer="p"}[5m])) / sum(y{juju_model="m",juju_application="a"}) by (job)"#,
            ),
            (
                "histogram_quantile(0.5, a:b:c5m) > 2 * d and a:b:c5m - d > 0.001",
                r#"histogram_quantile(0.5, a:b:c5m{juju_model="m",juju_application="a"}) > 2 * d{juju_model="m",juju_application="a"} and a:b:c5m{juju_model="m",juju_application="a"} - d{juju_model="m",juju_application="a"} > 0.001"#,
            ),
            (
                r#"topk(20, x{juju_model="other"} > 0)"#,
                r#"topk(20, x{juju_application="a",juju_model="other"} > 0)"#,
            ),
            (
                r#"rate(x{a="{not a block}"}[$__rate_interval])"#,
                r#"rate(x{juju_model="m",juju_application="a",a="{not a block}"}[$__rate_interval])"#,
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(inject(expr, &matchers), want, "{expr}");
        }
        assert_eq!(
            inject(r#"x{a="b"} / y"#, &[Matcher::raw("%%juju_topology%%")]),
            r#"x{%%juju_topology%%,a="b"} / y{%%juju_topology%%}"#
        );
    }

    #[test]
    fn groupings_and_matchers_rename_labels() {
        let expr = r#"sum by (instance, peer) (rate(x{instance=~"$source", peer="instance"}[5m])) / on (instance) y"#;
        assert_eq!(
            rename_label(expr, "instance", "juju_unit"),
            r#"sum by (juju_unit, peer) (rate(x{juju_unit=~"$source", peer="instance"}[5m])) / on (juju_unit) y"#
        );
        let added = edit_groupings("sum by (job, instance) (x) / sum without(le) (y)", |l| {
            let mut l = l.to_vec();
            if l.iter().any(|x| x == "instance") {
                l.push("juju_unit".into());
            }
            l
        });
        assert_eq!(
            added,
            "sum by (job, instance, juju_unit) (x) / sum without(le) (y)"
        );
    }
}
