//! The Grafana dashboard `deploy/grafana/ferroserve.json` against the real binary: every
//! metric its queries read, every label they match, group by or print in a legend, is one
//! that `/metrics` exposes after traffic, in both of its formats. Renaming a metric or a
//! label fails here instead of blanking a panel.

mod common;
#[path = "grafana/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{client, fetch_status, spawn_cli, status_and_text};
use promql::{Query, ident_at, legend_labels, matchers, parse_promql};
use serde_json::Value;

/// The dashboard, parsed.
fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/ferroserve.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One query of a panel: its PromQL and its legend.
struct Target {
    panel: String,
    expr: String,
    legend: String,
}

/// Every object with an `expr`, wherever it sits (rows nest panels).
fn targets(value: &Value, panel: &str, out: &mut Vec<Target>) {
    match value {
        Value::Object(map) => {
            let panel = map
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or(panel)
                .to_owned();
            if let Some(expr) = map.get("expr").and_then(Value::as_str) {
                out.push(Target {
                    panel: panel.clone(),
                    expr: expr.to_owned(),
                    legend: map
                        .get("legendFormat")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            for child in map.values() {
                targets(child, &panel, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                targets(item, panel, out);
            }
        }
        _ => {}
    }
}

/// A `/metrics` text: each family's type, and the label names of each sample name.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                exposition
                    .types
                    .insert(name.to_owned(), kind.trim().to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let (name, after) = ident_at(&chars, 0);
        let labels = if chars.get(after) == Some(&'{') {
            matchers(&chars, after).0
        } else {
            Vec::new()
        };
        exposition.samples.entry(name).or_default().extend(labels);
    }
    exposition
}

/// The family a sample name belongs to, and the type that family must have: a histogram's
/// `_bucket`, `_sum` and `_count`; a counter's `_total` (the classic text names the family
/// `x_total`, OpenMetrics `x`); else a gauge.
fn family_of(name: &str, openmetrics: bool) -> (String, &'static str) {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return (base.to_owned(), "histogram");
        }
    }
    match name.strip_suffix("_total") {
        Some(base) if openmetrics => (base.to_owned(), "counter"),
        Some(_) => (name.to_owned(), "counter"),
        None => (name.to_owned(), "gauge"),
    }
}

/// The metric and label of a `label_values(METRIC, LABEL)` variable query.
fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    let metric = parse_promql(metric).selectors.into_iter().next()?.0;
    Some((metric, label.trim().to_owned()))
}

/// The query of each templating variable that has one (`label_values(...)`), by name.
fn variable_queries(dashboard: &Value) -> BTreeMap<String, String> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list is a list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .or_else(|| v["definition"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                query.to_owned(),
            )
        })
        .collect()
}

/// Serves every family with samples: HTTP answers of 2xx, 4xx and none routed; two Rust
/// backends; a Python backend with a batch method (`ray_serve_actual_batch_size` has
/// samples only for backends that ran batches).
fn app() -> String {
    let batched = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    format!(
        "\
backends:
  hello: {{builtin: static, init_args: {{body: hi}}}}
  echo: {{builtin: echo, num_replicas: 2}}
  doubler:
    python: batched:Doubler
    working_dir: '{}'
    max_batch_size: 4
    batch_wait_timeout_ms: 50
endpoints:
  hello: {{route: /hello, backend: hello}}
  echo: {{route: /echo, methods: [GET, POST], backend: echo}}
  doubler: {{route: /double, methods: [POST], backend: doubler}}
",
        batched.display()
    )
}

#[test]
fn the_parser_finds_metrics_and_labels() {
    let query = parse_promql(
        r#"sum by (route, status_class) (label_replace(rate(a_total{route=~"$route", x!="}"}[$__rate_interval]), "status_class", "${1}xx", "status_code", "(.).."))
           / on (route) group_left sum without (le) (b_bucket) > bool 0.5 offset 1h"#,
    );
    assert_eq!(
        query,
        Query {
            selectors: vec![
                ("a_total".into(), vec!["route".into(), "x".into()]),
                ("b_bucket".into(), vec![]),
            ],
            grouping: vec![
                "route".into(),
                "status_class".into(),
                "route".into(),
                "le".into()
            ],
            made: vec!["status_class".into()],
        }
    );
    assert_eq!(
        legend_labels("p99 {{ route }} {{status_class}}xx"),
        ["route", "status_class"]
    );
    let text =
        "# TYPE a counter\na_total{route=\"/a,\\\"b}\",method=\"GET\"} 1\na_created 1.0\n# EOF\n";
    let exposition = parse_exposition(text);
    assert_eq!(exposition.types["a"], "counter");
    assert_eq!(
        exposition.samples["a_total"],
        BTreeSet::from(["route".to_owned(), "method".to_owned()])
    );
    assert_eq!(
        label_values("label_values(x_total{a=\"b\"}, route)"),
        Some(("x_total".into(), "route".into()))
    );
}

#[test]
fn the_dashboard_imports_with_a_prometheus_variable() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    assert_eq!(dashboard["uid"], "ferroserve");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let queries = variable_queries(&dashboard);
    for name in ["deployment", "route"] {
        let query = queries
            .get(name)
            .unwrap_or_else(|| panic!("a `{name}` variable"));
        assert!(label_values(query).is_some(), "{name}: {query}");
    }

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title} has no id"));
        assert!(ids.insert(id), "panel id {id} repeated: {title}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }

    // PromQL that Prometheus parses, when promtool is here (CI installs it).
    let mut all = Vec::new();
    targets(&dashboard, "", &mut all);
    let rules: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let expr = t
                .expr
                .replace("$__rate_interval", "1m")
                .replace("$deployment", ".*")
                .replace("$route", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yml");
    // JSON is YAML.
    std::fs::write(&path, file.to_string()).expect("written");
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool refuses a query of the dashboard:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var_os("FERROSERVE_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here (apt-get install prometheus): {e}"
            );
            common::skip(&format!(
                "the PromQL check: promtool is not installed (apt-get install prometheus): {e}"
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_reads_what_the_server_exposes() {
    let dashboard = dashboard();
    let server = spawn_cli(&app());
    let http = client();
    for _ in 0..3 {
        assert_eq!(fetch_status(http.get(server.url("/hello"))).await, 200);
    }
    assert_eq!(
        fetch_status(http.post(server.url("/echo")).body("x")).await,
        200
    );
    assert_eq!(fetch_status(http.delete(server.url("/echo"))).await, 405);
    assert_eq!(fetch_status(http.get(server.url("/nowhere"))).await, 404);
    // Sent together, so that the batch method gets batches.
    let doubled = futures_util::future::join_all(
        (0..8).map(|i| status_and_text(http.post(server.url("/double")).body(i.to_string()))),
    )
    .await;
    for (i, (status, text)) in doubled.into_iter().enumerate() {
        assert_eq!((status.as_u16(), text), (200, (i * 2).to_string()));
    }

    // The classic text (promtool, older tools) and OpenMetrics (what Prometheus asks for).
    let classic = http
        .get(server.control_url("/metrics"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    let open = http
        .get(server.control_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    assert!(
        open.trim_end().ends_with("# EOF"),
        "not OpenMetrics:\n{open}"
    );
    let formats = [
        ("classic", false, parse_exposition(&classic)),
        ("OpenMetrics", true, parse_exposition(&open)),
    ];

    let mut all = Vec::new();
    targets(&dashboard, "", &mut all);
    for (variable, query) in variable_queries(&dashboard) {
        let (metric, label) = label_values(&query)
            .unwrap_or_else(|| panic!("variable `{variable}`: {query} is not label_values"));
        all.push(Target {
            panel: format!("variable `{variable}`"),
            expr: format!("sum by ({label}) ({metric})"),
            legend: String::new(),
        });
    }
    assert!(all.len() > 10, "the dashboard has its queries");

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for target in &all {
        let query = parse_promql(&target.expr);
        let at = format!("{}: {}", target.panel, target.expr);
        if query.selectors.is_empty() {
            problems.push(format!("{at}\n  reads no metric"));
        }
        for (format, openmetrics, exposition) in &formats {
            let mut known: BTreeSet<String> = query.made.iter().cloned().collect();
            for (metric, matched) in &query.selectors {
                used.insert(metric.clone());
                let (family, kind) = family_of(metric, *openmetrics);
                match exposition.types.get(&family) {
                    Some(found) if found == kind => {}
                    Some(found) => problems.push(format!(
                        "{at}\n  `{metric}` reads a {kind}, but `{family}` is a {found} ({format})"
                    )),
                    None => problems.push(format!(
                        "{at}\n  `{metric}`: no `# TYPE {family} {kind}` in the {format} /metrics"
                    )),
                }
                let Some(labels) = exposition.samples.get(metric) else {
                    problems.push(format!(
                        "{at}\n  `{metric}` has no sample in the {format} /metrics after traffic"
                    ));
                    continue;
                };
                known.extend(labels.iter().cloned());
                for label in matched {
                    if !labels.contains(label) {
                        problems.push(format!(
                            "{at}\n  `{metric}` has no label `{label}` ({format}; it has {labels:?})"
                        ));
                    }
                }
            }
            let printed = legend_labels(&target.legend);
            let all_found = query
                .selectors
                .iter()
                .all(|(metric, _)| exposition.samples.contains_key(metric));
            for label in query.grouping.iter().chain(&printed) {
                if !all_found {
                    // Already said: a metric is missing.
                    break;
                }
                if !known.contains(label) {
                    problems.push(format!(
                        "{at}\n  label `{label}` is on none of its metrics ({format}; they have {known:?})"
                    ));
                }
            }
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "deploy/grafana/ferroserve.json reads what /metrics does not have:\n{}\n\nThe classic /metrics:\n{classic}",
        problems.join("\n")
    );
    eprintln!(
        "the dashboard reads {} sample names, all exposed: {used:?}",
        used.len()
    );
}
