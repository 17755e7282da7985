//! `run` and `start`: the HTTP proxy, the control API, the app from a file, a model repository or the state directory, and the signals (SIGINT/SIGTERM stop, SIGHUP reloads the file).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use ferroserve::{
    AppConfig, ControlOptions, ControlServer, FileStore, Registry, Serve, StateStore,
};
use tokio::signal::unix::{Signal, SignalKind};

use crate::models::{AppSource, Deploy, ModelArgs};

/// Where the server listens and keeps its state.
#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// Host to listen on (overrides `http.host`).
    #[arg(long, env = "FERROSERVE_HOST")]
    host: Option<String>,
    /// Port to listen on (overrides `http.port`; 0 picks a free port).
    #[arg(long, env = "FERROSERVE_PORT")]
    port: Option<u16>,
    /// Host of the control API.
    #[arg(long, env = "FERROSERVE_CONTROL_HOST", default_value = "127.0.0.1")]
    control_host: String,
    /// Port of the control API (0 picks a free port).
    #[arg(long, env = "FERROSERVE_CONTROL_PORT", default_value_t = ferroserve::control::DEFAULT_CONTROL_PORT)]
    control_port: u16,
    /// The bearer token the control API asks for; required off loopback.
    #[arg(long, env = "FERROSERVE_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Save the deployed app here on every change, and serve it again at start.
    #[arg(long, env = "FERROSERVE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// One line per request on stdout: `off`, `text` or `json` (overrides `http.access_log`).
    #[arg(long, env = "FERROSERVE_ACCESS_LOG", value_name = "FORMAT")]
    access_log: Option<ferroserve::AccessLog>,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
}

/// Serves until SIGINT, SIGTERM or `ferroserve shutdown`. With `reload`, SIGHUP deploys
/// `config` (and the model repository) again; with `--poll-models`, the model repository
/// is rescanned and what changed deployed.
pub(crate) async fn serve(
    config: Option<PathBuf>,
    models: ModelArgs,
    args: ServerArgs,
    reload: bool,
) -> anyhow::Result<()> {
    // First of all: from here on SIGTERM, SIGINT and SIGHUP no longer kill the process
    // (a SIGTERM a moment after start still gets a graceful shutdown).
    let mut stops = Signals::new()?;
    let registry = Registry::new();
    let poll = models.poll_period();
    let mut source = AppSource::load(config, models.models.clone(), &registry, poll.is_some())?;
    if poll.is_some() && !source.has_repository() {
        anyhow::bail!(
            "--poll-models needs a model repository: give --models DIR, or `models: DIR` in the app file"
        );
    }
    let file_app = source.app()?;
    let mut http = file_app
        .as_ref()
        .map(|app| app.http.clone())
        .unwrap_or_default();
    if let Some(host) = args.host {
        http.host = host;
    }
    if let Some(port) = args.port {
        http.port = port;
    }
    if let Some(format) = args.access_log {
        http.access_log = format;
    }
    #[cfg(feature = "cluster")]
    if args.cluster.enabled() && args.state_dir.is_some() {
        anyhow::bail!("--cluster keeps the app in etcd: leave out --state-dir");
    }
    let store = args
        .state_dir
        .map(FileStore::open)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let saved = match &store {
        Some(store) => store.load().map_err(anyhow::Error::msg)?,
        None => None,
    };
    let serve = Arc::new(Serve::start(http).await?);
    serve.set_deploying(true);
    let control_options = ControlOptions {
        host: args.control_host,
        port: args.control_port,
        token: args.control_token,
    };
    let default_port = control_options.port == ferroserve::control::DEFAULT_CONTROL_PORT;
    let control = match ControlServer::start(&control_options, serve.clone(), registry.clone())
        .await
    {
        Ok(control) => Some(control),
        // `run` of a second app on one machine: the app serves, without a control API.
        Err(ferroserve::ServeError::CannotListen { reason, .. })
            if reload && default_port && reason.contains("already in use") =>
        {
            tracing::warn!(
                "no control API: {reason}; this app serves without one (give --control-port to have one)"
            );
            None
        }
        Err(e) => {
            serve.shutdown().await;
            return Err(e.into());
        }
    };
    // Scripts and tests read the addresses from these lines; "listening" comes once the app
    // is deployed (until then, its routes answer 503 with Retry-After).
    if let Some(control) = &control {
        println!("ferroserve control API on http://{}", control.local_addr());
    }
    if let Some(addr) = serve.local_addr() {
        println!("ferroserve proxy on http://{addr} (deploying)");
    }
    // A node of a cluster saves the file to etcd if the cluster has no app yet, and serves
    // its share of the cluster's app.
    #[cfg(feature = "cluster")]
    let (node, file_app) = match crate::cluster::join(
        &serve,
        &registry,
        &args.cluster,
        file_app.as_ref().map(|app| app.spec.clone()),
    )
    .await
    {
        Ok(Some(node)) => (Some(node), None),
        Ok(None) => (None, file_app),
        Err(e) => {
            control.iter().for_each(ControlServer::stop);
            serve.shutdown().await;
            return Err(e);
        }
    };
    let app = match (saved, file_app) {
        (Some(spec), file) => {
            let from = store.as_ref().map_or_else(String::new, |s| s.describe());
            if let Some(file) = file {
                tracing::warn!(
                    "serving the app saved in {from}, not {} (deploy the file to change it)",
                    file.file
                );
            } else {
                tracing::info!("serving the app saved in {from}");
            }
            Some(AppConfig {
                file: from,
                http: Default::default(),
                spec,
            })
        }
        (None, file) => file,
    };
    if let Some(app) = &app {
        // Models can take minutes to load: a stop meanwhile is heeded at once.
        let deployed = tokio::select! {
            deployed = serve.deploy(app, &registry) => deployed.map_err(anyhow::Error::from),
            _ = stops.terminate.recv() => Err(anyhow::anyhow!("stopped (SIGTERM) while deploying")),
            _ = stops.interrupt.recv() => Err(anyhow::anyhow!("stopped (SIGINT) while deploying")),
            () = shutdown_asked(control.as_ref()) => Err(anyhow::anyhow!("stopped (shutdown) while deploying")),
        };
        if let Err(e) = deployed {
            control.iter().for_each(ControlServer::stop);
            serve.shutdown().await;
            return Err(e);
        }
    }
    #[cfg(feature = "cluster")]
    if node.is_none() {
        serve.set_deploying(false);
    }
    #[cfg(not(feature = "cluster"))]
    serve.set_deploying(false);
    if let Some(store) = store {
        serve.persist_to(Arc::new(store));
    }
    if let Some(addr) = serve.local_addr() {
        println!("ferroserve listening on http://{addr}");
        let endpoints = app.as_ref().map_or(0, |a| a.spec.endpoints.len());
        let on = control.as_ref().map_or_else(
            || "none".to_owned(),
            |c| format!("http://{}", c.local_addr()),
        );
        let threads = match tokio::runtime::Handle::current().metrics().num_workers() {
            1 => "1 server thread".to_owned(),
            n => format!("{n} server threads"),
        };
        tracing::info!(
            "serving {endpoints} endpoints on http://{addr} (GET /-/routes lists them) with {threads}; control API: {on}"
        );
    }
    // The outcomes of the deploys of SIGHUP and rescans, by number, for `source`.
    let (outcomes, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let mut rescans = poll.map(|period| {
        let mut rescans = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        rescans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescans
    });
    loop {
        tokio::select! {
            _ = stops.terminate.recv() => break,
            _ = stops.interrupt.recv() => break,
            () = shutdown_asked(control.as_ref()) => break,
            _ = stops.hangup.recv(), if reload => {
                match source.reload(&registry) {
                    Ok(Some(deploy)) => {
                        tracing::info!("SIGHUP: deploying {} again", deploy.app.file);
                        spawn_deploy(&serve, &registry, deploy, &outcomes);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!("SIGHUP: the file is not applied, the app as it was serves: {e}"),
                }
            }
            _ = async { rescans.as_mut().expect("polling").tick().await }, if poll.is_some() => {
                if let Some(deploy) = source.rescan(&serve.app()) {
                    spawn_deploy(&serve, &registry, deploy, &outcomes);
                }
            }
            Some((id, outcome)) = finished.recv() => source.finished(id, outcome),
        }
    }
    tracing::info!("shutting down: finishing the requests in flight");
    #[cfg(feature = "cluster")]
    if let Some(node) = node {
        node.leave().await;
    }
    control.iter().for_each(ControlServer::stop);
    serve.shutdown().await;
    Ok(())
}

/// Runs `deploy` in a task of its own, and sends its outcome (by its number) to `outcomes`.
fn spawn_deploy(
    serve: &Arc<Serve>,
    registry: &Registry,
    deploy: Deploy,
    outcomes: &tokio::sync::mpsc::UnboundedSender<(u64, Result<(), String>)>,
) {
    let (serve, registry, outcomes) = (serve.clone(), registry.clone(), outcomes.clone());
    tokio::spawn(async move {
        let outcome = serve.deploy(&deploy.app, &registry).await;
        // Only a server shutting down no longer listens.
        let _ = outcomes.send((deploy.id, outcome.map_err(|e| e.to_string())));
    });
}

/// Ends when the control API is asked to stop the server; never without one.
async fn shutdown_asked(control: Option<&ControlServer>) {
    match control {
        Some(control) => control.shutdown_asked().await,
        None => std::future::pending().await,
    }
}

/// The signals the server acts on, listened for from its first moment.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let listen = |kind: SignalKind| {
            tokio::signal::unix::signal(kind).context("cannot listen for signals")
        };
        Ok(Self {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }
}
