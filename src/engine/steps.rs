//! A rotation's run of the step runner ([`super::runner`]): which step comes next,
//! what each does, and what a failure means (a rollback before promote, a rotation
//! left open or failed after it).

use std::time::Duration;

use tracing::{Instrument, error, info, info_span, warn};

use super::runner::StepRun;
use super::{Engine, Known, Run, failpoint, now};
use crate::credentials::{AuthOutcome, Credential, CredentialError};
use crate::engine::error::EngineError;
use crate::engine::failpoint::Moment;
use crate::engine::journal::{Check, Rotation, Status, Step, StepOutcome, Trigger, Verification};
use crate::engine::runner::{StepFailure, StepResult};
use crate::evidence::{Event, Subject};
use crate::policy::ValidatedPolicy;
use crate::state;

impl Engine {
    /// Drives `rotation` from wherever its journal says it is to an end (or to a
    /// pending state after promote).
    pub(super) async fn drive(
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
                            rotation_id: rotation.rotation_id.to_string(),
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
                self.run_steps(&mut run).await?;
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

    pub(super) async fn write(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        run.rotation.updated_at = now();
        run.version = self.journal.write(&run.rotation, run.version).await?;
        Ok(())
    }

    /// Whether the old credential's grace period is over (waiting for it in-process
    /// when the rest is within `grace_wait`).
    pub(super) async fn grace_over(&self, run: &Run<'_>) -> bool {
        if run.end_grace || run.credential.strategy() == crate::policy::Strategy::Single {
            return true;
        }
        let Some(deadline) = run.rotation.revoke_after else {
            return true;
        };
        let remaining = (deadline - chrono::Utc::now())
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

    pub(super) async fn execute(
        &self,
        step: Step,
        run: &mut Run<'_>,
    ) -> Result<StepResult, StepFailure> {
        match step {
            Step::Planned => Ok(StepResult::Ok("planned".into())),
            Step::Staged => self.stage(run).await,
            Step::Applied => {
                let new = self.staged(run).await?;
                let detail = run.credential.apply(&run.old, &new).await?;
                Ok(StepResult::done_or_skipped(
                    detail,
                    "the target issued the new credential when it was staged",
                ))
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
                let detail = run.credential.revoke(&run.old, &new).await?;
                Ok(StepResult::done_or_skipped(
                    detail,
                    "nothing to revoke: the strategy changed the credential in place",
                ))
            }
            Step::Verified => self.verify(run).await,
            Step::Completed => {
                state::delete_staged(&*self.state, &run.policy.name, &run.rotation.rotation_id)
                    .await?;
                Ok(StepResult::Ok("staging value destroyed".into()))
            }
        }
    }

    pub(super) async fn rollback(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
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
            let check = Verification {
                check: Check::OldCredentialRestored,
                passed,
                evidence: evidence.clone(),
                inconclusive,
                at: now(),
            };
            self.report(&Event::Verified {
                subject: Subject::Rotation(&run.rotation),
                check: &check,
            });
            run.rotation.verification.push(check);
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
pub(super) const RESTORE_UNPROVEN: &str =
    "; rolled back, but the old credential could not be checked yet: ";

/// A rolling-back rotation's error without what an earlier inconclusive restore check
/// added to it (each attempt says it afresh).
pub(super) fn rollback_reason(error: &str) -> &str {
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
pub(super) fn journaled_first(step: Step, run: &Run<'_>) -> bool {
    match step {
        Step::Staged => run.credential.creates_on_target(),
        Step::Tested | Step::Completed => false,
        Step::Revoked => run.credential.revokes_anything(),
        Step::Verified => run.policy.spec.verify.terminate_sessions || run.compromise,
        Step::Planned | Step::Applied | Step::Promoted | Step::Propagated => true,
    }
}

impl StepRun for Run<'_> {
    type Record = Rotation;

    fn record(&mut self) -> &mut Rotation {
        &mut self.rotation
    }

    fn retried(step: Step) -> bool {
        // Before promote a failure rolls back at once.
        !step.before_promote()
    }

    fn journaled_first(&self, step: Step) -> bool {
        journaled_first(step, self)
    }

    fn may_wait(&self, step: Step) -> bool {
        step == Step::Revoked
            && !(self.end_grace || self.credential.strategy() == crate::policy::Strategy::Single)
    }

    async fn ready(&self, engine: &Engine, step: Step) -> bool {
        if step != Step::Revoked || engine.grace_over(self).await {
            return true;
        }
        info!(
            revoke_after = self
                .rotation
                .revoke_after
                .map(|t| crate::state::records::time::format(&t)),
            "The old credential stays valid for its grace period; the rotation waits."
        );
        false
    }

    async fn write(&mut self, engine: &Engine) -> Result<(), EngineError> {
        engine.write(self).await
    }

    async fn execute(&mut self, engine: &Engine, step: Step) -> Result<StepResult, StepFailure> {
        engine.execute(step, self).await
    }

    fn succeeded(&mut self, step: Step, skipped: bool) {
        if !skipped {
            // A step retried to success clears the failure it left earlier.
            self.rotation.error = None;
            self.rotation.unanswered = false;
        }
        if step == Step::Completed {
            self.rotation.status = Status::Completed;
        }
        if step == Step::Propagated && self.rotation.revoke_after.is_none() {
            let grace = if self.compromise {
                Duration::ZERO
            } else {
                self.policy.spec.credential.grace()
            };
            let deadline = crate::schedule::saturating_after(now(), grace);
            self.rotation.revoke_after = Some(deadline);
        }
    }

    async fn failed(
        &mut self,
        engine: &Engine,
        step: Step,
        failure: StepFailure,
    ) -> Result<(), EngineError> {
        self.rotation.error = Some(format!("{step}: {}", failure.message));
        self.rotation.unanswered = failure.unanswered;
        if step.before_promote() {
            warn!(step = %step, error = %failure.message, "Step failed before promote; rolling back.");
            self.rotation.status = Status::RollingBack;
            engine.write(self).await?;
            return engine.rollback(self).await;
        }
        if failure.fatal {
            error!(step = %step, error = %failure.message, "Rotation failed after promote; needs attention.");
            self.rotation.status = Status::Failed;
        } else {
            warn!(step = %step, error = %failure.message, "Step failed after promote; the rotation stays open and will be retried.");
            // Leave the step as begun so the next run retries it.
            if let Some(rec) = self.rotation.steps.last_mut() {
                rec.outcome = StepOutcome::Begun;
            }
        }
        engine.write(self).await
    }
}
