//! Retirement (offboarding) of a policy's credential, and enabling it again.
//!
//! `rotor retire` runs four steps in order, each journaled in Vault *before* its side
//! effect in the policy's retirement record (`<state mount>/<prefix>/retired/<policy>`,
//! KV v2, check-and-set, every version kept), so a retirement killed at any point is
//! continued by the next run and never half-applied silently:
//!
//! 1. `disabled`: the credential is disabled on its target ([`Credential::disable`]) and
//!    the sessions the kind can see are ended;
//! 2. `consumers_removed`: what rotor pushed to each consumer is removed and the removal
//!    read back ([`crate::consumers::Consumers::remove`]);
//! 3. `marked`: the canonical copy in Vault gets `custom_metadata`
//!    (`rotor_retired_at`, `rotor_retired_by`, `rotor_retired_reason`,
//!    `rotor_retired_ticket`, `rotor_retired_version`); no version is deleted or
//!    destroyed, so the history stays for audits;
//! 4. `verified`: the last credential is tried against the target and must be refused
//!    with the kind's own error (for `alternating`, each account's last known password).
//!    A credential still accepted fails the retirement loudly (state `failed`; the next
//!    run starts over from step 1).
//!
//! The record is the evidence: actor, reason, ticket, every step with timestamps, the
//! consumers' removals, the target's refusals and the retired value's HMAC
//! fingerprint — never a value. While a record is `retiring`, `retired`, `failed` or
//! `enabling`, [`Engine::rotate`] refuses the policy ([`EngineError::Retired`]).
//!
//! `rotor enable` lifts the account flags the retirement set (postgres `LOGIN`, mysql
//! `ACCOUNT UNLOCK`, redis `on`; [`Credential::reenable`]), runs an ordinary rotation —
//! whose own test and verification prove the new value works and the retired one is
//! still refused, and whose propagation writes the consumers again — then clears the
//! canonical copy's marks and records the policy `enabled`. A rotation that does not
//! reach promote (rolled back) leaves the policy retired: the target is disabled again,
//! since a `single` rollback restores the previous (retired) password.

use std::sync::Arc;

use serde::Serialize;
use tracing::{Instrument, info, info_span};

mod canonical;
mod enable;
mod steps;

use super::{Engine, EngineError, RotationOutcome, now};
use crate::credentials::Credential;
use crate::evidence::{AuthMethod, Event, Requester, VaultIdentity};
use crate::policy::ValidatedPolicy;
use crate::secret::SecretMap;
use crate::state::records::time;
pub use crate::state::records::{
    ConsumerRemoval, Enablement, RemovalState, RetireState, RetireStep, RetireStepRecord,
    Retirement,
};
use crate::state::{self, Key, StateError, Store, VaultStore};
use crate::vault::Vault;

/// Custom-metadata keys rotor sets on a retired policy's canonical path.
pub const RETIRED_METADATA_KEYS: [&str; 5] = [
    "rotor_retired_at",
    "rotor_retired_by",
    "rotor_retired_reason",
    "rotor_retired_ticket",
    "rotor_retired_version",
];

/// Longest custom-metadata value Vault accepts is 512 bytes; reasons are cut shorter
/// there (the record keeps them whole).
const MAX_METADATA_VALUE: usize = 480;

/// How many earlier canonical versions are searched for the other account's last value
/// (`alternating`).
const OTHER_ACCOUNT_LOOKBACK: u64 = 50;

/// Who asks to retire or enable a policy, and why.
#[derive(Debug, Clone, Default)]
pub struct RetireRequest {
    /// Who (user, API identity).
    pub actor: String,
    /// Why (required).
    pub reason: Option<String>,
    /// Ticket (required when the policy's `onDemand.requireTicket` is set).
    pub ticket: Option<String>,
    /// How the requester proved who they are.
    pub authenticated_by: AuthMethod,
    /// The requester's identity as Vault answered it, where they used their own Vault
    /// token (the local CLI).
    pub vault_identity: Option<VaultIdentity>,
}

impl RetireRequest {
    /// Who asked, as the evidence names them.
    pub fn requester(&self) -> Requester<'_> {
        Requester {
            actor: &self.actor,
            authenticated_by: self.authenticated_by,
            vault_identity: self.vault_identity.as_ref(),
        }
    }
}

/// The result of [`Engine::enable`].
#[derive(Debug, Clone, Serialize)]
pub struct EnableOutcome {
    /// The record, `enabled` on success.
    pub record: Retirement,
    /// The rotation that made the credential work again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationOutcome>,
}

impl EnableOutcome {
    /// Enabled, and the rotation completed (or waits only for its grace period).
    pub fn succeeded(&self) -> bool {
        self.record.state == RetireState::Enabled
            && self
                .rotation
                .as_ref()
                .is_some_and(RotationOutcome::succeeded)
    }
}

/// Reads and writes retirement records (check-and-set, like the journal), in rotor's
/// state store ([`crate::state::Key::Retired`]).
#[derive(Debug, Clone)]
pub struct RetireStore {
    store: Arc<dyn Store>,
}

impl RetireStore {
    /// Records in Vault under `<mount>/<prefix>/retired/`.
    pub fn new(vault: Vault, mount: &str, prefix: &str) -> Self {
        RetireStore::with_store(Arc::new(VaultStore::new(vault, mount, prefix)))
    }

    /// Records in `store`.
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        RetireStore { store }
    }

    /// The record's path under the mount.
    pub fn path(&self, policy: &str) -> String {
        self.store.path(Key::Retired(policy))
    }

    /// The policy's record and its KV version (0: never written). A record that does
    /// not decode is [`StateError::Corrupt`], never "not retired".
    pub async fn load(&self, policy: &str) -> Result<(Option<Retirement>, u64), StateError> {
        let key = Key::Retired(policy);
        let found = state::RETIREMENT.read(&*self.store, key).await?;
        Ok(found.map_or((None, 0), |(r, v)| (Some(r), v)))
    }

    /// Writes `record` if the path is still at `version`; returns the new version.
    pub async fn write(&self, record: &Retirement, version: u64) -> Result<u64, StateError> {
        let key = Key::Retired(&record.policy);
        let state = [("state", record.state.as_str())];
        let data = state::RETIREMENT.data(&*self.store, key, record, &state)?;
        Ok(self.store.write(key, &data, Some(version)).await?)
    }
}

/// One retirement run.
struct Run<'a> {
    policy: &'a ValidatedPolicy,
    credential: Credential,
    record: Retirement,
    version: u64,
    current: SecretMap,
}

fn required(
    policy: &ValidatedPolicy,
    action: &'static str,
    request: &RetireRequest,
) -> Result<String, EngineError> {
    let incomplete = |what| EngineError::RetireIncomplete {
        policy: policy.name.clone(),
        action,
        what,
    };
    let reason = request
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| incomplete("a reason"))?;
    if policy.spec.on_demand.require_ticket
        && request
            .ticket
            .as_deref()
            .is_none_or(|t| t.trim().is_empty())
    {
        return Err(incomplete("a ticket"));
    }
    Ok(reason.to_owned())
}

impl Engine {
    /// The store of retirement records.
    pub fn retirements(&self) -> RetireStore {
        RetireStore::with_store(self.state.clone())
    }

    /// The policy's retirement record, in any state (`enabled` included), if any.
    pub async fn retirement(&self, policy: &str) -> Result<Option<Retirement>, EngineError> {
        Ok(self.retirements().load(policy).await?.0)
    }

    /// [`EngineError::Retired`] when the policy is retired (or being retired or enabled).
    pub(super) async fn refuse_retired(&self, policy: &ValidatedPolicy) -> Result<(), EngineError> {
        match self.retirement(&policy.name).await? {
            Some(r) if r.state.is_inactive() => Err(EngineError::Retired {
                policy: policy.name.clone(),
                state: r.state.as_str(),
                since: time::format(&r.started_at),
                actor: r.actor,
                reason: r.reason,
            }),
            _ => Ok(()),
        }
    }

    /// Retires the policy's credential (see the module documentation), or continues a
    /// retirement a crash interrupted. A policy already retired is returned as it is.
    /// The returned record's `state` says how it ended: `retired` is success; `retiring`
    /// (a step failed; the next run continues) and `failed` (the credential is still
    /// accepted) are failures.
    ///
    /// Every record returned is reported ([`Event::PolicyRetired`]).
    pub async fn retire(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<Retirement, EngineError> {
        let record = self.retire_run(policy, &request).await?;
        self.report(&Event::PolicyRetired {
            retirement: &record,
            requester: request.requester(),
        });
        Ok(record)
    }

    /// [`Engine::retire`] without the report.
    async fn retire_run(
        &self,
        policy: &ValidatedPolicy,
        request: &RetireRequest,
    ) -> Result<Retirement, EngineError> {
        let reason = required(policy, "retiring", request)?;
        let span =
            info_span!("retire", policy = %policy.name, kind = policy.spec.credential.kind());
        async move {
            let credential = Credential::prepare(&policy.spec.credential, &self.vault).await?;
            credential.can_disable()?;
            let store = self.retirements();
            let (existing, version) = store.load(&policy.name).await?;
            let (record, version) = match existing {
                Some(r) if r.state == RetireState::Retired => {
                    info!(since = %r.started_at, "The policy is retired already.");
                    return Ok(r);
                }
                Some(mut r) if r.state == RetireState::Retiring => {
                    info!(step = ?r.next_step(), "Continuing an interrupted retirement.");
                    r.runs += 1;
                    (r, version)
                }
                _ => {
                    let record = self
                        .plan_retirement(policy, &credential, request, reason)
                        .await?;
                    let version = store.write(&record, version).await?;
                    (record, version)
                }
            };
            let loc = &policy.spec.vault;
            let current = self
                .vault
                .kv_read_version(&loc.mount, &loc.path, record.canonical_version)
                .await?
                .ok_or_else(|| EngineError::OldValueGone {
                    rotation_id: format!("retirement of {}", policy.name),
                    canonical: record.canonical.clone(),
                    version: record.canonical_version,
                })?
                .data;
            let mut run = Run {
                policy,
                credential,
                record,
                version,
                current,
            };
            self.run_steps(&mut run).await?;
            Ok(run.record)
        }
        .instrument(span)
        .await
    }

    /// A fresh record: finishes a rotation left open first (revoking an old credential
    /// still in its grace period now), reads the canonical version to retire.
    async fn plan_retirement(
        &self,
        policy: &ValidatedPolicy,
        credential: &Credential,
        request: &RetireRequest,
        reason: String,
    ) -> Result<Retirement, EngineError> {
        let finished = self.resume_with(policy, true).await?;
        if let Some(r) = &finished
            && r.status.is_open()
        {
            return Err(EngineError::Pending {
                policy: policy.name.clone(),
                rotation_id: r.rotation_id.clone(),
                status: r.status.as_str(),
                step: r.next_step().map_or("none", super::Step::as_str),
            });
        }
        let loc = &policy.spec.vault;
        let current = self
            .vault
            .kv_read(&loc.mount, &loc.path)
            .await?
            .ok_or_else(|| EngineError::CanonicalMissing {
                mount: loc.mount.clone(),
                path: loc.path.clone(),
                keys: policy.spec.credential.output_keys().join(", "),
            })?;
        let started = now();
        info!(actor = %request.actor, version = current.version, "Retirement planned.");
        Ok(Retirement {
            policy: policy.name.clone(),
            kind: policy.spec.credential.kind().to_owned(),
            strategy: policy.spec.credential.strategy().as_str().to_owned(),
            state: RetireState::Retiring,
            actor: request.actor.clone(),
            reason,
            ticket: request.ticket.clone().filter(|t| !t.trim().is_empty()),
            canonical: format!("{}/{}", loc.mount, loc.path),
            canonical_version: current.version,
            fingerprint: Some(self.fingerprints.fingerprint_map(&current.data)),
            accounts: credential.accounts(),
            finished_rotation: finished.map(|r| r.rotation_id),
            started_at: started,
            retired_at: None,
            updated_at: started,
            runs: 1,
            steps: Vec::new(),
            consumers: Vec::new(),
            verification: Vec::new(),
            error: None,
            enable: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::canonical::cut;
    use super::*;
    use crate::engine::{StepOutcome, Trigger};
    use crate::vault::VaultError;
    use serde_json::Value;

    fn record(steps: &[(RetireStep, StepOutcome)]) -> Retirement {
        Retirement {
            policy: "p".into(),
            kind: "postgres".into(),
            strategy: "single".into(),
            state: RetireState::Retiring,
            actor: "a".into(),
            reason: "r".into(),
            ticket: None,
            canonical: "secret/x".into(),
            canonical_version: 3,
            fingerprint: None,
            accounts: Vec::new(),
            finished_rotation: None,
            started_at: chrono::DateTime::UNIX_EPOCH,
            retired_at: None,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            runs: 1,
            steps: steps
                .iter()
                .map(|(step, outcome)| RetireStepRecord {
                    step: *step,
                    outcome: *outcome,
                    started_at: chrono::DateTime::UNIX_EPOCH,
                    finished_at: None,
                    duration_ms: None,
                    detail: None,
                    attempts: 1,
                })
                .collect(),
            consumers: Vec::new(),
            verification: Vec::new(),
            error: None,
            enable: None,
        }
    }

    #[test]
    fn next_step_repeats_a_begun_or_failed_step_and_moves_past_done_ones() {
        use RetireStep::*;
        use StepOutcome::*;
        assert_eq!(record(&[]).next_step(), Some(Disabled));
        assert_eq!(record(&[(Disabled, Begun)]).next_step(), Some(Disabled));
        assert_eq!(
            record(&[(Disabled, Ok)]).next_step(),
            Some(ConsumersRemoved)
        );
        assert_eq!(
            record(&[(Disabled, Ok), (ConsumersRemoved, Failed)]).next_step(),
            Some(ConsumersRemoved)
        );
        assert_eq!(
            record(&[
                (Disabled, Ok),
                (ConsumersRemoved, Ok),
                (Marked, Ok),
                (Verified, Ok)
            ])
            .next_step(),
            None
        );
    }

    #[test]
    fn only_enabled_is_active() {
        for s in [
            RetireState::Retiring,
            RetireState::Retired,
            RetireState::Failed,
            RetireState::Enabling,
        ] {
            assert!(s.is_inactive(), "{}", s.as_str());
        }
        assert!(!RetireState::Enabled.is_inactive());
    }

    #[test]
    fn metadata_values_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(400);
        let c = cut(&long);
        assert!(c.len() <= MAX_METADATA_VALUE + "…".len());
        assert!(c.ends_with('…'));
    }

    #[tokio::test]
    async fn a_corrupt_retirement_record_is_an_error_not_an_active_policy() {
        use crate::state::memory::MemoryStore;
        use serde_json::json;
        let store = Arc::new(MemoryStore::new());
        let records = RetireStore::with_store(store.clone());
        assert!(matches!(records.load("p").await, Ok((None, 0))));
        for data in [
            json!({"state": "retired"}),
            json!({"retirement": {"policy": "p", "state": "canary-state"}, "state": "retired"}),
        ] {
            let Value::Object(data) = data else {
                unreachable!()
            };
            store.write(Key::Retired("p"), &data, None).await.unwrap();
            let e = records.load("p").await.expect_err("corrupt");
            let text = e.to_string();
            assert!(
                text.contains("retirement record at secret/rotor/retired/p"),
                "{text}"
            );
            assert!(!text.contains("canary"), "{text}");
            assert_eq!(EngineError::from(e).kind(), "state_corrupt");
        }
    }

    #[tokio::test]
    async fn retirement_records_round_trip_with_check_and_set() {
        use crate::state::memory::MemoryStore;
        let records = RetireStore::with_store(Arc::new(MemoryStore::new()));
        let r = record(&[(RetireStep::Disabled, StepOutcome::Ok)]);
        let v = records.write(&r, 0).await.expect("create");
        assert!(matches!(
            records.write(&r, 0).await,
            Err(StateError::Vault(VaultError::CasConflict { .. }))
        ));
        let (back, version) = records.load(&r.policy).await.expect("load");
        assert_eq!((back.expect("record").steps.len(), version), (1, v));
    }

    #[tokio::test]
    async fn over_the_memory_store_a_retired_or_unreadable_record_refuses_rotation() {
        use crate::consumers::Consumers;
        use crate::engine::{EngineConfig, RotationRequest};
        use crate::state::memory::MemoryStore;
        use crate::vault::VaultConfig;
        // No Vault answers here: the engine's own records are in memory, and the
        // refusal comes before anything needs the canonical copy.
        let config = VaultConfig {
            addr: "http://127.0.0.1:9".into(),
            token: Some(crate::secret::SecretString::from("unused".to_owned())),
            ..VaultConfig::from_env()
        };
        let vault = Vault::connect(&config).expect("client");
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::with_store(
            vault,
            store.clone(),
            EngineConfig::default(),
            Consumers::new(),
        )
        .await
        .expect("an engine over memory");
        let text = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: p\nspec:\n  credential:\n    type: postgres\n    connection:\n      host: db\n      adminFrom: {vault: {path: admins/pg}}\n    username: app\n  vault:\n    path: apps/p\n";
        let set = crate::policy::load_str(std::path::Path::new("p.yaml"), text).expect("policy");
        let policy = set.get("p").expect("p");
        let request = RotationRequest {
            trigger: Trigger::Schedule,
            actor: "scheduler".into(),
            ..Default::default()
        };
        let mut retired = record(&[]);
        retired.state = RetireState::Retired;
        engine
            .retirements()
            .write(&retired, 0)
            .await
            .expect("write");
        let e = engine
            .rotate(policy, request.clone())
            .await
            .expect_err("retired");
        assert_eq!(e.kind(), "retired", "{e}");
        let Value::Object(corrupt) = serde_json::json!({"retirement": {"policy": "p"}}) else {
            unreachable!()
        };
        store
            .write(Key::Retired("p"), &corrupt, None)
            .await
            .unwrap();
        let e = engine.rotate(policy, request).await.expect_err("corrupt");
        assert_eq!(e.kind(), "state_corrupt", "{e}");
        assert!(e.to_string().contains("secret/rotor/retired/p"), "{e}");
    }
}
