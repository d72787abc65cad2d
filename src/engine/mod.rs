//! The rotation state machine (ARCHITECTURE.md): staged → applied → tested →
//! promoted → propagated → revoked → verified → completed. Every step is journaled
//! in Vault before its side effect; a failure before promote rolls the target back to
//! the old value, a failure after it only ever rolls forward.

pub mod cascade;
pub mod failpoint;
pub mod history;
pub mod journal;
pub mod retire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{Instrument, error, info, info_span, warn};

use crate::consumers::Consumers;
use crate::credentials::{AuthOutcome, Credential, CredentialError};
use crate::evidence::{AuthMethod, Event, Requester, Sink, VaultIdentity};
use crate::policy::ValidatedPolicy;
use crate::secret::{Fingerprinter, SecretMap};
use crate::state::{self, StateError, Store, VaultStore};
use crate::vault::{Vault, VaultError};

use self::failpoint::Moment;
pub use self::journal::{
    ConsumerRecord, Journal, JournalError, Rotation, Status, Step, StepOutcome, StepRecord,
    Trigger, Verification,
};
pub use self::retire::{EnableOutcome, RetireRequest, RetireState, Retirement};

/// Where rotor keeps its own state in Vault.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// KV v2 mount for the journal, staging values and rotor's keys (default `secret`).
    pub state_mount: String,
    /// Path prefix under that mount (default `rotor`).
    pub state_prefix: String,
    /// How many times a transient failure after promote is retried in one run.
    pub retries: u32,
    /// First retry delay; doubles each time, with jitter.
    pub retry_base: Duration,
    /// How long a run may wait in-process for the old credential's grace period to
    /// end before revoking it. A longer grace leaves the rotation open (waiting) for a
    /// later `resume` — the agent's scheduler, or `rotor resume`.
    pub grace_wait: Duration,
    /// How many values per policy the reuse history remembers (default 24; see
    /// [`history`]). 0 remembers none: staging then only refuses the current value.
    pub reuse_history: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            state_mount: "secret".into(),
            state_prefix: "rotor".into(),
            retries: 3,
            retry_base: Duration::from_millis(200),
            grace_wait: Duration::ZERO,
            reuse_history: history::DEFAULT_REUSE_HISTORY,
        }
    }
}

/// Who asked for a rotation, and why. `Default` is an on-demand request by nobody,
/// for `..Default::default()` in literals.
#[derive(Debug, Clone)]
pub struct RotationRequest {
    /// What started it.
    pub trigger: Trigger,
    /// Who (user name, API identity, `scheduler`).
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// Ticket.
    pub ticket: Option<String>,
    /// Who approved it, where the policy requires approval (`spec.onDemand.approval`).
    pub approvers: Vec<String>,
    /// A compromise by a break-glass identity that skipped the required approval.
    pub break_glass: bool,
    /// The approval request it carries out, if any.
    pub approval_request: Option<String>,
    /// How the requester proved who they are (written in the `rotation_requested`
    /// record).
    pub authenticated_by: AuthMethod,
    /// The requester's identity as Vault answered it, where they used their own Vault
    /// token (the local CLI).
    pub vault_identity: Option<VaultIdentity>,
}

impl RotationRequest {
    /// Who asked, as the evidence names them.
    pub fn requester(&self) -> Requester<'_> {
        Requester {
            actor: &self.actor,
            authenticated_by: self.authenticated_by,
            vault_identity: self.vault_identity.as_ref(),
        }
    }
}

impl Default for RotationRequest {
    fn default() -> Self {
        RotationRequest {
            trigger: Trigger::OnDemand,
            actor: String::new(),
            reason: None,
            ticket: None,
            approvers: Vec::new(),
            break_glass: false,
            approval_request: None,
            authenticated_by: AuthMethod::Unknown,
            vault_identity: None,
        }
    }
}

/// The result of [`Engine::rotate`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationOutcome {
    /// An open rotation found in the journal and driven to its end first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Rotation>,
    /// The requested rotation (absent when the resumed one could not finish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

impl RotationOutcome {
    /// True when everything that ran completed, or is done except for revoking the
    /// old credential once its grace period ends.
    pub fn succeeded(&self) -> bool {
        let ok = |r: &Rotation| r.status == Status::Completed || r.waiting_for_grace();
        self.rotation.as_ref().is_some_and(ok) && self.resumed.as_ref().is_none_or(ok_or_closed)
    }
}

fn ok_or_closed(r: &Rotation) -> bool {
    // A resumed rotation that rolled back cleanly left a working credential; the
    // run's success is then decided by the new rotation.
    matches!(r.status, Status::Completed | Status::RolledBack)
}

/// A failure that prevents a rotation from starting or from being journaled.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Vault failed outside a step.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A record rotor keeps in Vault (retirement, quarantine, fingerprint key) does not
    /// decode.
    #[error(transparent)]
    StateCorrupt(#[from] state::Corrupt),
    /// The credential kind cannot be prepared (unsupported, reference missing…).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The canonical path has no current value to rotate from.
    #[error(
        "{mount}/{path} has no current version: seed it with the credential that works today (keys {keys}) before the first rotation"
    )]
    CanonicalMissing {
        /// KV mount.
        mount: String,
        /// Path.
        path: String,
        /// The keys expected.
        keys: String,
    },
    /// The current value lacks a key the kind needs.
    #[error("{mount}/{path} (version {version}) has no key {key:?}")]
    CanonicalIncomplete {
        /// KV mount.
        mount: String,
        /// Path.
        path: String,
        /// Version read.
        version: u64,
        /// Missing key.
        key: &'static str,
    },
    /// The rotation could not be recorded before it started, so it did not start.
    #[error("the audit log cannot be written; the rotation of {policy} was not started")]
    Evidence {
        /// Policy.
        policy: String,
        /// What the evidence sink said.
        #[source]
        source: crate::evidence::EvidenceError,
    },
    /// The on-demand request lacks what the policy requires.
    #[error("policy {policy} requires {what} for on-demand rotations")]
    RequestIncomplete {
        /// Policy.
        policy: String,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// An open rotation is still pending and blocks a new one.
    #[error(
        "rotation {rotation_id} of policy {policy} is still {status} at step {step}; it must finish before a new one starts"
    )]
    Pending {
        /// Policy.
        policy: String,
        /// The open rotation.
        rotation_id: String,
        /// Its status.
        status: &'static str,
        /// Its step.
        step: &'static str,
    },
    /// The previous rotation waits for its old credential's grace period to end.
    #[error(
        "rotation {rotation_id} of policy {policy} keeps the old credential valid until {until} (grace period); a new rotation starts after that (`rotor resume` finishes it then), or now with --compromise"
    )]
    WaitingForGrace {
        /// Policy.
        policy: String,
        /// The waiting rotation.
        rotation_id: String,
        /// End of the grace period (RFC 3339).
        until: String,
    },
    /// The policy is retired (or being retired or enabled): rotations are refused.
    #[error(
        "policy {policy} is retired ({state} since {since} by {actor}: {reason}); rotations are refused until `rotor enable {policy} --reason …`"
    )]
    Retired {
        /// Policy.
        policy: String,
        /// `retiring`, `retired`, `failed` or `enabling`.
        state: &'static str,
        /// When the retirement began (RFC 3339).
        since: String,
        /// Who retired it.
        actor: String,
        /// Why.
        reason: String,
    },
    /// `enable` of a policy that is not retired.
    #[error("policy {policy} is not retired; there is nothing to enable")]
    NotRetired {
        /// Policy.
        policy: String,
    },
    /// A retire or enable request lacks what it needs.
    #[error("{action} policy {policy} requires {what}")]
    RetireIncomplete {
        /// Policy.
        policy: String,
        /// `retiring` / `enabling`.
        action: &'static str,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// This executor cannot do what was asked (test doubles of the agent's executor).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The value a rotation must restore is gone from Vault.
    #[error(
        "canonical version {version} of {canonical} is gone; cannot continue rotation {rotation_id} safely"
    )]
    OldValueGone {
        /// Rotation.
        rotation_id: String,
        /// `mount/path`.
        canonical: String,
        /// Version.
        version: u64,
    },
}

impl EngineError {
    /// Whether an outside system (Vault, the target) gave no answer — a timeout, a
    /// refused connection, a 5xx — rather than a refusal: retrying later may succeed,
    /// and it is no evidence against the policy.
    pub fn is_unanswered(&self) -> bool {
        match self {
            EngineError::Vault(e) => e.is_transient(),
            EngineError::Journal(JournalError::Vault { source, .. }) => source.is_transient(),
            EngineError::Credential(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Vault(e) => e.kind(),
            EngineError::Journal(e) => e.kind(),
            EngineError::StateCorrupt(_) => "state_corrupt",
            EngineError::Credential(e) => e.kind(),
            EngineError::CanonicalMissing { .. } => "canonical_missing",
            EngineError::CanonicalIncomplete { .. } => "canonical_incomplete",
            EngineError::Evidence { .. } => "evidence",
            EngineError::RequestIncomplete { .. } => "request_incomplete",
            EngineError::Pending { .. } => "pending",
            EngineError::WaitingForGrace { .. } => "waiting_for_grace",
            EngineError::OldValueGone { .. } => "old_value_gone",
            EngineError::Retired { .. } => "retired",
            EngineError::NotRetired { .. } => "not_retired",
            EngineError::RetireIncomplete { .. } => "request_incomplete",
            EngineError::Unsupported(_) => "unsupported",
        }
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Vault(e) => EngineError::Vault(e),
            StateError::Corrupt(c) => EngineError::StateCorrupt(c),
        }
    }
}

/// How a step ended.
enum StepResult {
    Ok(String),
    Skipped(String),
}

/// Why a step failed, and what the engine should do about it.
struct StepFailure {
    message: String,
    /// Worth retrying in this run (network, 5xx).
    transient: bool,
    /// After promote: stop for good (e.g. old credential still accepted) rather than
    /// leave the rotation open for a later retry.
    fatal: bool,
    /// An outside system gave no answer (timeout, refused connection, 5xx): no
    /// evidence about the credential either way. Journaled as
    /// [`Rotation::unanswered`]; it never counts toward quarantine.
    unanswered: bool,
}

impl StepFailure {
    fn fatal(message: impl Into<String>) -> Self {
        StepFailure {
            message: message.into(),
            transient: false,
            fatal: true,
            unanswered: false,
        }
    }

    /// [`StepFailure::fatal`] for a check the target did not answer.
    fn fatal_unanswered(message: impl Into<String>) -> Self {
        StepFailure {
            unanswered: true,
            ..StepFailure::fatal(message)
        }
    }
}

impl From<CredentialError> for StepFailure {
    fn from(e: CredentialError) -> Self {
        let transient = e.is_transient();
        StepFailure {
            message: crate::error_chain(&e),
            transient,
            fatal: false,
            unanswered: transient,
        }
    }
}

impl From<VaultError> for StepFailure {
    fn from(e: VaultError) -> Self {
        StepFailure {
            transient: e.is_transient(),
            message: crate::error_chain(&e),
            fatal: false,
            unanswered: e.is_transient(),
        }
    }
}

/// What a new rotation read while it was planned, handed to [`Engine::drive`].
struct Known {
    old: SecretMap,
    credential: Credential,
    /// The reuse history and its KV version, when read.
    history: Option<(Vec<String>, u64)>,
}

/// Everything one rotation run needs.
struct Run<'a> {
    policy: &'a ValidatedPolicy,
    /// The reuse history and its KV version as read at planning (`None`: read it when
    /// needed). A write based on it that conflicts reads it again.
    history: Option<(Vec<String>, u64)>,
    credential: Credential,
    rotation: Rotation,
    version: u64,
    old: SecretMap,
    new: Option<SecretMap>,
    compromise: bool,
    /// Revoke the old credential without waiting for the grace period.
    end_grace: bool,
}

/// Runs rotations.
pub struct Engine {
    vault: Vault,
    /// rotor's own records (journal, staging, histories, …); the canonical copies
    /// are read and written through `vault`.
    state: Arc<dyn Store>,
    journal: Journal,
    consumers: Consumers,
    fingerprints: Fingerprinter,
    config: EngineConfig,
    evidence: std::sync::Arc<dyn Sink>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Engine {
    /// An engine over `vault`, keeping its own records there too (under
    /// `<state mount>/<prefix>/`), loading (or creating once, shared by all replicas)
    /// rotor's fingerprint key from `<state mount>/<prefix>/config/fingerprint-key`.
    pub async fn new(
        vault: Vault,
        config: EngineConfig,
        consumers: Consumers,
    ) -> Result<Self, EngineError> {
        let store = VaultStore::new(vault.clone(), &config.state_mount, &config.state_prefix);
        Engine::with_store(vault, Arc::new(store), config, consumers).await
    }

    /// An engine keeping its own records in `store` (e.g. a
    /// [`state::memory::MemoryStore`] in tests); canonical copies, credentials and
    /// references still go through `vault`.
    pub async fn with_store(
        vault: Vault,
        store: Arc<dyn Store>,
        config: EngineConfig,
        consumers: Consumers,
    ) -> Result<Self, EngineError> {
        let fingerprints = state::fingerprint_key(&*store).await?;
        Ok(Engine {
            journal: Journal::with_store(store.clone()),
            state: store,
            vault,
            consumers,
            fingerprints,
            config,
            evidence: std::sync::Arc::new(crate::evidence::Discard),
        })
    }

    /// The same engine, reporting what it does to `evidence` (audit records, metrics,
    /// notifications: [`crate::evidence::Evidence`]). Without it nothing is kept.
    pub fn with_evidence(mut self, evidence: std::sync::Arc<dyn Sink>) -> Self {
        self.evidence = evidence;
        self
    }

    /// Emits `event`; a failure is logged by the sink and otherwise ignored (the
    /// events after a rotation started never stop it).
    fn report(&self, event: &Event<'_>) {
        let _ = self.evidence.emit(event);
    }

    /// Records that `request` asks to rotate `policy`, before anything is planned.
    fn announce(
        &self,
        policy: &ValidatedPolicy,
        request: &RotationRequest,
        reason: Option<&str>,
    ) -> Result<(), EngineError> {
        self.evidence
            .emit(&Event::RotationRequested {
                policy,
                trigger: request.trigger,
                requester: request.requester(),
                reason,
                ticket: request.ticket.as_deref(),
                approvers: &request.approvers,
                break_glass: request.break_glass,
            })
            .map_err(|source| EngineError::Evidence {
                policy: policy.name.clone(),
                source,
            })
    }

    /// The fingerprinter (HMAC key) shared by all replicas.
    pub fn fingerprints(&self) -> &Fingerprinter {
        &self.fingerprints
    }

    /// Where rotor keeps its own state.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The Vault client.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Where rotor keeps its own records.
    pub fn state(&self) -> &Arc<dyn Store> {
        &self.state
    }

    /// Finishes or rolls back the policy's open rotation, if any. A rotation waiting
    /// for its grace period stays waiting until the period ends.
    pub async fn resume(&self, policy: &ValidatedPolicy) -> Result<Option<Rotation>, EngineError> {
        self.resume_with(policy, false).await
    }

    /// [`Engine::resume`]; with `end_grace` (a compromise), a rotation waiting for its
    /// grace period revokes the old credential now.
    pub async fn resume_with(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        Ok(self.resume_versioned(policy, end_grace).await?.0)
    }

    /// [`Engine::resume_with`], also returning the journal version read when nothing
    /// was open (a new rotation's check-and-set base, saving a second read).
    async fn resume_versioned(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<(Option<Rotation>, Option<u64>), EngineError> {
        let (record, version) = self.journal.load(&policy.name).await?;
        self.resume_loaded(policy, end_grace, record, version).await
    }

    /// [`Engine::resume_versioned`] with the journal record already read.
    async fn resume_loaded(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
        record: Option<Rotation>,
        version: u64,
    ) -> Result<(Option<Rotation>, Option<u64>), EngineError> {
        match record {
            Some(rotation) if rotation.status.is_open() => {
                info!(policy = %policy.name, rotation = %rotation.rotation_id, step = ?rotation.next_step(), "Resuming open rotation.");
                let mut rotation = rotation;
                rotation.resumed = true;
                rotation.was_waiting = rotation.waiting_for_grace();
                Ok((
                    Some(
                        self.drive(policy, rotation, version, end_grace, None)
                            .await?,
                    ),
                    None,
                ))
            }
            _ => Ok((None, Some(version))),
        }
    }

    /// Performs one rotation of `policy`: first finishes any open rotation of the
    /// policy found in the journal, then runs the requested one. A retired policy is
    /// refused ([`EngineError::Retired`]).
    ///
    /// The request is reported ([`Event::RotationRequested`]) before anything else;
    /// when the evidence sink cannot record it, nothing is done
    /// ([`EngineError::Evidence`]).
    pub async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        self.announce(policy, &request, request.reason.as_deref())?;
        self.rotate_checked(policy, request, true).await
    }

    /// [`Engine::rotate`] without the retired check and without reporting the request
    /// (the enable that runs it reported it before it changed anything).
    pub(super) async fn rotate_unchecked(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        self.rotate_checked(policy, request, false).await
    }

    /// [`Engine::rotate`]; `check_retired` refuses a retired policy.
    async fn rotate_checked(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
        check_retired: bool,
    ) -> Result<RotationOutcome, EngineError> {
        if request.trigger != Trigger::Schedule
            && let Some(what) = policy
                .spec
                .on_demand
                .missing(request.reason.as_deref(), request.ticket.as_deref())
        {
            return Err(EngineError::RequestIncomplete {
                policy: policy.name.clone(),
                what,
            });
        }

        // The retired mark, the journal and the canonical value are independent reads:
        // one round trip instead of three.
        let vault_loc = &policy.spec.vault;
        let (retired, loaded, read) = tokio::join!(
            async {
                if check_retired {
                    self.refuse_retired(policy).await
                } else {
                    Ok(())
                }
            },
            self.journal.load(&policy.name),
            self.vault.kv_read(&vault_loc.mount, &vault_loc.path),
        );
        retired?;
        let (record, version) = loaded?;
        let (resumed, unchanged) = self
            .resume_loaded(
                policy,
                request.trigger == Trigger::Compromise,
                record,
                version,
            )
            .await?;
        if let Some(r) = &resumed
            && r.waiting_for_grace()
        {
            return Err(EngineError::WaitingForGrace {
                policy: policy.name.clone(),
                rotation_id: r.rotation_id.clone(),
                until: r.revoke_after.clone().unwrap_or_default(),
            });
        }
        if let Some(r) = &resumed
            && r.status.is_open()
        {
            return Err(EngineError::Pending {
                policy: policy.name.clone(),
                rotation_id: r.rotation_id.clone(),
                status: r.status.as_str(),
                step: r.next_step().map_or("none", Step::as_str),
            });
        }

        // A resumed rotation moved the journal and may have promoted: read both again.
        let (version, read) = match unchanged {
            Some(v) => (v, read),
            None => (
                self.journal.load(&policy.name).await?.1,
                self.vault.kv_read(&vault_loc.mount, &vault_loc.path).await,
            ),
        };
        let current = read?.ok_or_else(|| EngineError::CanonicalMissing {
            mount: vault_loc.mount.clone(),
            path: vault_loc.path.clone(),
            keys: policy.spec.credential.output_keys().join(", "),
        })?;
        if let Some(key) = policy
            .spec
            .credential
            .required_current_keys()
            .iter()
            .find(|k| current.data.get(k).is_none())
        {
            return Err(EngineError::CanonicalIncomplete {
                mount: vault_loc.mount.clone(),
                path: vault_loc.path.clone(),
                version: current.version,
                key,
            });
        }

        let rotation_id = ulid::Ulid::new().to_string();
        let started = now();
        let rotation = Rotation {
            staging: self.state.location(state::Key::Staging {
                policy: &policy.name,
                rotation: &rotation_id,
            }),
            rotation_id,
            policy: policy.name.clone(),
            kind: policy.spec.credential.kind().to_owned(),
            strategy: policy.spec.credential.strategy().as_str().to_owned(),
            trigger: request.trigger,
            actor: request.actor,
            reason: request.reason,
            ticket: request.ticket,
            approvers: request.approvers,
            break_glass: request.break_glass,
            approval_request: request.approval_request,
            status: Status::Open,
            canonical: format!("{}/{}", vault_loc.mount, vault_loc.path),
            canonical_version: current.version,
            promoted_version: None,
            old_fingerprint: Some(self.fingerprints.fingerprint_map(&current.data)),
            new_fingerprint: None,
            steps: vec![StepRecord {
                step: Step::Planned,
                outcome: StepOutcome::Ok,
                started_at: started.clone(),
                finished_at: Some(started.clone()),
                duration_ms: None,
                detail: Some(format!("canonical version {}", current.version)),
                attempts: 1,
            }],
            verification: Vec::new(),
            unanswered: false,
            consumers: Vec::new(),
            revoke_after: None,
            sessions_terminated: 0,
            error: None,
            started_at: started.clone(),
            updated_at: started,
            resumed: false,
            was_waiting: false,
        };
        // Journaling the plan, reading the target's admin login and the reuse history
        // are independent: one round trip. Nothing changes anywhere before the plan is
        // written.
        let history = self.history();
        let (written, credential, history) = tokio::join!(
            self.journal.write(&rotation, version),
            Credential::prepare(&policy.spec.credential, &self.vault),
            history.load_versioned(&policy.name),
        );
        let version = written?;
        info!(policy = %policy.name, rotation = %rotation.rotation_id, trigger = rotation.trigger.as_str(), actor = %rotation.actor, "Rotation planned.");
        let known = Known {
            old: current.data,
            credential: credential?,
            // A failed read is not fatal here: staging reads the history again.
            history: history.ok(),
        };
        let rotation = self
            .drive(policy, rotation, version, false, Some(known))
            .await?;
        Ok(RotationOutcome {
            resumed,
            rotation: Some(rotation),
        })
    }

    /// Drives `rotation` from wherever its journal says it is to an end (or to a
    /// pending state after promote).
    async fn drive(
        &self,
        policy: &ValidatedPolicy,
        rotation: Rotation,
        version: u64,
        end_grace: bool,
        known: Option<Known>,
    ) -> Result<Rotation, EngineError> {
        let span = info_span!("rotation", policy = %policy.name, kind = %rotation.kind,
            trigger = rotation.trigger.as_str(), rotation = %rotation.rotation_id);
        async move {
            let loc = &policy.spec.vault;
            // A new rotation was planned from the value just read; a resumed one reads
            // the version it was planned from.
            let known = match known {
                Some(known) => known,
                None => {
                    let (credential, old) = tokio::join!(
                        Credential::prepare(&policy.spec.credential, &self.vault),
                        self.vault.kv_read_version(
                            &loc.mount,
                            &loc.path,
                            rotation.canonical_version
                        ),
                    );
                    let credential = credential?;
                    let old = old?
                        .ok_or_else(|| EngineError::OldValueGone {
                            rotation_id: rotation.rotation_id.clone(),
                            canonical: rotation.canonical.clone(),
                            version: rotation.canonical_version,
                        })?
                        .data;
                    Known {
                        old,
                        credential,
                        history: None,
                    }
                }
            };
            let Known {
                old,
                credential,
                history,
            } = known;
            let mut run = Run {
                policy,
                history,
                credential,
                compromise: rotation.trigger == Trigger::Compromise,
                end_grace: end_grace || rotation.trigger == Trigger::Compromise,
                rotation,
                version,
                old,
                new: None,
            };
            if run.rotation.status == Status::RollingBack {
                self.rollback(&mut run).await?;
            } else {
                self.forward(&mut run).await?;
            }
            self.report(&Event::RunEnded {
                policy,
                rotation: &run.rotation,
            });
            Ok(run.rotation)
        }
        .instrument(span)
        .await
    }

    async fn write(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        run.rotation.updated_at = now();
        run.version = self.journal.write(&run.rotation, run.version).await?;
        Ok(())
    }

    async fn forward(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        // A step's end is journaled with the next journaled step's "begun" (one Vault
        // write per side effect): a crash before that write resumes at the last
        // journaled step, which every step allows, since each may be cut short after
        // its side effect and repeating a step is harmless. Steps that change nothing
        // outside rotor's own staging copy are not journaled before they run
        // (see [`journaled_first`]).
        let mut unwritten: Vec<Step> = Vec::new();
        while let Some(step) = run.rotation.next_step() {
            if step == Step::Revoked
                && !(run.end_grace || run.credential.strategy() == crate::policy::Strategy::Single)
                && !unwritten.is_empty()
            {
                // The grace period may be waited for in-process: journal what is done first.
                self.write(run).await?;
                done_hits(&mut unwritten);
            }
            if step == Step::Revoked && !self.grace_over(run).await {
                info!(
                    revoke_after = run.rotation.revoke_after.as_deref().unwrap_or(""),
                    "The old credential stays valid for its grace period; the rotation waits."
                );
                self.write(run).await?;
                done_hits(&mut unwritten);
                return Ok(());
            }
            // Journal "begun" before the side effect.
            let started = now();
            match run.rotation.steps.last_mut() {
                Some(rec) if rec.step == step && rec.outcome == StepOutcome::Begun => {
                    rec.attempts += 1;
                }
                _ => run.rotation.steps.push(StepRecord {
                    step,
                    outcome: StepOutcome::Begun,
                    started_at: started,
                    finished_at: None,
                    duration_ms: None,
                    detail: None,
                    attempts: 1,
                }),
            }
            if journaled_first(step, run) {
                self.write(run).await?;
                done_hits(&mut unwritten);
            }
            failpoint::hit(step, Moment::Begun);

            let clock = Instant::now();
            let result = self.execute_with_retries(step, run).await;
            failpoint::hit(step, Moment::Effect);

            let elapsed = clock.elapsed().as_secs_f64() * 1000.0;
            let rec = run
                .rotation
                .steps
                .last_mut()
                .expect("a step record was pushed above");
            rec.finished_at = Some(now());
            rec.duration_ms = Some(elapsed);
            match result {
                Ok(StepResult::Ok(detail)) => {
                    rec.outcome = StepOutcome::Ok;
                    rec.detail = Some(detail);
                    // A step retried to success clears the failure it left earlier.
                    run.rotation.error = None;
                    run.rotation.unanswered = false;
                }
                Ok(StepResult::Skipped(detail)) => {
                    rec.outcome = StepOutcome::Skipped;
                    rec.detail = Some(detail);
                }
                Err(failure) => {
                    rec.outcome = StepOutcome::Failed;
                    rec.detail = Some(failure.message.clone());
                    run.rotation.error = Some(format!("{step}: {}", failure.message));
                    run.rotation.unanswered = failure.unanswered;
                    if step.before_promote() {
                        warn!(step = %step, error = %failure.message, "Step failed before promote; rolling back.");
                        run.rotation.status = Status::RollingBack;
                        self.write(run).await?;
                        return self.rollback(run).await;
                    }
                    if failure.fatal {
                        error!(step = %step, error = %failure.message, "Rotation failed after promote; needs attention.");
                        run.rotation.status = Status::Failed;
                    } else {
                        warn!(step = %step, error = %failure.message, "Step failed after promote; the rotation stays open and will be retried.");
                        // Leave the step as begun so the next run retries it.
                        if let Some(rec) = run.rotation.steps.last_mut() {
                            rec.outcome = StepOutcome::Begun;
                        }
                    }
                    self.write(run).await?;
                    return Ok(());
                }
            }
            if step == Step::Completed {
                run.rotation.status = Status::Completed;
            }
            if step == Step::Propagated && run.rotation.revoke_after.is_none() {
                let grace = if run.compromise {
                    Duration::ZERO
                } else {
                    run.policy.spec.credential.grace()
                };
                let deadline = crate::schedule::saturating_after(chrono::Utc::now(), grace);
                run.rotation.revoke_after =
                    Some(deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
            unwritten.push(step);
            info!(step = %step, duration_ms = elapsed, "Step done.");
        }
        if !unwritten.is_empty() {
            self.write(run).await?;
            done_hits(&mut unwritten);
        }
        Ok(())
    }

    /// Whether the old credential's grace period is over (waiting for it in-process
    /// when the rest is within `grace_wait`).
    async fn grace_over(&self, run: &Run<'_>) -> bool {
        if run.end_grace || run.credential.strategy() == crate::policy::Strategy::Single {
            return true;
        }
        let Some(deadline) = run
            .rotation
            .revoke_after
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            return true;
        };
        let remaining = (deadline.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if remaining.is_zero() {
            return true;
        }
        if remaining <= self.config.grace_wait {
            info!(
                wait_ms = remaining.as_millis() as u64,
                "Waiting for the old credential's grace period."
            );
            tokio::time::sleep(remaining).await;
            return true;
        }
        false
    }

    async fn execute_with_retries(
        &self,
        step: Step,
        run: &mut Run<'_>,
    ) -> Result<StepResult, StepFailure> {
        let mut attempt = 0;
        loop {
            match self.execute(step, run).await {
                Err(f)
                    if f.transient && !step.before_promote() && attempt < self.config.retries =>
                {
                    let base = self.config.retry_base.as_millis() as u64 * (1 << attempt);
                    let jitter = rand::rng().random_range(0..=base / 2);
                    warn!(step = %step, attempt, error = %f.message, "Transient failure; retrying.");
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn execute(&self, step: Step, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        match step {
            Step::Planned => Ok(StepResult::Ok("planned".into())),
            Step::Staged => self.stage(run).await,
            Step::Applied => {
                let new = self.staged(run).await?;
                match run.credential.apply(&run.old, &new).await? {
                    Some(detail) => Ok(StepResult::Ok(detail)),
                    None => Ok(StepResult::Skipped(
                        "the target issued the new credential when it was staged".into(),
                    )),
                }
            }
            Step::Tested => {
                let new = self.staged(run).await?;
                match run.credential.login(&new).await? {
                    AuthOutcome::Accepted => {
                        Ok(StepResult::Ok("logged in with the new credential".into()))
                    }
                    other @ AuthOutcome::Rejected { .. } => Err(StepFailure {
                        message: format!("the new credential does not work: {}", other.evidence()),
                        transient: false,
                        fatal: false,
                        unanswered: false,
                    }),
                    // No answer is no proof either way; before promote it still rolls back.
                    other @ AuthOutcome::Unreachable { .. } => Err(StepFailure {
                        message: format!(
                            "the new credential could not be tested: {}",
                            other.evidence()
                        ),
                        transient: false,
                        fatal: false,
                        unanswered: true,
                    }),
                }
            }
            Step::Promoted => {
                let new = self.staged(run).await?;
                // The canonical write and the reuse history are independent: one round
                // trip. Idempotent: a resumed promote finds the value remembered already.
                let history = run.history.take();
                let (done, remembered) = tokio::join!(
                    self.promote(run.policy, &mut run.rotation, &new),
                    self.remember_promoted(run.policy, &run.old, &new, history),
                );
                let done = done?;
                remembered?;
                Ok(done)
            }
            Step::Propagated => self.propagate(run).await,
            Step::Revoked => {
                let new = self.staged(run).await?;
                match run.credential.revoke(&run.old, &new).await? {
                    Some(detail) => Ok(StepResult::Ok(detail)),
                    None => Ok(StepResult::Skipped(
                        "nothing to revoke: the strategy changed the credential in place".into(),
                    )),
                }
            }
            Step::Verified => self.verify(run).await,
            Step::Completed => {
                state::delete_staged(&*self.state, &run.policy.name, &run.rotation.rotation_id)
                    .await?;
                Ok(StepResult::Ok("staging value destroyed".into()))
            }
        }
    }

    /// The staged value: from memory, else from the staging path, else (once
    /// promoted: `completed` destroys the staging copy before it is journaled) from
    /// the canonical version it was promoted to.
    async fn staged(&self, run: &mut Run<'_>) -> Result<SecretMap, StepFailure> {
        if let Some(v) = &run.new {
            return Ok(v.clone());
        }
        let (policy, rotation) = (&run.policy.name, &run.rotation.rotation_id);
        let mut value = state::read_staged(&*self.state, policy, rotation).await?;
        if value.is_none()
            && let Some(version) = run.rotation.promoted_version
        {
            let loc = &run.policy.spec.vault;
            value = self
                .vault
                .kv_read_version(&loc.mount, &loc.path, version)
                .await?
                .map(|e| e.data);
        }
        let value = value.ok_or_else(|| {
            StepFailure::fatal(format!(
                "the staged value at {} is missing{}",
                self.state
                    .location(state::Key::Staging { policy, rotation }),
                match run.rotation.promoted_version {
                    Some(v) => format!(", and so is the canonical version {v} it was promoted to"),
                    None => String::new(),
                }
            ))
        })?;
        run.new = Some(value.clone());
        Ok(value)
    }

    /// Creates the new value and writes it to the staging path (create-only). A value
    /// that repeats the current one or one in the policy's reuse history is
    /// regenerated when rotor generates it, refused when the target issued it
    /// (see [`history`]).
    async fn stage(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        // A rotation planned by this run has a new id, so nothing can be staged for it
        // yet (a racing writer shows up as a check-and-set conflict below).
        let resumed = run.rotation.resumed;
        self.stage_checked(run, resumed).await
    }

    /// [`Engine::stage`]; `look` first reads the staging path for a value staged before.
    async fn stage_checked(
        &self,
        run: &mut Run<'_>,
        look: bool,
    ) -> Result<StepResult, StepFailure> {
        let (policy, rotation) = (&run.policy.name, &run.rotation.rotation_id);
        let staging = self
            .state
            .location(state::Key::Staging { policy, rotation });
        let issued = run.credential.creates_on_target();
        // Never generate a second value for the same rotation: reuse what is staged.
        if look && let Some(existing) = state::read_staged(&*self.state, policy, rotation).await? {
            run.rotation.new_fingerprint = Some(self.fingerprints.fingerprint_map(&existing));
            run.new = Some(existing.clone());
            if issued {
                // A restart may have come between staging and the reuse check.
                self.refuse_reuse(run.policy, &run.old, &existing).await?;
            }
            return Ok(StepResult::Ok(
                "reused the value staged before a restart".into(),
            ));
        }
        let mut new = run
            .credential
            .create(&run.old, &run.rotation.rotation_id)
            .await?;
        let mut regenerated = 0;
        if !issued {
            // A generated value must never repeat the current value or a recent one.
            let kind = run.policy.spec.credential.credential_kind();
            let remembered = match &run.history {
                Some((list, _)) => list.clone(),
                None => self.history().load(&run.policy.name).await?,
            };
            let current = history::secret_fingerprint(&self.fingerprints, kind, &run.old);
            history::seam_repeat(kind, &run.old, &mut new);
            while history::secret_fingerprint(&self.fingerprints, kind, &new)
                .is_some_and(|f| history::is_reuse(&f, current.as_deref(), &remembered))
            {
                regenerated += 1;
                if regenerated >= history::MAX_GENERATION_ATTEMPTS {
                    return Err(history::HistoryError::Repeated {
                        policy: run.policy.name.clone(),
                        attempts: regenerated,
                    }
                    .into());
                }
                warn!(
                    attempt = regenerated,
                    "The generated value repeats the current or a recent one (reuse); regenerating."
                );
                new = run
                    .credential
                    .create(&run.old, &run.rotation.rotation_id)
                    .await?;
            }
        }
        let written = state::write_staged(
            &*self.state,
            &run.policy.name,
            &run.rotation.rotation_id,
            &new,
        );
        match written.await {
            Ok(_) => {}
            Err(e) => {
                // What the target issued must not outlive a failed staging write.
                if issued && let Err(d) = run.credential.rollback(&run.old, Some(&new)).await {
                    warn!(error = %d, "Could not discard the credential issued for a failed staging write.");
                }
                if matches!(e, VaultError::CasConflict { .. }) {
                    // Another writer staged first (a racing resume): use theirs.
                    return Box::pin(self.stage_checked(run, true)).await;
                }
                return Err(e.into());
            }
        }
        run.rotation.new_fingerprint = Some(self.fingerprints.fingerprint_map(&new));
        run.new = Some(new.clone());
        if issued {
            // Staged first, so the usual rollback discards what the target issued.
            self.refuse_reuse(run.policy, &run.old, &new).await?;
        }
        Ok(StepResult::Ok(if regenerated == 0 {
            format!("staged at {staging}")
        } else {
            format!(
                "staged at {staging} after regenerating {regenerated} value(s) that repeated a previous one"
            )
        }))
    }

    async fn promote(
        &self,
        policy: &ValidatedPolicy,
        rotation: &mut Rotation,
        new: &SecretMap,
    ) -> Result<StepResult, StepFailure> {
        let loc = &policy.spec.vault;
        let expected = rotation.canonical_version;
        match self
            .vault
            .kv_write(&loc.mount, &loc.path, new, Some(expected))
            .await
        {
            Ok(v) => {
                rotation.promoted_version = Some(v);
                Ok(StepResult::Ok(format!(
                    "canonical version {v} (previous version {expected} kept)"
                )))
            }
            Err(VaultError::CasConflict { .. }) => {
                // Either our own write landed before a crash, or someone else wrote.
                let current = self.vault.kv_read(&loc.mount, &loc.path).await?;
                match current {
                    Some(c) if c.data.same_values(new) => {
                        rotation.promoted_version = Some(c.version);
                        Ok(StepResult::Ok(format!(
                            "canonical version {} (written before a restart)",
                            c.version
                        )))
                    }
                    Some(c) => Err(StepFailure::fatal(format!(
                        "{}/{} changed since planning (expected version {expected}, found {}): someone else wrote it; the target accepts the value staged at {}",
                        loc.mount, loc.path, c.version, rotation.staging
                    ))),
                    None => Err(StepFailure::fatal(format!(
                        "{}/{} was deleted during the rotation; the target accepts the value staged at {}",
                        loc.mount, loc.path, rotation.staging
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn propagate(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        let new = self.staged(run).await?;
        let previous = std::mem::take(&mut run.rotation.consumers);
        let mut records = Vec::with_capacity(run.policy.spec.consumers.len());
        let mut failures = Vec::new();
        let mut transient = true;
        for (i, spec) in run.policy.spec.consumers.iter().enumerate() {
            let consumer = spec.describe();
            let before = previous.get(i).filter(|r| r.consumer == consumer);
            // Consumers are independent: one that already has the value is not
            // pushed again while another is retried.
            if let Some(done) = before.filter(|r| r.state != "pending") {
                records.push(done.clone());
                continue;
            }
            let attempts = before.map_or(0, |r| r.attempts) + 1;
            match self
                .consumers
                .push(spec, &new, &self.fingerprints, &self.vault)
                .await
            {
                Ok(o) => records.push(ConsumerRecord {
                    consumer,
                    state: if o.verified { "verified" } else { "pushed" }.into(),
                    attempts,
                    changed: o.changed,
                    restarted: o.restarted,
                    error: None,
                }),
                Err(e) => {
                    transient &= e.is_transient();
                    let error = crate::error_chain(&e);
                    warn!(consumer = %consumer, kind = e.kind(), attempts, error = %error, "Consumer update failed; it stays pending.");
                    failures.push(consumer.clone());
                    records.push(ConsumerRecord {
                        consumer,
                        state: "pending".into(),
                        attempts,
                        changed: false,
                        restarted: Vec::new(),
                        error: Some(error),
                    });
                }
            }
        }
        let count = records.len();
        run.rotation.consumers = records;
        if failures.is_empty() {
            Ok(StepResult::Ok(format!(
                "{count} consumer(s) updated and read back"
            )))
        } else {
            Err(StepFailure {
                message: format!(
                    "{} of {count} consumer(s) pending: {}",
                    failures.len(),
                    failures.join("; ")
                ),
                transient,
                fatal: false,
                unanswered: transient,
            })
        }
    }

    async fn verify(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        let mut notes = Vec::new();
        if run.policy.spec.verify.terminate_sessions || run.compromise {
            // Sessions opened before the target switched used the old credential.
            let changed_at = run
                .rotation
                .finished(Step::Applied)
                .or_else(|| run.rotation.finished(Step::Staged))
                .map(std::time::SystemTime::from);
            let new = self.staged(run).await?;
            let n = run
                .credential
                .terminate_sessions(&run.old, &new, changed_at)
                .await?;
            run.rotation.sessions_terminated += n;
            notes.push(format!("{n} session(s) ended"));
        }
        if !run.policy.spec.verify.old_rejected {
            notes.push("old credential not probed (verify.oldRejected is false)".into());
            return Ok(StepResult::Ok(notes.join("; ")));
        }
        let outcome = run.credential.login(&run.old).await?;
        let evidence = outcome.evidence();
        let passed = matches!(outcome, AuthOutcome::Rejected { .. });
        run.rotation.verification.push(Verification {
            check: "old_credential_rejected".into(),
            passed,
            evidence: evidence.clone(),
            inconclusive: matches!(outcome, AuthOutcome::Unreachable { .. }),
            at: now(),
        });
        match outcome {
            AuthOutcome::Rejected { .. } => {
                notes.push(format!("old credential {evidence}"));
                Ok(StepResult::Ok(notes.join("; ")))
            }
            AuthOutcome::Accepted => Err(StepFailure::fatal(
                "the old credential is still accepted by the target",
            )),
            AuthOutcome::Unreachable { reason } => Err(StepFailure::fatal_unanswered(format!(
                "could not prove the old credential is rejected: {reason}"
            ))),
        }
    }

    async fn rollback(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        let new = if run.rotation.reached(Step::Staged) {
            self.staged(run).await.ok()
        } else {
            None
        };
        let touched = run.rotation.reached(Step::Applied)
            || (run.credential.creates_on_target() && new.is_some());
        if touched {
            match run.credential.rollback(&run.old, new.as_ref()).await {
                Ok(detail) => {
                    info!(detail = %detail, "Target rolled back.");
                    failpoint::hit_at("rollback", Moment::Effect);
                }
                Err(CredentialError::CannotRollBack(why)) => {
                    error!(
                        reason = why,
                        "The rotation cannot be rolled back; it failed and needs attention."
                    );
                    run.rotation.error = Some(format!(
                        "{}; cannot roll back: {why}",
                        run.rotation.error.as_deref().unwrap_or("failed")
                    ));
                    run.rotation.status = Status::Failed;
                    self.write(run).await?;
                    return Ok(());
                }
                Err(e) => {
                    error!(error = %e, staging = %run.rotation.staging, "Rollback failed; the rotation stays open and will retry the rollback.");
                    run.rotation.error = Some(format!(
                        "{}; rollback failed: {e}",
                        run.rotation.error.as_deref().unwrap_or("failed")
                    ));
                    self.write(run).await?;
                    return Ok(());
                }
            }
            // Only the target refusing the old credential is evidence of a lockout; no
            // answer proves nothing, so the rollback stays open and this check (with
            // the idempotent rollback before it) is repeated by the next attempt.
            let (passed, inconclusive, evidence) = match run.credential.login(&run.old).await {
                Ok(AuthOutcome::Accepted) => {
                    (true, false, "old credential accepted again".to_owned())
                }
                Ok(refused @ AuthOutcome::Rejected { .. }) => (false, false, refused.evidence()),
                Ok(silent @ AuthOutcome::Unreachable { .. }) => (false, true, silent.evidence()),
                Err(e) => (false, true, format!("inconclusive: {e}")),
            };
            if let Some(error) = run.rotation.error.as_deref() {
                run.rotation.error = Some(rollback_reason(error).to_owned());
            }
            run.rotation.verification.push(Verification {
                check: "old_credential_restored".into(),
                passed,
                evidence: evidence.clone(),
                inconclusive,
                at: now(),
            });
            if inconclusive {
                warn!(evidence = %evidence, "No answer about the old credential after the rollback; the rotation stays rolling back, and the next attempt repeats the rollback and this check.");
                run.rotation.error = Some(format!(
                    "{}{RESTORE_UNPROVEN}{evidence}",
                    run.rotation.error.as_deref().unwrap_or("failed")
                ));
                self.write(run).await?;
                return Ok(());
            }
        }
        state::delete_staged(&*self.state, &run.policy.name, &run.rotation.rotation_id).await?;
        run.rotation.status = Status::RolledBack;
        self.write(run).await?;
        info!("Rotation rolled back; the old credential is current.");
        Ok(())
    }
}

/// What a rotation's error says after its reason when the check that the old
/// credential works again after a rollback got no answer.
const RESTORE_UNPROVEN: &str = "; rolled back, but the old credential could not be checked yet: ";

/// A rolling-back rotation's error without what an earlier inconclusive restore check
/// added to it (each attempt says it afresh).
fn rollback_reason(error: &str) -> &str {
    error
        .split_once(RESTORE_UNPROVEN)
        .map_or(error, |(reason, _)| reason)
}

/// Whether `step`'s "begun" must be journaled before it runs: it changes something
/// a resume or a rollback must know may have changed. Not journaled first:
///
/// - staging a generated value: it only writes rotor's staging copy, at the path the
///   plan record names, which every rollback destroys;
/// - the test login, a revoke that has nothing to revoke, and a verify that only
///   probes the old credential: they change nothing;
/// - `completed`: it destroys the staging copy, which after promote is also the
///   canonical version the journal names (see [`Engine::staged`]).
///
/// Their records are journaled with the next write; a crash before it repeats them.
fn journaled_first(step: Step, run: &Run<'_>) -> bool {
    match step {
        Step::Staged => run.credential.creates_on_target(),
        Step::Tested | Step::Completed => false,
        Step::Revoked => run.credential.revokes_anything(),
        Step::Verified => run.policy.spec.verify.terminate_sessions || run.compromise,
        Step::Planned | Step::Applied | Step::Promoted | Step::Propagated => true,
    }
}

/// Failpoints of the steps whose "done" was just journaled.
fn done_hits(steps: &mut Vec<Step>) {
    for done in steps.drain(..) {
        failpoint::hit(done, Moment::Done);
    }
}
