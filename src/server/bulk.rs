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

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::call::{Call, Read, invalid, trigger_of};
use super::{Denial, Outcome};
use crate::api::{BulkAccepted, BulkItem, BulkRotateBody};
use crate::engine::RotationRequest;

/// Most policies one selector request may rotate.
pub const MAX_BULK_POLICIES: usize = 1000;

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

pub(super) async fn rotate_selected(call: Call, body: Bytes) -> Response {
    let mut call = call;
    let result = rotate_checked(&mut call, &body).await;
    call.answer(result).await
}

/// The policies a selector request rotates, checked as a whole: every one granted,
/// the trigger allowed, each with the reason and ticket it requires.
async fn rotate_checked(call: &mut Call, body: &Bytes) -> Result<Response, Denial> {
    let mut read = call.body::<BulkRotateBody>(body)?;
    let compromise = read.body.compromise.unwrap_or(false);
    let selector = std::mem::take(&mut read.body.selector);
    if selector.is_empty() {
        return Err(invalid(
            "selector is empty; it would select every policy: name the labels, e.g. {\"team\": \"payments\"}"
                .into(),
        ));
    }
    let shown = selector_text(&selector);
    let matching = matching(call, &selector, &shown).await?;

    // Every check, for every policy, before anything is queued.
    let mut not_granted = Vec::new();
    let mut no_reason = Vec::new();
    let mut no_ticket = Vec::new();
    for name in &matching {
        let Some(meta) = call.app.control.policy_meta(name) else {
            continue; // unloaded since the listing: the agent will say so below
        };
        if !call.caller.identity.may_access(&meta.name, &meta.labels) {
            not_granted.push(name.clone());
            continue;
        }
        // `reason`/`ticket` were trimmed by `read_body`: `None` is missing.
        if meta.require_reason && read.reason.is_none() {
            no_reason.push(name.clone());
        } else if meta.require_ticket && read.ticket.is_none() {
            no_ticket.push(name.clone());
        }
    }
    if !not_granted.is_empty() {
        // The answer names no policy the caller is not granted; the audit record does.
        let d = call.forbidden(format!(
            "is not granted every policy with the labels {shown}; nothing was rotated"
        ));
        return Err(d.detail(format!(
            "identity {} is not granted {} of the {} policies with the labels {shown}: {}; nothing was rotated",
            call.caller.identity.name,
            not_granted.len(),
            matching.len(),
            name_list(&not_granted)
        )));
    }
    call.may_compromise(compromise)?;
    for (names, what) in [(&no_reason, "a reason"), (&no_ticket, "a ticket")] {
        if !names.is_empty() {
            return Err(invalid(format!(
                "policies {} require {what} for on-demand rotations; nothing was rotated",
                name_list(names)
            )));
        }
    }

    let trigger = trigger_of(read.body.compromise);
    let detail = format!(
        "{} rotation of {} policies with the labels {shown} requested: {}",
        trigger.as_str(),
        matching.len(),
        name_list(&matching)
    );
    call.authorize(StatusCode::ACCEPTED, detail, "nothing was requested")
        .await?;

    let items = queue_each(call, &matching, &read, &shown).await;
    let accepted = items.iter().filter(|i| i.error.is_none()).count();
    let answer = BulkAccepted {
        selector,
        accepted,
        refused: items.len() - accepted,
        policies: items,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

/// Asks the agent for each policy in turn (under its usual concurrency limit), with
/// one audit record each; the answer's line per policy.
async fn queue_each(
    call: &Call,
    matching: &[String],
    read: &Read<BulkRotateBody>,
    shown: &str,
) -> Vec<BulkItem> {
    let compromise = read.body.compromise.unwrap_or(false);
    let mut items = Vec::with_capacity(matching.len());
    for name in matching {
        let request = RotationRequest {
            trigger: trigger_of(read.body.compromise),
            asker: call.caller.asker(),
            reason: read.reason.clone(),
            ticket: read.ticket.clone(),
            // Skips a policy's approval, if it requires one (the agent decides).
            break_glass: compromise && call.caller.identity.break_glass,
            ..Default::default()
        };
        let mut one = call.record.clone();
        one.policy = Some(name.clone());
        let item = match call.app.control.rotate(name, request).await {
            Ok(accepted) => {
                one.rotation_id = accepted.rotation_id.clone();
                one.status = StatusCode::ACCEPTED.as_u16();
                one.outcome = Outcome::Allowed;
                one.detail = match &accepted.request_id {
                    Some(id) => format!("approval request {id} created (selector {shown})"),
                    None => format!("rotation {} (selector {shown})", accepted.state),
                };
                BulkItem::accepted(name, accepted)
            }
            Err(e) => {
                let d = Denial::from_control(&e);
                one.status = d.status.as_u16();
                one.outcome = d.outcome;
                one.detail = d.detail.clone().unwrap_or_else(|| d.message.clone());
                BulkItem::refused(name, d.status.as_u16(), d.message)
            }
        };
        if let Err(error) = call.app.audit(one).await {
            // The rotation is already queued (or refused): log the lost record.
            tracing::error!(policy = %name, error = %error, "Writing the audit record of a selector rotation failed.");
        }
        items.push(item);
    }
    items
}

/// The names of the policies whose labels match `selector`, sorted; 404 when the
/// caller is granted none of them (it learns nothing of policies it is not granted:
/// the answer is the one for no match at all), 400 when there are too many.
async fn matching(
    call: &Call,
    selector: &BTreeMap<String, String>,
    shown: &str,
) -> Result<Vec<String>, Denial> {
    let mut matching: Vec<String> = call
        .app
        .control
        .policies()
        .await
        .into_iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .map(|p| p.name)
        .collect();
    matching.sort();
    let granted_any = matching.iter().any(|name| {
        call.app
            .control
            .policy_meta(name)
            .is_some_and(|m| call.caller.identity.may_access(&m.name, &m.labels))
    });
    if !granted_any {
        let d = Denial::not_found(format!("no policy has the labels {shown}"));
        return Err(if matching.is_empty() {
            d
        } else {
            d.detail(format!(
                "identity {} is granted none of the {} policies with the labels {shown}: {}",
                call.caller.identity.name,
                matching.len(),
                name_list(&matching)
            ))
        });
    }
    if matching.len() > MAX_BULK_POLICIES {
        return Err(invalid(format!(
            "{} policies have the labels {shown}; one request may rotate at most {MAX_BULK_POLICIES}: narrow the selector",
            matching.len()
        )));
    }
    Ok(matching)
}
