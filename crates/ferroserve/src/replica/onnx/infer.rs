//! Answering inference requests: an Open Inference Protocol body (JSON, or Triton's binary extension) or, from an in-process handle, a `Vec<Tensor>`; one run per request, or, for a batchable model, one run per batch of requests whose inputs agree in every dimension after the first.

use std::collections::HashMap;

use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::{METADATA_METHOD, Model};
use crate::backend::{Backend, Methods};
use crate::error::BackendError;
use crate::request::{DEFAULT_METHOD, Request};
use crate::response::Response;
use crate::tensor::codec::{self, HEADER_LENGTH, InferRequest};
use crate::tensor::{Tensor, batch};

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

impl Model {
    /// An error when the request names a version (`/v2/models/NAME/versions/V/...`) other
    /// than the one this replica serves.
    fn check_version(&self, req: &Request) -> Result<(), String> {
        let mut segments = req.path().unwrap_or_default().split('/');
        let asked = segments
            .by_ref()
            .find(|s| *s == "versions")
            .and(segments.next());
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
        Ok(Parsed {
            inputs: std::mem::take(&mut request.inputs),
            reply: Reply::Body(request),
        })
    }

    /// The answer to a request, given its run's outputs.
    fn answer(&self, reply: Reply, outputs: Vec<Tensor>) -> Result<Response, BackendError> {
        let request = match reply {
            Reply::Tensors => return Ok(Response::value(outputs)),
            Reply::Body(request) => request,
        };
        let outputs = request.select(outputs);
        let (body, header_len) =
            codec::encode_answer(&self.name, &self.version, &request, &outputs)
                .map_err(BackendError::msg)?;
        Ok(match header_len {
            None => {
                Response::bytes(body).with_media_type(HeaderValue::from_static("application/json"))
            }
            Some(n) => Response::bytes(body).with_header(
                http::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(n),
            ),
        })
    }

    /// Runs each group of stacked inputs on a blocking thread, in one go.
    async fn run_all(
        &self,
        groups: Vec<Vec<Tensor>>,
    ) -> Result<Vec<Result<Vec<Tensor>, String>>, BackendError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            groups
                .into_iter()
                .map(|inputs| engine.run(inputs))
                .collect()
        })
        .await
        .map_err(|e| BackendError::msg(format!("the inference failed: {e}")))
    }
}

/// A 400 with `{"error": why}`.
fn bad_request(why: String) -> Response {
    match Response::json(&json!({ "error": why })) {
        Ok(response) => response.with_status(StatusCode::BAD_REQUEST),
        Err(_) => Response::text(why).with_status(StatusCode::BAD_REQUEST),
    }
}

/// A failed run: the model refused what it was given.
fn failed_run(why: &str) -> Response {
    bad_request(format!("the model could not run on these inputs: {why}"))
}

impl Backend for Model {
    fn methods(&self) -> Methods {
        Methods::only([DEFAULT_METHOD, METADATA_METHOD])
    }

    fn batch_methods(&self) -> Methods {
        match self.batch {
            Some(_) => Methods::only([DEFAULT_METHOD]),
            None => Methods::Only(Vec::new()),
        }
    }

    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        if req.method_name() == METADATA_METHOD {
            if let Err(why) = self.check_version(&req) {
                return Ok(bad_request(why));
            }
            return Response::json(&self.metadata());
        }
        let Parsed { inputs, reply } = match self.parse(req) {
            Ok(parsed) => parsed,
            Err(why) => return Ok(bad_request(why)),
        };
        let ran = self.run_all(vec![inputs]).await?.pop();
        match ran {
            Some(Ok(outputs)) => self.answer(reply, outputs),
            Some(Err(why)) => Ok(failed_run(&why)),
            None => Err(BackendError::msg("the run gave no result")),
        }
    }

    async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        let mut answers: Vec<Option<Response>> = requests.iter().map(|_| None).collect();
        let mut waiting: Vec<(usize, Reply)> = Vec::new();
        // The requests of each group, and their inputs, by signature.
        let mut groups: Vec<(Vec<usize>, Vec<Vec<Tensor>>)> = Vec::new();
        let mut by_signature: HashMap<Vec<(crate::tensor::Datatype, Vec<i64>)>, usize> =
            HashMap::new();
        for (at, req) in requests.into_iter().enumerate() {
            let Parsed { inputs, reply } = match self.parse(req) {
                Ok(parsed) => parsed,
                Err(why) => {
                    answers[at] = Some(bad_request(why));
                    continue;
                }
            };
            let group = match batch::signature(&inputs) {
                Some(signature) => {
                    let key = signature
                        .into_iter()
                        .map(|(t, s)| (t, s.to_vec()))
                        .collect();
                    *by_signature.entry(key).or_insert_with(|| {
                        groups.push((Vec::new(), Vec::new()));
                        groups.len() - 1
                    })
                }
                None => {
                    groups.push((Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[group].0.push(waiting.len());
            groups[group].1.push(inputs);
            waiting.push((at, reply));
        }
        let mut members = Vec::with_capacity(groups.len());
        let mut stacked = Vec::with_capacity(groups.len());
        let mut counts = Vec::with_capacity(groups.len());
        for (who, inputs) in groups {
            let (joined, rows) = batch::join(inputs).map_err(BackendError::msg)?;
            members.push(who);
            stacked.push(joined);
            counts.push(rows);
        }
        let ran = self.run_all(stacked).await?;
        let mut replies: Vec<Option<(usize, Reply)>> = waiting.into_iter().map(Some).collect();
        for ((who, rows), result) in members.into_iter().zip(counts).zip(ran) {
            let split = result.and_then(|outputs| batch::split(outputs, &rows));
            match split {
                Ok(outputs) => {
                    for (w, outputs) in who.into_iter().zip(outputs) {
                        if let Some((at, reply)) = replies[w].take() {
                            answers[at] = Some(self.answer(reply, outputs)?);
                        }
                    }
                }
                Err(why) => {
                    for w in who {
                        if let Some((at, _)) = replies[w].take() {
                            answers[at] = Some(failed_run(&why));
                        }
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| BackendError::msg("a request of the batch got no answer")))
            .collect()
    }
}
