//! The YAML loader against good and bad app files: defaults, and errors that name the line and the key.

use super::*;
use http::Method;

struct NoNames;

impl RegisteredNames for NoNames {
    fn is_registered(&self, _name: &str) -> bool {
        false
    }

    fn registered(&self) -> Vec<&str> {
        Vec::new()
    }
}

fn load(source: &str) -> Result<AppConfig, ConfigError> {
    AppConfig::from_yaml(source, "app.yaml", &NoNames)
}

fn error(source: &str) -> ConfigError {
    load(source).expect_err("config should be refused")
}

#[test]
fn a_full_file_parses_with_defaults() {
    let app = load(
        "http:\n  port: 9000\nbackends:\n  echo:\n    builtin: echo\n    user_config: {a: [1, 2]}\n  canary:\n    builtin: echo\n    num_replicas: 3\nendpoints:\n  api:\n    route: /api/\n    methods: [GET, post]\n    traffic: {echo: 0.9, canary: 0.1}\n  internal:\n    backend: echo\n",
    )
    .expect("valid config");
    assert_eq!(app.http, HttpOptions::new("127.0.0.1", 9000));
    assert_eq!(app.spec.backends[0].config.num_replicas, 1);
    assert_eq!(
        app.spec.backends[0]
            .config
            .effective_max_concurrent_queries(),
        100
    );
    assert_eq!(app.spec.backends[0].config.user_config["a"][1], 2);
    assert_eq!(app.spec.backends[1].config.num_replicas, 3);
    let api = &app.spec.endpoints[0].config;
    assert_eq!(api.route.as_deref(), Some("/api"));
    assert_eq!(api.methods, [Method::GET, Method::POST]);
    assert_eq!(app.spec.endpoints[1].config.route, None);
    assert_eq!(app.spec.endpoints[1].config.methods, [Method::GET]);
}

#[test]
fn unknown_keys_name_line_and_key() {
    let e = error("backends:\n  echo:\n    builtin: echo\n    num_replicaz: 2\n");
    assert_eq!((e.line, e.key.as_str()), (4, "backends.echo.num_replicaz"));
    assert!(e.message.contains("unknown field"), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "app.yaml, line 4, key `backends.echo.num_replicaz`: {}",
            e.message
        )
    );
}

#[test]
fn zero_replicas_is_refused_at_its_line() {
    let e = error("backends:\n  echo:\n    builtin: echo\n    num_replicas: 0\n");
    assert_eq!((e.line, e.key.as_str()), (4, "backends.echo.num_replicas"));
}

#[test]
fn wrong_types_name_the_key() {
    let e = error("backends:\n  echo:\n    builtin: echo\n    num_replicas: -1\n");
    assert_eq!((e.line, e.key.as_str()), (4, "backends.echo.num_replicas"));
}

#[test]
fn weights_must_sum_to_one() {
    let e = error(
        "backends:\n  a: {builtin: echo}\n  b: {builtin: echo}\nendpoints:\n  e:\n    traffic:\n      a: 0.5\n      b: 0.6\n",
    );
    assert_eq!((e.line, e.key.as_str()), (7, "endpoints.e.traffic"));
    assert!(e.message.contains("sum to 1.1"), "{e}");
}

#[test]
fn missing_backends_are_named() {
    let e = error(
        "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: /e\n    backend: nope\n",
    );
    assert_eq!((e.line, e.key.as_str()), (6, "endpoints.e.backend"));
    assert!(
        e.message.contains("`nope`") && e.message.contains("a"),
        "{e}"
    );
    let e = error(
        "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    traffic: {a: 0.5, zz: 0.5}\n",
    );
    assert_eq!((e.line, e.key.as_str()), (5, "endpoints.e.traffic.zz"));
}

#[test]
fn routes_must_be_unique_and_absolute() {
    let two = "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: /x\n    backend: a\n  f:\n    route: /x/\n    backend: a\n";
    let e = error(two);
    assert_eq!((e.line, e.key.as_str()), (8, "endpoints.f.route"));
    assert!(e.message.contains("endpoint `e`"), "{e}");
    let e =
        error("backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: x\n    backend: a\n");
    assert_eq!((e.line, e.key.as_str()), (5, "endpoints.e.route"));
    assert!(e.message.contains("start with `/`"), "{e}");
}

#[test]
fn backend_kinds_are_checked() {
    let e = error("backends:\n  a:\n    builtin: nope\n");
    assert_eq!((e.line, e.key.as_str()), (3, "backends.a.builtin"));
    assert!(e.message.contains("echo, static"), "{e}");
    let e = error("backends:\n  a:\n    builtin: echo\n    python: m:C\n");
    assert!(e.message.contains("not several"), "{e}");
    let e = error("backends:\n  a:\n    python: models\n");
    assert_eq!((e.line, e.key.as_str()), (3, "backends.a.python"));
    let e = error("backends:\n  a:\n    python: m:C\n    working_dir: /nonexistent/dir\n");
    assert_eq!((e.line, e.key.as_str()), (4, "backends.a.working_dir"));
    let e = error("backends:\n  a:\n    builtin: echo\n    env: {A: b}\n");
    assert_eq!(e.key, "backends.a.env");
    let e = error("backends:\n  a:\n    rust: model\n");
    assert_eq!((e.line, e.key.as_str()), (3, "backends.a.rust"));
    let e = error("backends:\n  a:\n    num_replicas: 2\n");
    assert_eq!(e.key, "backends.a");
}

#[test]
fn shadows_and_batching_are_read_and_checked() {
    let app = load(
        "backends:\n  a: {builtin: echo, max_batch_size: 8, batch_wait_timeout_ms: 5}\n  b: {builtin: echo}\nendpoints:\n  e:\n    backend: a\n    shadow: {b: 0.25}\n",
    )
    .expect("valid");
    assert_eq!(app.spec.backends[0].config.max_batch_size, Some(8));
    assert_eq!(app.spec.backends[0].config.batch_wait_timeout_ms, 5);
    assert_eq!(
        app.spec.backends[0]
            .config
            .effective_max_concurrent_queries(),
        100
    );
    assert_eq!(app.spec.endpoints[0].config.shadow.get("b"), Some(&0.25));
    let e = error(
        "backends:\n  a: {builtin: echo}\n  b: {builtin: echo}\nendpoints:\n  e:\n    backend: a\n    shadow:\n      b: 1.5\n",
    );
    assert_eq!((e.line, e.key.as_str()), (8, "endpoints.e.shadow.b"));
    let e = error(
        "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    backend: a\n    shadow: {a: 0.5}\n",
    );
    assert!(e.message.contains("cannot also shadow"), "{e}");
    let e = error(
        "backends:\n  a:\n    builtin: echo\n    max_batch_size: 8\n    max_concurrent_queries: 4\n",
    );
    assert_eq!(
        (e.line, e.key.as_str()),
        (5, "backends.a.max_concurrent_queries")
    );
}

#[test]
fn an_empty_file_serves_nothing() {
    let app = load("# nothing yet\n").expect("empty config");
    assert!(app.spec.backends.is_empty() && app.spec.endpoints.is_empty());
}

#[test]
fn a_python_executable_path_is_relative_to_the_file() {
    let interpreter = |value: &str| {
        let yaml = format!("backends:\n  a:\n    python: m:C\n    python_executable: {value}\n");
        let app = AppConfig::from_yaml(&yaml, "/srv/app/app.yaml", &NoNames).expect("valid");
        match &app.spec.backends[0].kind {
            crate::config::BackendKind::Python(p) => p.python_executable.clone().expect("set"),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(interpreter(".venv/bin/python"), "/srv/app/.venv/bin/python");
    assert_eq!(interpreter("/usr/bin/python3"), "/usr/bin/python3");
    assert_eq!(
        interpreter("python3"),
        "python3",
        "a bare name is looked up on PATH"
    );
}
