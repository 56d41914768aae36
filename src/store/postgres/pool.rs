//! Connections: the connection string and its TLS, the pools, and the statement helpers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;

use super::PgStore;
use crate::store::StoreError;

/// Runs `sql` as a statement prepared once per connection: parsed and planned once, not on every
/// run, and one round trip per run instead of two. For the statements of the delivery path; a
/// statement built from filters stays unprepared (each form would be cached for good).
pub(super) async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// [`query`] for a statement whose rows are not needed: the number of rows it changed.
pub(super) async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Backend(format!("postgres pool: {e}"))
    }
}

/// The TLS mode of a connection string: `sslmode` when given; otherwise off for loopback and
/// Unix-socket hosts and required elsewhere.
fn tls_config(config: &mut tokio_postgres::Config, url: &str) {
    use tokio_postgres::config::{Host, SslMode};
    if url.contains("sslmode") {
        return;
    }
    let local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    config.ssl_mode(if local {
        SslMode::Disable
    } else {
        SslMode::Require
    });
}

pub(super) fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| StoreError::Backend(format!("TLS roots: {e}")))?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(super) fn parse_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("storage.url: {e}")))?;
    tls_config(&mut config, url);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("hookd");
    Ok(config)
}

pub(super) fn make_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))
}

impl PgStore {
    /// A connection of the durable pool ([`PgStore::pool`]).
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(self.pool.get().await?)
    }

    /// A connection of the pool whose commits do not wait for the disk ([`PgStore::fast`]).
    pub(super) async fn fast_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(self.fast.get().await?)
    }

    /// (connections open, idle, callers waiting) of the pool.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let (a, b) = (self.pool.status(), self.fast.status());
        (
            a.size + b.size,
            a.available + b.available,
            a.waiting + b.waiting,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_for_local_hosts_and_required_elsewhere() {
        use tokio_postgres::config::SslMode;
        for (url, mode) in [
            ("postgres://u@127.0.0.1/db", SslMode::Disable),
            ("postgres://u@localhost/db", SslMode::Disable),
            ("host=/var/run/postgresql dbname=x", SslMode::Disable),
            ("postgres://u@db.internal/db", SslMode::Require),
            (
                "postgres://u@db.internal/db?sslmode=disable",
                SslMode::Disable,
            ),
        ] {
            let config = parse_config(url).expect("valid");
            assert_eq!(config.get_ssl_mode(), mode, "{url}");
        }
    }
}
