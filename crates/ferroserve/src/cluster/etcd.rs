//! The etcd client: one connection per member, every call bounded by a deadline and moved to the next member when one fails, so that a dead member never keeps calls pinned to it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// How long one call to one member may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The cluster's etcd: a client per member and the one that answered last.
pub(crate) struct Etcd {
    members: Vec<(String, Client)>,
    current: AtomicUsize,
    prefix: String,
}

impl Etcd {
    /// Clients for `endpoints` (`host:port`); no connection is made until the first call.
    pub(crate) async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, String> {
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(CALL_TIMEOUT)
                .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
                .with_keep_alive_while_idle(true)
                // A member cut off from its quorum refuses at once instead of hanging.
                .with_require_leader(true);
            let client = Client::connect([format!("http://{endpoint}")], Some(options))
                .await
                .map_err(|e| format!("etcd endpoint {endpoint}: {e}"))?;
            members.push((endpoint.clone(), client));
        }
        if members.is_empty() {
            return Err("no etcd endpoint".to_owned());
        }
        Ok(Self {
            members,
            current: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
        })
    }

    /// `PREFIX/rest`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// The key prefix, with its trailing `/`.
    pub(crate) fn prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The client of the member that answered last, to start a stream on.
    pub(crate) fn client(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.members.len();
        (i, self.members[i].1.clone())
    }

    /// Moves on from member `i` (after a failed stream).
    pub(crate) fn skip(&self, i: usize) {
        let _ = self.current.compare_exchange(
            i,
            (i + 1) % self.members.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs `op` on one member after another until one answers within [`CALL_TIMEOUT`],
    /// for two rounds over the members at most. The error names the last failure.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, String>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..2 * n {
            let i = (start + attempt) % n;
            let (endpoint, client) = &self.members[i];
            match tokio::time::timeout(CALL_TIMEOUT, op(client.clone())).await {
                Ok(Ok(answer)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(e)) => last = format!("{endpoint}: {e}"),
                Err(_) => last = format!("{endpoint}: no answer within {CALL_TIMEOUT:?}"),
            }
            if attempt + 1 == n {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(format!("etcd {what} failed on every member (last: {last})"))
    }
}
