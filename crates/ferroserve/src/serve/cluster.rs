//! The seam between a server and the cluster it is part of: deploys go to the cluster's store, and the cluster applies each node's share of the app through [`Serve::apply_share`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Serve, check_app, located};
use crate::backend::Registry;
use crate::config::{AppConfig, AppSpec, ConfigError};
use crate::error::ServeError;

/// What a cluster does for the server of one node (the `cluster` module implements it).
pub trait ClusterLink: Send + Sync + 'static {
    /// Saves `app` as the cluster's desired app, and resolves once this node has applied
    /// its share of it (or with why not).
    fn deploy(&self, app: AppSpec) -> BoxFuture<'_, Result<(), ServeError>>;
    /// The cluster as this node sees it (nodes, leader, placement), for status.
    fn status(&self) -> serde_json::Value;
    /// The cluster's desired app (not this node's share of it), if it has one.
    fn app(&self) -> Option<AppSpec>;
}

impl Serve {
    /// Makes this server a node of a cluster: from now on [`Serve::deploy`] saves the app
    /// to the cluster, and changes of single backends or endpoints are refused. The first
    /// link set is kept.
    pub fn join_cluster(&self, link: Arc<dyn ClusterLink>) {
        let _ = self.cluster.set(link);
        self.controller.scale_by_cluster();
    }

    /// The load of each autoscaled backend on this node: requests running on its own
    /// replicas plus those waiting in its queue.
    #[cfg(feature = "cluster")]
    pub(crate) fn autoscaled_load(&self) -> std::collections::BTreeMap<String, usize> {
        self.controller.autoscaled_load()
    }

    /// The cluster's part of status, in cluster mode.
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        self.cluster.get().map(|link| link.status())
    }

    /// Refuses a change of one backend or endpoint in cluster mode: it would change only
    /// this node, and the next placement would undo it.
    pub(super) fn local_change(&self) -> Result<(), ServeError> {
        if self.cluster.get().is_some() {
            return Err(ServeError::Conflict(
                "this node is part of a cluster: change the app with a deploy (`ferroserve deploy`, PUT /api/app), which every node applies"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks `app` as a deploy does, then hands it to the cluster.
    pub(super) async fn deploy_to_cluster(
        &self,
        link: Arc<dyn ClusterLink>,
        app: &AppConfig,
        registry: &Registry,
    ) -> Result<(), ConfigError> {
        check_app(app, registry, false)?;
        let what = format!(
            "deploy {} to the cluster ({} backends, {} endpoints)",
            app.file,
            app.spec.backends.len(),
            app.spec.endpoints.len()
        );
        match link.deploy(app.spec.clone()).await {
            Ok(()) => {
                self.history.record(what);
                Ok(())
            }
            Err(e) => {
                self.history.record(format!("{what} failed: {e}"));
                Err(located(app, 0, "app".to_owned(), e.to_string()))
            }
        }
    }

    /// Makes this node's app `app` with `share[backend]` replicas of each backend (0 for a
    /// backend it does not run): what the cluster applies when the app or the placement
    /// changes.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) async fn apply_share(
        &self,
        app: &AppSpec,
        share: &BTreeMap<String, usize>,
        registry: &Registry,
    ) -> Result<(), ConfigError> {
        let app = AppConfig {
            file: "the cluster's app".to_owned(),
            http: Default::default(),
            spec: app.clone(),
        };
        self.deploy_share(&app, registry, Some(share)).await
    }
}
