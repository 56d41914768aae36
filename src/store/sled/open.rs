//! Opening a store: the database (waiting for a lock the previous opening still holds), the
//! conversion of a first-layout store, then the memory rebuilt from the records and the writer
//! started.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::codec::DeliveryRecord;
use super::layout::{corrupt, id_of};
use super::memory::{Health, Queue, Skipped};
use super::writer::Writer;
use super::{lock, migrate, SledStore, MAX_READS, OPEN_RETRY, PENDING, SLED, SUBSCRIPTION, TREE};
use crate::store::index::Index;
use crate::store::{Limits, StoreError};

impl SledStore {
    /// Opens (or creates, owner-only) the database at `path`, converts a store of the previous
    /// layout, rebuilds the index from the unfinished deliveries and starts the writer thread.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, StoreError> {
        create_private_dir(path)?;
        let db = open_db(path, cache_capacity_bytes)?;
        let tree = db.open_tree(TREE)?;
        {
            let _serial = lock(&SLED);
            migrate::from_v1(&db, &tree)?;
        }
        let skipped = Arc::new(Skipped::default());
        let queue = Arc::new(Mutex::new(Queue {
            index: load_index(&tree, &skipped)?,
            fresh: HashMap::new(),
        }));
        let health = Arc::new(Mutex::new(load_health(&tree, &skipped)?));
        let writer = Writer {
            tree: tree.clone(),
            db: db.clone(),
            queue: queue.clone(),
            health: health.clone(),
            fault: Mutex::new(None),
            skipped: skipped.clone(),
        };
        let (tx, handle) = writer.start()?;
        Ok(SledStore {
            tree,
            db,
            writer: tx,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            queue,
            health,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS as usize)),
            skipped,
        })
    }
}

fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Create {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Opens the database. sled releases its file lock when the last handle of the previous opening
/// is gone, which can be a moment after that store's `close` returned (or after the previous
/// process exited): a store that is still locked is tried again for [`OPEN_RETRY`].
fn open_db(path: &Path, cache_capacity_bytes: u64) -> Result<::sled::Db, StoreError> {
    let config = ::sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        // No background flusher: the writer flushes (see `Writer::run`). sled's flusher
        // takes its process-wide concurrency lock while it waits for the disk, and with
        // the writer's batches waiting for the same lock the two could deadlock.
        .flush_every_ms(None);
    let deadline = Instant::now() + OPEN_RETRY;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled says so in an `Other` error's text.
            Err(::sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The due-time index of the unfinished deliveries (`P`), from their records' heads.
fn load_index(tree: &::sled::Tree, skipped: &Skipped) -> Result<Index, StoreError> {
    let mut index = Index::new(Limits::default());
    for entry in tree.scan_prefix([PENDING]) {
        let (k, v) = entry?;
        let head = id_of(&k).and_then(|id| {
            let (bucket, due) = DeliveryRecord::decode_head(&v).map_err(|e| corrupt(&k, e))?;
            Ok((id, bucket, due))
        });
        match head {
            Ok((id, bucket, due)) => index.insert(&bucket, due, id),
            Err(e) => skipped.skip(&k, e),
        }
    }
    Ok(index)
}

/// The subscriptions' stored states (`S`).
fn load_health(tree: &::sled::Tree, skipped: &Skipped) -> Result<Health, StoreError> {
    let mut health = Health::default();
    for entry in tree.scan_prefix([SUBSCRIPTION]) {
        let (k, v) = entry?;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        match serde_json::from_slice(&v) {
            Ok(state) => {
                health.states.insert(id, state);
            }
            Err(e) => skipped.skip(&k, e),
        }
    }
    Ok(health)
}
