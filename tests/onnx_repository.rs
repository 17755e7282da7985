//! A model repository (`ferroserve run --models DIR`, `models: DIR`) on the real binary:
//! every model of `DIR/NAME/VERSION/model.onnx` served at its latest version as a backend and
//! an endpoint, `DIR/NAME/config.yaml` applied (and refused naming file, line and key), and
//! `--poll-models` rolling out a new version, or a new model, with no failed request.
//!
//! The models are made by `tests/onnx/make_repository.py` (`y = x + c`, so each version
//! answers differently) and need Python's `onnx` and `onnxruntime`. Without them the tests
//! that serve models print a SKIP line, unless `FERROSERVE_REQUIRE_ONNX=1` (CI) makes that
//! a failure. The tests of refused repositories need neither.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::onnx::{onnx_ready, python};
use common::{Process, client, ferroserve_bin, spawn_listening};
use http::StatusCode;
use serde_json::{Value, json};

/// Writes models under `root`: each `(path, kind, constant)` with `kind` `add_f32`
/// (`y = x + c`, `x` float [N, 4]) or `add_i64` (`b = a + c`, `a` int64 [N, 2]).
fn make_models(root: &Path, models: &[(&str, &str, i64)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/make_repository.py");
    let args: Vec<String> = models
        .iter()
        .map(|(path, kind, c)| format!("{}={kind}:{c}", root.join(path).display()))
        .collect();
    let out = Command::new(python())
        .arg(script)
        .args(&args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "make_repository.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory holding a model repository `models/` of `models` (as
/// [`make_models`] takes them); the directory and the repository's path.
fn repository(models: &[(&str, &str, i64)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("models");
    make_models(&root, models);
    (dir, root)
}

/// Writes `contents` at `root/path`, making folders.
fn write(root: &Path, path: &str, contents: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, contents).expect("written");
}

/// `ferroserve run` with `args` and `--port 0`.
fn run(args: &[&str], dir: tempfile::TempDir) -> Process {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--port", "0"]);
    spawn_listening(&ferroserve_bin(), &all, &[], Some(dir))
}

/// `ferroserve run --models MODELS --poll-models` every `interval_ms`, with `--port 0`.
fn run_polled(models: &Path, interval_ms: &str, dir: tempfile::TempDir) -> Process {
    let models = path_str(models);
    let polled = [
        "--models",
        models,
        "--poll-models",
        "--poll-models-interval-ms",
    ];
    run(&[&polled[..], &[interval_ms]].concat(), dir)
}

/// `ferroserve run` with `args`, which must fail before listening; its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(ferroserve_bin())
        .arg("run")
        .args(args)
        .args(["--port", "0", "--control-port", "0"])
        .output()
        .expect("ferroserve runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "must be refused; stderr:\n{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "{stderr}"
    );
    stderr
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// POSTs `body` to `url`; the status and the JSON answer.
async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let response = client().post(url).json(body).send().await.expect("answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url} answered {status} with no JSON ({e}): {text}"));
    (status, value)
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = client().get(url).send().await.expect("answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An inference of the `add_f32` model `name`; the constant it adds (or the failure).
async fn adds(server: &Process, name: &str) -> Result<f64, String> {
    adds_with(&client(), server, name).await
}

/// [`adds`] with `client`'s connections.
async fn adds_with(client: &reqwest::Client, server: &Process, name: &str) -> Result<f64, String> {
    let body = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                  "data": [0.5, 1.0, 2.0, 4.0]}]});
    let url = server.url(&format!("/v2/models/{name}/infer"));
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{e}"))?;
    if status != StatusCode::OK {
        return Err(format!("{status}: {text}"));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    answer["outputs"][0]["data"][0]
        .as_f64()
        .map(|y| y - 0.5)
        .ok_or_else(|| format!("no output: {text}"))
}

/// Polls `check` every 50 ms until it is true, for at most `timeout`.
async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two models, no app file: the highest numbered version with a `model.onnx` serves (10,
/// not 9, and not 11, which has none), hidden folders are skipped, and each model answers
/// inference and metadata over the Open Inference Protocol and on its own route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_of_two_models_serves_their_latest_versions() {
    if !onnx_ready() {
        return;
    }
    let (dir, models) = repository(&[
        ("adder/1/model.onnx", "add_f32", 1),
        ("adder/9/model.onnx", "add_f32", 9),
        ("adder/10/model.onnx", "add_f32", 10),
        ("counter/3/model.onnx", "add_i64", 5),
    ]);
    std::fs::create_dir_all(models.join("adder/11")).expect("mkdir");
    write(&models, ".cache/1/model.onnx", "not a model");
    let models = path_str(&models).to_owned();
    let server = run(&["--models", &models], dir);

    assert_eq!(adds(&server, "adder").await, Ok(10.0));
    let request = json!({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]});
    let (status, answer) = post(&server.url("/v2/models/counter/infer"), &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["outputs"][0]["data"],
        json!([6, 7, 8, 9]),
        "{answer}"
    );
    assert_eq!(answer["model_version"], "3", "{answer}");
    let (status, answer) = post(&server.url("/counter"), &request).await;
    assert_eq!(status, StatusCode::OK, "the route /NAME: {answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 2]), "{answer}");

    let (status, meta) = get(&server.url("/v2/models/adder")).await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["name"], "adder", "{meta}");
    assert_eq!(meta["versions"], json!(["10"]), "{meta}");
    assert_eq!(
        meta["parameters"]["max_batch_size"], 8,
        "batching is on: {meta}"
    );
    assert_eq!(
        meta["inputs"],
        json!([{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "y", "datatype": "FP32", "shape": [-1, 4]}])
    );
    let (_, meta) = get(&server.url("/v2/models/counter")).await;
    assert_eq!(meta["inputs"][0]["datatype"], "INT64", "{meta}");
    let (status, _) = get(&server.url("/v2/models/.cache")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "hidden folders are not models"
    );

    // The deployed app: onnx backends of the version folders, batching on by default.
    let (_, app) = get(&server.control_url("/api/app")).await;
    let adder = &app["backends"][0];
    assert_eq!(adder["name"], "adder", "{app}");
    assert_eq!(adder["onnx"]["version"], "10", "{app}");
    assert!(
        adder["onnx"]["model"]
            .as_str()
            .is_some_and(|m| m.ends_with("adder/10/model.onnx")),
        "{app}"
    );
    assert_eq!(adder["max_batch_size"], 8, "{app}");
    assert_eq!(adder["batch_wait_timeout_ms"], 2, "{app}");
}

/// `models:` in an app file (relative to it) beside the app's own backends; a model's
/// `config.yaml` sets its backend keys over the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_file_serves_a_repository_with_per_model_config() {
    if !onnx_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    make_models(
        &root.join("repo"),
        &[
            ("adder/1/model.onnx", "add_f32", 1),
            ("counter/1/model.onnx", "add_i64", 1),
        ],
    );
    write(
        root,
        "repo/counter/config.yaml",
        "# two replicas, bigger batches\nnum_replicas: 2\nmax_batch_size: 16\nbatch_wait_timeout_ms: 5\n",
    );
    write(
        root,
        "app.yaml",
        "models: repo\nbackends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {route: /echo, backend: echo}\n",
    );
    let app_file = path_str(&root.join("app.yaml")).to_owned();
    let server = run(&[&app_file], dir);

    assert_eq!(adds(&server, "adder").await, Ok(1.0));
    let (status, _) = get(&server.url("/echo")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, status) = get(&server.control_url("/api/status")).await;
    let counter = &status["backends"]["counter"];
    assert_eq!(counter["target_replicas"], 2, "{status}");
    assert_eq!(counter["running_replicas"], 2, "{status}");
    assert_eq!(
        status["backends"]["adder"]["target_replicas"], 1,
        "{status}"
    );
    let (_, app) = get(&server.control_url("/api/app")).await;
    let names: Vec<&str> = app["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "adder", "counter"], "{app}");
    assert_eq!(app["backends"][2]["max_batch_size"], 16, "{app}");
    assert_eq!(app["backends"][2]["batch_wait_timeout_ms"], 5, "{app}");
}

/// What is wrong with a repository stops `run` before it serves, naming the file, the line
/// and the key (or the model folder); no model is loaded, so no runtime is needed.
#[test]
fn a_bad_repository_is_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    write(root, "repo/adder/2/model.onnx", "never loaded");
    write(
        root,
        "repo/adder/config.yaml",
        "num_replicas: 2\nmax_batch_sise: 4\n",
    );
    let repo = path_str(&root.join("repo")).to_owned();
    let stderr = refused(&["--models", &repo]);
    let config = root.join("repo/adder/config.yaml");
    assert!(
        stderr.contains(&format!(
            "{}, line 2, key `max_batch_sise`: unknown field",
            config.display()
        )),
        "{stderr}"
    );

    write(root, "repo/adder/config.yaml", "max_batch_size: 0\n");
    let stderr = refused(&["--models", &repo]);
    assert!(stderr.contains("line 1, key `max_batch_size`"), "{stderr}");

    write(root, "repo/adder/config.yaml", "num_replicas: 1\n");
    write(
        root,
        "app.yaml",
        "models: repo\nbackends:\n  adder: {builtin: echo}\n",
    );
    let stderr = refused(&[path_str(&root.join("app.yaml"))]);
    assert!(
        stderr.contains("line 3, key `backends.adder`: is named like model `adder`"),
        "{stderr}"
    );
    write(root, "app.yaml", "backends:\n  echo: {builtin: echo}\n");
    let stderr = refused(&[path_str(&root.join("app.yaml")), "--poll-models"]);
    assert!(
        stderr.contains("--poll-models needs a model repository"),
        "{stderr}"
    );
    let stderr = refused(&[]);
    assert!(stderr.contains("--models"), "{stderr}");
}

/// Sends inferences to `adder` from `clients` loops until `stop`; each answer's constant,
/// or the failure.
fn load_loop(
    server: &Arc<Process>,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Result<f64, String>>>> {
    (0..clients)
        .map(|_| {
            let server = server.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = client();
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(adds_with(&client, &server, "adder").await);
                }
                answers
            })
        })
        .collect()
}

/// `--poll-models`: version 2, copied in slowly (its file grows across several rescans, so
/// a half-written file would fail to load if it were taken), rolls out through the
/// control plane while clients keep sending requests: none fails, and then every answer
/// is version 2's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_models_rolls_out_a_new_version_with_no_failed_request() {
    if !onnx_ready() {
        return;
    }
    let (dir, models) = repository(&[("adder/1/model.onnx", "add_f32", 1)]);
    let staging = tempfile::tempdir().expect("temp dir");
    make_models(staging.path(), &[("v2.onnx", "add_f32", 2)]);
    let v2 = std::fs::read(staging.path().join("v2.onnx")).expect("v2 written");
    let server = Arc::new(run_polled(&models, "150", dir));
    assert_eq!(adds(&server, "adder").await, Ok(1.0));

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_loop(&server, 4, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Copy version 2 in 10 pieces, 40 ms apart: every rescan (150 ms) sees it change.
    let target: PathBuf = models.join("adder/2/model.onnx");
    std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
    let copy = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&target).expect("created");
        for piece in v2.chunks(v2.len().div_ceil(10)) {
            file.write_all(piece).expect("written");
            file.flush().expect("flushed");
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    copy.await.expect("copied");
    let rolled = Instant::now();
    eventually("version 2 to answer", Duration::from_secs(20), async || {
        adds(&server, "adder").await == Ok(2.0)
    })
    .await;
    let took = rolled.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client loop"));
    }
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let ones = answers.iter().filter(|a| **a == Ok(1.0)).count();
    let twos = answers.iter().filter(|a| **a == Ok(2.0)).count();
    assert_eq!(ones + twos, answers.len(), "only versions 1 and 2 answer");
    assert!(ones > 0 && twos > 0, "{ones} answers of 1, {twos} of 2");
    eprintln!(
        "{} requests, none failed ({ones} by version 1, {twos} by version 2); version 2 \
         answered {took:?} after its copy ended",
        answers.len()
    );
    for _ in 0..20 {
        assert_eq!(adds(&server, "adder").await, Ok(2.0), "only version 2 now");
    }
    let stderr = server.stderr.lock().expect("lock").clone();
    assert!(
        !stderr.contains("the new version failed") && !stderr.contains("deploy failed"),
        "no half-written file was taken:\n{stderr}"
    );
    assert!(
        stderr.contains("version 2's `model.onnx` is new or still changing"),
        "{stderr}"
    );
    let (_, app) = get(&server.control_url("/api/app")).await;
    assert_eq!(app["backends"][0]["onnx"]["version"], "2", "{app}");
}

/// `--poll-models`: a new model folder becomes a backend and an endpoint, and a removed
/// one is taken away with its endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_models_adds_and_removes_model_folders() {
    if !onnx_ready() {
        return;
    }
    let (dir, models) = repository(&[("adder/1/model.onnx", "add_f32", 1)]);
    let server = run_polled(&models, "100", dir);
    let (status, _) = get(&server.url("/v2/models/later/ready")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    make_models(&models, &[("later/4/model.onnx", "add_f32", 40)]);
    eventually("the new model", Duration::from_secs(20), async || {
        adds(&server, "later").await == Ok(40.0)
    })
    .await;
    assert_eq!(adds(&server, "adder").await, Ok(1.0), "adder is untouched");
    std::fs::remove_dir_all(models.join("adder")).expect("removed");
    eventually("adder to go", Duration::from_secs(20), async || {
        get(&server.url("/v2/models/adder/ready")).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let (_, status) = get(&server.control_url("/api/status")).await;
    assert!(status["backends"].get("adder").is_none(), "{status}");
    assert_eq!(adds(&server, "later").await, Ok(40.0));
}

/// Without `--poll-models`, SIGHUP reads the repository again: a new version rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_repository_again() {
    if !onnx_ready() {
        return;
    }
    let (dir, models) = repository(&[("adder/1/model.onnx", "add_f32", 1)]);
    let models_arg = path_str(&models).to_owned();
    let server = run(&["--models", &models_arg], dir);
    assert_eq!(adds(&server, "adder").await, Ok(1.0));
    make_models(&models, &[("adder/2/model.onnx", "add_f32", 2)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(adds(&server, "adder").await, Ok(1.0), "no polling");
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually(
        "version 2 after SIGHUP",
        Duration::from_secs(20),
        async || adds(&server, "adder").await == Ok(2.0),
    )
    .await;
}

/// `--poll-models` on a new model whose load fails (its file is cut short): the failure is
/// logged once and the model is not said to serve; once the whole file is copied over it,
/// the model is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_models_deploys_a_model_again_once_its_failed_file_is_replaced() {
    if !onnx_ready() {
        return;
    }
    let (dir, models) = repository(&[
        ("adder/1/model.onnx", "add_f32", 1),
        ("staging/late.onnx", "add_f32", 30),
    ]);
    let whole = std::fs::read(models.join("staging/late.onnx")).expect("made");
    std::fs::remove_dir_all(models.join("staging")).expect("removed");
    let server = run_polled(&models, "100", dir);
    let late = models.join("late/1/model.onnx");
    std::fs::create_dir_all(late.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&late, &whole[..whole.len() / 2]).expect("written");
    let stderr = || server.stderr.lock().expect("lock").clone();
    eventually("the failed load", Duration::from_secs(20), async || {
        stderr().contains("deploy failed")
    })
    .await;
    // Rescans go on (10 of them): the failure is tried again, but said once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) = get(&server.url("/v2/models/late/ready")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(stderr().matches("deploy failed").count(), 1, "{}", stderr());

    std::fs::write(&late, &whole).expect("written");
    eventually("late to serve", Duration::from_secs(20), async || {
        adds(&server, "late").await == Ok(30.0)
    })
    .await;
    let log = stderr();
    assert!(
        log.contains("model `late`: version 1's `model.onnx` is new or still changing; not served"),
        "{log}"
    );
    assert!(
        !log.contains("version 1 serves"),
        "late never served before: {log}"
    );
    assert!(log.contains("the model repository is deployed"), "{log}");
}

/// `--poll-models`: a served version's `model.onnx` overwritten in place by another model
/// rolls out as a new version does, with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_models_rolls_out_a_model_file_replaced_in_place() {
    if !onnx_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    let staging = tempfile::tempdir().expect("temp dir");
    make_models(&models, &[("adder/1/model.onnx", "add_f32", 1)]);
    make_models(staging.path(), &[("other.onnx", "add_f32", 7)]);
    let other = std::fs::read(staging.path().join("other.onnx")).expect("made");
    let server = Arc::new(run_polled(&models, "100", dir));
    assert_eq!(adds(&server, "adder").await, Ok(1.0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_loop(&server, 2, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(models.join("adder/1/model.onnx"), &other).expect("overwritten");
    eventually(
        "the new file to answer",
        Duration::from_secs(20),
        async || adds(&server, "adder").await == Ok(7.0),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let answers = client.await.expect("client loop");
        assert!(
            answers.iter().all(|a| *a == Ok(1.0) || *a == Ok(7.0)),
            "{answers:?}"
        );
    }
    let (_, app) = get(&server.control_url("/api/app")).await;
    assert_eq!(app["backends"][0]["onnx"]["version"], "1", "{app}");
}

/// A folder that cannot be a model (empty, `lost+found`, a name not in UTF-8) is skipped
/// with a warning naming it, at start and on rescans; a repository with no model to serve
/// at all is refused, naming each folder and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_folders_are_skipped_with_a_warning() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    for folder in ["empty", "lost+found", "no_model/1"] {
        std::fs::create_dir_all(models.join(folder)).expect("mkdir");
    }
    let not_utf8 = models.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    std::fs::create_dir_all(not_utf8.join("1")).expect("a folder not named in UTF-8");
    let models_arg = path_str(&models).to_owned();
    let stderr = refused(&["--models", &models_arg]);
    assert!(stderr.contains("has no model to serve"), "{stderr}");
    for folder in ["empty", "lost+found", "no_model"] {
        let path = models.join(folder).display().to_string();
        assert!(
            stderr.contains(&format!("{path}: has no version folder")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("is not named in UTF-8"), "{stderr}");
    let stderr = refused(&["--models", path_str(&dir.path().join("nowhere"))]);
    assert!(
        stderr.contains("cannot read the model repository"),
        "{stderr}"
    );
    if !onnx_ready() {
        return;
    }

    make_models(&models, &[("adder/1/model.onnx", "add_f32", 1)]);
    let server = run_polled(&models, "100", dir);
    assert_eq!(adds(&server, "adder").await, Ok(1.0));
    let log = server.stderr.lock().expect("lock").clone();
    let warned = format!(
        "WARN ferroserve::config::yaml::models: model repository: {}",
        models.join("empty").display()
    );
    assert!(log.contains(&warned), "{log}");
    assert!(log.contains("is not named in UTF-8"), "{log}");
    // Rescans are not blocked by them either: a new model is served.
    std::fs::create_dir_all(models.join(std::ffi::OsStr::from_bytes(b"worse\xfe"))).expect("mkdir");
    make_models(&models, &[("later/2/model.onnx", "add_f32", 20)]);
    eventually("the new model", Duration::from_secs(20), async || {
        adds(&server, "later").await == Ok(20.0)
    })
    .await;
}
