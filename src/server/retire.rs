//! `POST /v1/policies/{name}/retire` and `POST /v1/policies/{name}/enable`: offboarding
//! a policy's credential and enabling it again through the agent, checked and audited
//! like a quarantine release (401, 429, 400 for a malformed body, 404, 403 outside the
//! grants, 400 without a reason — or without a ticket when the policy requires one —
//! then the agent: 409 busy, 503 not leader or audit log down).
//!
//! Both run to their end before answering (a few seconds: target, consumers, Vault).
//! The answer is 200 with the retirement record (`retire`) or `{record, rotation}`
//! (`enable`) when the policy ended `retired` / `enabled`; a retirement or enable that
//! did not complete answers 500 with `{"error", …the same fields}` so that no caller
//! mistakes it for success, and its evidence is still in the body.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::call::{Call, invalid};
use super::{Denial, Outcome};
use crate::api::{Enabled, Ended, RetireBody};
use crate::engine::{RetireRequest, RetireState};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Retire,
    Enable,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Retire => "retiring",
            Action::Enable => "enabling",
        }
    }
}

/// `POST /v1/policies/{name}/retire`.
pub(super) async fn retire(call: Call, Path(name): Path<String>, body: Bytes) -> Response {
    handle(Action::Retire, call, name, body).await
}

/// `POST /v1/policies/{name}/enable`.
pub(super) async fn enable(call: Call, Path(name): Path<String>, body: Bytes) -> Response {
    handle(Action::Enable, call, name, body).await
}

async fn handle(action: Action, call: Call, name: String, body: Bytes) -> Response {
    let mut call = call.about(&name);
    let result = checked(action, &mut call, &name, &body).await;
    call.answer(result).await
}

async fn checked(
    action: Action,
    call: &mut Call,
    name: &str,
    body: &Bytes,
) -> Result<Response, Denial> {
    let read = call.body::<RetireBody>(body)?;
    let meta = call.granted_policy(name)?;
    if read.reason.is_none() {
        return Err(invalid(format!(
            "{} policy {name} requires a reason",
            action.verb()
        )));
    }
    if meta.require_ticket && read.ticket.is_none() {
        return Err(invalid(format!(
            "{} policy {name} requires a ticket",
            action.verb()
        )));
    }
    let detail = match action {
        Action::Retire => "retirement requested",
        Action::Enable => "enable requested",
    };
    call.authorize(StatusCode::OK, detail.to_owned(), "nothing was done")
        .await?;

    let request = RetireRequest {
        asker: call.caller.asker(),
        reason: read.reason,
        ticket: read.ticket,
    };
    Ok(match action {
        Action::Retire => {
            let r = call.app.control.retire(name, request).await?;
            let detail = format!("retirement {}", r.state.as_str());
            let done = r.state == RetireState::Retired;
            let error = r.error.clone();
            ended(call, action, name, done, detail, error, r).await
        }
        Action::Enable => {
            let o = call.app.control.enable(name, request).await?;
            let detail = format!("enable {}", o.record.state.as_str());
            let done = o.succeeded();
            let error = o.record.error.clone();
            ended(call, action, name, done, detail, error, Enabled::from(o)).await
        }
    })
}

/// Answers the end of a retire or enable: 200 with `answer` when `done`, else 500
/// with its `error` (or a generic one) beside the same fields ([`Ended`]).
async fn ended(
    call: &Call,
    action: Action,
    name: &str,
    done: bool,
    detail: String,
    error: Option<String>,
    answer: impl Serialize,
) -> Response {
    if done {
        let answer = Ended {
            error: None,
            answer,
        };
        let response = (StatusCode::OK, axum::Json(answer)).into_response();
        return call.settle(Outcome::Allowed, detail, response).await;
    }
    let error =
        error.unwrap_or_else(|| format!("{} policy {name} did not complete", action.verb()));
    let detail = format!("{detail}: {error}");
    let answer = Ended {
        error: Some(error),
        answer,
    };
    let response = (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(answer)).into_response();
    call.settle(Outcome::Failed, detail, response).await
}
