//! A node of the cluster: starts the lease, election, watch, apply and report tasks beside a server, deploys through etcd, and leaves cleanly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use super::etcd::Etcd;
use super::model::NodeInfo;
use super::view::View;
use super::{ClusterOptions, election, sync};
use crate::backend::Registry;
use crate::config::AppSpec;
use crate::error::ServeError;
use crate::serve::{ClusterLink, Serve};

/// How long leaving waits for etcd to revoke the node's lease.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a deploy waits for its app to be saved and applied on this node.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// This node's last apply: the app revision and its failure, if it failed.
#[derive(Debug, Clone, Default)]
pub(super) struct Applied {
    pub(super) revision: i64,
    pub(super) error: Option<String>,
}

/// What the node's tasks share.
pub(super) struct Inner {
    pub(super) etcd: Etcd,
    pub(super) options: ClusterOptions,
    pub(super) me: NodeInfo,
    pub(super) serve: Weak<Serve>,
    pub(super) registry: Registry,
    /// The lease this node holds (0: none, it is not registered).
    pub(super) lease: AtomicI64,
    /// While it leads: the lease it won with, and the leader key's create revision, which
    /// fences its writes.
    pub(super) leading: Mutex<Option<(i64, i64)>>,
    /// What it last read from etcd.
    pub(super) view: Mutex<View>,
    /// Bumped on every change of the view.
    pub(super) changes: tokio::sync::watch::Sender<u64>,
    /// Its last apply.
    pub(super) applied: tokio::sync::watch::Sender<Applied>,
    /// While it leads: the autoscaling policies of the app's autoscaled backends.
    pub(super) scalers: super::autoscale::Scalers,
}

impl Inner {
    /// The view, for a read that does not await while it holds it.
    pub(super) fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leader key's revision while this node leads under the lease it holds now.
    pub(super) fn leading(&self) -> Option<i64> {
        let leading = *self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        leading
            .filter(|(lease, _)| self.lease() == Some(*lease))
            .map(|(_, revision)| revision)
    }

    /// Sets leadership won under `(lease, revision)` — only if that lease is still the
    /// node's — or clears it; says so when it changes.
    pub(super) fn set_leading(&self, won: Option<(i64, i64)>, why: &str) {
        let mut leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        let won = won.filter(|(lease, _)| self.lease() == Some(*lease));
        if leading.is_some() != won.is_some() {
            match won {
                Some(_) => tracing::info!(node = self.me.name, "elected cluster controller"),
                None => tracing::warn!(node = self.me.name, "no longer the controller: {why}"),
            }
        }
        *leading = won;
    }

    /// The lease this node holds, if any.
    pub(super) fn lease(&self) -> Option<i64> {
        Some(self.lease.load(Ordering::Acquire)).filter(|&l| l != 0)
    }
}

/// This server as a node of a cluster on etcd. Dropping it stops its tasks; [`leave`]
/// also gives up its lease at once, so that others take over its replicas without waiting
/// for the lease to expire.
///
/// [`leave`]: ClusterNode::leave
pub struct ClusterNode {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterNode {
    /// Joins the cluster `options` names: registers this node, takes part in elections,
    /// and from now on serves this node's share of the cluster's app. With `initial`, that
    /// app is saved as the cluster's app if it has none yet (a saved app wins, as a state
    /// directory's does).
    pub async fn join(
        serve: &Arc<Serve>,
        registry: Registry,
        options: ClusterOptions,
        initial: Option<AppSpec>,
    ) -> Result<Self, String> {
        let etcd = Etcd::connect(&options.endpoints, &options.prefix).await?;
        let me = NodeInfo {
            name: options.node_name.clone(),
            peer: options.peer,
            proxy: options.proxy,
            cpus: options.cpus,
            memory_bytes: options.memory_bytes,
            gpus: options.gpus,
        };
        let inner = Arc::new(Inner {
            etcd,
            options,
            me,
            serve: Arc::downgrade(serve),
            registry,
            lease: AtomicI64::new(0),
            leading: Mutex::new(None),
            view: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
            applied: tokio::sync::watch::Sender::new(Applied::default()),
            scalers: Default::default(),
        });
        serve.join_cluster(Arc::new(Link(inner.clone())));
        let tasks = vec![
            tokio::spawn(election::keep_lease(inner.clone())),
            tokio::spawn(election::lead(inner.clone())),
            tokio::spawn(sync::watch(inner.clone())),
            tokio::spawn(sync::apply(inner.clone())),
            tokio::spawn(sync::route(inner.clone())),
            tokio::spawn(sync::report(inner.clone())),
            tokio::spawn(super::autoscale::drive(inner.clone())),
        ];
        if let Some(app) = initial {
            let inner = inner.clone();
            tokio::spawn(async move {
                if let Err(e) = save_app(&inner, &app, true).await {
                    tracing::error!("cannot save the app file to the cluster: {e}");
                }
            });
        }
        Ok(Self { inner, tasks })
    }

    /// The cluster as this node sees it.
    pub fn status(&self) -> serde_json::Value {
        status(&self.inner)
    }

    /// Leaves the cluster: stops the node's tasks and revokes its lease, which removes its
    /// record, its report and (if it led) the leader key at once.
    pub async fn leave(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(lease) = self.inner.lease() {
            let revoke = self.inner.etcd.call("lease revoke", |mut c| async move {
                c.lease_revoke(lease).await
            });
            if !matches!(tokio::time::timeout(LEAVE_TIMEOUT, revoke).await, Ok(Ok(_))) {
                tracing::warn!(
                    "leaving the cluster: etcd did not revoke the lease; it expires on its own"
                );
            }
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Saves `app` as the cluster's app (only if there is none, with `if_absent`), retrying
/// while etcd is unreachable, up to [`DEPLOY_TIMEOUT`]; the revision it was saved at.
async fn save_app(inner: &Inner, app: &AppSpec, if_absent: bool) -> Result<Option<i64>, String> {
    let key = inner.etcd.key("app");
    let json = serde_json::to_vec(app).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + DEPLOY_TIMEOUT;
    loop {
        let (key, json) = (key.clone(), json.clone());
        let saved = inner
            .etcd
            .call("save the app", move |mut c| {
                let (key, json) = (key.clone(), json.clone());
                async move {
                    let put = TxnOp::put(key.clone(), json, None);
                    let when = if if_absent {
                        vec![Compare::create_revision(key, CompareOp::Equal, 0)]
                    } else {
                        Vec::new()
                    };
                    c.txn(Txn::new().when(when).and_then([put])).await
                }
            })
            .await;
        match saved {
            Ok(r) if r.succeeded() => return Ok(r.header().map(|h| h.revision())),
            Ok(_) => return Ok(None),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The cluster as `inner`'s node sees it, for status.
fn status(inner: &Inner) -> serde_json::Value {
    let view = inner.view();
    let applied = inner.applied.borrow().clone();
    let nodes: BTreeMap<&String, serde_json::Value> = view
        .nodes
        .iter()
        .map(|(name, node)| {
            let replicas = view.reports.get(name).map(|r| &r.replicas);
            (
                name,
                serde_json::json!({
                    "peer": node.peer, "proxy": node.proxy, "cpus": node.cpus,
                    "memory_bytes": node.memory_bytes, "gpus": node.gpus,
                    "replicas": replicas,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "node": inner.me.name,
        "leader": view.leader,
        "is_leader": inner.leading().is_some(),
        "registered": inner.lease().is_some(),
        "etcd_revision": view.revision,
        "app_revision": view.app.as_ref().map(|(_, r)| *r),
        "applied_revision": applied.revision,
        "apply_error": applied.error,
        "placement": view.placement,
        "nodes": nodes,
    })
}

/// The link a server deploys through.
struct Link(Arc<Inner>);

impl ClusterLink for Link {
    fn deploy(&self, app: AppSpec) -> BoxFuture<'_, Result<(), ServeError>> {
        Box::pin(async move {
            let unavailable = |message: String| ServeError::Unavailable(message);
            let revision = save_app(&self.0, &app, false)
                .await
                .map_err(|e| unavailable(format!("the app was not saved: {e}")))?
                .ok_or_else(|| ServeError::Internal("etcd refused the app".to_owned()))?;
            let mut applied = self.0.applied.subscribe();
            let waited =
                tokio::time::timeout(DEPLOY_TIMEOUT, applied.wait_for(|a| a.revision >= revision))
                    .await;
            match waited {
                // This app's apply, or a later one's, failed on this node.
                Ok(Ok(a)) => match &a.error {
                    Some(e) => Err(ServeError::Internal(format!(
                        "saved, but node `{}` could not apply it: {e}",
                        self.0.me.name
                    ))),
                    _ => Ok(()),
                },
                Ok(Err(_)) => Err(ServeError::ShuttingDown),
                Err(_) => Err(unavailable(format!(
                    "the app is saved (revision {revision}) but was not placed within {DEPLOY_TIMEOUT:?}: is a controller elected?"
                ))),
            }
        })
    }

    fn status(&self) -> serde_json::Value {
        status(&self.0)
    }

    fn app(&self) -> Option<AppSpec> {
        self.0.view().app.as_ref().map(|(app, _)| app.clone())
    }
}
