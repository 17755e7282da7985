//! The control API's routes: the declarative app (`/api/app`), status, imperative backend and endpoint changes, and shutdown; bodies in the app file's own shapes, parsed by the same loader.

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{Shared, error, json, serve_error};
use crate::config::{AppConfig, AppSpec, BackendSpec, ConfigError, HttpOptions, Traffic};
use crate::error::ServeError;

type Answer = http::Response<Full<Bytes>>;

/// Routes one call.
pub(super) async fn route(shared: &Shared, parts: &http::request::Parts, body: &[u8]) -> Answer {
    let (method, path, query) = (&parts.method, parts.uri.path(), parts.uri.query());
    // Each segment percent-decoded: names are any text (`echo%231` is replica `echo#1`).
    let decoded: Vec<std::borrow::Cow<'_, str>> = path
        .trim_matches('/')
        .split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy())
        .collect();
    let segments: Vec<&str> = decoded.iter().map(|s| &**s).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", "app"]) => json(StatusCode::OK, &shared.serve.app()),
        (&Method::PUT, ["api", "app"]) => match parse_app(shared, body) {
            Ok(app) => deploy(shared, app),
            Err(e) => config_error(&e),
        },
        (&Method::DELETE, ["api", "app"]) => deploy(
            shared,
            AppConfig {
                file: "DELETE /api/app".to_owned(),
                http: HttpOptions::default(),
                spec: AppSpec::default(),
            },
        ),
        (&Method::GET, ["api", "status"]) => json(StatusCode::OK, &shared.serve.status()),
        (&Method::POST | &Method::PUT, ["api", "backends", name]) => {
            put_backend(shared, method == Method::POST, name, body).await
        }
        (&Method::DELETE, ["api", "backends", name]) => {
            done(shared, shared.serve.delete_backend(name).await)
        }
        (&Method::POST, ["api", "endpoints", name]) => match parse_endpoint(shared, name, body) {
            Ok(config) => done(shared, shared.serve.create_endpoint(name, config).await),
            Err(e) => config_error(&e),
        },
        (&Method::DELETE, ["api", "endpoints", name]) => {
            done(shared, shared.serve.delete_endpoint(name).await)
        }
        (&Method::PUT, ["api", "endpoints", name, "traffic"]) => {
            let weights: IndexMap<String, f64> = match parse_json(body) {
                Ok(weights) => weights,
                Err(e) => return *e,
            };
            match Traffic::new(weights) {
                Ok(traffic) => done(shared, shared.serve.set_traffic(name, traffic).await),
                Err(e) => serve_error(&e),
            }
        }
        (&Method::PUT, ["api", "endpoints", name, "shadow"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Shadow {
                backend: String,
                proportion: f64,
            }
            let shadow: Shadow = match parse_json(body) {
                Ok(shadow) => shadow,
                Err(e) => return *e,
            };
            let changed = shared
                .serve
                .shadow_traffic(name, &shadow.backend, shadow.proportion)
                .await;
            done(shared, changed)
        }
        (&Method::POST, ["api", "call"]) => call(shared, body).await,
        (&Method::GET, ["metrics"]) => metrics(shared, &parts.headers),
        (&Method::GET, ["api", "series"]) => series(shared, query),
        (&Method::GET, ["api", "series", "latest"]) => {
            let (endpoints, backends) = shared.serve.latest();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            json(
                StatusCode::OK,
                &json!({ "t": now, "endpoints": endpoints, "backends": backends }),
            )
        }
        (&Method::GET, ["api", "history"]) => json(
            StatusCode::OK,
            &json!({ "changes": shared.serve.history() }),
        ),
        (&Method::PUT, ["api", "backends", name, "replicas"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Scale {
                num_replicas: usize,
            }
            match parse_json::<Scale>(body) {
                Ok(scale) => done(
                    shared,
                    shared.serve.scale_backend(name, scale.num_replicas).await,
                ),
                Err(e) => *e,
            }
        }
        (&Method::GET, ["api", "replicas", id, "logs"]) => replica_logs(shared, id, query),
        (&Method::POST, ["api", "shutdown"]) => {
            shared.shutdown_asked.notify_one();
            json(StatusCode::ACCEPTED, &json!({ "status": "shutting down" }))
        }
        (_, ["metrics"])
        | (_, ["api", "series" | "history"])
        | (_, ["api", "series", "latest"])
        | (_, ["api", "backends", _, "replicas"])
        | (_, ["api", "replicas", _, "logs"])
        | (_, ["api", "app" | "status" | "shutdown" | "call"])
        | (_, ["api", "backends" | "endpoints", _])
        | (_, ["api", "endpoints", _, "traffic" | "shadow"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no such control route: {path} (see docs/operations.md: /api/app, /api/status, /api/backends/NAME, /api/endpoints/NAME)"
            ),
        ),
    }
}

/// Checks `app` now (so that a bad one gets its 400 at once), then deploys it in the
/// background: the answer is 202, and `GET /api/status` shows the progress.
fn deploy(shared: &Shared, app: AppConfig) -> Answer {
    if let Err(e) = crate::serve::check_app(&app, &shared.registry, false) {
        return config_error(&e);
    }
    let (backends, endpoints) = (app.spec.backends.len(), app.spec.endpoints.len());
    shared
        .serve
        .deploy_in_background(app, shared.registry.clone());
    json(
        StatusCode::ACCEPTED,
        &json!({ "status": "DEPLOYING", "backends": backends, "endpoints": endpoints }),
    )
}

/// The app in a body: an app file's YAML or JSON, or what `GET /api/app` returns (its
/// backends and endpoints as lists). Relative `working_dir`s are read from the server's
/// working directory.
fn parse_app(shared: &Shared, body: &[u8]) -> Result<AppConfig, ConfigError> {
    const FILE: &str = "the request body";
    let text = std::str::from_utf8(body).map_err(|e| ConfigError {
        file: FILE.to_owned(),
        line: 0,
        key: String::new(),
        message: format!("is not UTF-8: {e}"),
    })?;
    let listed = serde_saphyr::from_str::<Value>(text).ok().filter(|v| {
        v.get("backends").is_some_and(Value::is_array)
            || v.get("endpoints").is_some_and(Value::is_array)
    });
    if let Some(value) = listed {
        let invalid = |key: String, message: String| ConfigError {
            file: FILE.to_owned(),
            line: 0,
            key,
            message,
        };
        let spec: AppSpec =
            serde_json::from_value(value).map_err(|e| invalid(String::new(), e.to_string()))?;
        spec.validate().map_err(|e| match e {
            ServeError::InvalidConfig { key, message } => invalid(key, message),
            other => invalid(String::new(), other.to_string()),
        })?;
        return Ok(AppConfig {
            file: FILE.to_owned(),
            http: HttpOptions::default(),
            spec,
        });
    }
    AppConfig::from_yaml(text, FILE, &shared.registry)
}

/// A body in an app file's shape for one entry, wrapped as a whole app under `section`
/// (with `extra` beside it) and parsed by the file loader, so that keys, defaults and
/// errors are the file's.
fn parse_entry(
    shared: &Shared,
    section: &str,
    name: &str,
    body: &[u8],
    extra: Value,
) -> Result<AppConfig, ConfigError> {
    let entry: Value = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_saphyr::from_str(text).ok())
        .ok_or_else(|| ConfigError {
            file: "the request body".to_owned(),
            line: 0,
            key: format!("{section}.{name}"),
            message: "is not a YAML or JSON object".to_owned(),
        })?;
    let mut app = extra;
    app[section] = json!({ name: entry });
    AppConfig::from_yaml(&app.to_string(), "the request body", &shared.registry)
}

/// The endpoint in a body: `{route, methods, backend | traffic, shadow, ...}` as in a file.
fn parse_endpoint(
    shared: &Shared,
    name: &str,
    body: &[u8],
) -> Result<crate::config::EndpointConfig, ConfigError> {
    // The file loader checks that an endpoint's backends are in the app: the ones it
    // names are given as stand-ins; the controller checks they really exist.
    let value: Value = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_saphyr::from_str(text).ok())
        .unwrap_or(Value::Null);
    let mut named: Vec<String> = Vec::new();
    if let Some(backend) = value.get("backend").and_then(Value::as_str) {
        named.push(backend.to_owned());
    }
    for key in ["traffic", "shadow"] {
        if let Some(map) = value.get(key).and_then(Value::as_object) {
            named.extend(map.keys().cloned());
        }
    }
    let stand_ins: serde_json::Map<String, Value> = named
        .into_iter()
        .map(|b| (b, json!({ "builtin": "echo" })))
        .collect();
    let app = parse_entry(
        shared,
        "endpoints",
        name,
        body,
        json!({ "backends": stand_ins }),
    )?;
    app.spec
        .endpoints
        .into_iter()
        .next()
        .map(|e| e.config)
        .ok_or_else(|| ConfigError {
            file: "the request body".to_owned(),
            line: 0,
            key: format!("endpoints.{name}"),
            message: "holds no endpoint".to_owned(),
        })
}

/// A backend as `GET /api/app` lists it (`python` an object, which can carry a pickled
/// class or function), named `name`.
fn parse_listed_backend(name: &str, body: &[u8]) -> Option<Result<BackendSpec, ConfigError>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    if !value.get("python").is_some_and(Value::is_object) {
        return None;
    }
    value["name"] = Value::from(name);
    let invalid = |message: String| ConfigError {
        file: "the request body".to_owned(),
        line: 0,
        key: format!("backends.{name}"),
        message,
    };
    let spec = serde_json::from_value::<BackendSpec>(value).map_err(|e| invalid(e.to_string()));
    Some(spec.and_then(|spec| {
        let app = AppSpec {
            backends: vec![spec],
            endpoints: Vec::new(),
        };
        app.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(app.backends.into_iter().next().expect("one backend"))
    }))
}

/// Creates (`POST`) or changes (`PUT`) a backend from a body in a file's shape, or as
/// `GET /api/app` lists one.
async fn put_backend(shared: &Shared, create: bool, name: &str, body: &[u8]) -> Answer {
    let parsed = parse_listed_backend(name, body).unwrap_or_else(|| {
        parse_entry(shared, "backends", name, body, json!({})).and_then(|app| {
            app.spec
                .backends
                .into_iter()
                .next()
                .ok_or_else(|| ConfigError {
                    file: "the request body".to_owned(),
                    line: 0,
                    key: format!("backends.{name}"),
                    message: "holds no backend".to_owned(),
                })
        })
    });
    let spec = match parsed {
        Ok(spec) => spec,
        Err(e) => return config_error(&e),
    };
    let Some(factory) = crate::replica::factory_of(&spec.kind, &shared.registry) else {
        return serve_error(&ServeError::BackendNotFound(name.to_owned()));
    };
    let serve = &shared.serve;
    let changed = if create {
        serve
            .create_backend_of_kind(name, spec.kind.clone(), factory, spec.config.clone())
            .await
    } else {
        serve
            .update_backend(name, spec.kind.clone(), factory, spec.config.clone())
            .await
    };
    done(shared, changed)
}

/// A handle call from a Python script, through the same router as HTTP. The body and the
/// answer are each a little-endian u32 length, that much JSON meta, then the payload: the
/// meta of a worker's handle call (endpoint, method, argument kind, HTTP options) and its
/// argument; then the answer's meta (`kind`, `status`, `media_type`, or `error`) and body.
async fn call(shared: &Shared, body: &[u8]) -> Answer {
    match run_call(shared, body).await {
        Ok(answer) => call_answer(answer).await,
        Err(refused) => refused,
    }
}

/// Runs a call from a script (`/api/call`, `/api/stream`): its answer, or the refusal of
/// a body that is not a call.
pub(super) async fn run_call(
    shared: &Shared,
    body: &[u8],
) -> Result<Result<crate::Response, ServeError>, Answer> {
    let Some((meta, arg)) = split_meta(body) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a call is a u32 meta length, the JSON meta, then the argument",
        ));
    };
    let caller = shared.serve.caller();
    Ok(crate::replica::call_from_python(&*caller, meta, Bytes::copy_from_slice(arg)).await)
}

/// The answer of a call from a script: its meta's length, its meta, its payload.
pub(super) async fn call_answer(answer: Result<crate::Response, ServeError>) -> Answer {
    let (meta, payload) = crate::replica::python_reply(answer).await;
    let meta = serde_json::to_vec(&meta).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(4 + meta.len() + payload.len());
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&payload);
    let mut response = http::Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ferroserve-call"),
    );
    response
}

/// `body` as (meta, rest), after its u32 little-endian meta length.
fn split_meta(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let end = 4usize.checked_add(usize::try_from(len).ok()?)?;
    Some((body.get(4..end)?, body.get(end..)?))
}

/// `GET /api/replicas/ID/logs?tail=N`: the last N lines (200 by default) the replica's
/// worker printed, oldest first, each with its time and stream; ID is percent-encoded
/// (`echo%230`). A replica without captured output (a Rust one) has none; an unknown one
/// is a 404.
fn replica_logs(shared: &Shared, id: &str, query: Option<&str>) -> Answer {
    use crate::backend::logs::RING_LINES;
    let tail = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "tail")
        .map_or(Ok(200), |(_, n)| n.parse::<usize>());
    let Ok(tail) = tail else {
        return error(StatusCode::BAD_REQUEST, "tail is a number of lines");
    };
    match shared.serve.replica_logs(id, tail.min(RING_LINES)) {
        Some(lines) => {
            #[derive(serde::Serialize)]
            struct Logs<'a> {
                replica: &'a str,
                lines: Vec<crate::backend::logs::LogLine>,
            }
            let logs = Logs { replica: id, lines };
            json(StatusCode::OK, &logs)
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no replica `{id}` (see /api/status), and no output kept of one gone"),
        ),
    }
}

/// `GET /metrics`: OpenMetrics text for a scraper that asks for it (Prometheus does),
/// else Prometheus' classic text format (what `promtool check metrics` and older tools
/// read).
fn metrics(shared: &Shared, headers: &http::HeaderMap) -> Answer {
    let openmetrics = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = shared.serve.metrics_text();
    let (text, kind) = if openmetrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            crate::metrics::classic_text(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut response = http::Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    response
}

/// `GET /api/series?endpoint=NAME` (or `backend=NAME`), with `since=UNIX_SECONDS` for the
/// points after it only: the last 15 minutes at 1 s.
fn series(shared: &Shared, query: Option<&str>) -> Answer {
    let (mut name, mut backend, mut since) = (None, false, 0);
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "endpoint" => name = Some(value.into_owned()),
            "backend" => {
                name = Some(value.into_owned());
                backend = true;
            }
            "since" => match value.parse::<f64>() {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(s) if s.is_finite() && s >= 0.0 => since = s as u64,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "since is seconds since the Unix epoch",
                    );
                }
            },
            _ => {}
        }
    }
    let Some(name) = name else {
        return error(
            StatusCode::BAD_REQUEST,
            "say which series: ?endpoint=NAME or ?backend=NAME",
        );
    };
    match shared.serve.series(backend, &name, since) {
        Some(reply) => json(StatusCode::OK, &reply),
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no series for {} `{name}` (series start a second after it is made)",
                if backend { "backend" } else { "endpoint" }
            ),
        ),
    }
}

/// 200 with the new status, or the error.
fn done(shared: &Shared, outcome: Result<(), ServeError>) -> Answer {
    match outcome {
        Ok(()) => json(StatusCode::OK, &shared.serve.status()),
        Err(e) => serve_error(&e),
    }
}

/// A body that must be JSON of type `T`, or the 400 saying why not.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Answer>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("the body: {e}"))))
}

/// A config error as a 400 naming the key and the line, as the file loader says it.
fn config_error(e: &ConfigError) -> Answer {
    json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": e.to_string(), "key": e.key, "line": e.line }),
    )
}
