//! `GET /v1/requests/{id}` and `POST /v1/requests/{id}/approve`: four-eyes approval of
//! on-demand rotations (see [`crate::agent::approval`]).
//!
//! Both are authenticated, rate-limited and audited like every `/v1` request. A request
//! is visible to identities granted its policy. An approval is accepted from an
//! identity granted the policy and listed in its `approvers` (by name or group), never
//! from the requester; the agent answers 410 with `reason` `expired`, `superseded` or
//! `used` once the request can no longer be approved.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::call::Call;
use super::{Denial, Outcome};
use crate::agent::{ApprovalCaller, ApprovalRecord};
use crate::api::ApproveBody;

/// The request `id`, when it exists and the caller is granted its policy (noted on
/// the record).
async fn visible_request(call: &mut Call, id: &str) -> Result<ApprovalRecord, Denial> {
    let Some(request) = call.app.control.approval_request(id).await? else {
        return Err(Denial::not_found(format!("no request {id}")));
    };
    // Like rotations: the caller is not told which policy it is about.
    call.may_see(&request.policy, &format!("request {id}"))?;
    call.record.policy = Some(request.policy.clone());
    Ok(request)
}

pub(super) async fn get_request(call: Call, Path(id): Path<String>) -> Response {
    let mut call = call;
    match visible_request(&mut call, &id).await {
        Ok(request) => {
            call.record.rotation_id = request.rotation_id.clone();
            let detail = format!("read approval request {id} ({})", request.state.as_str());
            call.serve(detail, axum::Json(request).into_response())
                .await
        }
        Err(d) => call.answer(Err(d)).await,
    }
}

pub(super) async fn approve(call: Call, Path(id): Path<String>, body: Bytes) -> Response {
    let mut call = call;
    let result = approve_checked(&mut call, &id, &body).await;
    call.answer(result).await
}

async fn approve_checked(call: &mut Call, id: &str, body: &Bytes) -> Result<Response, Denial> {
    let read = call.body::<ApproveBody>(body)?;
    let request = visible_request(call, id).await?;
    // Granted the policy by name or labels, as for a rotation of it.
    call.granted_policy(&request.policy)?;
    let detail = format!("approval of request {id} requested");
    call.authorize(StatusCode::OK, detail, "the approval was not recorded")
        .await?;

    let identity = &call.caller.identity;
    let who = ApprovalCaller {
        name: identity.name.clone(),
        actor: identity.actor(),
        groups: identity.groups.clone(),
    };
    let accepted = call
        .app
        .control
        .approve(id, &who, read.reason.as_deref())
        .await?;
    call.record.rotation_id = accepted.rotation_id.clone();
    let detail = format!(
        "approval of request {id} recorded ({} of {}); {}",
        accepted.approvals.unwrap_or_default(),
        accepted.required.unwrap_or_default(),
        if accepted.state == "pending_approval" {
            "waiting for more approvals".to_owned()
        } else {
            format!("rotation {}", accepted.state)
        }
    );
    let response = (StatusCode::OK, axum::Json(accepted)).into_response();
    Ok(call.settle(Outcome::Allowed, detail, response).await)
}
