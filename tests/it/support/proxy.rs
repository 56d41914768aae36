//! A forward HTTP proxy on loopback for the tests, counting what it carries: requests in
//! absolute form (`POST http://host/path`, how an http:// target goes through a proxy) are
//! forwarded; `CONNECT host:port` (how an https:// one goes) is tunnelled. It refuses anything
//! not on loopback, so a test can never send a packet elsewhere through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Counts {
    forwarded: AtomicUsize,
    connects: AtomicUsize,
    /// The authority (`host:port`) of each CONNECT, in order, loopback or not.
    tunnels: Mutex<Vec<String>>,
    /// The authority (`host:port`) of each request forwarded in absolute form, in order.
    targets: Mutex<Vec<String>>,
    /// The `Proxy-Authorization` of each request or CONNECT ("" when absent).
    authorizations: Mutex<Vec<String>>,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
}

/// `authority` as a loopback address (`localhost` is 127.0.0.1); `None` for anything else.
fn loopback(authority: &str) -> Option<SocketAddr> {
    let authority = match authority.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => authority.to_string(),
    };
    let addr: SocketAddr = authority.parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

fn reply(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn handle(
    counts: Arc<Counts>,
    client: reqwest::Client,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let authorization = request
        .headers()
        .get("proxy-authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    counts
        .authorizations
        .lock()
        .expect("lock")
        .push(authorization);
    if request.method() == Method::CONNECT {
        counts.connects.fetch_add(1, Ordering::SeqCst);
        let authority = request
            .uri()
            .authority()
            .map_or_else(String::new, |a| a.to_string());
        counts.tunnels.lock().expect("lock").push(authority);
        let Some(target) = request.uri().authority().and_then(|a| loopback(a.as_str())) else {
            return Ok(reply(StatusCode::FORBIDDEN, "loopback only"));
        };
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let (Ok(upgraded), Ok(mut upstream)) =
                (upgrade.await, tokio::net::TcpStream::connect(target).await)
            {
                let mut upgraded = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut upstream).await;
            }
        });
        return Ok(reply(StatusCode::OK, ""));
    }
    counts.forwarded.fetch_add(1, Ordering::SeqCst);
    let uri = request.uri().clone();
    counts
        .targets
        .lock()
        .expect("lock")
        .push(uri.authority().map_or_else(String::new, |a| a.to_string()));
    let Some(target) = uri.authority().and_then(|a| loopback(a.as_str())) else {
        return Ok(reply(StatusCode::FORBIDDEN, "loopback only"));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let method = request.method().clone();
    let mut headers = request.headers().clone();
    for hop in [
        "proxy-authorization",
        "proxy-connection",
        "connection",
        "host",
    ] {
        headers.remove(hop);
    }
    let body = match axum::body::to_bytes(Body::new(request.into_body()), usize::MAX).await {
        Ok(b) => b,
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let sent = client
        .request(method, format!("http://{target}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    Ok(match sent {
        Ok(answer) => {
            // Streamed as it arrives, with its headers: a stream of server-sent events (what
            // `hookd listen` reads) goes through as it would through a real proxy.
            let status = answer.status();
            let headers = answer.headers().clone();
            let chunks = futures_util::stream::unfold(answer, |mut answer| async move {
                let chunk = answer.chunk().await.ok().flatten()?;
                Some((Ok::<Bytes, std::convert::Infallible>(chunk), answer))
            });
            let mut response = Response::new(Body::from_stream(chunks));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if !matches!(
                    name.as_str(),
                    "connection" | "transfer-encoding" | "content-length"
                ) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(_) => reply(StatusCode::BAD_GATEWAY, "upstream failed"),
    })
}

impl TestProxy {
    pub async fn start() -> TestProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(Counts::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("proxy client");
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counts, client) = (shared.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(counts.clone(), client.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestProxy { addr, counts }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded plus tunnels opened.
    pub fn carried(&self) -> usize {
        self.counts.forwarded.load(Ordering::SeqCst) + self.counts.connects.load(Ordering::SeqCst)
    }

    /// Requests forwarded in absolute form (http:// targets), tunnels aside.
    pub fn forwarded(&self) -> usize {
        self.counts.forwarded.load(Ordering::SeqCst)
    }

    /// The `host:port` each CONNECT asked for (https:// targets), in order: counted when the
    /// CONNECT arrives, before any TLS handshake through the tunnel.
    pub fn tunnels(&self) -> Vec<String> {
        self.counts.tunnels.lock().expect("lock").clone()
    }

    /// The `host:port` of each request forwarded in absolute form (http:// targets), in order.
    pub fn targets(&self) -> Vec<String> {
        self.counts.targets.lock().expect("lock").clone()
    }

    pub fn authorizations(&self) -> Vec<String> {
        self.counts.authorizations.lock().expect("lock").clone()
    }
}
