//! Evidence: what the engine reports as it works, and the one component that turns
//! it into audit records, metrics and notifications.
//!
//! The engine emits typed [`Event`]s to the [`Sink`] it was built with, at the
//! moment things happen: a rotation is requested (before anything is planned; a
//! sink that cannot record it stops the rotation), a rotation ends, a policy is
//! retired or enabled. The CLI and the agent build the engine the same way, with an
//! [`Evidence`] sink, so a local `rotor rotate` leaves the same records as the agent.
//!
//! | event | audit record | metrics | notification |
//! |---|---|---|---|
//! | [`Event::RotationRequested`] | `rotation_requested` (must be written) | — | — |
//! | [`Event::RunEnded`] | `rotation_ended`, once per ending | rotations, durations, consumer failures | success / compromise / failure, once per close |
//! | [`Event::PolicyRetired`] | `policy_retired` | — | — |
//! | [`Event::PolicyEnabled`] | `policy_enabled` | — | — |
//! | [`Event::StepBegun`], [`Event::StepEnded`] | — | — (step durations are observed from [`Event::RunEnded`]) | — |
//! | [`Event::Verified`] | — | — | — |
//! | [`Event::ConsumerPushed`], [`Event::ConsumerPending`] | — | — (failures are counted from [`Event::RunEnded`]) | — |
//!
//! The step-level events (a step begun or ended, a verification check, a consumer
//! updated or left pending) are traced at debug level, each in the span of the run
//! that emitted it; the records they speak of reach the audit log whole when the run
//! ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error};

use crate::audit::{AuditError, AuditEvent, AuditLog};
pub use crate::audit::{AuthMethod, VaultIdentity};
use crate::consumers::ConsumerKind;
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, NotifyEvent};
use crate::policy::ValidatedPolicy;
use crate::state::records::{
    ConsumerRecord, ConsumerState, Retirement, Rotation, Status, StepOutcome, Trigger, Verification,
};

/// The environment variable naming the CLI's audit log (`--audit-log`).
pub const AUDIT_LOG_ENV: &str = "ROTOR_AUDIT_LOG";

/// How long a short-lived writer waits for another one to finish its record.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Who asked for an action, as the records name them.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// Who (`vault:<name>`, `api:<name>`, `scheduler`).
    pub actor: &'a str,
    /// How they proved it.
    pub authenticated_by: AuthMethod,
    /// Vault's own answer about them, where they used their own Vault token.
    pub vault_identity: Option<&'a VaultIdentity>,
}

/// The journaled record a step-level event belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A rotation's journal record.
    Rotation(&'a Rotation),
    /// A policy's retirement record.
    Retirement(&'a Retirement),
}

impl Subject<'_> {
    /// The policy the record is about.
    pub fn policy(&self) -> &str {
        match self {
            Subject::Rotation(r) => &r.policy,
            Subject::Retirement(r) => &r.policy,
        }
    }

    /// What the record is: `rotation` or `retirement`.
    pub fn what(&self) -> &'static str {
        match self {
            Subject::Rotation(_) => "rotation",
            Subject::Retirement(_) => "retirement",
        }
    }
}

/// Something the engine did that evidence is kept of.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A rotation is about to be planned. Emitted before any side effect; when the
    /// sink refuses it, the rotation does not start.
    RotationRequested {
        /// The policy the event is about.
        policy: &'a ValidatedPolicy,
        /// What started it.
        trigger: Trigger,
        /// Who asked.
        requester: Requester<'a>,
        /// Why, as the requester wrote it.
        reason: Option<&'a str>,
        /// The ticket reference.
        ticket: Option<&'a str>,
        /// Who approved it, in order, where the policy requires approval.
        approvers: &'a [String],
        /// A compromise by a break-glass identity that skipped the required approval.
        break_glass: bool,
    },
    /// A run of the engine over `rotation` stopped: the rotation is closed
    /// (completed, rolled back, failed), waiting for its grace period, or open with a
    /// step to retry. Metrics count every run; the audit log and notifications only
    /// the rotation's endings ([`ended`]).
    RunEnded {
        /// The policy the event is about.
        policy: &'a ValidatedPolicy,
        /// The journal record.
        rotation: &'a Rotation,
    },
    /// A retirement run ended (its record's `state` says how).
    PolicyRetired {
        /// The retirement record.
        retirement: &'a Retirement,
        /// Who asked.
        requester: Requester<'a>,
    },
    /// An enable run ended (its record's `state` says how).
    PolicyEnabled {
        /// The retirement record with its `enable` part.
        retirement: &'a Retirement,
        /// Who asked.
        requester: Requester<'a>,
    },
    /// A step is about to make its side effect (journaled as begun first where a
    /// resume must know it may have happened).
    StepBegun {
        /// The record the step belongs to.
        subject: Subject<'a>,
        /// The step's name as journaled.
        step: &'static str,
        /// How many times it was begun, this one included.
        attempt: u32,
    },
    /// A step ended (retries within the run included), as its journal entry says.
    StepEnded {
        /// The record the step belongs to.
        subject: Subject<'a>,
        /// The step's name as journaled.
        step: &'static str,
        /// `ok`, `skipped` or `failed`.
        outcome: StepOutcome,
        /// Wall time of the step in this process, in milliseconds.
        duration_ms: f64,
    },
    /// A credential was tried against its target: the check, whether it passed and
    /// the target's own answer (never a value).
    Verified {
        /// The record the check is part of.
        subject: Subject<'a>,
        /// The check as it is recorded.
        check: &'a Verification,
    },
    /// A consumer holds the new value (read back where its API allows).
    ConsumerPushed {
        /// The rotation.
        rotation: &'a Rotation,
        /// The consumer's record (`verified` or `pushed`).
        consumer: &'a ConsumerRecord,
    },
    /// Updating a consumer failed; it stays pending and is retried.
    ConsumerPending {
        /// The rotation.
        rotation: &'a Rotation,
        /// The consumer's record (`pending`, with the error).
        consumer: &'a ConsumerRecord,
    },
}

/// Whether a run that returned `r` ended it: `r` is closed, or began waiting for its
/// grace period in this run. A rotation that stays open (a rollback still to be
/// checked, a step after promote to retry) or was already waiting when resumed has no
/// new ending; a closed one only comes from a run that closed it (a resume drives only
/// open ones).
pub fn ended(r: &Rotation) -> bool {
    !r.status.is_open() || (r.waiting_for_grace() && !r.was_waiting)
}

/// Why evidence could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The audit log refused the record.
    #[error("the audit log cannot be written: {0}")]
    Audit(#[from] AuditError),
}

/// Where the engine's events go. Implementations must not block for long: the
/// engine calls them inline, between its steps.
pub trait Sink: Send + Sync + 'static {
    /// Keeps evidence of `event`. An error on [`Event::RotationRequested`] stops the
    /// rotation before it starts; on the other events it is logged by the engine.
    fn emit(&self, event: &Event<'_>) -> Result<(), EvidenceError>;
}

/// A sink that keeps nothing: for library users and tests that check other things.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Sink for Discard {
    fn emit(&self, _event: &Event<'_>) -> Result<(), EvidenceError> {
        Ok(())
    }
}

/// Where audit records go.
#[derive(Debug, Clone)]
pub enum AuditTarget {
    /// A log held open (and locked) for the life of the process: the agent.
    Held(Arc<AuditLog>),
    /// A file opened for each record and let go at once, waiting for a moment while
    /// another writer finishes: the CLI, so two commands run at once both record.
    PerRecord(PathBuf),
}

impl AuditTarget {
    fn append(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        match self {
            AuditTarget::Held(log) => log.append(event),
            AuditTarget::PerRecord(path) => AuditLog::open_waiting(path, LOCK_WAIT)?.append(event),
        }
    }

    /// The file the records go to.
    pub fn path(&self) -> &Path {
        match self {
            AuditTarget::Held(log) => log.path(),
            AuditTarget::PerRecord(path) => path,
        }
    }
}

/// The evidence component: audit records, metrics and notifications from the
/// engine's events. Every part is optional (an agent without `--audit-log` keeps
/// metrics and notifications; the CLI keeps audit records and notifications).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    audit: Option<AuditTarget>,
    metrics: Option<Arc<Metrics>>,
    notifier: Option<Notifier>,
}

impl Evidence {
    /// Evidence kept nowhere yet; add parts with the `with_*` methods.
    pub fn new() -> Self {
        Evidence::default()
    }

    /// Audit records go to `target`.
    pub fn with_audit(mut self, target: AuditTarget) -> Self {
        self.audit = Some(target);
        self
    }

    /// Rotations are counted in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Owners are told through `notifier` (the policy's `spec.notify` and its global
    /// targets).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Waits until every notification sent so far is delivered or given up: a
    /// short-lived process calls it before exiting.
    pub async fn flush(&self) {
        if let Some(n) = &self.notifier {
            n.flush().await;
        }
    }

    /// Appends a record that is not an engine event (a local `rotor release`).
    pub fn record(&self, event: &AuditEvent) -> Result<(), EvidenceError> {
        self.audit(event)
    }

    fn audit(&self, event: &AuditEvent) -> Result<(), EvidenceError> {
        match &self.audit {
            None => Ok(()),
            Some(target) => {
                target.append(event)?;
                Ok(())
            }
        }
    }

    fn run_ended(&self, policy: &ValidatedPolicy, r: &Rotation) -> Result<(), EvidenceError> {
        let audited = if ended(r) {
            self.audit(&AuditEvent::RotationEnded {
                rotation: r.clone(),
            })
        } else {
            Ok(())
        };
        if let Some(m) = &self.metrics {
            m.observe_rotation(r);
            let pending = r
                .consumers
                .iter()
                .enumerate()
                .filter(|(_, c)| c.state == ConsumerState::Pending);
            for (i, c) in pending {
                // The label comes from the consumer's type, never from its description.
                let kind = ConsumerKind::of_record(&policy.spec.consumers, i, &c.consumer)
                    .map_or("other", ConsumerKind::label);
                m.consumer_failure(&policy.name, kind);
            }
        }
        if let Some(n) = &self.notifier
            && !r.status.is_open()
        {
            let event = match r.status {
                Status::Completed if r.trigger == Trigger::Compromise => NotifyEvent::Compromise,
                Status::Completed => NotifyEvent::Success,
                _ => NotifyEvent::Failure,
            };
            n.send(&policy.spec.notify, Notification::from_rotation(event, r));
        }
        audited
    }
}

impl Sink for Evidence {
    fn emit(&self, event: &Event<'_>) -> Result<(), EvidenceError> {
        let result = match *event {
            Event::RotationRequested {
                policy,
                trigger,
                requester,
                reason,
                ticket,
                approvers,
                break_glass,
            } => self.audit(&AuditEvent::RotationRequested {
                policy: policy.name.clone(),
                trigger: trigger.as_str().into(),
                actor: requester.actor.to_owned(),
                reason: reason.map(str::to_owned),
                ticket: ticket.map(str::to_owned),
                approver: (!approvers.is_empty()).then(|| approvers.to_vec()),
                break_glass,
                authenticated_by: requester.authenticated_by,
                vault_identity: requester.vault_identity.cloned(),
            }),
            Event::RunEnded { policy, rotation } => self.run_ended(policy, rotation),
            Event::PolicyRetired {
                retirement,
                requester,
            } => self.audit(&AuditEvent::PolicyRetired {
                retirement: retirement.clone(),
                authenticated_by: requester.authenticated_by,
                vault_identity: requester.vault_identity.cloned(),
            }),
            Event::PolicyEnabled {
                retirement,
                requester,
            } => self.audit(&AuditEvent::PolicyEnabled {
                retirement: retirement.clone(),
                authenticated_by: requester.authenticated_by,
                vault_identity: requester.vault_identity.cloned(),
            }),
            step => {
                trace_step(&step);
                Ok(())
            }
        };
        if let Err(e) = &result {
            error!(error = %e, "Evidence could not be kept.");
        }
        result
    }
}

/// Traces a step-level event at debug level (no secret: names, outcomes, the
/// target's answers).
fn trace_step(event: &Event<'_>) {
    match *event {
        Event::StepBegun {
            subject,
            step,
            attempt,
        } => debug!(
            policy = subject.policy(),
            record = subject.what(),
            step,
            attempt,
            "Step begun."
        ),
        Event::StepEnded {
            subject,
            step,
            outcome,
            duration_ms,
        } => debug!(
            policy = subject.policy(),
            record = subject.what(),
            step,
            outcome = ?outcome,
            duration_ms,
            "Step ended."
        ),
        Event::Verified { subject, check } => debug!(
            policy = subject.policy(),
            record = subject.what(),
            check = ?check.check,
            passed = check.passed,
            inconclusive = check.inconclusive,
            evidence = %check.evidence,
            "Verified."
        ),
        Event::ConsumerPushed { rotation, consumer }
        | Event::ConsumerPending { rotation, consumer } => debug!(
            policy = %rotation.policy,
            consumer = %consumer.consumer,
            state = %consumer.state,
            changed = consumer.changed,
            attempts = consumer.attempts,
            error = consumer.error.as_deref().unwrap_or(""),
            "Consumer updated or left pending."
        ),
        _ => {}
    }
}

/// Asks Vault who rotor's token belongs to (`auth/token/lookup-self`): the operator's
/// identity for the records of a local command. Only the display name, the entity id
/// and the policies are kept.
pub async fn vault_identity(
    vault: &crate::vault::Vault,
) -> Result<VaultIdentity, crate::vault::VaultError> {
    let resp = vault
        .request_ok(
            reqwest::Method::GET,
            "auth/token/lookup-self",
            None,
            crate::vault::AuthAs::Rotor,
        )
        .await?;
    let data = &resp.json()["data"];
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
    let mut policies: Vec<String> = data["policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    policies.sort();
    let entity = text("entity_id");
    Ok(VaultIdentity {
        display_name: text("display_name"),
        entity_id: (!entity.is_empty()).then_some(entity),
        policies,
    })
}

/// The CLI's audit log: `--audit-log`, else `ROTOR_AUDIT_LOG` (clap reads both), else
/// `$XDG_STATE_HOME/rotor/audit.jsonl`, else `~/.local/state/rotor/audit.jsonl`. The
/// directory of the default is created (mode 0700) when missing.
pub fn cli_audit_path(given: Option<&Path>) -> Result<PathBuf, std::io::Error> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local").join("state"),
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no audit log: neither HOME nor XDG_STATE_HOME is set; give --audit-log or {AUDIT_LOG_ENV}"
                    ),
                ));
            }
        },
    };
    let dir = base.join("rotor");
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
    }
    Ok(dir.join("audit.jsonl"))
}
