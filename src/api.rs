//! The wire types of the HTTP API: the request bodies and answers of every `/v1`
//! endpoint, shared by the server ([`crate::server`]) and its client (`rotor … --server`).
//!
//! | endpoint | body | answer |
//! |---|---|---|
//! | `GET /v1/policies` | — | `[`[`PolicyView`]`]` |
//! | `GET /v1/policies/{name}` | — | [`PolicyView`] |
//! | `POST /v1/policies/{name}/rotate` | [`RotateBody`] | 202 [`Accepted`] |
//! | `POST /v1/policies/{name}/release` | [`ReleaseBody`] | 200 [`Released`] |
//! | `POST /v1/policies/{name}/retire` | [`RetireBody`] | 200 [`crate::engine::Retirement`] ([`Ended`]) |
//! | `POST /v1/policies/{name}/enable` | [`RetireBody`] | 200 [`Enabled`] ([`Ended`]) |
//! | `POST /v1/rotations` | [`BulkRotateBody`] | 202 [`BulkAccepted`] |
//! | `GET /v1/rotations/{id}` | — | [`crate::engine::Rotation`] |
//! | `GET /v1/requests/{id}` | — | the approval request (`crate::agent::ApprovalRecord`) |
//! | `POST /v1/requests/{id}/approve` | [`ApproveBody`] | 200 [`Accepted`] |
//!
//! Every refusal is an [`ErrorBody`]; a retire or enable that did not complete answers
//! 500 with `error` beside the record ([`Ended`]). Request bodies refuse unknown fields; an absent field and
//! `null` are the same. The field order of each type is its order on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::{EnableOutcome, Retirement, Rotation, RotationId, RotationOutcome};

/// The body of `POST /v1/policies/{name}/rotate` (all optional; empty is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Why the rotation is asked for (required by policies with `onDemand.requireReason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The change or incident ticket (required by `onDemand.requireTicket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// A compromise rotation: no grace period, sessions ended, ahead of everything else;
    /// only for identities with `compromise: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromise: Option<bool>,
}

/// The body of `POST /v1/rotations`: [`RotateBody`] for every policy whose labels match
/// `selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// The name serde's messages give it ("expected struct BulkBody"), unchanged.
#[serde(deny_unknown_fields, expecting = "struct BulkBody")]
pub struct BulkRotateBody {
    /// Labels a policy must all carry to be rotated; empty is refused.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// As in [`RotateBody::reason`], for every policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// As in [`RotateBody::ticket`], for every policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// As in [`RotateBody::compromise`], for every policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromise: Option<bool>,
}

/// The body of `POST /v1/policies/{name}/release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Why the quarantine may be lifted (required, recorded).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The body of `POST /v1/policies/{name}/retire` and `…/enable`. The client sends
/// `ticket: null` when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// The name serde's messages give it ("expected struct Body"), unchanged.
#[serde(deny_unknown_fields, expecting = "struct Body")]
pub struct RetireBody {
    /// Why (required, recorded).
    #[serde(default)]
    pub reason: Option<String>,
    /// The ticket (required when the policy has `onDemand.requireTicket`).
    #[serde(default)]
    pub ticket: Option<String>,
}

/// The body of `POST /v1/requests/{id}/approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Why the approver agrees (recorded; optional). The client sends `{}` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An accepted on-demand request (rotate, approve).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accepted {
    /// The rotation's id once it has been planned, or `None` while it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<RotationId>,
    /// `queued`, `started`, `completed`, `waiting`…, or `pending_approval` when the
    /// policy requires approval and the request waits for it.
    pub state: String,
    /// The approval request, when the policy requires approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the approval request expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Approvals the request needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<u32>,
    /// Approvals it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
}

/// One policy's answer in a selector request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BulkItem {
    /// The policy this line is about.
    pub policy: String,
    /// `queued`, `started`… when the agent accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The rotation's id once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<RotationId>,
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

impl BulkItem {
    /// The item of a policy the agent accepted.
    pub fn accepted(policy: &str, accepted: Accepted) -> BulkItem {
        BulkItem {
            policy: policy.to_owned(),
            state: Some(accepted.state),
            rotation_id: accepted.rotation_id,
            request_id: accepted.request_id,
            expires_at: accepted.expires_at,
            status: None,
            error: None,
        }
    }

    /// The item of a policy the agent refused, with the status a single request would
    /// have got.
    pub fn refused(policy: &str, status: u16, error: String) -> BulkItem {
        BulkItem {
            policy: policy.to_owned(),
            state: None,
            rotation_id: None,
            request_id: None,
            expires_at: None,
            status: Some(status),
            error: Some(error),
        }
    }
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

/// One policy as the API and `rotor status` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyView {
    /// The policy's `metadata.name`.
    pub name: String,
    /// Credential kind.
    pub kind: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `idle`, `queued`, `rotating`, `waiting` (grace period), `pending` (consumers),
    /// `failed`, `backoff`, `quarantined`, `retiring`, `enabling`, `retired` (no rotation
    /// until `rotor enable`).
    pub state: String,
    /// The last rotation's id, status and end time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<RotationSummary>,
    /// When the current secret was written (RFC 3339), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_created_at: Option<String>,
    /// Age of the current secret in seconds, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// Next scheduled rotation (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
    /// Consumers still pending in the open rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_consumers: Vec<String>,
    /// The last failure, if the policy is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rotation in a few fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationSummary {
    /// The rotation's ULID.
    pub rotation_id: RotationId,
    /// Its status (`completed`, `failed`, …).
    pub status: String,
    /// What started it (`schedule`, `on_demand`, `compromise`, …).
    pub trigger: String,
    /// Its last update (RFC 3339).
    pub updated_at: String,
}

/// The answer to `POST /v1/policies/{name}/release`: `{"state": "released"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// Always [`Released::STATE`].
    pub state: String,
}

impl Released {
    /// The only state a release answers.
    pub const STATE: &'static str = "released";
}

impl Default for Released {
    fn default() -> Self {
        Released {
            state: Released::STATE.to_owned(),
        }
    }
}

/// The answer to `POST /v1/policies/{name}/enable`: the record, `enabled` on success,
/// and the rotation that made the credential work again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enabled {
    /// The retirement record (see [`Retirement::enable`]).
    pub record: Retirement,
    /// The rotation run by the enable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationRun>,
}

/// The rotations one rotate run drove ([`RotationOutcome`] on the wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationRun {
    /// An open rotation found in the journal and driven to its end first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Rotation>,
    /// The requested rotation (absent when the resumed one could not finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

impl From<RotationOutcome> for RotationRun {
    fn from(o: RotationOutcome) -> Self {
        RotationRun {
            resumed: o.resumed,
            rotation: o.rotation,
        }
    }
}

impl From<EnableOutcome> for Enabled {
    fn from(o: EnableOutcome) -> Self {
        Enabled {
            record: o.record,
            rotation: o.rotation.map(RotationRun::from),
        }
    }
}

/// Every refusal: `{"error": "…"}`, with `reason` beside it on a 410 (`expired`,
/// `superseded`, `used`). Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people (never a token).
    pub error: String,
    /// Why an approval request is gone (410 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of a retire or enable as sent: the fields of `answer`
/// ([`Retirement`] or [`Enabled`]) in name order and, on the 500 of one that did not
/// complete, `error` beside them (replacing the record's own), so that no caller
/// mistakes it for success and its evidence is still there.
#[derive(Debug, Clone)]
pub struct Ended<T> {
    /// Why it did not complete; `None` when it did.
    pub error: Option<String>,
    /// The record, sent whole: a [`Retirement`] or [`Enabled`].
    pub answer: T,
}

impl<T: Serialize> Serialize for Ended<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = match serde_json::to_value(&self.answer) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => serde_json::Map::new(),
            Err(e) => return Err(serde::ser::Error::custom(e)),
        };
        if let Some(error) = &self.error {
            fields.insert("error".into(), error.clone().into());
        }
        fields.serialize(serializer)
    }
}

/// The answer of `GET /healthz` while the process serves: `{"status": "ok"}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_absent_and_null_alike_and_refuse_unknown_fields() {
        let body: RotateBody = serde_json::from_str(r#"{"reason": null}"#).unwrap();
        assert_eq!(body, RotateBody::default());
        let err = serde_json::from_str::<RotateBody>(r#"{"reasons": "x"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown field `reasons`, expected one of `reason`, `ticket`, `compromise`"
            ),
            "{err}"
        );
        // The messages name the types as before they moved here.
        let err = serde_json::from_str::<RetireBody>("1").unwrap_err();
        assert!(err.to_string().contains("expected struct Body"), "{err}");
        let err = serde_json::from_str::<BulkRotateBody>("1").unwrap_err();
        assert!(
            err.to_string().contains("expected struct BulkBody"),
            "{err}"
        );
    }

    #[test]
    fn ended_puts_error_beside_the_fields_in_name_order() {
        #[derive(Serialize)]
        struct Record {
            state: &'static str,
            error: Option<&'static str>,
            accounts: Vec<u8>,
        }
        let record = || Record {
            state: "failed",
            error: Some("still accepted"),
            accounts: vec![],
        };
        let done = Ended {
            error: None,
            answer: record(),
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"accounts":[],"error":"still accepted","state":"failed"}"#
        );
        let failed = Ended {
            error: Some("retiring policy p did not complete".into()),
            answer: record(),
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"accounts":[],"error":"retiring policy p did not complete","state":"failed"}"#
        );
    }

    #[test]
    fn error_bodies_and_releases_are_as_before() {
        let gone = ErrorBody {
            error: "expired".into(),
            reason: Some("expired".into()),
        };
        assert_eq!(
            serde_json::to_string(&gone).unwrap(),
            r#"{"error":"expired","reason":"expired"}"#
        );
        let plain = ErrorBody {
            error: "no".into(),
            reason: None,
        };
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"error":"no"}"#);
        assert_eq!(
            serde_json::to_string(&Released::default()).unwrap(),
            r#"{"state":"released"}"#
        );
    }
}
