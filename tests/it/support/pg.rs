//! PostgreSQL for the tests: a database of its own per test on the machine's server
//! (`HOOKD_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`, trust auth), dropped when
//! the test is done, and left-overs of killed test runs dropped on the next run. A test that
//! needs the server starts with [`unavailable`]: without one it is not run, and says so,
//! unless `HOOKD_REQUIRE_POSTGRES=1`.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The server's URL, without a database.
pub fn server() -> String {
    std::env::var("HOOKD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// The `host:port` of [`server`].
fn address() -> String {
    let url = server();
    let parsed = url::Url::parse(&url).unwrap_or_else(|e| panic!("HOOKD_TEST_PG {url:?}: {e}"));
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    format!("{host}:{}", parsed.port().unwrap_or(5432))
}

/// Whether the run must have the server (`HOOKD_REQUIRE_POSTGRES=1`; scripts/test.sh sets it):
/// then a test that needs it fails without it. Anything but `1`, `0` or nothing stops the run,
/// so that a typo does not quietly skip.
fn required() -> bool {
    required_by_env("HOOKD_REQUIRE_POSTGRES")
}

/// Whether the environment variable `name` is `1` (a test's dependency is required: a missing
/// one fails the test) rather than `0` or unset (the test says NOT RUN); tests/it/recipes.rs
/// reads `HOOKD_REQUIRE_RECIPES` with it. Anything else stops the run.
pub fn required_by_env(name: &str) -> bool {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) if v.is_empty() || v == "0" => false,
        Ok(v) if v == "1" => true,
        other => panic!("{name} must be \"1\" or \"0\", not {other:?}"),
    }
}

/// Whether something accepts a TCP connection at [`address`]: checked once per process, with a
/// short timeout.
fn answers() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        let Ok(addrs) = address().to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
    })
}

/// For a test that needs the server, first thing: when nothing answers at its address, writes
/// `NOT RUN: no PostgreSQL on <host:port>` (to stderr itself, so that it shows in the run's
/// output) and returns true, and the test returns at once. With `HOOKD_REQUIRE_POSTGRES=1`
/// returns false whatever: the test runs, and fails on the missing server.
pub fn unavailable() -> bool {
    if required() || answers() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: NOT RUN: no PostgreSQL on {}",
        address()
    );
    true
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
