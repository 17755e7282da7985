//! A real etcd cluster for the cluster-mode tests: `n` members on 127.0.0.1, .2, .3, …,
//! each with free ports, a temporary data directory and fast election timings; members can
//! be killed and restarted. Killed on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd server binary (Debian's `etcd-server`), if installed.
pub fn etcd_bin() -> Option<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether the cluster tests must run (CI sets it): then a missing etcd fails them.
pub fn etcd_required() -> bool {
    std::env::var_os("FERROSERVE_REQUIRE_ETCD").is_some()
}

/// The etcd binary, or `None` after saying why the test is skipped; panics when etcd is
/// required.
pub fn etcd_or_skip(test: &str) -> Option<PathBuf> {
    let bin = etcd_bin();
    if bin.is_none() {
        assert!(
            !etcd_required(),
            "FERROSERVE_REQUIRE_ETCD is set but etcd is not installed (apt-get install etcd-server)"
        );
        super::skip(&format!(
            "{test}: etcd is not installed (apt-get install etcd-server)"
        ));
    }
    bin
}

/// One member of the test cluster.
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    /// A second client address (the first member's, on a network namespace's link).
    pub extra_client: Option<SocketAddr>,
    pub peer: SocketAddr,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    bin: PathBuf,
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    token: String,
    /// Which start this is (each has its own ports and data directories).
    attempt: u32,
}

/// A free port on `ip` (bound, then released: a tiny race that the tests accept).
fn free_port(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("binds a free port");
    listener.local_addr().expect("has an address")
}

impl EtcdCluster {
    /// Starts `n` members (127.0.0.1 to 127.0.0.n) and waits until the cluster has a leader.
    pub fn start(bin: PathBuf, n: usize) -> Self {
        Self::start_with(bin, n, None)
    }

    /// Starts `n` members, the first also serving clients on `extra_ip` (an address on a
    /// link to a network namespace). A start that does not become healthy (a port taken
    /// between its choice and etcd's bind, a slow machine) is tried again on new ports.
    pub fn start_with(bin: PathBuf, n: usize, extra_ip: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = Self {
            bin,
            members: Vec::new(),
            dir,
            token: String::new(),
            attempt: 0,
        };
        let mut logs = String::new();
        for attempt in 1..=3 {
            cluster.attempt = attempt;
            cluster.members = (1..=n)
                .map(|i| {
                    let ip = format!("127.0.0.{i}");
                    Member {
                        name: format!("etcd{i}"),
                        client: free_port(&ip),
                        extra_client: extra_ip.filter(|_| i == 1).map(free_port),
                        peer: free_port(&ip),
                        child: None,
                    }
                })
                .collect();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            cluster.token = format!("test-{}-{nanos}-{attempt}", std::process::id());
            for i in 0..n {
                cluster.spawn(i);
            }
            if cluster.healthy_within(Duration::from_secs(20)) {
                return cluster;
            }
            cluster.kill_all();
            logs.push_str(&format!("--- attempt {attempt}:\n{}", cluster.logs()));
        }
        panic!("etcd did not become healthy in 3 attempts:\n{logs}");
    }

    /// The data directory of member `i` in this attempt.
    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}-{}", self.members[i].name, self.attempt))
    }

    /// The end of each member's log in this attempt.
    fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.data_dir(i).with_extension("log"))
                    .unwrap_or_default();
                let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                format!("{} (newest first):\n{tail}\n", self.members[i].name)
            })
            .collect()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let m = &mut self.members[i];
        let client = match m.extra_client {
            Some(extra) => format!("http://{},http://{extra}", m.client),
            None => format!("http://{}", m.client),
        };
        let peer = format!("http://{}", m.peer);
        let child = Command::new(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Fast elections: a dead etcd leader is replaced within about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        m.child = Some(child);
    }

    /// `etcd://host:port,host:port,…`, as `--cluster` takes it.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.members.iter().map(|m| m.client.to_string()).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Whether member `i` answers `/health` with `true` (plain HTTP/1.0 over std, so that
    /// it works inside and outside a runtime).
    fn healthy(&self, i: usize) -> bool {
        use std::io::{Read, Write};
        let addr = self.members[i].client;
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// Whether every running member reports healthy (the cluster has a leader) within
    /// `within`.
    fn healthy_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .collect();
            if running.iter().all(|&i| self.healthy(i)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member reports healthy (the cluster has a leader).
    pub fn wait_healthy(&self, within: Duration) {
        assert!(
            self.healthy_within(within),
            "etcd did not become healthy within {within:?}:\n{}",
            self.logs()
        );
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.spawn(i);
        }
    }

    /// `kill -9` every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts every killed member again and waits for a healthy cluster.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_healthy(Duration::from_secs(30));
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
