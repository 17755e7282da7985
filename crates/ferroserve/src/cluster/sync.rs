//! Keeping a node in step with the cluster: the view by get-then-watch, this node's share of the app applied, and its running replicas reported under its lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};

use super::election::RETRY;
use super::etcd::CALL_TIMEOUT;
use super::model::NodeReport;
use super::node::{Applied, Inner};
use super::view::View;
use crate::controller::status::ReplicaState;
use crate::serve::{RemoteTarget, Serve};

/// Reads everything under the prefix, then watches it from the next revision; after a
/// watch error, a cancel or a compaction, reads it all again. While etcd is out of reach
/// the last view stays (the node serves from it).
pub(super) async fn watch(inner: Arc<Inner>) {
    let prefix = inner.etcd.prefix();
    loop {
        let got = inner
            .etcd
            .call("read the cluster", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await;
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("{e}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut view = View {
            revision: got.header().map_or(0, |h| h.revision()),
            ..View::default()
        };
        for kv in got.kvs() {
            if let Some(key) = kv.key().strip_prefix(prefix.as_bytes())
                && let Ok(key) = std::str::from_utf8(key)
            {
                view.put(key, kv.value(), kv.mod_revision());
            }
        }
        let from = view.revision + 1;
        *inner.view() = view;
        inner.changes.send_modify(|n| *n += 1);
        let (member, mut client) = inner.etcd.client();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let started =
            tokio::time::timeout(CALL_TIMEOUT, client.watch(prefix.clone(), Some(options))).await;
        let Ok(Ok(mut stream)) = started else {
            inner.etcd.skip(member);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        loop {
            let Ok(Some(answer)) = stream.message().await else {
                inner.etcd.skip(member);
                break;
            };
            if answer.canceled() || answer.compact_revision() > 0 {
                tracing::info!(
                    "watch ended ({}); reading the cluster again",
                    answer.cancel_reason()
                );
                break;
            }
            if answer.events().is_empty() {
                continue;
            }
            {
                let mut view = inner.view();
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Some(key) = kv.key().strip_prefix(prefix.as_bytes()) else {
                        continue;
                    };
                    let Ok(key) = std::str::from_utf8(key) else {
                        continue;
                    };
                    match event.event_type() {
                        EventType::Put => view.put(key, kv.value(), kv.mod_revision()),
                        EventType::Delete => view.delete(key),
                    }
                    view.revision = view.revision.max(kv.mod_revision());
                }
            }
            inner.changes.send_modify(|n| *n += 1);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Applies this node's share of the app whenever the app or the placement changes (once
/// the placement is the one of the current app), and hands the routers the replicas other
/// nodes report.
pub(super) async fn apply(inner: Arc<Inner>) {
    let mut changes = inner.changes.subscribe();
    let mut last: Option<(i64, BTreeMap<String, usize>)> = None;
    let mut failed = false;
    let mut tried = tokio::time::Instant::now();
    loop {
        // A failed apply is tried again after a while even if nothing changes.
        let wait = if failed {
            RETRY_FAILED.saturating_sub(tried.elapsed())
        } else {
            Duration::MAX
        };
        if let Ok(Err(_)) = tokio::time::timeout(wait, changes.changed()).await {
            return;
        }
        let Some(serve) = inner.serve.upgrade() else {
            return;
        };
        let settled = {
            let view = inner.view();
            if view.app.is_none() && view.revision > 0 {
                // A cluster with no app yet: nothing to wait for.
                serve.set_deploying(false);
            }
            view.settled().map(|(app, revision, placement)| {
                (app.clone(), revision, placement.share_of(&inner.me.name))
            })
        };
        let Some((app, revision, share)) = settled else {
            continue;
        };
        let key = (revision, share);
        if last.as_ref() == Some(&key) && (!failed || tried.elapsed() < RETRY_FAILED) {
            continue;
        }
        tried = tokio::time::Instant::now();
        let applied = serve.apply_share(&app, &key.1, &inner.registry).await;
        let error = applied.err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::error!(
                node = inner.me.name,
                "applying the cluster's app: {e}; trying again in {RETRY_FAILED:?}"
            );
        }
        failed = error.is_some();
        serve.set_deploying(false);
        inner.applied.send_replace(Applied { revision, error });
        last = Some(key);
    }
}

/// How long after a failed apply it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(10);

/// Keeps the routers' remote replicas in step with the view, whenever it changes (also
/// while an apply runs, which can take minutes).
pub(super) async fn route(inner: Arc<Inner>) {
    let mut changes = inner.changes.subscribe();
    while changes.changed().await.is_ok() {
        let Some(serve) = inner.serve.upgrade() else {
            return;
        };
        remotes(&inner, &serve);
    }
}

/// Hands the routers, for each backend of the app, the replicas the other live nodes
/// report running (the same list again changes nothing).
fn remotes(inner: &Inner, serve: &Serve) {
    let view = inner.view();
    let names: Vec<&str> = view
        .app
        .iter()
        .flat_map(|(app, _)| app.backends.iter().map(|b| b.name.as_str()))
        .collect();
    // Backends no longer in the app: no remote replicas (and no connections kept for them).
    for gone in serve.remote_backends() {
        if !names.contains(&gone.as_str()) {
            serve.set_remote_replicas(&gone, Vec::new());
        }
    }
    let Some((app, _)) = &view.app else {
        return;
    };
    for backend in &app.backends {
        let targets: Vec<RemoteTarget> = view
            .reports
            .iter()
            .filter(|(node, _)| **node != inner.me.name)
            .filter_map(|(node, report)| Some((view.nodes.get(node)?, report)))
            .flat_map(|(node, report)| {
                report
                    .replicas
                    .get(&backend.name)
                    .into_iter()
                    .flatten()
                    .map(|replica| RemoteTarget {
                        node: node.name.clone(),
                        addr: node.peer,
                        replica: replica.clone(),
                    })
            })
            .collect();
        serve.set_remote_replicas(&backend.name, targets);
    }
}

/// How often a node's report may change for its load alone.
const LOAD_EVERY: Duration = Duration::from_secs(1);

/// Reports the replicas this node runs (those `RUNNING`) under its lease, whenever they
/// change or the lease is new.
pub(super) async fn report(inner: Arc<Inner>) {
    let key = inner.etcd.key(&format!("replicas/{}", inner.me.name));
    let mut reported: Option<(i64, NodeReport)> = None;
    let mut written = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(serve) = inner.serve.upgrade() else {
            return;
        };
        let Some(lease) = inner.lease() else {
            continue;
        };
        let status = serve.node_status();
        let load = serve.autoscaled_load();
        drop(serve);
        let report = NodeReport {
            app_revision: inner.applied.borrow().revision,
            replicas: status
                .backends
                .iter()
                .map(|(name, b)| {
                    let running = b
                        .replicas
                        .iter()
                        .filter(|r| r.state == ReplicaState::Running)
                        .map(|r| r.id.clone())
                        .collect();
                    (name.clone(), running)
                })
                .collect(),
            load,
        };
        let now = (lease, report);
        if reported.as_ref() == Some(&now) {
            continue;
        }
        // A change of load alone goes out at most once a second (the leader samples it
        // once a second); a change of replicas at once.
        if let Some((lease, before)) = &reported
            && *lease == now.0
            && before.replicas == now.1.replicas
            && before.app_revision == now.1.app_revision
            && written.elapsed() < LOAD_EVERY
        {
            continue;
        }
        let json = match serde_json::to_vec(&now.1) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("cannot encode the replica report: {e}");
                continue;
            }
        };
        let put = inner
            .etcd
            .call("report replicas", |mut c| {
                let (key, json) = (key.clone(), json.clone());
                async move {
                    c.put(key, json, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await;
        match put {
            Ok(_) => {
                reported = Some(now);
                written = tokio::time::Instant::now();
            }
            Err(e) => tracing::debug!("{e}"),
        }
    }
}
