//! The intake's HTTP/1.1 server: its own accept loop instead of `axum::serve`, because the
//! fleet must survive clients that hold connections open (slowloris) and axum's loop has no
//! header-read timeout and no connection cap.
//!
//! - At most `max_connections` connections are open; past that the loop stops accepting and
//!   new connections wait in the kernel's backlog until one closes (as Go's LimitListener).
//! - A connection has `header_timeout` to deliver a request's headers, counted from when it
//!   opened or its previous response was sent; otherwise it is closed. This also bounds an
//!   idle kept-alive connection, a partial request line and a connection that sends nothing.
//! - Bodies are read by the route guard, within the body timeout (see [`super::limits`]).
//! - hyper answers requests it cannot parse by itself, with an empty body; [`JsonErrors`]
//!   gives those answers the API's JSON error shape too.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ConnectionStats;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to deliver a request's headers (also the idle keep-alive timeout).
    pub header_timeout: Duration,
}

/// hyper's own buffer for a request head. Larger than the guard's header limit
/// ([`super::limits::MAX_HEADER_BYTES`]), so an oversized header set reaches the guard and
/// gets its 431 with a JSON body; hyper's limit only stops what would not fit at all.
const HYPER_MAX_HEADER_BYTES: usize = 128 * 1024;
/// hyper's header count limit; the guard's is lower, for the same reason.
const HYPER_MAX_HEADERS: usize = 256;

/// A listener on `addr` whose accept queue holds `backlog` connections (the kernel caps it
/// at net.core.somaxconn). `TcpListener::bind` uses 128, as the standard library does: a
/// burst of connections past that was dropped by the kernel, and a client that sends
/// nothing after connecting never learns it (found by the slowloris drill).
pub fn bind(addr: SocketAddr, backlog: usize) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(backlog).unwrap_or(u32::MAX).max(128))
}

/// Serves `router` on `listener` until `stop`, then lets open requests finish.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnectionLimits, stats: Arc<ConnectionStats>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(HYPER_MAX_HEADER_BYTES)
        .max_headers(HYPER_MAX_HEADERS)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        if slots.available_permits() == 0 {
            stats.at_capacity.fetch_add(1, Ordering::Relaxed);
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause briefly instead of spinning.
                    tracing::warn!(message = "Accept failed; pausing before the next.", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (router, builder, stats, stop) = (router.clone(), builder.clone(), stats.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, router, &builder, &stats, stop).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: &hyper::server::conn::http1::Builder,
    stats: &ConnectionStats,
    stop: CancellationToken,
) {
    let dispatched = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(JsonErrors::new(stream, dispatched.clone()));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        dispatched.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(message = "Connection ended with an error.", error = %e);
    }
}

/// A connection's socket that rewrites hyper's automatic error answers (a request it could
/// not parse: 400, 414, 431, sent with an empty body before any handler ran) into the API's
/// JSON error shape.
///
/// Every dispatched request produces exactly one final response head, so a head written when
/// as many final heads as dispatched requests have already gone out is one hyper made up.
struct JsonErrors {
    inner: tokio::net::TcpStream,
    dispatched: Arc<AtomicU64>,
    heads: u64,
    /// The rest of a rewritten answer still to be written, and the length of hyper's own
    /// buffer to report once it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl JsonErrors {
    fn new(inner: tokio::net::TcpStream, dispatched: Arc<AtomicU64>) -> Self {
        Self { inner, dispatched, heads: 0, pending: None }
    }

    /// The JSON answer for one of hyper's automatic heads, if `buf` is one.
    fn replacement(&mut self, buf: &[u8]) -> Option<Vec<u8>> {
        let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        if status.first() == Some(&b'1') {
            return None; // 100 Continue: not a final head.
        }
        self.heads += 1;
        if self.heads <= self.dispatched.load(Ordering::Relaxed) {
            return None;
        }
        let (code, message) = match status {
            b"400" => ("bad_request", "the request could not be parsed as HTTP/1.1"),
            b"414" => ("uri_too_long", "the request target is too long"),
            b"431" => ("headers_too_large", "the request's headers are too large"),
            _ => return None,
        };
        let reason = std::str::from_utf8(&buf[9..]).ok()?.split("\r\n").next()?;
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        Some(format!("HTTP/1.1 {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes())
    }
}

impl AsyncRead for JsonErrors {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            if !buf.starts_with(b"HTTP/1.1 ") {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            match this.replacement(buf) {
                Some(answer) => this.pending = Some((answer, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        while let Some((rest, reported)) = this.pending.as_mut() {
            if rest.is_empty() {
                let reported = *reported;
                this.pending = None;
                return Poll::Ready(Ok(reported));
            }
            match Pin::new(&mut this.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    rest.drain(..n);
                }
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
