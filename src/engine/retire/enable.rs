//! Enabling a retired policy again: the account flags, a rotation to a new credential
//! that works, and the canonical copy's marks cleared.

use tracing::{Instrument, error, info, info_span};

use super::{EnableOutcome, RetireRequest, required};
use crate::credentials::Credential;
use crate::engine::failpoint::Moment;
use crate::engine::{
    Engine, EngineError, RotationOutcome, RotationRequest, Trigger, failpoint, now,
};
use crate::evidence::Event;
use crate::policy::ValidatedPolicy;
use crate::state::records::{Enablement, RetireState, Retirement};

impl Engine {
    /// Enables a retired policy again: lifts the account flags, runs a rotation (whose
    /// test and verification prove the new value works and the retired one is still
    /// refused, and whose propagation writes the consumers again), clears the canonical
    /// copy's marks and records `enabled`. A rotation that does not reach promote leaves
    /// the policy retired (the target is disabled again). Continues an interrupted
    /// enable, reusing a rotation it already promoted.
    ///
    /// The rotation it runs is reported ([`Event::RotationRequested`]) before the
    /// target is changed: when that cannot be recorded nothing is done. Every record
    /// returned is reported ([`Event::PolicyEnabled`]).
    pub async fn enable(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        let outcome = self.enable_run(policy, &request).await?;
        self.report(&Event::PolicyEnabled {
            retirement: &outcome.record,
            requester: request.asker.requester(),
        });
        Ok(outcome)
    }

    /// [`Engine::enable`] without the report of its end.
    pub(super) async fn enable_run(
        &self,
        policy: &ValidatedPolicy,
        request: &RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        let reason = required(policy, "enabling", request)?;
        let span =
            info_span!("enable", policy = %policy.name, kind = policy.spec.credential.kind());
        async move {
            let store = self.retirements();
            let (existing, mut version) = store.load(&policy.name).await?;
            let Some(mut record) = existing.filter(|r| r.state.is_inactive()) else {
                return Err(EngineError::NotRetired {
                    policy: policy.name.clone(),
                });
            };
            let rotation = RotationRequest {
                trigger: Trigger::OnDemand,
                asker: request.asker.clone(),
                reason: Some(format!("enable after retirement: {reason}")),
                ticket: request.ticket.clone(),
                ..Default::default()
            };
            self.announce(policy, &rotation, rotation.reason.as_deref())?;
            let credential = Credential::prepare(&policy.spec.credential, &self.vault).await?;
            credential.can_disable()?;
            if record.state != RetireState::Enabling || record.enable.is_none() {
                record.state = RetireState::Enabling;
                record.enable = Some(Enablement {
                    actor: request.asker.actor.clone(),
                    reason: reason.clone(),
                    ticket: request.ticket.clone().filter(|t| !t.trim().is_empty()),
                    started_at: now(),
                    finished_at: None,
                    accounts: None,
                    rotation_id: None,
                    error: None,
                });
                record.updated_at = now();
                version = store.write(&record, version).await?;
            }
            let started = record
                .enable
                .as_ref()
                .map(|e| e.started_at)
                .unwrap_or_default();
            failpoint::hit_at("enable", Moment::Begun);

            // The account flags first; no password works until the rotation sets one.
            match credential.reenable().await {
                Ok(accounts) => {
                    if let Some(e) = record.enable.as_mut() {
                        e.accounts = accounts;
                    }
                }
                Err(e) => {
                    let text = crate::error_chain(&e);
                    self.enable_failed(policy, &credential, &mut record, &mut version, text)
                        .await?;
                    return Ok(EnableOutcome {
                        record,
                        rotation: None,
                    });
                }
            }

            let outcome = match self.enable_rotation(policy, started, rotation).await? {
                Ok(o) => o,
                Err(e) => {
                    let text = crate::error_chain(&e);
                    self.enable_failed(policy, &credential, &mut record, &mut version, text)
                        .await?;
                    return Err(e);
                }
            };
            let rotation = outcome.rotation.as_ref();
            if let Some(e) = record.enable.as_mut() {
                e.rotation_id = rotation.map(|r| r.rotation_id.clone());
            }
            if rotation.is_none_or(|r| r.promoted_version.is_none()) {
                let why = rotation
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "the rotation did not reach promote".into());
                self.enable_failed(policy, &credential, &mut record, &mut version, why)
                    .await?;
                return Ok(EnableOutcome {
                    record,
                    rotation: Some(outcome),
                });
            }
            self.unmark_canonical(policy).await?;
            record.state = RetireState::Enabled;
            record.error = None;
            if let Some(e) = record.enable.as_mut() {
                e.finished_at = Some(now());
                e.error = None;
            }
            record.updated_at = now();
            store.write(&record, version).await?;
            info!(actor = %request.asker.actor, "Policy enabled again; the new credential works.");
            Ok(EnableOutcome {
                record,
                rotation: Some(outcome),
            })
        }
        .instrument(span)
        .await
    }

    /// The rotation an enable that started at `started` runs: one it already promoted
    /// before a crash is reused (finished first if still open); otherwise `request`.
    /// The inner error is the new rotation's (the enable then fails and disables the
    /// target again); the outer one, reading the journal or finishing the promoted
    /// rotation, leaves the enable to be continued.
    pub(super) async fn enable_rotation(
        &self,
        policy: &ValidatedPolicy,
        started: chrono::DateTime<chrono::Utc>,
        request: RotationRequest,
    ) -> Result<Result<RotationOutcome, EngineError>, EngineError> {
        let (last, _) = self.journal.load(&policy.name).await?;
        let reused = last.filter(|r| r.started_at >= started && r.promoted_version.is_some());
        Ok(match reused {
            Some(r) if r.status.is_open() => Ok(RotationOutcome {
                resumed: None,
                rotation: Some(self.resume(policy).await?.unwrap_or(r)),
            }),
            Some(r) => Ok(RotationOutcome {
                resumed: None,
                rotation: Some(r),
            }),
            None => self.rotate_unchecked(policy, request).await,
        })
    }

    /// An enable that did not reach a working credential: the target is disabled again
    /// (a `single` rollback restored the retired password) and the policy stays retired.
    pub(super) async fn enable_failed(
        &self,
        policy: &ValidatedPolicy,
        credential: &Credential,
        record: &mut Retirement,
        version: &mut u64,
        why: String,
    ) -> Result<(), EngineError> {
        error!(error = %why, "Enabling failed; the policy stays retired.");
        let loc = &policy.spec.vault;
        let mut note = why;
        match self.vault.kv_read(&loc.mount, &loc.path).await? {
            Some(current) => {
                if let Err(e) = credential.disable(&current.data).await {
                    let e = crate::error_chain(&e);
                    error!(error = %e, "Disabling the credential again failed; retire the policy again.");
                    note = format!("{note}; disabling it again failed: {e}");
                }
            }
            None => note = format!("{note}; the canonical copy is gone"),
        }
        record.state = RetireState::Retired;
        if let Some(e) = record.enable.as_mut() {
            e.error = Some(note.clone());
        }
        record.error = Some(format!("enable: {note}"));
        record.updated_at = now();
        *version = self.retirements().write(record, *version).await?;
        Ok(())
    }
}
