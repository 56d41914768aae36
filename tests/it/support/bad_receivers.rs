//! Receivers that misbehave at the TCP level, each on a free loopback port, served by tasks of
//! the test's runtime until it ends. (One that answers too late is [`super::slow_receiver`].)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a bad receiver");
    let addr = listener.local_addr().expect("its address");
    (listener, addr)
}

/// Accepts connections and hands each to `serve` in a task of its own.
async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Reads until the end of the request headers (or the connection ends).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Accepts, reads whatever comes and never answers; keeps the connection open until the
/// client closes it.
pub async fn silent() -> SocketAddr {
    serve_each(|mut stream| async move {
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Accepts and at once closes with `SO_LINGER` 0: the client gets a reset.
pub async fn resetting() -> SocketAddr {
    serve_each(|stream| async move {
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

/// Answers `200` with a chunked body that never ends (a chunk every few milliseconds until the
/// client goes away).
pub async fn endless() -> SocketAddr {
    serve_each(|mut stream| async move {
        read_head(&mut stream).await;
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
        loop {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Speaks plain HTTP to whoever connects: an `https://` URL on it fails in the TLS handshake.
pub async fn not_tls() -> SocketAddr {
    serve_each(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
    })
    .await
}
