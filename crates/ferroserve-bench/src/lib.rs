//! Shared pieces of the Ferroserve benchmarks: the no-op backend and the command-line shape of the bench servers.

use std::net::SocketAddr;

use ferroserve::{Backend, BackendError, Request, Response};

/// The no-op backend every Ferroserve row measures: answers `ok` as `text/plain`.
pub struct Noop;

impl Backend for Noop {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        Ok(Response::static_text("ok"))
    }
}

/// Prints the line the runner waits for.
pub fn announce(addr: SocketAddr) {
    println!("listening on http://{addr}");
}
