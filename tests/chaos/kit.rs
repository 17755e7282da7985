//! What the chaos scenarios share: a fixed-seed RNG, percentiles, memory readings, a raw
//! HTTP/1.1 client, load loops, and the one `CHAOS|` line each scenario reports.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// xorshift64*: enough randomness for garbage, the same on every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The `p`th percentile (0 to 100) of `samples`, which it sorts; zero when empty.
pub(crate) fn pct(samples: &mut [Duration], p: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// `d` in milliseconds, with one decimal.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A process's resident memory in kB, `None` once it is gone.
pub(crate) fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The processes whose parent is `pid` (a server's Python workers).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after the last `)`.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .collect()
}

/// The repository's `examples/python`, for `working_dir`.
pub(crate) fn python_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"))
}

/// `FAIL: ...` for each failed check, or `pass`.
pub(crate) fn verdict(checks: &[(bool, String)]) -> String {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what.as_str())
        .collect();
    if failed.is_empty() {
        "pass".to_owned()
    } else {
        format!("FAIL: {}", failed.join("; "))
    }
}

/// Prints the scenario's one `CHAOS|` line, then fails the test if a check failed.
pub(crate) fn report(scenario: &str, what: &str, figures: &str, checks: &[(bool, String)]) {
    let verdict = verdict(checks);
    let clean = |s: &str| s.replace('|', "/").replace('\n', " ");
    println!(
        "CHAOS|{}|{}|{}|{}",
        clean(scenario),
        clean(what),
        clean(figures),
        clean(&verdict)
    );
    assert_eq!(verdict, "pass", "{scenario}: {figures}");
}

/// Counts of labels, as `label n, label n` in first-seen order.
#[derive(Default)]
pub(crate) struct Tally(Vec<(String, usize)>);

impl Tally {
    pub(crate) fn add(&mut self, label: &str) {
        match self.0.iter_mut().find(|(l, _)| l == label) {
            Some((_, n)) => *n += 1,
            None => self.0.push((label.to_owned(), 1)),
        }
    }
    pub(crate) fn get(&self, label: &str) -> usize {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0, |(_, n)| *n)
    }
    pub(crate) fn merge(&mut self, other: Self) {
        for (label, n) in other.0 {
            for _ in 0..n {
                self.add(&label);
            }
        }
    }
    pub(crate) fn items(&self) -> &[(String, usize)] {
        &self.0
    }
    pub(crate) fn show(&self) -> String {
        let mut out = String::new();
        for (label, n) in &self.0 {
            let sep = if out.is_empty() { "" } else { ", " };
            let _ = write!(out, "{sep}{label} {n}");
        }
        out
    }
}

/// How a request on a raw connection ended.
#[derive(Debug)]
pub(crate) enum RawAnswer {
    /// A whole response: its status, and whether it said `Connection: close`.
    Status(u16, bool),
    /// The request was written, then the connection closed (or reset) before a whole answer.
    Lost(String),
    /// The request could not be written: the connection was closed already.
    Unsent(String),
}

/// The status of the whole response at the start of `buf` (a `Content-Length` body, or
/// none), and whether it said `Connection: close`; `None` while incomplete.
fn whole_response(buf: &[u8]) -> Option<(u16, bool)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default();
    (buf.len() >= end + 4 + length).then(|| (status, head.contains("\nconnection: close")))
}

/// Reads into `buf` until it holds a whole response: `Ok` with it, or `Err` with why not
/// (EOF, an error).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, bool), String> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(answer) = whole_response(buf) {
            return Ok(answer);
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.kind().to_string()),
        }
    }
}

/// Writes `request` on `stream` and reads one response with a `Content-Length` body.
pub(crate) async fn raw_request(stream: &mut TcpStream, request: &[u8]) -> RawAnswer {
    // A connection the server closed already (its FIN is here) takes no request: that is
    // the keep-alive race every client must retry, not a request the server dropped.
    match stream.try_read(&mut [0u8; 1]) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(0) => return RawAnswer::Unsent("closed before the write".to_owned()),
        Ok(_) => return RawAnswer::Unsent("unexpected bytes before the write".to_owned()),
        Err(e) => return RawAnswer::Unsent(e.kind().to_string()),
    }
    if let Err(e) = stream.write_all(request).await {
        return RawAnswer::Unsent(e.kind().to_string());
    }
    match read_response(stream, &mut Vec::with_capacity(1024)).await {
        Ok((status, close)) => RawAnswer::Status(status, close),
        Err(why) => RawAnswer::Lost(why),
    }
}

/// Sends `payload` and waits `patience` for a whole answer; without one, half-closes (so
/// that an incomplete request ends) and reads until the server closes, at most `wait`. The
/// status of the answer, or how the connection ended without one.
pub(crate) async fn send_garbage(
    addr: SocketAddr,
    payload: &[u8],
    patience: Duration,
    wait: Duration,
) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return "connect failed".to_owned();
    };
    let written = stream.write_all(payload).await.is_ok();
    let mut buf = Vec::new();
    let answer = match tokio::time::timeout(patience, read_response(&mut stream, &mut buf)).await {
        Ok(answer) => answer,
        Err(_) => {
            let _ = stream.shutdown().await;
            match tokio::time::timeout(wait, read_response(&mut stream, &mut buf)).await {
                Ok(answer) => answer,
                Err(_) => Err("no answer, still open".to_owned()),
            }
        }
    };
    match answer {
        Ok((status, _)) => status.to_string(),
        Err(_) if buf.starts_with(b"HTTP/1.1 ") => {
            String::from_utf8_lossy(&buf[9..12.min(buf.len())]).into_owned()
        }
        Err(why) if why.starts_with("no answer") => why,
        Err(_) if !buf.is_empty() => "not HTTP".to_owned(),
        Err(why) if why.starts_with("closed") => "closed, no answer".to_owned(),
        Err(_) if !written => "reset while sending".to_owned(),
        Err(_) => "reset".to_owned(),
    }
}

/// One request's outcome in a load run.
pub(crate) struct Outcome {
    /// Its status; 0 for a transport error.
    pub(crate) status: u16,
    pub(crate) retry_after: bool,
    pub(crate) latency: Duration,
    /// When the answer was complete.
    pub(crate) at: tokio::time::Instant,
    pub(crate) body: String,
}

/// Sends `request` (with a 30 s timeout) and reads the whole answer.
pub(crate) async fn timed(request: reqwest::RequestBuilder) -> Outcome {
    let sent = tokio::time::Instant::now();
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        Ok::<_, reqwest::Error>((status, retry_after, response.text().await?))
    };
    let (status, retry_after, body) =
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => (0, false, e.to_string()),
            Err(_) => (0, false, "no answer in 30 s".to_owned()),
        };
    Outcome {
        status,
        retry_after,
        latency: sent.elapsed(),
        at: tokio::time::Instant::now(),
        body,
    }
}

/// Open-loop load: `rate` requests a second for `duration`, each sent on schedule whether
/// or not earlier ones were answered (as independent users do), made by `make`.
pub(crate) async fn open_loop(
    rate: f64,
    duration: Duration,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Vec<Outcome> {
    let started = tokio::time::Instant::now();
    let total = (rate * duration.as_secs_f64()) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        let (tx, request) = (tx.clone(), make());
        tokio::spawn(async move {
            let _ = tx.send(timed(request).await);
        });
    }
    drop(tx);
    let mut outcomes = Vec::new();
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    outcomes
}

/// Closed-loop load: `connections` loops each sending the next request when the last is
/// answered, until `until` resolves; every outcome.
pub(crate) async fn closed_loop(
    connections: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
    pause: Duration,
    until: impl std::future::Future<Output = ()>,
) -> Vec<Outcome> {
    let make = std::sync::Arc::new(make);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let loops: Vec<_> = (0..connections)
        .map(|c| {
            let (make, stop, tx) = (make.clone(), stop.clone(), tx.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx.send(timed(make(c)).await);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    until.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = Vec::new();
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    for l in loops {
        l.await.expect("a load loop does not panic");
    }
    outcomes
}
