//! The worker process: its socket, interpreter and import path, its output (piped into its replica's log), the start and READY handshake, and the reader that supervises it until it stops or dies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};

use super::frame::{encode, kind, read_frame};
use super::handle_calls::start_handle_call;
use super::link::Link;
use super::output::Captured;
use super::runtime;
use super::wire::{InitErrorMeta, ReadyMeta};
use crate::backend::logs::ReplicaLog;
use crate::backend::{Death, ReplicaContext, ReplicaEnv};
use crate::config::{BackendConfig, PythonBackend};

static SOCKETS: AtomicU64 = AtomicU64::new(0);

/// A worker's socket file, removed once the worker has connected or failed to.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn socket_path(backend: &str) -> Result<PathBuf, String> {
    // One shared directory; each socket file is removed once its worker has connected.
    let dir = std::env::temp_dir().join("ferroserve-sockets");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name: String = backend
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let n = SOCKETS.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("{}-{name}-{n}.sock", std::process::id())))
}

/// The interpreter to run. A relative path (`venv/bin/python`) is taken from the server's
/// working directory, not from the backend's `working_dir` the worker starts in.
fn python_executable(spec: &PythonBackend) -> String {
    let python = spec
        .python_executable
        .clone()
        .or_else(|| {
            std::env::var("FERROSERVE_PYTHON")
                .ok()
                .filter(|p| !p.is_empty())
        })
        .unwrap_or_else(|| "python3".to_owned());
    if python.contains('/')
        && Path::new(&python).is_relative()
        && let Ok(cwd) = std::env::current_dir()
    {
        return cwd.join(&python).display().to_string();
    }
    python
}

/// The worker's import path: this binary's `ferroserve` package first, then the backend's
/// `working_dir`, then a `PYTHONPATH` from the backend's `env`, then the server's own.
fn python_path(runtime: &Path, spec: &PythonBackend) -> std::ffi::OsString {
    let mut paths = vec![runtime.to_path_buf()];
    paths.extend(spec.working_dir.clone());
    if let Some(configured) = spec.env.get("PYTHONPATH") {
        paths.extend(std::env::split_paths(configured));
    }
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Imports the backend's module and looks up its attribute in a short-lived interpreter
/// started as a worker would be (interpreter, import path, environment, directory): what
/// `ferroserve check` runs. Blocks for at most the start timeout.
pub(super) fn check_import(spec: &PythonBackend) -> Result<(), String> {
    if spec.pickled.is_some() {
        // Defined in a script: nothing to import by name; the worker unpickles it.
        return Ok(());
    }
    const PROBE: &str = "import importlib, sys\n\
module, _, attr = sys.argv[1].partition(':')\n\
getattr(importlib.import_module(module), attr)\n";
    let runtime = runtime::import_dir()?;
    let python = python_executable(spec);
    let mut command = std::process::Command::new(&python);
    command
        .args(["-c", PROBE, &spec.target])
        .envs(&spec.env)
        .env("PYTHONPATH", python_path(&runtime, spec))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| {
        format!("cannot run the Python interpreter `{python}`: {e} (set python_executable or $FERROSERVE_PYTHON)")
    })?;
    let deadline = std::time::Instant::now() + spec.start_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "importing `{}` took longer than start_timeout_s ({:?})",
                    spec.target, spec.start_timeout
                ));
            }
            Err(e) => return Err(format!("cannot wait for the interpreter: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    Err(format!("cannot import `{}`: {}", spec.target, last.trim()))
}

/// A worker that has started and said READY.
pub(super) struct Started {
    /// Its process.
    pub(super) child: Child,
    /// The connection it made.
    pub(super) stream: UnixStream,
    /// What it said it serves.
    pub(super) ready: ReadyMeta,
    /// Its replica's log, kept among the gone ones once dropped (when the worker is).
    pub(super) log: ReplicaLog,
    /// The readers of its stdout and stderr.
    pub(super) output: Captured,
}

/// The variable that caps the threads of OpenMP, OpenBLAS, MKL and PyTorch in a worker.
const OMP_NUM_THREADS: &str = "OMP_NUM_THREADS";

/// `OMP_NUM_THREADS` for a worker, unless the server's environment or the backend's `env`
/// sets it: the backend's `num_cpus` (rounded up), or else this machine's cores shared
/// among the backend's replicas (at most `max_replicas` when autoscaled), at least 1. As
/// Ray does for its actors: numerical libraries otherwise start a thread per core in every
/// replica, and two replicas of a scikit-learn model took twice as long to start as one
/// (2.1 s against 1.1 s on 2 cores), and fought over the cores when serving.
fn thread_limit(spec: &PythonBackend, config: &BackendConfig) -> Option<(&'static str, String)> {
    if spec.env.contains_key(OMP_NUM_THREADS) || std::env::var_os(OMP_NUM_THREADS).is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Some((
        OMP_NUM_THREADS,
        threads_per_replica(config, cores).to_string(),
    ))
}

/// The thread count of [`thread_limit`] on a machine of `cores` cores.
fn threads_per_replica(config: &BackendConfig, cores: usize) -> usize {
    if config.num_cpus > 0.0 {
        // Whole cores: a fraction of a CPU still runs one thread.
        return (config.num_cpus.ceil() as usize).max(1);
    }
    let replicas = config
        .autoscaling_config
        .as_ref()
        .map_or(config.num_replicas, |a| a.max_replicas);
    (cores / replicas.max(1)).max(1)
}

/// How long a dead worker's last lines may take to reach its log.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// Starts the worker process, its output piped into its replica's log in `env`, hands it
/// the backend, and waits until it is ready.
pub(super) async fn start(
    spec: &PythonBackend,
    ctx: &ReplicaContext,
    config: &BackendConfig,
    env: &ReplicaEnv,
) -> Result<Started, String> {
    {
        let runtime = runtime::import_dir()?;
        let socket = SocketFile(socket_path(&ctx.backend)?);
        let _ = std::fs::remove_file(&socket.0);
        let listener = UnixListener::bind(&socket.0)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.0.display()))?;
        let python = python_executable(spec);
        let mut command = Command::new(&python);
        command
            .arg("-m")
            .arg("ferroserve._worker")
            .arg(&socket.0)
            .envs(thread_limit(spec, config))
            .envs(&spec.env)
            .env("PYTHONPATH", python_path(&runtime, spec))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group: a ctrl-c at the terminal stops the server, which then
            // stops its workers, rather than every worker printing a KeyboardInterrupt.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|e| {
            format!("cannot run the Python interpreter `{python}`: {e} (set python_executable or $FERROSERVE_PYTHON)")
        })?;
        let log = env.logs.open(&ctx.backend, &ctx.replica);
        let output = Captured::start(&mut child, &log.writer());
        // Validated to a day at most; saturate rather than overflow all the same.
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(spec.start_timeout).unwrap_or(now);
        let started = handshake(&listener, &mut child, ctx, spec, config, deadline).await;
        drop(socket);
        match started {
            Ok((stream, ready)) => Ok(Started {
                child,
                stream,
                ready,
                log,
                output,
            }),
            Err(message) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                // Its output (a traceback) is echoed before the error that says to see it.
                output.drained(LAST_WORDS).await;
                env.logs.flush_echo().await;
                Err(message)
            }
        }
    }
}

/// Accepts the worker's connection, sends INIT, and waits for READY — or for the
/// worker to fail, exit or time out.
async fn handshake(
    listener: &UnixListener,
    child: &mut Child,
    ctx: &ReplicaContext,
    spec: &PythonBackend,
    config: &BackendConfig,
    deadline: tokio::time::Instant,
) -> Result<(UnixStream, ReadyMeta), String> {
    let timed_out = || {
        format!(
            "the worker did not start within {:?} (start_timeout_s); it was killed",
            spec.start_timeout
        )
    };
    let exited = |status: std::io::Result<std::process::ExitStatus>| {
        format!(
            "the worker exited before it was ready ({}); see its output above",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        )
    };
    let mut stream = tokio::select! {
        accepted = listener.accept() => accepted.map_err(|e| format!("the worker did not connect: {e}"))?.0,
        status = child.wait() => return Err(exited(status)),
        () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
    };
    let init = serde_json::json!({
        "target": spec.target,
        "pickled": spec.pickled,
        "init_args": config.init_args,
        "user_config": config.user_config,
        "backend": ctx.backend,
        "replica": ctx.replica,
    });
    let meta = serde_json::to_vec(&init).map_err(|e| e.to_string())?;
    let frame = encode(0, kind::INIT, &meta, &[]).map_err(|e| e.to_string())?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| format!("cannot talk to the worker: {e}"))?;
    let reply = tokio::select! {
        frame = read_frame(&mut stream) => frame.map_err(|e| format!("cannot read from the worker: {e}"))?,
        status = child.wait() => return Err(exited(status)),
        () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
    };
    match reply {
        Some(frame) if frame.kind == kind::READY => {
            let ready: ReadyMeta = serde_json::from_slice(&frame.meta)
                .map_err(|e| format!("a bad READY from the worker: {e}"))?;
            Ok((stream, ready))
        }
        Some(frame) if frame.kind == kind::INIT_ERROR => {
            let error: InitErrorMeta = serde_json::from_slice(&frame.meta)
                .map_err(|e| format!("a bad INIT_ERROR from the worker: {e}"))?;
            Err(error.message)
        }
        Some(frame) => Err(format!(
            "the worker answered INIT with frame kind {}",
            frame.kind
        )),
        None => Err(exited(child.wait().await)),
    }
}

/// How the connection to a worker ended.
enum Ended {
    /// The replica was stopped on purpose.
    Stopped,
    /// The worker closed it: it exited or crashed.
    Closed,
    /// It broke the protocol (a frame over the limits) or the socket failed.
    Broken(String),
}

/// Reads the worker's frames until it exits or the replica is stopped; then stops the
/// process, fails what still waits, and reports an unexpected death to the controller.
/// The replica's log is kept among the gone ones when this ends.
pub(super) async fn supervise(
    read: OwnedReadHalf,
    mut child: Child,
    (log, output): (ReplicaLog, Captured),
    link: Arc<Link>,
    env: ReplicaEnv,
    death: Death,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let ended = loop {
        tokio::select! {
            frame = read_frame(&mut reader) => match frame {
                Ok(Some(frame)) => match frame.kind {
                    kind::REPLY
                    | kind::ERROR
                    | kind::BATCH_REPLY
                    | kind::STREAM_START
                    | kind::STREAM_CHUNK
                    | kind::STREAM_END => link.reply(frame),
                    kind::HANDLE_ACK => {
                        let count = frame.body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                        link.handle_stream_read(frame.id, Some(count.unwrap_or(0)));
                    }
                    kind::HANDLE_CANCEL => link.handle_stream_read(frame.id, None),
                    kind::HANDLE_CALL => start_handle_call(env.caller.clone(), &link, frame),
                    other => tracing::warn!(replica = &*death.replica, "unexpected frame kind {other} from a worker"),
                },
                Ok(None) => break Ended::Closed,
                Err(e) => break Ended::Broken(e.to_string()),
            },
            () = link.stop.notified() => break Ended::Stopped,
        }
    };
    if let Ended::Stopped = ended {
        if let Ok(frame) = encode(0, kind::SHUTDOWN, &[], &[]) {
            let _ = link.writer.send(frame);
        }
        link.die("the replica was stopped".to_owned());
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        link.exited();
        return;
    }
    let _ = child.start_kill();
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "did not exit".to_owned(),
    };
    let reason = match ended {
        Ended::Broken(why) => format!("its worker was killed: {why} ({status})"),
        Ended::Closed | Ended::Stopped => format!("its worker process died ({status})"),
    };
    // Its callers learn at once; its last words (a traceback) are kept, and echoed
    // before the error that says it died.
    link.die(reason.clone());
    output.drained(LAST_WORDS).await;
    env.logs.flush_echo().await;
    drop(log);
    tracing::error!(
        backend = &*death.backend,
        replica = &*death.replica,
        "{reason}; restarting it"
    );
    link.exited();
    let _ = env.deaths.send(death);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoscalingConfig;

    #[test]
    fn replicas_share_the_cores_unless_num_cpus_says() {
        let config = |replicas| BackendConfig::default().num_replicas(replicas);
        assert_eq!(threads_per_replica(&config(1), 8), 8);
        assert_eq!(threads_per_replica(&config(2), 8), 4);
        assert_eq!(threads_per_replica(&config(3), 8), 2);
        assert_eq!(threads_per_replica(&config(16), 8), 1);
        assert_eq!(threads_per_replica(&config(0), 2), 2);
        let cpus = |n| BackendConfig {
            num_cpus: n,
            ..config(4)
        };
        assert_eq!(threads_per_replica(&cpus(2.0), 8), 2);
        assert_eq!(threads_per_replica(&cpus(0.5), 8), 1);
        assert_eq!(threads_per_replica(&cpus(1.5), 8), 2);
        let autoscaled = BackendConfig {
            autoscaling_config: Some(AutoscalingConfig {
                max_replicas: 4,
                ..AutoscalingConfig::default()
            }),
            ..config(1)
        };
        assert_eq!(threads_per_replica(&autoscaled, 8), 2);
    }
}
