//! `deploy`, `status`, `config` and `shutdown`: calls to a running server's control API.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use ferroserve::{AppConfig, AppStatus, BackendStatus, RegisteredNames};

use crate::terminal::{self, BackendProgress, Progress};

/// Which server to talk to.
#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// The control API's address.
    #[arg(
        long,
        env = "FERROSERVE_ADDRESS",
        default_value = "http://127.0.0.1:8265"
    )]
    address: String,
    /// The control API's bearer token.
    #[arg(long, env = "FERROSERVE_CONTROL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address.trim_end_matches('/'))
    }

    /// Sends `request` with the token; the body of a 2xx answer, or the error it says.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<String> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the control API at {} (is `ferroserve start` running? set --address or FERROSERVE_ADDRESS)",
                self.address
            )
        })?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        Ok(text)
    }

    async fn status(&self, http: &reqwest::Client) -> anyhow::Result<AppStatus> {
        let text = self.send(http.get(self.url("/api/status"))).await?;
        serde_json::from_str(&text).context("the status is not what this version reads")
    }
}

/// Any `rust:` name passes here: the server checks them against what it has registered.
struct AnyName;

impl RegisteredNames for AnyName {
    fn is_registered(&self, _name: &str) -> bool {
        true
    }
    fn registered(&self) -> Vec<&str> {
        Vec::new()
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot make an HTTP client")
}

/// Checks `path` here (so that its errors name its lines, and its relative paths are read
/// from where it is), sends it, and waits for every backend to be HEALTHY, showing each
/// one's progress: bars on a terminal, a line per change otherwise.
pub(crate) async fn deploy(args: &ClientArgs, path: &Path, timeout_s: u64) -> anyhow::Result<()> {
    // From an absolute path, relative `working_dir`s become absolute: the server may run
    // in another directory.
    let path =
        &std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    let app = AppConfig::load(path, &AnyName)?;
    let http = client()?;
    let body = serde_json::to_string(&app.spec)?;
    args.send(http.put(args.url("/api/app")).body(body)).await?;
    eprintln!(
        "{}: sent ({} backends, {} endpoints); waiting for them",
        path.display(),
        app.spec.backends.len(),
        app.spec.endpoints.len()
    );
    let on_terminal = std::io::stderr().is_terminal();
    let mut progress = Progress::new(
        app.spec
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.config.num_replicas)),
        on_terminal,
        terminal::colour_allowed(on_terminal),
    );
    let started = Instant::now();
    let outcome = wait_until_deployed(args, &http, &app, timeout_s, &mut progress).await;
    progress.finish();
    outcome?;
    eprintln!("deployed in {:.1?}", started.elapsed());
    Ok(())
}

/// Polls the status, showing each backend's progress, until every backend of `app` is
/// HEALTHY; an error when one is DEPLOY_FAILED or `timeout_s` passes.
async fn wait_until_deployed(
    args: &ClientArgs,
    http: &reqwest::Client,
    app: &AppConfig,
    timeout_s: u64,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = args.status(http).await?;
        for b in &app.spec.backends {
            let shown = match status.backends.get(&b.name) {
                Some(report) => BackendProgress {
                    status: status_word(report.status),
                    ready: report.running_replicas.min(b.config.num_replicas),
                    target: b.config.num_replicas,
                },
                None => BackendProgress {
                    status: "WAITING".to_owned(),
                    ready: 0,
                    target: b.config.num_replicas,
                },
            };
            progress.show(&b.name, &shown);
        }
        let failed: Vec<String> = app
            .spec
            .backends
            .iter()
            .filter_map(|b| {
                let report = status.backends.get(&b.name)?;
                (report.status == BackendStatus::DeployFailed)
                    .then(|| format!("backend `{}`: {}", b.name, report.message))
            })
            .collect();
        if status.status != "DEPLOYING" {
            if !failed.is_empty() {
                bail!("the deploy failed:\n  {}", failed.join("\n  "));
            }
            let healthy = app.spec.backends.iter().all(|b| {
                status
                    .backends
                    .get(&b.name)
                    .is_some_and(|r| r.status == BackendStatus::Healthy)
            });
            if healthy {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(timeout_s) {
            bail!("not done after {timeout_s} s (the deploy goes on; see `ferroserve status`)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A backend status as the status YAML writes it (`DEPLOY_FAILED`).
fn status_word(status: BackendStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status:?}"))
}

/// Prints the status as YAML, its status words in colour on a terminal.
pub(crate) async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let status = args.status(&client()?).await?;
    let yaml = serde_saphyr::to_string(&status)?;
    if terminal::colour_allowed(std::io::stdout().is_terminal()) {
        print!("{}", terminal::colour_yaml(&yaml));
    } else {
        print!("{yaml}");
    }
    Ok(())
}

/// Prints the deployed app as YAML.
pub(crate) async fn config(args: &ClientArgs) -> anyhow::Result<()> {
    let text = args.send(client()?.get(args.url("/api/app"))).await?;
    let app: serde_json::Value = serde_json::from_str(&text)?;
    print!("{}", serde_saphyr::to_string(&app)?);
    Ok(())
}

/// Asks the server to stop.
pub(crate) async fn shutdown(args: &ClientArgs) -> anyhow::Result<()> {
    args.send(client()?.post(args.url("/api/shutdown"))).await?;
    eprintln!("the server at {} is shutting down", args.address);
    Ok(())
}
