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
use crate::ui::flash::Flashed;
use crate::ui::{html, see_other, Action, Nav, Scope, Viewer};

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

/// `POST .../subscriptions`: the new-subscription form. Created, it answers `303` to the
/// page that shows the secret once (a reload posts nothing again); refused, the form again as
/// typed, with every error of the form's own and the API's at once.
pub async fn create_subscription(State(shared): State<Arc<Shared>>, action: Action) -> Response {
    let mut draft = Draft::from_fields(&action.fields);
    let owner = match &action.viewer.scope {
        Scope::Admin => (!draft.owner.is_empty()).then(|| draft.owner.clone()),
        Scope::Owner(o) => {
            // Ids are global: a customer's subscription gets a generated one, so that no
            // answer depends on the ids of other owners (docs/security.md).
            draft.id.clear();
            Some(o.clone())
        }
    };
    let body = JsonBody(Bytes::from(
        draft.create_request(&action.fields, owner).to_string(),
    ));
    let over_limit = match &action.viewer.scope {
        Scope::Owner(o) => over_portal_limit(&shared, o),
        Scope::Admin => None,
    };
    let (status, answer) = if let Some(refusal) = over_limit {
        draft.errors.push((String::new(), refusal));
        (StatusCode::UNPROCESSABLE_ENTITY, Value::Null)
    } else if draft.errors.is_empty() {
        let actor = action.viewer.actor.clone();
        answer(crate::api::audited::create(State(shared.clone()), actor, body).await).await
    } else {
        // The form's own errors, and the API's for the rest, without creating anything.
        match crate::api::subscriptions::check_new(&shared, &body.0) {
            Some(refusal) => answer(refusal).await,
            None => (StatusCode::UNPROCESSABLE_ENTITY, Value::Null),
        }
    };
    if status == StatusCode::CREATED {
        return created(&action.viewer, &answer);
    }
    let nav = action.viewer.nav("subscriptions", None);
    form_again(&shared, nav, draft, status, &answer)
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
    if !nav.admin() {
        draft.for_customer();
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

/// The new subscription's id and secret, shown once on the page the answer redirects to.
fn created(viewer: &Viewer, answer: &Value) -> Response {
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let id = text("id");
    let key = viewer.flash(Flashed::Secret {
        title: "Subscription created".to_string(),
        id: id.clone(),
        secret: text("secret"),
        note: "Copy this secret into your receiver now: it is shown only this once.".to_string(),
    });
    let id = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    see_other(&format!(
        "{}/subscriptions/{id}/secret?shown={key}",
        viewer.base
    ))
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
                title: "Webhooks".to_string(),
                logo: false,
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
