//! The subscriptions page: the list, the new-subscription form, and its creation, which shows
//! the new secret once.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::draft::{Draft, COMMON_EVENTS};
use super::subscription_rows::{breaker_texts, rows, SubRow};
use super::{answer, NoticeQuery};
use crate::api::JsonBody;
use crate::state::Shared;
use crate::ui::{html, Action, Nav, Scope, Viewer};

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct SubscriptionsPage {
    nav: Nav,
    subs: Vec<SubRow>,
}

pub async fn subscriptions(
    viewer: Viewer,
    State(shared): State<Arc<Shared>>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    match rows(&shared, &viewer).await {
        Ok(subs) => html(
            StatusCode::OK,
            &SubscriptionsPage {
                nav: viewer.nav("subscriptions", q.notice),
                subs,
            },
        ),
        Err(r) => r,
    }
}

#[derive(Template)]
#[template(path = "subscription_form.html")]
struct FormPage {
    nav: Nav,
    draft: Draft,
    common: [&'static str; 3],
}

pub async fn new_subscription(viewer: Viewer, State(shared): State<Arc<Shared>>) -> Response {
    html(
        StatusCode::OK,
        &FormPage {
            nav: viewer.nav("subscriptions", None),
            draft: Draft {
                signature: "abstrakt".to_string(),
                events: vec!["job.completed".to_string(), "job.failed".to_string()],
                breaker_defaults: breaker_texts(&shared.config().delivery.breaker),
                ..Default::default()
            },
            common: COMMON_EVENTS,
        },
    )
}

/// A secret shown once: a new subscription's, or a rotated one.
#[derive(Template)]
#[template(path = "secret.html")]
pub(super) struct SecretPage {
    pub nav: Nav,
    pub title: &'static str,
    pub id: String,
    pub secret: String,
    pub note: String,
}

pub async fn create_subscription(State(shared): State<Arc<Shared>>, action: Action) -> Response {
    let mut draft = Draft::from_fields(&action.fields);
    let owner = match &action.viewer.scope {
        Scope::Admin => (!draft.owner.is_empty()).then(|| draft.owner.clone()),
        Scope::Owner(o) => Some(o.clone()),
    };
    let body = draft.create_request(&action.fields, owner);
    if let Scope::Owner(o) = &action.viewer.scope {
        if let Some(refusal) = over_portal_limit(&shared, o) {
            draft.errors.push((String::new(), refusal));
        }
    }
    let (status, answer) = if draft.errors.is_empty() {
        let request = JsonBody(Bytes::from(body.to_string()));
        answer(crate::api::subscriptions::create(State(shared.clone()), request).await).await
    } else {
        (StatusCode::UNPROCESSABLE_ENTITY, Value::Null)
    };
    let nav = action.viewer.nav("subscriptions", None);
    if status == StatusCode::CREATED {
        created(nav, &answer)
    } else {
        form_again(&shared, nav, draft, status, &answer)
    }
}

/// Why `owner` may add no subscription from the portal: it has as many as the portal allows.
fn over_portal_limit(shared: &Shared, owner: &str) -> Option<String> {
    let max = shared.config().portal.max_subscriptions_per_owner;
    let has = shared
        .settings
        .stored()
        .iter()
        .filter(|s| s.owner.as_deref() == Some(owner))
        .count();
    (has >= max).then(|| format!("You have {has} subscriptions, the most this portal allows ({max}): delete one before adding another, or ask your provider to raise the limit."))
}

/// The form again, as typed, with the errors of the API's answer (`Null`: the form's own),
/// answered with a 422 (or the API's 5xx).
fn form_again(
    shared: &Shared,
    nav: Nav,
    mut draft: Draft,
    status: StatusCode,
    answer: &Value,
) -> Response {
    if !answer.is_null() {
        draft.take_errors(answer);
    }
    draft.breaker_defaults = breaker_texts(&shared.config().delivery.breaker);
    let code = if status.is_server_error() {
        status
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    html(
        code,
        &FormPage {
            nav,
            draft,
            common: COMMON_EVENTS,
        },
    )
}

/// The new subscription's id and secret, shown once.
fn created(nav: Nav, answer: &Value) -> Response {
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    html(
        StatusCode::OK,
        &SecretPage {
            nav,
            title: "Subscription created",
            id: text("id"),
            secret: text("secret"),
            note: "Copy this secret into your receiver now: it is shown only this once."
                .to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::draft::FORM_FIELDS;
    use super::*;
    use crate::config::SUBSCRIPTION_FIELDS;

    #[test]
    fn the_form_has_an_input_for_each_of_its_fields_and_for_no_other() {
        let page = FormPage {
            nav: Nav {
                base: "/ui".to_string(),
                csrf: "csrf".to_string(),
                owner: None,
                current: "subscriptions",
                notice: None,
            },
            draft: Draft::default(),
            common: COMMON_EVENTS,
        };
        let form = page.render().expect("the form renders");
        for field in SUBSCRIPTION_FIELDS {
            assert_eq!(
                form.contains(&format!("name=\"{}\"", field.name)),
                FORM_FIELDS.contains(field),
                "{}: FORM_FIELDS (draft.rs) lists the fields the form has an input for",
                field.name
            );
        }
    }
}
