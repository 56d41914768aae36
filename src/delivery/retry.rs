//! What follows a failed attempt. Pure: the current time and the random draw come from the
//! caller, so that every rule here is tested on fixed values.

use std::time::{Duration, SystemTime};

/// The knobs of [`next_delay`].
#[derive(Debug, Clone, Copy)]
pub struct RetryRules {
    /// Longest postponement a `Retry-After` can ask for.
    pub retry_after_cap: Duration,
    /// Delays of a minute or more are spread by up to this fraction either way.
    pub jitter: f64,
}

/// Delays below this get no jitter: the seed's immediate retry stays immediate.
const JITTER_FROM: Duration = Duration::from_secs(60);

/// The delay before the next attempt after attempt `attempts_made` (1-based) failed, or
/// `None` when the schedule is used up and the delivery is dead.
///
/// `retry_after` is the receiver's `Retry-After` on a 429 or 503: it postpones the retry (up to
/// the cap) but never brings it forward. `draw` is uniform in `[0, 1)`.
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    retry_after: Option<Duration>,
    rules: RetryRules,
    draw: f64,
) -> Option<Duration> {
    let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
    let mut delay = *schedule.get(index)?;
    if let Some(asked) = retry_after {
        delay = delay.max(asked.min(rules.retry_after_cap));
    }
    if delay >= JITTER_FROM && rules.jitter > 0.0 {
        let factor = 1.0 + rules.jitter * (2.0 * draw.clamp(0.0, 1.0) - 1.0);
        delay = scale(delay, factor);
    }
    Some(delay)
}

/// `delay` times `factor`, saturating: zero for a factor below zero, `Duration::MAX` past it
/// (`Duration::mul_f64` panics there), and `delay` itself for a factor that is not a number.
fn scale(delay: Duration, factor: f64) -> Duration {
    if factor.is_nan() {
        return delay;
    }
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RetryRules = RetryRules {
        retry_after_cap: Duration::from_secs(3600),
        jitter: 0.1,
    };

    fn seed_schedule() -> Vec<Duration> {
        [0, 60, 300, 900, 3600].map(Duration::from_secs).to_vec()
    }

    #[test]
    fn follows_the_schedule_then_dies() {
        let s = seed_schedule();
        let delays: Vec<Option<Duration>> = (1..=6)
            .map(|n| next_delay(&s, n, None, RULES, 0.5))
            .collect();
        assert_eq!(
            delays,
            [Some(0), Some(60), Some(300), Some(900), Some(3600), None]
                .map(|d| d.map(Duration::from_secs))
        );
        assert_eq!(next_delay(&[], 1, None, RULES, 0.5), None);
        assert_eq!(next_delay(&s, 0, None, RULES, 0.5), None);
    }

    #[test]
    fn jitter_spreads_long_delays_only() {
        let s = seed_schedule();
        assert_eq!(next_delay(&s, 1, None, RULES, 0.0), Some(Duration::ZERO));
        assert_eq!(
            next_delay(&s, 2, None, RULES, 0.0),
            Some(Duration::from_secs(54))
        );
        assert_eq!(
            next_delay(&s, 2, None, RULES, 0.75),
            Some(Duration::from_secs(63))
        );
        let low = next_delay(&s, 5, None, RULES, 0.0).unwrap();
        let high = next_delay(&s, 5, None, RULES, 0.999_999).unwrap();
        assert_eq!(low, Duration::from_secs(3240));
        assert!(
            high > Duration::from_secs(3959) && high < Duration::from_secs(3960),
            "{high:?}"
        );
        let none = RetryRules {
            jitter: 0.0,
            ..RULES
        };
        assert_eq!(
            next_delay(&s, 3, None, none, 0.0),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn retry_after_postpones_up_to_the_cap_and_never_advances() {
        let s = seed_schedule();
        let no_jitter = RetryRules {
            jitter: 0.0,
            ..RULES
        };
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(30)), no_jitter, 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            next_delay(&s, 3, Some(Duration::from_secs(30)), no_jitter, 0.5),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(86_400)), no_jitter, 0.5),
            Some(Duration::from_secs(3600))
        );
        // A postponed retry of a minute or more is jittered too.
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(100)), RULES, 0.0),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn extreme_delays_and_knobs_saturate_instead_of_panicking() {
        let huge = [Duration::MAX, Duration::from_secs(u64::MAX / 2)];
        let rules = |jitter| RetryRules {
            retry_after_cap: Duration::MAX,
            jitter,
        };
        for delay in huge {
            for jitter in [1.0, 2.0, f64::INFINITY, f64::NAN, -1.0] {
                for draw in [0.0, 0.5, 0.999_999, 1.0, 7.0, -3.0, f64::NAN] {
                    let got = next_delay(&[delay], 1, Some(Duration::MAX), rules(jitter), draw);
                    assert!(got.is_some(), "{delay:?} {jitter} {draw}");
                }
            }
        }
        // The case: the largest schedule a u64 of seconds writes, drawn high.
        assert_eq!(
            next_delay(&[Duration::from_secs(u64::MAX)], 1, None, rules(0.1), 0.999),
            Some(Duration::MAX)
        );
        // Drawn low, jitter 1 takes the delay to zero at most, never below.
        assert_eq!(
            next_delay(&[Duration::from_secs(3600)], 1, None, rules(1.0), 0.0),
            Some(Duration::ZERO)
        );
        assert_eq!(
            scale(Duration::from_secs(60), f64::NAN),
            Duration::from_secs(60)
        );
        assert_eq!(scale(Duration::from_secs(60), -2.0), Duration::ZERO);
        assert_eq!(scale(Duration::from_secs(60), f64::INFINITY), Duration::MAX);
    }

    #[test]
    fn parses_both_retry_after_forms_against_an_injected_now() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
