//! Shared pieces of the Ferroserve benchmarks: the no-op backend, the command-line shape of the bench servers, and starting them.

pub mod servers;

/// How long each row is measured, in interleaved rounds: the flags every runner takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Timing {
    /// Seconds each row is measured (split into --rounds).
    #[arg(long, default_value_t = 12)]
    pub duration: u64,
    /// Rounds each row's time is split into, interleaved across rows; the median counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferroserve::{Backend, BackendError, Methods, Request, Response};

/// The no-op backend every Ferroserve row measures: answers `ok` as `text/plain`.
pub struct Noop;

impl Backend for Noop {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        Ok(Response::static_text("ok"))
    }
}

/// A batch-friendly model: every call costs a fixed 50 µs of CPU (think of a kernel launch
/// or a framework's per-call overhead) plus 1 µs per input, so batching amortises the fixed
/// part. `__call__` is its batch method.
pub struct BatchFriendly;

/// The fixed CPU cost of one call of [`BatchFriendly`].
pub const PER_CALL: Duration = Duration::from_micros(50);
/// The CPU cost of one input of [`BatchFriendly`].
pub const PER_ITEM: Duration = Duration::from_micros(1);

/// Keeps the CPU busy for `work`, as model code does.
fn spin(work: Duration) {
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

impl Backend for BatchFriendly {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        spin(PER_CALL + PER_ITEM);
        Ok(Response::static_text("ok"))
    }

    fn batch_methods(&self) -> Methods {
        Methods::only(["__call__"])
    }

    async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        let items = u32::try_from(requests.len()).unwrap_or(u32::MAX);
        spin(PER_CALL + PER_ITEM * items);
        Ok(requests
            .iter()
            .map(|_| Response::static_text("ok"))
            .collect())
    }
}

/// Prints the line the runner waits for.
pub fn announce(addr: SocketAddr) {
    println!("listening on http://{addr}");
}
