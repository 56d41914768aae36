//! PostgreSQL for the tests: a database of its own per test on the machine's server
//! (`HOOKD_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`, trust auth), dropped when
//! the test is done, and left-overs of killed test runs dropped on the next run.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's URL, without a database.
pub fn server() -> String {
    std::env::var("HOOKD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A database of this test's own; dropped (with its connections) on drop.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// A URL reaching this database.
    pub fn url(&self) -> String {
        format!("{}/{}?sslmode=disable", server(), self.name)
    }
}

async fn admin() -> tokio_postgres::Client {
    let url = format!("{}/postgres?sslmode=disable", server());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (set HOOKD_TEST_PG): {e}"));
    tokio::spawn(connection);
    client
}

/// Creates a fresh database; drops the ones earlier test processes left (their pid is gone).
pub async fn create(tag: &str) -> TestDb {
    static N: AtomicU64 = AtomicU64::new(0);
    let client = admin().await;
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hookd\\_t\\_%'",
            &[],
        )
        .await
        .expect("list databases");
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    let name = format!(
        "hookd_t_{}_{}_{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    TestDb { name }
}

/// [`create`] for callers without a runtime, or inside one that must not be blocked on
/// (a current-thread test runtime): made from a thread with a runtime of its own.
pub fn create_blocking(tag: &str) -> TestDb {
    let tag = tag.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for creating a test database")
            .block_on(create(&tag))
    })
    .join()
    .unwrap_or_else(|_| panic!("creating a test database failed (see above)"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropped from a thread of its own: Drop may run inside or outside a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let client = admin().await;
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}
