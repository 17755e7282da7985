//! Answering inference requests: an Open Inference Protocol body (JSON, or Triton's binary extension) or, from an in-process handle, a `Vec<Tensor>`; one run per request, or, for a batchable model, one run per batch of requests whose inputs agree in every dimension after the first.
//!
//! Reading, running and answering all happen on one blocking thread per call or batch, so
//! a large body never holds up the server's I/O threads. A batch that fails runs again one
//! request at a time, so one bad request gets its own error and the others their answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::{METADATA_METHOD, Model};
use crate::backend::{Backend, Methods};
use crate::error::BackendError;
use crate::request::{DEFAULT_METHOD, Request};
use crate::response::Response;
use crate::tensor::codec::{self, HEADER_LENGTH, InferRequest};
use crate::tensor::{Datatype, Tensor, batch};

/// A request read: its inputs, and how it wants its answer.
struct Parsed {
    inputs: Vec<Tensor>,
    reply: Reply,
}

/// How a request is answered.
enum Reply {
    /// An Open Inference Protocol body, as the request asked for it.
    Body(InferRequest),
    /// The output tensors as a Rust value (`Vec<Tensor>`), to an in-process caller.
    Tensors,
}

/// Requests that can be stacked: their places among the requests, replies and inputs.
#[derive(Default)]
struct Group {
    places: Vec<usize>,
    replies: Vec<Reply>,
    inputs: Vec<Vec<Tensor>>,
}

/// What requests must share to be stacked: each input's type and inner dimensions.
type Signature = Vec<(Datatype, Vec<i64>)>;

impl Model {
    /// An error when the request names a version (`/v2/models/NAME/versions/V/...`) other
    /// than the one this replica serves.
    fn check_version(&self, req: &Request) -> Result<(), String> {
        // `/v2/models/NAME/versions/V/...`: the version is the fifth segment, by position
        // (a model may be named `versions`).
        let path = req.path().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let asked = match segments.as_slice() {
            ["", "v2", "models", _, "versions", version, ..] => Some(*version),
            _ => None,
        };
        match asked {
            Some(version) if version != self.version => Err(format!(
                "model `{}` has no version `{version}`: it serves version {}",
                self.name, self.version
            )),
            _ => Ok(()),
        }
    }

    /// Reads one request, or says what is wrong with it (a 400).
    fn parse(&self, req: Request) -> Result<Parsed, String> {
        self.check_version(&req)?;
        let req = match req.take_value::<Vec<Tensor>>() {
            Ok(given) => {
                let inputs = codec::order_inputs(given, self.inputs())?;
                self.engine.check(&inputs)?;
                return Ok(Parsed {
                    inputs,
                    reply: Reply::Tensors,
                });
            }
            Err(req) => req,
        };
        let body = req.body().map_err(|e| e.to_string())?;
        let header_len =
            match req.header(HEADER_LENGTH) {
                None => None,
                Some(n) => Some(n.trim().parse::<usize>().map_err(|_| {
                    format!("Inference-Header-Content-Length `{n}` is not a length")
                })?),
            };
        let mut request = codec::parse_request(&body, header_len, self.inputs())?;
        if let Some((unknown, _)) = request
            .outputs
            .iter()
            .flatten()
            .find(|(name, _)| !self.outputs().iter().any(|o| o.name == *name))
        {
            let names: Vec<&str> = self.outputs().iter().map(|o| o.name.as_str()).collect();
            return Err(format!(
                "output `{unknown}`: the model has no such output (its outputs: {})",
                names.join(", ")
            ));
        }
        let inputs = std::mem::take(&mut request.inputs);
        self.engine.check(&inputs)?;
        Ok(Parsed {
            inputs,
            reply: Reply::Body(request),
        })
    }

    /// The answer to a request, given its run's outputs.
    fn answer(&self, reply: Reply, outputs: Vec<Tensor>) -> Response {
        let request = match reply {
            Reply::Tensors => return Response::value(outputs),
            Reply::Body(request) => request,
        };
        let outputs = request.select(outputs);
        let (body, header_len) =
            match codec::encode_answer(&self.name, &self.version, &request, &outputs) {
                Ok(encoded) => encoded,
                Err(why) => return internal(&format!("the answer could not be written: {why}")),
            };
        match header_len {
            None => {
                Response::bytes(body).with_media_type(HeaderValue::from_static("application/json"))
            }
            Some(n) => Response::bytes(body).with_header(
                http::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(n),
            ),
        }
    }

    /// Answers `requests` (blocking): each read, stacked with the others of its signature
    /// when the model takes batches, run, and answered — exactly one answer each, in order.
    fn serve(&self, requests: Vec<Request>, wanted: &dyn Fn() -> bool) -> Vec<Response> {
        if !wanted() {
            // The caller left while this waited for a thread: nobody reads the answers.
            return requests
                .iter()
                .map(|_| internal("the caller has gone"))
                .collect();
        }
        let mut answers: Vec<Option<Response>> = requests.iter().map(|_| None).collect();
        let mut groups: Vec<Group> = Vec::new();
        let mut by_signature: HashMap<Signature, usize> = HashMap::new();
        for (at, req) in requests.into_iter().enumerate() {
            let Parsed { inputs, reply } = match self.parse(req) {
                Ok(parsed) => parsed,
                Err(why) => {
                    answers[at] = Some(bad_request(why));
                    continue;
                }
            };
            let signature = batch::signature(&inputs)
                .filter(|_| self.batch.is_some())
                .map(|s| s.into_iter().map(|(t, d)| (t, d.to_vec())).collect());
            let group = match signature {
                Some(signature) => *by_signature.entry(signature).or_insert_with(|| {
                    groups.push(Default::default());
                    groups.len() - 1
                }),
                None => {
                    groups.push(Default::default());
                    groups.len() - 1
                }
            };
            groups[group].places.push(at);
            groups[group].replies.push(reply);
            groups[group].inputs.push(inputs);
        }
        for Group {
            places,
            replies,
            inputs,
        } in groups
        {
            for (at, answer) in places
                .into_iter()
                .zip(self.run_group(replies, inputs, wanted))
            {
                answers[at] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| internal("a request of the batch got no answer")))
            .collect()
    }

    /// Runs one group of requests that can be stacked: as one run, or, when there is one
    /// request or the stacked run fails, one run each.
    fn run_group(
        &self,
        replies: Vec<Reply>,
        inputs: Vec<Vec<Tensor>>,
        wanted: &dyn Fn() -> bool,
    ) -> Vec<Response> {
        if inputs.len() > 1 {
            let stacked = batch::join(&inputs)
                .and_then(|(joined, rows)| batch::split(self.engine.run(joined, wanted)?, &rows));
            match stacked {
                Ok(outputs) => {
                    return replies
                        .into_iter()
                        .zip(outputs)
                        .map(|(reply, outputs)| self.answer(reply, outputs))
                        .collect();
                }
                Err(why) => tracing::debug!(
                    "model {}: a batch of {} failed ({why}); running its requests one by one",
                    self.name,
                    inputs.len()
                ),
            }
        }
        replies
            .into_iter()
            .zip(inputs)
            .map(|(reply, inputs)| match self.engine.run(inputs, wanted) {
                Ok(outputs) => self.answer(reply, outputs),
                Err(why) => failed_run(&why),
            })
            .collect()
    }
}

/// A 400 with `{"error": why}`.
fn bad_request(why: String) -> Response {
    error_answer(StatusCode::BAD_REQUEST, why)
}

/// A 500 with `{"error": why}`.
fn internal(why: &str) -> Response {
    error_answer(StatusCode::INTERNAL_SERVER_ERROR, why.to_owned())
}

fn error_answer(status: StatusCode, why: String) -> Response {
    match Response::json(&json!({ "error": why })) {
        Ok(response) => response.with_status(status),
        Err(_) => Response::text(why).with_status(status),
    }
}

/// A failed run: the model refused what it was given.
fn failed_run(why: &str) -> Response {
    bad_request(format!("the model could not run on these inputs: {why}"))
}

/// Calls that recently took less than this (read, run and answered) run on the calling
/// thread: handing a 6 µs MLP run to a blocking thread cost more than the run, and at 64
/// connections most of the server's CPU went to switching threads.
const INLINE_BELOW: Duration = Duration::from_micros(200);

/// Bodies larger than this always go to a blocking thread, however quick the model.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// A replica's model as a backend; the model is shared with the blocking threads it runs
/// on, and its pace decides where a call runs.
pub(super) struct Shared {
    model: Arc<Model>,
    /// A moving average of how long a call took, in nanoseconds (`u64::MAX` until the
    /// first call has been timed, so a model's first call never blocks an I/O thread).
    recent_nanos: AtomicU64,
}

impl Shared {
    /// The backend of `model`.
    pub(super) fn new(model: Model) -> Self {
        Self {
            model: Arc::new(model),
            recent_nanos: AtomicU64::new(u64::MAX),
        }
    }

    /// Serves `requests`: on this thread when the model is quick and the bodies small,
    /// else on a blocking thread.
    async fn serve(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        let quick = self.recent_nanos.load(Ordering::Relaxed) < nanos(INLINE_BELOW);
        // A JSON value's size is unknown without writing it out: such calls never run here.
        let small = || {
            requests
                .iter()
                .try_fold(0usize, |n, r| n.checked_add(r.byte_len()?))
                .is_some_and(|n| n <= INLINE_BODY_BYTES)
        };
        let started = Instant::now();
        let answers = if quick && small() {
            self.model.serve(requests, &|| true)
        } else {
            // Cleared if this call is dropped (its caller left, a timeout) while it waits:
            // the blocking thread then skips the run instead of working for no one.
            let wanted = Arc::new(AtomicBool::new(true));
            let _gone = ClearOnDrop(wanted.clone());
            let model = self.model.clone();
            tokio::task::spawn_blocking(move || {
                model.serve(requests, &|| wanted.load(Ordering::Relaxed))
            })
            .await
            .map_err(|e| BackendError::msg(format!("the inference failed: {e}")))?
        };
        self.record(started.elapsed());
        Ok(answers)
    }

    /// Folds one call's time into the moving average (an eighth each).
    fn record(&self, took: Duration) {
        let sample = nanos(took);
        let old = self.recent_nanos.load(Ordering::Relaxed);
        let new = if old == u64::MAX {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.recent_nanos.store(new, Ordering::Relaxed);
    }
}

/// Clears its flag when dropped.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Backend for Shared {
    fn methods(&self) -> Methods {
        Methods::only([DEFAULT_METHOD, METADATA_METHOD])
    }

    fn batch_methods(&self) -> Methods {
        match self.model.batch {
            Some(_) => Methods::only([DEFAULT_METHOD]),
            None => Methods::Only(Vec::new()),
        }
    }

    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        if req.method_name() == METADATA_METHOD {
            if let Err(why) = self.model.check_version(&req) {
                return Ok(bad_request(why));
            }
            return Response::json(&self.model.metadata());
        }
        self.serve(vec![req])
            .await?
            .pop()
            .ok_or_else(|| BackendError::msg("the run gave no answer"))
    }

    async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        self.serve(requests).await
    }
}
