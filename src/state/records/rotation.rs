//! A rotation's journal record ([`Rotation`]): its steps, status, trigger and
//! consumer outcomes. The engine's journal writes it before every
//! step's side effect; the audit log, metrics, notifications, the API and the CLI read
//! it. It holds no secret: values are referred to by their staging path and HMAC
//! fingerprints only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};

use super::{RotationId, StepOutcome, StepRecord, Verification, time};

/// The steps of a rotation, in order (ARCHITECTURE.md, "The rotation state machine").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    IntoStaticStr,
    Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Step {
    /// Recorded intent; nothing changed yet.
    Planned,
    /// New value written to rotor's private staging path in Vault (create-only).
    Staged,
    /// The target system now accepts the new value.
    Applied,
    /// The new value was used against the target and worked.
    Tested,
    /// The staged value is Vault's canonical (current) version.
    Promoted,
    /// Every consumer holds the new value (read back).
    Propagated,
    /// The old credential was disabled where the strategy kept it alive.
    Revoked,
    /// The old credential was tried against the target and refused.
    Verified,
    /// The rotation is sealed.
    Completed,
}

impl Step {
    /// The forward order of steps after `planned`.
    pub const FORWARD: [Step; 8] = [
        Step::Staged,
        Step::Applied,
        Step::Tested,
        Step::Promoted,
        Step::Propagated,
        Step::Revoked,
        Step::Verified,
        Step::Completed,
    ];

    /// The step's name as journaled and printed.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether a failure at this step still rolls back (before promote) rather than
    /// only rolling forward.
    pub fn before_promote(self) -> bool {
        self < Step::Promoted
    }
}

/// Where a rotation stands overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    /// Moving forward through the steps.
    Open,
    /// Undoing a failure before promote; the target must get the old value back.
    RollingBack,
    /// Every step succeeded.
    Completed,
    /// Rolled back: the old credential is current again everywhere.
    RolledBack,
    /// Ended without completing (e.g. the old credential is still accepted, or Vault
    /// was written by someone else); needs a person.
    Failed,
}

impl Status {
    /// Whether the rotation still has work to do (resume it before anything new).
    pub fn is_open(self) -> bool {
        matches!(self, Status::Open | Status::RollingBack)
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Trigger {
    /// The schedule (cron or maxAge).
    Schedule,
    /// A person or system asked for it.
    OnDemand,
    /// A leak: no grace, sessions terminated, highest priority.
    Compromise,
}

impl Trigger {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where the new value stands at one consumer. Written as its `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ConsumerState {
    /// Pushed and read back.
    Verified,
    /// Pushed; the API cannot read values back (GitHub secrets).
    Pushed,
    /// The push failed; retried with backoff, then by the next run.
    Pending,
}

impl ConsumerState {
    /// The name written in the journal (`verified`, `pushed`, `pending`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What happened at one consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerRecord {
    /// The consumer, described (`kubernetes secret ns/name`).
    pub consumer: String,
    /// Where the new value stands there.
    pub state: ConsumerState,
    /// Pushes tried so far in this rotation.
    #[serde(default)]
    pub attempts: u32,
    /// Whether the value changed there.
    #[serde(default)]
    pub changed: bool,
    /// Workloads restarted because of this change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<String>,
    /// Failure reason, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The journaled state of one rotation. Also the report printed by `rotor rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotation {
    /// Its id (a ULID).
    pub rotation_id: RotationId,
    /// The policy's name (`metadata.name`).
    pub policy: String,
    /// Credential kind (`postgres`, …).
    pub kind: String,
    /// Strategy (`single`, `alternating`, `overlap`).
    #[serde(default)]
    pub strategy: String,
    /// What started it.
    pub trigger: Trigger,
    /// Who asked (user, API identity, `scheduler`).
    pub actor: String,
    /// The reason the requester gave (free text, audited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ticket reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Who approved it (`spec.onDemand.approval`), in approval order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// A compromise by a break-glass identity that skipped the required approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// The approval request it carries out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_request: Option<String>,
    /// Overall state.
    pub status: Status,
    /// Canonical path `mount/path`.
    pub canonical: String,
    /// Canonical version read at planning (the check-and-set base of promote).
    pub canonical_version: u64,
    /// Version written by promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_version: Option<u64>,
    /// Staging path `mount/path` holding the new value until the rotation ends.
    pub staging: String,
    /// HMAC fingerprint of the old value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    /// HMAC fingerprint of the new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
    /// Steps so far, in order.
    pub steps: Vec<StepRecord>,
    /// Verification results.
    #[serde(default)]
    pub verification: Vec<Verification>,
    /// The last failure was an outside system that gave no answer (timeout, refused
    /// connection, 5xx), not a refusal: no evidence against any credential, so it never
    /// counts toward quarantine. Absent (false) in older records and after a success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// Consumer outcomes.
    #[serde(default)]
    pub consumers: Vec<ConsumerRecord>,
    /// The old credential stays valid until this instant: set when the
    /// consumers have the new value, from the grace period (zero for a compromise).
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoke_after: Option<DateTime<Utc>>,
    /// Sessions ended because they used the old credential.
    #[serde(default)]
    pub sessions_terminated: u64,
    /// Why it failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was planned.
    #[serde(with = "time")]
    pub started_at: DateTime<Utc>,
    /// Last journal write.
    #[serde(with = "time")]
    pub updated_at: DateTime<Utc>,
    /// Whether this process resumed it from the journal.
    #[serde(default, skip_serializing)]
    pub resumed: bool,
    /// Whether the journal already showed it waiting for its grace period when this
    /// process resumed it: that run's end was recorded when the wait began, so a
    /// resume that finds it still waiting records nothing new. Not stored.
    #[serde(skip)]
    pub was_waiting: bool,
}

impl Rotation {
    /// The step to execute next: the last begun step when its outcome is unknown,
    /// else the step after the last finished one.
    pub fn next_step(&self) -> Option<Step> {
        match self.steps.last() {
            None => Some(Step::FORWARD[0]),
            Some(rec) if rec.outcome == StepOutcome::Begun => Some(rec.step),
            Some(rec) => Step::FORWARD.iter().copied().find(|s| *s > rec.step),
        }
    }

    /// Whether the rotation is open only because the old credential's grace period
    /// has not run out: everything up to `propagated` is done and `revoked` has not
    /// begun.
    pub fn waiting_for_grace(&self) -> bool {
        self.status == Status::Open
            && self.revoke_after.is_some()
            && self
                .steps
                .last()
                .is_some_and(|r| r.step == Step::Propagated && r.outcome == StepOutcome::Ok)
    }

    /// The instant a given step finished, if it did.
    pub fn finished(&self, step: Step) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .rev()
            .find(|r| r.step == step && r.outcome == StepOutcome::Ok)
            .and_then(|r| r.finished_at)
    }

    /// Whether `step` was begun at some point (its side effect may have happened).
    pub fn reached(&self, step: Step) -> bool {
        self.steps.iter().any(|r| r.step >= step)
    }
}
