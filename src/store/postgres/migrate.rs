//! The schema migrations: `schema_v*.sql`, each applied once, in order.

use super::pool::{parse_config, tls};
use crate::store::StoreError;

/// The schema versions, in order; each is applied once, in one transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema_v1.sql")),
    (2, include_str!("schema_v2.sql")),
    (3, include_str!("schema_v3.sql")),
    (4, include_str!("schema_v4.sql")),
    (5, include_str!("schema_v5.sql")),
    (6, include_str!("schema_v6.sql")),
    (7, include_str!("schema_v7.sql")),
    (8, include_str!("schema_v8.sql")),
    (9, include_str!("schema_v9.sql")),
];
/// The advisory lock migrations hold: nodes starting together apply them once.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6400_0001;

/// Applies the schema migrations not applied yet, under an advisory lock; returns the schema
/// version before and after.
pub async fn migrate(url: &str) -> Result<(i64, i64), StoreError> {
    let config = parse_config(url)?;
    let (mut client, connection) = config.connect(tls()?).await?;
    let driver = tokio::spawn(connection);
    let result = migrate_with(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn migrate_with(client: &mut tokio_postgres::Client) -> Result<(i64, i64), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

/// Applies the migrations after the database's version, each in its own transaction.
async fn apply(client: &mut tokio_postgres::Client) -> Result<(i64, i64), StoreError> {
    let before = schema_version(client).await?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if before > latest {
        return Err(StoreError::Backend(format!(
            "the database's hookd schema is version {before}, newer than this hookd knows ({latest}): upgrade hookd"
        )));
    }
    let mut now = before;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > before) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO hookd_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&version.to_string().into_bytes()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "postgres: schema migration applied");
        now = *version;
    }
    Ok((before, now))
}

/// The schema version the database holds; 0 for a database without hookd's tables.
async fn schema_version(client: &tokio_postgres::Client) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('hookd_meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt(
            "SELECT value FROM hookd_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
        .map(|r| r.get::<_, Vec<u8>>(0))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
