//! `POST /v1/rotations`: one on-demand (or compromise) request for every policy whose
//! labels match a selector, the API's form of `rotor rotate --selector`.
//!
//! The request is checked as a whole before anything starts: every matching policy
//! must be granted to the caller, allow the trigger, and get the reason and ticket it
//! requires; otherwise nothing is queued and the answer names the policies at fault
//! (except policies the caller is not granted: those only the audit record names; a
//! selector that matches no policy the caller is granted answers 404 like one that
//! matches nothing).
//! The agent then queues each rotation under its usual concurrency limit; the answer
//! (202) lists, per policy, the rotation accepted or why the agent refused it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{
    App, Caller, Denial, Outcome, audit_unavailable, invalid, json_body, reason_and_ticket,
};
use crate::engine::{RotationRequest, Trigger};

/// Most policies one selector request may rotate.
pub const MAX_BULK_POLICIES: usize = 1000;

/// The body of `POST /v1/rotations`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkBody {
    #[serde(default)]
    pub(super) selector: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) ticket: Option<String>,
    #[serde(default)]
    compromise: Option<bool>,
}

/// One policy's answer in a selector request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkItem {
    /// Policy name.
    pub policy: String,
    /// `queued`, `started`… when the agent accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The rotation's id once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// The approval request, when the policy requires approval (`state` is then
    /// `pending_approval`; approve it with `POST /v1/requests/{id}/approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When that approval request expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The HTTP status a single request would have got, when the agent refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the agent refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /v1/rotations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkAccepted {
    /// The selector, echoed.
    pub selector: BTreeMap<String, String>,
    /// Policies the agent accepted.
    pub accepted: usize,
    /// Policies the agent refused (busy, not leader…).
    pub refused: usize,
    /// Per policy, in name order.
    pub policies: Vec<BulkItem>,
}

pub(super) fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Names, at most ten, then "and N more".
fn name_list(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        text.push_str(&format!(" and {} more", names.len() - 10));
    }
    text
}

pub(super) async fn rotate_selected(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    let parsed: BulkBody = match json_body(
        &body,
        "{\"selector\": {label: value}, \"reason\": string?, \"ticket\": string?, \"compromise\": bool?}",
    ) {
        Ok(b) => b,
        Err(d) => return app.refuse(record, d).await,
    };
    let compromise = parsed.compromise.unwrap_or(false);
    let trigger = if compromise {
        Trigger::Compromise
    } else {
        Trigger::OnDemand
    };
    record.trigger = Some(trigger);
    let (reason, ticket) = match reason_and_ticket(&mut record, parsed.reason, parsed.ticket) {
        Ok(t) => t,
        Err(d) => return app.refuse(record, d).await,
    };
    let selector = parsed.selector;
    if selector.is_empty() {
        let d = invalid(
            "selector is empty; it would select every policy: name the labels, e.g. {\"team\": \"payments\"}"
                .into(),
        );
        return app.refuse(record, d).await;
    }
    let shown = selector_text(&selector);

    let mut matching: Vec<String> = app
        .control
        .policies()
        .await
        .into_iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .map(|p| p.name)
        .collect();
    matching.sort();
    // A caller learns nothing of policies it is not granted: when it is granted none of
    // the matching policies, the answer is the one for no match at all.
    let granted_any = matching.iter().any(|name| {
        app.control
            .policy_meta(name)
            .is_some_and(|m| caller.identity.may_access(&m.name, &m.labels))
    });
    if !granted_any {
        let d = Denial::new(
            StatusCode::NOT_FOUND,
            Outcome::NotFound,
            format!("no policy has the labels {shown}"),
        );
        let d = if matching.is_empty() {
            d
        } else {
            d.detail(format!(
                "identity {} is granted none of the {} policies with the labels {shown}: {}",
                caller.identity.name,
                matching.len(),
                name_list(&matching)
            ))
        };
        return app.refuse(record, d).await;
    }
    if matching.len() > MAX_BULK_POLICIES {
        let d = invalid(format!(
            "{} policies have the labels {shown}; one request may rotate at most {MAX_BULK_POLICIES}: narrow the selector",
            matching.len()
        ));
        return app.refuse(record, d).await;
    }

    // Every check, for every policy, before anything is queued.
    let mut not_granted = Vec::new();
    let mut no_reason = Vec::new();
    let mut no_ticket = Vec::new();
    for name in &matching {
        let Some(meta) = app.control.policy_meta(name) else {
            continue; // unloaded since the listing: the agent will say so below
        };
        if !caller.identity.may_access(&meta.name, &meta.labels) {
            not_granted.push(name.clone());
            continue;
        }
        // `reason`/`ticket` were trimmed by `given`: `None` is missing.
        if meta.require_reason && reason.is_none() {
            no_reason.push(name.clone());
        } else if meta.require_ticket && ticket.is_none() {
            no_ticket.push(name.clone());
        }
    }
    if !not_granted.is_empty() {
        // The answer names no policy the caller is not granted; the audit record does.
        let d = Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!(
                "identity {} is not granted every policy with the labels {shown}; nothing was rotated",
                caller.identity.name,
            ),
        )
        .detail(format!(
            "identity {} is not granted {} of the {} policies with the labels {shown}: {}; nothing was rotated",
            caller.identity.name,
            not_granted.len(),
            matching.len(),
            name_list(&not_granted)
        ));
        return app.refuse(record, d).await;
    }
    if compromise && !caller.identity.compromise {
        let d = Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!(
                "identity {} may not request compromise rotations",
                caller.identity.name
            ),
        );
        return app.refuse(record, d).await;
    }
    if !no_reason.is_empty() {
        let d = invalid(format!(
            "policies {} require a reason for on-demand rotations; nothing was rotated",
            name_list(&no_reason)
        ));
        return app.refuse(record, d).await;
    }
    if !no_ticket.is_empty() {
        let d = invalid(format!(
            "policies {} require a ticket for on-demand rotations; nothing was rotated",
            name_list(&no_ticket)
        ));
        return app.refuse(record, d).await;
    }

    // Fail closed: nothing is asked of the agent unless this record is written.
    let mut authorized = record.clone();
    authorized.status = StatusCode::ACCEPTED.as_u16();
    authorized.outcome = Outcome::Authorized;
    authorized.detail = format!(
        "{} rotation of {} policies with the labels {shown} requested: {}",
        trigger.as_str(),
        matching.len(),
        name_list(&matching)
    );
    if let Err(error) = app.audit(authorized).await {
        tracing::error!(selector = %shown, error = %error, "Writing the audit record of a selector rotate request failed; nothing was requested.");
        return audit_unavailable().response();
    }

    let mut items = Vec::with_capacity(matching.len());
    for name in &matching {
        let request = RotationRequest {
            trigger,
            actor: caller.identity.actor(),
            reason: reason.clone(),
            ticket: ticket.clone(),
            // Skips a policy's approval, if it requires one (the agent decides).
            break_glass: compromise && caller.identity.break_glass,
            authenticated_by: caller.authenticated_by(),
            ..Default::default()
        };
        let mut one = record.clone();
        one.policy = Some(name.clone());
        let item = match app.control.rotate(name, request).await {
            Ok(accepted) => {
                one.rotation_id = accepted.rotation_id.clone();
                one.status = StatusCode::ACCEPTED.as_u16();
                one.outcome = Outcome::Allowed;
                one.detail = match &accepted.request_id {
                    Some(id) => format!("approval request {id} created (selector {shown})"),
                    None => format!("rotation {} (selector {shown})", accepted.state),
                };
                BulkItem {
                    policy: name.clone(),
                    state: Some(accepted.state),
                    rotation_id: accepted.rotation_id,
                    request_id: accepted.request_id,
                    expires_at: accepted.expires_at,
                    status: None,
                    error: None,
                }
            }
            Err(e) => {
                let d = Denial::from_control(&e);
                one.status = d.status.as_u16();
                one.outcome = d.outcome;
                one.detail = d.detail.clone().unwrap_or_else(|| d.message.clone());
                BulkItem {
                    policy: name.clone(),
                    state: None,
                    rotation_id: None,
                    request_id: None,
                    expires_at: None,
                    status: Some(d.status.as_u16()),
                    error: Some(d.message),
                }
            }
        };
        if let Err(error) = app.audit(one).await {
            // The rotation is already queued (or refused): log the lost record.
            tracing::error!(policy = %name, error = %error, "Writing the audit record of a selector rotation failed.");
        }
        items.push(item);
    }
    let accepted = items.iter().filter(|i| i.error.is_none()).count();
    let answer = BulkAccepted {
        selector,
        accepted,
        refused: items.len() - accepted,
        policies: items,
    };
    (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
}
