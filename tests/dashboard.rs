//! The dashboard in a real browser: Debian's chromium, driven by puppeteer-core
//! (`dashboard/test/browser.mjs`), loads the page of a real server under traffic; what it
//! shows must match `/api/status`, its charts must have points, and a traffic change made
//! in its form must reach the server. In cluster mode (a test etcd and two nodes) its
//! Cluster panel must show the nodes, the leader and the replicas as `/api/status` does;
//! without `--cluster` it has none. Screenshots go to `target/dashboard-screenshots/`.
//!
//! Without chromium (or node) the tests print a SKIP line, unless
//! `FERROSERVE_REQUIRE_BROWSER=1` (CI) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::cluster::{is_leader, start_node, wait_until};
use common::etcd::{EtcdCluster, etcd_or_skip};
use common::{client, ferroserve_bin, get_json, spawn_cli, spawn_listening, write_config};
use serde_json::Value;

const APP: &str = "\
backends:
  echo: {builtin: echo, num_replicas: 2}
  hello: {builtin: static, init_args: {body: \"hello\\n\"}}
  hello_v2: {builtin: static, init_args: {body: \"hello v2\\n\"}}
endpoints:
  echo: {route: /echo, methods: [GET, POST], backend: echo}
  hello: {route: /hello, traffic: {hello: 0.9, hello_v2: 0.1}, shadow: {echo: 0.5}}
";

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/dashboard-screenshots/NAME`, beside the binary's build directory.
fn screenshots(name: &str) -> PathBuf {
    let bin = ferroserve_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| root().join("target"), Path::to_path_buf);
    target.join("dashboard-screenshots").join(name)
}

/// Whether the browser test can run here; when it cannot, says so loudly, or fails when
/// `FERROSERVE_REQUIRE_BROWSER=1`. The check (and `npm ci`) runs once for all the tests.
fn browser_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    match READY.get_or_init(find_browser) {
        Ok(()) => true,
        Err(why) => skip_or_fail(why),
    }
}

/// Chromium and node, and the dashboard's npm packages (`npm ci --prefix dashboard` when
/// they are not installed yet).
fn find_browser() -> Result<(), String> {
    let chromium =
        std::env::var("FERROSERVE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "no chromium at {chromium}: `apt-get install -y chromium`"
        ));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !node {
        return Err("no node: `apt-get install -y nodejs npm`".to_owned());
    }
    if root()
        .join("dashboard/node_modules/puppeteer-core")
        .exists()
    {
        return Ok(());
    }
    let installed = std::process::Command::new("npm")
        .args(["ci", "--prefix", "dashboard", "--no-audit", "--no-fund"])
        .current_dir(root())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        Ok(())
    } else {
        Err("`npm ci --prefix dashboard` failed".to_owned())
    }
}

fn skip_or_fail(why: &str) -> bool {
    assert!(
        std::env::var("FERROSERVE_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "FERROSERVE_REQUIRE_BROWSER=1 but the browser test cannot run: {why}"
    );
    eprintln!("\n======== SKIP: the dashboard's browser test did not run: {why} ========\n");
    false
}

/// Runs `dashboard/test/browser.mjs` with `args` (at most 100 s); its JSON report.
async fn browse(args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root().join("dashboard/test/browser.mjs"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("node runs");
    let output = tokio::time::timeout(Duration::from_secs(100), child.wait_with_output())
        .await
        .expect("browser.mjs ends within 100 s")
        .expect("browser.mjs runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser.mjs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("browser.mjs printed no report:\n{stdout}\n{stderr}"));
    assert_eq!(report["problems"], Value::Array(Vec::new()), "{report:#}");
    report
}

/// Polls `GET /api/status` (with `token`) until the app runs and is ready.
async fn running_status(http: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = common::fetch_json(request).await;
        if status["status"] == "RUNNING" && status["ready"] == true {
            return status;
        }
        assert!(Instant::now() < deadline, "never ready: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests to each route until `stop`, at most 2 minutes.
fn send_traffic(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for path in ["/hello", "/echo?x=1"] {
                let _ = http.get(format!("{base}{path}")).send().await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    })
}

/// A traffic map as the page writes it: `hello 90% · hello_v2 10%`.
fn weights_text(map: &Value) -> String {
    map.as_object()
        .map(|map| {
            map.iter()
                .map(|(name, w)| {
                    let percent = (w.as_f64().unwrap_or(f64::NAN) * 1000.0).round() / 10.0;
                    format!("{name} {percent}%")
                })
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default()
}

/// The rows of one table the page showed, as `(key, [cells])`, sorted by key.
fn rows(report: &Value, table: &str, cols: &[&str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = report["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("no {table} table in {report:#}"))
        .iter()
        .map(|row| {
            cols.iter()
                .map(|c| row[c].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// What `status` says the page should show in each table, in the same columns.
fn expected(status: &Value) -> [Vec<Vec<String>>; 3] {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let map = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let mut endpoints: Vec<Vec<String>> = map(&status["endpoints"])
        .iter()
        .map(|(name, e)| {
            let methods: Vec<String> = e["methods"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let shadow = weights_text(&e["shadow"]);
            vec![
                name.clone(),
                text(&e["route"]),
                methods.join(", "),
                weights_text(&e["traffic"]),
                if shadow.is_empty() {
                    "–".to_owned()
                } else {
                    shadow
                },
            ]
        })
        .collect();
    let mut backends: Vec<Vec<String>> = map(&status["backends"])
        .iter()
        .map(|(name, b)| {
            let replicas = format!("{}/{}", b["running_replicas"], b["target_replicas"]);
            vec![name.clone(), text(&b["status"]), replicas]
        })
        .collect();
    let mut replicas: Vec<Vec<String>> = map(&status["backends"])
        .values()
        .flat_map(|b| b["replicas"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let pid = r["pid"]
                .as_u64()
                .map_or("–".to_owned(), |pid| pid.to_string());
            vec![
                text(&r["id"]),
                text(&r["state"]),
                pid,
                r["restarts"].to_string(),
            ]
        })
        .collect();
    endpoints.sort();
    backends.sort();
    replicas.sort();
    [endpoints, backends, replicas]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_app_charts_it_and_changes_traffic() {
    if !browser_ready() {
        return;
    }
    let started = Instant::now();
    let server = spawn_cli(APP);
    let http = client();
    let status_url = server.control_url("/api/status");
    let before = running_status(&http, &status_url, None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(server.url(""), stop.clone());

    let shots = screenshots("");
    let control = server.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "hello", "hello=0.3,hello_v2=0.7"]).await;
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.expect("the traffic task ends");
    assert!(sent > 0);

    // The tables show what /api/status says.
    let [endpoints, backends, replicas] = expected(&before);
    let cols = ["name", "route", "methods", "traffic", "shadow"];
    assert_eq!(rows(&report, "endpoints", &cols), endpoints);
    assert_eq!(
        rows(&report, "backends", &["name", "status", "replicas"]),
        backends
    );
    let cols = ["id", "state", "pid", "restarts"];
    assert_eq!(rows(&report, "replicas", &cols), replicas);
    assert_eq!(replicas.len(), 4, "{before:#}");
    // A single node: no Cluster panel.
    assert_eq!(before.get("cluster"), None, "{before:#}");
    assert_eq!(report["cluster"], Value::Null, "{report:#}");

    // The charts have points.
    let points = &report["points"];
    assert!(
        points["rps"].as_u64() > Some(0),
        "no points in the endpoint's chart: {report:#}"
    );
    assert!(points["latency"].as_u64() > Some(0), "{report:#}");
    assert!(
        points["overall"].as_u64() > Some(0),
        "no points in the overall chart: {report:#}"
    );

    // The change made in the page reached the server.
    assert_eq!(report["result"]["outcome"], "ok", "{report:#}");
    assert!(
        report["confirmText"]
            .as_str()
            .is_some_and(|t| t.contains("hello 30%")),
        "{report:#}"
    );
    let after: Value = get_json(&http, &status_url).await;
    let weights = &after["endpoints"]["hello"]["traffic"];
    for (backend, wanted) in [("hello", 0.3), ("hello_v2", 0.7)] {
        let weight = weights[backend].as_f64().unwrap_or(f64::NAN);
        assert!((weight - wanted).abs() < 1e-9, "{backend}: {weights}");
    }
    assert!(shots.join("dashboard.png").exists());
    eprintln!(
        "dashboard test: {sent} requests sent, {:.1} s, screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it() {
    if !browser_ready() {
        return;
    }
    let (dir, path) = write_config(APP);
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let server = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0"],
        &[("FERROSERVE_CONTROL_TOKEN", "s3cret-token")],
        Some(dir),
    );
    let http = client();
    let status_url = server.control_url("/api/status");
    let status = running_status(&http, &status_url, Some("s3cret-token")).await;
    let shots = screenshots("token");
    let control = server.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "--token", "s3cret-token"]).await;
    assert_eq!(report["askedForToken"], true, "{report:#}");
    let [endpoints, _, _] = expected(&status);
    let names: Vec<&String> = endpoints.iter().map(|row| &row[0]).collect();
    let shown = rows(&report, "endpoints", &["name"]);
    let shown: Vec<&String> = shown.iter().map(|row| &row[0]).collect();
    assert_eq!(shown, names);
    assert_eq!(report["cluster"], Value::Null, "{report:#}");
}

/// The app of the cluster test: three replicas of `echo` (one CPU each) and one of `gpu`,
/// which asks for a GPU that no node has.
const CLUSTER_APP: &str = "\
backends:
  echo: {builtin: echo, num_replicas: 3, num_cpus: 1}
  gpu: {builtin: echo, num_replicas: 1, num_gpus: 1}
endpoints:
  echo: {route: /echo, backend: echo}
";

/// A CPU or GPU count as the page writes it: `2`, `0.5`.
fn amount(v: &Value) -> String {
    let v = (v.as_f64().unwrap_or(f64::NAN) * 10.0).round() / 10.0;
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Whether `status`'s cluster has `nodes` nodes, each running the replicas placed on it,
/// and the app is placed and applied at its latest revision.
fn cluster_settled(status: &Value, nodes: usize) -> bool {
    let c = &status["cluster"];
    let Some(all) = c["nodes"].as_object() else {
        return false;
    };
    let placed = &c["placement"]["backends"];
    let runs_its_share = all.iter().all(|(name, node)| {
        placed.as_object().is_some_and(|backends| {
            backends.iter().all(|(backend, share)| {
                let want = share[name].as_u64().unwrap_or(0);
                let have = node["replicas"][backend].as_array().map(Vec::len);
                have == Some(want as usize)
            })
        })
    });
    status["status"] == "RUNNING"
        && all.len() == nodes
        && runs_its_share
        && c["app_revision"].as_i64().is_some()
        && c["applied_revision"] == c["app_revision"]
        && c["placement"]["app_revision"] == c["app_revision"]
}

/// `GET /api/status` of `node` once its cluster has settled (at most 30 s).
async fn settled_status(node: &common::Process, nodes: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = common::cluster::status(node).await.unwrap_or(Value::Null);
        if cluster_settled(&status, nodes) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never settled: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the page's node table should show for `status`'s cluster, by node: proxy, CPUs,
/// memory (GiB), GPUs, and the replicas it runs per backend (`echo 2 · other 1`).
fn expected_nodes(status: &Value) -> Vec<Vec<String>> {
    let nodes = status["cluster"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    nodes
        .iter()
        .map(|(name, node)| {
            let replicas = node["replicas"].as_object().cloned().unwrap_or_default();
            let counts: Vec<String> = replicas
                .iter()
                .filter_map(|(backend, ids)| {
                    let n = ids.as_array().map_or(0, Vec::len);
                    (n > 0).then(|| format!("{backend} {n}"))
                })
                .collect();
            let memory = node["memory_bytes"].as_f64().unwrap_or(f64::NAN) / (1u64 << 30) as f64;
            vec![
                name.clone(),
                node["proxy"].as_str().unwrap_or("?").to_owned(),
                amount(&node["cpus"]),
                format!("{memory:.1}"),
                amount(&node["gpus"]),
                counts.join(" · "),
            ]
        })
        .collect()
}

/// Cluster mode: a 1-member etcd and two nodes. The dashboard of the node that does not
/// lead shows the Cluster panel: both nodes with their resources and replicas as its
/// `/api/status` reports them, the leader marked, this node, the revisions, and the
/// replica that no node has room for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_the_page_shows_the_cluster() {
    if !browser_ready() {
        return;
    }
    let Some(bin) = etcd_or_skip("the dashboard's cluster panel") else {
        return;
    };
    let etcd = EtcdCluster::start(bin, 1);
    // n1, up first, leads; it has room for one replica of `echo`, n2 for two.
    let n1 = start_node(
        &etcd.url(),
        "n1",
        "127.0.0.1",
        CLUSTER_APP,
        &["--cpus", "1", "--gpus", "0", "--memory-bytes", "4294967296"],
    );
    wait_until(Duration::from_secs(15), "n1 leads", || is_leader(&n1)).await;
    let n2 = start_node(
        &etcd.url(),
        "n2",
        "127.0.0.2",
        CLUSTER_APP,
        &["--cpus", "2", "--gpus", "0", "--memory-bytes", "6442450944"],
    );
    let before = settled_status(&n2, 2).await;

    let shots = screenshots("cluster");
    let control = n2.control_url("");
    let shots_arg = shots.to_str().expect("a UTF-8 path");
    let report = browse(&[&control, shots_arg, "--cluster", "2"]).await;
    let after = settled_status(&n2, 2).await;
    let nodes = expected_nodes(&before);
    assert_eq!(
        nodes,
        expected_nodes(&after),
        "the cluster changed meanwhile"
    );
    assert_eq!(before["cluster"]["leader"], after["cluster"]["leader"]);

    // The node table: both nodes, as /api/status reports them.
    let panel = &report["cluster"];
    let cols = ["name", "proxy", "cpus", "memory", "gpus", "replicas"];
    let shown: Vec<Vec<String>> = panel["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no Cluster panel: {report:#}"))
        .iter()
        .map(|row| {
            cols.iter()
                .map(|c| row[c].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .collect();
    assert_eq!(shown, nodes, "{report:#}");
    // The placement by resources: n1 runs one `echo`, n2 two; their memory in GiB.
    let column = |i: usize| -> Vec<&str> { shown.iter().map(|row| row[i].as_str()).collect() };
    assert_eq!(column(0), ["n1", "n2"]);
    assert_eq!(column(5), ["echo 1", "echo 2"]);
    assert_eq!(column(3), ["4.0", "6.0"]);

    // The leader, marked, and this node.
    let c = &before["cluster"];
    assert_eq!(c["leader"], "n1");
    assert_eq!(c["is_leader"], false);
    let facts = &panel["facts"];
    assert_eq!(facts["node"], "n2", "{report:#}");
    assert_eq!(facts["leader"], "n1", "{report:#}");
    assert_eq!(facts["registered"], "yes", "{report:#}");
    let revisions = format!("applied {} of {}", c["applied_revision"], c["app_revision"]);
    assert_eq!(facts["app revision"], revisions.as_str(), "{report:#}");
    let marked: Vec<(&str, bool, &Value)> = panel["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["name"].as_str().unwrap_or("?"),
                row["leader"] == true,
                &row["marks"],
            )
        })
        .collect();
    assert_eq!(
        marked,
        [
            ("n1", true, &serde_json::json!(["leader"])),
            ("n2", false, &serde_json::json!(["this node"])),
        ],
        "{report:#}"
    );
    assert!(
        panel["summary"]
            .as_str()
            .is_some_and(|s| s.contains("node n2") && s.contains("leader n1")),
        "{report:#}"
    );
    assert_eq!(panel["applyError"], Value::Null, "{report:#}");

    // The replica of `gpu` that no node has room for, as a warning.
    assert_eq!(c["placement"]["unplaced"]["gpu"], 1, "{before:#}");
    assert!(
        panel["unplaced"]
            .as_str()
            .is_some_and(|s| s.contains("1 replica of gpu")),
        "{report:#}"
    );

    // The rest of the page shows this node's own backends.
    let [_, backends, _] = expected(&before);
    assert_eq!(
        rows(&report, "backends", &["name", "status", "replicas"]),
        backends
    );
    assert!(shots.join("cluster.png").exists());
    drop((n1, n2, etcd));
}

/// What needs no browser: the page and its files without a token, the API still behind
/// it, and the Origin rule for token-less servers (the page's own origin only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_no_token_and_only_its_own_origin_may_write() {
    let (dir, path) = write_config(APP);
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let guarded = spawn_listening(
        &ferroserve_bin(),
        &["run", &path, "--port", "0"],
        &[("FERROSERVE_CONTROL_TOKEN", "s3cret-token")],
        Some(dir),
    );
    let http = client();
    let page = http
        .get(guarded.control_url("/"))
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text()
            .await
            .expect("a body")
            .contains("/assets/app.js")
    );
    for (asset, kind) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        (
            "/assets/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let answer = http
            .get(guarded.control_url(asset))
            .send()
            .await
            .expect("answers");
        assert_eq!(answer.status(), 200, "{asset}");
        assert_eq!(answer.headers()["content-type"], kind, "{asset}");
        assert_eq!(answer.headers()["cache-control"], "no-cache", "{asset}");
    }
    let missing = http
        .get(guarded.control_url("/assets/nope.js"))
        .send()
        .await;
    assert_eq!(missing.expect("answers").status(), 404);
    let status = http.get(guarded.control_url("/api/status")).send().await;
    assert_eq!(status.expect("answers").status(), 401, "the API still asks");

    // Without a token: the page's own origin may write; any other origin may not.
    let open = spawn_cli(APP);
    let url = open.control_url("/api/endpoints/hello/traffic");
    let own = format!("http://{}", open.control.expect("a control API"));
    let body = serde_json::json!({"hello": 0.5, "hello_v2": 0.5});
    let from = |origin: &str| http.put(&url).header("origin", origin).json(&body).send();
    assert_eq!(from(&own).await.expect("answers").status(), 200);
    for other in ["http://localhost:1", "https://evil.example", "null"] {
        let refused = from(other).await.expect("answers");
        assert_eq!(refused.status(), 403, "{other}");
    }
}
