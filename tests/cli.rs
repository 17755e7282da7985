//! The `ferroserve` binary: serving an app file, flag and env overrides, bad configs, SIGTERM.

mod common;

use std::process::Command;

use common::{
    client, ferroserve_bin, fetch_status, get_json, run_refused, spawn_cli, spawn_example_app,
    spawn_listening, status_and_text, write_config,
};

const APP: &str = "\
http:
  port: 8000
backends:
  echo:
    builtin: echo
  hello:
    builtin: static
    init_args: {body: hi, status: 201, headers: {x-greeting: hello}}
endpoints:
  echo:
    route: /echo
    methods: [GET, POST]
    backend: echo
  hello:
    route: /hello
    backend: hello
";

#[tokio::test]
async fn serves_the_readme_example_app() {
    let server = spawn_example_app("examples/hello.yaml");
    let http = client();
    let (status, text) = status_and_text(http.get(server.url("/hello"))).await;
    assert_eq!(status, 200);
    assert!(text.starts_with("Hello from"), "{text}");
    let routes = get_json(&http, server.url("/-/routes")).await;
    assert_eq!(
        routes,
        serde_json::json!({"/echo": "echo", "/hello": "hello"})
    );
}

#[tokio::test]
async fn the_port_flag_overrides_the_file() {
    // The file says 8000; `--port 0` wins, so this works even if 8000 is taken.
    let server = spawn_cli(APP);
    assert_ne!(server.addr.port(), 8000);
    let r = client()
        .get(server.url("/hello"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-greeting"], "hello");
    assert_eq!(r.text().await.expect("body"), "hi");
}

#[tokio::test]
async fn flags_can_come_from_the_environment() {
    let (dir, path) = write_config(APP);
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", path.to_str().expect("utf-8")],
        &[("FERROSERVE_PORT", "0"), ("FERROSERVE_HOST", "127.0.0.1")],
        Some(dir),
    );
    assert_ne!(server.addr.port(), 8000);
    assert_eq!(
        fetch_status(client().get(server.url("/-/healthz"))).await,
        200
    );
}

#[tokio::test]
async fn the_server_runs_on_the_threads_it_is_given() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Given, and by default half the CPUs (at least 1).
    let default = match cpus / 2 {
        0 | 1 => "1 server thread;".to_owned(),
        n => format!("{n} server threads;"),
    };
    for (envs, said) in [
        (
            vec![("FERROSERVE_THREADS", "3")],
            "3 server threads;".to_owned(),
        ),
        (vec![], default),
    ] {
        let (dir, path) = write_config(APP);
        let args = ["run", path.to_str().expect("utf-8"), "--port", "0"];
        let server = spawn_listening(&ferroserve_bin(), &args, &envs, Some(dir));
        assert_eq!(fetch_status(client().get(server.url("/echo"))).await, 200);
        server.stderr_with(&format!("with {said}"));
    }
    // Zero is not a number of threads.
    let output = Command::new(ferroserve_bin())
        .args(["run", "app.yaml", "--threads", "0"])
        .output()
        .expect("run ferroserve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--threads"), "{stderr}");
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let server = spawn_cli(APP);
    assert_eq!(fetch_status(client().get(server.url("/echo"))).await, 200);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "ferroserve exits 0 on SIGTERM");
}

/// Runs `ferroserve run` on a bad config: it must exit non-zero, print the file, the line
/// and the key, and never listen.
fn refused(yaml: &str) -> String {
    let stderr = run_refused(yaml);
    assert!(
        stderr.contains("app.yaml"),
        "the error names the file: {stderr}"
    );
    stderr
}

#[test]
fn bad_configs_name_file_line_and_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "backends:\n  echo:\n    builtin: echo\n    replicas: 2\n",
            &["line 4", "backends.echo.replicas", "unknown field"],
        ),
        (
            "zero replicas",
            "backends:\n  echo:\n    builtin: echo\n    num_replicas: 0\n",
            &["line 4", "backends.echo.num_replicas", "at least 1"],
        ),
        (
            "weights",
            "backends:\n  a: {builtin: echo}\n  b: {builtin: echo}\nendpoints:\n  e:\n    route: /e\n    traffic: {a: 0.5, b: 0.4}\n",
            &["line 7", "endpoints.e.traffic", "sum to 0.9"],
        ),
        (
            "missing backend",
            "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: /e\n    backend: b\n",
            &["line 6", "endpoints.e.backend", "no backend `b`"],
        ),
        (
            "duplicate route",
            "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: /e\n    backend: a\n  f:\n    route: /e\n    backend: a\n",
            &[
                "line 8",
                "endpoints.f.route",
                "already served by endpoint `e`",
            ],
        ),
        (
            "relative route",
            "backends:\n  a: {builtin: echo}\nendpoints:\n  e:\n    route: e\n    backend: a\n",
            &["line 5", "endpoints.e.route", "start with `/`"],
        ),
        ("not yaml", "backends:\n  a: {builtin: echo\n", &["line"]),
        (
            "bad init_args",
            "backends:\n  s:\n    builtin: static\n    init_args: {status: 99999}\n",
            &["line 2", "backends.s", "99999"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let stderr = refused(yaml);
        for part in *expected {
            assert!(
                stderr.contains(part),
                "case `{name}`: expected `{part}` in:\n{stderr}"
            );
        }
    }
}

#[test]
fn check_validates_without_serving() {
    let (_dir, path) = write_config(APP);
    let ok = Command::new(ferroserve_bin())
        .args(["check", path.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert!(ok.status.success());
    let (_dir, path) = write_config("endpoints:\n  e:\n    backend: nope\n");
    let bad = Command::new(ferroserve_bin())
        .args(["check", path.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("endpoints.e.backend"));
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = Command::new(ferroserve_bin())
        .args(["run", "/nonexistent/app.yaml"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/app.yaml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("bound").port().to_string();
    let (_dir, path) = write_config(APP);
    let output = Command::new(ferroserve_bin())
        .args(["run", path.to_str().expect("utf-8"), "--port", &port])
        .output()
        .expect("ferroserve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on 127.0.0.1:{port}: port {port} is already in use"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("BadRequest"), "{stderr}");
}

/// Runs `ferroserve check` with `args` on `yaml`: its exit code and stderr.
fn check(yaml: &str, args: &[&str]) -> (Option<i32>, String) {
    let (_dir, path) = write_config(yaml);
    let output = Command::new(ferroserve_bin())
        .arg("check")
        .arg(&path)
        .args(args)
        .output()
        .expect("ferroserve runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_imports_python_backends_unless_told_not_to() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");
    let python = |target: &str| {
        format!("backends:\n  model:\n    python: {target}\n    working_dir: {examples}\n")
    };
    let (code, stderr) = check(&python("stateful:StatefulProcessor"), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check(&python("no_such_module:Model"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2, key `backends.model.python`")
            && stderr.contains(
                "cannot import `no_such_module:Model`: ModuleNotFoundError: No module named 'no_such_module'"
            ),
        "{stderr}"
    );
    let (code, stderr) = check(&python("stateful:NoSuchClass"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("AttributeError") && stderr.contains("NoSuchClass"),
        "{stderr}"
    );
    let (code, stderr) = check(&python("no_such_module:Model"), &["--no-import"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_builds_the_middlewares_as_run_would() {
    let (code, stderr) = check(
        "http:\n  middlewares:\n    - cors: {allow_origins: [\"bad\\norigin\"]}\n",
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("allow_origins"), "{stderr}");
}

/// Runs the `ferroserve` client with `args` against the control API at `control`, from
/// `dir`, with `envs`: its exit code, stdout and stderr.
fn client_cli(
    control: &str,
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let out = Command::new(ferroserve_bin())
        .args(args)
        .current_dir(dir)
        .env("FERROSERVE_ADDRESS", control)
        .envs(envs.iter().copied())
        .output()
        .expect("ferroserve runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An app of two builtin backends, and `more` backends after them.
fn two_backends_and(more: &str) -> String {
    format!(
        "backends:\n  echo: {{builtin: echo, num_replicas: 2}}\n  hello: {{builtin: static, init_args: {{body: hi}}}}\n{more}endpoints:\n  echo: {{route: /echo, backend: echo}}\n"
    )
}

#[test]
fn deploy_and_status_write_plain_text_off_a_terminal() {
    let server = spawn_listening(&ferroserve_bin(), &["start", "--port", "0"], &[], None);
    let control = server.control_url("");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("app.yaml"), two_backends_and("")).expect("written");
    let (code, _, stderr) = client_cli(&control, dir.path(), &["deploy", "app.yaml"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no escape codes in a pipe: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    // A line per change of a backend: its status, replicas ready, and the time so far.
    let last_of = |name: &str| {
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with(&format!("  {name}: ")))
            .copied()
            .unwrap_or_default()
    };
    let echo = last_of("echo");
    assert!(
        echo.starts_with("  echo: HEALTHY 2/2 ready (") && echo.ends_with(" s)"),
        "{stderr}"
    );
    assert!(
        last_of("hello").starts_with("  hello: HEALTHY 1/1 ready ("),
        "{stderr}"
    );
    for name in ["echo", "hello"] {
        // What each line says, without its time.
        let said: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("  {name}: ")))
            .filter_map(|l| l.split(" (").next())
            .collect();
        assert!(
            said.windows(2).all(|w| w[0] != w[1]),
            "a line only when something changed: {stderr}"
        );
    }
    assert!(stderr.contains("deployed in"), "{stderr}");

    // `status` in a pipe: the YAML as it was, which parses.
    let (code, stdout, stderr) = client_cli(&control, dir.path(), &["status"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    let status: serde_json::Value = serde_saphyr::from_str(&stdout).expect("YAML");
    assert_eq!(status["backends"]["echo"]["status"], "HEALTHY", "{stdout}");
    assert_eq!(
        status["backends"]["echo"]["running_replicas"], 2,
        "{stdout}"
    );

    // A backend that cannot start: its line says DEPLOY_FAILED, and the exit says why.
    let failing = two_backends_and(&format!(
        "  model: {{python: 'no_such_module:Model', working_dir: '{}'}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    ));
    std::fs::write(dir.path().join("app.yaml"), &failing).expect("written");
    let (code, _, stderr) = client_cli(&control, dir.path(), &["deploy", "app.yaml"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(
        stderr.contains("  model: DEPLOY_FAILED 0/1 ready ("),
        "{stderr}"
    );
    assert!(
        stderr.contains("the deploy failed") && stderr.contains("no_such_module"),
        "{stderr}"
    );
}

/// Runs `ferroserve ARGS` on a pseudo-terminal (Python's `pty`, as CI has Python): what
/// the terminal showed (stdout and stderr together) and the exit code.
fn on_a_terminal(
    control: &str,
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Option<i32>, String) {
    const SPAWN: &str =
        "import os, pty, sys\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))\n";
    let out = Command::new("python3")
        .args(["-c", SPAWN])
        .arg(ferroserve_bin())
        .args(args)
        .current_dir(dir)
        .env("FERROSERVE_ADDRESS", control)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn on_a_terminal_deploy_draws_bars_and_status_has_colour() {
    let server = spawn_listening(&ferroserve_bin(), &["start", "--port", "0"], &[], None);
    let control = server.control_url("");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("app.yaml"), two_backends_and("")).expect("written");
    let (code, screen) = on_a_terminal(&control, dir.path(), &["deploy", "app.yaml"], &[]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("  echo  [========================] 2/2 ready"),
        "a bar per backend: {screen:?}"
    );
    assert!(screen.contains("\x1b[32mHEALTHY\x1b[0m"), "{screen:?}");
    assert!(screen.contains("deployed in"), "{screen:?}");

    let (code, screen) = on_a_terminal(&control, dir.path(), &["status"], &[]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("status: \x1b[32mRUNNING\x1b[0m")
            && screen.contains("    status: \x1b[32mHEALTHY\x1b[0m"),
        "{screen:?}"
    );
    let (code, screen) = on_a_terminal(&control, dir.path(), &["status"], &[("NO_COLOR", "1")]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        !screen.contains('\x1b') && screen.contains("status: RUNNING"),
        "NO_COLOR: {screen:?}"
    );
}
