//! A node's view of the cluster: what it last read from etcd (the app, the leader, the placement, the nodes and their reports), kept by get-then-watch.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::model::{NodeInfo, NodeReport, Placement};
use crate::config::AppSpec;

/// Everything under the cluster's prefix, decoded.
#[derive(Debug, Default, Clone)]
pub(crate) struct View {
    /// The etcd revision it reflects.
    pub(crate) revision: i64,
    /// The desired app and the revision it was written at.
    pub(crate) app: Option<(AppSpec, i64)>,
    /// The leader's name.
    pub(crate) leader: Option<String>,
    /// The leader's placement.
    pub(crate) placement: Option<Placement>,
    /// The live nodes.
    pub(crate) nodes: BTreeMap<String, NodeInfo>,
    /// What each node runs.
    pub(crate) reports: BTreeMap<String, NodeReport>,
}

/// `value` as JSON of `T`; a value no node could have written is logged and ignored.
fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    serde_json::from_slice(value)
        .map_err(|e| tracing::warn!("ignoring {key} in etcd: {e}"))
        .ok()
}

impl View {
    /// Sets `key` (relative to the prefix) to `value`, written at `revision`.
    pub(crate) fn put(&mut self, key: &str, value: &[u8], revision: i64) {
        match key.split_once('/') {
            None if key == "app" => {
                self.app = decode::<AppSpec>(key, value).and_then(|app| match app.validate() {
                    Ok(()) => Some((app, revision)),
                    Err(e) => {
                        tracing::warn!("ignoring the app in etcd: {e}");
                        None
                    }
                });
            }
            None if key == "leader" => {
                self.leader = std::str::from_utf8(value).ok().map(str::to_owned);
            }
            None if key == "placement" => self.placement = decode(key, value),
            // What cannot be read replaces what was there: no stale address stays.
            Some(("nodes", name)) => {
                match decode::<NodeInfo>(key, value).filter(|n| n.name == name) {
                    Some(node) => self.nodes.insert(name.to_owned(), node),
                    None => self.nodes.remove(name),
                };
            }
            Some(("replicas", name)) => {
                match decode(key, value) {
                    Some(report) => self.reports.insert(name.to_owned(), report),
                    None => self.reports.remove(name),
                };
            }
            _ => {}
        }
    }

    /// Removes `key` (relative to the prefix).
    pub(crate) fn delete(&mut self, key: &str) {
        match key.split_once('/') {
            None if key == "app" => self.app = None,
            None if key == "leader" => self.leader = None,
            None if key == "placement" => self.placement = None,
            Some(("nodes", name)) => {
                self.nodes.remove(name);
            }
            Some(("replicas", name)) => {
                self.reports.remove(name);
            }
            _ => {}
        }
    }

    /// Whether the placement is the one for the app as it is now.
    pub(crate) fn settled(&self) -> Option<(&AppSpec, i64, &Placement)> {
        let (app, revision) = self.app.as_ref()?;
        let placement = self.placement.as_ref()?;
        (placement.app_revision == *revision).then_some((app, *revision, placement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_nodes_write_and_ignores_garbage() {
        let mut view = View::default();
        view.put("leader", b"a", 5);
        view.put(
            "nodes/a",
            br#"{"name":"a","peer":"127.0.0.1:9","cpus":2,"memory_bytes":1,"gpus":0}"#,
            6,
        );
        view.put(
            "nodes/b",
            br#"{"name":"x","peer":"127.0.0.1:9","cpus":2,"memory_bytes":1,"gpus":0}"#,
            7,
        );
        view.put("nodes/c", b"not json", 8);
        view.put("app", b"{\"backends\": 3}", 9);
        view.put(
            "placement",
            br#"{"app_revision":9,"leader":"a","backends":{}}"#,
            10,
        );
        view.put(
            "replicas/a",
            br#"{"app_revision":9,"replicas":{"m":["m#1"]}}"#,
            11,
        );
        assert_eq!(view.leader.as_deref(), Some("a"));
        assert_eq!(
            view.nodes.keys().collect::<Vec<_>>(),
            ["a"],
            "b's record names another node"
        );
        assert!(view.app.is_none());
        assert!(view.settled().is_none(), "no app");
        assert_eq!(view.reports["a"].replicas["m"], ["m#1"]);
        view.delete("nodes/a");
        view.delete("leader");
        assert!(view.nodes.is_empty() && view.leader.is_none());
    }
}
