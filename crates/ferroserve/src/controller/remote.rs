//! Replicas on other nodes, as this node's controller knows them: set by the cluster agent, published after the backend's own replicas, never started, checked or stopped here (the node that runs them does that).

use std::sync::Arc;

use super::status::BackendStatus;
use super::{Controller, DesiredBackend, Running};
use crate::backend::{Backend, BackendFactory};
use crate::config::BackendConfig;
use crate::error::{BackendError, ServeError};
use crate::replica::Replica;
use crate::request::Request;
use crate::response::Response;

impl Controller {
    /// Sets the replicas of `backend` that run on other nodes, in place of those set
    /// before (none: it has only its own). Requests go to them when this node's replicas
    /// are all busy, or when it has none. Kept for a backend not created yet: they serve
    /// once it is.
    pub(crate) fn set_remote(&self, backend: &str, replicas: Vec<Arc<dyn Replica>>) {
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        if replicas.is_empty() {
            state.remote.remove(backend);
        } else {
            state.remote.insert(backend.to_owned(), replicas);
        }
        let queue = state.actual.get(backend).map(|r| r.queue.clone());
        self.publish(&mut state);
        drop(state);
        // Requests waiting for a slot look at the new replicas at once.
        if let Some(queue) = queue {
            queue.wake_all();
        }
    }

    /// Adds a backend that runs only on other nodes: known here by its config, served
    /// through the replicas [`Controller::set_remote`] gives it, with none of its own.
    /// It is not part of the app this node saves.
    pub(crate) fn create_remote_backend(
        &self,
        name: &str,
        config: BackendConfig,
    ) -> Result<(), ServeError> {
        config.validate()?;
        let mut state = self.lock();
        if state.stopped {
            return Err(ServeError::ShuttingDown);
        }
        if state.desired.backends.contains_key(name) || state.creating.contains(name) {
            return Err(ServeError::Conflict(format!(
                "backend `{name}` already exists"
            )));
        }
        state.failed.shift_remove(name);
        state.generations += 1;
        let mut running = Running::new(state.generations, Vec::new(), 0);
        running.condition = Some((
            BackendStatus::Healthy,
            "its replicas run on other nodes".to_owned(),
        ));
        state.actual.insert(name.to_owned(), running);
        let factory = BackendFactory::new(|ctx| {
            Err::<Elsewhere, _>(BackendError::msg(format!(
                "backend `{}` runs on other nodes only; it starts no replica here",
                ctx.backend
            )))
        });
        state.desired.backends.insert(
            name.to_owned(),
            DesiredBackend {
                factory,
                config,
                kind: None,
            },
        );
        self.publish(&mut state);
        Ok(())
    }
}

/// What a backend that runs elsewhere would be here: never made (its factory refuses).
struct Elsewhere;

impl Backend for Elsewhere {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        Err(BackendError::msg("this backend runs on other nodes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::Caller;
    use crate::replica::tests::ok_replica;
    use crate::router::SnapshotCell;

    #[tokio::test]
    async fn remote_replicas_follow_the_local_ones_and_may_be_all() {
        let cell = Arc::new(SnapshotCell::default());
        let controller = Controller::new(cell.clone(), Caller::new(&cell));
        controller
            .create_remote_backend("b", BackendConfig::default())
            .expect("created");
        assert!(
            !cell.load().backends["b"].replicas.has_live(),
            "no replica yet"
        );
        let remote: Arc<dyn Replica> = ok_replica("a/b#1").await;
        controller.set_remote("b", vec![remote]);
        let snapshot = cell.load();
        let set = &snapshot.backends["b"].replicas;
        assert!(set.has_live() && !set.has_live_local());
        assert_eq!(
            set.try_acquire().map(|s| s.id().to_owned()).as_deref(),
            Some("a/b#1")
        );
        let status = controller.status();
        assert_eq!(status.backends["b"].status, BackendStatus::Healthy);
        assert!(
            controller
                .create_remote_backend("b", BackendConfig::default())
                .is_err(),
            "the name is taken"
        );
        controller.set_remote("b", Vec::new());
        assert!(!cell.load().backends["b"].replicas.has_live());
    }
}
