//! A retirement's run of the step runner ([`super::super::runner`]): its steps, each
//! journaled before its side effect — removing the consumers' copies and proving the
//! target refuses the retired credential.

use tracing::{error, info, warn};

use super::{OTHER_ACCOUNT_LOOKBACK, Run};
use crate::credentials::AuthOutcome;
use crate::engine::runner::{ConsumerEntry, StepResult, each_consumer};
use crate::engine::runner::{StepFailure, StepRun, refusal_check};
use crate::engine::{Check, Engine, EngineError, now};
use crate::evidence::Event;
use crate::evidence::Subject;
use crate::secret::SecretMap;
use crate::state::records::{ConsumerRemoval, RemovalState, RetireState, RetireStep, Retirement};

impl ConsumerEntry for ConsumerRemoval {
    fn progress(&self) -> (&str, u32, bool) {
        (
            &self.consumer,
            self.attempts,
            self.state != RemovalState::Failed,
        )
    }
}

impl StepRun for Run<'_> {
    type Record = Retirement;

    fn record(&mut self) -> &mut Retirement {
        &mut self.record
    }

    async fn write(&mut self, engine: &Engine) -> Result<(), EngineError> {
        self.record.updated_at = now();
        self.version = engine
            .retirements()
            .write(&self.record, self.version)
            .await?;
        Ok(())
    }

    async fn execute(
        &mut self,
        engine: &Engine,
        step: RetireStep,
    ) -> Result<StepResult, StepFailure> {
        let detail = match step {
            RetireStep::Disabled => self.credential.disable(&self.current).await?,
            RetireStep::ConsumersRemoved => engine.remove_consumers(self).await?,
            RetireStep::Marked => engine.mark_canonical(self).await?,
            RetireStep::Verified => engine.prove_refused(self).await?,
        };
        Ok(StepResult::Ok(detail))
    }

    fn succeeded(&mut self, _step: RetireStep, _skipped: bool) {
        self.record.error = None;
    }

    async fn failed(
        &mut self,
        engine: &Engine,
        step: RetireStep,
        failure: StepFailure,
    ) -> Result<(), EngineError> {
        self.record.error = Some(format!("{}: {}", step.as_str(), failure.message));
        if failure.fatal {
            error!(step = step.as_str(), error = %failure.message, "Retirement failed: the retired credential still works.");
            self.record.state = RetireState::Failed;
        } else {
            warn!(step = step.as_str(), error = %failure.message, "Retirement step failed; the next run continues from it.");
        }
        self.write(engine).await
    }

    async fn finished(&mut self, engine: &Engine) -> Result<(), EngineError> {
        self.record.state = RetireState::Retired;
        self.record.retired_at = Some(now());
        self.write(engine).await?;
        info!(actor = %self.record.actor, "Policy retired: the credential is refused and the consumers hold nothing.");
        Ok(())
    }
}

impl Engine {
    pub(super) async fn remove_consumers(&self, run: &mut Run<'_>) -> Result<String, StepFailure> {
        let previous = std::mem::take(&mut run.record.consumers);
        let specs = &run.policy.spec.consumers;
        let mut done = each_consumer(specs, previous, |spec, consumer, attempts| async move {
            match self.consumers.remove(spec, &self.vault).await {
                Ok(o) => Ok(ConsumerRemoval {
                    consumer,
                    state: if o.removed {
                        RemovalState::Removed
                    } else {
                        RemovalState::Absent
                    },
                    attempts,
                    detail: Some(o.detail),
                    error: None,
                }),
                Err(e) => {
                    let message = crate::error_chain(&e);
                    warn!(consumer = %consumer, kind = e.kind(), error = %message, "Removing from a consumer failed.");
                    let removal = ConsumerRemoval {
                        consumer,
                        state: RemovalState::Failed,
                        attempts,
                        detail: None,
                        error: Some(message),
                    };
                    Err((removal, e.is_transient()))
                }
            }
        })
        .await;
        let ok = format!(
            "{} consumer(s) no longer hold the credential (read back)",
            done.entries.len()
        );
        // A failed removal may have cleared rotor's keys and then been refused the
        // Secret's delete: say what failed, not that the consumer still holds it.
        done.failed = done
            .entries
            .iter()
            .filter(|r| r.state == RemovalState::Failed)
            .map(|r| match &r.error {
                Some(error) => format!("{} ({error})", r.consumer),
                None => r.consumer.clone(),
            })
            .collect();
        let result = done.result(ok, "failed removal");
        run.record.consumers = done.entries;
        result
    }

    /// Tries the retired credential (and, for `alternating`, the other account's last
    /// known password) against the target: each must be refused.
    pub(super) async fn prove_refused(&self, run: &mut Run<'_>) -> Result<String, StepFailure> {
        let mut probes = vec![(Check::RetiredCredentialRejected, run.current.clone())];
        if let Some(other) = run.credential.other_account(&run.current)
            && let Some(value) = self.last_value_of(run, &other).await?
        {
            probes.push((Check::OtherAccountRejected, value));
        }
        let mut notes = Vec::new();
        let mut still = Vec::new();
        let mut unproven = Vec::new();
        for (check, value) in probes {
            let outcome = run.credential.login(&value).await?;
            let evidence = outcome.evidence();
            let who = value.expose("username").map(str::to_owned);
            let verification = refusal_check(check, &outcome);
            self.report(&Event::Verified {
                subject: Subject::Retirement(&run.record),
                check: &verification,
            });
            run.record.verification.push(verification);
            let label = who.map_or_else(|| check.to_string(), |u| format!("{check} ({u})"));
            match outcome {
                AuthOutcome::Rejected { .. } => notes.push(format!("{label}: {evidence}")),
                AuthOutcome::Accepted => still.push(label),
                AuthOutcome::Unreachable { reason } => unproven.push(format!("{label}: {reason}")),
            }
        }
        if !still.is_empty() {
            return Err(StepFailure::fatal(format!(
                "the retired credential is still accepted by the target ({})",
                still.join(", ")
            )));
        }
        if !unproven.is_empty() {
            return Err(StepFailure::retryable(
                format!(
                    "could not prove the retired credential is refused: {}",
                    unproven.join("; ")
                ),
                true,
            ));
        }
        Ok(notes.join("; "))
    }

    /// The latest canonical version before the retired one that names `account`.
    pub(super) async fn last_value_of(
        &self,
        run: &Run<'_>,
        account: &str,
    ) -> Result<Option<SecretMap>, StepFailure> {
        let loc = &run.policy.spec.vault;
        let newest = run.record.canonical_version;
        for v in (newest.saturating_sub(OTHER_ACCOUNT_LOOKBACK).max(1)..newest).rev() {
            if let Some(entry) = self.vault.kv_read_version(&loc.mount, &loc.path, v).await?
                && entry.data.expose("username") == Some(account)
            {
                return Ok(Some(entry.data));
            }
        }
        info!(
            account,
            "No earlier canonical version names the other account; its password was never handed out."
        );
        Ok(None)
    }
}
