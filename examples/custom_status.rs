//! FAQ: "How do I use custom status codes in my response?" — a backend answering
//! `123 text/plain`, as the FAQ's Starlette example does; any status, headers and media type
//! go on the wire as given.
//!
//! ```text
//! cargo run --example custom_status -- --serve
//! curl -i localhost:8000/hello      # HTTP/1.1 123 Informational ... Hello, world!
//! ```
//!
//! A 1xx status is informational to HTTP clients (curl shows it, then reports an empty
//! reply), so Ferroserve closes the connection after it.

mod support;

use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, Request, Response};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn f(_request: Request) -> Result<Response, ferroserve::BackendError> {
    Ok(Response::text("Hello, world!")
        .with_status(StatusCode::from_u16(123)?)
        .with_media_type(HeaderValue::from_static("text/plain")))
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, _base) = support::start(&args).await?;
    let hello = BackendFactory::function(|req| async move { f(req) });
    serve
        .create_backend("hello", hello, BackendConfig::default())
        .await?;
    serve
        .create_endpoint("hello", EndpointConfig::backend("hello").route("/hello"))
        .await?;

    // The raw bytes on the wire.
    let addr = serve.local_addr().ok_or("no address")?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let status_line = raw.lines().next().unwrap_or_default();
    let media_type = raw
        .lines()
        .find(|l| l.starts_with("content-type:"))
        .unwrap_or_default();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    println!("{status_line} | {media_type} | {body}");

    // A handle gets the same response.
    let answer = serve.get_handle("hello")?.remote(()).await?;
    println!(
        "handle: {} {:?} {}",
        answer.status().as_u16(),
        answer.media_type(),
        answer.body_text()?
    );
    support::finish(&args, serve).await;
    Ok(())
}
