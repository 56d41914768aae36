//! The store engine the integration tests run hookd on: `HOOKD_TEST_ENGINE=sled` (the default),
//! `fjall` or `postgres`. Under `fjall`, every config the support writes for a hookd (in-process
//! or the binary) gets `engine = "fjall"` at the top of its `[storage]` table; under `postgres`,
//! `engine = "postgres"` and the `url` of a database of the test's own. The database is keyed by the `[storage] path` the config names,
//! so a hookd started again on the same data directory finds its queue again, and it is dropped
//! once the directory holding that path is gone (checked when the next one is made; left-overs
//! of a finished run are dropped by the next run, see `pg::create`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use super::pg::TestDb;

/// The engines a run can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Fjall,
    Postgres,
}

/// The engine of this run, from `HOOKD_TEST_ENGINE`; anything but `sled`, `fjall`, `postgres`
/// or nothing stops the run, so that a typo does not quietly test sled.
pub fn current() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    *ENGINE.get_or_init(|| match std::env::var("HOOKD_TEST_ENGINE") {
        Err(std::env::VarError::NotPresent) => Engine::Sled,
        Ok(v) if v.is_empty() || v == "sled" => Engine::Sled,
        Ok(v) if v == "fjall" => Engine::Fjall,
        Ok(v) if v == "postgres" => Engine::Postgres,
        other => {
            panic!("HOOKD_TEST_ENGINE must be \"sled\", \"fjall\" or \"postgres\", not {other:?}")
        }
    })
}

/// Whether this run tests the PostgreSQL engine.
pub fn postgres() -> bool {
    current() == Engine::Postgres
}

/// The embedded backend of this run (sled on a PostgreSQL run: stores a test opens itself).
pub fn backend() -> hookd::store::embedded::Backend {
    match current() {
        Engine::Fjall => hookd::store::embedded::Backend::Fjall,
        Engine::Sled | Engine::Postgres => hookd::store::embedded::Backend::Sled,
    }
}

/// The databases made so far: the store path they stand for, the directory whose removal ends
/// them, the database.
type Registry = Vec<(String, Option<PathBuf>, Arc<TestDb>)>;
static DATABASES: Mutex<Registry> = Mutex::new(Vec::new());

/// The database standing for the store at `path` (a `[storage] path` value), made on first use.
/// An empty or relative path names no directory of the test's: it gets a fresh database each
/// time, kept until the run ends.
pub fn database_for(path: &str) -> Arc<TestDb> {
    let absolute = Path::new(path).is_absolute();
    let (gone, db) = {
        let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        let (live, gone): (Registry, Registry) = std::mem::take(&mut *dbs)
            .into_iter()
            .partition(|(_, dir, _)| dir.as_ref().is_none_or(|d| d.exists()));
        *dbs = live;
        let known = dbs
            .iter()
            .find(|(key, _, _)| absolute && key == path)
            .map(|(_, _, db)| db.clone());
        let db = known.unwrap_or_else(|| {
            let db = Arc::new(super::pg::create_blocking(&test_tag()));
            let dir = absolute
                .then(|| Path::new(path).parent().map(Path::to_path_buf))
                .flatten();
            dbs.push((path.to_string(), dir, db.clone()));
            db
        });
        (gone, db)
    };
    // Dropping a database waits for the server: not under the lock.
    drop(gone);
    db
}

/// The database name's tag: the running test's own name (its last segment).
fn test_tag() -> String {
    std::thread::current()
        .name()
        .and_then(|n| n.rsplit("::").next())
        .unwrap_or("it")
        .to_string()
}

/// `text` (a hookd config) with the engine's keys at the top of its `[storage]` table. Unchanged
/// on sled, without a `[storage]` table, or when the table names an engine already (the call is
/// idempotent).
pub fn apply(text: &str) -> String {
    if current() == Engine::Sled {
        return text.to_string();
    }
    let Ok(parsed) = text.parse::<toml::Table>() else {
        // A file that is meant to be refused: hookd says why, whatever the engine.
        return text.to_string();
    };
    let Some(storage) = parsed.get("storage").and_then(toml::Value::as_table) else {
        return text.to_string();
    };
    if storage.contains_key("engine") {
        return text.to_string();
    }
    let keys = if postgres() {
        let path = storage
            .get("path")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        let url = database_for(path).url();
        format!("engine = \"postgres\"\nurl = {url:?}\n")
    } else {
        "engine = \"fjall\"\n".to_string()
    };
    let mut out = String::with_capacity(text.len() + 128);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if !done && line.trim() == "[storage]" {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&keys);
            done = true;
        }
    }
    assert!(done, "no `[storage]` line to add the engine to in:\n{text}");
    out
}

/// [`apply`] to the config file `path`, rewritten in place when it changes.
pub fn apply_file(path: &Path) {
    if current() == Engine::Sled {
        return;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let applied = apply(&text);
    if applied != text {
        std::fs::write(path, applied).expect("rewrite the config with the test engine");
    }
}

/// [`apply_file`] to the `--config` file of a `hookd run` command.
pub fn apply_to_command(command: &Command) {
    let args: Vec<_> = command.get_args().collect();
    for (i, arg) in args.iter().enumerate() {
        if *arg == "--config" {
            if let Some(path) = args.get(i + 1) {
                apply_file(Path::new(path));
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            apply_file(Path::new(path));
        }
    }
}

/// The store of a stopped hookd whose `[storage] path` was `path`, opened on the test engine:
/// the embedded store's files there, or the database standing for them.
pub async fn open_store(path: &Path) -> Arc<dyn hookd::store::Store> {
    if !postgres() {
        let store = hookd::store::embedded::EmbeddedStore::open(backend(), path, 1 << 20)
            .expect("open the store of the stopped hookd");
        return Arc::new(store);
    }
    let url = database_for(path.to_str().expect("a UTF-8 store path")).url();
    hookd::store::postgres::PgStore::open(hookd::store::postgres::PgOptions {
        url,
        pool_size: 2,
        lease: std::time::Duration::from_secs(60),
        db_clock: true,
    })
    .await
    .expect("open the database of the stopped hookd")
}
