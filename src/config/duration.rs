//! Durations as the file writes them ("250ms", "1m", "7d"), and the longest each kind may be.

use std::time::Duration;

use serde::Deserialize;

/// A duration written as in the example ("250ms", "1m", "7d").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The longest retry delay, `Retry-After` cap, breaker interval and dashboard sign-in: 30
/// days. Longer is a config error (or a 422): nothing is meant to wait that long, and every
/// duration stays far from what the time arithmetic can hold.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 86_400);

/// The longest timeout: an attempt's, a request's reads, a connection's idle time and the
/// shutdown's grace: 1 hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest retention of finished work: 10 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

/// What every duration error ends with: the accepted form.
const DURATION_FORM: &str =
    "a duration is a string of numbers with units, like \"250ms\", \"10s\", \"1m\", \"1h 30m\" or \"7d\"";

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(DURATION_FORM)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!("invalid duration {text:?}: {e}; {DURATION_FORM}"))
                    })
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {DURATION_FORM}"
                )))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {DURATION_FORM}"
                )))
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {n}: write it as a string with units, e.g. \"1s 500ms\"; {DURATION_FORM}"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}
