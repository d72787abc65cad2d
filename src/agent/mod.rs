//! The long-running agent (`rotor run`): schedules rotations, serves on-demand
//! requests, resumes open rotations at start-up. [`Control`] is what the HTTP API
//! (`crate::server`) sees of it.

pub mod command;
pub mod quarantine;
pub mod run;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Rotation, RotationRequest};

pub use run::{Agent, AgentConfig, Clock, Executor, TokioClock};

/// One policy as the API and `rotor status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// Policy name.
    pub name: String,
    /// Credential kind.
    pub kind: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `idle`, `queued`, `rotating`, `waiting` (grace period), `pending` (consumers),
    /// `failed`, `backoff`.
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
#[derive(Debug, Clone, Serialize)]
pub struct RotationSummary {
    /// ULID.
    pub rotation_id: String,
    /// Status.
    pub status: String,
    /// Trigger.
    pub trigger: String,
    /// Last update (RFC 3339).
    pub updated_at: String,
}

/// What the API needs to know about a policy to authorise a request.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// Name.
    pub name: String,
    /// Labels, for label-selector grants.
    pub labels: BTreeMap<String, String>,
    /// `onDemand.requireReason`.
    pub require_reason: bool,
    /// `onDemand.requireTicket`.
    pub require_ticket: bool,
}

/// An accepted on-demand request.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// The rotation's id once it has been planned, or `None` while it is queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// `queued`, `started`, `completed`, `waiting`…
    pub state: String,
}

/// Why an on-demand request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such policy.
    #[error("no policy named {0}")]
    UnknownPolicy(String),
    /// The policy requires a reason or ticket that is missing (HTTP 400).
    #[error("policy {policy} requires {what} for on-demand rotations")]
    Incomplete {
        /// Policy.
        policy: String,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// A rotation of the policy is already running or open (HTTP 409).
    #[error("{0}")]
    Busy(String),
    /// This replica is not the leader (HTTP 503; retry against the leader).
    #[error("this replica is not the leader")]
    NotLeader,
    /// The request could not be recorded in the audit log; nothing was started (HTTP 503).
    #[error("the audit log cannot be written: {0}")]
    Audit(String),
    /// Anything else (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// Whether the agent can take work.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Ready for traffic.
    pub ready: bool,
    /// Leader (only the leader rotates).
    pub leader: bool,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the HTTP API sees of the agent.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    /// Every loaded policy with its state.
    async fn policies(&self) -> Vec<PolicyView>;
    /// One policy's authorisation facts.
    fn policy_meta(&self, name: &str) -> Option<PolicyMeta>;
    /// Queues (compromise: ahead of everything else) an on-demand rotation.
    async fn rotate(&self, name: &str, request: RotationRequest) -> Result<Accepted, ControlError>;
    /// A rotation by id (from the journal or recent history).
    async fn rotation(&self, id: &str) -> Result<Option<Rotation>, ControlError>;
    /// Readiness.
    fn readiness(&self) -> Readiness;
    /// Lifts the policy's quarantine (`actor` and `reason` are recorded). Errors:
    /// `UnknownPolicy`; `Busy` when the policy is not quarantined.
    async fn release(&self, name: &str, actor: &str, reason: &str) -> Result<(), ControlError> {
        let _ = (actor, reason);
        Err(ControlError::Busy(format!(
            "policy {name} is not quarantined"
        )))
    }
}
