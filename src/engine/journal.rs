//! The rotation journal: one JSON record per policy in rotor's state store
//! ([`crate::state`]; in Vault KV v2 at `<state mount>/rotor/journal/<policy>`), written with check-and-set before every
//! step's side effect. Because it lives in Vault, any replica can resume a rotation;
//! because every write is check-and-set on the version it read, two agents can never
//! drive the same policy's rotation at once.
//!
//! The record holds no secret: values are referred to by their staging path and HMAC
//! fingerprints only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::{self, Key, StateError, Store, VaultStore};
use crate::vault::{Vault, VaultError};

/// The steps of a rotation, in order (ARCHITECTURE.md, "The rotation state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        match self {
            Step::Planned => "planned",
            Step::Staged => "staged",
            Step::Applied => "applied",
            Step::Tested => "tested",
            Step::Promoted => "promoted",
            Step::Propagated => "propagated",
            Step::Revoked => "revoked",
            Step::Verified => "verified",
            Step::Completed => "completed",
        }
    }

    /// Whether a failure at this step still rolls back (before promote) rather than
    /// only rolling forward.
    pub fn before_promote(self) -> bool {
        self < Step::Promoted
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rotation stands overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        match self {
            Status::Open => "open",
            Status::RollingBack => "rolling_back",
            Status::Completed => "completed",
            Status::RolledBack => "rolled_back",
            Status::Failed => "failed",
        }
    }
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        match self {
            Trigger::Schedule => "schedule",
            Trigger::OnDemand => "on_demand",
            Trigger::Compromise => "compromise",
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// One step's entry in the record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: Step,
    /// How it went.
    pub outcome: StepOutcome,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time of the step in this process, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// What happened, for people (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many times this step was begun (more than one after a resume).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// The result of one verification check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// What was checked, e.g. `old_credential_rejected`.
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// The target's own answer, e.g. `SQLSTATE 28P01: password authentication failed for user "x"`.
    pub evidence: String,
    /// The target gave no answer about the credential (timeout, refused connection, an
    /// error that says nothing about it): the check neither passed nor proved the
    /// opposite, and is repeated later. Absent (false) in older records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
    /// When (RFC 3339).
    pub at: String,
}

/// Where the new value stands at one consumer. Written as its `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        match self {
            ConsumerState::Verified => "verified",
            ConsumerState::Pushed => "pushed",
            ConsumerState::Pending => "pending",
        }
    }
}

impl std::fmt::Display for ConsumerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// ULID.
    pub rotation_id: String,
    /// Policy name.
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
    /// Why.
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
    /// The old credential stays valid until this instant (RFC 3339): set when the
    /// consumers have the new value, from the grace period (zero for a compromise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_after: Option<String>,
    /// Sessions ended because they used the old credential.
    #[serde(default)]
    pub sessions_terminated: u64,
    /// Why it failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was planned (RFC 3339).
    pub started_at: String,
    /// Last journal write (RFC 3339).
    pub updated_at: String,
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
    pub fn finished(&self, step: Step) -> Option<chrono::DateTime<chrono::Utc>> {
        self.steps
            .iter()
            .rev()
            .find(|r| r.step == step && r.outcome == StepOutcome::Ok)
            .and_then(|r| r.finished_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// Whether `step` was begun at some point (its side effect may have happened).
    pub fn reached(&self, step: Step) -> bool {
        self.steps.iter().any(|r| r.step >= step)
    }
}

/// Reads and writes journal records with check-and-set, in rotor's state store
/// ([`crate::state::Key::Journal`]).
#[derive(Debug, Clone)]
pub struct Journal {
    store: Arc<dyn Store>,
}

/// A record with the KV version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The record.
    pub rotation: Rotation,
    /// Its KV version (the check-and-set base of the next write).
    pub version: u64,
}

/// A failed journal operation.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum JournalError {
    /// Vault refused or failed.
    #[error("journal for policy {policy}: {source}")]
    #[strum(serialize = "journal_vault")]
    Vault {
        /// Policy name.
        policy: String,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// Another agent wrote the journal since we read it.
    #[error(
        "journal for policy {policy} was changed by another rotor agent; it owns this rotation now"
    )]
    #[strum(serialize = "journal_conflict")]
    Conflict {
        /// Policy name.
        policy: String,
    },
    /// The stored record is not a rotation record.
    #[error("journal for policy {policy} is unreadable: {detail}")]
    #[strum(serialize = "journal_corrupt")]
    Corrupt {
        /// Policy name.
        policy: String,
        /// Where the record is and what is wrong with it (never its content).
        detail: String,
    },
}

impl JournalError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    fn from_state(policy: &str, e: StateError) -> Self {
        let policy = policy.to_owned();
        match e {
            StateError::Vault(VaultError::CasConflict { .. }) => JournalError::Conflict { policy },
            StateError::Vault(source) => JournalError::Vault { policy, source },
            StateError::Corrupt(c) => JournalError::Corrupt {
                policy,
                detail: format!("{} ({})", c.location, c.detail),
            },
        }
    }
}

impl Journal {
    /// A journal in Vault under `<mount>/<prefix>/journal/`.
    pub fn new(vault: Vault, mount: impl Into<String>, prefix: impl Into<String>) -> Self {
        Journal::with_store(Arc::new(VaultStore::new(vault, mount, prefix)))
    }

    /// A journal in `store`.
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        Journal { store }
    }

    /// KV mount of rotor's own state.
    pub fn mount(&self) -> &str {
        self.store.mount()
    }

    /// The staging path of one rotation (relative to the state mount).
    pub fn staging_path(&self, policy: &str, rotation_id: &str) -> String {
        self.store.path(Key::Staging {
            policy,
            rotation: rotation_id,
        })
    }

    /// The policy's latest record and its version, or `(None, version)` when there
    /// is none (version 0 = the path was never written).
    pub async fn load(&self, policy: &str) -> Result<(Option<Rotation>, u64), JournalError> {
        // A path with no live version was never written: rotor never deletes journal
        // versions, so 0 is the right check-and-set base.
        match state::JOURNAL
            .read(&*self.store, Key::Journal(policy))
            .await
        {
            Ok(Some((rotation, version))) => Ok((Some(rotation), version)),
            Ok(None) => Ok((None, 0)),
            Err(e) => Err(JournalError::from_state(policy, e)),
        }
    }

    /// Writes `rotation` if the journal is still at `version`; returns the new version.
    pub async fn write(&self, rotation: &Rotation, version: u64) -> Result<u64, JournalError> {
        let policy = &rotation.policy;
        let key = Key::Journal(policy);
        let failed = |e| JournalError::from_state(policy, e);
        let status = [("status", rotation.status.as_str())];
        let data = state::JOURNAL
            .data(&*self.store, key, rotation, &status)
            .map_err(failed)?;
        self.store
            .write(key, &data, Some(version))
            .await
            .map_err(|e| failed(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::state::memory::MemoryStore;

    fn journal() -> (Arc<MemoryStore>, Journal) {
        let store = Arc::new(MemoryStore::new());
        (store.clone(), Journal::with_store(store))
    }

    #[tokio::test]
    async fn a_corrupt_journal_is_reported_with_its_place() {
        let (store, journal) = journal();
        assert!(matches!(journal.load("p").await, Ok((None, 0))));
        for data in [
            json!({"status": "open"}),
            json!({"rotation": {"rotation_id": "canary-id"}, "status": "open"}),
        ] {
            let Value::Object(data) = data else {
                unreachable!()
            };
            store.write(Key::Journal("p"), &data, None).await.unwrap();
            let e = journal.load("p").await.expect_err("corrupt");
            assert_eq!(e.kind(), "journal_corrupt");
            let text = e.to_string();
            assert!(text.contains("secret/rotor/journal/p"), "{text}");
            assert!(!text.contains("canary"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_journal_write_on_a_stale_version_is_a_conflict() {
        let (_, journal) = journal();
        let rotation: Rotation = serde_json::from_value(json!({
            "rotation_id": "01JABCDEFGHJKMNPQRSTVWXYZ0", "policy": "p", "kind": "postgres",
            "strategy": "single", "trigger": "schedule", "actor": "scheduler",
            "status": "open", "canonical": "secret/app/db", "canonical_version": 3,
            "staging": "secret/rotor/staging/p/01JABCDEFGHJKMNPQRSTVWXYZ0",
            "steps": [{"step": "planned", "outcome": "ok", "started_at": "2026-01-01T00:00:00.000Z"}],
            "started_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"
        }))
        .expect("a record");
        let v1 = journal.write(&rotation, 0).await.expect("create");
        assert!(matches!(
            journal.write(&rotation, 0).await,
            Err(JournalError::Conflict { .. })
        ));
        let (back, version) = journal.load(&rotation.policy).await.expect("load");
        assert_eq!(version, v1);
        assert_eq!(back.expect("record").rotation_id, rotation.rotation_id);
    }
}
