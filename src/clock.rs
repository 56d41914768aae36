//! Time, injected: the code that decides by the clock (the scheduler, ingest, the retention
//! sweep) asks a [`Clock`] held in the shared state rather than the system.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch: the time base of the store.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }
}

/// The wall clock in Unix milliseconds.
pub fn system_now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
