//! The steps themselves: staging the new value, promoting it, propagating it to the
//! consumers and proving the old one is rejected.

use tracing::warn;

use super::runner::{ConsumerEntry, each_consumer, refusal_check};
use super::{Engine, Run, history};
use crate::credentials::AuthOutcome;
use crate::engine::journal::{Check, ConsumerRecord, ConsumerState, Rotation, Step};
use crate::engine::runner::{StepFailure, StepResult};
use crate::evidence::{Event, Subject};
use crate::policy::ValidatedPolicy;
use crate::secret::SecretMap;
use crate::state;
use crate::vault::VaultError;

impl Engine {
    /// The staged value: from memory, else from the staging path, else (once
    /// promoted: `completed` destroys the staging copy before it is journaled) from
    /// the canonical version it was promoted to.
    pub(super) async fn staged(&self, run: &mut Run<'_>) -> Result<SecretMap, StepFailure> {
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
    pub(super) async fn stage(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        // A rotation planned by this run has a new id, so nothing can be staged for it
        // yet (a racing writer shows up as a check-and-set conflict below).
        let resumed = run.rotation.resumed;
        self.stage_checked(run, resumed).await
    }

    /// [`Engine::stage`]; `look` first reads the staging path for a value staged before.
    pub(super) async fn stage_checked(
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

    pub(super) async fn promote(
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

    pub(super) async fn propagate(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
        let new = self.staged(run).await?;
        let previous = std::mem::take(&mut run.rotation.consumers);
        let (new, rotation, specs) = (&new, &run.rotation, &run.policy.spec.consumers);
        let done = each_consumer(specs, previous, |spec, consumer, attempts| async move {
            let pushed = self
                .consumers
                .push(spec, new, &self.fingerprints, &self.vault)
                .await;
            match pushed {
                Ok(o) => {
                    let state = if o.verified {
                        ConsumerState::Verified
                    } else {
                        ConsumerState::Pushed
                    };
                    let record = ConsumerRecord {
                        consumer,
                        state,
                        attempts,
                        changed: o.changed,
                        restarted: o.restarted,
                        error: None,
                    };
                    self.report(&Event::ConsumerPushed {
                        rotation,
                        consumer: &record,
                    });
                    Ok(record)
                }
                Err(e) => {
                    let error = crate::error_chain(&e);
                    warn!(consumer = %consumer, kind = e.kind(), attempts, error = %error, "Consumer update failed; it stays pending.");
                    let record = ConsumerRecord {
                        consumer,
                        state: ConsumerState::Pending,
                        attempts,
                        changed: false,
                        restarted: Vec::new(),
                        error: Some(error),
                    };
                    self.report(&Event::ConsumerPending {
                        rotation,
                        consumer: &record,
                    });
                    Err((record, e.is_transient()))
                }
            }
        })
        .await;
        let ok = format!("{} consumer(s) updated and read back", done.entries.len());
        let result = done.result(ok, "pending");
        run.rotation.consumers = done.entries;
        result.map(StepResult::Ok)
    }

    pub(super) async fn verify(&self, run: &mut Run<'_>) -> Result<StepResult, StepFailure> {
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
        let check = refusal_check(Check::OldCredentialRejected, &outcome);
        self.report(&Event::Verified {
            subject: Subject::Rotation(&run.rotation),
            check: &check,
        });
        run.rotation.verification.push(check);
        match outcome {
            AuthOutcome::Rejected { .. } => {
                notes.push(format!("old credential {}", outcome.evidence()));
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
}

impl ConsumerEntry for ConsumerRecord {
    fn progress(&self) -> (&str, u32, bool) {
        (
            &self.consumer,
            self.attempts,
            self.state != ConsumerState::Pending,
        )
    }
}
