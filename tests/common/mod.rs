//! Test harness: the real server on 127.0.0.1:0, in process or as the `ferroserve` binary.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod cluster;
pub mod deploy;
pub mod etcd;
pub mod netns;
pub mod onnx;
pub mod process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferroserve::{
    Arg, Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Handle, HttpOptions,
    Request, Response, Serve,
};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The interpreter Python scripts and tools run on (`FERROSERVE_PYTHON`, else `python3`;
/// the ONNX backend looks in it for the runtime library).
pub fn python() -> String {
    std::env::var("FERROSERVE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether [`python`] can import `modules` (`"onnx, onnxruntime"`), asked once per process;
/// if not, why (the traceback's last line: the module that is missing).
pub fn python_import(modules: &str) -> Result<(), String> {
    static SEEN: std::sync::Mutex<std::collections::BTreeMap<String, Result<(), String>>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.entry(modules.to_owned())
        .or_insert_with(|| {
            let out = Command::new(python())
                .args(["-c", &format!("import {modules}")])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", python()))?;
            if out.status.success() {
                Ok(())
            } else {
                let said = String::from_utf8_lossy(&out.stderr);
                Err(said.trim().lines().last().unwrap_or("").to_owned())
            }
        })
        .clone()
}

/// Says that a test skipped a part, and why, in a `SKIP ...` line that `cargo test` shows for
/// a test that passes too: written to the process's stderr itself, which the harness does
/// not capture (it captures `eprintln!`).
pub fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {why}");
}

/// Whether [`python`] can import `modules`, the packages of `tests/requirements.txt` a test
/// needs. When not, the test prints a SKIP line naming them, or fails when
/// `FERROSERVE_REQUIRE_PYTHON_DEPS=1` (as in `.ci/run`). `what` names what would not run.
pub fn python_dep(modules: &str, what: &str) -> bool {
    let required = std::env::var_os("FERROSERVE_REQUIRE_PYTHON_DEPS").is_some();
    import_or_skip(
        modules,
        what,
        "python3 -m pip install -r tests/requirements.txt",
        required.then_some("FERROSERVE_REQUIRE_PYTHON_DEPS"),
    )
}

/// Whether [`python`] can import `modules`; when not, a [`skip`] line saying what did not
/// run and `install`, or a failure when `required_by` (the variable that requires it) is
/// given.
pub fn import_or_skip(modules: &str, what: &str, install: &str, required_by: Option<&str>) -> bool {
    let Err(why) = python_import(modules) else {
        return true;
    };
    let said = format!(
        "{what} did not run: `{} -c \"import {modules}\"` failed ({why}); {install}",
        python()
    );
    if let Some(flag) = required_by {
        panic!("{flag} is set but {said}");
    }
    skip(&said);
    false
}

/// The `ferroserve` binary built for these tests.
pub fn ferroserve_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferroserve"))
}

/// An example binary of this package. `cargo test` builds examples before running tests;
/// when only one test target was built, build the example now.
pub fn example_bin(name: &str) -> PathBuf {
    let bin = ferroserve_bin();
    let dir = bin.parent().expect("the binary has a directory");
    let example = dir.join("examples").join(name);
    if !example.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    example
}

/// Starts Ferroserve in process on 127.0.0.1 and a free port.
pub async fn serve() -> Serve {
    Serve::start(HttpOptions::new("127.0.0.1", 0))
        .await
        .expect("ferroserve starts on a free port")
}

/// `http://ADDR` of a running in-process server.
pub fn base_url(serve: &Serve) -> String {
    format!("http://{}", serve.local_addr().expect("serving HTTP"))
}

/// A client that does not follow redirects and times out instead of hanging.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// A `ferroserve` (or example) process serving on a free port; killed on drop.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// The control API's address (`ferroserve run` and `start`).
    pub control: Option<SocketAddr>,
    pub stderr: Arc<std::sync::Mutex<String>>,
    /// Everything it printed on stdout so far.
    pub stdout: Arc<std::sync::Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The temporary directory holding its `app.yaml`.
    pub fn dir_path(&self) -> &Path {
        self._dir.as_ref().expect("a temporary directory").path()
    }

    /// Its stderr so far, once it holds `wanted` (panics after 10 s without it).
    pub fn stderr_with(&self, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let said = self.stderr.lock().expect("stderr").clone();
            if said.contains(wanted) {
                return said;
            }
            assert!(Instant::now() < deadline, "no `{wanted}` on stderr: {said}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A URL of the control API.
    pub fn control_url(&self, path: &str) -> String {
        let addr = self.control.expect("a control API");
        format!("http://{addr}{path}")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ferroserve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `yaml` to a temporary `app.yaml`.
pub fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, yaml).expect("config written");
    (dir, path)
}

/// Runs `bin` with `args` and waits for its "listening on" line.
pub fn spawn_listening(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    dir: Option<tempfile::TempDir>,
) -> Process {
    let mut child = Command::new(bin)
        .args(args)
        .env("FERROSERVE_LOG", "info")
        .env("FERROSERVE_CONTROL_PORT", "0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let pipe = child.stderr.take().expect("stderr piped");
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr.lock().expect("lock").push_str(&(line + "\n"));
            }
        });
    }
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let control = Arc::new(std::sync::Mutex::new(None));
    let printed = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let control = control.clone();
        let printed = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.lock().expect("lock").push_str(&format!("{line}\n"));
                if let Some(addr) = line.strip_prefix("ferroserve control API on http://") {
                    *control.lock().expect("lock") = addr.parse().ok();
                }
                if let Some(addr) = line.strip_prefix("ferroserve listening on http://") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
    }
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr.parse().expect("a socket address"),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{} did not start listening; stderr:\n{}",
                bin.display(),
                stderr.lock().expect("lock")
            );
        }
    };
    let control = *control.lock().expect("lock");
    Process {
        child,
        addr,
        control,
        stderr,
        stdout: printed,
        _dir: dir,
    }
}

/// Runs `ferroserve run` on `yaml` with `--port 0`.
pub fn spawn_cli(yaml: &str) -> Process {
    spawn_cli_with(yaml, &[], &[])
}

/// Runs `ferroserve run` on `yaml` with `--port 0` and `args`, with `files` (name,
/// contents) written beside the app file (a Python module of its backends).
pub fn spawn_cli_with(yaml: &str, files: &[(&str, &str)], args: &[&str]) -> Process {
    let (dir, path) = write_config(yaml);
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("file written");
    }
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut all = vec!["run", path.as_str(), "--port", "0"];
    all.extend_from_slice(args);
    spawn_listening(&ferroserve_bin(), &all, &[], Some(dir))
}

/// Runs `ferroserve run` on the app file at `path` (relative to the repository) with `--port 0`.
pub fn spawn_example_app(path: &str) -> Process {
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    spawn_listening(
        &ferroserve_bin(),
        &["run", yaml.to_str().expect("utf-8 path"), "--port", "0"],
        &[],
        None,
    )
}

/// Runs `ferroserve run` on `yaml` (as a temporary `app.yaml`) with `--port 0`, which must
/// exit non-zero without ever listening; returns its stderr.
pub fn run_refused(yaml: &str) -> String {
    let (_dir, path) = write_config(yaml);
    let output = Command::new(ferroserve_bin())
        .args(["run", path.to_str().expect("utf-8"), "--port", "0"])
        .output()
        .expect("ferroserve runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "a bad config must fail; stderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening"),
        "a bad config must serve nothing: {stdout}"
    );
    stderr
}

/// Counts how many calls run at once, and the most ever.
#[derive(Default)]
pub struct Concurrency {
    pub now: AtomicUsize,
    pub peak: AtomicUsize,
    pub total: AtomicUsize,
}

impl Concurrency {
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// A backend that sleeps for `?ms=N` (HTTP) or the JSON number it is given (handle),
/// counting concurrency, and answers its replica id.
pub struct Sleeper {
    pub replica: String,
    pub counter: Arc<Concurrency>,
}

impl Backend for Sleeper {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let ms: u64 = match req.query_param("ms") {
            Some(ms) => ms.parse()?,
            None => req.json().unwrap_or(0),
        };
        let now = self.counter.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.counter.peak.fetch_max(now, Ordering::SeqCst);
        self.counter.total.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.counter.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Response::text(self.replica.clone()))
    }
}

/// A factory of [`Sleeper`]s sharing `counter`.
pub fn sleeper(counter: &Arc<Concurrency>) -> BackendFactory {
    let counter = counter.clone();
    BackendFactory::new(move |ctx| {
        Ok(Sleeper {
            replica: ctx.replica.clone(),
            counter: counter.clone(),
        })
    })
}

/// GET `path` on a raw socket with `Connection: close`; the whole response as text.
pub async fn raw_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    raw
}

/// The built-in `echo` backend.
pub fn echo() -> BackendFactory {
    ferroserve::builtins()
        .get("echo")
        .cloned()
        .expect("echo is built in")
}

/// Creates a built-in `echo` backend, with the default config, under each of `names`.
pub async fn echo_backends(serve: &Serve, names: &[&str]) {
    for name in names {
        serve
            .create_backend(name, echo(), BackendConfig::default())
            .await
            .unwrap_or_else(|e| panic!("backend `{name}` starts: {e}"));
    }
}

/// Creates backend `name` from `factory` with `config`, and endpoint `name` over it on `route`
/// (`None`: handles only), allowing `methods` (none: the default, `GET`).
pub async fn serve_backend<'a>(
    serve: &Serve,
    name: &str,
    factory: BackendFactory,
    config: BackendConfig,
    route: impl Into<Option<&'a str>>,
    methods: &[Method],
) {
    serve_backend_as(serve, name, name, factory, config, route, methods).await;
}

/// [`serve_backend`] under another endpoint name: endpoint `endpoint` over backend `backend`.
pub async fn serve_backend_as<'a>(
    serve: &Serve,
    endpoint: &str,
    backend: &str,
    factory: BackendFactory,
    config: BackendConfig,
    route: impl Into<Option<&'a str>>,
    methods: &[Method],
) {
    serve
        .create_backend(backend, factory, config)
        .await
        .unwrap_or_else(|e| panic!("backend `{backend}` starts: {e}"));
    let mut endpoint_config = EndpointConfig::backend(backend);
    if let Some(route) = route.into() {
        endpoint_config = endpoint_config.route(route);
    }
    if !methods.is_empty() {
        endpoint_config = endpoint_config.methods(methods.iter().cloned());
    }
    serve
        .create_endpoint(endpoint, endpoint_config)
        .await
        .unwrap_or_else(|e| panic!("endpoint `{endpoint}`: {e}"));
}

/// Serves the built-in `echo` backend (backend and endpoint both named `name`) on `route`,
/// allowing `methods` (none: the default, `GET`).
pub async fn serve_echo(serve: &Serve, name: &str, route: &str, methods: &[Method]) {
    let config = BackendConfig::default();
    serve_backend(serve, name, echo(), config, route, methods).await;
}

/// Serves a [`Sleeper`] backend as endpoint `slow` on `/slow`; returns its counter.
pub async fn serve_sleeper(serve: &Serve, config: BackendConfig) -> Arc<Concurrency> {
    let counter = Arc::new(Concurrency::default());
    serve_backend(serve, "slow", sleeper(&counter), config, "/slow", &[]).await;
    counter
}

/// An `OPTIONS` CORS preflight for a `POST` to `url` from `https://app.example`.
pub fn cors_preflight(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> reqwest::RequestBuilder {
    http.request(Method::OPTIONS, url)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
}

/// Sends `request` and parses the answer as JSON, whatever its status.
pub async fn fetch_json(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// GETs `url` and parses the answer as JSON, whatever its status.
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    fetch_json(http.get(url)).await
}

/// Sends `request`; the answer's status and body text.
pub async fn status_and_text(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// Sends `request`; the answer's body text, whatever its status.
pub async fn fetch_text(request: reqwest::RequestBuilder) -> String {
    status_and_text(request).await.1
}

/// Sends `request`; the answer's status.
pub async fn fetch_status(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.expect("request").status()
}

/// `request` with a multipart form body: the text field `field` (name, value), then the file
/// `file` (field name, file name) holding the 10 bytes `0123456789`.
pub fn multipart_form(
    request: reqwest::RequestBuilder,
    (field, value): (&str, &str),
    (file, file_name): (&str, &str),
) -> reqwest::RequestBuilder {
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{file}\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n0123456789\r\n--{boundary}--\r\n"
    );
    request
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
}

/// Calls `handle` with `arg`; the answer's body as JSON.
pub async fn handle_json<T: DeserializeOwned>(handle: &Handle, arg: impl Into<Arg>) -> T {
    handle
        .remote(arg)
        .await
        .expect("answer")
        .body_json()
        .expect("json")
}

/// Calls `handle` with `arg`; the answer's body as text.
pub async fn handle_text(handle: &Handle, arg: impl Into<Arg>) -> String {
    handle
        .remote(arg)
        .await
        .expect("answer")
        .body_text()
        .expect("text")
}

/// One slowloris client: opens a connection, sends a request head a byte at a time, one
/// byte every 500 ms, and opens another when the server closes it. Returns how long each
/// connection the server closed had lived.
pub async fn slow_client(
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = b"GET /echo HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut lifetimes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opened = Instant::now();
        let mut sink = [0u8; 64];
        for byte in head.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return lifetimes;
            }
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            // A closed connection reads as EOF (or a reset) while we wait.
            let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink));
            if let Ok(Ok(0) | Err(_)) = read.await {
                break;
            }
        }
        lifetimes.push(opened.elapsed());
    }
    lifetimes
}

/// The first ```yaml block of `docs/PAGE` after the text `after` (from the top when empty):
/// what a test parses to keep a page's example true.
pub fn doc_yaml(page: &str, after: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(page);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, rest) = doc
        .split_once(after)
        .unwrap_or_else(|| panic!("docs/{page} has no {after:?}"));
    rest.split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("docs/{page}: no yaml block after {after:?}"))
        .to_owned()
}
