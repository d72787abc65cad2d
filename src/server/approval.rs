//! `GET /v1/requests/{id}` and `POST /v1/requests/{id}/approve`: four-eyes approval of
//! on-demand rotations (see [`crate::agent::approval`]).
//!
//! Both are authenticated, rate-limited and audited like every `/v1` request. A request
//! is visible to identities granted its policy. An approval is accepted from an
//! identity granted the policy and listed in its `approvers` (by name or group), never
//! from the requester; the agent answers 410 with `reason` `expired`, `superseded` or
//! `used` once the request can no longer be approved.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{
    App, Caller, Denial, Outcome, audit_unavailable, granted_policy, json_body, reason_and_ticket,
};
use crate::agent::{ApprovalCaller, ApprovalRecord};

/// The request `id`, when it exists and the caller is granted its policy.
async fn visible_request(app: &App, caller: &Caller, id: &str) -> Result<ApprovalRecord, Denial> {
    let not_found = || {
        Denial::new(
            StatusCode::NOT_FOUND,
            Outcome::NotFound,
            format!("no request {id}"),
        )
    };
    let record = app
        .control
        .approval_request(id)
        .await
        .map_err(|e| Denial::from_control(&e))?
        .ok_or_else(not_found)?;
    let labels = app
        .control
        .policy_meta(&record.policy)
        .map(|m| m.labels)
        .unwrap_or_default();
    if caller.identity.may_access(&record.policy, &labels) {
        Ok(record)
    } else {
        // Like rotations: the caller is not told which policy it is about.
        Err(Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!("identity {} may not see request {id}", caller.identity.name),
        ))
    }
}

pub(super) async fn get_request(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    let request = match visible_request(&app, &caller, &id).await {
        Ok(r) => r,
        Err(d) => return app.refuse(record, d).await,
    };
    record.policy = Some(request.policy.clone());
    record.rotation_id = request.rotation_id.clone();
    let detail = format!("read approval request {id} ({})", request.state.as_str());
    app.serve_audited(record, detail, axum::Json(request).into_response())
        .await
}

/// The body of `POST /v1/requests/{id}/approve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    #[serde(default)]
    pub(super) reason: Option<String>,
}

pub(super) async fn approve(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    let parsed: ApproveBody = match json_body(&body, "{\"reason\": string?}") {
        Ok(b) => b,
        Err(d) => return app.refuse(record, d).await,
    };
    let reason = match reason_and_ticket(&mut record, parsed.reason, None) {
        Ok((reason, _)) => reason,
        Err(d) => return app.refuse(record, d).await,
    };
    let request = match visible_request(&app, &caller, &id).await {
        Ok(r) => r,
        Err(d) => return app.refuse(record, d).await,
    };
    record.policy = Some(request.policy.clone());
    // Granted the policy by name or labels, as for a rotation of it.
    if let Err(d) = granted_policy(&app, &caller, &request.policy) {
        return app.refuse(record, d).await;
    }

    // Fail closed: the approval is not recorded unless this record is written.
    let mut authorized = record.clone();
    authorized.status = StatusCode::OK.as_u16();
    authorized.outcome = Outcome::Authorized;
    authorized.detail = format!("approval of request {id} requested");
    if let Err(error) = app.audit(authorized).await {
        tracing::error!(request = %id, error = %error, "Writing the audit record of an approval failed; the approval was not recorded.");
        return audit_unavailable().response();
    }

    let who = ApprovalCaller {
        name: caller.identity.name.clone(),
        actor: caller.identity.actor(),
        groups: caller.identity.groups.clone(),
    };
    match app.control.approve(&id, &who, reason.as_deref()).await {
        Ok(accepted) => {
            record.rotation_id = accepted.rotation_id.clone();
            record.status = StatusCode::OK.as_u16();
            record.outcome = Outcome::Allowed;
            record.detail = format!(
                "approval of request {id} recorded ({} of {}); {}",
                accepted.approvals.unwrap_or_default(),
                accepted.required.unwrap_or_default(),
                if accepted.state == "pending_approval" {
                    "waiting for more approvals".to_owned()
                } else {
                    format!("rotation {}", accepted.state)
                }
            );
            if let Err(error) = app.audit(record).await {
                // The approval is already recorded: say so, and log the lost record.
                tracing::error!(request = %id, error = %error, "Writing the audit record of an approval failed.");
            }
            (StatusCode::OK, axum::Json(accepted)).into_response()
        }
        Err(e) => app.refuse(record, Denial::from_control(&e)).await,
    }
}
