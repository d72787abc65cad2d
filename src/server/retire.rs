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

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{
    App, Caller, Denial, Outcome, audit_unavailable, granted_policy, invalid, json_body,
    reason_and_ticket,
};
use crate::engine::{RetireRequest, RetireState};

/// The body of both routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) ticket: Option<String>,
}

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
pub(super) async fn retire(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    handle(Action::Retire, app, remote, caller, method, uri, name, body).await
}

/// `POST /v1/policies/{name}/enable`.
pub(super) async fn enable(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    handle(Action::Enable, app, remote, caller, method, uri, name, body).await
}

#[allow(clippy::too_many_arguments)] // The axum extractors of both routes, passed on.
async fn handle(
    action: Action,
    app: Arc<App>,
    remote: SocketAddr,
    caller: Caller,
    method: Method,
    uri: Uri,
    name: String,
    body: Bytes,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    record.policy = Some(name.clone());
    let parsed: Body = match json_body(&body, "{\"reason\": string, \"ticket\": string?}") {
        Ok(b) => b,
        Err(d) => return app.refuse(record, d).await,
    };
    let (reason, ticket) = match reason_and_ticket(&mut record, parsed.reason, parsed.ticket) {
        Ok(t) => t,
        Err(d) => return app.refuse(record, d).await,
    };
    let meta = match granted_policy(&app, &caller, &name) {
        Ok(meta) => meta,
        Err(d) => return app.refuse(record, d).await,
    };
    if reason.is_none() {
        let d = invalid(format!("{} policy {name} requires a reason", action.verb()));
        return app.refuse(record, d).await;
    }
    if meta.require_ticket && ticket.is_none() {
        let d = invalid(format!("{} policy {name} requires a ticket", action.verb()));
        return app.refuse(record, d).await;
    }

    // Fail closed: nothing is asked of the agent unless this record is written.
    let mut authorized = record.clone();
    authorized.status = StatusCode::OK.as_u16();
    authorized.outcome = Outcome::Authorized;
    authorized.detail = match action {
        Action::Retire => "retirement requested",
        Action::Enable => "enable requested",
    }
    .to_owned();
    if let Err(error) = app.audit(authorized).await {
        tracing::error!(policy = %name, error = %error, "Writing the audit record of a retire or enable request failed; nothing was done.");
        return audit_unavailable().response();
    }

    let request = RetireRequest {
        actor: caller.identity.actor(),
        reason,
        ticket,
        authenticated_by: caller.authenticated_by(),
        ..RetireRequest::default()
    };
    let (done, detail, body) = match action {
        Action::Retire => match app.control.retire(&name, request).await {
            Ok(r) => (
                r.state == RetireState::Retired,
                format!("retirement {}", r.state.as_str()),
                serde_json::to_value(&r).unwrap_or_default(),
            ),
            Err(e) => return app.refuse(record, Denial::from_control(&e)).await,
        },
        Action::Enable => match app.control.enable(&name, request).await {
            Ok(o) => (
                o.succeeded(),
                format!("enable {}", o.record.state.as_str()),
                serde_json::to_value(&o).unwrap_or_default(),
            ),
            Err(e) => return app.refuse(record, Denial::from_control(&e)).await,
        },
    };
    if done {
        record.status = StatusCode::OK.as_u16();
        record.outcome = Outcome::Allowed;
        record.detail = detail;
        if let Err(error) = app.audit(record).await {
            // Already done: say so, and log the lost record.
            tracing::error!(policy = %name, error = %error, "Writing the audit record of a retire or enable failed.");
        }
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let error = body
        .get("error")
        .or_else(|| body.pointer("/record/error"))
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{} policy {name} did not complete", action.verb()));
    record.status = StatusCode::INTERNAL_SERVER_ERROR.as_u16();
    record.outcome = Outcome::Failed;
    record.detail = format!("{detail}: {error}");
    if let Err(e) = app.audit(record).await {
        tracing::error!(policy = %name, error = %e, "Writing the audit record of a failed retire or enable failed.");
    }
    let mut answer = json!({ "error": error });
    if let (Some(obj), Some(extra)) = (answer.as_object_mut(), body.as_object()) {
        for (k, v) in extra {
            if k != "error" {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(answer)).into_response()
}
