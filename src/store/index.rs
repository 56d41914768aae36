//! The due-time index in memory: which deliveries wait, in which bucket, until when, and which
//! are in flight. An engine that keeps its queue on disk in a form it cannot search by due time
//! (the sled engine) rebuilds it at open and keeps it beside the disk.
//!
//! Finding the next work costs O(log n) whatever the number of deliveries and buckets: every
//! bucket that may run now (not at its limit, not paused, not waiting for a removed
//! subscription) is listed once in a set ordered by its earliest due time, so a claim takes the
//! first entry, pops that bucket's earliest delivery and lists the bucket again. A bucket at its
//! limit, paused, or waiting for a retry hours away is not looked at until that changes.
//! Per-request hosts have a set of their own, skipped whole while the per-request limit is
//! reached. Between buckets that may run, the earliest due delivery goes first: a healthy
//! subscription's fresh events are not held back by other hosts' retries that are not yet due.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::{Limits, PendingStats, ADHOC};

/// A delivery id as the index keeps it: the ULID's 128 bits.
pub type Id = u128;

type BucketNo = u32;

#[derive(Debug)]
struct Bucket {
    name: Arc<str>,
    /// Per-request targets' buckets are `adhoc/<host:port>`.
    adhoc: bool,
    /// Queued deliveries by due time.
    queue: DueQueue,
    in_flight: usize,
    /// The due time under which the bucket is listed in its ready set, if it is.
    listed: Option<u64>,
}

/// The in-memory queue. Not synchronised: its owner holds it under a lock.
#[derive(Debug, Default)]
pub struct Index {
    numbers: HashMap<Arc<str>, BucketNo>,
    buckets: Vec<Option<Bucket>>,
    /// Bucket slots freed by buckets that emptied, for reuse.
    free: Vec<BucketNo>,
    /// Subscription buckets that may run, by earliest due time.
    ready: BTreeSet<(u64, BucketNo)>,
    /// Per-request buckets that may run, by earliest due time.
    ready_adhoc: BTreeSet<(u64, BucketNo)>,
    /// In-flight deliveries and their buckets.
    leased: HashMap<Id, BucketNo>,
    /// Deliveries whose attempt is over and whose outcome is still to be written: their slot
    /// is free ([`Index::free_slot`]), and they count as leased until [`Index::unlease`].
    finishing: HashSet<Id>,
    in_flight: usize,
    adhoc_in_flight: usize,
    queued: usize,
    limits: Limits,
    /// Rate-limited buckets' next allowed attempt: kept apart from the buckets, which are
    /// forgotten when they empty, so that a bucket refilled at once still waits.
    next_allowed: HashMap<Arc<str>, Arrival>,
}

/// A rate-limited bucket's theoretical arrival time (GCRA) and the interval it was computed
/// with, so that a changed limit can be applied to it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrival {
    /// Unix µs: one interval past the slot of the bucket's last attempt.
    at_us: u64,
    /// The least time between two attempts (µs) when `at_us` was computed.
    interval_us: u64,
}

impl Arrival {
    /// The theoretical arrival time under the limit in force, `interval_us` apart: counted
    /// from the last attempt's slot, so that a raised or lowered limit applies at once and a
    /// raised one allows no burst.
    fn under(self, interval_us: u64) -> u64 {
        self.at_us
            .saturating_sub(self.interval_us)
            .saturating_add(interval_us)
    }
}

/// One bucket's queued deliveries, ordered by (due time, id), in about 24 bytes each: a
/// sorted run kept in a ring buffer, which takes every delivery that sorts after the last one
/// (fresh deliveries, due now, arrive in that order), beside a B-tree for the rest (about 50
/// bytes each). A million queued deliveries take about 30 MB rather than 66 MB.
#[derive(Debug, Default)]
struct DueQueue {
    run: VecDeque<Packed>,
    rest: BTreeSet<Packed>,
}

/// (due, id) as three words, which sort the same way: no padding, unlike `(u64, u128)`.
type Packed = [u64; 3];

fn pack(due_ms: u64, id: Id) -> Packed {
    [due_ms, (id >> 64) as u64, id as u64]
}

fn unpack(p: Packed) -> (u64, Id) {
    (p[0], (Id::from(p[1]) << 64) | Id::from(p[2]))
}

impl DueQueue {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.run.len() + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.run.is_empty() && self.rest.is_empty()
    }

    fn contains(&self, p: &Packed) -> bool {
        self.run.binary_search(p).is_ok() || self.rest.contains(p)
    }

    /// Adds a delivery; false if it was there already.
    fn insert(&mut self, due_ms: u64, id: Id) -> bool {
        let p = pack(due_ms, id);
        if self.contains(&p) {
            return false;
        }
        if self.run.back().is_none_or(|last| *last < p) {
            self.run.push_back(p);
        } else {
            self.rest.insert(p);
        }
        true
    }

    fn remove(&mut self, due_ms: u64, id: Id) -> bool {
        let p = pack(due_ms, id);
        if let Ok(i) = self.run.binary_search(&p) {
            self.run.remove(i);
            self.shrink();
            return true;
        }
        self.rest.remove(&p)
    }

    fn first(&self) -> Option<(u64, Id)> {
        match (self.run.front(), self.rest.first()) {
            (Some(a), Some(b)) => Some(unpack(*a.min(b))),
            (a, b) => a.or(b).map(|p| unpack(*p)),
        }
    }

    fn pop_first(&mut self) -> Option<(u64, Id)> {
        let from_run = match (self.run.front(), self.rest.first()) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let p = if from_run {
            let p = self.run.pop_front();
            self.shrink();
            p
        } else {
            self.rest.pop_first()
        };
        p.map(unpack)
    }

    /// How many are due at `now_ms` or before.
    fn due_by(&self, now_ms: u64) -> usize {
        let bound = [now_ms, u64::MAX, u64::MAX];
        self.run.partition_point(|p| *p <= bound) + self.rest.range(..=bound).count()
    }

    /// Gives memory back once the run uses under a quarter of it.
    fn shrink(&mut self) {
        if self.run.capacity() > 1024 && self.run.len() < self.run.capacity() / 4 {
            self.run.shrink_to(self.run.len() * 2);
        }
    }
}

/// What a claim took from the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub id: Id,
    pub bucket: Arc<str>,
}

pub fn is_adhoc(bucket: &str) -> bool {
    bucket.starts_with("adhoc/")
}

/// The least time between two attempts of `bucket` under `limits`, in µs, if it is rate
/// limited.
fn rate_in(limits: &Limits, bucket: &str) -> Option<u64> {
    let key = if is_adhoc(bucket) { ADHOC } else { bucket };
    limits.rates.get(key).copied().filter(|&us| us > 0)
}

impl Index {
    pub fn new(limits: Limits) -> Index {
        Index {
            limits,
            ..Index::default()
        }
    }

    fn bucket_no(&mut self, name: &str) -> BucketNo {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        let name: Arc<str> = Arc::from(name);
        let bucket = Bucket {
            adhoc: is_adhoc(&name),
            name: name.clone(),
            queue: DueQueue::default(),
            in_flight: 0,
            listed: None,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.buckets[n as usize] = Some(bucket);
                n
            }
            None => {
                self.buckets.push(Some(bucket));
                // More than four billion buckets cannot be in memory at once.
                BucketNo::try_from(self.buckets.len() - 1).unwrap_or(BucketNo::MAX)
            }
        };
        self.numbers.insert(name, n);
        n
    }

    fn bucket(&self, n: BucketNo) -> Option<&Bucket> {
        self.buckets.get(n as usize).and_then(Option::as_ref)
    }

    fn bucket_mut(&mut self, n: BucketNo) -> Option<&mut Bucket> {
        self.buckets.get_mut(n as usize).and_then(Option::as_mut)
    }

    /// Whether a bucket may have another attempt now, its queue aside.
    fn may_run(&self, b: &Bucket) -> bool {
        if b.adhoc {
            !self.limits.paused.contains(ADHOC) && b.in_flight < self.limits.adhoc_per_host
        } else {
            match self.limits.subscriptions.get(&*b.name) {
                Some(&limit) => !self.limits.paused.contains(&*b.name) && b.in_flight < limit,
                None => false,
            }
        }
    }

    /// The least time between two attempts of bucket `b`, in µs, if it is rate limited.
    fn rate_of(&self, b: &Bucket) -> Option<u64> {
        rate_in(&self.limits, &b.name)
    }

    /// When bucket `b` may next make an attempt by its rate limit (Unix ms, rounded up): its
    /// theoretical arrival time less half an interval (GCRA with that tolerance, so that a turn
    /// taken a little late does not slow the rate down).
    fn allowed_ms(&self, b: &Bucket) -> u64 {
        match self.rate_of(b) {
            Some(interval) => self.next_allowed.get(&b.name).map_or(0, |tat| {
                tat.under(interval)
                    .saturating_sub(interval / 2)
                    .div_ceil(1000)
            }),
            None => 0,
        }
    }

    /// Puts a bucket in its ready set under its earliest due time, or takes it out; forgets a
    /// bucket that holds nothing.
    fn relist(&mut self, n: BucketNo) {
        let Some(b) = self.bucket(n) else { return };
        // A rate-limited bucket is listed under the later of its front's due time and the
        // time its rate allows: it is simply not due before.
        let want = if self.may_run(b) {
            let allowed = self.allowed_ms(b);
            b.queue.first().map(|(due, _)| due.max(allowed))
        } else {
            None
        };
        let (adhoc, listed, empty) = (b.adhoc, b.listed, b.queue.is_empty() && b.in_flight == 0);
        if listed == want && !empty {
            return;
        }
        let set = if adhoc {
            &mut self.ready_adhoc
        } else {
            &mut self.ready
        };
        if let Some(due) = listed {
            set.remove(&(due, n));
        }
        if let Some(due) = want {
            set.insert((due, n));
        }
        if empty {
            if let Some(b) = self.buckets.get_mut(n as usize).and_then(Option::take) {
                self.numbers.remove(&b.name);
                self.free.push(n);
            }
        } else if let Some(b) = self.bucket_mut(n) {
            b.listed = want;
        }
    }

    /// Adds a queued delivery.
    pub fn insert(&mut self, bucket: &str, due_ms: u64, id: Id) {
        let n = self.bucket_no(bucket);
        if let Some(b) = self.bucket_mut(n) {
            if b.queue.insert(due_ms, id) {
                self.queued += 1;
            }
        }
        self.relist(n);
    }

    /// Removes a queued delivery; false if it was not queued there.
    pub fn remove(&mut self, bucket: &str, due_ms: u64, id: Id) -> bool {
        let Some(&n) = self.numbers.get(bucket) else {
            return false;
        };
        let removed = self
            .bucket_mut(n)
            .is_some_and(|b| b.queue.remove(due_ms, id));
        if removed {
            self.queued -= 1;
            self.relist(n);
        }
        removed
    }

    /// Whether the delivery is in flight, or finishing ([`Index::free_slot`]).
    pub fn is_leased(&self, id: Id) -> bool {
        self.leased.contains_key(&id) || self.finishing.contains(&id)
    }

    /// Frees the slot of a delivery whose attempt is over, before its outcome is written: its
    /// bucket may start another attempt at once, and the delivery still counts as leased (an
    /// operator's requeue or end leaves it to its outcome) until [`Index::unlease`]. It is not
    /// queued again: only an outcome that finishes it may free its slot this way.
    pub fn free_slot(&mut self, id: Id) {
        if self.unlease(id).is_some() {
            self.finishing.insert(id);
        }
    }

    /// [`Index::free_slot`], and the slot handed on: the next due delivery of the same
    /// subscription, leased, if it may run now within the limits (not paused, below its
    /// limit). Not for per-request hosts, nor for a rate-limited subscription: their turns come
    /// from the claims. Only while the node is below its global limit counting the delivery
    /// that ended: at it, other buckets may be waiting, and the claims decide in due order.
    pub fn finish_and_follow(&mut self, id: Id, now_ms: u64) -> Option<Taken> {
        let n = *self.leased.get(&id)?;
        let below_global = self.in_flight < self.limits.global;
        self.free_slot(id);
        let b = self.bucket(n)?;
        if !below_global || b.adhoc || self.rate_of(b).is_some() {
            return None;
        }
        match b.listed {
            Some(due) if due <= now_ms => self.take(n, now_ms),
            _ => None,
        }
    }

    /// Ends a lease: the delivery is no longer in flight. Returns its bucket; `None` if it was
    /// not leased, or its slot was freed already ([`Index::free_slot`]).
    pub fn unlease(&mut self, id: Id) -> Option<Arc<str>> {
        if self.finishing.remove(&id) {
            return None;
        }
        let n = self.leased.remove(&id)?;
        self.in_flight -= 1;
        let b = self.bucket_mut(n)?;
        b.in_flight -= 1;
        let (adhoc, name) = (b.adhoc, b.name.clone());
        if adhoc {
            self.adhoc_in_flight -= 1;
        }
        self.relist(n);
        Some(name)
    }

    /// Takes up to `max` due deliveries, earliest due first, within the limits, and leases
    /// them. Also returns the earliest due time among buckets that may run.
    pub fn claim(&mut self, now_ms: u64, max: usize) -> (Vec<Taken>, Option<u64>) {
        let mut taken = Vec::new();
        while taken.len() < max && self.in_flight < self.limits.global {
            let adhoc_open = self.adhoc_in_flight < self.limits.adhoc_total;
            let sub = self.ready.first().copied();
            let adhoc = if adhoc_open {
                self.ready_adhoc.first().copied()
            } else {
                None
            };
            let (due, n) = match (sub, adhoc) {
                (Some(s), Some(a)) => s.min(a),
                (Some(s), None) => s,
                (None, Some(a)) => a,
                (None, None) => break,
            };
            if due > now_ms {
                break;
            }
            match self.take(n, now_ms) {
                Some(t) => taken.push(t),
                None => break,
            }
        }
        (taken, self.next_due())
    }

    /// Leases bucket `n`'s earliest queued delivery, and moves a rate-limited bucket's next
    /// turn on. The caller checked that the bucket may run now.
    fn take(&mut self, n: BucketNo, now_ms: u64) -> Option<Taken> {
        let b = self.bucket_mut(n)?;
        let (_, id) = b.queue.pop_first()?;
        b.in_flight += 1;
        let (adhoc, name) = (b.adhoc, b.name.clone());
        let rate = self.bucket(n).and_then(|b| self.rate_of(b));
        if let Some(interval) = rate {
            // The theoretical arrival time (under the limit in force) moves one interval
            // past this turn's (or past now, after idle time: it does not bank a burst).
            let now_us = now_ms.saturating_mul(1000);
            let tat = self
                .next_allowed
                .get(&name)
                .map_or(0, |tat| tat.under(interval));
            let next = Arrival {
                at_us: tat.max(now_us).saturating_add(interval),
                interval_us: interval,
            };
            self.next_allowed.insert(name.clone(), next);
            if self.next_allowed.len() > 10_000 {
                // Many per-request hosts came and went: forget the times already past.
                let limits = &self.limits;
                self.next_allowed.retain(|name, tat| {
                    let interval = rate_in(limits, name).unwrap_or(tat.interval_us);
                    tat.under(interval) > now_us
                });
            }
        }
        self.queued -= 1;
        self.in_flight += 1;
        if adhoc {
            self.adhoc_in_flight += 1;
        }
        self.leased.insert(id, n);
        self.relist(n);
        Some(Taken { id, bucket: name })
    }

    /// The earliest due time among buckets that may run, if the global limit leaves room.
    pub fn next_due(&self) -> Option<u64> {
        if self.in_flight >= self.limits.global {
            return None;
        }
        let sub = self.ready.first().map(|&(due, _)| due);
        let adhoc = if self.adhoc_in_flight < self.limits.adhoc_total {
            self.ready_adhoc.first().map(|&(due, _)| due)
        } else {
            None
        };
        match (sub, adhoc) {
            (Some(s), Some(a)) => Some(s.min(a)),
            (s, a) => s.or(a),
        }
    }

    /// Replaces the limits and relists every bucket: O(buckets), on reload and pause only.
    pub fn set_limits(&mut self, limits: Limits) {
        if limits == self.limits {
            return;
        }
        self.limits = limits;
        let numbers: Vec<BucketNo> = self.numbers.values().copied().collect();
        for n in numbers {
            self.relist(n);
        }
    }

    /// Ready (due at `now_ms`), scheduled (later) and in-flight counts. Counting the ready
    /// ones walks their part of each bucket's queue: O(buckets + ready).
    pub fn stats(&self, now_ms: u64) -> PendingStats {
        let ready: usize = self
            .buckets
            .iter()
            .flatten()
            .map(|b| b.queue.due_by(now_ms))
            .sum();
        PendingStats {
            ready: ready as u64,
            scheduled: self.queued.saturating_sub(ready) as u64,
            in_flight: self.in_flight as u64,
            oldest_created_ms: None,
        }
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many buckets the index holds (queued or in flight).
    pub fn buckets(&self) -> usize {
        self.numbers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The due queue answers like a B-tree of (due, id), whatever the order of operations.
        #[test]
        fn the_due_queue_behaves_like_an_ordered_set(
            ops in proptest::collection::vec((0u8..4, 0u64..50, 0u128..20), 0..300)
        ) {
            let mut queue = DueQueue::default();
            let mut model: BTreeSet<(u64, Id)> = BTreeSet::new();
            for (op, due, id) in ops {
                // Ids are unique per delivery in the index; keep (due, id) pairs distinct too.
                let id = id << 64 | u128::from(due);
                match op {
                    0 | 1 => proptest::prop_assert_eq!(queue.insert(due, id), model.insert((due, id))),
                    2 => proptest::prop_assert_eq!(queue.remove(due, id), model.remove(&(due, id))),
                    _ => proptest::prop_assert_eq!(queue.pop_first(), model.pop_first()),
                }
                proptest::prop_assert_eq!(queue.first(), model.first().copied());
                proptest::prop_assert_eq!(queue.len(), model.len());
                proptest::prop_assert_eq!(queue.is_empty(), model.is_empty());
                proptest::prop_assert_eq!(queue.due_by(due), model.range(..=(due, Id::MAX)).count());
            }
        }
    }

    fn limits(subs: &[(&str, usize)]) -> Limits {
        Limits {
            global: 100,
            adhoc_total: 10,
            adhoc_per_host: 2,
            subscriptions: subs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            paused: Default::default(),
            rates: Default::default(),
        }
    }

    fn ids(taken: &[Taken]) -> Vec<Id> {
        taken.iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_freed_slot_takes_the_next_delivery_while_the_first_still_counts_as_leased() {
        let mut index = Index::default();
        index.set_limits(limits(&[("main", 1)]));
        for id in 1..=3 {
            index.insert("main", 1000, id);
        }
        assert_eq!(ids(&index.claim(1000, 10).0), [1]);
        assert_eq!(ids(&index.claim(1000, 10).0), []);
        index.free_slot(1);
        assert!(index.is_leased(1), "leased until its outcome is written");
        assert_eq!(index.in_flight(), 0);
        assert_eq!(ids(&index.claim(1000, 10).0), [2]);
        // The outcome written: no slot is freed twice.
        assert_eq!(index.unlease(1), None);
        assert!(!index.is_leased(1));
        assert_eq!(index.in_flight(), 1);
        assert_eq!(ids(&index.claim(1000, 10).0), []);
        // A delivery not leased frees nothing.
        index.free_slot(3);
        assert!(!index.is_leased(3));
        assert_eq!(index.unlease(2).as_deref(), Some("main"));
        assert_eq!(ids(&index.claim(1000, 10).0), [3]);
    }

    #[test]
    fn a_finished_delivery_hands_its_slot_to_its_buckets_next_due_one_within_the_limits() {
        let mut index = Index::default();
        index.set_limits(limits(&[("a", 2), ("b", 1)]));
        for id in 1..=4 {
            index.insert("a", 1000 + id as u64, id);
        }
        index.insert("b", 1000, 10);
        index.insert("b", 1001, 11);
        assert_eq!(ids(&index.claim(2000, 10).0), [10, 1, 2]);
        // Another bucket's turn does not come from this slot.
        let next = index.finish_and_follow(1, 2000).map(|t| t.id);
        assert_eq!(next, Some(3), "a's next due");
        assert!(index.is_leased(1) && index.is_leased(3));
        assert_eq!(index.in_flight(), 3);
        // Not due yet: nothing handed on, and the slot is free.
        index.insert("a", 9000, 5);
        assert_eq!(index.finish_and_follow(2, 2000).map(|t| t.id), Some(4));
        assert_eq!(index.finish_and_follow(3, 2000).map(|t| t.id), None);
        assert_eq!(index.in_flight(), 2);
        // Paused, rate-limited, a per-request host: nothing handed on.
        let mut paused = limits(&[("a", 2), ("b", 1)]);
        paused.paused.insert("b".to_string());
        index.set_limits(paused);
        assert_eq!(index.finish_and_follow(10, 2000).map(|t| t.id), None);
        let mut rated = limits(&[("a", 2), ("b", 1)]);
        rated.rates.insert("b".to_string(), 1);
        index.set_limits(rated);
        index.insert("b", 1002, 12);
        assert_eq!(ids(&index.claim(2000, 10).0), [11]);
        assert_eq!(index.finish_and_follow(11, 2000).map(|t| t.id), None);
        index.insert("adhoc/h:1", 1000, 20);
        // b's next turn is one interval (1 µs, rounded up to a millisecond) after its last.
        assert_eq!(ids(&index.claim(2001, 10).0), [20, 12]);
        index.insert("adhoc/h:1", 999, 21);
        assert_eq!(index.finish_and_follow(20, 2000).map(|t| t.id), None);
        // At the node's global limit, counting the one that ended: the claims decide.
        index.set_limits(Limits {
            global: 2,
            ..limits(&[("a", 3), ("b", 1)])
        });
        index.insert("a", 1000, 6);
        assert_eq!(ids(&index.claim(2000, 10).0), []);
        assert_eq!(index.finish_and_follow(4, 2000).map(|t| t.id), None);
        assert_eq!(ids(&index.claim(2000, 10).0), [21]);
    }

    #[test]
    fn a_rate_limited_bucket_is_due_one_interval_after_its_last_turn() {
        let mut index = Index::default();
        let mut l = limits(&[("slow", 10), ("fast", 10)]);
        // 4 per second: 250 ms apart.
        l.rates.insert("slow".to_string(), 250_000);
        index.set_limits(l);
        for id in 1..=5 {
            index.insert("slow", 1000, id);
        }
        for id in 11..=13 {
            index.insert("fast", 1000, id);
        }
        let (taken, next) = index.claim(2000, 100);
        let slow: Vec<&Taken> = taken.iter().filter(|t| &*t.bucket == "slow").collect();
        assert_eq!(slow.len(), 1, "one turn of the limited bucket");
        assert_eq!(taken.len(), 4, "the other goes at full speed");
        // Its theoretical next turn is 2250; it may come half an interval early.
        assert_eq!(next, Some(2125));
        assert!(index.claim(2124, 100).0.is_empty());
        assert_eq!(ids(&index.claim(2125, 100).0), [2]);
        // A turn taken late does not slow the rate: the one after is still due by 2750.
        assert_eq!(ids(&index.claim(2400, 100).0), [3]);
        assert_eq!(index.next_due(), Some(2625));
        assert_eq!(ids(&index.claim(2600, 100).0), []);
        // Idle time does not bank a burst: after a long pause, one now, the next later.
        assert_eq!(ids(&index.claim(9000, 100).0), [4]);
        assert_eq!(ids(&index.claim(9001, 100).0), []);
        assert_eq!(index.next_due(), Some(9125));
    }

    #[test]
    fn a_changed_rate_limit_applies_at_once_from_the_last_turn() {
        let mut index = Index::default();
        let rated = |interval_us: u64| {
            let mut l = limits(&[("slow", 10)]);
            l.rates.insert("slow".to_string(), interval_us);
            l
        };
        // One attempt per 20 s.
        index.set_limits(rated(20_000_000));
        for id in 1..=5 {
            index.insert("slow", 1000, id);
        }
        assert_eq!(ids(&index.claim(1000, 100).0), [1]);
        assert_eq!(index.next_due(), Some(11_000), "half an interval early");
        // Raised to 20/s 10 ms later: the next turn counts from the last one's slot with the
        // new interval, 50 ms (25 ms early), not the old 20 s.
        index.set_limits(rated(50_000));
        assert_eq!(index.next_due(), Some(1025));
        assert_eq!(ids(&index.claim(1024, 100).0), []);
        assert_eq!(ids(&index.claim(1025, 100).0), [2]);
        // No burst: one turn per interval after the raise too.
        assert_eq!(ids(&index.claim(1026, 100).0), []);
        assert_eq!(index.next_due(), Some(1075));
        // Lowered back to one per 20 s: also at once, from the last turn's slot (1050 ms).
        index.set_limits(rated(20_000_000));
        assert_eq!(index.next_due(), Some(11_050));
        assert_eq!(ids(&index.claim(11_049, 100).0), []);
        assert_eq!(ids(&index.claim(11_050, 100).0), [3]);
        assert_eq!(index.next_due(), Some(31_050));
        // The limit removed: the bucket runs freely; set again, it counts from the last
        // turn's slot (21.05 s: that turn came half an interval early).
        index.set_limits(limits(&[("slow", 10)]));
        assert_eq!(index.next_due(), Some(1000));
        index.set_limits(rated(1_000_000));
        assert_eq!(index.next_due(), Some(21_550));
    }

    #[test]
    fn claims_earliest_due_first_across_buckets() {
        let mut index = Index::new(limits(&[("a", 10), ("b", 10)]));
        index.insert("a", 30, 1);
        index.insert("b", 10, 2);
        index.insert("a", 20, 3);
        index.insert("b", 40, 4);
        let (taken, next) = index.claim(35, 10);
        assert_eq!(ids(&taken), vec![2, 3, 1]);
        assert_eq!(next, Some(40));
        assert_eq!(index.queued(), 1);
        assert_eq!(index.in_flight(), 3);
    }

    #[test]
    fn a_bucket_at_its_limit_waits_for_a_free_slot() {
        let mut index = Index::new(limits(&[("a", 1), ("b", 5)]));
        for id in 1..=3 {
            index.insert("a", 0, id);
        }
        index.insert("b", 5, 10);
        let (taken, next) = index.claim(10, 10);
        assert_eq!(ids(&taken), vec![1, 10]);
        // "a" is full: its due work is not listed.
        assert_eq!(next, None);
        assert_eq!(index.unlease(1).as_deref(), Some("a"));
        let (taken, _) = index.claim(10, 10);
        assert_eq!(ids(&taken), vec![2]);
    }

    #[test]
    fn global_and_per_request_limits_hold() {
        let mut l = limits(&[("a", 50)]);
        l.global = 3;
        l.adhoc_total = 2;
        let mut index = Index::new(l);
        for host in 0..5u128 {
            index.insert(&format!("adhoc/h{host}:80"), 0, host);
        }
        for id in 100..105 {
            index.insert("a", 1, id);
        }
        let (taken, _) = index.claim(10, 100);
        assert_eq!(taken.len(), 3, "global limit");
        let adhoc = taken.iter().filter(|t| is_adhoc(&t.bucket)).count();
        assert!(adhoc <= 2, "per-request limit: {taken:?}");
    }

    #[test]
    fn paused_and_unknown_subscriptions_wait_and_resume() {
        let mut index = Index::new(limits(&[("a", 5)]));
        index.insert("gone", 0, 1);
        index.insert("a", 0, 2);
        let mut l = limits(&[("a", 5)]);
        l.paused.insert("a".into());
        index.set_limits(l);
        assert_eq!(index.claim(10, 10).0, vec![]);
        assert_eq!(index.next_due(), None);
        index.set_limits(limits(&[("a", 5), ("gone", 5)]));
        assert_eq!(ids(&index.claim(10, 10).0), vec![1, 2]);
    }

    #[test]
    fn many_waiting_buckets_cost_nothing_per_claim() {
        let mut index = Index::new(limits(&[("healthy", 64)]));
        for host in 0..20_000u128 {
            index.insert(
                &format!("adhoc/127.0.0.1:{host}"),
                60_000 + host as u64,
                host,
            );
        }
        index.insert("healthy", 5, 1_000_000);
        let (taken, next) = index.claim(10, 100);
        assert_eq!(ids(&taken), vec![1_000_000]);
        assert_eq!(next, Some(60_000));
        assert_eq!(index.buckets(), 20_001);
    }

    #[test]
    fn empty_buckets_are_forgotten_and_their_slots_reused() {
        let mut index = Index::new(limits(&[]));
        for host in 0..100u128 {
            let bucket = format!("adhoc/h{host}:80");
            index.insert(&bucket, 0, host);
            let (taken, _) = index.claim(0, 1);
            assert_eq!(taken.len(), 1);
            index.unlease(host);
        }
        assert_eq!(index.buckets(), 0);
        assert!(index.buckets.len() <= 1, "slots reused");
        assert!(!index.remove("adhoc/h1:80", 0, 1));
    }

    #[test]
    fn stats_split_ready_from_scheduled() {
        let mut index = Index::new(limits(&[("a", 1)]));
        index.insert("a", 5, 1);
        index.insert("a", 50, 2);
        index.insert("a", 500, 3);
        assert_eq!((index.stats(60).ready, index.stats(60).scheduled), (2, 1));
        index.claim(60, 10);
        let s = index.stats(60);
        assert_eq!((s.ready, s.scheduled, s.in_flight), (1, 1, 1));
    }
}
