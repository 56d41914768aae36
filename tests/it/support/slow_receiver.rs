//! A receiver that answers `200` only after a delay, recording when each request started and
//! when its answer was sent: for attempts that are in flight while hookd stops.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct SlowRequest {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub started: Instant,
    /// Set when the handler returned its `200`.
    pub answered: Option<Instant>,
}

impl SlowRequest {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone)]
struct Inner {
    delay: Duration,
    requests: Arc<Mutex<Vec<SlowRequest>>>,
}

#[derive(Clone)]
pub struct SlowReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<SlowRequest>>>,
}

impl SlowReceiver {
    /// Starts on a free loopback port; every request is answered `200` after `delay`.
    pub async fn start(delay: Duration) -> SlowReceiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let inner = Inner {
            delay,
            requests: requests.clone(),
        };
        let app = Router::new().route("/hook", post(handle)).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind slow receiver");
        let addr = listener.local_addr().expect("slow receiver addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        SlowReceiver { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn requests(&self) -> Vec<SlowRequest> {
        self.requests.lock().unwrap().clone()
    }
}

async fn handle(State(inner): State<Inner>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let index = {
        let mut requests = inner.requests.lock().unwrap();
        requests.push(SlowRequest {
            headers,
            body,
            started: Instant::now(),
            answered: None,
        });
        requests.len() - 1
    };
    tokio::time::sleep(inner.delay).await;
    inner.requests.lock().unwrap()[index].answered = Some(Instant::now());
    StatusCode::OK
}
