//! The worker: runs one queued job (a rotation or a sync), catches a panic in it, and
//! turns its result into the policy's state, backoff and quarantine.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tracing::{error, info, warn};

use super::{
    Entry, HISTORY, Inner, Job, PolicyState, Queued, State, old_accepted, panic_message,
    retired_text, retired_words, rfc3339, summary, unanswered,
};
use crate::agent::quarantine::{Quarantine, immediate_reason};
use crate::audit::AuditEvent;
use crate::engine::{EngineError, Rotation, RotationId, RotationRequest, Status, Trigger};
use crate::metrics::PolicyGauge;
use crate::notify::{Notification, NotifyEvent};
use crate::policy::ValidatedPolicy;
use crate::schedule;
use crate::schedule::Due;

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent (if stale) state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn audit_event(&self, event: &AuditEvent) -> bool {
        match &self.audit {
            None => true,
            Some(log) => match log.append(event) {
                Ok(_) => true,
                Err(e) => {
                    error!(error = %e, "Cannot write the audit log.");
                    false
                }
            },
        }
    }

    /// [`Inner::execute`], with a panic in the job caught and recorded
    /// ([`Inner::panicked`]) instead of leaving the policy marked running, its rotation
    /// open in the journal, and no word of it in the status or the metrics.
    pub(super) async fn execute_guarded(self: &Arc<Self>, job: Queued) {
        use futures::FutureExt;
        let policy = job.policy.clone();
        let what = match job.job {
            Job::Rotate(_) => "rotation",
            Job::Sync { .. } => "sync",
        };
        // Unwind safety: the state behind the lock is made consistent again by
        // `panicked` (the lock itself ignores poisoning), and nothing else the job held
        // outlives it.
        let outcome = std::panic::AssertUnwindSafe(self.execute(job))
            .catch_unwind()
            .await;
        if let Err(payload) = outcome {
            let message = panic_message(payload.as_ref());
            drop(payload);
            self.panicked(&policy, what, &message).await;
        }
    }

    /// Records a job that panicked: logged (policy, rotation id), audited, counted in
    /// `rotor_job_panics_total`, noted on the open rotation in the journal, shown as the
    /// policy's state `failed` with the reason, and treated as a failed attempt (backoff,
    /// then quarantine after `quarantine_after` in a row). The open rotation itself is
    /// left to the journal: the next attempt resumes or rolls it back, as after a crash.
    pub(super) async fn panicked(
        self: &Arc<Self>,
        policy_name: &str,
        what: &'static str,
        message: &str,
    ) {
        let Some(policy) = self
            .lock()
            .entries
            .get(policy_name)
            .map(|e| Arc::clone(&e.policy))
        else {
            return;
        };
        self.metrics.job_panicked(policy_name, what);
        let open = match self.exec.journal(policy_name).await {
            Ok(r) => r.filter(|r| r.status.is_open()),
            Err(e) => {
                warn!(policy = %policy_name, error = %e, "Cannot read the journal after a panic.");
                None
            }
        };
        let text = match &open {
            Some(r) => format!(
                "internal error: the {what} job panicked ({message}); rotation {} was left {} and resumes from the journal at the next attempt",
                r.rotation_id,
                r.status.as_str()
            ),
            None => format!("internal error: the {what} job panicked ({message})"),
        };
        error!(
            policy = %policy_name,
            job = what,
            rotation_id = open.as_ref().map_or("", |r| r.rotation_id.as_str()),
            rotation_status = open.as_ref().map_or("", |r| r.status.as_str()),
            panic = %message,
            "A job panicked; counted as a failed attempt."
        );
        self.audit_event(&AuditEvent::Agent {
            action: "job_panicked".into(),
            detail: Some(format!("policy {policy_name}: {text}")),
        });
        let mut last = open.clone();
        if let Some(r) = &open {
            match self
                .exec
                .note_interrupted(policy_name, &r.rotation_id, &text)
                .await
            {
                Ok(Some(written)) => last = Some(written),
                Ok(None) => {}
                Err(e) => {
                    warn!(policy = %policy_name, rotation_id = %r.rotation_id, error = %e, "Cannot note the panic in the journal.")
                }
            }
        }
        if let Some(e) = self.lock().entries.get_mut(policy_name) {
            e.running = false;
            if let Some(r) = &last {
                e.last = Some(Box::new(summary(r)));
            }
        }
        self.failed(&policy, &text, false);
        if what == "rotation" {
            self.maybe_quarantine(&policy, None).await;
        }
    }

    pub(super) async fn execute(self: &Arc<Self>, job: Queued) {
        let Some(policy) = self
            .lock()
            .entries
            .get(&job.policy)
            .map(|e| Arc::clone(&e.policy))
        else {
            return;
        };
        match job.job {
            Job::Sync { end_grace } => {
                // A record that cannot be read (Vault down, or corrupt) keeps what the
                // agent knew; the rotation itself reads it again and refuses to start.
                match self.exec.retired(&policy.name).await {
                    Ok(r) => {
                        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
                            e.retired = r
                                .filter(|r| r.state.is_inactive())
                                .map(|r| retired_text(&r));
                        }
                    }
                    Err(err) => {
                        warn!(policy = %policy.name, error = %err, "Cannot read the policy's retirement record.")
                    }
                }
                match self.exec.quarantine(&policy.name).await {
                    Ok(q) => {
                        self.metrics
                            .set(&policy.name, PolicyGauge::Quarantined(q.is_some()));
                        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
                            e.quarantined = q.map(Box::new);
                        }
                    }
                    Err(err) => {
                        warn!(policy = %policy.name, error = %err, "Cannot read the policy's quarantine record.")
                    }
                }
                if policy.spec.on_demand.approval.is_some()
                    && let Err(e) = self.approvals.load(&policy.name).await
                {
                    warn!(policy = %policy.name, error = %e, "Cannot read the policy's pending approval request.");
                }
                let result = self.exec.resume(&policy, end_grace).await;
                match result {
                    Ok(Some(r)) => self.finished(&policy, std::slice::from_ref(&r)),
                    Ok(None) => {
                        // Nothing open: show the last rotation, if any. It ended
                        // earlier (its records were written then), so nothing is
                        // audited, counted or notified again.
                        let last = self.exec.journal(&policy.name).await.ok().flatten();
                        if let Some(r) = &last {
                            self.restore_gauges(&policy, r);
                        }
                        self.settle(&policy, last.as_slice(), false);
                    }
                    Err(e) => self.failed(&policy, &e.to_string(), e.is_unanswered()),
                }
            }
            Job::Rotate(request) => {
                // The engine records the request before it plans anything, and each
                // run's end ([`crate::evidence`]).
                match self.exec.rotate(&policy, (*request).clone()).await {
                    Ok(outcome) => {
                        if let (Some(id), Some(r)) = (&request.approval_request, &outcome.rotation)
                            && let Err(e) = self.approvals.set_rotation(id, &r.rotation_id).await
                        {
                            warn!(request = %id, error = %e, "Cannot note the rotation in its approval request.");
                        }
                        let promoted = outcome.succeeded();
                        let ran: Vec<Rotation> = outcome
                            .resumed
                            .into_iter()
                            .chain(outcome.rotation)
                            .collect();
                        self.finished(&policy, &ran);
                        if promoted && let Some(last) = ran.last() {
                            self.cascade(&policy, last, &request);
                        }
                        let immediate = ran.iter().rev().find_map(|r| {
                            immediate_reason(r).map(|why| (why, r.rotation_id.clone()))
                        });
                        self.maybe_quarantine(&policy, immediate).await;
                    }
                    Err(EngineError::Retired {
                        state,
                        since,
                        actor,
                        reason,
                        ..
                    }) => {
                        // Retired elsewhere (e.g. a local `rotor retire`): not a failure.
                        info!(policy = %policy.name, "The policy is retired; no rotation.");
                        if let Some(entry) = self.lock().entries.get_mut(&policy.name) {
                            entry.retired = Some(retired_words(state, &since, &actor, &reason));
                            entry.state = PolicyState::Retired;
                        }
                    }
                    Err(EngineError::Evidence { .. }) => {
                        // Not started, so not a failed rotation: no quarantine count.
                        self.failed(
                            &policy,
                            "the audit log cannot be written; the rotation was not started",
                            false,
                        );
                    }
                    Err(e) => {
                        self.failed(&policy, &crate::error_chain(&e), e.is_unanswered());
                        if matches!(e, EngineError::Pending { .. })
                            && let Some(entry) = self.lock().entries.get_mut(&policy.name)
                        {
                            // Its open rotation is resumed again after the backoff.
                            entry.resume_open = true;
                        }
                        self.maybe_quarantine(&policy, None).await;
                    }
                }
            }
        }
        self.refresh_inputs(&policy).await;
    }

    /// Queues the policy's `spec.cascade` dependents under the same trigger (a
    /// compromise stays a compromise), their reason naming the rotation that caused them.
    pub(super) fn cascade(
        &self,
        policy: &ValidatedPolicy,
        parent: &Rotation,
        request: &RotationRequest,
    ) {
        if policy.spec.cascade.is_empty() {
            return;
        }
        let priority = if request.trigger == Trigger::Compromise {
            0
        } else {
            1
        };
        let mut st = self.lock();
        for dep in &policy.spec.cascade {
            let Some(e) = st.entries.get(dep) else {
                continue;
            };
            if e.queued
                || e.retired.is_some()
                || (e.quarantined.is_some() && request.trigger != Trigger::Compromise)
            {
                continue;
            }
            let req = crate::engine::cascade::dependent(&policy.name, &parent.rotation_id, request);
            info!(policy = %dep, from = %policy.name, "Cascading rotation queued.");
            st.enqueue(dep.clone(), Job::Rotate(Box::new(req)), priority, None);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Quarantines the policy when `immediate` says so or it has failed
    /// `quarantine_after` times in a row: no automatic attempt until it is released.
    pub(super) async fn maybe_quarantine(
        &self,
        policy: &ValidatedPolicy,
        immediate: Option<(String, RotationId)>,
    ) {
        let q = {
            let st = self.lock();
            let Some(e) = st.entries.get(&policy.name) else {
                return;
            };
            if e.quarantined.is_some() {
                return;
            }
            let (reason, rotation_id) = match immediate {
                Some((why, id)) => (why, Some(id)),
                None if e.failures >= self.config.quarantine_after.max(1) => (
                    format!(
                        "{} consecutive failed rotations; last error: {}",
                        e.failures,
                        e.error.as_deref().unwrap_or("unknown")
                    ),
                    e.last.as_ref().map(|l| l.rotation_id.clone()),
                ),
                None => return,
            };
            Quarantine {
                since: rfc3339(self.clock.now()),
                reason,
                rotation_id,
                failures: e.failures,
            }
        };
        error!(policy = %policy.name, reason = %q.reason, "Policy quarantined: no automatic rotation until a person releases it.");
        if let Err(err) = self.exec.set_quarantine(&policy.name, Some(&q)).await {
            error!(policy = %policy.name, error = %err, "Cannot store the quarantine in Vault; it holds in this agent only.");
        }
        self.metrics
            .set(&policy.name, PolicyGauge::Quarantined(true));
        self.audit_event(&AuditEvent::Agent {
            action: "quarantined".into(),
            detail: Some(format!("policy {}: {}", policy.name, q.reason)),
        });
        let mut n = Notification::new(NotifyEvent::Quarantine, policy.name.clone());
        n.rotation_id = q.rotation_id.clone();
        n.detail = Some(q.reason.clone());
        self.notifier.send(&policy.spec.notify, n);
        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
            e.quarantined = Some(Box::new(q));
            e.state = PolicyState::Quarantined;
        }
    }

    pub(super) async fn refresh_inputs(&self, policy: &ValidatedPolicy) {
        let inputs = self.exec.inputs(policy).await;
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(e) = st.entries.get_mut(&policy.name) else {
            return;
        };
        e.running = false;
        match inputs {
            Ok((created, renewal)) => {
                if std::mem::take(&mut e.handover)
                    && let Some(c) = created
                {
                    e.cron_after = e.cron_after.max(c);
                }
                e.secret_created = created;
                e.renewal_at = renewal;
                if let Some(c) = created {
                    self.metrics.set_secret_created(
                        &policy.name,
                        policy.spec.credential.kind(),
                        c.timestamp() as f64,
                    );
                }
            }
            Err(err) => {
                warn!(policy = %policy.name, error = %err, "Cannot read the policy's current secret.")
            }
        }
        e.recompute(now);
        self.metrics.set(
            &policy.name,
            PolicyGauge::NextRotation(e.next_due.map(|d| d.at.timestamp() as f64)),
        );
        self.metrics.set(
            &policy.name,
            PolicyGauge::MaxAge(
                policy
                    .spec
                    .schedule
                    .as_ref()
                    .and_then(|s| s.max_age)
                    .map(|d| d.as_secs_f64()),
            ),
        );
    }

    /// Shows what the rotations that ran in this process came to: the policy's state
    /// and its state gauges. Their audit records, counters and notifications came
    /// from the engine's evidence as they ended ([`crate::evidence`]).
    pub(super) fn finished(&self, policy: &ValidatedPolicy, ran: &[Rotation]) {
        let now = self.clock.now();
        for r in ran {
            self.ended_gauges(policy, r, now);
        }
        self.settle(policy, ran, true);
    }

    /// The state gauges a rotation that ended before this process started leaves:
    /// whether the old credential was still valid, and when it last succeeded.
    pub(super) fn restore_gauges(&self, policy: &ValidatedPolicy, r: &Rotation) {
        self.ended_gauges(policy, r, r.updated_at);
    }

    /// The state gauges `r` leaves: whether the old credential is still valid and, if
    /// it completed, its success at `ended`.
    fn ended_gauges(&self, policy: &ValidatedPolicy, r: &Rotation, ended: DateTime<Utc>) {
        self.metrics.set(
            &policy.name,
            PolicyGauge::OldCredentialValid(old_accepted(r)),
        );
        if r.status == Status::Completed {
            self.metrics.set(
                &policy.name,
                PolicyGauge::LastSuccess(ended.timestamp() as f64),
            );
        }
    }

    /// Shows the last of `ran` as the policy's state. `fresh`: it ran in this process,
    /// so a failure counts toward backoff (and quarantine); a rotation read back from
    /// the journal at start-up was counted by the process that ran it.
    pub(super) fn settle(&self, policy: &ValidatedPolicy, ran: &[Rotation], fresh: bool) {
        let now = self.clock.now();
        let mut st = self.lock();
        for r in ran {
            st.history.retain(|h| h.rotation_id != r.rotation_id);
            st.history.push_back(r.clone());
            while st.history.len() > HISTORY {
                st.history.pop_front();
            }
        }
        let Some(e) = st.entries.get_mut(&policy.name) else {
            return;
        };
        let Some(last) = ran.last() else {
            e.state = PolicyState::Idle;
            e.resume_open = false;
            return;
        };
        e.last = Some(Box::new(summary(last)));
        e.pending = last
            .consumers
            .iter()
            .filter(|c| c.state == crate::engine::ConsumerState::Pending)
            .map(|c| c.consumer.clone())
            .collect();
        e.waiting_until = None;
        e.error = last.error.clone();
        e.resume_open = last.status.is_open() && !last.waiting_for_grace();
        let ok = matches!(last.status, Status::Completed) || last.waiting_for_grace();
        if last.waiting_for_grace() {
            e.state = PolicyState::Waiting;
            e.waiting_until = last.revoke_after;
        } else if last.status.is_open() {
            e.state = PolicyState::Pending;
        } else if ok {
            e.state = PolicyState::Idle;
        } else {
            e.state = PolicyState::Failed;
        }
        if ok {
            e.failures = 0;
            e.outages = 0;
            e.backoff_until = None;
        } else if fresh {
            self.back_off(e, now, unanswered(last));
        }
    }

    /// A job that did not run to its end. `unanswered`: only because an outside system
    /// gave no answer ([`EngineError::is_unanswered`]), which never quarantines.
    pub(super) fn failed(&self, policy: &ValidatedPolicy, error: &str, unanswered: bool) {
        warn!(policy = %policy.name, error = %error, unanswered, "Rotation did not run to its end.");
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(&policy.name) {
            e.state = PolicyState::Failed;
            e.error = Some(error.to_owned());
            self.back_off(e, now, unanswered);
        }
    }

    /// Counts a failed attempt (toward quarantine unless `unanswered`) and sets the
    /// backoff, which grows with every failed attempt of either sort.
    pub(super) fn back_off(&self, e: &mut Entry, now: DateTime<Utc>, unanswered: bool) {
        if unanswered {
            e.outages = e.outages.saturating_add(1);
        } else {
            e.failures = e.failures.saturating_add(1);
        }
        let attempts = e.failures.saturating_add(e.outages).min(64);
        let base = self.config.backoff_base.as_secs_f64() * 2f64.powi(attempts as i32 - 1);
        let capped = base.min(self.config.backoff_max.as_secs_f64());
        let jittered = capped * rand::rng().random_range(0.5..=1.0);
        e.backoff_until = Some(crate::schedule::saturating_after(
            now,
            Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX),
        ));
        // A failed scheduled rotation is retried after the backoff, not at the next
        // cron fire only.
        if e.next_due.is_none_or(|d| d.at > now) && e.policy.spec.schedule.is_some() {
            e.next_due = Some(Due {
                at: now,
                fire: None,
                reason: schedule::DueKind::Cron,
            });
        }
    }
}
