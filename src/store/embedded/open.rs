//! Opening a store: the database (waiting for a lock the previous opening still holds), the
//! conversion of a first-layout sled store or of a second-layout store, then the memory
//! rebuilt from the records and the writer started.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::codec::DeliveryRecord;
use super::kv::{sled_parts, Backend, Kv};
use super::layout::{corrupt, id_of};
use super::memory::{Health, Queue, Skipped};
use super::writer::Writer;
use super::{migrate, rekey, EmbeddedStore, AUDIT_TREE, MAX_READS, PENDING, SUBSCRIPTION};
use crate::store::index::Index;
use crate::store::{Limits, StoreError};

impl EmbeddedStore {
    /// Opens (or creates, owner-only) the database at `path` on `backend`, converts a store
    /// of an earlier layout, rebuilds the index from the unfinished deliveries and
    /// starts the writer thread. A directory that holds the other backend's files is refused:
    /// `hookd store export` and `import` move a store between them.
    pub fn open(
        backend: Backend,
        path: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<EmbeddedStore, StoreError> {
        create_private_dir(path)?;
        refuse_other_backend(backend, path)?;
        let kv = Kv::open(backend, path, cache_capacity_bytes)?;
        if let Some((db, tree)) = sled_parts(&kv) {
            let _serial = kv.exclusive();
            migrate::from_v1(db, tree)?;
        }
        rekey::to_v3(&kv)?;
        let audit = kv.sibling(AUDIT_TREE)?;
        let skipped = Arc::new(Skipped::default());
        let queue = Arc::new(Mutex::new(Queue {
            index: load_index(&kv, &skipped)?,
            fresh: Default::default(),
        }));
        let health = Arc::new(Mutex::new(load_health(&kv, &skipped)?));
        let writer = Writer {
            kv: kv.clone(),
            queue: queue.clone(),
            health: health.clone(),
            fault: Mutex::new(None),
            skipped: skipped.clone(),
        };
        let (tx, handle) = writer.start()?;
        Ok(EmbeddedStore {
            kv,
            audit,
            writer: tx,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            queue,
            health,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS as usize)),
            skipped,
        })
    }

    /// Which library holds this store.
    pub fn backend(&self) -> Backend {
        self.kv.backend()
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

/// The file each backend keeps at the top of its directory, and that the other does not.
fn marker(backend: Backend) -> &'static str {
    match backend {
        Backend::Sled => "conf",
        Backend::Fjall => "keyspaces",
    }
}

/// Refuses to open `path` on `backend` when it holds the other backend's store: each would
/// start an empty store of its own beside the other's files, and the queue would seem lost.
fn refuse_other_backend(backend: Backend, path: &Path) -> Result<(), StoreError> {
    let other = match backend {
        Backend::Sled => Backend::Fjall,
        Backend::Fjall => Backend::Sled,
    };
    if path.join(marker(other)).exists() && !path.join(marker(backend)).exists() {
        let (found, configured) = (other.name(), backend.name());
        return Err(StoreError::Backend(format!(
            "{} holds a {found} store, but [storage] engine is \"{configured}\". To keep using \
             it, set engine = \"{found}\". To move it to {configured}: run `hookd store export` \
             with engine = \"{found}\", then `hookd store import` with engine = \"{configured}\" \
             and another storage.path (docs/operations.md, \"Moving a store between engines\")",
            path.display(),
        )));
    }
    Ok(())
}

/// The due-time index of the unfinished deliveries (`P`), from their records' heads.
fn load_index(kv: &Kv, skipped: &Skipped) -> Result<Index, StoreError> {
    let mut index = Index::new(Limits::default());
    for entry in kv.scan_prefix([PENDING]) {
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
fn load_health(kv: &Kv, skipped: &Skipped) -> Result<Health, StoreError> {
    let mut health = Health::default();
    for entry in kv.scan_prefix([SUBSCRIPTION]) {
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
