//! Python replicas: one worker process per replica, spoken to over a Unix socket with the frame protocol of `python/ferroserve/_protocol.py`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, oneshot};

use super::python_runtime;
use crate::backend::{BoxFuture, DynBackend, Methods, ReplicaContext};
use crate::config::{BackendConfig, PythonBackend};
use crate::controller::SnapshotCell;
use crate::error::{BackendError, ServeError};
use crate::request::{HttpParts, Origin, Payload, Request};
use crate::response::{Response, ResponseBody};
use crate::router;

/// Frame kinds; the same numbers as `python/ferroserve/_protocol.py`.
mod kind {
    pub(super) const INIT: u8 = 1;
    pub(super) const READY: u8 = 2;
    pub(super) const INIT_ERROR: u8 = 3;
    pub(super) const CALL: u8 = 4;
    pub(super) const BATCH: u8 = 5;
    pub(super) const RECONFIGURE: u8 = 6;
    pub(super) const REPLY: u8 = 7;
    pub(super) const BATCH_REPLY: u8 = 8;
    pub(super) const ERROR: u8 = 9;
    pub(super) const HANDLE_CALL: u8 = 10;
    pub(super) const HANDLE_REPLY: u8 = 11;
    pub(super) const SHUTDOWN: u8 = 12;
}

const HEADER_LEN: usize = 20;

/// The media type of a pickled Python object answering a Python caller.
const PICKLE: &str = "application/x-python-pickle";

/// One frame: fixed header (meta length, body length, id, kind), JSON meta, raw body.
struct Frame {
    id: u64,
    kind: u8,
    meta: Vec<u8>,
    body: Bytes,
}

fn encode(id: u64, kind: u8, meta: &[u8], body: &[u8]) -> Result<Vec<u8>, BackendError> {
    let too_big = |_| BackendError::msg("a request larger than 4 GiB cannot go to a Python worker");
    let meta_len = u32::try_from(meta.len()).map_err(too_big)?;
    let body_len = u32::try_from(body.len()).map_err(too_big)?;
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + body.len());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    Ok(out)
}

async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (meta_len, body_len) = (word(0) as usize, word(4) as usize);
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[8..16]);
    let mut meta = vec![0u8; meta_len];
    reader.read_exact(&mut meta).await?;
    let mut body = vec![0u8; body_len];
    reader.read_exact(&mut body).await?;
    Ok(Some(Frame {
        id: u64::from_le_bytes(id),
        kind: header[16],
        meta,
        body: Bytes::from(body),
    }))
}

/// The connection to one worker: a writer task fed by a channel, and the requests waiting
/// for their replies.
struct Link {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Frame, String>>>>,
    next_id: AtomicU64,
    /// Why the worker is gone, once it is.
    dead: OnceLock<String>,
    stop: Notify,
}

impl Link {
    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Frame, String>>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a request frame and returns where its reply will arrive.
    fn send(
        &self,
        kind: u8,
        meta: &[u8],
        body: &[u8],
    ) -> Result<oneshot::Receiver<Result<Frame, String>>, BackendError> {
        if let Some(reason) = self.dead.get() {
            return Err(BackendError::replica_died(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id, kind, meta, body)?;
        let (reply, receiver) = oneshot::channel();
        self.pending().insert(id, reply);
        // The worker may have died between the check and the insert; `die` drains what it
        // sees, so look again.
        if let Some(reason) = self.dead.get() {
            self.pending().remove(&id);
            return Err(BackendError::replica_died(reason));
        }
        if self.writer.send(frame).is_err() {
            self.pending().remove(&id);
            return Err(BackendError::replica_died(
                "the connection to the worker is closed",
            ));
        }
        Ok(receiver)
    }

    /// Sends a request and waits for its reply frame.
    async fn request(&self, kind: u8, meta: &[u8], body: &[u8]) -> Result<Frame, BackendError> {
        let receiver = self.send(kind, meta, body)?;
        match receiver.await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(reason)) => Err(BackendError::replica_died(reason)),
            Err(_) => Err(BackendError::replica_died("the worker dropped the request")),
        }
    }

    fn reply(&self, frame: Frame) {
        if let Some(waiting) = self.pending().remove(&frame.id) {
            let _ = waiting.send(Ok(frame));
        }
    }

    /// Fails every waiting request at once with `reason`.
    fn die(&self, reason: String) {
        let _ = self.dead.set(reason.clone());
        let waiting: Vec<_> = self.pending().drain().collect();
        for (_, sender) in waiting {
            let _ = sender.send(Err(reason.clone()));
        }
    }
}

/// Where a replica tells the controller it died.
#[derive(Clone)]
pub(crate) struct ReplicaEnv {
    pub(crate) cell: Weak<SnapshotCell>,
    pub(crate) deaths: mpsc::UnboundedSender<Death>,
}

impl ReplicaEnv {
    /// An environment whose deaths nobody hears of (tests, benchmarks).
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn detached() -> Self {
        Self {
            cell: Weak::new(),
            deaths: mpsc::unbounded_channel().0,
        }
    }
}

/// A replica whose worker died.
pub(crate) struct Death {
    pub(crate) backend: Arc<str>,
    pub(crate) replica: Arc<str>,
}

/// One Python replica: its worker process and the connection to it.
pub(crate) struct WorkerBackend {
    link: Arc<Link>,
    methods: Methods,
    batch_methods: Methods,
}

impl Drop for WorkerBackend {
    fn drop(&mut self) {
        // The reader task stops the process; requests still waiting get an error at once.
        self.link.stop.notify_one();
    }
}

#[derive(Deserialize)]
struct ReadyMeta {
    methods: Vec<String>,
    batch_methods: Vec<String>,
}

#[derive(Deserialize)]
struct InitErrorMeta {
    message: String,
}

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

impl WorkerBackend {
    /// Starts the worker process, hands it the backend, and waits until it is ready.
    pub(crate) async fn start(
        spec: &PythonBackend,
        ctx: &ReplicaContext,
        config: &BackendConfig,
        env: &ReplicaEnv,
    ) -> Result<Arc<dyn DynBackend>, String> {
        let runtime = python_runtime::import_dir()?;
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
            .envs(&spec.env)
            .env("PYTHONPATH", python_path(&runtime, spec))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(std::process::Stdio::null())
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
        let deadline = tokio::time::Instant::now() + spec.start_timeout;
        let started = Self::handshake(&listener, &mut child, ctx, spec, config, deadline).await;
        drop(socket);
        let (stream, ready) = match started {
            Ok(started) => started,
            Err(message) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(message);
            }
        };
        let (read, write) = stream.into_split();
        let (writer, frames) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            writer,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: OnceLock::new(),
            stop: Notify::new(),
        });
        tokio::spawn(write_frames(frames, write));
        let death = Death {
            backend: ctx.backend.as_str().into(),
            replica: ctx.replica.as_str().into(),
        };
        tokio::spawn(read_frames(read, child, link.clone(), env.clone(), death));
        Ok(Arc::new(Self {
            link,
            methods: Methods::Only(ready.methods),
            batch_methods: Methods::Only(ready.batch_methods),
        }))
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
}

async fn write_frames(mut frames: mpsc::UnboundedReceiver<Vec<u8>>, write: OwnedWriteHalf) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        // Everything queued meanwhile goes out in the same write.
        while let Ok(frame) = frames.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

/// Reads the worker's frames until it exits or the replica is stopped; then stops the
/// process, fails what still waits, and reports an unexpected death to the controller.
async fn read_frames(
    read: OwnedReadHalf,
    mut child: Child,
    link: Arc<Link>,
    env: ReplicaEnv,
    death: Death,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let stopped = loop {
        tokio::select! {
            frame = read_frame(&mut reader) => match frame {
                Ok(Some(frame)) => match frame.kind {
                    kind::REPLY | kind::ERROR | kind::BATCH_REPLY => link.reply(frame),
                    kind::HANDLE_CALL => {
                        tokio::spawn(serve_handle_call(env.cell.clone(), link.clone(), frame));
                    }
                    other => tracing::warn!(replica = &*death.replica, "unexpected frame kind {other} from a worker"),
                },
                Ok(None) | Err(_) => break false,
            },
            () = link.stop.notified() => break true,
        }
    };
    if stopped {
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
        return;
    }
    let _ = child.start_kill();
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "did not exit".to_owned(),
    };
    let reason = format!("its worker process died ({status})");
    tracing::error!(
        backend = &*death.backend,
        replica = &*death.replica,
        "{reason}; restarting it"
    );
    link.die(reason);
    let _ = env.deaths.send(death);
}

#[derive(Serialize)]
struct HttpMeta<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> HttpMeta<'a> {
    fn of(parts: &'a HttpParts) -> Self {
        Self {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct CallMeta<'a> {
    method: &'a str,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<HttpMeta<'a>>,
    arg: &'a str,
    reply: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_len: Option<usize>,
}

/// The meta and body a request is sent to a worker with.
fn call_meta(req: &Request) -> Result<(CallMeta<'_>, Cow<'_, [u8]>), BackendError> {
    let (arg, body): (&str, Cow<'_, [u8]>) = match req.payload() {
        Payload::Bytes(b) => ("bytes", Cow::Borrowed(b)),
        Payload::Text(b) => ("text", Cow::Borrowed(b)),
        Payload::Pickled(b) => ("pickle", Cow::Borrowed(b)),
        Payload::Json(v) => ("json", Cow::Owned(serde_json::to_vec(v)?)),
        Payload::Value(_) => {
            return Err(BackendError::msg(
                "a Rust value (Arg::value) cannot be sent to a Python backend; pass text, bytes or JSON",
            )
            .with_status(StatusCode::BAD_REQUEST));
        }
    };
    let meta = CallMeta {
        method: req.method_name(),
        origin: match req.origin() {
            Origin::Http => "http",
            Origin::Handle => "handle",
        },
        http: req.http().map(HttpMeta::of),
        arg,
        reply: if req.python_caller { "pickle" } else { "http" },
        body_len: None,
    };
    Ok((meta, body))
}

/// Headers as the worker sends them: a map or a list of pairs.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadersMeta {
    Map(HashMap<String, String>),
    List(Vec<(String, String)>),
}

#[derive(Deserialize, Default)]
struct ReplyMeta {
    status: Option<u16>,
    media_type: Option<String>,
    headers: Option<HeadersMeta>,
    kind: Option<String>,
    body_len: Option<usize>,
}

#[derive(Deserialize)]
struct ErrorMeta {
    error_type: String,
    message: String,
}

#[derive(Deserialize)]
struct BatchReplyMeta {
    items: Vec<ReplyMeta>,
}

fn response_of(meta: ReplyMeta, body: Bytes) -> Result<Response, BackendError> {
    let status = StatusCode::from_u16(meta.status.unwrap_or(200))
        .map_err(|_| BackendError::msg(format!("invalid status code {:?}", meta.status)))?;
    let mut response = Response::bytes(body).with_status(status);
    response.headers_mut().remove(CONTENT_TYPE);
    let media_type = if meta.kind.as_deref() == Some("pickle") {
        Some(PICKLE.to_owned())
    } else {
        meta.media_type
    };
    if let Some(media_type) = media_type {
        let value = HeaderValue::from_str(&media_type)
            .map_err(|_| BackendError::msg(format!("invalid media type `{media_type}`")))?;
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    let pairs: Vec<(String, String)> = match meta.headers {
        None => Vec::new(),
        Some(HeadersMeta::Map(map)) => map.into_iter().collect(),
        Some(HeadersMeta::List(list)) => list,
    };
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BackendError::msg(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| BackendError::msg(format!("invalid value for header `{name}`")))?;
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

fn error_of(frame: &Frame) -> BackendError {
    match serde_json::from_slice::<ErrorMeta>(&frame.meta) {
        Ok(error) => BackendError::msg(format!("{}: {}", error.error_type, error.message)),
        Err(_) => BackendError::msg("the worker reported an error it could not describe"),
    }
}

impl DynBackend for WorkerBackend {
    fn call(&self, req: Request) -> BoxFuture<'_, Result<Response, BackendError>> {
        let sent = call_meta(&req).and_then(|(meta, body)| {
            let meta = serde_json::to_vec(&meta)?;
            self.link.send(kind::CALL, &meta, &body)
        });
        Box::pin(async move {
            let frame = match sent?.await {
                Ok(Ok(frame)) => frame,
                Ok(Err(reason)) => return Err(BackendError::replica_died(reason)),
                Err(_) => return Err(BackendError::replica_died("the worker dropped the request")),
            };
            match frame.kind {
                kind::REPLY => response_of(serde_json::from_slice(&frame.meta)?, frame.body),
                _ => Err(error_of(&frame)),
            }
        })
    }

    fn reconfigure<'a>(
        &'a self,
        user_config: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let meta = serde_json::to_vec(&serde_json::json!({ "user_config": user_config }))?;
            let frame = self.link.request(kind::RECONFIGURE, &meta, &[]).await?;
            match frame.kind {
                kind::REPLY => Ok(()),
                _ => Err(error_of(&frame)),
            }
        })
    }

    fn methods(&self) -> Methods {
        self.methods.clone()
    }

    fn batch_methods(&self) -> Methods {
        self.batch_methods.clone()
    }

    fn call_batch(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Result<Vec<Response>, BackendError>> {
        Box::pin(async move {
            let method = requests
                .first()
                .map_or("__call__", Request::method_name)
                .to_owned();
            let mut items = Vec::with_capacity(requests.len());
            let mut body = Vec::new();
            for req in &requests {
                let (mut meta, part) = call_meta(req)?;
                meta.body_len = Some(part.len());
                body.extend_from_slice(&part);
                items.push(meta);
            }
            let meta =
                serde_json::to_vec(&serde_json::json!({ "method": method, "items": items }))?;
            let frame = self.link.request(kind::BATCH, &meta, &body).await?;
            if frame.kind != kind::BATCH_REPLY {
                return Err(error_of(&frame));
            }
            let reply: BatchReplyMeta = serde_json::from_slice(&frame.meta)?;
            let mut offset = 0;
            let mut responses = Vec::with_capacity(reply.items.len());
            for item in reply.items {
                let len = item.body_len.unwrap_or(0);
                let end = offset + len;
                if end > frame.body.len() {
                    return Err(BackendError::msg(
                        "the worker's batch reply is shorter than it says",
                    ));
                }
                let part = frame.body.slice(offset..end);
                offset = end;
                responses.push(response_of(item, part)?);
            }
            Ok(responses)
        })
    }
}

#[derive(Deserialize)]
struct HandleCallMeta {
    endpoint: String,
    method: String,
    arg: String,
    http: Option<HandleHttpMeta>,
    shard_key: Option<String>,
}

#[derive(Deserialize)]
struct HandleHttpMeta {
    method: Option<String>,
    headers: Option<Vec<(String, String)>>,
    query: Option<String>,
}

/// Runs a handle call a worker made, through the same router as HTTP, and sends the answer
/// back.
async fn serve_handle_call(cell: Weak<SnapshotCell>, link: Arc<Link>, frame: Frame) {
    let id = frame.id;
    let answer = handle_call(cell, frame).await;
    let (meta, body) = match answer {
        Ok(response) => {
            let (status, headers, body) = response.into_parts();
            let media_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match body {
                ResponseBody::Bytes(bytes) => {
                    let kind = if media_type == PICKLE {
                        "pickle"
                    } else {
                        "http"
                    };
                    let meta = serde_json::json!({"status": status.as_u16(), "media_type": media_type, "kind": kind});
                    (meta, bytes)
                }
                ResponseBody::Value(_) => (
                    serde_json::json!({"error": "the endpoint answered with a Rust value, which cannot go to Python", "status": 500}),
                    Bytes::new(),
                ),
            }
        }
        Err(e) => (
            serde_json::json!({"error": e.to_string(), "status": e.status().as_u16()}),
            Bytes::new(),
        ),
    };
    let Ok(meta) = serde_json::to_vec(&meta) else {
        return;
    };
    if let Ok(frame) = encode(id, kind::HANDLE_REPLY, &meta, &body) {
        let _ = link.writer.send(frame);
    }
}

async fn handle_call(cell: Weak<SnapshotCell>, frame: Frame) -> Result<Response, ServeError> {
    let cell = cell.upgrade().ok_or(ServeError::ShuttingDown)?;
    let meta: HandleCallMeta = serde_json::from_slice(&frame.meta)
        .map_err(|e| ServeError::BadRequest(format!("a bad handle call from a worker: {e}")))?;
    let payload = match meta.arg.as_str() {
        "text" => Payload::Text(frame.body),
        "pickle" => Payload::Pickled(frame.body),
        "json" => Payload::Json(
            serde_json::from_slice(&frame.body)
                .map_err(|e| ServeError::BadRequest(format!("bad JSON argument: {e}")))?,
        ),
        _ => Payload::Bytes(frame.body),
    };
    let mut req = Request::from_payload(payload).with_method_name(meta.method);
    req.python_caller = true;
    if let Some(key) = meta.shard_key {
        req = req.with_shard_key(key);
    }
    let snapshot = cell.load_full();
    let endpoint = snapshot
        .endpoints
        .get(&meta.endpoint)
        .ok_or_else(|| ServeError::EndpointNotFound(meta.endpoint.clone()))?;
    if let Some(http) = meta.http {
        let mut headers = HeaderMap::new();
        for (name, value) in http.headers.unwrap_or_default() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(name, value);
            }
        }
        let path = endpoint.config.route.as_deref().unwrap_or("/");
        let uri = match http.query.filter(|q| !q.is_empty()) {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        req = req.with_http(HttpParts {
            method: http
                .method
                .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(http::Method::GET),
            uri: uri.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
            headers,
        });
    }
    router::call(&cell, endpoint, req).await
}
