//! docs/onnx.md, run: `examples/onnx/make_models.py` writes the model repository, `ferroserve
//! run --models` serves it, every `curl` on the page is sent and gets the answer the page
//! shows, the Python examples (tritonclient, a bare binary request) print what the page
//! shows, the Rust handle example classifies two flowers, and the code the page quotes is
//! the examples' code as it is.
//!
//! What the page follows, so that this test can read it:
//! - In a ```` ```sh ```` block, a `curl` line (joined across a trailing `\`) is sent. It may
//!   use `-s`, `-w '\n%{http_code}\n'`, `-d 'BODY'` (a POST), `-X METHOD`, `-H 'K: V'`, a
//!   URL on `localhost:8000` (`ferroserve run --models`), `localhost:8001`
//!   (`examples/onnx/app.yaml`) or `localhost:8265` (the control port of the first), and
//!   pipes to `xxd` or `grep [-v] WORD`. Anything else fails the test.
//! - Its answer is the `# ` lines right under it, or the ```` ```json ```` or
//!   ```` ```text ```` block right after a `sh` block that sends one request and shows no
//!   `# ` lines. JSON is compared as JSON, numbers within float tolerance; other text
//!   exactly; after `grep`, each line up to its last space (metric values vary). A request
//!   with no answer shown must get a 200.
//! - `python3 examples/onnx/NAME.py localhost:8000` lines are run and checked the same way.
//! - A block whose first line is `# examples/onnx/FILE` or `// examples/onnx/FILE` quotes
//!   that file: its other lines are lines of the file, in a row (indentation aside).
//!
//! Needs Python's onnx and onnxruntime, and tritonclient[http] for client.py (the SKIP
//! rules of tests/common/onnx.rs).

mod common;

#[path = "../examples/onnx/handle.rs"]
#[allow(unreachable_pub)]
mod handle;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::onnx::{onnx_ready, python, python_has};
use common::{Process, ferroserve_bin, spawn_listening};
use http::{Method, StatusCode};
use serde_json::Value;

const DOC: &str = include_str!("../docs/onnx.md");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced block of the page.
struct Block {
    lang: String,
    lines: Vec<String>,
    /// Whether only blank lines separate it from the block before it.
    follows_block: bool,
}

impl Block {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut only_blank = false;
    for line in doc.lines() {
        match open.as_mut() {
            Some(_) if line.starts_with("```") => {
                blocks.extend(open.take());
                only_blank = true;
            }
            Some(block) => block.lines.push(line.to_owned()),
            None => match line.strip_prefix("```") {
                Some(lang) => {
                    open = Some(Block {
                        lang: lang.trim().to_owned(),
                        lines: Vec::new(),
                        follows_block: only_blank,
                    });
                }
                None => only_blank &= line.trim().is_empty(),
            },
        }
    }
    assert!(open.is_none(), "docs/onnx.md: a block is not closed");
    blocks
}

/// A command of a `sh` block and the answer the page shows for it.
#[derive(Debug)]
struct Shown {
    command: String,
    answer: Option<String>,
}

/// Whether the test runs `command`: a request, or a Python example with the server's address.
fn is_checked(command: &str) -> bool {
    command.starts_with("curl ")
        || (command.starts_with("python3 examples/onnx/") && command.contains("localhost:"))
}

/// The commands of the page's `sh` blocks that the test runs, with their answers.
fn checked_commands(blocks: &[Block]) -> Vec<Shown> {
    let mut all = Vec::new();
    for (at, block) in blocks.iter().enumerate() {
        if block.lang != "sh" {
            continue;
        }
        let mut shown: Vec<Shown> = Vec::new();
        let (mut command, mut answering) = (String::new(), false);
        for line in &block.lines {
            if let Some(continued) = line.strip_suffix('\\') {
                command.push_str(continued);
                continue;
            }
            if !command.is_empty() || !line.starts_with('#') {
                command.push_str(line);
                let whole = std::mem::take(&mut command);
                answering = !whole.trim().is_empty();
                shown.push(Shown {
                    command: whole.trim().to_owned(),
                    answer: None,
                });
            } else if answering {
                let said = line.strip_prefix("# ").unwrap_or("");
                let last = shown.last_mut().expect("a command before its answer");
                match &mut last.answer {
                    Some(answer) => {
                        answer.push('\n');
                        answer.push_str(said);
                    }
                    None => last.answer = Some(said.to_owned()),
                }
            }
        }
        shown.retain(|s| is_checked(&s.command));
        if let [only] = shown.as_mut_slice()
            && only.answer.is_none()
            && let Some(next) = blocks.get(at + 1)
            && next.follows_block
            && (next.lang == "json" || next.lang == "text")
        {
            only.answer = Some(next.text());
        }
        all.extend(shown);
    }
    all
}

/// Splits a command line into words: spaces separate them, quotes group them.
fn words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word, mut quote) = (Vec::new(), String::new(), false, None);
    for c in command.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "an open quote in `{command}`");
    if in_word {
        words.push(word);
    }
    words
}

/// A `curl` command of the page.
#[derive(Debug)]
struct Curl {
    method: Method,
    /// `host:port` as the page writes it.
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    /// `-w '\n%{http_code}\n'`: the status follows the body.
    status_line: bool,
    /// What the output is piped through: each pipe's words.
    pipes: Vec<Vec<String>>,
}

fn parse_curl(command: &str) -> Curl {
    let all = words(command);
    let mut parts = all.split(|w| w == "|");
    let mut args = parts.next().expect("a command").iter().skip(1);
    let pipes: Vec<Vec<String>> = parts.map(<[String]>::to_vec).collect();
    let (mut method, mut url, mut headers, mut body, mut status_line) =
        (None, None, Vec::new(), None, false);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("`{arg}` has no value in `{command}`"))
                .clone()
        };
        match arg.as_str() {
            "-s" => {}
            "-d" => body = Some(value()),
            "-X" => method = Some(value().parse::<Method>().expect("a method")),
            "-H" => {
                let header = value();
                let (k, v) = header.split_once(':').expect("`-H 'K: V'`");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-w" => {
                assert_eq!(value(), r"\n%{http_code}\n", "the only -w format read");
                status_line = true;
            }
            flag if flag.starts_with('-') => panic!("`{flag}` is not read, in `{command}`"),
            _ => {
                assert!(url.is_none(), "two URLs in `{command}`");
                url = Some(arg.trim_start_matches("http://").to_owned());
            }
        }
    }
    for pipe in &pipes {
        let known = matches!(pipe.as_slice(), [x] if x == "xxd")
            || matches!(pipe.as_slice(), [g, _] if g == "grep")
            || matches!(pipe.as_slice(), [g, v, _] if g == "grep" && v == "-v");
        assert!(known, "the pipe `{}` is not read", pipe.join(" "));
    }
    let url = url.unwrap_or_else(|| panic!("no URL in `{command}`"));
    let (host, path) = match url.find('/') {
        Some(at) => (url[..at].to_owned(), url[at..].to_owned()),
        None => (url, "/".to_owned()),
    };
    Curl {
        method: method.unwrap_or(if body.is_some() {
            Method::POST
        } else {
            Method::GET
        }),
        host,
        path,
        headers,
        body,
        status_line,
        pipes,
    }
}

/// `bytes` as `xxd` prints them.
fn xxd(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for (i, byte) in chunk.iter().enumerate() {
            if i > 0 && i % 2 == 0 {
                hex.push(' ');
            }
            let _ = write!(hex, "{byte:02x}");
        }
        let text: String = chunk
            .iter()
            .map(|b| match b {
                0x20..=0x7e => char::from(*b),
                _ => '.',
            })
            .collect();
        let _ = writeln!(out, "{:08x}: {hex:<39}  {text}", row * 16);
    }
    out
}

/// Whether two JSON values are the same, numbers within float tolerance.
fn same_json(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(w), Value::Number(g)) if w.is_f64() || g.is_f64() => {
            let (w, g) = (
                w.as_f64().unwrap_or(f64::NAN),
                g.as_f64().unwrap_or(f64::NAN),
            );
            (w - g).abs() <= 1e-6 + 1e-4 * w.abs()
        }
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| same_json(w, g))
        }
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, w)| g.get(k).is_some_and(|g| same_json(w, g)))
        }
        _ => want == got,
    }
}

/// Whether `got` is the answer `want`: as JSON when both are, else the same text.
fn same_text(want: &str, got: &str) -> bool {
    match (
        serde_json::from_str::<Value>(want),
        serde_json::from_str::<Value>(got),
    ) {
        (Ok(w), Ok(g)) => same_json(&w, &g),
        _ => want.trim_end() == got.trim_end(),
    }
}

/// Each line up to its last space: a metric without its value.
fn without_values(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name))
        .collect()
}

/// The servers the page's examples talk to.
struct Servers {
    /// `ferroserve run --models`, on the page's port 8000 (control: 8265).
    models: Process,
    /// `ferroserve run examples/onnx/app.yaml`, on the page's port 8001.
    app: Option<Process>,
}

impl Servers {
    /// `http://ADDR` of the server the page calls `host`.
    fn base(&self, host: &str) -> String {
        match host {
            "localhost:8000" => self.models.url(""),
            "localhost:8265" => self.models.control_url(""),
            "localhost:8001" => self
                .app
                .as_ref()
                .expect("the app server runs in this test")
                .url(""),
            other => panic!("the page calls `{other}`: only localhost:8000, 8001 and 8265"),
        }
    }
}

/// Sends the page's `curl`; what is wrong with its answer, if anything, against what the
/// page shows.
async fn check_curl(
    http: &reqwest::Client,
    servers: &Servers,
    shown: &Shown,
) -> Result<(), String> {
    let curl = parse_curl(&shown.command);
    let url = format!("{}{}", servers.base(&curl.host), curl.path);
    let mut request = http.request(curl.method.clone(), url);
    for (k, v) in &curl.headers {
        request = request.header(k, v);
    }
    if let Some(body) = &curl.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.expect("answers");
    let status = response.status();
    let header_length = response
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await.expect("a body");
    let mut got = String::from_utf8_lossy(&bytes).into_owned();
    let mut grepped = false;
    for pipe in &curl.pipes {
        match pipe.as_slice() {
            [xxd_] if xxd_ == "xxd" => got = xxd(&bytes),
            [_, word] => {
                got = got
                    .lines()
                    .filter(|l| l.contains(word.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                grepped = true;
            }
            [_, _, word] => {
                got = got
                    .lines()
                    .filter(|l| !l.contains(word.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                grepped = true;
            }
            _ => unreachable!("checked by parse_curl"),
        }
    }
    let command = &shown.command;
    // A binary answer shown raw: the page says where its JSON part ends.
    if let Some(n) = header_length
        && curl
            .pipes
            .iter()
            .any(|p| p.first().is_some_and(|c| c == "xxd"))
        && !DOC.contains(&format!("Inference-Header-Content-Length: {n}`"))
    {
        return Err(format!(
            "`{command}`: the answer's JSON part is {n} bytes; the page should say \
             `Inference-Header-Content-Length: {n}`"
        ));
    }
    let Some(want) = &shown.answer else {
        return match status {
            StatusCode::OK => Ok(()),
            _ => Err(format!("`{command}` answered {status}:\n{got}")),
        };
    };
    let (want_body, want_status) = match curl.status_line {
        true => want
            .rsplit_once('\n')
            .ok_or_else(|| format!("`{command}`: the page shows no status line"))?,
        false => (want.as_str(), "200"),
    };
    if status.as_str() != want_status {
        return Err(format!(
            "`{command}`: the page shows {want_status}, the server answered {status}:\n{got}"
        ));
    }
    let same = if grepped {
        without_values(want_body) == without_values(&got)
    } else {
        same_text(want_body, &got)
    };
    match same {
        true => Ok(()),
        false => Err(format!(
            "`{command}`: the page shows\n{want_body}\nthe server answered\n{got}"
        )),
    }
}

/// Writes the page's model repository under `root` with `examples/onnx/make_models.py`.
fn make_models(root: &Path) -> PathBuf {
    let models = root.join("models");
    let out = Command::new(python())
        .arg(repo().join("examples/onnx/make_models.py"))
        .arg(&models)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "make_models.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    models
}

/// `ferroserve run ARGS --port 0`.
fn run(args: &[&str], dir: Option<tempfile::TempDir>) -> Process {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--port", "0"]);
    spawn_listening(&ferroserve_bin(), &all, &[], dir)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_on_the_page_gets_the_answer_it_shows() {
    if !onnx_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let models = make_models(dir.path());
    for file in ["app.yaml", "classify.py"] {
        std::fs::copy(
            repo().join("examples/onnx").join(file),
            dir.path().join(file),
        )
        .expect("copied");
    }
    let app_file = dir.path().join("app.yaml");
    let servers = Servers {
        models: run(&["--models", path_str(&models)], None),
        app: Some(run(&[path_str(&app_file)], None)),
    };
    let http = common::client();
    let shown = checked_commands(&blocks(DOC));
    let mut wrong = Vec::new();
    for curl in shown.iter().filter(|s| s.command.starts_with("curl ")) {
        if let Err(why) = check_curl(&http, &servers, curl).await {
            wrong.push(why);
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/onnx.md shows answers the server does not give:\n\n{}",
        wrong.join("\n\n")
    );
    // The servers stop before their repository is removed.
    drop(servers);
    drop(dir);
}

#[test]
fn the_python_examples_print_what_the_page_shows() {
    if !onnx_ready() || !python_has("tritonclient.http", "tritonclient[http]") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let models = make_models(dir.path());
    let server = run(&["--models", path_str(&models)], None);
    let servers = Servers {
        models: server,
        app: None,
    };
    // The log line the page shows: where the runtime library came from (the log is read
    // by a thread of its own, so it may lag a little).
    let deadline = Instant::now() + Duration::from_secs(10);
    let loaded = loop {
        let log = servers.models.stderr.lock().expect("lock").clone();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("ONNX Runtime loaded from "))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no \"ONNX Runtime loaded from\" in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        assert!(
            loaded.ends_with("(the onnxruntime Python package)"),
            "{loaded}"
        );
    }
    let blocks = blocks(DOC);
    let mut scripts: Vec<Shown> = checked_commands(&blocks)
        .into_iter()
        .filter(|s| s.command.starts_with("python3 "))
        .collect();
    // A script shown twice runs once, where the page shows its output.
    scripts.sort_by_key(|s| (s.command.clone(), s.answer.is_none()));
    scripts.dedup_by(|later, first| later.command == first.command);
    assert!(scripts.len() >= 2, "client.py and binary.py: {scripts:?}");
    let mut wrong = Vec::new();
    for shown in &scripts {
        let words = words(&shown.command);
        let [_, script, host] = words.as_slice() else {
            panic!("`{}`: python3 SCRIPT HOST", shown.command);
        };
        let base = servers.base(host);
        let out = Command::new(python())
            .arg(repo().join(script))
            .arg(base.trim_start_matches("http://"))
            .output()
            .expect("python runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{}` failed:\n{said}\n{}",
            shown.command,
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(want) = &shown.answer
            && said.trim_end() != want.trim_end()
        {
            wrong.push(format!(
                "`{}`: the page shows\n{want}\nit printed\n{said}",
                shown.command
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // The page shows the model's config.yaml as make_models.py writes it.
    let config = std::fs::read_to_string(models.join("iris/config.yaml")).expect("config.yaml");
    assert!(
        blocks
            .iter()
            .any(|b| b.lang == "yaml" && b.text().trim_end() == config.trim_end()),
        "docs/onnx.md does not show iris/config.yaml as written:\n{config}"
    );
    // Each app file of the page that serves a model file passes `ferroserve check` beside
    // the repository.
    let apps: Vec<String> = blocks
        .iter()
        .filter(|b| b.lang == "yaml" && b.lines.iter().any(|l| l.trim_start().starts_with("onnx:")))
        .map(Block::text)
        .collect();
    assert!(!apps.is_empty(), "an app file with an `onnx:` backend");
    for (n, app) in apps.iter().enumerate() {
        let path = dir.path().join(format!("app{n}.yaml"));
        std::fs::write(&path, app).expect("written");
        let out = Command::new(ferroserve_bin())
            .args(["check", path_str(&path)])
            .output()
            .expect("ferroserve runs");
        assert!(
            out.status.success(),
            "ferroserve check refused the page's app file:\n{app}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The page's start error when no runtime library is found (no key, no `ORT_DYLIB_PATH`, a
/// Python without the `onnxruntime` package) is the server's, past the folder it names.
#[test]
fn a_missing_runtime_library_is_the_error_the_page_shows() {
    if !onnx_ready() {
        return;
    }
    let shown = DOC
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains("library was not found"))
        .expect("the page shows the error");
    let from = shown
        .find("replica `")
        .expect("the error names the replica");
    let dir = tempfile::tempdir().expect("temp dir");
    let models = make_models(dir.path());
    // The same interpreter without its site-packages, so without onnxruntime.
    let bare = dir.path().join("python-without-site");
    std::fs::write(&bare, format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", python()))
        .expect("wrapper written");
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = dir.path().join("stderr");
    let mut child = Command::new(ferroserve_bin())
        .args([
            "run",
            "--models",
            path_str(&models),
            "--port",
            "0",
            "--control-port",
            "0",
        ])
        .env_remove("ORT_DYLIB_PATH")
        .env("FERROSERVE_PYTHON", &bare)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("ferroserve runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferroserve did not exit without a runtime library");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).expect("stderr read");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&shown[from..]),
        "the page shows\n{shown}\nthe server said\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_handle_example_classifies_two_flowers() {
    if !onnx_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let models = make_models(dir.path());
    let serve = common::serve().await;
    let labels = handle::classify(&serve, &models.join("iris/2/model.onnx"))
        .await
        .expect("the example runs");
    assert_eq!(labels, [0, 2], "setosa and virginica");
    assert!(DOC.contains("`labels` is `[0, 2]`"), "the page says so");
    serve.shutdown().await;
}

/// Needs no Python: the page's commands are all read, and its quotes of the examples are
/// the examples as they are.
#[test]
fn the_page_quotes_the_examples_as_they_are() {
    let blocks = blocks(DOC);
    let shown = checked_commands(&blocks);
    let curls: Vec<Curl> = shown
        .iter()
        .filter(|s| s.command.starts_with("curl "))
        .map(|s| parse_curl(&s.command))
        .collect();
    assert!(curls.len() >= 23, "only {} curl commands read", curls.len());
    let answered = shown.iter().filter(|s| s.answer.is_some()).count();
    assert!(
        answered >= 25,
        "only {answered} commands with an answer shown"
    );
    let mut quoted = 0;
    for block in &blocks {
        let Some(first) = block.lines.first() else {
            continue;
        };
        let Some(file) = first
            .strip_prefix("# examples/onnx/")
            .or_else(|| first.strip_prefix("// examples/onnx/"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(repo().join("examples/onnx").join(file))
            .unwrap_or_else(|e| panic!("the page quotes examples/onnx/{file}: {e}"));
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let quote: Vec<&str> = block.lines[1..].iter().map(|l| l.trim()).collect();
        assert!(
            lines.windows(quote.len()).any(|w| w == quote.as_slice()),
            "docs/onnx.md quotes examples/onnx/{file}, which does not hold:\n{}",
            quote.join("\n")
        );
        quoted += 1;
    }
    assert!(quoted >= 5, "only {quoted} quotes of examples/onnx/ files");
}
