//! Finds the dotted key path (`backends.echo.num_replicas`) at a line of a block-style YAML document, for error messages.

/// One `key:` line: its column (0-based) and key.
fn key_on_line(line: &str) -> Option<(usize, &str)> {
    let mut col = line.len() - line.trim_start().len();
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix("- ") {
        let trimmed = after.trim_start();
        col += rest.len() - trimmed.len();
        rest = trimmed;
    }
    if rest.starts_with('#') || rest.is_empty() {
        return None;
    }
    let end = rest
        .char_indices()
        .find(|&(i, c)| c == ':' && rest[i + 1..].chars().next().is_none_or(char::is_whitespace))
        .map(|(i, _)| i)?;
    let key = rest[..end].trim();
    if key.is_empty() || key.starts_with(['{', '[', '-']) {
        return None;
    }
    Some((col, key.trim_matches(|c| c == '"' || c == '\'')))
}

/// The dotted path of keys enclosing `line` (1-based) of `source`.
///
/// The key written on `line` itself is included when the error points at or after it
/// (`column`, 1-based), unless `own_key` is false (a missing field is reported at the first
/// key of the mapping that lacks it).
pub(crate) fn key_path_at(source: &str, line: usize, column: usize, own_key: bool) -> String {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (index, text) in source.lines().enumerate().take(line) {
        let Some((col, key)) = key_on_line(text) else {
            continue;
        };
        let is_error_line = index + 1 == line;
        if is_error_line && (!own_key && column <= col + 1) {
            stack.retain(|&(c, _)| c < col);
            break;
        }
        stack.retain(|&(c, _)| c < col);
        stack.push((col, key));
    }
    stack.iter().map(|&(_, k)| k).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
http:
  port: 8000
backends:
  echo:
    builtin: echo   # comment: here
    num_replicas: 0
  other: {rust: x}
endpoints:
  api:
    route: /api
    traffic:
      echo: 0.5
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(key_path_at(DOC, 2, 9, true), "http.port");
        assert_eq!(key_path_at(DOC, 6, 19, true), "backends.echo.num_replicas");
        assert_eq!(key_path_at(DOC, 7, 11, true), "backends.other");
        assert_eq!(key_path_at(DOC, 12, 13, true), "endpoints.api.traffic.echo");
    }

    #[test]
    fn missing_fields_point_at_the_parent() {
        assert_eq!(key_path_at(DOC, 5, 5, false), "backends.echo");
    }

    #[test]
    fn sequences_and_comments_are_skipped() {
        let doc = "http:\n  middlewares:\n    - cors:\n        max_age: x\n";
        assert_eq!(
            key_path_at(doc, 4, 18, true),
            "http.middlewares.cors.max_age"
        );
    }
}
