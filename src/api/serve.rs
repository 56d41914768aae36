//! The HTTP server loop of both listeners, with the limits a public-facing listener needs:
//! clients that send their headers slowly are cut off, idle kept-alive connections are closed
//! after their own, longer, timeout (`keepalive`), headers are bounded in size and count, and
//! shutdown stops accepting, then lets requests in progress finish.
//!
//! (`axum::serve` offers none of these knobs, so the accept loop is ours; the routing is axum's.)

use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::keepalive::{Connection, ReadLimits, TimedIo, Tracked};

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A client must send a request's whole header within this time of its first byte (of
    /// the connection's opening, for its first request).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Largest header section (request line and headers), in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// How long requests in progress may run after shutdown begins.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: ServeLimits,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Running out of file descriptors, for one: wait a little, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            // hyper's header timer also runs while a connection waits for its next request:
            // `TimedIo` keeps both read limits instead.
            .header_read_timeout(None)
            // hyper refuses a buffer below 8 KiB.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
        let timing = Connection::new(ReadLimits {
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
        });
        let connection = builder.serve_connection(
            TokioIo::new(TimedIo::new(stream, timing.clone())),
            Tracked::new(router.clone(), timing),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress at the end of the drain; closing them");
    }
}
