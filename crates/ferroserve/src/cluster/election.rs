//! The node's lease and the controller election: keep-alives every TTL/3 under a local deadline (a partitioned node stops counting itself alive after one TTL), a leader key created under the lease, and placement writes fenced on that key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::time::Instant;

use super::etcd::CALL_TIMEOUT;
use super::node::Inner;
use super::placement::{Demand, place};

/// Grants the node's lease, registers it under the lease, and keeps the lease alive. A
/// keep-alive that does not come back before one TTL has passed since the last one that
/// did (a partition makes calls hang rather than fail) means the lease is lost: the node
/// steps down at once and registers again under a new lease when etcd answers.
pub(super) async fn keep_lease(inner: Arc<Inner>) {
    let ttl_s = i64::try_from(inner.options.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    // The TTL etcd is given (whole seconds), so that the local deadline is never later.
    let ttl = Duration::from_secs(ttl_s.unsigned_abs());
    let tick = ttl / 3;
    let mut last_ok = Instant::now();
    loop {
        let Some(lease) = inner.lease() else {
            // Counted from before the grant: etcd's TTL starts when it grants.
            let asked = Instant::now();
            match register(&inner, ttl_s).await {
                Ok(lease) => {
                    last_ok = asked;
                    inner.lease.store(lease, Ordering::Release);
                    inner.changes.send_modify(|n| *n += 1);
                    tracing::info!(node = inner.me.name, lease, "registered in the cluster");
                }
                Err(e) => {
                    tracing::warn!(node = inner.me.name, "cannot register: {e}");
                    tokio::time::sleep(tick).await;
                }
            }
            continue;
        };
        // The next keep-alive after a tick, or at the deadline if it comes first: the node
        // steps down no later than one TTL after the last answered keep-alive, before etcd
        // (which counts from when it received that keep-alive) can let another lead.
        let deadline = last_ok + ttl;
        tokio::time::sleep_until((Instant::now() + tick).min(deadline)).await;
        match keep_alive(&inner, lease, deadline).await {
            KeepAlive::Answered(sent) => last_ok = sent,
            KeepAlive::Gone(why) => lose(&inner, lease, &why),
            KeepAlive::Unanswered => {
                if Instant::now() >= deadline {
                    lose(
                        &inner,
                        lease,
                        "no keep-alive was answered for one lease TTL",
                    );
                }
            }
        }
    }
}

/// What one round of keep-alives got.
enum KeepAlive {
    /// A member renewed the lease; the keep-alive was sent at this instant.
    Answered(Instant),
    /// etcd says the lease is gone.
    Gone(String),
    /// No member answered before the deadline.
    Unanswered,
}

/// Sends a keep-alive to one member after another (a hung member is given half a tick,
/// so that the others are tried before the deadline) until one answers or `deadline`.
async fn keep_alive(inner: &Inner, lease: i64, deadline: Instant) -> KeepAlive {
    let per_member = (inner.options.lease_ttl / 6).max(Duration::from_millis(100));
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            return KeepAlive::Unanswered;
        }
        let budget = deadline
            .saturating_duration_since(sent)
            .min(per_member)
            .min(CALL_TIMEOUT);
        let (member, mut client) = inner.etcd.client();
        // The client sends one keep-alive and reads its answer as the stream opens (an
        // expired lease is an error, "lease not found").
        match tokio::time::timeout(budget, client.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => return KeepAlive::Answered(sent),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
                return KeepAlive::Gone(format!("etcd says its lease is gone ({e})"));
            }
            Ok(Err(e)) => tracing::debug!("keep-alive: {e}"),
            Err(_) => tracing::debug!("keep-alive: no answer within {budget:?}"),
        }
        inner.etcd.skip(member);
        // A member that refused at once: a short pause before the next.
        tokio::time::sleep_until((sent + Duration::from_millis(50)).min(deadline)).await;
    }
}

/// Forgets `lease` and steps down; the lease is revoked in the background (once etcd
/// answers), so that the leader key and this node's records held by it go at once rather
/// than a TTL after etcd comes back.
fn lose(inner: &Arc<Inner>, lease: i64, why: &str) {
    inner.lease.store(0, Ordering::Release);
    inner.set_leading(None, why);
    tracing::warn!(node = inner.me.name, "lost the cluster lease: {why}");
    let inner = inner.clone();
    tokio::spawn(async move {
        for _ in 0..20 {
            let revoked = inner
                .etcd
                .call("lease revoke", |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
            match revoked {
                Ok(_) => return,
                Err(e) if e.contains("not found") => return,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    });
}

/// A new lease, and this node's record under it.
async fn register(inner: &Inner, ttl_s: i64) -> Result<i64, String> {
    let granted = inner
        .etcd
        .call("lease grant", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })
        .await?;
    let lease = granted.id();
    let key = inner.etcd.key(&format!("nodes/{}", inner.me.name));
    let value = serde_json::to_vec(&inner.me).map_err(|e| e.to_string())?;
    inner
        .etcd
        .call("register", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
    Ok(lease)
}

/// Campaigns for the leader key while not leading; while leading, places the app's
/// replicas whenever the view changes (and every TTL/3), in writes fenced on the leader
/// key: a deposed leader's write fails, and it steps down.
pub(super) async fn lead(inner: Arc<Inner>) {
    let tick = inner.options.lease_ttl / 3;
    let mut changes = inner.changes.subscribe();
    loop {
        let _ = tokio::time::timeout(tick, changes.changed()).await;
        let Some(lease) = inner.lease() else {
            continue;
        };
        if inner.leading().is_none() {
            match campaign(&inner, lease).await {
                // Only if the lease it won with is still the node's: it may have been
                // lost while the campaign waited for etcd.
                Ok(won) => inner.set_leading(won.map(|r| (lease, r)), "another node leads"),
                Err(e) => tracing::debug!("campaign: {e}"),
            }
        }
        if let Some(revision) = inner.leading()
            && let Err(e) = reconcile(&inner, revision).await
        {
            tracing::warn!(node = inner.me.name, "placement: {e}");
        }
    }
}

/// Creates the leader key under `lease` if no one holds it: the key's create revision if
/// this node leads.
async fn campaign(inner: &Inner, lease: i64) -> Result<Option<i64>, String> {
    let key = inner.etcd.key("leader");
    let me = inner.me.name.clone();
    let answer = inner
        .etcd
        .call("campaign", |mut c| {
            let (key, me) = (key.clone(), me.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        me,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                c.txn(txn).await
            }
        })
        .await?;
    if answer.succeeded() {
        return Ok(answer.header().map(|h| h.revision()));
    }
    // Someone holds it: this node, if an earlier attempt went through unanswered.
    for op in answer.op_responses() {
        if let etcd_client::TxnOpResponse::Get(get) = op
            && let Some(kv) = get.kvs().first()
            && kv.value() == inner.me.name.as_bytes()
            && kv.lease() == lease
        {
            return Ok(Some(kv.create_revision()));
        }
    }
    Ok(None)
}

/// Writes the placement of the app as the view has it, if it differs from the one in
/// etcd, fenced on the leader key still being this node's (`revision`).
pub(super) async fn reconcile(inner: &Inner, revision: i64) -> Result<(), String> {
    let placement = {
        let view = inner.view();
        let Some((app, app_revision)) = &view.app else {
            return Ok(());
        };
        let demands: Vec<Demand> = app
            .backends
            .iter()
            .map(|b| Demand {
                backend: b.name.clone(),
                replicas: super::autoscale::replicas_to_place(inner, view.placement.as_ref(), b),
                cpus: b.config.num_cpus,
                gpus: b.config.num_gpus,
                memory_bytes: b.config.memory,
                max_per_node: b.config.max_replicas_per_node,
            })
            .collect();
        let nodes: Vec<_> = view.nodes.values().cloned().collect();
        let previous = view.placement.clone().unwrap_or_default();
        let mut placement = place(&demands, &nodes, &previous);
        placement.app_revision = *app_revision;
        placement.leader = inner.me.name.clone();
        if view.placement.as_ref() == Some(&placement) {
            return Ok(());
        }
        placement
    };
    let json = serde_json::to_vec(&placement).map_err(|e| e.to_string())?;
    let (leader, key) = (inner.etcd.key("leader"), inner.etcd.key("placement"));
    let me = inner.me.name.clone();
    let answer = inner
        .etcd
        .call("write the placement", |mut c| {
            let (leader, key, json, me) = (leader.clone(), key.clone(), json.clone(), me.clone());
            async move {
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(leader.clone(), CompareOp::Equal, revision),
                        Compare::value(leader, CompareOp::Equal, me),
                    ])
                    .and_then([TxnOp::put(key, json, None)]);
                c.txn(txn).await
            }
        })
        .await?;
    if answer.succeeded() {
        tracing::info!(
            app_revision = placement.app_revision,
            "placement written: {:?}",
            placement.backends
        );
    } else {
        inner.set_leading(None, "the leader key is no longer this node's (deposed)");
    }
    Ok(())
}

/// How long the tasks wait before retrying after etcd failed them.
pub(super) const RETRY: Duration = Duration::from_millis(300);
