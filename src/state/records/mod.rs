//! The records rotor keeps about its own work: a rotation's journal record
//! ([`Rotation`]) and a policy's retirement record ([`Retirement`]), with the typed
//! parts they are made of (steps, states, outcomes, verification checks, times,
//! rotation ids).
//!
//! They live here, below the engine, because everything that reports on them — the
//! audit log, metrics, notifications, the API and the CLI — reads them too; the engine
//! writes them and adds its own behaviour in the engine. The JSON they are
//! written as is the journal's on-disk format: names and time formats never change
//! (`tests/journal_compat.rs`).

mod retirement;
mod rotation;
pub mod time;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};

pub use self::retirement::{
    ConsumerRemoval, Enablement, RemovalState, RetireState, RetireStep, RetireStepRecord,
    Retirement,
};
pub use self::rotation::{ConsumerRecord, ConsumerState, Rotation, Status, Step, Trigger};

/// A rotation's id: a ULID, written as its 26-character text. Names the journal
/// record, the staging path and every audit record of the rotation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RotationId(String);

impl RotationId {
    /// A fresh id (a new ULID: sortable by the time it was made).
    pub fn generate() -> Self {
        RotationId(ulid::Ulid::new().to_string())
    }

    /// The id as written in records and paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RotationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for RotationId {
    fn from(id: String) -> Self {
        RotationId(id)
    }
}

impl From<&str> for RotationId {
    fn from(id: &str) -> Self {
        RotationId(id.to_owned())
    }
}

impl From<RotationId> for String {
    fn from(id: RotationId) -> Self {
        id.0
    }
}

/// Reads as its text wherever a `&str` is expected (paths, log fields, lookups).
impl std::ops::Deref for RotationId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RotationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for RotationId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for RotationId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RotationId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for RotationId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// How one step (of a rotation or a retirement) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum StepOutcome {
    /// Started; its side effect may or may not have happened.
    Begun,
    /// Done.
    Ok,
    /// Not applicable to this credential kind or strategy.
    Skipped,
    /// Failed; see `detail`.
    Failed,
}

impl StepOutcome {
    /// The name written in records (`begun`, `ok`, `skipped`, `failed`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a verification tried. Written as its `snake_case` name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Check {
    /// After a rotation: the old credential must be refused by the target.
    OldCredentialRejected,
    /// After a rollback: the old credential must work again.
    OldCredentialRestored,
    /// After a retirement: the retired credential must be refused.
    RetiredCredentialRejected,
    /// After a retirement (`alternating`): the other account's last value must be
    /// refused too.
    OtherAccountRejected,
}

impl Check {
    /// The name written in records (`old_credential_rejected`, …).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One step's entry in a record: a rotation's ([`Step`], the default) or a
/// retirement's ([`RetireStep`], as [`RetireStepRecord`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord<S = Step> {
    /// The step this entry records.
    pub step: S,
    /// How it went (`begun` until it ends).
    pub outcome: StepOutcome,
    /// When it began.
    #[serde(with = "time")]
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(
        default,
        with = "time::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of the step in this process, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// What happened, for people (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many times this step was begun (more than one after a resume or a
    /// failed run). Absent (1) in the oldest journals.
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// The result of one verification check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// What was checked.
    pub check: Check,
    /// Whether it passed.
    pub passed: bool,
    /// The target's own answer, e.g. `SQLSTATE 28P01: password authentication failed for user "x"`.
    pub evidence: String,
    /// The target gave no answer about the credential (timeout, refused connection, an
    /// error that says nothing about it): the check neither passed nor proved the
    /// opposite, and is repeated later. Absent (false) in older records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
    /// When the check ran.
    #[serde(with = "time")]
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests;
