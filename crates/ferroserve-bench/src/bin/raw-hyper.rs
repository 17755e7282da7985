//! The physical-limit baseline: a bare hyper HTTP/1.1 server answering `ok`, with the same
//! runtime, socket options and connection handling as Ferroserve's proxy.

use std::convert::Infallible;

use bytes::Bytes;
use clap::Parser;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A bare hyper server answering `ok`.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    ferroserve_bench::announce(listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
