//! Reading the controller: the status of every backend, replica and endpoint, the desired app written down as an [`AppSpec`], and a replica's captured output.

use indexmap::IndexMap;

use super::Controller;
use super::status::{
    AppStatus, BackendReport, BackendStatus, EndpointReport, ReplicaInfo, ReplicaState,
    ReplicaStatus, unix_seconds,
};
use crate::backend::logs::LogLine;
use crate::config::{AppSpec, BackendSpec, EndpointSpec};
use crate::router;

impl Controller {
    /// Desired and actual state: each backend's status and replicas, each endpoint, and
    /// readiness.
    pub(crate) fn status(&self) -> AppStatus {
        let state = self.lock();
        let mut backends = IndexMap::new();
        for (name, desired) in &state.desired.backends {
            let Some(running) = state.actual.get(name) else {
                continue;
            };
            let in_flight = |id: &str| {
                running
                    .replicas
                    .iter()
                    .find(|r| r.id() == id)
                    .map_or(0, |r| r.in_flight())
            };
            let replicas: Vec<ReplicaStatus> = running
                .info
                .iter()
                .map(|(id, info)| replica_status(id, info, in_flight(id)))
                .collect();
            let target = desired.config.num_replicas;
            let serving = running.replicas.len();
            let (status, message) = match &running.condition {
                Some((status, message)) => (*status, message.clone()),
                None if serving >= target => (BackendStatus::Healthy, String::new()),
                None => {
                    let restarting = replicas
                        .iter()
                        .filter(|r| matches!(r.state, ReplicaState::Recovering))
                        .count();
                    let mut message = format!(
                        "{serving} of {target} replicas running; {restarting} being replaced"
                    );
                    if running.failed_restarts > 0 {
                        message += &format!(
                            " ({} restarts failed in a row; see the server's log)",
                            running.failed_restarts
                        );
                    }
                    (BackendStatus::Unhealthy, message)
                }
            };
            let report = BackendReport {
                status,
                message,
                target_replicas: target,
                running_replicas: serving,
                version: desired.config.version.clone(),
                queued: running.queue.len(),
                replicas,
            };
            backends.insert(name.clone(), report);
        }
        for name in &state.creating {
            let replicas = state.starting.get(name).map_or_else(Vec::new, |infos| {
                infos
                    .iter()
                    .map(|(id, info)| replica_status(id, info, 0))
                    .collect()
            });
            let report = BackendReport {
                status: BackendStatus::Updating,
                message: "starting its replicas".to_owned(),
                target_replicas: replicas.len(),
                running_replicas: 0,
                version: None,
                queued: 0,
                replicas,
            };
            backends.insert(name.clone(), report);
        }
        for (name, why) in &state.failed {
            if !backends.contains_key(name) {
                let report = BackendReport {
                    status: BackendStatus::DeployFailed,
                    message: why.clone(),
                    target_replicas: 0,
                    running_replicas: 0,
                    version: None,
                    queued: 0,
                    replicas: Vec::new(),
                };
                backends.insert(name.clone(), report);
            }
        }
        let endpoints = state
            .desired
            .endpoints
            .iter()
            .map(|(name, e)| {
                let report = EndpointReport {
                    route: e.route.clone(),
                    methods: e.methods.iter().map(ToString::to_string).collect(),
                    traffic: e
                        .traffic
                        .weights()
                        .map(|(b, w)| (b.to_owned(), w))
                        .collect(),
                    shadow: e.shadow.clone(),
                };
                (name.clone(), report)
            })
            .collect();
        let deploying = state.applying > 0 || !state.creating.is_empty();
        drop(state);
        let failed = backends
            .values()
            .any(|b: &BackendReport| b.status == BackendStatus::DeployFailed);
        let updating = backends
            .values()
            .any(|b: &BackendReport| b.status == BackendStatus::Updating);
        let not_ready = router::not_ready(&self.cell.load());
        AppStatus {
            status: if deploying || updating {
                "DEPLOYING"
            } else if failed {
                "DEPLOY_FAILED"
            } else {
                "RUNNING"
            }
            .to_owned(),
            ready: not_ready.is_empty(),
            not_ready,
            backends,
            endpoints,
            cluster: None,
        }
    }

    /// The desired app, as it would be written to a file: the backends whose kind can be
    /// written down (every one but Rust closures given to the API), and every endpoint.
    pub(crate) fn desired_spec(&self) -> AppSpec {
        let state = self.lock();
        let backends = state
            .desired
            .backends
            .iter()
            .filter_map(|(name, d)| {
                Some(BackendSpec {
                    name: name.clone(),
                    kind: d.kind.clone()?,
                    config: d.config.clone(),
                    line: 0,
                })
            })
            .collect();
        let endpoints = state
            .desired
            .endpoints
            .iter()
            .map(|(name, config)| EndpointSpec {
                name: name.clone(),
                config: config.clone(),
                line: 0,
            })
            .collect();
        AppSpec {
            backends,
            endpoints,
        }
    }
}

impl Controller {
    /// The last `tail` lines `replica`'s worker printed, oldest first: none for a replica
    /// that captures no output (a Rust one); `None` for a replica neither known nor kept.
    pub(crate) fn replica_logs(&self, replica: &str, tail: usize) -> Option<Vec<LogLine>> {
        if let Some(lines) = self.env.logs.tail(replica, tail) {
            return Some(lines);
        }
        let state = self.lock();
        let known = state.actual.values().any(|r| r.info.contains_key(replica))
            || state.starting.values().any(|s| s.contains_key(replica));
        known.then(Vec::new)
    }
}

/// One replica as status shows it.
fn replica_status(id: &str, info: &ReplicaInfo, in_flight: usize) -> ReplicaStatus {
    ReplicaStatus {
        id: id.to_owned(),
        state: info.state,
        pid: info.pid,
        started_at_s: unix_seconds(info.started_at),
        in_flight,
        restarts: info.restarts,
        last_health_check: info.last_health_check.clone(),
    }
}
