//! The Python kind: one worker process per replica, spoken to over a Unix socket with the frame protocol of `python/ferroserve/_protocol.py`.
//!
//! By job: `frame` (the codec), `link` (the multiplexed connection), `process` (start,
//! handshake, supervision), `output` (the worker's stdout and stderr into its replica's
//! log), `wire` (the JSON metadata), `handle_calls` (calls Python code makes to other
//! endpoints), `runtime` (the Python package the binary carries).

mod frame;
pub(crate) mod handle_calls;
mod link;
mod output;
mod process;
mod runtime;
mod stream;
mod wire;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::backend::{
    BackendFactory, Death, DynBackend, Instance, Instantiate, Methods, ReplicaContext, ReplicaEnv,
    Slots,
};
use crate::config::{BackendConfig, PythonBackend};
use crate::error::BackendError;
use crate::request::Request;
use crate::response::{Chunks, Response};
use bytes::Bytes;
use frame::kind;
use link::{Link, write_frames};
use wire::{BatchReplyMeta, call_meta, error_of, response_of};

impl BackendFactory {
    /// A Python class or function, run in one worker process per replica.
    ///
    /// ```
    /// use ferroserve::{BackendFactory, PythonBackend};
    /// let factory = BackendFactory::python(PythonBackend::new("models:Classifier").working_dir("models/"));
    /// # let _ = factory;
    /// ```
    pub fn python(backend: PythonBackend) -> Self {
        Self::of_kind(PythonKind(backend))
    }
}

/// Makes Python replicas: starts a worker and connects it.
struct PythonKind(PythonBackend);

impl Instantiate for PythonKind {
    fn instantiate<'a>(
        &'a self,
        ctx: &'a ReplicaContext,
        config: &'a BackendConfig,
        env: &'a ReplicaEnv,
        slots: &'a Arc<Slots>,
    ) -> BoxFuture<'a, Result<Instance, String>> {
        Box::pin(async move {
            self.0.validate()?;
            let started = process::start(&self.0, ctx, config, env).await?;
            let pid = started.child.id();
            let (read, write) = started.stream.into_split();
            let (writer, frames) = mpsc::unbounded_channel();
            let link = Arc::new(Link::new(writer, slots.clone()));
            tokio::spawn(write_frames(frames, write));
            let death = Death {
                backend: ctx.backend.as_str().into(),
                replica: ctx.replica.as_str().into(),
            };
            tokio::spawn(process::supervise(
                read,
                started.child,
                (started.log, started.output),
                link.clone(),
                env.clone(),
                death,
            ));
            let worker = WorkerBackend {
                link,
                pid,
                methods: Methods::Only(started.ready.methods),
                batch_methods: Methods::Only(started.ready.batch_methods),
            };
            // A worker gets its user_config with its INIT.
            Ok(Instance {
                backend: Arc::new(worker),
                configured: true,
            })
        })
    }

    fn check(&self) -> Result<(), String> {
        self.0.validate()?;
        process::check_import(&self.0)
    }
}

/// One Python replica: its worker process and the connection to it.
struct WorkerBackend {
    link: Arc<Link>,
    /// The worker process's id.
    pid: Option<u32>,
    methods: Methods,
    batch_methods: Methods,
}

impl Drop for WorkerBackend {
    fn drop(&mut self) {
        // The reader task stops the process; requests still waiting get an error at once.
        self.link.stop.notify_one();
    }
}

impl DynBackend for WorkerBackend {
    fn call(&self, req: Request) -> BoxFuture<'_, Result<Response, BackendError>> {
        let sent = call_meta(&req).and_then(|(meta, body)| {
            let meta = serde_json::to_vec(&meta)?;
            self.link.send(kind::CALL, &meta, &body)
        });
        Box::pin(async move {
            let (id, reply) = sent?;
            // Dropped before the reply (the caller left or timed out): the worker is told to
            // cancel the call, and the call keeps its replica slot until the worker is done.
            let mut abandoned = self.link.abandon_on_drop(id);
            let answer = reply.await;
            abandoned.disarm();
            let (frame, chunks) = match answer {
                Ok(Ok(reply)) => (reply.frame, reply.chunks),
                Ok(Err(reason)) => return Err(BackendError::replica_died(reason)),
                Err(_) => return Err(BackendError::replica_died("the worker dropped the request")),
            };
            match (frame.kind, chunks) {
                (kind::REPLY, _) => response_of(serde_json::from_slice(&frame.meta)?, frame.body),
                (kind::STREAM_START, Some(chunks)) => {
                    // Made first: dropped on a bad head, it tells the worker to stop.
                    let chunks = stream::WorkerStream::new(self.link.clone(), id, chunks);
                    let head = response_of(serde_json::from_slice(&frame.meta)?, Bytes::new())?;
                    Ok(head.with_chunks(Chunks::new(chunks)))
                }
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

    fn check_health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        // A dead worker is seen at once by the reader, which fails the link. A live one runs
        // the instance's `check_health` (if it has one) on its event loop: a stuck loop
        // never answers, and the controller's timeout counts that as a failure.
        let dead = self.link.dead.get().cloned();
        Box::pin(async move {
            if let Some(reason) = dead {
                return Err(BackendError::replica_died(reason));
            }
            let frame = self.link.request(kind::HEALTH, b"{}", &[]).await?;
            match frame.kind {
                kind::REPLY => Ok(()),
                _ => Err(error_of(&frame)),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        // The reader sends SHUTDOWN, gives the worker 2 s to exit, then kills it.
        self.link.stop.notify_one();
        Box::pin(self.link.wait_exited())
    }

    fn pid(&self) -> Option<u32> {
        self.pid
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
