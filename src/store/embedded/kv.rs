//! The ordered key-value store under the embedded engine: sled (the default) or fjall, behind
//! one small surface (point reads, ordered scans, atomic batches, a durable flush). The only
//! file that imports fjall; sled is imported here and by `migrate.rs` (the first layout was
//! sled's alone).

use std::collections::VecDeque;
use std::ops::{Bound, Deref, RangeBounds};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{DONE, EVENT, OPEN_RETRY, PENDING, SEEN, TREE};
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
/// at a time rules that out, and costs a read at most one round's wait: each turn is handed to
/// the thread that has waited longest ([`SledTurn`]). fjall needs none of it: its reads see
/// whole batches and never wait for a writer.
static SLED: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// A turn on sled ([`SLED`]), on sled only. It ends with a fair unlock: a thread waiting for
/// the lock gets it next. An ordinary unlock let the writer, whose next round was always
/// waiting under a steady load, take the lock straight back: the reads that claims need once a
/// backlog outgrows the fresh cache starved, and delivery stopped for minutes while ingest went
/// on (the sled soak of 2026-12-07, docs/benchmarks.md).
pub(super) struct SledTurn(Option<parking_lot::MutexGuard<'static, ()>>);

impl Drop for SledTurn {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            parking_lot::MutexGuard::unlock_fair(guard);
        }
    }
}

/// The open database and its one tree (sled) or keyspace (fjall); cheap to clone.
#[derive(Clone)]
pub(super) enum Kv {
    Sled {
        db: ::sled::Db,
        tree: ::sled::Tree,
    },
    Fjall {
        db: fjall::Database,
        /// The records of every kind not in `kinds`.
        keyspace: fjall::Keyspace,
        /// The kinds that have keyspaces of their own (the main tree's; none in a sibling).
        kinds: Option<Kinds>,
    },
}

/// The keyspaces of the record kinds written on every delivery, [`FJALL_KINDS`], in the order
/// of their letters. Each kind grows in its own way: `D` and `E` keys are ULIDs, written in
/// time order and kept; `P` keys are ULIDs too, removed within seconds; `H` keys are hashes,
/// scattered over the whole key space. In one keyspace every table fjall flushes spans them
/// all and overlaps every table below it: compactions merge the finished deliveries kept for
/// days with everything else, and a point read of any kind meets tables full of the others.
/// Apart, a flush of `D` or `E` lands beside the older tables without overlapping any, and
/// only `H`'s small records are merged with each other (docs/benchmarks.md).
#[derive(Clone)]
pub(super) struct Kinds([(u8, fjall::Keyspace); FJALL_KINDS.len()]);

/// The record kinds that fjall keeps in keyspaces of their own: the letter, the keyspace's
/// name, its memtable's size and how its keys grow.
///
/// Each memtable is held in memory whole, and one being flushed beside the next one filling.
/// `E` and `D` flush 16 and 8 MiB tables, which are never merged again: smaller would mean more
/// tables for a restart to open. `H` (19-byte records) and `P` (removed within seconds of
/// their delivery) have 4 MiB: with 8 MiB a million pending deliveries peaked at 146.3 MiB of
/// RSS, with 4 MiB at 130.9, and the ceiling bench's fjall rates did not move
/// (docs/benchmarks.md). A keyspace keeps the size it was made with.
const FJALL_KINDS: [(u8, &str, u64, Growth); 4] = [
    (DONE, "hookd.v2.D", 8 << 20, Growth::Appended),
    (EVENT, "hookd.v2.E", 16 << 20, Growth::Appended),
    (SEEN, "hookd.v2.H", 4 << 20, Growth::Other),
    (PENDING, "hookd.v2.P", 4 << 20, Growth::Other),
];

/// How a fjall keyspace's keys grow, which sets two of its options.
#[derive(Clone, Copy)]
enum Growth {
    /// In time order and kept (finished deliveries, events): each table fjall flushes lands
    /// after the older ones without overlapping any, and compaction moves it down to the last
    /// level as it is, never rewriting it. So its blocks are compressed when it is flushed
    /// (fjall's default compresses from the third level on, when a compaction rewrites a table:
    /// these would stay uncompressed, 23% more disk in the history bench), and the last level
    /// has no filters: every point read of these kinds asks for a record that exists (an id
    /// read from another record), and only one table's key range can hold it.
    Appended,
    /// Anything else: fjall's defaults.
    Other,
}

impl Kinds {
    fn of(&self, letter: u8) -> Option<&fjall::Keyspace> {
        self.0.iter().find(|(l, _)| *l == letter).map(|(_, k)| k)
    }
}

/// The keyspace that holds `key`: its kind's, or the main one.
fn fjall_keyspace<'a>(
    keyspace: &'a fjall::Keyspace,
    kinds: &'a Option<Kinds>,
    key: &[u8],
) -> &'a fjall::Keyspace {
    kinds
        .as_ref()
        .zip(key.first())
        .and_then(|(kinds, letter)| kinds.of(*letter))
        .unwrap_or(keyspace)
}

/// An owned range of keys.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The one letter every key of `range` starts with, if there is one: its start is a key of that
/// letter, and its end one too, or the first key past the letter.
fn one_letter(range: &KeyRange) -> Option<u8> {
    let letter = match &range.0 {
        Bound::Included(s) | Bound::Excluded(s) => *s.first()?,
        Bound::Unbounded => return None,
    };
    let within = match &range.1 {
        Bound::Included(e) => e.first() == Some(&letter),
        Bound::Excluded(e) => {
            e.first() == Some(&letter) || (letter < u8::MAX && e[..] == [letter + 1])
        }
        Bound::Unbounded => false,
    };
    within.then_some(letter)
}

/// `range` cut to the keys from `low` (included) to `high` (excluded); `None` if nothing is left.
fn clamp(range: &KeyRange, low: Option<Vec<u8>>, high: Option<Vec<u8>>) -> Option<KeyRange> {
    let start = match (&range.0, low) {
        (s, None) => s.clone(),
        (Bound::Unbounded, Some(l)) => Bound::Included(l),
        (Bound::Included(s) | Bound::Excluded(s), Some(l)) if *s >= l => range.0.clone(),
        (_, Some(l)) => Bound::Included(l),
    };
    let end = match (&range.1, high) {
        (e, None) => e.clone(),
        (Bound::Unbounded, Some(h)) => Bound::Excluded(h),
        (Bound::Included(e), Some(h)) if *e < h => range.1.clone(),
        (Bound::Excluded(e), Some(h)) if *e <= h => range.1.clone(),
        (_, Some(h)) => Bound::Excluded(h),
    };
    let empty = match (&start, &end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s >= e
        }
        _ => false,
    };
    (!empty).then_some((start, end))
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
    /// Ranges of several keyspaces, one after the other in key order.
    FjallChain(VecDeque<fjall::Iter>),
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
            Iter::FjallChain(parts) => loop {
                match parts.front_mut()?.next() {
                    Some(entry) => return Some(Iter::map_fjall(entry)),
                    None => {
                        parts.pop_front();
                    }
                }
            },
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Entry> {
        match self {
            Iter::Sled(i) => i.next_back().map(Iter::map_sled),
            Iter::Fjall(i) => i.next_back().map(Iter::map_fjall),
            Iter::FjallChain(parts) => loop {
                match parts.back_mut()?.next_back() {
                    Some(entry) => return Some(Iter::map_fjall(entry)),
                    None => {
                        parts.pop_back();
                    }
                }
            },
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
                keyspace: fjall_open_keyspace(db, name, FJALL_MEMTABLE, Growth::Other)
                    .map_err(fjall_error)?,
                kinds: None,
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
    pub(super) fn exclusive(&self) -> SledTurn {
        match self {
            Kv::Sled { .. } => SledTurn(Some(SLED.lock())),
            Kv::Fjall { .. } => SledTurn(None),
        }
    }

    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, StoreError> {
        match self {
            Kv::Sled { tree, .. } => Ok(tree.get(key)?.map(Value::Sled)),
            Kv::Fjall {
                keyspace, kinds, ..
            } => fjall_keyspace(keyspace, kinds, key.as_ref())
                .get(key)
                .map(|v| v.map(Value::Fjall))
                .map_err(fjall_error),
        }
    }

    pub(super) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        match self {
            Kv::Sled { tree, .. } => Ok(tree.contains_key(key)?),
            Kv::Fjall {
                keyspace, kinds, ..
            } => fjall_keyspace(keyspace, kinds, key.as_ref())
                .contains_key(key)
                .map_err(fjall_error),
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
            Kv::Fjall {
                keyspace, kinds, ..
            } => match prefix.as_ref().first() {
                Some(_) => {
                    Iter::Fjall(fjall_keyspace(keyspace, kinds, prefix.as_ref()).prefix(prefix))
                }
                None => self.range::<&[u8], _>(..),
            },
        }
    }

    /// The records whose key is in `range`, in key order.
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Kv::Sled { tree, .. } => Iter::Sled(Box::new(tree.range(range))),
            Kv::Fjall {
                keyspace, kinds, ..
            } => {
                let range: KeyRange = (
                    range.start_bound().map(|k| k.as_ref().to_vec()),
                    range.end_bound().map(|k| k.as_ref().to_vec()),
                );
                match (kinds, one_letter(&range)) {
                    (None, _) => Iter::Fjall(keyspace.range(range)),
                    (Some(_), Some(letter)) => {
                        Iter::Fjall(fjall_keyspace(keyspace, kinds, &[letter]).range(range))
                    }
                    (Some(kinds), None) => Iter::FjallChain(fjall_chain(keyspace, kinds, &range)),
                }
            }
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
            Kv::Fjall {
                db,
                keyspace,
                kinds,
            } => {
                let mut b = db.batch();
                for (k, v) in batch.ops {
                    let keyspace = fjall_keyspace(keyspace, kinds, &k);
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
            let keyspace = fjall_open_keyspace(&db, TREE, FJALL_MEMTABLE, Growth::Other)?;
            let mut kinds = Vec::with_capacity(FJALL_KINDS.len());
            for (letter, name, memtable, growth) in FJALL_KINDS {
                kinds.push((letter, fjall_open_keyspace(&db, name, memtable, growth)?));
            }
            let kinds = Kinds(
                kinds
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("one keyspace for each of FJALL_KINDS")),
            );
            fjall_move_kinds(&db, &keyspace, &kinds)?;
            Ok(Kv::Fjall {
                db,
                keyspace,
                kinds: Some(kinds),
            })
        });
    opened.map_err(|e| match e {
        fjall::Error::Locked => Opening::Locked(fjall_error(e)),
        e => Opening::Failed(fjall_error(e)),
    })
}

/// Opens the keyspace `name`, made if absent with a memtable of `memtable` bytes and its
/// filters and indexes in partitions (fjall keeps a keyspace's options from its making).
///
/// A point read asks each level's table that may hold the key: its filter, then its index,
/// then one data block. Whole, a table's filter and index are a block each, hundreds of KiB to
/// MiB in a table of 64 MiB, read and checksummed whole when the block cache (8 MiB by default,
/// `storage.cache_capacity_bytes`) does not hold them; fjall keeps them in memory for the first
/// one or two levels only and partitions them from the fourth. In between, once a store
/// outgrew them, every read of the writer (an event's duplicate check) and of the claims
/// loaded megabytes: the fjall soak fell behind after 2.9 million events at 12,924/s, the
/// writer's time in copying and checksumming those blocks (docs/benchmarks.md). In partitions
/// a read loads one small partition of each, which the cache keeps. `growth` sets the rest
/// ([`Growth`]). fjall keeps a keyspace's options from when it was made.
fn fjall_open_keyspace(
    db: &fjall::Database,
    name: &str,
    memtable: u64,
    growth: Growth,
) -> fjall::Result<fjall::Keyspace> {
    use fjall::config::{CompressionPolicy, PartitioningPolicy};
    db.keyspace(name, || {
        let options = fjall::KeyspaceCreateOptions::default()
            .max_memtable_size(memtable)
            .filter_block_partitioning_policy(PartitioningPolicy::all(true))
            .index_block_partitioning_policy(PartitioningPolicy::all(true));
        match growth {
            Growth::Appended => options
                .data_block_compression_policy(CompressionPolicy::all(fjall::CompressionType::Lz4))
                .expect_point_read_hits(true),
            Growth::Other => options,
        }
    })
}

/// Moves the records of [`FJALL_KINDS`] that a store written before they had keyspaces of their
/// own keeps in the main keyspace into theirs, in atomic batches (a crash leaves each record in
/// one place or the other, and the next opening moves the rest).
fn fjall_move_kinds(
    db: &fjall::Database,
    keyspace: &fjall::Keyspace,
    kinds: &Kinds,
) -> fjall::Result<()> {
    // At most this many records, or bytes of them (an event carries its body), per batch.
    const BATCH: usize = 10_000;
    const BATCH_BYTES: usize = 16 << 20;
    let mut moved = 0u64;
    for (letter, to) in &kinds.0 {
        let mut batch = db.batch();
        let (mut n, mut bytes) = (0, 0);
        for entry in keyspace.prefix([*letter]) {
            let (k, v) = entry.into_inner()?;
            bytes += k.len() + v.len();
            batch.insert(to, k.clone(), v);
            batch.remove(keyspace, k);
            n += 1;
            if n == BATCH || bytes >= BATCH_BYTES {
                batch.commit()?;
                moved += n as u64;
                batch = db.batch();
                (n, bytes) = (0, 0);
            }
        }
        batch.commit()?;
        moved += n as u64;
    }
    if moved > 0 {
        db.persist(fjall::PersistMode::SyncAll)?;
        tracing::info!(
            records = moved,
            "moved deliveries and events into keyspaces of their own (a store of an earlier hookd)"
        );
    }
    Ok(())
}

/// The records of `range` in every keyspace, in key order: the main keyspace's below the first
/// kind's letter, that kind's, the main keyspace's between it and the next kind, and so on.
fn fjall_chain(
    keyspace: &fjall::Keyspace,
    kinds: &Kinds,
    range: &KeyRange,
) -> VecDeque<fjall::Iter> {
    let mut parts = VecDeque::new();
    let mut low: Option<Vec<u8>> = None;
    for (letter, kind) in &kinds.0 {
        if let Some(r) = clamp(range, low.clone(), Some(vec![*letter])) {
            parts.push_back(keyspace.range(r));
        }
        parts.push_back(kind.range(range.clone()));
        low = Some(vec![letter.saturating_add(1)]);
    }
    if let Some(r) = clamp(range, low, None) {
        parts.push_back(keyspace.range(r));
    }
    parts
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

#[cfg(test)]
mod kinds_tests {
    use super::*;

    fn keys(iter: impl Iterator<Item = Entry>) -> Vec<Vec<u8>> {
        iter.map(|e| e.unwrap().0.to_vec()).collect()
    }

    fn keys_back(iter: Iter) -> Vec<Vec<u8>> {
        let mut k = keys(iter.rev());
        k.reverse();
        k
    }

    /// Keys of every kind and of the letters around them, at the edges of each letter.
    fn sample_keys() -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for letter in [
            0u8, b'A', b'C', b'D', b'E', b'F', b'G', b'H', b'I', b'O', b'P', b'Q', b'Z', 255,
        ] {
            for rest in [&[][..], &[0], &[7], &[7, 7], &[255], &[255, 255]] {
                let mut k = vec![letter];
                k.extend_from_slice(rest);
                all.push(k);
            }
        }
        all
    }

    fn b(k: &[u8]) -> Bound<Vec<u8>> {
        Bound::Included(k.to_vec())
    }

    fn x(k: &[u8]) -> Bound<Vec<u8>> {
        Bound::Excluded(k.to_vec())
    }

    /// fjall keeps deliveries and events in keyspaces of their own, but reads as one ordered
    /// store: every scan and range gives what the same writes give on sled, across the kinds'
    /// edges, forwards and backwards.
    #[test]
    fn fjall_reads_its_kinds_back_in_key_order_as_sled_does() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sled = Kv::open(Backend::Sled, d1.path(), 8 << 20).unwrap();
        let fjall = Kv::open(Backend::Fjall, d2.path(), 8 << 20).unwrap();
        let all = sample_keys();
        for kv in [&sled, &fjall] {
            let mut batch = Batch::default();
            for k in &all {
                batch.insert(k.clone(), k.iter().rev().copied().collect::<Vec<u8>>());
            }
            batch.remove(vec![b'P', 7]);
            batch.remove(vec![b'C', 7]);
            kv.apply_batch(batch).unwrap();
        }
        let u = Bound::Unbounded;
        let ranges: Vec<KeyRange> = vec![
            (u.clone(), u.clone()),
            (b(b"D"), u.clone()),
            (u.clone(), x(b"E")),
            (b(b"C\xff"), b(b"E\x07")),
            (b(b"D"), x(b"E")),
            (x(b"D"), b(b"P")),
            (b(b"E\x07"), x(b"E\x08")),
            (u.clone(), x(b"A")),
            (b(b"P"), b(b"Z")),
            (x(b"D\xff\xff"), x(b"P\x00")),
            (b(b"Q"), u.clone()),
            (b(b"A"), b(b"A")),
            (b(b"E\x07"), x(b"E\x07")),
            (b(b"E\xff"), b(b"H\x07")),
            (x(b"H"), x(b"P")),
            (b(b"G"), x(b"I")),
        ];
        for range in ranges {
            let want = keys(sled.range(range.clone()));
            assert_eq!(keys(fjall.range(range.clone())), want, "{range:?}");
            assert_eq!(
                keys_back(fjall.range(range.clone())),
                want,
                "{range:?} backwards"
            );
            // From both ends at once: the first and the last, then the rest.
            let mut it = fjall.range(range.clone());
            if let (Some(first), Some(last)) = (it.next(), it.next_back()) {
                assert_eq!(first.unwrap().0.to_vec(), want[0], "{range:?}");
                assert_eq!(last.unwrap().0.to_vec(), want[want.len() - 1], "{range:?}");
                assert_eq!(keys(it), want[1..want.len() - 1], "{range:?}");
            }
        }
        for prefix in [&b""[..], b"D", b"E", b"H", b"P", b"P\x07", b"Z", b"Y"] {
            let want = keys(sled.scan_prefix(prefix));
            assert_eq!(keys(fjall.scan_prefix(prefix)), want, "prefix {prefix:?}");
        }
        for k in &all {
            let want = sled.get(k).unwrap().map(Vec::from);
            assert_eq!(fjall.get(k).unwrap().map(Vec::from), want, "{k:?}");
            assert_eq!(fjall.contains_key(k).unwrap(), want.is_some(), "{k:?}");
        }
        // Each kind is where the layout says, and nothing else is.
        let Kv::Fjall {
            keyspace,
            kinds: Some(kinds),
            ..
        } = &fjall
        else {
            unreachable!("opened on fjall")
        };
        for (letter, kind) in &kinds.0 {
            assert!(keyspace.prefix([*letter]).next().is_none(), "{letter}");
            assert!(kind.iter().all(|e| e.key().unwrap()[0] == *letter));
            assert_eq!(kind.iter().count(), if *letter == PENDING { 5 } else { 6 });
        }
    }

    /// A fjall store written before the kinds had keyspaces of their own keeps them all in the
    /// main keyspace: opening it moves them, and every record reads back, then and after a
    /// second opening.
    #[test]
    fn a_fjall_store_with_every_kind_in_one_keyspace_is_moved_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let old = db
                .keyspace(TREE, fjall::KeyspaceCreateOptions::default)
                .unwrap();
            // More than one batch of the move.
            for i in 0u32..25_000 {
                for letter in [PENDING, DONE] {
                    want.push(([&[letter][..], &i.to_be_bytes()].concat(), i.to_le_bytes()));
                }
            }
            for i in 0u32..100 {
                for letter in [EVENT, b'S', b'Z'] {
                    want.push(([&[letter][..], &i.to_be_bytes()].concat(), i.to_le_bytes()));
                }
            }
            for (k, v) in &want {
                old.insert(k, v).unwrap();
            }
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        want.sort();
        for _ in 0..2 {
            let kv = Kv::open(Backend::Fjall, dir.path(), 8 << 20).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = kv
                .scan_prefix(b"")
                .map(|e| e.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(&want).all(|(g, w)| g.0 == w.0 && g.1 == w.1));
            assert_eq!(kv.scan_prefix([PENDING]).count(), 25_000);
            assert!(kv
                .get([&[EVENT][..], &7u32.to_be_bytes()].concat())
                .unwrap()
                .is_some());
            let Kv::Fjall { keyspace, .. } = &kv else {
                unreachable!("opened on fjall")
            };
            for letter in [EVENT, PENDING, DONE, SEEN] {
                assert!(keyspace.prefix([letter]).next().is_none(), "{letter}");
            }
            assert_eq!(keyspace.iter().count(), 200, "S and Z stay");
        }
    }
}
