//! Config errors in a user's words: where they are (file, line, column) and what the field
//! wants (an integer, not `i64`), every one of them rather than only the parser's first.
//!
//! Owns rendering parser errors ([`parse_report`]), finding the type errors after the first
//! (a bad plain value is blanked to `null` and the text parsed again) and locating validation
//! problems by key path ([`locate`]). It decides nothing about validity: [`super`] does.

use serde::de::DeserializeOwned;

/// What a file that does not parse as `T` says about itself.
pub(super) struct ParseReport<T> {
    /// The parser's excerpt for a single error, else one `file:line:column: message` per error.
    pub problems: Vec<String>,
    /// The file with every bad value blanked, parsed, for validating the rest of it.
    pub repaired: Option<(T, String)>,
}

/// Reports every type error in `text`, not just `error`, the parser's first.
pub(super) fn parse_report<T: DeserializeOwned>(
    text: &str,
    file: &str,
    error: &serde_saphyr::Error,
) -> ParseReport<T> {
    let (more, repaired) = later_value_errors::<T>(text, error);
    let problems = if more.is_empty() {
        let options = serde_saphyr::render_options! {
            formatter: &UserWords,
            source_name: Some(file),
        };
        vec![format!(
            "error parsing config file: {}",
            error.render_with_options(options)
        )]
    } else {
        std::iter::once(value_error_line(file, error))
            .chain(more.iter().map(|e| value_error_line(file, e)))
            .collect()
    };
    ParseReport { problems, repaired }
}

/// `file:line:column: message` for a parser error.
fn value_error_line(file: &str, error: &serde_saphyr::Error) -> String {
    use serde_saphyr::{Error, MessageFormatter};
    let inner = match error {
        Error::WithSnippet { error, .. } => error,
        other => other,
    };
    // Rendering entry points neutralise control characters; calling the formatter directly
    // does not, so do it here.
    let message = UserWords
        .format_message(inner)
        .replace(char::is_control, " ");
    match error.location() {
        Some(at) => format!("{file}:{}:{}: {message}", at.line(), at.column()),
        None => format!("{file}: {message}"),
    }
}

/// The parser stops at its first error. When that error is a bad plain value on a `key: value`
/// line (the type errors a user makes: `ttl: abc`), find the ones after it too: blank that value
/// to `null` (every such field is optional) and parse again, at most 20 times. An unknown or
/// repeated key is commented out instead ([`drop_key_at`]). Any other kind of error ends the
/// search, since neither could repair it.
fn later_value_errors<T: DeserializeOwned>(
    text: &str,
    first: &serde_saphyr::Error,
) -> (Vec<serde_saphyr::Error>, Option<(T, String)>) {
    let mut errors = Vec::new();
    let mut text = text.to_string();
    let mut current = drop_key_at(&text, first).or_else(|| blank_value_at(&text, first));
    while let Some(next) = current.take() {
        if errors.len() >= 20 {
            break;
        }
        text = next;
        match serde_saphyr::from_str::<T>(&text) {
            Ok(parsed) => return (errors, Some((parsed, text))),
            Err(error) => {
                current = drop_key_at(&text, &error).or_else(|| blank_value_at(&text, &error));
                // A blanked value that is still wrong (a required field): stop rather than
                // report an error of our own making.
                let mine = current.is_none()
                    && error
                        .location()
                        .is_some_and(|at| line_value(&text, at.line()) == Some("null"));
                if !mine {
                    errors.push(error);
                }
            }
        }
    }
    (errors, None)
}

/// The plain value of the `key: value` line `line` (1-based), if it is one.
fn line_value(text: &str, line: u64) -> Option<&str> {
    let line = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let (_, value) = line.split_once(": ")?;
    let value = value.split(" #").next().unwrap_or("").trim();
    let plain = !value.is_empty() && !value.starts_with(['[', '{', '|', '>', '&', '*', '!']);
    plain.then_some(value)
}

/// `text` with the plain value that `error` points at replaced by `null`, if it is one.
fn blank_value_at(text: &str, error: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error;
    if !matches!(
        error,
        Error::InvalidScalar { .. } | Error::Message { .. } | Error::WithSnippet { .. }
    ) {
        return None;
    }
    let at = error.location()?;
    let value = line_value(text, at.line())?;
    if value == "null" {
        return None;
    }
    let index = usize::try_from(at.line()).ok()?.checked_sub(1)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let line = lines.get_mut(index)?;
    let (key, _) = line.split_once(": ")?;
    *line = format!("{key}: null");
    Some(lines.join("\n") + "\n")
}

/// An unknown or repeated key stops the parser as well: `text` with that key's line, and the lines
/// indented under it, turned into comments (so every later line keeps its number), if `error`
/// is such an error on a `key:` line.
fn drop_key_at(text: &str, error: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::{Error, MessageFormatter};
    let inner = match error {
        Error::WithSnippet { error, .. } => error,
        other => other,
    };
    let unknown = UserWords.format_message(inner).contains("unknown field");
    if !unknown && !matches!(inner, Error::DuplicateMappingKey { .. }) {
        return None;
    }
    let index = usize::try_from(error.location()?.line())
        .ok()?
        .checked_sub(1)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let key_line = lines.get(index)?;
    if key_line.trim_start().starts_with('#') || !key_line.contains(':') {
        return None;
    }
    let indent = |line: &str| line.len() - line.trim_start().len();
    let depth = indent(key_line);
    let mut end = index + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent(&lines[end]) > depth) {
        end += 1;
    }
    for line in &mut lines[index..end] {
        *line = "#".to_string();
    }
    Some(lines.join("\n") + "\n")
}

/// `file:line: message`, or the message alone when the line is unknown.
pub(super) fn at_line(file: &str, line: Option<usize>, message: String) -> String {
    match line {
        Some(line) => format!("{file}:{line}: {message}"),
        None => message,
    }
}

/// Best effort: the 1-based line of the key at `path` (each key indented deeper than the last),
/// refined to the `field "a.b"` that `message` names, if that key is found below it.
pub(super) fn locate(text: &str, path: &[&str], message: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let key_at = |from: usize, min_indent: Option<usize>, key: &str| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, line)| {
                let trimmed = line.trim_start();
                min_indent.is_none_or(|min| indent(line) > min)
                    && (trimmed.starts_with(&format!("{key}:"))
                        || trimmed.starts_with(&format!("\"{key}\":"))
                        || trimmed.starts_with(&format!("'{key}':")))
            })
            .map(|(index, line)| (index, indent(line)))
    };
    let mut found: Option<(usize, usize)> = None;
    for key in path {
        found = Some(match found {
            None => key_at(0, None, key)?,
            Some((index, depth)) => key_at(index + 1, Some(depth), key)?,
        });
    }
    let (mut index, mut depth) = found?;
    let field = message
        .split_once("field \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(field, _)| field);
    let last = path.last().copied().unwrap_or_default();
    let keys = field.into_iter().flat_map(|field| field.split('.'));
    // `field "mesh.buckets"` below the `mesh:` key: skip the repeated `mesh`.
    for key in keys.skip_while(|key| *key == last) {
        let Some((next, next_depth)) = key_at(index + 1, Some(depth), key) else {
            break;
        };
        (index, depth) = (next, next_depth);
    }
    Some(index + 1)
}

/// serde-saphyr's user-facing wording, with the type a field wants in a user's words (not
/// `invalid i64`) and a duplicate key named as such (not the parser's `DuplicateKeyPolicy`).
struct UserWords;

impl serde_saphyr::MessageFormatter for UserWords {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> std::borrow::Cow<'a, str> {
        use serde_saphyr::Error;
        match err {
            Error::InvalidScalar { ty, .. } => {
                let wanted = match *ty {
                    "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
                    "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
                    "f32" | "f64" => "a number",
                    "bool" => "true or false",
                    "char" => "a single character",
                    other => other,
                };
                format!("expected {wanted}").into()
            }
            Error::DuplicateMappingKey { key: Some(key), .. } => {
                format!("key {key:?} is given twice; keep one").into()
            }
            Error::Unexpected { expected, .. } if expected.contains("scalar") => {
                "expected a single value here, not a list or a mapping".into()
            }
            _ => serde_saphyr::UserMessageFormatter.format_message(err),
        }
    }
}
