//! The "Check a signature" page (`/ui/check`, `/ui/portal/<token>/check`): a customer pastes
//! the headers and the body their framework gave them; hookd finds the delivery by its id,
//! tries the subscription's current and previous secret, and says whether the signature
//! verifies and, when not, why ([`crate::verify`]), showing the first difference against the
//! body it sent. No secret is ever shown, and a portal finds only its owner's deliveries.
//!
//! The page also lists the open `hookd listen` sessions (the owner's, in a portal) with what
//! their local receivers answered.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::deliveries::visible_delivery;
use super::{truncate, when};
use crate::state::Shared;
use crate::ui::{html, Action, Nav, Scope, Viewer};
use crate::verify::{self, Candidate, Verdict};

/// Characters of pasted text kept.
const PASTE_CHARS: usize = 256 * 1024;

/// Adds the page's routes under both prefixes.
pub fn routes(router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut router = router;
    for base in ["/ui", "/ui/portal/{token}"] {
        router = router.route(&format!("{base}/check"), get(form).post(check));
    }
    router
}

/// One answer a listen session's receiver gave, as shown.
#[derive(Debug)]
pub struct AnswerRow {
    pub delivery_id: String,
    pub event_type: String,
    pub status: String,
    pub duration_ms: u64,
    pub at: String,
}

/// One open listen session, as shown.
#[derive(Debug)]
pub struct SessionRow {
    pub id: String,
    pub owner: String,
    pub events: String,
    pub connected: bool,
    pub answers: Vec<AnswerRow>,
}

#[derive(Template)]
#[template(path = "check.html")]
struct CheckPage {
    nav: Nav,
    delivery: String,
    headers: String,
    body: String,
    /// The verdict: whether it verifies, and the sentence that says why.
    result: Option<(bool, String)>,
    sessions: Vec<SessionRow>,
}

fn sessions(shared: &Shared, viewer: &Viewer) -> Vec<SessionRow> {
    let owner = match &viewer.scope {
        Scope::Admin => None,
        Scope::Owner(owner) => Some(owner.as_str()),
    };
    shared
        .listen
        .list(owner, shared.clock.now_ms())
        .iter()
        .map(|s| SessionRow {
            id: s.id.clone(),
            owner: s.owner.clone(),
            events: if s.events.is_empty() {
                "all".to_string()
            } else {
                s.events.join(", ")
            },
            connected: s.connected(),
            answers: s
                .results()
                .into_iter()
                .rev()
                .map(|a| AnswerRow {
                    delivery_id: a.delivery_id,
                    event_type: a.event_type,
                    status: a.status.map_or_else(
                        || truncate(a.error.as_deref().unwrap_or("no answer"), 80),
                        |s| s.to_string(),
                    ),
                    duration_ms: a.duration_ms,
                    at: when(Some(a.at_ms)),
                })
                .collect(),
        })
        .collect()
}

/// `GET .../check`: the empty form and the listen sessions.
async fn form(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let page = CheckPage {
        nav: viewer.nav("check", None),
        delivery: String::new(),
        headers: String::new(),
        body: String::new(),
        result: None,
        sessions: sessions(&shared, &viewer),
    };
    html(StatusCode::OK, &page)
}

/// `POST .../check`: the verdict on what was pasted.
async fn check(State(shared): State<Arc<Shared>>, action: Action) -> Response {
    let field = |name: &str| -> String {
        truncate(action.fields.get(name).unwrap_or_default(), PASTE_CHARS)
    };
    let (delivery, headers, body) = (field("delivery"), field("headers"), field("body"));
    let result = verdict(&shared, &action.viewer, &delivery, &headers, &body).await;
    let page = CheckPage {
        nav: action.viewer.nav("check", None),
        sessions: sessions(&shared, &action.viewer),
        delivery,
        headers,
        body,
        result: Some(result),
    };
    html(StatusCode::OK, &page)
}

/// Whether the pasted request verifies, and why not, in words.
async fn verdict(
    shared: &Shared,
    viewer: &Viewer,
    delivery: &str,
    headers: &str,
    body: &str,
) -> (bool, String) {
    let headers = match verify::parse_headers(headers) {
        Ok(h) => h,
        Err(e) => return (false, e),
    };
    let prefix = shared.config().delivery.header_prefix.clone();
    let named = headers
        .iter()
        .find(|(n, _)| {
            n.eq_ignore_ascii_case(&format!("{prefix}-Delivery"))
                || n.eq_ignore_ascii_case("webhook-id")
        })
        .map(|(_, v)| v.clone());
    let Some(id) = Some(delivery.to_string())
        .filter(|d| !d.is_empty())
        .or(named)
    else {
        return (false, format!("Give the delivery id (the {prefix}-Delivery header) so that hookd knows which subscription's secrets to try."));
    };
    // Another owner's delivery reads as absent, as everywhere in the portal.
    let Ok(d) = visible_delivery(shared, viewer, &id).await else {
        return (false, format!("There is no delivery {id} here."));
    };
    let config = shared.config();
    let Some(subscription) = config.subscription(&d.subscription) else {
        return (false, format!("Delivery {id} went to a per-request target or a subscription that no longer exists: check it with `hookd verify` and the secret it was sent with."));
    };
    let current = subscription.secret.expose().to_string();
    let previous = subscription
        .previous_secret
        .as_ref()
        .map(|p| p.secret.expose().to_string());
    let mut secrets = vec![Candidate {
        label: "current",
        secret: &current,
    }];
    if let Some(previous) = &previous {
        secrets.push(Candidate {
            label: "previous",
            secret: previous,
        });
    }
    let sent = shared.store.event_body(&d.event_id).await.ok().flatten();
    let verdict = verify::check(&verify::Input {
        headers: &headers,
        body: body.as_bytes(),
        secrets: &secrets,
        prefix: &prefix,
        now_secs: i64::try_from(shared.clock.now_ms() / 1000).unwrap_or(i64::MAX),
        sent: sent.as_deref(),
    });
    match verdict {
        Verdict::Verifies {
            header,
            secret,
            note,
        } => {
            let mut text =
                format!("It verifies: {header} matches under the subscription's {secret} secret.");
            if secret == "previous" {
                text.push_str(" The receiver still has the secret from before the rotation: give it the current one before the previous one expires.");
            }
            if let Some(note) = note {
                text.push_str(&format!(" Note: {note}"));
            }
            (true, text)
        }
        Verdict::Fails(failure) => (false, format!("It does not verify: {failure}.")),
    }
}
