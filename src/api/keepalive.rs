//! The read deadlines of one HTTP/1 connection: the header timeout, counted from a request's
//! first byte, and the idle timeout, counted between requests.
//!
//! hyper's own `header_read_timeout` starts whenever hyper waits for a request head, which
//! includes the wait of a kept-alive connection for its next request: an idle connection was
//! closed at the header timeout, under clients whose pools keep connections longer (issue 26).
//! So hyper's timer is off, and the connection's reads go through [`TimedIo`], which knows
//! from [`Tracked`] (the service hyper calls once a request head is parsed, and whose response
//! body is dropped once written) whether a request is in progress, and so which limit applies:
//!
//! - before the first request: its head must be in within the header timeout of the
//!   connection's opening (a connection opened and left silent is cut then);
//! - between requests: the idle timeout, until the next request's first byte arrives; from
//!   then, the header timeout (headers trickled in are cut then);
//! - while a request is in progress: none here (its body has `api.body_read_timeout`).
//!
//! An idle connection past its idle timeout reads as closed by the client, so hyper closes it
//! as it would a client's close; a header timeout is a read error, which ends the connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{HeaderName, CONNECTION};
use axum::http::{HeaderValue, Request, Response, Version};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two read limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// A request head must be in within this time of its first byte (or, for a connection's
    /// first request, of the connection's opening).
    pub header: Duration,
    /// A connection may wait this long for its next request.
    pub idle: Duration,
}

/// Which limit cut a connection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Header,
    Idle,
}

/// What the connection has done so far: enough to know its next read deadline.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose head hyper has parsed and whose response is not yet written.
    in_progress: usize,
    /// Requests whose head hyper has parsed, ever.
    started: u64,
    /// When the last response was written.
    idle_since: Instant,
    /// The first byte read while no request was in progress: the next request's head began.
    first_byte: Option<Instant>,
    /// The connection's task, when a read waited without a deadline (a request in progress):
    /// woken when the response is written, so that the next read sets the idle deadline.
    /// (hyper may have polled its read for the next request before dropping the response
    /// body; nothing else would poll it again until the client sent something.)
    reader: Option<Waker>,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            opened: now,
            in_progress: 0,
            started: 0,
            idle_since: now,
            first_byte: None,
            reader: None,
        }
    }

    /// The instant the connection is cut off unless a request head is in by then, and by
    /// which limit; `None` while a request is in progress.
    fn deadline(&self, limits: ReadLimits) -> Option<(Instant, Limit)> {
        if self.in_progress > 0 {
            return None;
        }
        let (from, limit) = match (self.started, self.first_byte) {
            (0, _) => (self.opened, Limit::Header),
            (_, Some(first)) => (first, Limit::Header),
            (_, None) => (self.idle_since, Limit::Idle),
        };
        let span = match limit {
            Limit::Header => limits.header,
            Limit::Idle => limits.idle,
        };
        // Far enough for any limit the config allows; `checked_add` only fails past the
        // platform's clock range.
        let at = from
            .checked_add(span)
            .unwrap_or(from + Duration::from_secs(86_400 * 365));
        Some((at, limit))
    }

    fn read(&mut self, now: Instant) {
        if self.in_progress == 0 && self.first_byte.is_none() {
            self.first_byte = Some(now);
        }
    }

    fn request_started(&mut self) {
        self.in_progress += 1;
        self.started += 1;
        self.first_byte = None;
    }

    /// Returns the reader to wake, when the connection has become idle.
    fn response_written(&mut self, now: Instant) -> Option<Waker> {
        self.in_progress = self.in_progress.saturating_sub(1);
        if self.in_progress > 0 {
            return None;
        }
        self.idle_since = now;
        self.first_byte = None;
        self.reader.take()
    }
}

/// One connection's [`Activity`], shared by its reads ([`TimedIo`]) and its requests
/// ([`Tracked`]); both run in the connection's task, so the lock is never contended.
#[derive(Debug, Clone)]
pub struct Connection {
    activity: Arc<Mutex<Activity>>,
    limits: ReadLimits,
}

impl Connection {
    pub fn new(limits: ReadLimits) -> Connection {
        Connection {
            activity: Arc::new(Mutex::new(Activity::new(Instant::now()))),
            limits,
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // A panic while holding this lock cannot leave `Activity` half-updated (each change is
        // a few plain assignments), so a poisoned lock is used as it is.
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deadline(&self) -> Option<(Instant, Limit)> {
        self.activity().deadline(self.limits)
    }
}

/// A request in progress; dropped when its response has been written (or abandoned).
struct InProgress(Connection);

impl InProgress {
    fn new(connection: Connection) -> InProgress {
        connection.activity().request_started();
        InProgress(connection)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let reader = self.0.activity().response_written(Instant::now());
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// The connection's socket, whose reads end at the connection's deadline.
pub struct TimedIo<S> {
    inner: S,
    connection: Connection,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is set to.
    armed: Option<Instant>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, connection: Connection) -> TimedIo<S> {
        TimedIo {
            inner,
            connection,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

/// What a read returns when `limit` cuts the connection off.
fn cut(limit: Limit) -> Poll<io::Result<()>> {
    match limit {
        Limit::Idle => {
            tracing::debug!("closing a connection idle past api.idle_timeout");
            // End of input: hyper closes an idle connection as it would on the client's close.
            Poll::Ready(Ok(()))
        }
        Limit::Header => {
            tracing::debug!(
                "closing a connection whose request head took longer than api.header_read_timeout"
            );
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received within api.header_read_timeout",
            )))
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.connection.deadline();
        // Checked before reading too: a client trickling bytes is always readable.
        if let Some((at, limit)) = deadline {
            if Instant::now() >= at {
                return cut(limit);
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.connection.activity().read(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((at, limit)) = deadline else {
                    this.connection.activity().reader = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                if this.armed != Some(at) {
                    this.sleep.as_mut().reset(at);
                    this.armed = Some(at);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => cut(limit),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router as hyper calls it on one connection: marks each request in progress until its
/// response is written, and advertises the idle timeout (`Keep-Alive: timeout=N`).
#[derive(Clone)]
pub struct Tracked {
    router: TowerToHyperService<Router>,
    connection: Connection,
    keep_alive: HeaderValue,
}

impl Tracked {
    pub fn new(router: Router, connection: Connection) -> Tracked {
        // Whole seconds, rounded down: the header promises at least that long.
        let seconds = connection.limits.idle.as_secs().max(1);
        Tracked {
            router: TowerToHyperService::new(router),
            // ASCII letters, '=' and digits: always a valid header value.
            keep_alive: HeaderValue::try_from(format!("timeout={seconds}"))
                .expect("timeout=N is a header value"),
            connection,
        }
    }
}

/// `Keep-Alive` (RFC 7230 lists it among hop-by-hop headers; `http` has no constant for it).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether the client asked to close the connection after this request (then there is no
/// idle time to advertise).
fn closes(request: &Request<Incoming>) -> bool {
    let asked = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    asked || request.version() < Version::HTTP_11
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send + 'static>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_progress = InProgress::new(self.connection.clone());
        let keep_alive = (!closes(&request)).then(|| self.keep_alive.clone());
        let response = self.router.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(value) = keep_alive {
                response.headers_mut().entry(KEEP_ALIVE).or_insert(value);
            }
            Ok(response.map(|body| TrackedBody {
                body,
                _in_progress: in_progress,
            }))
        })
    }
}

/// A response body that holds its request in progress until hyper drops it, written.
pub struct TrackedBody {
    body: Body,
    _in_progress: InProgress,
}

impl HttpBody for TrackedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits {
        header: Duration::from_secs(1),
        idle: Duration::from_secs(3),
    };

    #[test]
    fn a_new_connection_has_the_header_timeout_from_its_opening() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        assert_eq!(
            a.deadline(LIMITS),
            Some((t0 + LIMITS.header, Limit::Header))
        );
        // A first byte late in that time does not extend it.
        a.read(t0 + Duration::from_millis(900));
        assert_eq!(
            a.deadline(LIMITS),
            Some((t0 + LIMITS.header, Limit::Header))
        );
    }

    #[test]
    fn between_requests_the_idle_timeout_then_the_header_timeout_from_the_first_byte() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        a.request_started();
        assert_eq!(a.deadline(LIMITS), None);
        // Body bytes read during the request start nothing.
        a.read(t0 + Duration::from_millis(10));
        let written = t0 + Duration::from_millis(20);
        assert!(a.response_written(written).is_none(), "no read waited");
        assert_eq!(
            a.deadline(LIMITS),
            Some((written + LIMITS.idle, Limit::Idle))
        );
        let first = written + Duration::from_millis(2500);
        a.read(first);
        a.read(first + Duration::from_millis(300));
        assert_eq!(
            a.deadline(LIMITS),
            Some((first + LIMITS.header, Limit::Header))
        );
        a.request_started();
        assert_eq!(a.deadline(LIMITS), None);
    }
}
