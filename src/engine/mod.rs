//! The rotation state machine (ARCHITECTURE.md): staged → applied → tested →
//! promoted → propagated → revoked → verified → completed. Every step is journaled
//! in Vault before its side effect; a failure before promote rolls the target back to
//! the old value, a failure after it only ever rolls forward.

pub mod cascade;
mod error;
pub mod failpoint;
pub mod history;
pub mod journal;
pub mod retire;
mod runner;
mod stage;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::consumers::Consumers;
use crate::credentials::Credential;
use crate::evidence::{AuthMethod, Event, Requester, Sink, VaultIdentity};
use crate::policy::ValidatedPolicy;
use crate::secret::{Fingerprinter, SecretMap};
use crate::state::{self, Store, VaultStore};
use crate::vault::Vault;

pub use self::error::EngineError;
pub use self::journal::{
    Check, ConsumerRecord, ConsumerState, Journal, JournalError, Rotation, RotationId, Status,
    Step, StepOutcome, StepRecord, Trigger, Verification,
};
pub use self::retire::{EnableOutcome, RemovalState, RetireRequest, RetireState, Retirement};
use self::runner::StepFailure;

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

/// Who asks for a rotation, a retirement or an enable, and how they proved it.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// Who (user name, API identity, `scheduler`).
    pub actor: String,
    /// How the requester proved who they are (written in the `rotation_requested`
    /// and retirement records).
    pub authenticated_by: AuthMethod,
    /// The requester's identity as Vault answered it, where they used their own Vault
    /// token (the local CLI).
    pub vault_identity: Option<VaultIdentity>,
}

impl Asker {
    /// An asker known only by name, who said nothing of how they proved it (a library
    /// caller).
    pub fn named(actor: impl Into<String>) -> Self {
        Asker {
            actor: actor.into(),
            ..Asker::default()
        }
    }

    /// The agent's scheduler (cron, `maxAge`, renewal): no person asked.
    pub fn scheduler() -> Self {
        Asker {
            actor: "scheduler".into(),
            authenticated_by: AuthMethod::Schedule,
            vault_identity: None,
        }
    }

    /// Who asked, as the evidence names them.
    pub fn requester(&self) -> Requester<'_> {
        Requester {
            actor: &self.actor,
            authenticated_by: self.authenticated_by,
            vault_identity: self.vault_identity.as_ref(),
        }
    }
}

/// Who asked for a rotation, and why. `Default` is an on-demand request by nobody,
/// for `..Default::default()` in literals.
#[derive(Debug, Clone)]
pub struct RotationRequest {
    /// What started it.
    pub trigger: Trigger,
    /// Who asked.
    pub asker: Asker,
    /// The reason the requester gave (free text, audited).
    pub reason: Option<String>,
    /// Ticket.
    pub ticket: Option<String>,
    /// Who approved it, where the policy requires approval (`spec.onDemand.approval`).
    pub approvers: Vec<String>,
    /// A compromise by a break-glass identity that skipped the required approval.
    pub break_glass: bool,
    /// The approval request it carries out, if any.
    pub approval_request: Option<String>,
}

impl Default for RotationRequest {
    fn default() -> Self {
        RotationRequest {
            trigger: Trigger::OnDemand,
            asker: Asker::default(),
            reason: None,
            ticket: None,
            approvers: Vec::new(),
            break_glass: false,
            approval_request: None,
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

fn now() -> chrono::DateTime<chrono::Utc> {
    crate::state::records::time::now()
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
                requester: request.asker.requester(),
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
                until: r
                    .revoke_after
                    .map(|t| crate::state::records::time::format(&t))
                    .unwrap_or_default(),
            });
        }
        refuse_open(policy, resumed.as_ref())?;

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

        let rotation = self.plan(policy, request, current.version, &current.data);
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

    /// The journal record of a new rotation of `policy` under `request`, planned from
    /// canonical `version` holding `old` (its fingerprint only is kept).
    fn plan(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
        version: u64,
        old: &SecretMap,
    ) -> Rotation {
        let vault_loc = &policy.spec.vault;
        let rotation_id = RotationId::generate();
        let started = now();
        Rotation {
            staging: self.state.location(state::Key::Staging {
                policy: &policy.name,
                rotation: &rotation_id,
            }),
            rotation_id,
            policy: policy.name.clone(),
            kind: policy.spec.credential.kind().to_owned(),
            strategy: policy.spec.credential.strategy().as_str().to_owned(),
            trigger: request.trigger,
            actor: request.asker.actor,
            reason: request.reason,
            ticket: request.ticket,
            approvers: request.approvers,
            break_glass: request.break_glass,
            approval_request: request.approval_request,
            status: Status::Open,
            canonical: format!("{}/{}", vault_loc.mount, vault_loc.path),
            canonical_version: version,
            promoted_version: None,
            old_fingerprint: Some(self.fingerprints.fingerprint_map(old)),
            new_fingerprint: None,
            steps: vec![StepRecord {
                step: Step::Planned,
                outcome: StepOutcome::Ok,
                started_at: started,
                finished_at: Some(started),
                duration_ms: None,
                detail: Some(format!("canonical version {version}")),
                attempts: 1,
            }],
            verification: Vec::new(),
            unanswered: false,
            consumers: Vec::new(),
            revoke_after: None,
            sessions_terminated: 0,
            error: None,
            started_at: started,
            updated_at: started,
            resumed: false,
            was_waiting: false,
        }
    }
}

/// `Pending` when the rotation resumed before a new run (`resumed`) is still open: a
/// rotation or retirement waits for it.
fn refuse_open(policy: &ValidatedPolicy, resumed: Option<&Rotation>) -> Result<(), EngineError> {
    match resumed {
        Some(r) if r.status.is_open() => Err(EngineError::Pending {
            policy: policy.name.clone(),
            rotation_id: r.rotation_id.clone(),
            status: r.status.as_str(),
            step: r.next_step().map_or("none", Step::as_str),
        }),
        _ => Ok(()),
    }
}
