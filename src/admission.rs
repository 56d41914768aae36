//! Whether ingest may take more: overload is refused, not absorbed until failure.
//!
//! Two limits, both answered with `503` and `Retry-After` before anything is written:
//! - the backlog: `storage.max_pending` unfinished deliveries (0: no limit);
//! - free space: less than `storage.min_free_bytes` free on the store's filesystem (or a tenth
//!   of a filesystem smaller than ten times that). The reserve keeps the store's own writes
//!   (outcomes, retries, the sweep) from ever meeting a full disk, so deliveries go on while
//!   ingest waits, and ingest resumes by itself once space is freed.
//!
//! Entering and leaving each state is logged once; every refusal is counted in
//! `hookd_ingest_refused_total{reason}`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// How long a free-space reading is trusted: statvfs is cheap, but not on every request.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(200);

/// What a client refused for overload is told to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Why ingest refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `pending` unfinished deliveries, at or over `limit`.
    Backlog { pending: u64, limit: u64 },
    /// `free` bytes left on the store's filesystem, under `reserve`.
    DiskFull { free: u64, reserve: u64 },
}

impl Refusal {
    /// The `reason` label of `hookd_ingest_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Backlog { .. } => "backlog",
            Refusal::DiskFull { .. } => "disk_full",
        }
    }

    /// The message of the 503 answer.
    pub fn message(&self) -> String {
        match self {
            Refusal::Backlog { pending, limit } => format!(
                "hookd is overloaded: {pending} deliveries are unfinished (storage.max_pending = {limit}); retry later"
            ),
            Refusal::DiskFull { free, reserve } => format!(
                "the store's disk is nearly full: {free} bytes free, hookd keeps {reserve} in reserve (storage.min_free_bytes); retry later"
            ),
        }
    }
}

/// The free-space reading and the states last logged.
pub struct Admission {
    disk: Mutex<Option<(Instant, Option<Refusal>)>>,
    backlog_refusing: AtomicBool,
    disk_refusing: AtomicBool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new()
    }
}

impl Admission {
    pub fn new() -> Admission {
        Admission {
            disk: Mutex::new(None),
            backlog_refusing: AtomicBool::new(false),
            disk_refusing: AtomicBool::new(false),
        }
    }

    /// `Ok` when ingest may go on; the refusal otherwise, counted and (on a change) logged.
    pub fn check(
        &self,
        unfinished: u64,
        storage: &StorageConfig,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let backlog = (storage.max_pending > 0 && unfinished >= storage.max_pending).then_some(
            Refusal::Backlog {
                pending: unfinished,
                limit: storage.max_pending,
            },
        );
        log_change(&self.backlog_refusing, backlog.as_ref(), "backlog");
        let refusal = match backlog {
            Some(refusal) => Some(refusal),
            None => self.disk(storage, metrics),
        };
        match refusal {
            Some(refusal) => {
                metrics
                    .ingest_refused
                    .with_label_values(&[refusal.reason()])
                    .inc();
                Err(refusal)
            }
            None => Ok(()),
        }
    }

    /// The free-space refusal, from a reading at most [`DISK_CHECK_EVERY`] old.
    fn disk(&self, storage: &StorageConfig, metrics: &Metrics) -> Option<Refusal> {
        if !storage.engine.is_embedded() {
            // The database's disk is the database's to watch.
            return None;
        }
        let mut last = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, refusal)) = &*last {
            if at.elapsed() < DISK_CHECK_EVERY {
                return refusal.clone();
            }
        }
        let refusal = match free_space(&storage.path) {
            Some((free, total)) => {
                metrics
                    .store_free
                    .set(i64::try_from(free).unwrap_or(i64::MAX));
                let reserve = reserve(storage, total);
                (free < reserve).then_some(Refusal::DiskFull { free, reserve })
            }
            // A filesystem that cannot be asked is not refused for: the store's own errors
            // still answer 503.
            None => None,
        };
        log_change(&self.disk_refusing, refusal.as_ref(), "disk_full");
        *last = Some((Instant::now(), refusal.clone()));
        refusal
    }
}

/// The free space ingest keeps in reserve on a filesystem of `total` bytes:
/// `storage.min_free_bytes`, or a tenth of a smaller filesystem.
fn reserve(storage: &StorageConfig, total: u64) -> u64 {
    storage.min_free_bytes.min(total / 10)
}

/// Free space the store needs before a failed store is reopened, at least.
const REOPEN_ROOM: u64 = 4 << 20;

/// Whether the store's filesystem has room to write again (its reserve, and at least 4 MiB),
/// read now. For reopening a store whose writes failed.
pub fn has_room(storage: &StorageConfig) -> bool {
    free_space(&storage.path)
        .is_some_and(|(free, total)| free >= reserve(storage, total).max(REOPEN_ROOM))
}

/// Logs entering a refusing state (with why) and leaving it.
fn log_change(refusing: &AtomicBool, refusal: Option<&Refusal>, reason: &str) {
    let now = refusal.is_some();
    if refusing.swap(now, Ordering::Relaxed) == now {
        return;
    }
    match refusal {
        Some(refusal) => {
            tracing::warn!(reason, "ingest refused with 503: {}", refusal.message());
        }
        None => tracing::info!(reason, "ingest accepts events again"),
    }
}

/// Free and total bytes of the filesystem holding `path`, or its nearest existing ancestor.
fn free_space(path: &Path) -> Option<(u64, u64)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let free = fs2::available_space(existing).ok()?;
    let total = fs2::total_space(existing).ok()?;
    Some((free, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(max_pending: u64, min_free_bytes: u64) -> StorageConfig {
        StorageConfig {
            engine: crate::config::Engine::Embedded(crate::store::embedded::Backend::Sled),
            path: std::env::temp_dir(),
            retention: Duration::from_secs(60),
            cache_capacity_bytes: 1 << 20,
            max_pending,
            min_free_bytes,
        }
    }

    #[test]
    fn the_backlog_limit_refuses_at_the_limit_and_zero_turns_it_off() {
        let metrics = Metrics::new();
        let admission = Admission::new();
        assert_eq!(admission.check(9, &storage(10, 0), &metrics), Ok(()));
        assert_eq!(
            admission.check(10, &storage(10, 0), &metrics),
            Err(Refusal::Backlog {
                pending: 10,
                limit: 10
            })
        );
        assert_eq!(admission.check(u64::MAX, &storage(0, 0), &metrics), Ok(()));
        let counted = metrics.ingest_refused.with_label_values(&["backlog"]).get();
        assert_eq!(counted, 1);
    }

    #[test]
    fn a_reserve_larger_than_the_free_space_refuses_for_disk_full() {
        let metrics = Metrics::new();
        let admission = Admission::new();
        // A tenth of the temp filesystem is the most the reserve can ask for, so a reserve of
        // u64::MAX refuses only when less than a tenth of it is free: compare with statvfs.
        let (free, total) = free_space(&std::env::temp_dir()).expect("statvfs of the temp dir");
        let result = admission.check(0, &storage(0, u64::MAX), &metrics);
        if free < total / 10 {
            assert!(matches!(result, Err(Refusal::DiskFull { .. })));
        } else {
            assert_eq!(result, Ok(()));
        }
        assert_eq!(
            admission.check(0, &storage(0, 0), &metrics),
            result.clone(),
            "the reading is reused within {DISK_CHECK_EVERY:?}"
        );
        assert!(metrics.store_free.get() > 0);
    }

    #[test]
    fn messages_name_the_setting() {
        let backlog = Refusal::Backlog {
            pending: 5,
            limit: 5,
        };
        assert!(backlog.message().contains("storage.max_pending = 5"));
        let disk = Refusal::DiskFull {
            free: 1,
            reserve: 2,
        };
        assert!(disk.message().contains("storage.min_free_bytes"));
        assert_eq!(disk.reason(), "disk_full");
    }
}
