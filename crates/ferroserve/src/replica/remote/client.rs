//! `PeerClient`: one multiplexed HTTP/2 cleartext connection to one other node, shared by every remote replica there; connected lazily, reconnected after an error, pinged so that a dead peer is noticed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// How long a connection may take to open.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle connection is pinged, and how long a ping may go unanswered before
/// the connection is taken for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest header block accepted from a peer (a request's own headers ride in it).
pub(crate) const MAX_HEADER_LIST: u32 = 1024 * 1024;

/// How big what crosses may be: the proxy's request body limit for calls, and a bound on
/// answers so that no peer makes this node buffer without end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    /// The largest call body (`http.max_body_bytes`).
    pub(crate) max_call_bytes: usize,
    /// The largest answer body.
    pub(crate) max_answer_bytes: usize,
    /// The longest pause while a call's body arrives (`http.body_timeout_s`).
    pub(crate) body_idle: Duration,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_call_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
            max_answer_bytes: MAX_ANSWER_BYTES,
            body_idle: crate::config::DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The HTTP/2 window of one answer from a peer: how far it may run ahead of its reader.
const STREAM_WINDOW: u32 = 2 << 20;
/// The HTTP/2 window of a peer connection: what all its unread answers may hold.
const CONNECTION_WINDOW: u32 = 128 << 20;

/// The largest answer read from a peer: 1 GiB.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 30;

/// Why a call to a peer got no answer.
#[derive(Debug)]
pub(crate) enum PeerError {
    /// The request never left this node (no connection could be made, or the connection
    /// was gone before it was sent): safe to send again elsewhere.
    NotSent(String),
    /// The request was sent, and the connection failed before the whole answer came.
    Broken(String),
    /// The answer was larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSent(why) => write!(f, "the call was not sent: {why}"),
            Self::Broken(why) => write!(f, "the connection failed during the call: {why}"),
            Self::TooLarge(limit) => write!(f, "the answer was larger than {limit} bytes"),
        }
    }
}

/// An answer's body: read whole, or a stream still arriving (see `stream`).
pub(crate) enum AnswerBody {
    Whole(Bytes),
    Stream(hyper::body::Incoming),
}

/// An answer's parts.
pub(crate) type Answer = (StatusCode, HeaderMap, AnswerBody);

/// The client side of the connection to one node.
pub(crate) struct PeerClient {
    addr: SocketAddr,
    authority: String,
    limits: PeerLimits,
    /// The live connection's sender, if any (read without a lock on every call).
    sender: ArcSwapOption<SendRequest<Full<Bytes>>>,
    /// Held while a connection is being made, so that callers make one, not one each.
    connecting: tokio::sync::Mutex<()>,
}

impl PeerClient {
    /// A client of the node at `addr`; it connects at its first call.
    /// The largest answer (or chunk of a streamed one) read from the peer.
    pub(crate) fn max_answer_bytes(&self) -> usize {
        self.limits.max_answer_bytes
    }

    pub(crate) fn new(addr: SocketAddr, limits: PeerLimits) -> Self {
        Self {
            addr,
            authority: addr.to_string(),
            limits,
            sender: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The peer's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, for the requests' URIs.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The sender of a live connection, connecting if there is none.
    async fn sender(&self) -> Result<Arc<SendRequest<Full<Bytes>>>, PeerError> {
        if let Some(sender) = self.sender.load_full()
            && !sender.is_closed()
        {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.sender.load_full()
            && !sender.is_closed()
        {
            return Ok(sender);
        }
        self.sender.store(None);
        let sender = Arc::new(self.connect().await?);
        self.sender.store(Some(sender.clone()));
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let not_sent = |why: String| PeerError::NotSent(format!("{}: {why}", self.addr));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| not_sent(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| not_sent(e.to_string()))?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let handshake = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .max_header_list_size(MAX_HEADER_LIST)
            // Answers a caller has not read yet hold the connection's window: much wider
            // than a stream's, so that a few slow streamed answers cannot stall the other
            // calls on the connection (and bounded, as what it holds is memory here).
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(TokioIo::new(stream));
        let (sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| not_sent(format!("no HTTP/2 handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| not_sent(e.to_string()))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %addr, "peer connection closed: {e}");
            }
        });
        tracing::debug!(peer = %addr, "peer connection open");
        Ok(sender)
    }

    /// Sends `req` and reads the whole answer (bounded). Dropping the future resets the
    /// stream: the peer drops the call.
    pub(crate) async fn send(&self, req: http::Request<Bytes>) -> Result<Answer, PeerError> {
        let connection = self.sender().await?;
        let mut sender = (*connection).clone();
        let req = req.map(Full::new);
        let response = match sender.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => {
                let why = e.error().to_string();
                // The connection broke under us: this one is done for, even before hyper
                // has seen it close (a call sent in that window would break too).
                self.forget(&connection);
                return Err(if e.take_message().is_some() {
                    PeerError::NotSent(format!("{}: {why}", self.addr))
                } else {
                    PeerError::Broken(why)
                });
            }
        };
        let (parts, body) = response.into_parts();
        if parts.headers.contains_key(&super::wire::STREAM) {
            // Read by its caller, as fast as it takes the chunks.
            return Ok((parts.status, parts.headers, AnswerBody::Stream(body)));
        }
        let limit = self.limits.max_answer_bytes;
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    PeerError::TooLarge(limit)
                } else {
                    PeerError::Broken(e.to_string())
                }
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, AnswerBody::Whole(body)))
    }

    /// Forgets `connection` if it is still the current one (not one made since).
    fn forget(&self, connection: &Arc<SendRequest<Full<Bytes>>>) {
        self.sender.compare_and_swap(connection, None);
    }
}
