//! A policy's retirement record ([`Retirement`]): the steps of `rotor retire`, the
//! consumers' removals, the target's refusals and `rotor enable`'s part. The engine
//! writes it (the engine's `retire` module); the audit log and the CLI read it. It never
//! holds a secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};

use super::{RotationId, StepOutcome, StepRecord, Verification, time};

/// Where a policy's retirement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RetireState {
    /// Steps are running (or a run was interrupted; the next one continues).
    Retiring,
    /// Every step done: the credential is refused, the consumers hold nothing.
    Retired,
    /// The retired credential was still accepted; the next run starts over.
    Failed,
    /// `rotor enable` is running (or was interrupted; the next one continues).
    Enabling,
    /// Enabled again; the record stays as history.
    Enabled,
}

impl RetireState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether rotations of the policy are refused in this state (all but `enabled`).
    pub fn is_inactive(self) -> bool {
        self != RetireState::Enabled
    }
}

/// The steps of a retirement, in order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    IntoStaticStr,
    Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RetireStep {
    /// The credential is disabled on its target; sessions ended.
    Disabled,
    /// The consumers no longer hold what rotor pushed.
    ConsumersRemoved,
    /// The canonical copy is marked retired (custom metadata).
    Marked,
    /// The last credential was tried and refused.
    Verified,
}

impl RetireStep {
    /// Every step, in order.
    pub const ALL: [RetireStep; 4] = [
        RetireStep::Disabled,
        RetireStep::ConsumersRemoved,
        RetireStep::Marked,
        RetireStep::Verified,
    ];

    /// The step's name as journaled.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One step's entry in a retirement record.
pub type RetireStepRecord = StepRecord<RetireStep>;

/// Where a retirement's removal stands at one consumer. Written as its `snake_case`
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RemovalState {
    /// It was there; now it is gone, read back.
    Removed,
    /// Nothing was there.
    Absent,
    /// The removal failed; the next run tries again.
    Failed,
}

impl RemovalState {
    /// The name written in the record (`removed`, `absent`, `failed`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What happened at one consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerRemoval {
    /// The consumer, described (`kubernetes secret ns/name`).
    pub consumer: String,
    /// Where the removal stands there.
    pub state: RemovalState,
    /// How many times this consumer was tried, counting the last.
    pub attempts: u32,
    /// What was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `rotor enable`'s part of the record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enablement {
    /// Who asked: the authenticated identity of the caller or the scheduler.
    pub actor: String,
    /// The reason the requester gave (free text, audited).
    pub reason: String,
    /// Ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// When it began.
    #[serde(with = "time")]
    pub started_at: DateTime<Utc>,
    /// When the policy was enabled.
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// What was lifted on the target's accounts (`LOGIN`, unlock, `on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<String>,
    /// The rotation that made the credential work again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<RotationId>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A policy's retirement record (also the report `rotor retire` prints and the
/// `policy_retired` audit event). Never holds a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retirement {
    /// The policy's name (`metadata.name`).
    pub policy: String,
    /// Credential kind.
    pub kind: String,
    /// Strategy.
    pub strategy: String,
    /// Where it stands.
    pub state: RetireState,
    /// Who retired it.
    pub actor: String,
    /// The reason the requester gave (free text, audited).
    pub reason: String,
    /// Ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Canonical path `mount/path`.
    pub canonical: String,
    /// The canonical version holding the retired credential (kept, like every other).
    pub canonical_version: u64,
    /// HMAC fingerprint of the retired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The accounts disabled (password kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// A rotation left open that was finished (old credential revoked at once) first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_rotation: Option<RotationId>,
    /// When the retirement began.
    #[serde(with = "time")]
    pub started_at: DateTime<Utc>,
    /// When it was complete.
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retired_at: Option<DateTime<Utc>>,
    /// Last write.
    #[serde(with = "time")]
    pub updated_at: DateTime<Utc>,
    /// How many runs worked on it (more than one after a crash or a failure).
    pub runs: u32,
    /// Steps so far, in order.
    pub steps: Vec<RetireStepRecord>,
    /// Per consumer.
    #[serde(default)]
    pub consumers: Vec<ConsumerRemoval>,
    /// The target's answers to the retired credential.
    #[serde(default)]
    pub verification: Vec<Verification>,
    /// Why the last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The enable, once asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<Enablement>,
}

impl Retirement {
    /// The step to run next: a begun one again, else the one after the last done.
    pub fn next_step(&self) -> Option<RetireStep> {
        match self.steps.last() {
            None => Some(RetireStep::Disabled),
            Some(r) if matches!(r.outcome, StepOutcome::Begun | StepOutcome::Failed) => {
                Some(r.step)
            }
            Some(r) => RetireStep::ALL.iter().copied().find(|s| *s > r.step),
        }
    }
}
