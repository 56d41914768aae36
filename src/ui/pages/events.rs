//! The "Event types" page (`/ui/events`, `/ui/portal/<token>/events`): each type hookd sends
//! ([`crate::catalogue`]) with an example body and the headers it arrives with, signed with a
//! sample secret, so that a receiver can be written and checked before the first delivery.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::catalogue::{Example, EVENT_TYPES, SAMPLE_SECRET};
use crate::state::Shared;
use crate::ui::{html, Nav, Viewer};

/// Adds the page's route under both prefixes.
pub fn routes(router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let mut router = router;
    for base in ["/ui", "/ui/portal/{token}"] {
        router = router.route(&format!("{base}/events"), get(catalogue));
    }
    router
}

/// One event type as the page shows it.
#[derive(Debug)]
pub struct TypeRow {
    pub name: &'static str,
    pub about: &'static str,
    pub example: Example,
}

impl TypeRow {
    /// The id of its section (`job-completed`).
    pub fn anchor(&self) -> String {
        self.name.replace('.', "-")
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Nav,
    types: Vec<TypeRow>,
    secret: &'static str,
}

/// `GET .../events`.
async fn catalogue(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let prefix = shared.config().delivery.header_prefix.clone();
    let page = EventsPage {
        // Under Subscriptions: the sections' row has no room for another on a phone.
        nav: viewer.nav("subscriptions", None),
        types: EVENT_TYPES
            .iter()
            .map(|t| TypeRow {
                name: t.name,
                about: t.about,
                example: t.example(&prefix),
            })
            .collect(),
        secret: SAMPLE_SECRET,
    };
    html(StatusCode::OK, &page)
}
