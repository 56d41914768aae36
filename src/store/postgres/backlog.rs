//! The backlog: the count of unfinished deliveries that ingest's limit reads, kept within half a
//! second of the table's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::unms;
use crate::store::StoreError;

/// How often the cached count of unfinished deliveries is read again.
const COUNT_EVERY: Duration = Duration::from_millis(500);

/// The unfinished deliveries in the table now (at open: every node's).
pub(super) async fn count(client: &deadpool_postgres::Object) -> Result<i64, StoreError> {
    Ok(client
        .query_one("SELECT count(*) FROM hookd_queue", &[])
        .await?
        .get(0))
}

/// The count of unfinished deliveries ingest's backlog limit reads: the last count of the
/// table (every node's work) plus what this node added that the count did not see. Finished
/// deliveries show at the next count, not before: counted twice (an outcome written before
/// the count's snapshot, subtracted after it) they would let ingest past the limit; late,
/// they only refuse a little early.
#[derive(Default)]
pub(super) struct Unfinished {
    inner: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    /// The last count of the table.
    base: i64,
    /// What this node added since: its transaction's id where known, and how many.
    changes: Vec<(Option<u64>, i64)>,
    /// The sum of `changes`.
    delta: i64,
}

impl Unfinished {
    /// `n` deliveries added by the committed transaction `xid` (`None`: not known).
    pub(super) fn add(&self, xid: Option<u64>, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.changes.push((xid, n));
        c.delta = c.delta.saturating_add(n);
    }

    pub(super) fn get(&self) -> u64 {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        unms(c.base.saturating_add(c.delta))
    }

    /// The first count, at open: nothing was added before it.
    pub(super) fn opened_with(&self, n: i64) {
        self.counted(
            n,
            0,
            &Snapshot {
                xmin: 0,
                xmax: 0,
                in_progress: Vec::new(),
            },
        );
    }

    /// How many changes there are now: those were committed before a count that starts
    /// after this, so it sees them.
    fn mark(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .len()
    }

    /// A count `n` of the table under `snapshot`, begun after [`Unfinished::mark`] returned
    /// `seen`: the changes the count saw are dropped, the others kept on top of it. A change
    /// whose transaction is not known and that came after the mark is kept this once (the next
    /// count sees it), counted twice meanwhile at worst: refusing a little early.
    fn counted(&self, n: i64, seen: usize, snapshot: &Snapshot) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<(Option<u64>, i64)> = c
            .changes
            .iter()
            .enumerate()
            .filter(|&(i, (xid, _))| i >= seen && xid.is_none_or(|xid| !snapshot.sees(xid)))
            .map(|(_, &change)| change)
            .collect();
        c.delta = kept.iter().map(|&(_, n)| n).sum();
        c.changes = kept;
        c.base = n;
    }
}

/// A PostgreSQL snapshot (`pg_current_snapshot()`, as text `xmin:xmax:xip,...`): which
/// transactions' effects a statement saw.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Snapshot {
    fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Snapshot {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether a statement under this snapshot saw what committed transaction `xid` wrote.
    fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }
}

/// Keeps [`PgStore::unfinished`](super::PgStore::unfinished) within half a second of the truth (other nodes change it
/// too). Each count reads the snapshot it ran under, and this node's changes are kept on top
/// of it exactly when it did not see them: an ingest that committed while the count ran is
/// neither lost nor counted twice.
pub(super) async fn count_unfinished(pool: Pool, unfinished: Arc<Unfinished>) {
    loop {
        tokio::time::sleep(COUNT_EVERY).await;
        let seen = unfinished.mark();
        let counted = async {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*), pg_current_snapshot()::text FROM hookd_queue",
                    &[],
                )
                .await?;
            Ok::<_, StoreError>((row.get::<_, i64>(0), row.get::<_, String>(1)))
        }
        .await;
        match counted {
            Ok((n, snapshot)) => match Snapshot::parse(&snapshot) {
                Some(snapshot) => unfinished.counted(n, seen, &snapshot),
                None => tracing::warn!(snapshot, "cannot read PostgreSQL's snapshot"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot count the unfinished deliveries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_and_tells_what_it_saw() {
        let snap = Snapshot::parse("100:110:102,105").expect("parses");
        assert_eq!(snap.in_progress, [102, 105]);
        assert!(snap.sees(99) && snap.sees(101) && snap.sees(109));
        assert!(!snap.sees(102) && !snap.sees(105) && !snap.sees(110) && !snap.sees(200));
        assert_eq!(
            Snapshot::parse("7:7:"),
            Some(Snapshot {
                xmin: 7,
                xmax: 7,
                in_progress: Vec::new()
            })
        );
        for bad in ["", "1", "1:2", "a:2:", "1:2:x", "1:2:3:4"] {
            assert_eq!(Snapshot::parse(bad), None, "{bad:?}");
        }
    }

    /// An ingest that commits while the backlog is counted is counted once: by the count when
    /// its snapshot saw it, on top of the count when it did not.
    #[test]
    fn the_backlog_count_keeps_exactly_what_it_did_not_see() {
        let u = Unfinished::default();
        u.add(Some(90), 5);
        let seen = u.mark();
        // Committed during the count: 101 before its snapshot, 104 after it (in progress).
        u.add(Some(101), 3);
        u.add(Some(104), 4);
        // A requeue whose transaction is not known, after the mark: kept this once.
        u.add(None, 1);
        let snap = Snapshot::parse("100:106:104").expect("parses");
        // The table held 20 others, 5 of transaction 90 and 3 of 101.
        u.counted(28, seen, &snap);
        assert_eq!(u.get(), 28 + 4 + 1);
        // The next count sees them all.
        let seen = u.mark();
        u.counted(33, seen, &Snapshot::parse("200:200:").expect("parses"));
        assert_eq!(u.get(), 33);
    }
}
