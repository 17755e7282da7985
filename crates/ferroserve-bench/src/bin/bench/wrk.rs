//! What wrk sends and how its output is read: GETs, or POSTs of a body from a file.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::onnx::ONNX_DIR;

/// What wrk sends.
#[derive(Clone)]
pub(crate) enum Load {
    /// GET of a path.
    Get(String),
    /// POST of a body read from a file (an ONNX row's inference request), with a longer
    /// timeout than wrk's 2 s: a queue of 64 requests to a 60 ms model is 4 s long. JSON,
    /// or with `binary` Triton's binary tensor extension, whose JSON header's length is in
    /// the file `BODY.header`.
    Post {
        path: String,
        body: PathBuf,
        binary: bool,
    },
}

impl Load {
    fn path(&self) -> &str {
        match self {
            Self::Get(path) | Self::Post { path, .. } => path,
        }
    }

    /// The `Inference-Header-Content-Length` of a binary request.
    fn header_length(&self) -> anyhow::Result<Option<String>> {
        match self {
            Self::Post {
                body, binary: true, ..
            } => {
                let mut file = body.clone().into_os_string();
                file.push(".header");
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                Ok(Some(text.trim().to_owned()))
            }
            _ => Ok(None),
        }
    }
}

/// Waits until a server has finished the requests a load run left behind, by sending one
/// more inference, queued behind them, and waiting for its answer. wrk stops with up to
/// `-c` requests in flight; a server that runs one 60 ms inference at a time (and does not
/// drop an inference whose client left) has seconds of work left, which would otherwise
/// count against the next round. GET rows are left as they were.
pub(crate) fn drain(port: u16, load: &Load) -> anyhow::Result<()> {
    if !matches!(load, Load::Post { .. }) {
        return Ok(());
    }
    let answer = post_once(port, load, Duration::from_secs(120)).context("draining the server")?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "POST {} answered: {}",
            load.path(),
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    Ok(())
}

/// Sends a POST load's request once, on a connection of its own, and returns the whole
/// answer (head and body) as the server wrote it.
fn post_once(port: u16, load: &Load, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let Load::Post { path, body, .. } = load else {
        bail!("not a POST load");
    };
    let body = std::fs::read(body).with_context(|| format!("reading {}", body.display()))?;
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    let kind = match load.header_length()? {
        Some(length) => {
            format!("application/octet-stream\r\nInference-Header-Content-Length: {length}")
        }
        None => "application/json".to_owned(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    // Until the server closes; a server that keeps the connection open despite `close`
    // still gave its answer when the read times out.
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer)
        && (answer.is_empty()
            || !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ))
    {
        return Err(e.into());
    }
    Ok(answer)
}

/// Whether a POST load's request is answered 200 with a JSON body equal to `expected`: a
/// model server is ready once it predicts right, and every system must give the same
/// answer before it is timed. A chunked body is put together first.
pub(crate) fn answers(port: u16, load: &Load, expected: &serde_json::Value) -> bool {
    let Ok(answer) = post_once(port, load, Duration::from_secs(5)) else {
        return false;
    };
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let (head, body) = (
        String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase(),
        &answer[end + 4..],
    );
    if !head.starts_with("http/1.1 200") {
        return false;
    }
    let body = if head.contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_vec()
    };
    serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v == *expected)
}

/// The data of a chunked body: each chunk is a hexadecimal length line, the data, CRLF.
/// What does not parse ends it.
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..line_end]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let data = &rest[line_end + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    out
}

/// Parses wrk's latency values: `55.00us`, `1.20ms`, `2.00s`.
pub(crate) fn parse_duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// One row's numbers at one concurrency.
#[derive(Clone, Copy)]
pub(crate) struct Numbers {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Failed requests: non-2xx answers, socket errors and timeouts.
    pub(crate) errors: u64,
}

/// Runs wrk.
pub(crate) fn wrk(
    port: u16,
    load: &Load,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Numbers> {
    let url = format!("http://127.0.0.1:{port}{}", load.path());
    let mut command = Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{concurrency}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Load::Post { body, .. } = load {
        command
            .args(["--timeout", "60s", "-s", &format!("{ONNX_DIR}/post.lua")])
            .arg(&url)
            .arg("--")
            .arg(body);
        if let Some(length) = load.header_length()? {
            command.arg(length);
        }
    } else {
        command.arg(&url);
    }
    let output = command
        .output()
        .context("cannot run wrk (bench/run.sh installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", n] => rps = n.parse().ok(),
            ["50%", v] => p50 = parse_duration_us(v),
            ["99%", v] => p99 = parse_duration_us(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                let counts = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok());
                errors += counts.sum::<u64>();
            }
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(requests_per_sec), Some(p50_us), Some(p99_us)) => Ok(Numbers {
            requests_per_sec,
            p50_us,
            p99_us,
            errors,
        }),
        _ => bail!("cannot read wrk's output:\n{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_are_read_in_microseconds() {
        assert_eq!(parse_duration_us("55.00us"), Some(55.0));
        assert_eq!(parse_duration_us("1.20ms"), Some(1200.0));
        assert_eq!(parse_duration_us("2.00s"), Some(2_000_000.0));
        assert_eq!(parse_duration_us("fast"), None);
    }

    #[test]
    fn a_chunked_body_is_put_together() {
        assert_eq!(
            unchunk(b"5\r\n{\"cla\r\n6\r\nss\":2}\r\n0\r\n\r\n"),
            b"{\"class\":2}"
        );
        assert_eq!(unchunk(b"zz\r\n"), b"");
        assert_eq!(unchunk(b"ff\r\nshort"), b"");
        // A chunk may end inside a character: bytes, not text.
        let text = "é".as_bytes();
        let mut body = b"1\r\n".to_vec();
        body.extend_from_slice(&text[..1]);
        body.extend_from_slice(b"\r\n1\r\n");
        body.extend_from_slice(&text[1..]);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(unchunk(&body), text);
    }
}
