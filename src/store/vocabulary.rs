//! The words the store records an attempt and a delivery in: the outcome class of an attempt
//! ([`Outcome`]) and the wire names of both, written in one place.

/// The outcome classes of `hookd_delivery_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Http4xx,
    Http5xx,
    Timeout,
    Connect,
    /// Anything else, 3xx responses included: redirects are not followed.
    Other,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http5xx => "http_5xx",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::Other => "other",
        }
    }

    /// The class named by [`Outcome::as_str`]; anything unknown is `Other`.
    pub fn parse(text: &str) -> Outcome {
        match text {
            "success" => Outcome::Success,
            "http_4xx" => Outcome::Http4xx,
            "http_5xx" => Outcome::Http5xx,
            "timeout" => Outcome::Timeout,
            "connect" => Outcome::Connect,
            _ => Outcome::Other,
        }
    }

    pub fn from_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Success,
            400..=499 => Outcome::Http4xx,
            500..=599 => Outcome::Http5xx,
            _ => Outcome::Other,
        }
    }
}

use super::DeliveryState;

impl DeliveryState {
    /// Every state, in the order a delivery goes through them.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Scheduled,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    /// The state's name on the wire (the admin API, the dashboard, the PostgreSQL rows).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Scheduled => "scheduled",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state named by [`DeliveryState::as_str`]; `None` for anything else.
    pub fn parse(text: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An operator's switch on a subscription: a paused subscription's deliveries wait in the
/// queue until it is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Pause,
    Resume,
}

impl Switch {
    /// Whether the subscription is paused once the switch is set.
    pub fn paused(self) -> bool {
        self == Switch::Pause
    }
}
