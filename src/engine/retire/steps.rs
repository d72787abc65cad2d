//! The retirement's steps, each journaled before its side effect: removing the
//! consumers' copies and proving the target refuses the retired credential.

use super::*;
use crate::policy::ConsumerFacts;

impl Engine {
    pub(super) async fn write_retirement(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        run.record.updated_at = now();
        run.version = self.retirements().write(&run.record, run.version).await?;
        Ok(())
    }

    pub(super) async fn drive_retirement(&self, run: &mut Run<'_>) -> Result<(), EngineError> {
        while let Some(step) = run.record.next_step() {
            match run.record.steps.last_mut() {
                Some(rec) if rec.step == step && rec.outcome != StepOutcome::Ok => {
                    rec.outcome = StepOutcome::Begun;
                    rec.attempts += 1;
                    rec.started_at = now();
                    rec.finished_at = None;
                }
                _ => run.record.steps.push(RetireStepRecord {
                    step,
                    outcome: StepOutcome::Begun,
                    started_at: now(),
                    finished_at: None,
                    duration_ms: None,
                    detail: None,
                    attempts: 1,
                }),
            }
            // Journaled before the side effect.
            self.write_retirement(run).await?;
            failpoint::hit_at(step.failpoint(), Moment::Begun);
            let clock = Instant::now();
            let result = self.retire_step_with_retries(step, run).await;
            failpoint::hit_at(step.failpoint(), Moment::Effect);
            let rec = run
                .record
                .steps
                .last_mut()
                .expect("a step record was pushed above");
            rec.finished_at = Some(now());
            rec.duration_ms = Some(clock.elapsed().as_secs_f64() * 1000.0);
            match result {
                Ok(detail) => {
                    rec.outcome = StepOutcome::Ok;
                    rec.detail = Some(detail);
                    run.record.error = None;
                }
                Err(failure) => {
                    rec.outcome = StepOutcome::Failed;
                    rec.detail = Some(failure.message.clone());
                    run.record.error = Some(format!("{}: {}", step.as_str(), failure.message));
                    if failure.fatal {
                        error!(step = step.as_str(), error = %failure.message, "Retirement failed: the retired credential still works.");
                        run.record.state = RetireState::Failed;
                    } else {
                        warn!(step = step.as_str(), error = %failure.message, "Retirement step failed; the next run continues from it.");
                    }
                    self.write_retirement(run).await?;
                    return Ok(());
                }
            }
            self.write_retirement(run).await?;
            failpoint::hit_at(step.failpoint(), Moment::Done);
            info!(step = step.as_str(), "Retirement step done.");
        }
        run.record.state = RetireState::Retired;
        run.record.retired_at = Some(now());
        self.write_retirement(run).await?;
        info!(actor = %run.record.actor, "Policy retired: the credential is refused and the consumers hold nothing.");
        Ok(())
    }

    pub(super) async fn retire_step_with_retries(
        &self,
        step: RetireStep,
        run: &mut Run<'_>,
    ) -> Result<String, Failure> {
        let mut attempt = 0;
        loop {
            match self.retire_step(step, run).await {
                Err(f) if f.transient && attempt < self.config.retries => {
                    let base = self.config.retry_base.as_millis() as u64 * (1 << attempt);
                    let jitter = rand::rng().random_range(0..=base / 2);
                    warn!(step = step.as_str(), attempt, error = %f.message, "Transient failure; retrying.");
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn retire_step(
        &self,
        step: RetireStep,
        run: &mut Run<'_>,
    ) -> Result<String, Failure> {
        match step {
            RetireStep::Disabled => Ok(run.credential.disable(&run.current).await?),
            RetireStep::ConsumersRemoved => self.remove_consumers(run).await,
            RetireStep::Marked => self.mark_canonical(run).await,
            RetireStep::Verified => self.prove_refused(run).await,
        }
    }

    pub(super) async fn remove_consumers(&self, run: &mut Run<'_>) -> Result<String, Failure> {
        let previous = std::mem::take(&mut run.record.consumers);
        let mut records = Vec::with_capacity(run.policy.spec.consumers.len());
        let mut failed = Vec::new();
        let mut transient = true;
        for (i, spec) in run.policy.spec.consumers.iter().enumerate() {
            let consumer = spec.describe();
            let before = previous.get(i).filter(|r| r.consumer == consumer);
            if let Some(done) = before.filter(|r| r.state != RemovalState::Failed) {
                records.push(done.clone());
                continue;
            }
            let attempts = before.map_or(0, |r| r.attempts) + 1;
            match self.consumers.remove(spec, &self.vault).await {
                Ok(o) => records.push(ConsumerRemoval {
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
                    transient &= e.is_transient();
                    let message = crate::error_chain(&e);
                    warn!(consumer = %consumer, kind = e.kind(), error = %message, "Removing from a consumer failed.");
                    failed.push(consumer.clone());
                    records.push(ConsumerRemoval {
                        consumer,
                        state: RemovalState::Failed,
                        attempts,
                        detail: None,
                        error: Some(message),
                    });
                }
            }
        }
        let count = records.len();
        run.record.consumers = records;
        if failed.is_empty() {
            Ok(format!(
                "{count} consumer(s) no longer hold the credential (read back)"
            ))
        } else {
            Err(Failure {
                message: format!(
                    "{} of {count} consumer(s) still hold it: {}",
                    failed.len(),
                    failed.join("; ")
                ),
                transient,
                fatal: false,
            })
        }
    }

    /// Tries the retired credential (and, for `alternating`, the other account's last
    /// known password) against the target: each must be refused.
    pub(super) async fn prove_refused(&self, run: &mut Run<'_>) -> Result<String, Failure> {
        let mut probes = vec![("retired_credential_rejected", run.current.clone())];
        if let Some(other) = run.credential.other_account(&run.current)
            && let Some(value) = self.last_value_of(run, &other).await?
        {
            probes.push(("other_account_rejected", value));
        }
        let mut notes = Vec::new();
        let mut still = Vec::new();
        let mut unproven = Vec::new();
        for (check, value) in probes {
            let outcome = run.credential.login(&value).await?;
            let evidence = outcome.evidence();
            let who = value.expose("username").map(str::to_owned);
            run.record.verification.push(Verification {
                check: check.into(),
                passed: matches!(outcome, AuthOutcome::Rejected { .. }),
                evidence: evidence.clone(),
                inconclusive: matches!(outcome, AuthOutcome::Unreachable { .. }),
                at: now(),
            });
            let label = who.map_or_else(|| check.to_owned(), |u| format!("{check} ({u})"));
            match outcome {
                AuthOutcome::Rejected { .. } => notes.push(format!("{label}: {evidence}")),
                AuthOutcome::Accepted => still.push(label),
                AuthOutcome::Unreachable { reason } => unproven.push(format!("{label}: {reason}")),
            }
        }
        if !still.is_empty() {
            return Err(Failure {
                message: format!(
                    "the retired credential is still accepted by the target ({})",
                    still.join(", ")
                ),
                transient: false,
                fatal: true,
            });
        }
        if !unproven.is_empty() {
            return Err(Failure {
                message: format!(
                    "could not prove the retired credential is refused: {}",
                    unproven.join("; ")
                ),
                transient: true,
                fatal: false,
            });
        }
        Ok(notes.join("; "))
    }

    /// The latest canonical version before the retired one that names `account`.
    pub(super) async fn last_value_of(
        &self,
        run: &Run<'_>,
        account: &str,
    ) -> Result<Option<SecretMap>, Failure> {
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
