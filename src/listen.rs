//! `hookd listen` sessions on the daemon's side: an in-memory hub that hands a copy of each
//! owner's new events to that owner's open sessions, apart from the store and the scheduler.
//!
//! Ingest calls [`Hub::publish`] after the commit; it never waits: each session has a bounded
//! queue ([`QUEUE`] events, [`QUEUE_BYTES`] of bodies) and an event that does not fit is
//! dropped and counted, so a slow or dead laptop holds back nothing else. A session whose
//! stream drops keeps its queue for [`GRACE`] (a reconnect resumes it, queued events included),
//! then goes without a trace. Nothing here is stored: a restart ends every session, and for
//! [`GRACE`] after it the hub keeps each owner's newest events ([`RECENT`], 8 MiB of bodies in
//! all), so that a CLI coming back names the last event it saw and gets what it missed, or the
//! count of what it cannot have.
//!
//! Times are passed in (Unix ms), so the grace period is tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// How long a session outlives its stream, and how long after a start the hub keeps events
/// for the sessions of the process before.
pub const GRACE_MS: u64 = 30_000;
/// [`GRACE_MS`] as a duration, for the docs.
pub const GRACE: std::time::Duration = std::time::Duration::from_millis(GRACE_MS);
/// Events a session queues for its CLI before it drops (and counts) more.
pub const QUEUE: usize = 256;
/// Bytes of bodies a session queues at most, whatever their number.
pub const QUEUE_BYTES: u64 = 4 << 20;
/// Events per owner kept for a reconnect after a restart, and in all.
pub const RECENT: usize = 256;
/// Bytes of bodies the hub keeps after a start, for every owner together.
const RECENT_BYTES: usize = 8 << 20;
/// Results a session keeps for the dashboard.
const RESULTS: usize = 50;

/// One event as every session of its owner gets it.
#[derive(Debug, Clone)]
pub struct Copy {
    pub event_id: String,
    pub event_type: String,
    /// The canonical body, as every delivery of the event sends it.
    pub body: bytes::Bytes,
}

/// What the local receiver answered to one of a session's deliveries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub delivery_id: String,
    pub event_type: String,
    /// The status code, or none when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// When the answer was reported, Unix ms.
    pub at_ms: u64,
}

/// One open session.
pub struct Session {
    pub id: String,
    pub owner: String,
    /// Event types it wants; empty: all.
    pub events: Vec<String>,
    /// The session secret: never shown again after the answer that made the session.
    pub secret: String,
    sender: mpsc::Sender<Arc<Copy>>,
    receiver: Mutex<Option<mpsc::Receiver<Arc<Copy>>>>,
    /// Events dropped because the queue was full, not yet told to the CLI.
    dropped: AtomicU64,
    /// Bytes of the bodies in the queue.
    queued_bytes: AtomicU64,
    /// See [`Session::attach`].
    generation: AtomicU64,
    /// When the stream dropped (Unix ms), or 0 while connected.
    detached_ms: AtomicU64,
    results: Mutex<VecDeque<Answer>>,
    pub created_ms: u64,
}

impl Session {
    fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event_type)
    }

    /// Queues `copy` for the CLI, or drops and counts it when the queue is full ([`QUEUE`]
    /// events or [`QUEUE_BYTES`]).
    pub fn offer(&self, copy: Arc<Copy>) {
        let len = copy.body.len() as u64;
        let over = self
            .queued_bytes
            .load(Ordering::Relaxed)
            .saturating_add(len)
            > QUEUE_BYTES;
        if over || self.sender.try_send(copy).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Says that `copy` left the queue.
    pub fn taken(&self, copy: &Copy) {
        let len = copy.body.len() as u64;
        // The closure always returns Some: the update cannot fail.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(len))
            });
    }

    /// The queue's reading end, for the one stream that may hold it; `None` while another does.
    /// The holder keeps streaming while [`Session::generation`] is what it was after this call.
    pub fn attach(&self) -> Option<mpsc::Receiver<Arc<Copy>>> {
        let taken = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if taken.is_some() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.detached_ms.store(0, Ordering::SeqCst);
        }
        taken
    }

    /// Counts the streams that attached or were asked to let go.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Asks the stream holding the queue to give it back: a reconnecting CLI's new stream takes
    /// over from one whose connection died without hookd noticing yet.
    pub fn supersede(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Gives the queue back when the stream ends, at `now_ms`: the grace period starts.
    pub fn detach(&self, receiver: mpsc::Receiver<Arc<Copy>>, now_ms: u64) {
        *self.receiver.lock().unwrap_or_else(|e| e.into_inner()) = Some(receiver);
        self.detached_ms.store(now_ms.max(1), Ordering::SeqCst);
    }

    /// The events dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    pub fn record(&self, answer: Answer) {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if results.len() == RESULTS {
            results.pop_front();
        }
        results.push_back(answer);
    }

    /// The local receiver's answers, newest last.
    pub fn results(&self) -> Vec<Answer> {
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        results.iter().cloned().collect()
    }

    pub fn connected(&self) -> bool {
        self.detached_ms.load(Ordering::SeqCst) == 0
    }

    fn expired(&self, now_ms: u64) -> bool {
        let detached = self.detached_ms.load(Ordering::SeqCst);
        detached != 0 && now_ms.saturating_sub(detached) >= GRACE_MS
    }
}

/// Why a session was not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The owner has `max` sessions open already.
    TooMany { max: usize },
}

/// An owner's newest events, kept after a start for the sessions of the process before.
#[derive(Default)]
struct Recent {
    events: VecDeque<Arc<Copy>>,
    /// The newest event id that did not fit, and how many did not.
    evicted: Option<(String, u64)>,
}

impl Recent {
    /// Counts `copy` as one the hub no longer has.
    fn evict(&mut self, copy: &Copy) {
        let count = self.evicted.as_ref().map_or(0, |(_, n)| *n);
        let newest = match self.evicted.take() {
            Some((id, _)) if id > copy.event_id => id,
            _ => copy.event_id.clone(),
        };
        self.evicted = Some((newest, count + 1));
    }
}

/// What a resumed session got of the events it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resumed {
    pub replayed: usize,
    /// Events after the last one seen that the hub no longer had.
    pub missed: u64,
}

/// Every open session, by owner.
pub struct Hub {
    sessions: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    recent: Mutex<(HashMap<String, Recent>, usize)>,
    started_ms: u64,
    /// How many owners have sessions: ingest asks [`Hub::wants`] without a lock while none do.
    owners: AtomicUsize,
    /// Whether `recent` may still hold something.
    recent_kept: AtomicBool,
}

impl Hub {
    pub fn new(started_ms: u64) -> Hub {
        Hub {
            sessions: Mutex::default(),
            recent: Mutex::default(),
            started_ms,
            owners: AtomicUsize::new(0),
            recent_kept: AtomicBool::new(true),
        }
    }

    fn keeping_recent(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.started_ms) < GRACE_MS
    }

    /// Whether `owner`'s events have anywhere to go: an open session, or the window after a start.
    pub fn wants(&self, owner: &str, now_ms: u64) -> bool {
        self.keeping_recent(now_ms)
            || (self.owners.load(Ordering::Relaxed) > 0
                && self
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(owner))
    }

    /// Hands `copy` to every session of `owner` that wants its type; never waits.
    pub fn publish(&self, owner: &str, copy: Copy, now_ms: u64) {
        let copy = Arc::new(copy);
        if self.keeping_recent(now_ms) {
            self.remember(owner, &copy);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(&mut sessions, now_ms);
        for session in sessions.get(owner).into_iter().flatten() {
            if session.wants(&copy.event_type) {
                session.offer(copy.clone());
            }
        }
    }

    fn remember(&self, owner: &str, copy: &Arc<Copy>) {
        let mut guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (owners, total) = &mut *guard;
        let recent = owners.entry(owner.to_string()).or_default();
        if recent.events.len() == RECENT {
            if let Some(old) = recent.events.pop_front() {
                *total -= old.body.len();
                recent.evict(&old);
            }
        }
        if *total + copy.body.len() > RECENT_BYTES {
            recent.evict(copy);
            return;
        }
        *total += copy.body.len();
        recent.events.push_back(copy.clone());
    }

    /// Opens a session for `owner`, unless `max` are open; expired ones are closed first.
    pub fn open(
        &self,
        owner: &str,
        events: Vec<String>,
        secret: String,
        max: usize,
        now_ms: u64,
    ) -> Result<Arc<Session>, Refusal> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(&mut sessions, now_ms);
        let open = sessions.entry(owner.to_string()).or_default();
        if open.len() >= max {
            return Err(Refusal::TooMany { max });
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        let session = Arc::new(Session {
            id: format!("lsn_{}", ulid::Ulid::new()),
            owner: owner.to_string(),
            events,
            secret,
            sender,
            receiver: Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            // Detached until its stream attaches: a session never streamed ends after the grace.
            detached_ms: AtomicU64::new(now_ms.max(1)),
            results: Mutex::default(),
            created_ms: now_ms,
        });
        open.push(session.clone());
        self.owners.store(sessions.len(), Ordering::Relaxed);
        Ok(session)
    }

    /// Queues for `session` the events of its owner after `last_event_id` that the hub kept
    /// since its start, and counts those it did not keep.
    pub fn resume(&self, session: &Session, last_event_id: &str) -> Resumed {
        let guard = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(recent) = guard.0.get(&session.owner) else {
            return Resumed::default();
        };
        let mut resumed = Resumed::default();
        for copy in recent
            .events
            .iter()
            .filter(|c| c.event_id.as_str() > last_event_id)
        {
            if session.wants(&copy.event_type) {
                session.offer(copy.clone());
                resumed.replayed += 1;
            }
        }
        if let Some((newest, count)) = &recent.evicted {
            if newest.as_str() > last_event_id {
                resumed.missed = *count;
            }
        }
        resumed
    }

    /// The session `id` of `owner` (of anyone's when `owner` is `None`), if it is open.
    pub fn find(&self, id: &str, owner: Option<&str>, now_ms: u64) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(&mut sessions, now_ms);
        sessions
            .values()
            .flatten()
            .find(|s| s.id == id && owner.is_none_or(|o| o == s.owner))
            .cloned()
    }

    /// Ends session `id` at once (the CLI quit).
    pub fn close(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for open in sessions.values_mut() {
            open.retain(|s| s.id != id);
        }
        sessions.retain(|_, open| !open.is_empty());
        self.owners.store(sessions.len(), Ordering::Relaxed);
    }

    /// The open sessions of `owner` (every owner's when `None`), oldest first.
    pub fn list(&self, owner: Option<&str>, now_ms: u64) -> Vec<Arc<Session>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(&mut sessions, now_ms);
        let mut listed: Vec<Arc<Session>> = sessions
            .iter()
            .filter(|(o, _)| owner.is_none_or(|want| want == o.as_str()))
            .flat_map(|(_, open)| open.iter().cloned())
            .collect();
        listed.sort_by_key(|s| s.created_ms);
        listed
    }

    /// Drops what a start kept once the window is over.
    pub fn forget_recent(&self, now_ms: u64) {
        if !self.keeping_recent(now_ms) && self.recent_kept.swap(false, Ordering::Relaxed) {
            *self.recent.lock().unwrap_or_else(|e| e.into_inner()) = Default::default();
        }
    }

    /// Closes the sessions whose grace period ran out, and counts the owners left.
    fn prune(&self, sessions: &mut HashMap<String, Vec<Arc<Session>>>, now_ms: u64) {
        for open in sessions.values_mut() {
            open.retain(|s| !s.expired(now_ms));
        }
        sessions.retain(|_, open| !open.is_empty());
        self.owners.store(sessions.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: &str, event_type: &str) -> Copy {
        Copy {
            event_id: id.to_string(),
            event_type: event_type.to_string(),
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    const LATER: u64 = 1_000_000;

    #[test]
    fn sessions_get_their_owners_events_of_the_types_they_want() {
        let hub = Hub::new(0);
        let a = hub.open("a", vec![], "s".into(), 3, LATER).expect("open");
        let failed = hub
            .open("a", vec!["job.failed".into()], "s".into(), 3, LATER)
            .expect("open");
        let b = hub.open("b", vec![], "s".into(), 3, LATER).expect("open");
        let (mut ra, mut rf, mut rb) = (
            a.attach().expect("queue"),
            failed.attach().expect("queue"),
            b.attach().expect("queue"),
        );
        assert!(a.attach().is_none(), "one stream at a time");
        let holder = a.generation();
        a.supersede();
        assert_ne!(a.generation(), holder, "the holder is told to let go");
        assert!(hub.wants("a", LATER) && hub.wants("b", LATER));
        assert!(
            !hub.wants("c", LATER),
            "no session, and long after the start"
        );
        hub.publish("a", copy("evt_1", "job.completed"), LATER);
        hub.publish("a", copy("evt_2", "job.failed"), LATER);
        assert_eq!(ra.try_recv().expect("first").event_id, "evt_1");
        assert_eq!(ra.try_recv().expect("second").event_id, "evt_2");
        assert_eq!(rf.try_recv().expect("failed").event_id, "evt_2");
        assert!(rf.try_recv().is_err());
        assert!(
            rb.try_recv().is_err(),
            "another owner's session gets nothing"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let hub = Hub::new(0);
        let session = hub.open("a", vec![], "s".into(), 3, LATER).expect("open");
        for i in 0..QUEUE + 5 {
            hub.publish("a", copy(&format!("evt_{i:04}"), "job.completed"), LATER);
        }
        assert_eq!(session.take_dropped(), 5);
        assert_eq!(session.take_dropped(), 0);

        // Bytes bound the queue too: large bodies are dropped long before 256 of them.
        let large = hub.open("b", vec![], "s".into(), 3, LATER).expect("open");
        let mut queue = large.attach().expect("queue");
        let body = bytes::Bytes::from(vec![b' '; 1 << 20]);
        for i in 0..6 {
            let copy = Copy {
                body: body.clone(),
                ..copy(&format!("evt_{i}"), "job.completed")
            };
            hub.publish("b", copy, LATER);
        }
        assert_eq!(large.take_dropped(), 2, "4 MiB queued, the rest dropped");
        let first = queue.try_recv().expect("queued");
        large.taken(&first);
        hub.publish(
            "b",
            Copy {
                body,
                ..copy("evt_9", "job.completed")
            },
            LATER,
        );
        assert_eq!(
            large.take_dropped(),
            0,
            "room again once one left the queue"
        );
    }

    #[test]
    fn sessions_past_the_limit_are_refused_and_a_detached_one_ends_after_the_grace() {
        let hub = Hub::new(0);
        let first = hub.open("a", vec![], "s".into(), 2, LATER).expect("open");
        let receiver = first.attach().expect("queue");
        let second = hub.open("a", vec![], "s".into(), 2, LATER).expect("open");
        let _second = second.attach().expect("queue");
        assert_eq!(
            hub.open("a", vec![], "s".into(), 2, LATER).err(),
            Some(Refusal::TooMany { max: 2 })
        );
        assert!(hub.open("b", vec![], "s".into(), 2, LATER).is_ok());
        first.detach(receiver, LATER);
        assert!(!first.connected());
        let almost = LATER + GRACE_MS - 1;
        assert!(
            hub.find(&first.id, Some("a"), almost).is_some(),
            "kept for a reconnect"
        );
        assert!(
            hub.find(&first.id, Some("b"), almost).is_none(),
            "not another owner's"
        );
        assert!(
            hub.find(&first.id, Some("a"), LATER + GRACE_MS).is_none(),
            "gone"
        );
        assert!(hub
            .open("a", vec![], "s".into(), 2, LATER + GRACE_MS)
            .is_ok());
        assert_eq!(hub.list(Some("a"), LATER + GRACE_MS).len(), 2);
        hub.close(&second.id);
        assert_eq!(hub.list(Some("a"), LATER + GRACE_MS).len(), 1);
    }

    #[test]
    fn after_a_start_a_reconnect_gets_what_it_missed_or_its_count() {
        let hub = Hub::new(LATER);
        assert!(
            hub.wants("a", LATER + 1),
            "keeps events in the window after a start"
        );
        for i in 0..RECENT + 3 {
            hub.publish(
                "a",
                copy(&format!("evt_{i:04}"), "job.completed"),
                LATER + 1,
            );
        }
        let session = hub
            .open("a", vec![], "s".into(), 3, LATER + 2)
            .expect("open");
        let resumed = hub.resume(&session, "");
        assert_eq!(
            resumed,
            Resumed {
                replayed: RECENT,
                missed: 3
            }
        );
        let other = hub
            .open("a", vec![], "s".into(), 3, LATER + 2)
            .expect("open");
        let resumed = hub.resume(&other, &format!("evt_{:04}", RECENT + 1));
        assert_eq!(
            resumed,
            Resumed {
                replayed: 1,
                missed: 0
            }
        );
        assert!(!hub.wants("b", LATER + GRACE_MS), "the window closes");
        hub.forget_recent(LATER + GRACE_MS);
        assert_eq!(hub.resume(&other, "evt_0000"), Resumed::default());
    }
}
