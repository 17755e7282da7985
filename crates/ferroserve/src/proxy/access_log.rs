//! The access log: one line per HTTP request on stdout (text or JSON), written by a thread of its own so that a slow stdout never holds up a request; past its buffer, lines are dropped and counted.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::config::AccessLog;

/// Lines waiting for stdout at most; past it they are dropped.
const BUFFERED: usize = 16_384;

/// One request, as its line says it.
pub(super) struct Entry<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) route: Option<&'a str>,
    pub(super) endpoint: Option<&'a str>,
    pub(super) backend: Option<&'a str>,
    pub(super) replica: Option<&'a str>,
    pub(super) status: StatusCode,
    pub(super) took: Duration,
    pub(super) request_id: Option<&'a str>,
    pub(super) traceparent: Option<&'a str>,
}

impl Entry<'_> {
    /// The line in `format` (without its newline).
    pub(super) fn line(&self, format: AccessLog, at: SystemTime) -> String {
        let ms = self.took.as_secs_f64() * 1000.0;
        match format {
            AccessLog::Json => {
                let ts = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                serde_json::json!({
                    "ts": (ts * 1000.0).round() / 1000.0,
                    "method": self.method,
                    "path": self.path,
                    "route": self.route,
                    "endpoint": self.endpoint,
                    "backend": self.backend,
                    "replica": self.replica,
                    "status": self.status.as_u16(),
                    "latency_ms": (ms * 1000.0).round() / 1000.0,
                    "request_id": self.request_id,
                    "traceparent": self.traceparent,
                })
                .to_string()
            }
            AccessLog::Text | AccessLog::Off => {
                let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
                // What a client sends is quoted (escaped), so that it cannot fake fields.
                let quoted =
                    |v: Option<&str>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:?}"));
                format!(
                    "{} {} {:?} {} {ms:.3}ms route={} endpoint={} backend={} replica={} request_id={} traceparent={}",
                    httpdate::fmt_http_date(at),
                    self.method,
                    self.path,
                    self.status.as_u16(),
                    or_dash(self.route),
                    or_dash(self.endpoint),
                    or_dash(self.backend),
                    or_dash(self.replica),
                    quoted(self.request_id),
                    quoted(self.traceparent),
                )
            }
        }
    }
}

/// The writer thread's end of the log.
struct Writer {
    lines: SyncSender<String>,
    dropped: AtomicU64,
}

/// Writes `line` to stdout soon; never blocks.
pub(super) fn write(line: String) {
    static WRITER: OnceLock<Option<Writer>> = OnceLock::new();
    let writer = WRITER.get_or_init(|| {
        let (lines, receiver) = sync_channel(BUFFERED);
        std::thread::Builder::new()
            .name("ferroserve-access-log".to_owned())
            .spawn(move || drain(&receiver))
            .map_err(|e| tracing::warn!("no access log: cannot start its thread: {e}"))
            .ok()?;
        Some(Writer {
            lines,
            dropped: AtomicU64::new(0),
        })
    });
    let Some(writer) = writer else { return };
    if let Err(TrySendError::Full(_)) = writer.lines.try_send(line) {
        let dropped = writer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(
                "stdout is slower than the requests: {dropped} access log lines dropped so far"
            );
        }
    }
}

/// Writes lines as they come, flushing when none wait.
fn drain(lines: &Receiver<String>) {
    let stdout = std::io::stdout();
    while let Ok(line) = lines.recv() {
        let mut out = stdout.lock();
        let mut ok = writeln!(out, "{line}").is_ok();
        while let Ok(line) = lines.try_recv() {
            ok &= writeln!(out, "{line}").is_ok();
        }
        ok &= out.flush().is_ok();
        // When stdout is gone (a closed pipe) the lines are lost, and draining goes on so
        // that senders never block.
        let _ = ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            method: "GET",
            path: "/hello/x",
            route: Some("/hello"),
            endpoint: Some("hello"),
            backend: Some("hello_v2"),
            replica: Some("hello_v2#1"),
            status: StatusCode::OK,
            took: Duration::from_micros(1234),
            request_id: Some("r-1"),
            traceparent: None,
        }
    }

    #[test]
    fn lines_say_who_served_what_and_how_fast() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_300_000);
        let json: serde_json::Value =
            serde_json::from_str(&entry().line(AccessLog::Json, at)).expect("JSON");
        assert_eq!(json["replica"], "hello_v2#1");
        assert_eq!(json["status"], 200);
        assert_eq!(json["latency_ms"], 1.234);
        assert_eq!(json["ts"], 1_764_300_000.0);
        assert!(json["traceparent"].is_null());
        let text = entry().line(AccessLog::Text, at);
        assert!(
            text.ends_with(
                "GET \"/hello/x\" 200 1.234ms route=/hello endpoint=hello backend=hello_v2 replica=hello_v2#1 request_id=\"r-1\" traceparent=-"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("Fri, 28 Nov 2025 03:20:00 GMT GET"),
            "{text}"
        );
    }
}
