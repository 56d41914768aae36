//! A receiver on port 0 that records every request and answers from a plan.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with extra headers, e.g. `Retry-After`.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Never answer (until the client gives up).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Replies for the next requests, in order; `default` after they run out.
    plan: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl TestReceiver {
    /// Starts a receiver answering 200 unless told otherwise.
    pub async fn start() -> TestReceiver {
        let inner = Arc::new(Mutex::new(Inner {
            default: Some(Reply::Status(200)),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestReceiver { addr, inner }
    }

    /// Like [`TestReceiver::start`], on a given address (e.g. a port a test kept free so that
    /// hookd saw connection refused until now).
    pub async fn start_on(addr: SocketAddr) -> TestReceiver {
        let inner = Arc::new(Mutex::new(Inner {
            default: Some(Reply::Status(200)),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind receiver on {addr}: {e}"));
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestReceiver { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with `replies`, in order.
    pub fn plan(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().plan.extend(replies);
    }

    /// Answers every request not covered by a plan with `reply`.
    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    /// How many requests arrived so far (cheaper than `received().len()`).
    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// When the last request arrived, if any did.
    pub fn last_at(&self) -> Option<Instant> {
        self.inner.lock().unwrap().received.last().map(|r| r.at)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        super::wait_until(
            &format!("{n} requests at {}", self.addr),
            deadline,
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.received.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        let next = inner.plan.pop_front();
        next.or_else(|| inner.default.clone())
            .unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::WithHeaders(code, headers) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
