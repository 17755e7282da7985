//! The servers a benchmark starts: a process in its own group, on a free port, ready once a path answers 200, stopped with its children when dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The directory of the running binary, where the bench's other binaries are.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the runner has a directory")?
        .to_path_buf())
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process in its own process group, stopped (with its children) on drop.
pub struct Server {
    child: Child,
}

impl Server {
    /// Runs `command --port PORT` (with the bench's environment: `FERROSERVE_PYTHON`,
    /// quiet logs, a control API on a free port) until GET `path` answers 200.
    pub fn start(
        command: &[String],
        port: u16,
        path: &str,
        startup: Duration,
        python: &str,
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let (program, rest) = command.split_first().context("an empty command")?;
        let child = Command::new(program)
            .args(rest)
            .args(["--port", &port.to_string()])
            .env("FERROSERVE_PYTHON", python)
            .env("FERROSERVE_LOG", "warn")
            // Rows may run side by side: each server's control API on a port of its own.
            .env("FERROSERVE_CONTROL_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot run {program}"))?;
        let mut server = Self { child };
        let deadline = Instant::now() + startup;
        loop {
            if let Some(status) = server.child.try_wait()? {
                let mut err = String::new();
                if let Some(stderr) = server.child.stderr.take() {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        err.push_str(&line);
                        err.push('\n');
                    }
                }
                bail!("{program} exited with {status} before serving:\n{err}");
            }
            if http_ok(port, path) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("{program} did not serve {path} within {startup:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Whether GET `path` answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
