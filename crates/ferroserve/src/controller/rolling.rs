//! Rolling updates: new replicas start, and pass a health check, before old ones stop, `max_surge` at a time; a new version that fails is rolled back on its own.

use std::cmp::Reverse;
use std::sync::Arc;

use super::backends::Current;
use super::{Controller, DesiredBackend};
use crate::backend::BackendFactory;
use crate::config::{BackendConfig, BackendKind};
use crate::error::ServeError;
use crate::replica::Replica;

impl Controller {
    /// Replaces backend `name`'s replicas with ones made by `factory` under `config`,
    /// `max_surge` at a time: each step starts new replicas, puts them in service, then
    /// takes as many old ones (the least busy) out and drains them. If a new replica fails
    /// to start or to pass its first health check, the old replicas taken out are started
    /// again, the new ones are taken out, and the error says so: the old version serves.
    pub(super) async fn roll(
        &self,
        name: &str,
        current: &Current,
        mut old: Vec<Arc<dyn Replica>>,
        factory: BackendFactory,
        config: BackendConfig,
        kind: Option<BackendKind>,
    ) -> Result<(), ServeError> {
        let target = config.num_replicas;
        let surge = config.max_surge.max(1);
        let generation = current.generation;
        let mut taken_out = 0;
        let mut new: Vec<Arc<dyn Replica>> = Vec::with_capacity(target);
        tracing::info!(
            backend = name,
            replicas = target,
            surge,
            "rolling update started"
        );
        while new.len() < target {
            let step = surge.min(target - new.len());
            let first = self.reserve_numbers(name, step);
            match self
                .start_replicas(name, &factory, &config, first, step, 0)
                .await
            {
                Ok(fresh) => {
                    // The busiest first, so that the least busy come off the end.
                    old.sort_by_key(|r| Reverse(r.in_flight()));
                    let out = old.split_off(old.len() - step.min(old.len()));
                    taken_out += out.len();
                    new.extend(fresh.iter().cloned());
                    self.swap(name, generation, fresh, &out, None)?;
                    drop(out);
                }
                Err(e) => {
                    let outcome = if self.roll_back(name, current, taken_out, new).await {
                        "so it was rolled back and the old one serves"
                    } else {
                        "and the rollback could not restart the old one: the new replicas that started serve beside the old ones left"
                    };
                    return Err(ServeError::StartFailed {
                        backend: name.to_owned(),
                        message: format!(
                            "the new version failed, {outcome}: {}",
                            start_message(&e)
                        ),
                    });
                }
            }
        }
        let desired = DesiredBackend {
            factory,
            config,
            kind,
        };
        self.swap(name, generation, Vec::new(), &old, Some(desired))?;
        tracing::info!(backend = name, "rolling update done");
        Ok(())
    }

    /// Starts `taken_out` replicas of the old version again, then takes `new` out; whether
    /// it could.
    async fn roll_back(
        &self,
        name: &str,
        current: &Current,
        taken_out: usize,
        new: Vec<Arc<dyn Replica>>,
    ) -> bool {
        let first = self.reserve_numbers(name, taken_out);
        let restored = self
            .start_replicas(name, &current.factory, &current.config, first, taken_out, 0)
            .await;
        match restored {
            Ok(back) => {
                if let Err(e) = self.swap(name, current.generation, back, &new, None) {
                    tracing::warn!(backend = name, "rollback: {e}");
                }
                true
            }
            Err(e) => {
                // The new replicas that started are healthy: they keep serving, rather
                // than leaving the backend short.
                tracing::error!(
                    backend = name,
                    "rollback could not restart the old version ({e}); the new replicas that started keep serving"
                );
                false
            }
        }
    }
}

/// The message of a start failure, without the backend's name (the caller adds it).
fn start_message(e: &ServeError) -> String {
    match e {
        ServeError::StartFailed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
