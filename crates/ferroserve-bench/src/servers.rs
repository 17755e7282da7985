//! The servers a benchmark starts: a process in its own group, on a free port, ready once a path answers 200 (or a check passes), stopped with its children when dropped.

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
    started: Duration,
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
        Self::start_until(command, port, startup, python, &|port| http_ok(port, path))
            .with_context(|| format!("waiting for GET {path}"))
    }

    /// Runs `command --port PORT` as [`Server::start`] does, until `ready(PORT)` is true
    /// (checked every 20 ms): a model server is ready once it answers a prediction right.
    pub fn start_until(
        command: &[String],
        port: u16,
        startup: Duration,
        python: &str,
        ready: &dyn Fn(u16) -> bool,
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let began = Instant::now();
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
        let mut server = Self {
            child,
            started: Duration::ZERO,
        };
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
            if ready(port) {
                server.started = began.elapsed();
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("{program} was not ready within {startup:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long the server took from its spawn until it was ready: its cold start.
    pub fn started(&self) -> Duration {
        self.started
    }

    /// The proportional set size (PSS) of the server's processes, in MB: every process
    /// descended from it, and every one left in its process group (a daemon it started
    /// that was handed to init). Memory the processes share (a forked worker's pages,
    /// libraries) counts once, split among them, unlike a sum of RSS.
    pub fn pss_mb(&self) -> Option<f64> {
        let root = self.child.id();
        // (pid, parent, group) of every process: the fields after `(comm)` in /proc/PID/stat.
        let mut table = Vec::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let fields: Vec<u32> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().skip(1).take(2))
                .into_iter()
                .flatten()
                .filter_map(|f| f.parse().ok())
                .collect();
            if let [parent, group] = fields[..] {
                table.push((pid, parent, group));
            }
        }
        let mut ours: Vec<u32> = vec![root];
        let mut grew = true;
        while grew {
            grew = false;
            for &(pid, parent, group) in &table {
                if !ours.contains(&pid) && (ours.contains(&parent) || group == root) {
                    ours.push(pid);
                    grew = true;
                }
            }
        }
        // None when no process of it could be read, rather than a misleading 0.
        let read: Vec<f64> = ours.iter().filter_map(|pid| pss_kb(*pid)).collect();
        (!read.is_empty()).then(|| read.iter().sum::<f64>() / 1024.0)
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

/// The PSS of one process, in kB (`Pss:` of /proc/PID/smaps_rollup).
fn pss_kb(pid: u32) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
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
