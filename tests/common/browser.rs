//! The dashboard in a real browser for the tests of `dashboard.rs` and
//! `dashboard_cluster.rs`: Debian's chromium, driven by puppeteer-core
//! (`dashboard/test/browser.mjs`), whether it can run here (SKIP, or a failure when
//! `FERROSERVE_REQUIRE_BROWSER=1`), its report, and what the page's tables should show.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::ferroserve_bin;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/dashboard-screenshots/NAME`, beside the binary's build directory.
pub fn screenshots(name: &str) -> PathBuf {
    let bin = ferroserve_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| root().join("target"), Path::to_path_buf);
    target.join("dashboard-screenshots").join(name)
}

/// Whether the browser test can run here; when it cannot, says so loudly, or fails when
/// `FERROSERVE_REQUIRE_BROWSER=1`. The check (and `npm ci`) runs once for all the tests.
pub fn browser_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    match READY.get_or_init(find_browser) {
        Ok(()) => true,
        Err(why) => skip_or_fail(why),
    }
}

/// Chromium and node, and the dashboard's npm packages (`npm ci --prefix dashboard` when
/// they are not installed yet).
pub fn find_browser() -> Result<(), String> {
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

pub fn skip_or_fail(why: &str) -> bool {
    assert!(
        std::env::var("FERROSERVE_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "FERROSERVE_REQUIRE_BROWSER=1 but the browser test cannot run: {why}"
    );
    super::skip(&format!("the dashboard's browser test did not run: {why}"));
    false
}

/// Runs `dashboard/test/browser.mjs` with `args` (at most 100 s); its JSON report.
pub async fn browse(args: &[&str]) -> Value {
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

/// A traffic map as the page writes it: `hello 90% · hello_v2 10%`.
pub fn weights_text(map: &Value) -> String {
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
pub fn rows(report: &Value, table: &str, cols: &[&str]) -> Vec<Vec<String>> {
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
pub fn expected(status: &Value) -> [Vec<Vec<String>>; 3] {
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
