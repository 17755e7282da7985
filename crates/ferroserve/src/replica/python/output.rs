//! A worker's stdout and stderr: read from their pipes line by line (a line cut at [`MAX_LINE`] bytes, invalid UTF-8 replaced) into its replica's log, which keeps and echoes them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::backend::logs::{LogWriter, MAX_LINE, Stream};

/// The readers of one worker's pipes.
pub(super) struct Captured {
    readers: Vec<JoinHandle<()>>,
}

impl Captured {
    /// Starts reading the piped stdout and stderr of `child` into `log`.
    pub(super) fn start(child: &mut Child, log: &LogWriter) -> Self {
        let mut readers = Vec::with_capacity(2);
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                stdout,
                Stream::Stdout,
                log.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(
                stderr,
                Stream::Stderr,
                log.clone(),
            )));
        }
        Self { readers }
    }

    /// Waits, `within` at most, until both pipes are read to their end: once the worker
    /// has exited, its last lines are then in the ring (a process it started may hold the
    /// pipes open longer; its lines keep coming in).
    pub(super) async fn drained(self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            for reader in self.readers {
                let _ = reader.await;
            }
        })
        .await;
    }
}

/// Reads `pipe` to its end, writing each line to `log`.
async fn read_lines(mut pipe: impl AsyncRead + Unpin, stream: Stream, log: LogWriter) {
    let mut lines = Lines::default();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&chunk[..n], |line| log.push(stream, line)),
        }
    }
    lines.finish(|line| log.push(stream, line));
}

/// Splits bytes into lines, holding at most [`MAX_LINE`] bytes of the line under way.
#[derive(Debug, Default)]
struct Lines {
    /// The start of the line under way.
    line: Vec<u8>,
    /// Bytes of it past [`MAX_LINE`], dropped.
    cut: usize,
}

impl Lines {
    /// Takes `bytes`, giving each line they end to `emit`.
    fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            emit(self.take());
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Gives the last line, if it did not end with a newline, to `emit`.
    fn finish(mut self, emit: impl FnOnce(String)) {
        if !self.line.is_empty() || self.cut > 0 {
            emit(self.take());
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        let kept = bytes.len().min(room);
        self.line.extend_from_slice(&bytes[..kept]);
        self.cut += bytes.len() - kept;
    }

    /// The line under way as text (without a `\r` before its end), and a fresh start.
    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.line);
        let cut = std::mem::take(&mut self.cut);
        if cut == 0 && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if cut > 0 {
            // Cut inside a character: drop its first bytes rather than replace them.
            if let Err(e) = std::str::from_utf8(&bytes)
                && e.error_len().is_none()
            {
                bytes.truncate(e.valid_up_to());
            }
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if cut > 0 {
            text.push_str(&format!(" [… {cut} more bytes cut]"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.feed(chunk, |l| out.push(l));
        }
        lines.finish(|l| out.push(l));
        out
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(
            split(&[b"one\ntw", b"o\r\n\nthr", b"ee"]),
            ["one", "two", "", "three"]
        );
        assert_eq!(split(&[b"a\n"]), ["a"]);
        assert_eq!(split(&[]), Vec::<String>::new());
    }

    #[test]
    fn bad_utf8_is_replaced() {
        assert_eq!(split(&[b"caf\xc3\xa9 \xff!\n"]), ["café \u{fffd}!"]);
    }

    #[test]
    fn a_long_line_is_cut_and_says_so() {
        let long = vec![b'x'; MAX_LINE + 100];
        let lines = split(&[&long[..10], &long[10..], b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            lines[0].ends_with(" [… 100 more bytes cut]"),
            "{}",
            &lines[0][MAX_LINE..]
        );
        assert_eq!(lines[1], "next");
        // Cut inside a two-byte character: no half character is kept.
        let mut accented = vec![b'x'; MAX_LINE - 1];
        accented.extend_from_slice("é and more".as_bytes());
        let lines = split(&[&accented]);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE - 1)));
        assert!(
            !lines[0].contains('\u{fffd}'),
            "{}",
            &lines[0][MAX_LINE - 2..]
        );
        assert!(
            lines[0].ends_with(" [… 10 more bytes cut]"),
            "{}",
            &lines[0][MAX_LINE - 2..]
        );
    }

    #[tokio::test]
    async fn a_flood_of_output_never_holds_more_than_the_ring() {
        use crate::backend::logs::{RING_BYTES, WorkerLogs};
        use std::sync::Arc;
        let logs = Arc::new(WorkerLogs::without_echo());
        let log = logs.open("flood", "flood#0");
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "head -c 3000000 /dev/zero | tr '\\0' 'y'; echo; seq 1 5000",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        let captured = Captured::start(&mut child, &log.writer());
        let _ = child.wait().await;
        captured.drained(Duration::from_secs(10)).await;
        let lines = logs.tail("flood#0", 5000).expect("kept");
        let bytes: usize = lines.iter().map(|l| l.line.len()).sum();
        assert!(bytes <= RING_BYTES, "{bytes}");
        assert_eq!(lines.len(), crate::backend::logs::RING_LINES);
        let last = lines.last().expect("a line");
        assert_eq!((last.stream, last.line.as_str()), (Stream::Stdout, "5000"));
    }
}
