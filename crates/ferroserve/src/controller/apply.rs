//! Declarative changes: make the app what a whole app says — create, change (in place or rolling) and delete backends, and swap the endpoint set in one publish.

use std::collections::HashMap;

use indexmap::IndexMap;

use super::Controller;
use crate::backend::BackendFactory;
use crate::config::{BackendConfig, BackendKind, EndpointConfig};
use crate::error::ServeError;

/// One backend of an app being applied, its factory resolved from its kind.
pub(crate) struct Planned {
    pub(crate) name: String,
    pub(crate) kind: BackendKind,
    pub(crate) factory: BackendFactory,
    pub(crate) config: BackendConfig,
}

/// Counts an apply under way while it lives, for status (`DEPLOYING`).
struct Applying<'a>(&'a Controller);

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.applying = state.applying.saturating_sub(1);
    }
}

/// An apply about to start in a task of its own: counted (status shows `DEPLOYING`) from
/// the moment it is queued until it drops.
pub(crate) struct Queued(std::sync::Arc<Controller>);

impl Drop for Queued {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.applying = state.applying.saturating_sub(1);
    }
}

impl Controller {
    /// Makes the app `backends` and `endpoints`, one apply at a time: new backends are
    /// created, changed ones updated (in place, or by a rolling update when their code,
    /// `init_args`, batching or `version` changed), all at once, each at its own pace; then
    /// the endpoints are replaced in one publish; then backends no longer listed are
    /// deleted. What fails keeps what ran before: a backend that fails to change keeps its
    /// old version, one that fails to be created is not, and an endpoint that needs it
    /// keeps its old config (or is left out). The failures, by backend or endpoint name.
    pub(crate) async fn apply(
        &self,
        backends: Vec<Planned>,
        endpoints: IndexMap<String, EndpointConfig>,
    ) -> Vec<(String, ServeError)> {
        self.lock().applying += 1;
        let _applying = Applying(self);
        let _one_at_a_time = self.applies.lock().await;
        let existing: HashMap<String, (Option<BackendKind>, BackendConfig)> = self
            .lock()
            .desired
            .backends
            .iter()
            .map(|(name, d)| (name.clone(), (d.kind.clone(), d.config.clone())))
            .collect();
        let listed: Vec<String> = backends.iter().map(|p| p.name.clone()).collect();
        // In a cluster, the count given is the leader's choice, autoscaled or not.
        let by_cluster = self.lock().scaled_by_cluster;
        let same = |before: &BackendConfig, new: &BackendConfig| {
            if by_cluster {
                before == new
            } else {
                before.same_but_scale(new)
            }
        };
        // A failed creation of a backend no longer listed is over.
        self.lock().failed.retain(|name, _| listed.contains(name));
        let changes = backends.into_iter().map(|p| {
            let before = existing.get(&p.name).cloned();
            async move {
                let outcome = match before {
                    None => {
                        self.create_backend(&p.name, p.factory, p.config, Some(p.kind))
                            .await
                    }
                    Some((kind, config))
                        if kind.as_ref() == Some(&p.kind) && same(&config, &p.config) =>
                    {
                        // What runs is what was asked for: a failure of a change since
                        // given up is over.
                        self.clear_failure(&p.name);
                        Ok(())
                    }
                    Some((_, config)) => {
                        // An autoscaled backend keeps the count its autoscaler chose
                        // (in a cluster the share given is the leader's choice).
                        let wanted = if by_cluster {
                            p.config
                        } else {
                            p.config.carried_from(&config)
                        };
                        self.update_backend(&p.name, p.factory, wanted, Some(p.kind))
                            .await
                    }
                };
                (p.name, outcome)
            }
        });
        let mut failures: Vec<(String, ServeError)> = futures_util::future::join_all(changes)
            .await
            .into_iter()
            .filter_map(|(name, outcome)| outcome.err().map(|e| (name, e)))
            .collect();
        // Created at once, they joined in the order they were ready: keep the app's order.
        self.lock().desired.backends.sort_by_cached_key(|name, _| {
            listed.iter().position(|l| l == name).unwrap_or(usize::MAX)
        });
        failures.extend(self.replace_endpoints(endpoints));
        let gone: Vec<String> = existing
            .keys()
            .filter(|name| !listed.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Err(e) = self.delete_backend(&name) {
                failures.push((name, e));
            }
        }
        failures
    }

    /// Clears backend `name`'s `DEPLOY_FAILED`, if it has one.
    fn clear_failure(&self, name: &str) {
        let mut state = self.lock();
        if let Some(running) = state.actual.get_mut(name)
            && matches!(
                running.condition,
                Some((super::status::BackendStatus::DeployFailed, _))
            )
        {
            running.condition = None;
        }
    }

    /// Counts an apply that a task is about to run, until the guard drops.
    pub(crate) fn queue_apply(self: &std::sync::Arc<Self>) -> Queued {
        self.lock().applying += 1;
        Queued(self.clone())
    }

    /// Makes `endpoints` the endpoint set, in one publish. An endpoint that needs a backend
    /// that does not exist keeps its old config, or is left out; those are the failures.
    fn replace_endpoints(
        &self,
        endpoints: IndexMap<String, EndpointConfig>,
    ) -> Vec<(String, ServeError)> {
        let mut state = self.lock();
        if state.stopped {
            return vec![("endpoints".to_owned(), ServeError::ShuttingDown)];
        }
        let mut failures = Vec::new();
        let mut next = IndexMap::with_capacity(endpoints.len());
        for (name, config) in endpoints {
            let missing = Self::endpoint_backends(&config)
                .find(|b| !state.desired.backends.contains_key(*b))
                .map(str::to_owned);
            match missing {
                None => {
                    next.insert(name, config);
                }
                Some(backend) => {
                    if let Some(old) = state.desired.endpoints.get(&name) {
                        next.insert(name.clone(), old.clone());
                    }
                    failures.push((
                        name,
                        ServeError::invalid(
                            "traffic",
                            format!("backend `{backend}` is not running, so this endpoint was not changed"),
                        ),
                    ));
                }
            }
        }
        // An old config kept for a failed endpoint may claim a route a new endpoint took:
        // the kept one gives way (two endpoints on one route is not a valid app).
        let kept: Vec<String> = failures.iter().map(|(n, _)| n.clone()).collect();
        let mut routes: HashMap<String, String> = HashMap::new();
        for (name, config) in &next {
            if let Some(route) = &config.route
                && !kept.contains(name)
            {
                routes.insert(route.clone(), name.clone());
            }
        }
        next.retain(|name, config| {
            !kept.contains(name)
                || config
                    .route
                    .as_ref()
                    .is_none_or(|route| !routes.contains_key(route))
        });
        if next != state.desired.endpoints {
            state.desired.endpoints = next;
            self.publish(&mut state);
        }
        failures
    }

    /// While `held`, a route no endpoint has yet is answered 503 (the app is being
    /// deployed), not 404.
    pub(crate) fn hold(&self, held: bool) {
        let mut state = self.lock();
        if state.held != held {
            state.held = held;
            self.publish(&mut state);
        }
    }
}
