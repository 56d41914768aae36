//! The ordered key-value store under the embedded engine: sled (the default) or fjall, behind
//! one small surface (point reads, ordered scans, atomic batches, a durable flush). The only
//! file that imports fjall; sled is imported here and by `migrate.rs` (the first layout was
//! sled's alone).

use std::ops::{Deref, RangeBounds};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{lock, OPEN_RETRY, TREE};
use crate::store::StoreError;

/// Which library holds an embedded store's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// sled 0.34: a B-tree over a log; the default, the product is specified with it.
    #[default]
    Sled,
    /// fjall 3: a log-structured merge tree; memory and disk that do not grow with the history
    /// kept the way sled's do.
    Fjall,
}

impl Backend {
    /// Its name in `[storage] engine`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Fjall => "fjall",
        }
    }
}

/// Held by sled's writer for a round (its writes and their flush) and by every sled read. sled
/// 0.34 takes a process-wide lock of its own in batches and flushes, and a flush waits, holding
/// it, for every log reservation made before it, reads that reorganise pages included; reads and
/// writes interleaved from several threads were seen to hang a flush for ever. One sled access
/// at a time costs a read at most one round's wait, and rules that out. fjall needs none of it:
/// its reads see whole batches and never wait for a writer.
static SLED: Mutex<()> = Mutex::new(());

/// The open database and its one tree (sled) or keyspace (fjall); cheap to clone.
#[derive(Clone)]
pub(super) enum Kv {
    Sled {
        db: ::sled::Db,
        tree: ::sled::Tree,
    },
    Fjall {
        db: fjall::Database,
        keyspace: fjall::Keyspace,
    },
}

/// A value (or key) read from the store.
pub(super) enum Value {
    Sled(::sled::IVec),
    Fjall(fjall::Slice),
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Value::Sled(v) => v,
            Value::Fjall(v) => v,
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Value> for Vec<u8> {
    fn from(v: Value) -> Vec<u8> {
        v.to_vec()
    }
}

/// Writes applied together or not at all ([`Kv::apply_batch`]).
#[derive(Default)]
pub(super) struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(super) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub(super) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Records in key order, either way: `(key, value)` pairs.
pub(super) enum Iter {
    Sled(Box<::sled::Iter>),
    Fjall(fjall::Iter),
}

impl Iter {
    fn map_sled(entry: ::sled::Result<(::sled::IVec, ::sled::IVec)>) -> Entry {
        entry
            .map(|(k, v)| (Value::Sled(k), Value::Sled(v)))
            .map_err(StoreError::from)
    }

    fn map_fjall(entry: fjall::Guard) -> Entry {
        entry
            .into_inner()
            .map(|(k, v)| (Value::Fjall(k), Value::Fjall(v)))
            .map_err(fjall_error)
    }

    /// The keys alone.
    pub(super) fn keys(self) -> impl DoubleEndedIterator<Item = Result<Value, StoreError>> {
        self.map(|entry| entry.map(|(k, _)| k))
    }
}

type Entry = Result<(Value, Value), StoreError>;

impl Iterator for Iter {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        match self {
            Iter::Sled(i) => i.next().map(Iter::map_sled),
            Iter::Fjall(i) => i.next().map(Iter::map_fjall),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Entry> {
        match self {
            Iter::Sled(i) => i.next_back().map(Iter::map_sled),
            Iter::Fjall(i) => i.next_back().map(Iter::map_fjall),
        }
    }
}

fn fjall_error(e: fjall::Error) -> StoreError {
    StoreError::Backend(format!("fjall: {e}"))
}

impl Kv {
    /// Opens the database at `path` (an existing directory), waiting up to [`OPEN_RETRY`] for a
    /// lock that the previous opening still holds: it is released with that opening's last
    /// handle, which can be a moment after its store's `close` returned (or after the previous
    /// process exited).
    pub(super) fn open(
        backend: Backend,
        path: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<Kv, StoreError> {
        let deadline = Instant::now() + OPEN_RETRY;
        loop {
            let opened = match backend {
                Backend::Sled => open_sled(path, cache_capacity_bytes),
                Backend::Fjall => open_fjall(path, cache_capacity_bytes),
            };
            match opened {
                Err(Opening::Locked(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(Opening::Locked(e) | Opening::Failed(e)) => return Err(e),
                Ok(kv) => return Ok(kv),
            }
        }
    }

    /// Another tree (sled) or keyspace (fjall) named `name` in the same database, made if
    /// absent: its own key space, flushed with the rest.
    pub(super) fn sibling(&self, name: &str) -> Result<Kv, StoreError> {
        match self {
            Kv::Sled { db, .. } => Ok(Kv::Sled {
                db: db.clone(),
                tree: db.open_tree(name)?,
            }),
            Kv::Fjall { db, .. } => Ok(Kv::Fjall {
                db: db.clone(),
                keyspace: db
                    .keyspace(name, || {
                        fjall::KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE)
                    })
                    .map_err(fjall_error)?,
            }),
        }
    }

    pub(super) fn backend(&self) -> Backend {
        match self {
            Kv::Sled { .. } => Backend::Sled,
            Kv::Fjall { .. } => Backend::Fjall,
        }
    }

    /// Taken around every access that [`SLED`] serialises: a guard on sled, nothing on fjall.
    pub(super) fn exclusive(&self) -> Option<MutexGuard<'static, ()>> {
        match self {
            Kv::Sled { .. } => Some(lock(&SLED)),
            Kv::Fjall { .. } => None,
        }
    }

    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, StoreError> {
        match self {
            Kv::Sled { tree, .. } => Ok(tree.get(key)?.map(Value::Sled)),
            Kv::Fjall { keyspace, .. } => keyspace
                .get(key)
                .map(|v| v.map(Value::Fjall))
                .map_err(fjall_error),
        }
    }

    pub(super) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        match self {
            Kv::Sled { tree, .. } => Ok(tree.contains_key(key)?),
            Kv::Fjall { keyspace, .. } => keyspace.contains_key(key).map_err(fjall_error),
        }
    }

    /// One write, atomic on its own.
    pub(super) fn insert(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.apply_batch(batch)
    }

    /// The records whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Kv::Sled { tree, .. } => Iter::Sled(Box::new(tree.scan_prefix(prefix))),
            Kv::Fjall { keyspace, .. } => Iter::Fjall(keyspace.prefix(prefix)),
        }
    }

    /// The records whose key is in `range`, in key order.
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Kv::Sled { tree, .. } => Iter::Sled(Box::new(tree.range(range))),
            Kv::Fjall { keyspace, .. } => Iter::Fjall(keyspace.range(range)),
        }
    }

    /// Applies every write of `batch`, or none (a crash before the next [`Kv::flush`] may lose
    /// the whole batch, never a part of it).
    pub(super) fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Kv::Sled { tree, .. } => {
                let mut b = ::sled::Batch::default();
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                Ok(tree.apply_batch(b)?)
            }
            Kv::Fjall { db, keyspace } => {
                let mut b = db.batch();
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => b.insert(keyspace, k, v),
                        None => b.remove(keyspace, k),
                    }
                }
                b.commit().map_err(fjall_error)
            }
        }
    }

    /// Makes every write applied so far durable (an fsync).
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Kv::Sled { db, .. } => db.flush().map(|_| ()).map_err(StoreError::from),
            Kv::Fjall { db, .. } => db.persist(fjall::PersistMode::SyncAll).map_err(fjall_error),
        }
    }

    /// Bytes the database takes on disk.
    pub(super) fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self {
            Kv::Sled { db, .. } => Ok(db.size_on_disk()?),
            Kv::Fjall { db, .. } => db.disk_space().map_err(fjall_error),
        }
    }
}

/// Why an opening failed: the lock of another opening (tried again), or anything else.
enum Opening {
    Locked(StoreError),
    Failed(StoreError),
}

fn open_sled(path: &Path, cache_capacity_bytes: u64) -> Result<Kv, Opening> {
    let opened = ::sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        // No background flusher: the writer flushes (see `Writer::run`). sled's flusher
        // takes its process-wide concurrency lock while it waits for the disk, and with
        // the writer's batches waiting for the same lock the two could deadlock.
        .flush_every_ms(None)
        .open()
        .and_then(|db| {
            let tree = db.open_tree(TREE)?;
            Ok(Kv::Sled { db, tree })
        });
    opened.map_err(|e| match e {
        // sled says so in an `Io` error's text.
        ::sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            Opening::Locked(e.into())
        }
        e => Opening::Failed(e.into()),
    })
}

/// The records fjall keeps in memory before it writes them to a table: 16 MiB (its default is
/// 64), so that memory stays well inside the budget of a node (docs/configuration.md).
const FJALL_MEMTABLE: u64 = 16 << 20;

/// fjall's background threads (flushes and compactions): 3. Its default on two cores is 2, and
/// with 2 the first worker, which leaves compactions to the others, hands a compaction request
/// back to the channel and takes it again until the one other worker is free: it spins for as
/// long as a compaction runs (12% of hookd's CPU samples in the batched bench). With a third
/// worker a waiting one takes the request at once. One worker would not spin, but would deadlock
/// under write load: it blocks sending itself a flush while the bounded channel is full of
/// rotation requests (fjall-rs/fjall#323). docs/benchmarks.md.
const FJALL_WORKERS: usize = 3;

/// The journal fjall may keep on disk before it flushes the keyspaces that hold it back: 64 MiB,
/// the least fjall accepts (its default is 512). A journal file can go only once every keyspace
/// has flushed what it holds, and the audit log's keyspace, written rarely, fills its memtable
/// only after weeks: with the default, every store that had one audit entry kept up to 512 MiB
/// of journal, which a restart reads through (3.2 s with a million deliveries pending, against
/// 0.8 s with this limit; docs/benchmarks.md).
const FJALL_JOURNALS: u64 = 64 << 20;

fn open_fjall(path: &Path, cache_capacity_bytes: u64) -> Result<Kv, Opening> {
    let opened = fjall::Database::builder(path)
        .cache_size(cache_capacity_bytes)
        // The writer persists the journal once a round (group commit); fjall's own background
        // fsync would only add more.
        .manual_journal_persist(true)
        .worker_threads(FJALL_WORKERS)
        .max_journaling_size(FJALL_JOURNALS)
        .open()
        .and_then(|db| {
            let keyspace = db.keyspace(TREE, || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE)
            })?;
            Ok(Kv::Fjall { db, keyspace })
        });
    opened.map_err(|e| match e {
        fjall::Error::Locked => Opening::Locked(fjall_error(e)),
        e => Opening::Failed(fjall_error(e)),
    })
}

/// The sled database under `kv`, for the conversion of a first-layout store.
pub(super) fn sled_parts(kv: &Kv) -> Option<(&::sled::Db, &::sled::Tree)> {
    match kv {
        Kv::Sled { db, tree } => Some((db, tree)),
        Kv::Fjall { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit log's keyspace is written rarely: one entry in it must not keep every journal
    /// file the main keyspace writes after it (a restart reads all of them).
    #[test]
    fn a_keyspace_written_rarely_does_not_hold_the_journal_back() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(Backend::Fjall, dir.path(), 8 << 20).unwrap();
        let Kv::Fjall { db, .. } = &kv else {
            unreachable!("opened on fjall")
        };
        let rare = kv.sibling("rare").unwrap();
        rare.insert(b"entry".to_vec(), b"one".to_vec()).unwrap();
        // 256 MiB through the main keyspace: four journal files' worth (fjall starts a new one
        // past 64 MB), each flushed from 16 MiB memtables.
        // Values that do not compress (fjall compresses its journal).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0u32..1024 {
            let value: Vec<u8> = (0..(256 << 10) / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            kv.insert(i.to_be_bytes().to_vec(), value).unwrap();
        }
        kv.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.journal_count() > 2 {
            assert!(
                Instant::now() < deadline,
                "{} journal files kept after 256 MiB of writes: the rare keyspace holds them back",
                db.journal_count()
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(rare.get(b"entry").unwrap().as_deref(), Some(&b"one"[..]));
    }
}
