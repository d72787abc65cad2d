//! The long-running agent (`rotor run`): schedules rotations, serves on-demand
//! requests, resumes open rotations at start-up. [`Control`] is what the HTTP API
//! (`crate::server`) sees of it.

pub mod approval;
pub mod health;
pub mod quarantine;
pub mod run;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{EnableOutcome, RetireRequest, Retirement, Rotation, RotationRequest};

// The API's wire types the agent answers with (re-exported for `Control`'s users).
pub use crate::api::{Accepted, PolicyView, RotationSummary};
pub use approval::{ApprovalCaller, ApprovalRecord, ApprovalState, ApprovalStore};
pub use run::{Agent, AgentConfig, Clock, Executor, TokioClock};

/// Returns memory the allocator holds but nothing uses to the operating system. After
/// a burst of allocations (loading thousands of policies, a `/metrics` scrape of them)
/// mimalloc only purges freed pages on later allocator activity, which an idle agent
/// has little of: without this, the burst's peak stays resident (some 12 MiB with
/// 10,000 policies). Collects the calling thread's heap and every arena.
// The one FFI call, so the one `unsafe` block, in rotor (`unsafe_code` is denied
// everywhere else by Cargo.toml's `[lints]`).
#[allow(unsafe_code)]
pub fn return_free_memory() {
    // The process's global allocator is mimalloc (`#[global_allocator]` of a
    // dependency, see Cargo.toml). `mi_collect` frees this thread's empty pages and,
    // with `force`, purges (returns to the system) every arena page now.
    // SAFETY: it takes no pointers and may be called from any thread at any time; it
    // only releases memory that holds no live allocation.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// What the API needs to know about a policy to authorise a request.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// The policy's `metadata.name`.
    pub name: String,
    /// Labels, for label-selector grants.
    pub labels: BTreeMap<String, String>,
    /// `onDemand.requireReason`.
    pub require_reason: bool,
    /// `onDemand.requireTicket`.
    pub require_ticket: bool,
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
        /// The policy that requires it.
        policy: String,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// A rotation of the policy is already running or open (HTTP 409).
    #[error("{0}")]
    Busy(String),
    /// No approval request with this id (HTTP 404).
    #[error("no request {0}")]
    UnknownRequest(String),
    /// The caller may not do this, e.g. approve its own request (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The approval request can no longer be approved (HTTP 410).
    #[error("{message}")]
    Gone {
        /// Why, for the caller.
        message: String,
        /// `expired`, `superseded` or `used`.
        reason: &'static str,
    },
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

/// What the HTTP API sees of the agent. Every method is required: an implementation
/// that leaves one out does not compile (no silent "not supported" answer).
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
    /// Whether this replica is ready and leads (`/readyz`).
    fn readiness(&self) -> Readiness;
    /// Lifts the policy's quarantine (`actor` and `reason` are recorded). Errors:
    /// `UnknownPolicy`; `Busy` when the policy is not quarantined.
    async fn release(&self, name: &str, actor: &str, reason: &str) -> Result<(), ControlError>;
    /// An approval request by id, with its effective state (see
    /// [`approval::ApprovalRecord::state_at`]).
    async fn approval_request(&self, id: &str) -> Result<Option<ApprovalRecord>, ControlError>;
    /// Approves request `id` as `caller` (who must be one of the policy's approvers
    /// and not the requester). With enough approvals the request is used and its
    /// rotation queued (`state` `queued`); otherwise `state` is `pending_approval`.
    /// Errors: `UnknownRequest`, `Forbidden`, `Gone`, and those of [`Control::rotate`].
    async fn approve(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
    ) -> Result<Accepted, ControlError>;
    /// Retires the policy (offboarding, see [`crate::engine::retire`]) and audits a
    /// `policy_retired` event. The record's `state` says whether it completed
    /// (`retired`). Errors: `UnknownPolicy`; `Busy` while a rotation runs or is queued.
    async fn retire(&self, name: &str, request: RetireRequest) -> Result<Retirement, ControlError>;
    /// Enables a retired policy again with a rotation, and audits a `policy_enabled`
    /// event. Errors: `UnknownPolicy`; `Busy` when it is not retired or is busy.
    async fn enable(
        &self,
        name: &str,
        request: RetireRequest,
    ) -> Result<EnableOutcome, ControlError>;
}
