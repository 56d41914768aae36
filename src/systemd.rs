//! systemd integration: `sd_notify` messages and the watchdog.
//!
//! Every function here is a no-op when `$NOTIFY_SOCKET` is unset (not under systemd, or in
//! tests that do not ask for it).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Reloads the config file (SIGHUP), telling systemd RELOADING before and READY after, with the
/// status line of what now runs.
pub fn reload(shared: &Shared, path: &std::path::Path) -> Result<(), crate::config::ConfigError> {
    reloading();
    let result = shared.reload(path);
    ready(shared);
    result
}

/// `READY=1` with a status line: the store is open, the listeners are bound, the tasks run.
pub fn ready(shared: &Shared) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(shared)),
    ]);
}

/// `RELOADING=1` (with the monotonic time newer systemd wants), before a reload.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`, when the drain starts.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: finishing attempts in flight"),
    ]);
}

fn status_line(shared: &Shared) -> String {
    let m = &shared.metrics;
    let get = |state: &str| m.pending.with_label_values(&[state]).get();
    format!(
        "{}; pending: {} ready, {} scheduled, {} in flight; oldest {:.0}s",
        shared.listening,
        get("ready"),
        get("scheduled"),
        get("in_flight"),
        m.oldest_pending_age.get()
    )
}

/// Pings the watchdog (`WATCHDOG=1`, with a fresh `STATUS=`) at half the interval systemd set,
/// but only while the scheduler loop has turned recently and the store writer answers: a hung
/// scheduler or writer stops the pings and systemd restarts hookd. Returns at once when systemd
/// set no watchdog.
pub async fn watchdog(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        // Without a watchdog, still refresh the status line now and then.
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(10)) => send(&[NotifyState::Status(&status_line(&shared))]),
                () = stop.cancelled() => return,
            }
        }
    };
    let period = interval / 2;
    // The scheduler loop turns at least every `scheduler::MAX_IDLE` when idle: a heartbeat
    // older than twice that, or than a ping period, means it is stuck.
    let stale = period.max(2 * crate::scheduler::MAX_IDLE + Duration::from_millis(500));
    tracing::info!(interval = ?interval, "systemd watchdog enabled");
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let scheduler_age = shared
            .clock
            .now_ms()
            .saturating_sub(shared.scheduler_heartbeat.load(Ordering::Relaxed));
        let scheduler_alive = Duration::from_millis(scheduler_age) < stale;
        let writer_alive = matches!(
            tokio::time::timeout(period, shared.store.ping()).await,
            Ok(Ok(()))
        );
        if scheduler_alive && writer_alive {
            send(&[
                NotifyState::Watchdog,
                NotifyState::Status(&status_line(&shared)),
            ]);
        } else {
            tracing::error!(
                scheduler_alive,
                writer_alive,
                scheduler_age_ms = scheduler_age,
                "not pinging the systemd watchdog: a core task is stuck"
            );
        }
    }
}
