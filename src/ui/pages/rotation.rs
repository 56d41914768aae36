//! A secret's rotation in two steps, and the page that shows a secret once.
//!
//! `GET .../subscriptions/{id}/rotate-secret` says what a rotation will do and asks to confirm
//! it; the confirmed POST makes the new secret, which `GET .../subscriptions/{id}/secret`
//! shows once (flashed: a reload shows it no more). The previous secret keeps signing until
//! the visitor presses "Switch to the new secret" (`finish-rotation`) or its grace period ends:
//! alone in `X-Abstrakt-Signature`, which carries one signature, so that a receiver that still
//! holds it keeps verifying; beside the new one in Standard Webhooks' header.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{not_found, visible_subscription};
use crate::config::{SignatureScheme, Subscription};
use crate::state::Shared;
use crate::ui::flash::Flashed;
use crate::ui::{html, Nav, Params, Viewer};

/// How long the previous secret signs when the rotation is not finished first: the API's
/// default (`previous_expires_in`).
const GRACE_MS: u64 = 24 * 3600 * 1000;

/// What happens during a rotation that lasts `until` at most, for a subscription signed with
/// `scheme`, as the pages say it.
pub fn during(scheme: SignatureScheme, until: &str) -> String {
    let abstrakt = "Deliveries stay signed with the previous secret (X-Abstrakt-Signature), so \
                    a receiver that still holds it keeps working.";
    let standard = "Each delivery's webhook-signature header carries two signatures, one with \
                    each secret, so a receiver holding either keeps working.";
    let switch = format!(
        "Once your receiver holds the new secret, press \"Switch to the new secret\" on the \
         subscription's page: from then on the new secret alone signs. Without that, the \
         switch happens by itself at {until}."
    );
    match scheme {
        SignatureScheme::Abstrakt => format!("{abstrakt} {switch}"),
        SignatureScheme::Standard => format!("{standard} {switch}"),
        SignatureScheme::Both => format!("{abstrakt} {standard} {switch}"),
    }
}

/// A rotation in progress, as the subscription's page shows it.
#[derive(Debug, Clone)]
pub struct RotationView {
    /// When the previous secret stops signing by itself.
    pub until: String,
    /// What happens until then.
    pub text: String,
}

/// The rotation of `s` in progress at `now_ms`, if there is one.
pub fn in_progress(s: &Subscription, now_ms: u64) -> Option<RotationView> {
    let previous = s
        .previous_secret
        .as_ref()
        .filter(|p| now_ms < p.expires_ms)?;
    let until = crate::event::rfc3339_millis(previous.expires_ms);
    Some(RotationView {
        text: during(s.signature, &until),
        until,
    })
}

#[derive(Template)]
#[template(path = "rotate.html")]
struct ConfirmPage {
    nav: Nav,
    id: String,
    text: String,
}

/// A secret shown once: a new subscription's, or a rotated one.
#[derive(Template)]
#[template(path = "secret.html")]
pub(super) struct SecretPage {
    pub nav: Nav,
    pub title: String,
    pub id: String,
    pub secret: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct GonePage<'a> {
    title: &'a str,
    text: &'a str,
    link: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StepQuery {
    /// The key of the flashed secret.
    shown: Option<String>,
    /// Since when failed deliveries are resent (`resend`).
    since: Option<String>,
}

/// `GET .../subscriptions/{id}/rotate-secret` (what a rotation does, and its confirmation),
/// `GET .../subscriptions/{id}/secret?shown=` (a secret, once) and
/// `GET .../subscriptions/{id}/resend?since=` (how many failed deliveries a resend would take).
pub async fn subscription_step(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    Query(q): Query<StepQuery>,
) -> Response {
    let Some(id) = visible_subscription(&shared, &viewer, &params) else {
        return not_found("such subscription");
    };
    match params.get("action").map(String::as_str) {
        Some("rotate-secret") => confirm(&shared, &viewer, id),
        Some("secret") => secret(&viewer, id, q.shown.as_deref().unwrap_or("")),
        Some("resend") => {
            let since = q
                .since
                .unwrap_or_else(|| super::recovery::default_since(viewer.now_ms));
            super::recovery::confirm(&shared, &viewer, id, &since).await
        }
        _ => not_found("such page"),
    }
}

fn confirm(shared: &Shared, viewer: &Viewer, id: String) -> Response {
    let config = shared.config();
    let Some(s) = config.subscription(&id) else {
        return not_found("such subscription");
    };
    let until = crate::event::rfc3339_millis(viewer.now_ms.saturating_add(GRACE_MS));
    let text = match in_progress(s, viewer.now_ms) {
        Some(rotation) => format!(
            "A rotation is already in progress until {}: switch to its new secret first.",
            rotation.until
        ),
        None => format!(
            "A new secret is made and shown to you once. {}",
            during(s.signature, &until)
        ),
    };
    html(
        StatusCode::OK,
        &ConfirmPage {
            nav: viewer.nav("subscriptions", None),
            id,
            text,
        },
    )
}

fn secret(viewer: &Viewer, id: String, key: &str) -> Response {
    match viewer.take_flash(key) {
        Some(Flashed::Secret {
            title,
            id: shown,
            secret,
            note,
        }) if shown == id => html(
            StatusCode::OK,
            &SecretPage {
                nav: viewer.nav("subscriptions", None),
                title,
                id,
                secret,
                note,
            },
        ),
        _ => {
            let back = format!("{}/subscriptions/{id}", viewer.base);
            html(
                StatusCode::GONE,
                &GonePage {
                    title: "Secret already shown",
                    text: "A secret is shown only once, on the page that follows its creation. \
                           If you did not copy it, rotate the secret to get a new one.",
                    link: Some((back.as_str(), "Go to the subscription")),
                },
            )
        }
    }
}
