//! A subscription's page: its settings, health, recent deliveries and verification snippets,
//! its edit form, and its actions (test, pause, resume, enable, rotate the secret, delete).

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::charts::{charts, Charts};
use super::deliveries::{delivery_row, DeliveryRow};
use super::draft::{Draft, COMMON_EVENTS};
use super::subscription_rows::{breaker_texts, rows, signature_name, SubRow};
use super::{answer, error_text, not_found, rotation, visible_subscription, NoticeQuery};
use crate::api::subscriptions::own_breaker;
use crate::api::JsonBody;
use crate::config::SignatureScheme;
use crate::state::Shared;
use crate::store::DeliveryFilter;
use crate::ui::flash::Flashed;
use crate::ui::{html, see_other, store_down, Action, Nav, Params, Scope, Viewer};

#[derive(Debug)]
pub struct Snippet {
    pub lang: &'static str,
    pub label: &'static str,
    pub text: &'static str,
}

/// The verification snippets of docs/snippets, embedded.
const SNIPPETS: [Snippet; 6] = [
    Snippet {
        lang: "express",
        label: "Node.js (Express)",
        text: include_str!("../../../docs/snippets/express_raw.js"),
    },
    Snippet {
        lang: "flask",
        label: "Python (Flask)",
        text: include_str!("../../../docs/snippets/flask_receiver.py"),
    },
    Snippet {
        lang: "go",
        label: "Go",
        text: include_str!("../../../docs/snippets/go_receiver.go"),
    },
    Snippet {
        lang: "rust",
        label: "Rust",
        text: include_str!("../../../docs/snippets/rust_verify.rs"),
    },
    Snippet {
        lang: "node-standard",
        label: "Node.js (Standard Webhooks)",
        text: include_str!("../../../docs/snippets/node_standard.js"),
    },
    Snippet {
        lang: "python-standard",
        label: "Python (Standard Webhooks)",
        text: include_str!("../../../docs/snippets/python_standard.py"),
    },
];

/// The snippet asked for (`lang`), else the first that verifies `scheme`.
fn snippet(lang: Option<&str>, scheme: SignatureScheme) -> &'static Snippet {
    let default_lang = if scheme == SignatureScheme::Standard {
        "node-standard"
    } else {
        "express"
    };
    let lang = lang.unwrap_or(default_lang);
    SNIPPETS
        .iter()
        .find(|sn| sn.lang == lang)
        .unwrap_or(&SNIPPETS[0])
}

#[derive(Template)]
#[template(path = "subscription.html")]
struct SubscriptionPage {
    nav: Nav,
    s: SubRow,
    draft: Draft,
    common: [&'static str; 3],
    recent: Vec<DeliveryRow>,
    snippets: &'static [Snippet],
    snippet: &'static Snippet,
    /// The secret's rotation in progress, if any.
    rotation: Option<rotation::RotationView>,
    /// Where the resend form starts: a day ago.
    resend_since: String,
    charts: Charts,
    /// The types a test event may have ([`crate::catalogue::EVENT_TYPES`]).
    test_types: [&'static str; 3],
}

impl SubscriptionPage {
    fn is_lang(&self, lang: &str) -> bool {
        self.snippet.lang == lang
    }
}

pub async fn subscription(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let Some(id) = visible_subscription(&shared, &viewer, &params) else {
        return not_found("such subscription");
    };
    let nav = viewer.nav("subscriptions", q.notice);
    let (lang, window) = (q.lang.as_deref(), q.window.as_deref());
    page(&shared, &viewer, nav, &id, lang, window, None).await
}

/// The page of subscription `id`, its charts over `window`; its edit form as typed, with its
/// errors, when `typed` (a 422), else filled in with its settings.
async fn page(
    shared: &Shared,
    viewer: &Viewer,
    nav: Nav,
    id: &str,
    lang: Option<&str>,
    window: Option<&str>,
    typed: Option<Draft>,
) -> Response {
    let rows = match rows(shared, viewer).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(s) = rows.into_iter().find(|r| r.id == id) else {
        return not_found("such subscription");
    };
    let filter = DeliveryFilter {
        subscription: Some(id.to_string()),
        ..Default::default()
    };
    let recent = match shared.store.list_deliveries(&filter, None, 10).await {
        Ok((found, _)) => {
            let config = shared.config();
            found.iter().map(|d| delivery_row(&config, d)).collect()
        }
        Err(_) => return store_down(),
    };
    let path = format!(
        "{}/subscriptions/{}",
        viewer.base,
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let charts = match charts(shared, viewer, Some(id), window, &path).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rotation = shared
        .config()
        .subscription(id)
        .and_then(|sub| rotation::in_progress(sub, viewer.now_ms));
    let status = if typed.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    html(
        status,
        &SubscriptionPage {
            rotation,
            resend_since: super::recovery::default_since(viewer.now_ms),
            nav,
            draft: typed.unwrap_or_else(|| edit_draft(shared, &s)),
            snippet: snippet(lang, s.signature),
            s,
            common: COMMON_EVENTS,
            recent,
            snippets: &SNIPPETS,
            charts,
            test_types: crate::catalogue::EVENT_TYPES.map(|t| t.name),
        },
    )
}

/// The edit form of subscription `s`, filled in with its settings: the common event types as
/// boxes, the others typed, and its own breaker settings (empty: `[delivery]`'s).
fn edit_draft(shared: &Shared, s: &SubRow) -> Draft {
    let (events, other): (Vec<String>, Vec<String>) = s
        .events
        .split(", ")
        .map(str::to_string)
        .partition(|e| COMMON_EVENTS.contains(&e.as_str()));
    let own = shared
        .settings
        .stored()
        .iter()
        .find(|st| st.id == s.id)
        .map(own_breaker)
        .unwrap_or_default();
    Draft {
        id: s.id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        url: s.url.clone(),
        events,
        other_events: other.join(", "),
        signature: signature_name(s.signature).to_string(),
        secret: String::new(),
        owner: s.owner.clone(),
        headers: s.plain_headers.clone(),
        rate_limit: s.rate_limit.trim_end_matches("/s").to_string(),
        breaker: own,
        breaker_defaults: breaker_texts(&shared.config().delivery.breaker),
        errors: Vec::new(),
    }
}

/// `POST .../subscriptions/{id}`: the edit form, through `PATCH`. Saved, it answers `303` to
/// the subscription's page; refused, the page again with the form as typed and every error.
pub async fn update_subscription(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let Some(id) = visible_subscription(&shared, &action.viewer, &params) else {
        return not_found("such subscription");
    };
    let viewer = &action.viewer;
    let mut draft = Draft::from_fields(&action.fields);
    draft.id = id.clone();
    let config = shared.config();
    let current = config.subscription(&id).map_or(&[][..], |s| &s.headers);
    let admin = viewer.scope == Scope::Admin;
    let body = Bytes::from(
        draft
            .update_request(&action.fields, current, admin)
            .to_string(),
    );
    let (status, answer) = if draft.errors.is_empty() {
        let (s, p) = (State(shared.clone()), Path(id.clone()));
        let actor = viewer.actor.clone();
        answer(crate::api::audited::update(s, p, actor, JsonBody(body)).await).await
    } else {
        // The form's own errors, and the API's for the rest, without changing anything.
        match crate::api::subscriptions::check_update(&shared, &id, &body) {
            Some(refusal) => answer(refusal).await,
            None => (StatusCode::UNPROCESSABLE_ENTITY, Value::Null),
        }
    };
    if status.is_success() {
        let page = format!("{}/subscriptions/{id}", viewer.base);
        return viewer.redirect_with(&page, "Saved.");
    }
    if !answer.is_null() {
        draft.take_errors(&answer);
    }
    if !admin {
        draft.for_customer();
    }
    draft.breaker_defaults = breaker_texts(&config.delivery.breaker);
    let nav = viewer.nav("subscriptions", None);
    page(&shared, viewer, nav, &id, None, None, Some(draft)).await
}

/// What a subscription's buttons ask for: the `{action}` of
/// `POST .../subscriptions/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubscriptionAction {
    /// `test`: send it a test event.
    Test,
    /// `pause`: hold its deliveries.
    Pause,
    /// `resume`: let its deliveries go out again.
    Resume,
    /// `enable`: undo its circuit breaker's disabling; an operator's only.
    Enable,
    /// `rotate-secret`, once confirmed: a new secret, the previous one still signing until
    /// the rotation is finished or expires.
    RotateSecret,
    /// `finish-rotation`: the new secret alone signs from now on.
    FinishRotation,
    /// `resend`, once confirmed: the failed deliveries since a time, one attempt each now.
    Resend,
    /// `delete`, once its box is ticked.
    Delete,
}

impl SubscriptionAction {
    fn parse(text: &str) -> Option<SubscriptionAction> {
        match text {
            "test" => Some(SubscriptionAction::Test),
            "pause" => Some(SubscriptionAction::Pause),
            "resume" => Some(SubscriptionAction::Resume),
            "enable" => Some(SubscriptionAction::Enable),
            "rotate-secret" => Some(SubscriptionAction::RotateSecret),
            "finish-rotation" => Some(SubscriptionAction::FinishRotation),
            "resend" => Some(SubscriptionAction::Resend),
            "delete" => Some(SubscriptionAction::Delete),
            _ => None,
        }
    }

    /// Whether `scope` may take it: a portal may not enable what its breaker disabled.
    fn allowed(self, scope: &Scope) -> bool {
        self != SubscriptionAction::Enable || *scope == Scope::Admin
    }
}

/// `POST .../subscriptions/{id}/{test|pause|resume|enable|rotate-secret|finish-rotation|resend|delete}`.
pub async fn subscription_action(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    action: Action,
) -> Response {
    let Some(id) = visible_subscription(&shared, &action.viewer, &params) else {
        return not_found("such subscription");
    };
    let what = params
        .get("action")
        .and_then(|a| SubscriptionAction::parse(a))
        .filter(|what| what.allowed(&action.viewer.scope));
    let Some(what) = what else {
        return not_found("such action");
    };
    let page = format!("{}/subscriptions/{id}", action.viewer.base);
    let viewer = &action.viewer;
    let (s, p) = (State(shared), Path(id.clone()));
    let actor = viewer.actor.clone();
    let (response, done) = match what {
        SubscriptionAction::Test => {
            let event_type = action.fields.get("event_type").unwrap_or("job.test");
            let body = JsonBody(Bytes::from(
                serde_json::json!({ "event_type": event_type }).to_string(),
            ));
            let response = crate::api::audited::send_test(s, p, actor, body).await;
            return tested(response, viewer, &page).await;
        }
        SubscriptionAction::Pause => (
            crate::api::audited::pause(s, p, actor).await,
            "Paused: its deliveries wait until it is resumed.",
        ),
        SubscriptionAction::Resume => (crate::api::audited::resume(s, p, actor).await, "Resumed."),
        SubscriptionAction::Enable => (
            crate::api::audited::enable(s, p, actor).await,
            "Enabled: its waiting deliveries go out again.",
        ),
        SubscriptionAction::RotateSecret if action.fields.get("confirm").is_none() => {
            return see_other(&format!("{page}/rotate-secret"));
        }
        SubscriptionAction::RotateSecret => {
            let body = JsonBody(Bytes::new());
            let response = crate::api::audited::rotate_secret(s.clone(), p, actor, body).await;
            return rotated(response, &s.0, viewer, &page, id).await;
        }
        SubscriptionAction::FinishRotation => (
            crate::api::audited::finish_rotation(s, p, actor).await,
            "Switched: deliveries are signed with the new secret only.",
        ),
        SubscriptionAction::Resend => {
            let since = action.fields.get("since").unwrap_or("");
            if action.fields.get("confirm").is_none() {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("since", since)
                    .finish();
                return see_other(&format!("{page}/resend?{q}"));
            }
            let notice = super::recovery::resend(&s.0, viewer, &id, since).await;
            return viewer.redirect_with(&page, &notice);
        }
        SubscriptionAction::Delete if action.fields.get("confirm").is_none() => {
            return viewer.redirect_with(
                &page,
                "Not deleted: tick \"Yes, delete this subscription\" first.",
            );
        }
        SubscriptionAction::Delete => {
            let response = crate::api::audited::delete(s, p, actor).await;
            return deleted(response, viewer, &page, &id).await;
        }
    };
    switched(response, viewer, &page, done).await
}

/// After the test event: the subscription's page with a notice and a link to its delivery,
/// else with the error.
async fn tested(response: Response, viewer: &Viewer, page: &str) -> Response {
    let (status, body) = answer(response).await;
    match body.get("delivery_id").and_then(Value::as_str) {
        Some(d) if status.is_success() => viewer.redirect_with(
            &format!("{}/deliveries/{d}", viewer.base),
            "Test event sent: reload to see its attempt.",
        ),
        _ => viewer.redirect_with(page, &error_text(&body)),
    }
}

/// After pause, resume, enable or finishing a rotation: the subscription's page, saying `done`
/// or the error.
async fn switched(response: Response, viewer: &Viewer, page: &str, done: &str) -> Response {
    let (status, body) = answer(response).await;
    let notice = if status.is_success() {
        format!("{done}{}", super::audit::note(&body))
    } else {
        error_text(&body)
    };
    viewer.redirect_with(page, &notice)
}

/// After the rotation: the page of the new secret, shown once, else the subscription's page
/// with the error.
async fn rotated(
    response: Response,
    shared: &Shared,
    viewer: &Viewer,
    page: &str,
    id: String,
) -> Response {
    let (status, body) = answer(response).await;
    if !status.is_success() {
        return viewer.redirect_with(page, &error_text(&body));
    }
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let scheme = shared
        .config()
        .subscription(&id)
        .map_or(SignatureScheme::Abstrakt, |s| s.signature);
    let until = text("previous_secret_expires");
    let key = viewer.flash(Flashed::Secret {
        title: "Secret rotated".to_string(),
        secret: text("secret"),
        note: format!(
            "Copy this secret into your receiver now: it is shown only this once. {}",
            rotation::during(scheme, &until)
        ),
        id,
    });
    see_other(&format!("{page}/secret?shown={key}"))
}

/// After the deletion: the list of subscriptions, else the subscription's page with the error.
async fn deleted(response: Response, viewer: &Viewer, page: &str, id: &str) -> Response {
    let (status, body) = answer(response).await;
    if status.is_success() {
        viewer.redirect_with(
            &format!("{}/subscriptions", viewer.base),
            &format!("Subscription {id} deleted."),
        )
    } else {
        viewer.redirect_with(page, &error_text(&body))
    }
}
