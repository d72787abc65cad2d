//! The policy routes: `GET /v1/policies`, `GET /v1/policies/{name}`,
//! `POST /v1/policies/{name}/rotate` and `…/release`, and `GET /v1/rotations/{id}`.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::call::{Call, invalid, no_policy, trigger_of};
use super::{Denial, Outcome};
use crate::api::{ReleaseBody, Released, RotateBody};
use crate::engine::{Rotation, RotationId, RotationRequest};

pub(super) async fn list_policies(call: Call) -> Response {
    let visible: Vec<_> = call
        .app
        .control
        .policies()
        .await
        .into_iter()
        .filter(|p| call.caller.identity.may_access(&p.name, &p.labels))
        .collect();
    let detail = format!("listed {} policies", visible.len());
    call.serve(detail, axum::Json(visible).into_response())
        .await
}

pub(super) async fn get_policy(call: Call, Path(name): Path<String>) -> Response {
    let call = call.about(&name);
    let view = call
        .app
        .control
        .policies()
        .await
        .into_iter()
        .find(|p| p.name == name);
    if let Err(d) = call.grant_check(&name, view.as_ref().map(|v| &v.labels)) {
        return call.answer(Err(d)).await;
    }
    match view {
        Some(view) => {
            call.serve("read policy", axum::Json(view).into_response())
                .await
        }
        None => call.answer(Err(no_policy(&name))).await,
    }
}

pub(super) async fn rotate(call: Call, Path(name): Path<String>, body: Bytes) -> Response {
    let mut call = call.about(&name);
    let result = rotate_checked(&mut call, &name, &body).await;
    call.answer(result).await
}

async fn rotate_checked(call: &mut Call, name: &str, body: &Bytes) -> Result<Response, Denial> {
    let read = call.body::<RotateBody>(body)?;
    let compromise = read.body.compromise.unwrap_or(false);
    let trigger = trigger_of(read.body.compromise);
    let meta = call.granted_policy(name)?;
    call.may_compromise(compromise)?;
    let missing = [
        (meta.require_reason && read.reason.is_none(), "a reason"),
        (meta.require_ticket && read.ticket.is_none(), "a ticket"),
    ];
    if let Some((_, what)) = missing.into_iter().find(|(missing, _)| *missing) {
        return Err(invalid(format!(
            "policy {name} requires {what} for on-demand rotations"
        )));
    }
    let detail = format!("{} rotation requested", trigger.as_str());
    call.authorize(
        StatusCode::ACCEPTED,
        detail,
        "the rotation was not requested",
    )
    .await?;

    let identity = &call.caller.identity;
    let request = RotationRequest {
        trigger,
        asker: call.caller.asker(),
        reason: read.reason,
        ticket: read.ticket,
        // Skips the policy's approval, if it requires one (the agent decides).
        break_glass: compromise && identity.break_glass,
        ..Default::default()
    };
    let accepted = call.app.control.rotate(name, request).await?;
    call.record.rotation_id = accepted.rotation_id.clone();
    let detail = match &accepted.request_id {
        Some(id) => format!("rotation {} (approval request {id})", accepted.state),
        None => format!("rotation {}", accepted.state),
    };
    let response = (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    Ok(call.settle(Outcome::Allowed, detail, response).await)
}

/// Lifts a policy's quarantine; checked and audited like [`rotate`], and a reason is
/// always required.
pub(super) async fn release(call: Call, Path(name): Path<String>, body: Bytes) -> Response {
    let mut call = call.about(&name);
    let result = release_checked(&mut call, &name, &body).await;
    call.answer(result).await
}

async fn release_checked(call: &mut Call, name: &str, body: &Bytes) -> Result<Response, Denial> {
    let read = call.body::<ReleaseBody>(body)?;
    call.granted_policy(name)?;
    let Some(reason) = read.reason else {
        return Err(invalid(format!(
            "releasing policy {name} from quarantine requires a reason"
        )));
    };
    let detail = "quarantine release requested".to_owned();
    call.authorize(StatusCode::OK, detail, "the quarantine was not lifted")
        .await?;

    let actor = call.caller.identity.actor();
    call.app.control.release(name, &actor, &reason).await?;
    let response = (StatusCode::OK, axum::Json(Released::default())).into_response();
    let detail = "quarantine released".to_owned();
    Ok(call.settle(Outcome::Allowed, detail, response).await)
}

pub(super) async fn get_rotation(call: Call, Path(id): Path<String>) -> Response {
    let mut call = call;
    call.record.rotation_id = Some(RotationId::from(id.as_str()));
    let result = visible_rotation(&mut call, &id).await;
    match result {
        Ok(rotation) => {
            let response = axum::Json(rotation).into_response();
            call.serve("read rotation", response).await
        }
        Err(d) => call.answer(Err(d)).await,
    }
}

/// The rotation `id`, when it exists and the caller may see its policy.
async fn visible_rotation(call: &mut Call, id: &str) -> Result<Rotation, Denial> {
    let Some(rotation) = call.app.control.rotation(id).await? else {
        return Err(Denial::not_found(format!("no rotation {id}")));
    };
    call.record.policy = Some(rotation.policy.clone());
    // The caller is not told which policy the rotation belongs to.
    call.may_see(&rotation.policy, &format!("rotation {id}"))?;
    Ok(rotation)
}
