//! Enough of PromQL to say what a dashboard's query reads: its metrics, the labels it
//! matches and groups by, and what its legend prints.

/// What a PromQL expression reads.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Query {
    /// Each metric selector: the metric's name and the labels it matches on.
    pub(super) selectors: Vec<(String, Vec<String>)>,
    /// Labels named by `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    pub(super) grouping: Vec<String>,
    /// Labels `label_replace` makes.
    pub(super) made: Vec<String>,
}

pub(super) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

pub(super) fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

pub(super) fn skip_ws(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the string literal opening at `i`, and its raw text.
pub(super) fn string_at(chars: &[char], i: usize) -> (usize, String) {
    let quote = chars[i];
    let mut k = i + 1;
    let mut text = String::new();
    while let Some(&c) = chars.get(k) {
        if c == '\\' && quote != '`' {
            text.extend(chars.get(k..k + 2).unwrap_or_default());
            k += 2;
            continue;
        }
        if c == quote {
            return (k + 1, text);
        }
        text.push(c);
        k += 1;
    }
    (k, text)
}

/// The identifier at `i` and the index after it.
pub(super) fn ident_at(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while chars.get(i).copied().is_some_and(is_ident) {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// The label names of the matchers (or the exposition's labels) in the braces opening at
/// `i`, and the index after the closing brace.
pub(super) fn matchers(chars: &[char], i: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut k = i + 1;
    loop {
        while chars.get(k).is_some_and(|c| c.is_whitespace() || *c == ',') {
            k += 1;
        }
        match chars.get(k) {
            None => return (labels, k),
            Some('}') => return (labels, k + 1),
            Some(&c) if is_ident_start(c) => {
                let (label, after) = ident_at(chars, k);
                labels.push(label);
                k = skip_ws(chars, after);
                while chars.get(k).is_some_and(|c| matches!(c, '=' | '!' | '~')) {
                    k += 1;
                }
                k = skip_ws(chars, k);
                if chars.get(k).is_some_and(|c| matches!(c, '"' | '\'' | '`')) {
                    k = string_at(chars, k).0;
                }
            }
            Some(_) => k += 1,
        }
    }
}

/// The label names in the parenthesised list opening at `i`, and the index after it.
pub(super) fn label_list(chars: &[char], i: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut k = i + 1;
    while let Some(&c) = chars.get(k) {
        if c == ')' {
            return (labels, k + 1);
        }
        if is_ident_start(c) {
            let (label, after) = ident_at(chars, k);
            labels.push(label);
            k = after;
        } else {
            k += 1;
        }
    }
    (labels, k)
}

/// The second argument of the `label_replace(` whose parenthesis opens at `i`.
pub(super) fn label_replace_target(chars: &[char], i: usize) -> Option<String> {
    let mut depth = 0usize;
    let mut k = i;
    while let Some(&c) = chars.get(k) {
        match c {
            '"' | '\'' | '`' => {
                k = string_at(chars, k).0;
                continue;
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => {
                let at = skip_ws(chars, k + 1);
                return chars
                    .get(at)
                    .is_some_and(|c| matches!(c, '"' | '\'' | '`'))
                    .then(|| string_at(chars, at).1);
            }
            _ => {}
        }
        k += 1;
    }
    None
}

/// What `expr` reads: enough of PromQL for dashboards (selectors, functions, aggregations
/// and their grouping, binary operators, ranges, Grafana's `$variables`).
pub(super) fn parse_promql(expr: &str) -> Query {
    let chars: Vec<char> = expr.chars().collect();
    let mut query = Query::default();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if matches!(c, '"' | '\'' | '`') {
            i = string_at(&chars, i).0;
        } else if c == '[' {
            // A range or a subquery's: durations and `$__rate_interval`.
            while chars.get(i).is_some_and(|c| *c != ']') {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while chars.get(i).is_some_and(|c| *c != '}') {
                    i += 1;
                }
                i += 1;
            } else {
                i = ident_at(&chars, i).1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`0.99`, `1h`, `1e3`).
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
            {
                i += 1;
            }
        } else if c == '{' {
            i = matchers(&chars, i).1;
        } else if is_ident_start(c) {
            let (word, after) = ident_at(&chars, i);
            let next = skip_ws(&chars, after);
            i = after;
            match word.as_str() {
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                    if chars.get(next) == Some(&'(') {
                        let (labels, end) = label_list(&chars, next);
                        query.grouping.extend(labels);
                        i = end;
                    }
                }
                "and" | "or" | "unless" | "bool" | "offset" | "atan2" => {}
                // Aggregations, whose grouping may come before their parenthesis.
                "sum" | "min" | "max" | "avg" | "group" | "stddev" | "stdvar" | "count"
                | "count_values" | "bottomk" | "topk" | "quantile" => {}
                _ if chars.get(next) == Some(&'(') => {
                    if word == "label_replace"
                        && let Some(made) = label_replace_target(&chars, next)
                    {
                        query.made.push(made);
                    }
                    i = next + 1;
                }
                _ => {
                    let mut labels = Vec::new();
                    if chars.get(next) == Some(&'{') {
                        let (matched, end) = matchers(&chars, next);
                        labels = matched;
                        i = end;
                    }
                    query.selectors.push((word, labels));
                }
            }
        } else {
            i += 1;
        }
    }
    query
}

/// The labels a legend prints: `{{route}} {{status_class}}`.
pub(super) fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}
