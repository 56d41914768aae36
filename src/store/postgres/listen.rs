//! Nodes telling each other of new work: `NOTIFY` on commits that added deliveries, `LISTEN`
//! to wake the scheduler. A hint only: the scheduler also polls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use super::lock;
use super::pool::{parse_config, tls};
use crate::store::StoreError;

/// The channel new deliveries are announced on.
const CHANNEL: &str = "hookd_due";

/// Tells other nodes of new work: one `NOTIFY` at a time, however many commits asked for it
/// meanwhile. (A `NOTIFY` inside each ingest transaction would serialize every commit on
/// PostgreSQL's notification lock.)
pub(super) async fn announce(pool: Pool, asked: Arc<Notify>) {
    loop {
        asked.notified().await;
        if let Ok(client) = pool.get().await {
            let _ = client
                .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await;
        }
    }
}

/// Listens for other nodes' announcements of new deliveries and wakes the scheduler; a hint
/// only (the scheduler also polls), so a lost connection is simply made again.
pub(super) async fn listen(url: String, waker: Arc<Mutex<Option<Arc<Notify>>>>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let waker = waker.clone();
        let connected = async {
            let config = parse_config(&url)?;
            let (client, mut connection) = config.connect(tls()?).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                use futures_util::StreamExt;
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<_, StoreError>((client, driver, async move {
                while rx.recv().await.is_some() {
                    if let Some(w) = lock(&waker).as_ref() {
                        w.notify_one();
                    }
                }
            }))
        }
        .await;
        match connected {
            Ok((client, driver, forward)) => {
                backoff = Duration::from_millis(200);
                forward.await;
                drop(client);
                driver.abort();
            }
            Err(e) => {
                tracing::debug!(error = %e, "postgres: LISTEN connection failed; polling meanwhile");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
