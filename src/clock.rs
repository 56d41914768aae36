//! Time, injected: the code that decides by the clock (the scheduler, ingest, the retention
//! sweep) asks a [`Clock`] held in the shared state rather than the system.
//!
//! The daemon's clock, [`SystemClock`], is the wall clock made safe for scheduling: it follows
//! the wall clock's gradual adjustments (NTP slewing) but not its jumps. When the wall clock
//! steps by more than [`JUMP_TOLERANCE`] against the monotonic clock (an operator's `date -s`,
//! a VM resumed, NTP stepping), hookd keeps counting by the monotonic clock, so retries
//! neither fire early in a burst (a jump forward) nor wait for the lost time (a jump back), and
//! says so in the log. Its time then differs from the wall clock by the jump until the next
//! restart. Signature timestamps (Standard Webhooks' `webhook-timestamp`) use the wall clock
//! directly: receivers compare them with theirs.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Milliseconds since the Unix epoch: the time base of the store.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// A step of the wall clock against the monotonic clock larger than this is a jump.
pub const JUMP_TOLERANCE_MS: u64 = 1000;
/// [`JUMP_TOLERANCE_MS`] as a duration, for the docs.
pub const JUMP_TOLERANCE: std::time::Duration = std::time::Duration::from_millis(JUMP_TOLERANCE_MS);

/// The wall clock without its jumps (see the module doc).
pub struct SystemClock {
    state: Mutex<Readings>,
    wall: fn() -> u64,
    monotonic: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The last readings of both clocks and the time answered then.
struct Readings {
    wall: u64,
    monotonic: u64,
    answered: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl SystemClock {
    pub fn new() -> SystemClock {
        let start = Instant::now();
        SystemClock::with_sources(system_now_ms, move || {
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// A clock reading `wall` (Unix ms) and `monotonic` (ms from any origin): for tests that
    /// move the wall clock.
    pub fn with_sources(
        wall: fn() -> u64,
        monotonic: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> SystemClock {
        let now = wall();
        SystemClock {
            state: Mutex::new(Readings {
                wall: now,
                monotonic: monotonic(),
                answered: now,
            }),
            wall,
            monotonic: Box::new(monotonic),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let wall = (self.wall)();
        let monotonic = (self.monotonic)();
        let mut last = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = monotonic.saturating_sub(last.monotonic);
        let stepped = i128::from(wall) - i128::from(last.wall);
        let step = if (stepped - i128::from(elapsed)).unsigned_abs()
            <= u128::from(JUMP_TOLERANCE_MS)
        {
            // Never backwards: a slewing clock may step back a little.
            u64::try_from(stepped.max(0)).unwrap_or(u64::MAX)
        } else {
            tracing::warn!(
                jump_ms = i64::try_from(stepped - i128::from(elapsed)).unwrap_or(i64::MAX),
                "the wall clock jumped; hookd keeps counting time by the monotonic clock (its timestamps differ from the wall clock by the jump until the next restart)"
            );
            elapsed
        };
        last.answered = last.answered.saturating_add(step);
        last.wall = wall;
        last.monotonic = monotonic;
        last.answered
    }
}

/// The wall clock in Unix milliseconds.
pub fn system_now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    static WALL: AtomicU64 = AtomicU64::new(1_000_000);

    fn wall() -> u64 {
        WALL.load(Ordering::SeqCst)
    }

    /// Both clocks under the test's hand: (the clock, the monotonic reading).
    fn clock() -> (SystemClock, Arc<AtomicU64>) {
        WALL.store(1_000_000, Ordering::SeqCst);
        let monotonic = Arc::new(AtomicU64::new(0));
        let m = monotonic.clone();
        (
            SystemClock::with_sources(wall, move || m.load(Ordering::SeqCst)),
            monotonic,
        )
    }

    fn advance(monotonic: &AtomicU64, wall_ms: i64, monotonic_ms: u64) {
        monotonic.fetch_add(monotonic_ms, Ordering::SeqCst);
        let w = WALL.load(Ordering::SeqCst) as i64 + wall_ms;
        WALL.store(w as u64, Ordering::SeqCst);
    }

    // One test: the wall source is a static shared by every case.
    #[test]
    fn follows_the_wall_clock_but_not_its_jumps() {
        let (clock, monotonic) = clock();
        assert_eq!(clock.now_ms(), 1_000_000);
        // Both advance together.
        advance(&monotonic, 5_000, 5_000);
        assert_eq!(clock.now_ms(), 1_005_000);
        // Slewing: the wall clock runs 0.5 s fast over 10 s: followed.
        advance(&monotonic, 10_500, 10_000);
        assert_eq!(clock.now_ms(), 1_015_500);
        // A jump back by an hour: time goes on by the monotonic clock.
        advance(&monotonic, -3_600_000 + 2_000, 2_000);
        assert_eq!(clock.now_ms(), 1_017_500);
        // Then the wall clock moves normally again: followed from there.
        advance(&monotonic, 1_000, 1_000);
        assert_eq!(clock.now_ms(), 1_018_500);
        // A jump forward by an hour: no sudden hour.
        advance(&monotonic, 3_600_000 + 500, 500);
        assert_eq!(clock.now_ms(), 1_019_000);
        // A small step back (slewing) never makes time go backwards.
        advance(&monotonic, -300, 0);
        assert_eq!(clock.now_ms(), 1_019_000);
    }
}
