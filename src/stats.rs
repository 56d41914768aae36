//! Delivery statistics over a window of time, for the charts and `GET /v1/stats`: deliveries,
//! delivered, failed attempts and dead deliveries per time bucket, attempt latency (p50, p95)
//! per bucket, and each subscription's success rate and latency over the whole window.
//!
//! Pure: the caller passes the time and the deliveries ([`Sample`]) it read from the store;
//! nothing here reads the clock or does I/O.

use std::collections::BTreeMap;

/// A window the charts show: its buckets' count and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last hour, in 12 buckets of 5 minutes.
    Hour,
    /// The last day, in 24 buckets of one hour.
    Day,
    /// The last week, in 28 buckets of 6 hours.
    Week,
}

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

impl Window {
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    /// The window named `text` (`hour`, `day`, `week`).
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
        }
    }

    /// How the window is called in a sentence: "the last hour".
    pub fn label(self) -> &'static str {
        match self {
            Window::Hour => "the last hour",
            Window::Day => "the last 24 hours",
            Window::Week => "the last 7 days",
        }
    }

    /// The number of buckets.
    pub fn buckets(self) -> u64 {
        match self {
            Window::Hour => 12,
            Window::Day => 24,
            Window::Week => 28,
        }
    }

    /// The width of one bucket, in milliseconds.
    pub fn bucket_ms(self) -> u64 {
        match self {
            Window::Hour => 5 * MINUTE_MS,
            Window::Day => HOUR_MS,
            Window::Week => 6 * HOUR_MS,
        }
    }

    /// The window's start and end at `now_ms` (Unix ms): the end is the end of the bucket
    /// `now_ms` falls in, so buckets start on whole multiples of their width (the last one is
    /// still filling).
    pub fn span(self, now_ms: u64) -> (u64, u64) {
        let width = self.bucket_ms();
        let end = (now_ms / width + 1) * width;
        (end.saturating_sub(width * self.buckets()), end)
    }
}

/// One attempt's time and result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub started_ms: u64,
    pub duration_ms: u64,
    pub success: bool,
}

/// Where a delivery stands, as the statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not finished: waiting, retrying or in flight.
    Open,
    Delivered,
    Dead,
}

/// One delivery as the statistics read it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub subscription: &'a str,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub fate: Fate,
    pub attempts: &'a [Timing],
}

/// The figures of one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Its start, Unix ms.
    pub start_ms: u64,
    /// Deliveries created in it.
    pub deliveries: u64,
    /// Deliveries delivered in it (by their finish time).
    pub delivered: u64,
    /// Attempts started in it that failed.
    pub failed_attempts: u64,
    /// Deliveries that went dead in it (by their finish time).
    pub dead: u64,
    /// Attempts started in it.
    pub attempts: u64,
    /// The attempts' median and 95th percentile duration, ms; `None` without attempts.
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// One subscription's figures over the whole window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionFigures {
    pub deliveries: u64,
    pub delivered: u64,
    pub dead: u64,
    pub attempts: u64,
    pub failed_attempts: u64,
    /// Delivered among the finished deliveries, in percent; `None` before any finished.
    pub success_percent: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// The statistics of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub window: Window,
    pub start_ms: u64,
    pub end_ms: u64,
    pub buckets: Vec<Bucket>,
    /// Every delivery of the window together.
    pub total: SubscriptionFigures,
    /// By subscription id.
    pub subscriptions: BTreeMap<String, SubscriptionFigures>,
    /// Only some of the window's deliveries were read (the read is bounded): every figure is
    /// a lower bound, and the latencies those of a sample.
    pub sampled: bool,
}

/// Gathers [`Sample`]s into a [`Summary`].
#[derive(Debug)]
pub struct Tally {
    window: Window,
    start_ms: u64,
    end_ms: u64,
    buckets: Vec<Bucket>,
    durations: Vec<Vec<u64>>,
    total: (SubscriptionFigures, Vec<u64>),
    subscriptions: BTreeMap<String, (SubscriptionFigures, Vec<u64>)>,
}

impl Tally {
    /// An empty tally of `window` ending with the bucket of `now_ms`.
    pub fn new(window: Window, now_ms: u64) -> Tally {
        let (start_ms, end_ms) = window.span(now_ms);
        let n = window.buckets();
        Tally {
            window,
            start_ms,
            end_ms,
            buckets: (0..n)
                .map(|i| Bucket {
                    start_ms: start_ms + i * window.bucket_ms(),
                    ..Bucket::default()
                })
                .collect(),
            durations: vec![Vec::new(); usize::try_from(n).unwrap_or(0)],
            total: Default::default(),
            subscriptions: BTreeMap::new(),
        }
    }

    /// The window's start: the earliest creation time a sample may have.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// The index of the bucket `ms` falls in, if it is in the window.
    fn bucket(&self, ms: u64) -> Option<usize> {
        if ms < self.start_ms || ms >= self.end_ms {
            return None;
        }
        usize::try_from((ms - self.start_ms) / self.window.bucket_ms()).ok()
    }

    /// Counts one delivery created in the window; one created outside it is left out.
    pub fn add(&mut self, sample: &Sample<'_>) {
        let Some(created) = self.bucket(sample.created_ms) else {
            return;
        };
        self.buckets[created].deliveries += 1;
        let finished = sample.finished_ms.and_then(|ms| self.bucket(ms));
        let (figures, durations) = self
            .subscriptions
            .entry(sample.subscription.to_string())
            .or_default();
        count(figures, durations, sample);
        count(&mut self.total.0, &mut self.total.1, sample);
        match (sample.fate, finished) {
            (Fate::Delivered, Some(b)) => self.buckets[b].delivered += 1,
            (Fate::Dead, Some(b)) => self.buckets[b].dead += 1,
            _ => {}
        }
        for a in sample.attempts {
            let Some(b) = self.bucket(a.started_ms) else {
                continue;
            };
            self.buckets[b].attempts += 1;
            self.durations[b].push(a.duration_ms);
            if !a.success {
                self.buckets[b].failed_attempts += 1;
            }
        }
    }

    /// The summary; `sampled`: not every delivery of the window was added.
    pub fn finish(mut self, sampled: bool) -> Summary {
        for (bucket, durations) in self.buckets.iter_mut().zip(&mut self.durations) {
            (bucket.p50_ms, bucket.p95_ms) = quantiles(durations);
        }
        let subscriptions = self
            .subscriptions
            .into_iter()
            .map(|(id, (figures, durations))| (id, finished(figures, durations)))
            .collect();
        Summary {
            window: self.window,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            buckets: self.buckets,
            total: finished(self.total.0, self.total.1),
            subscriptions,
            sampled,
        }
    }
}

/// Counts one delivery's figures, and its attempts' durations, into a subscription's (or the
/// total's).
fn count(figures: &mut SubscriptionFigures, durations: &mut Vec<u64>, sample: &Sample<'_>) {
    figures.deliveries += 1;
    match sample.fate {
        Fate::Delivered => figures.delivered += 1,
        Fate::Dead => figures.dead += 1,
        Fate::Open => {}
    }
    for a in sample.attempts {
        figures.attempts += 1;
        durations.push(a.duration_ms);
        if !a.success {
            figures.failed_attempts += 1;
        }
    }
}

/// The figures with their rate and latencies worked out.
fn finished(mut figures: SubscriptionFigures, mut durations: Vec<u64>) -> SubscriptionFigures {
    (figures.p50_ms, figures.p95_ms) = quantiles(&mut durations);
    let finished = figures.delivered + figures.dead;
    figures.success_percent = (finished > 0).then(|| {
        // Counts far below 2^52: exact as floats.
        figures.delivered as f64 * 100.0 / finished as f64
    });
    figures
}

/// The median and 95th percentile of `values` (sorted here).
fn quantiles(values: &mut [u64]) -> (Option<u64>, Option<u64>) {
    values.sort_unstable();
    (percentile(values, 50), percentile(values, 95))
}

/// The `p`th percentile of `sorted` by the nearest-rank method: the smallest value that at
/// least `p` percent of the values do not exceed. `None` for no values.
pub fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    // ceil(p * n / 100), at least 1: the rank, counted from 1.
    let rank = (p * n).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index).or(sorted.last()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-12T10:30:00Z.
    const NOW: u64 = 1_768_213_800_000;

    fn ok(started_ms: u64, duration_ms: u64) -> Timing {
        Timing {
            started_ms,
            duration_ms,
            success: true,
        }
    }

    fn failed(started_ms: u64, duration_ms: u64) -> Timing {
        Timing {
            success: false,
            ..ok(started_ms, duration_ms)
        }
    }

    #[test]
    fn windows_parse_and_align_their_buckets() {
        assert_eq!(Window::parse("day"), Some(Window::Day));
        assert_eq!(Window::parse("month"), None);
        assert_eq!(Window::parse("Day"), None);
        for w in Window::ALL {
            let (start, end) = w.span(NOW);
            assert_eq!(end - start, w.bucket_ms() * w.buckets(), "{w:?}");
            assert_eq!(start % w.bucket_ms(), 0, "{w:?}");
            assert!(start < NOW && NOW < end, "{w:?}");
            assert!(end - NOW <= w.bucket_ms(), "{w:?}");
        }
        // 10:30 exactly starts a 5-minute bucket: it is the last one, ending at 10:35.
        assert_eq!(
            Window::Hour.span(NOW),
            (NOW - 55 * MINUTE_MS, NOW + 5 * MINUTE_MS)
        );
        // The day ends at 11:00, the end of the hour 10:30 falls in.
        assert_eq!(Window::Day.span(NOW).1, NOW + 30 * MINUTE_MS);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[1, 2], 50), Some(1));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 95), Some(95));
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&twenty, 95), Some(19));
        assert_eq!(percentile(&twenty, 100), Some(20));
    }

    /// An hour of four deliveries: retried then delivered (subscription a), dead (b), still
    /// waiting (a), and one created before the window (a).
    fn an_hour() -> Summary {
        let mut tally = Tally::new(Window::Hour, NOW);
        // Created in the first bucket, delivered in the third after a failed attempt.
        let retried = [
            failed(NOW - 55 * MINUTE_MS, 30),
            ok(NOW - 45 * MINUTE_MS, 10),
        ];
        tally.add(&Sample {
            subscription: "a",
            created_ms: NOW - 55 * MINUTE_MS,
            finished_ms: Some(NOW - 45 * MINUTE_MS + 10),
            fate: Fate::Delivered,
            attempts: &retried,
        });
        // Dead in the last bucket after one attempt.
        let dead = [failed(NOW + 1_000, 200)];
        tally.add(&Sample {
            subscription: "b",
            created_ms: NOW,
            finished_ms: Some(NOW + 1_200),
            fate: Fate::Dead,
            attempts: &dead,
        });
        // Still waiting, no attempt yet.
        tally.add(&Sample {
            subscription: "a",
            created_ms: NOW + 2_000,
            finished_ms: None,
            fate: Fate::Open,
            attempts: &[],
        });
        // Created before the window: left out.
        tally.add(&Sample {
            subscription: "a",
            created_ms: NOW - 61 * MINUTE_MS,
            finished_ms: Some(NOW),
            fate: Fate::Delivered,
            attempts: &[ok(NOW, 5)],
        });
        tally.finish(false)
    }

    #[test]
    fn deliveries_and_attempts_fall_in_their_buckets() {
        let s = an_hour();
        let five = 5 * MINUTE_MS;
        assert_eq!(s.buckets.len(), 12);
        assert_eq!(s.buckets[0].start_ms, NOW - 55 * MINUTE_MS);
        assert_eq!(s.buckets[1].start_ms - s.buckets[0].start_ms, five);
        let first = &s.buckets[0];
        assert_eq!(
            (first.deliveries, first.delivered, first.failed_attempts),
            (1, 0, 1)
        );
        assert_eq!((first.p50_ms, first.p95_ms), (Some(30), Some(30)));
        let third = &s.buckets[2];
        assert_eq!(
            (third.deliveries, third.delivered, third.attempts),
            (0, 1, 1)
        );
        assert_eq!(third.p50_ms, Some(10));
        let last = &s.buckets[11];
        assert_eq!(
            (last.deliveries, last.dead, last.failed_attempts),
            (2, 1, 1)
        );
        assert_eq!(
            s.buckets[5],
            Bucket {
                start_ms: s.buckets[5].start_ms,
                ..Bucket::default()
            }
        );
        assert!(!s.sampled);
    }

    #[test]
    fn each_subscription_and_the_total_get_a_rate_and_latencies() {
        let s = an_hour();
        let a = &s.subscriptions["a"];
        assert_eq!(
            (a.deliveries, a.delivered, a.dead, a.attempts),
            (2, 1, 0, 2)
        );
        assert_eq!(a.success_percent, Some(100.0));
        assert_eq!((a.p50_ms, a.p95_ms), (Some(10), Some(30)));
        let b = &s.subscriptions["b"];
        assert_eq!((b.deliveries, b.dead, b.failed_attempts), (1, 1, 1));
        assert_eq!(b.success_percent, Some(0.0));
        assert_eq!(
            (
                s.total.deliveries,
                s.total.attempts,
                s.total.failed_attempts
            ),
            (3, 3, 2)
        );
        assert_eq!(s.total.success_percent, Some(50.0));
        assert_eq!((s.total.p50_ms, s.total.p95_ms), (Some(30), Some(200)));
    }

    #[test]
    fn a_subscription_without_finished_deliveries_has_no_rate() {
        let mut tally = Tally::new(Window::Day, NOW);
        tally.add(&Sample {
            subscription: "a",
            created_ms: NOW,
            finished_ms: None,
            fate: Fate::Open,
            attempts: &[failed(NOW, 3)],
        });
        let s = tally.finish(true);
        assert_eq!(s.subscriptions["a"].success_percent, None);
        assert_eq!(s.subscriptions["a"].p95_ms, Some(3));
        assert!(s.sampled);
    }
}
