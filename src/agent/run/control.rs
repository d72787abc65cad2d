//! [`Control`] for the API: policies, on-demand rotation, release, retire, enable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{Agent, Entry, Inner, Job, PolicyState, retired_text, rfc3339};
use crate::agent::approval::{ApprovalCaller, ApprovalRecord};
use crate::agent::{Accepted, Control, ControlError, PolicyMeta, PolicyView, Readiness};
use crate::audit::AuditEvent;
use crate::engine::{
    EnableOutcome, EngineError, RetireRequest, Retirement, Rotation, RotationRequest, Trigger,
};
use crate::metrics::PolicyGauge;
use crate::policy::ValidatedPolicy;

/// The API's answer for an engine error of a retire or enable.
pub(super) fn retire_error(name: &str, e: EngineError) -> ControlError {
    match e {
        EngineError::RetireIncomplete { what, .. } => ControlError::Incomplete {
            policy: name.to_owned(),
            what,
        },
        EngineError::Pending { .. }
        | EngineError::Retired { .. }
        | EngineError::NotRetired { .. }
        | EngineError::Credential(crate::credentials::CredentialError::CannotDisable(_)) => {
            ControlError::Busy(e.to_string())
        }
        EngineError::Evidence { .. } => ControlError::Audit(
            "the rotation of the enable cannot be recorded; nothing was changed".into(),
        ),
        other => ControlError::Internal(crate::error_chain(&other)),
    }
}

impl Entry {
    /// Refuses an on-demand `request` that lacks the reason or ticket the policy
    /// requires.
    pub(super) fn check_on_demand(&self, request: &RotationRequest) -> Result<(), ControlError> {
        let on_demand = &self.policy.spec.on_demand;
        match on_demand.missing(request.reason.as_deref(), request.ticket.as_deref()) {
            Some(what) => Err(ControlError::Incomplete {
                policy: self.policy.name.clone(),
                what,
            }),
            None => Ok(()),
        }
    }

    /// Refuses a rotation of a quarantined policy, unless it is for a `compromise`.
    pub(super) fn check_quarantine(&self, compromise: bool) -> Result<(), ControlError> {
        match (compromise, &self.quarantined) {
            (false, Some(q)) => {
                let name = &self.policy.name;
                Err(ControlError::Busy(format!(
                    "policy {name} is quarantined since {}: {}; `rotor release {name} --reason …` resumes it",
                    q.since, q.reason
                )))
            }
            _ => Ok(()),
        }
    }
}

impl Agent {
    /// Marks the policy busy with `what` (`retiring`, `enabling`), or says why not.
    /// Returns the policy and the state it had.
    pub(super) fn claim(
        &self,
        name: &str,
        what: PolicyState,
    ) -> Result<(Arc<ValidatedPolicy>, PolicyState), ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        let mut st = self.inner.lock();
        if st.stopping {
            return Err(ControlError::Busy("the agent is shutting down".into()));
        }
        let e = st
            .entries
            .get_mut(name)
            .ok_or_else(|| ControlError::UnknownPolicy(name.to_owned()))?;
        if e.running || e.queued {
            return Err(ControlError::Busy(format!(
                "policy {name} is {}; try again when it is done",
                if e.running {
                    e.state
                } else {
                    PolicyState::Queued
                }
                .as_str()
            )));
        }
        e.running = true;
        let before = std::mem::replace(&mut e.state, what);
        Ok((Arc::clone(&e.policy), before))
    }

    /// Gives back a claim that did nothing.
    pub(super) async fn unclaim(&self, policy: &ValidatedPolicy, state: PolicyState) {
        if let Some(e) = self.inner.lock().entries.get_mut(&policy.name) {
            e.state = state;
        }
        self.inner.refresh_inputs(policy).await;
    }

    /// Runs `work` (a retirement or an enable of the claimed `policy`) on its own
    /// task, so a caller that goes away (an HTTP client disconnecting) cannot cut it
    /// short between two steps. If the task fails, the policy shows the failure and
    /// its claim is given back.
    pub(super) async fn detached<T, F>(
        &self,
        policy: &Arc<ValidatedPolicy>,
        work: impl FnOnce(Arc<Inner>, Arc<ValidatedPolicy>) -> F,
    ) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let task = work(Arc::clone(&self.inner), Arc::clone(policy));
        match tokio::spawn(task).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let e = ControlError::Internal(format!("the task failed: {e}"));
                self.inner.failed(policy, &e.to_string(), false);
                self.inner.refresh_inputs(policy).await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Control for Agent {
    async fn policies(&self) -> Vec<PolicyView> {
        let now = self.inner.clock.now();
        let st = self.inner.lock();
        st.entries
            .values()
            .map(|e| PolicyView {
                name: e.policy.name.clone(),
                kind: e.policy.spec.credential.kind().to_owned(),
                labels: (*e.policy.labels).clone(),
                state: e.shown_state(now).as_str().into(),
                last_rotation: e.last.as_deref().cloned(),
                secret_created_at: e.secret_created.map(rfc3339),
                age_seconds: e
                    .secret_created
                    .and_then(|c| (now - c).to_std().ok())
                    .map(|d| d.as_secs()),
                next_due: e.next_due.map(|d| rfc3339(d.at)),
                pending_consumers: e.pending.clone(),
                error: e
                    .retired
                    .clone()
                    .or_else(|| {
                        e.quarantined
                            .as_ref()
                            .map(|q| format!("quarantined since {}: {}", q.since, q.reason))
                    })
                    .or_else(|| e.error.clone()),
            })
            .collect()
    }

    fn policy_meta(&self, name: &str) -> Option<PolicyMeta> {
        let st = self.inner.lock();
        st.entries.get(name).map(|e| PolicyMeta {
            name: e.policy.name.clone(),
            labels: (*e.policy.labels).clone(),
            require_reason: e.policy.spec.on_demand.require_reason,
            require_ticket: e.policy.spec.on_demand.require_ticket,
        })
    }

    async fn rotate(
        &self,
        name: &str,
        mut request: RotationRequest,
    ) -> Result<Accepted, ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        if let Some(pending) = self.approval_gate(name, &mut request).await? {
            return Ok(pending);
        }
        let mut st = self.inner.lock();
        if st.stopping {
            return Err(ControlError::Busy("the agent is shutting down".into()));
        }
        let Some(e) = st.entries.get(name) else {
            return Err(ControlError::UnknownPolicy(name.to_owned()));
        };
        e.check_on_demand(&request)?;
        let compromise = request.trigger == Trigger::Compromise;
        if let Some(r) = &e.retired {
            return Err(ControlError::Busy(format!(
                "policy {name} is {r}; `rotor enable {name} --reason …` makes it rotate again"
            )));
        }
        e.check_quarantine(compromise)?;
        if let (false, Some(until)) = (compromise, e.waiting_until) {
            return Err(ControlError::Busy(format!(
                "the previous rotation of {name} keeps the old credential valid until {} (grace period); rotate with compromise to end it now",
                rfc3339(until)
            )));
        }
        if !compromise && (e.running || e.queued) {
            return Err(ControlError::Busy(format!(
                "a rotation of {name} is already {}",
                if e.running { "running" } else { "queued" }
            )));
        }
        if compromise {
            // A compromise replaces whatever was queued for the policy.
            st.queue.retain(|q| q.policy != name);
        }
        st.enqueue(
            name.to_owned(),
            Job::Rotate(Box::new(request)),
            if compromise { 0 } else { 1 },
            None,
        );
        drop(st);
        self.inner.wake.notify_one();
        Ok(Accepted {
            rotation_id: None,
            state: "queued".into(),
            ..Default::default()
        })
    }

    async fn rotation(&self, id: &str) -> Result<Option<Rotation>, ControlError> {
        let (found, candidates) = {
            let st = self.inner.lock();
            let found = st.history.iter().find(|r| r.rotation_id == id).cloned();
            let candidates: Vec<String> = st
                .entries
                .values()
                .filter(|e| e.last.as_ref().is_some_and(|l| l.rotation_id == id))
                .map(|e| e.policy.name.clone())
                .collect();
            (found, candidates)
        };
        if found.is_some() {
            return Ok(found);
        }
        for name in candidates {
            if let Some(r) = self
                .inner
                .exec
                .journal(&name)
                .await
                .map_err(|e| ControlError::Internal(e.to_string()))?
                && r.rotation_id == id
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    async fn release(&self, name: &str, actor: &str, reason: &str) -> Result<(), ControlError> {
        {
            let st = self.inner.lock();
            let e = st
                .entries
                .get(name)
                .ok_or_else(|| ControlError::UnknownPolicy(name.to_owned()))?;
            if e.quarantined.is_none() {
                return Err(ControlError::Busy(format!(
                    "policy {name} is not quarantined"
                )));
            }
        }
        self.inner
            .exec
            .set_quarantine(name, None)
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let now = self.inner.clock.now();
        {
            let mut st = self.inner.lock();
            if let Some(e) = st.entries.get_mut(name) {
                e.quarantined = None;
                e.failures = 0;
                e.outages = 0;
                e.backoff_until = None;
                e.state = PolicyState::Idle;
                e.recompute(now);
            }
        }
        self.inner
            .metrics
            .set(name, PolicyGauge::Quarantined(false));
        self.inner.audit_event(&AuditEvent::Agent {
            action: "released".into(),
            detail: Some(format!("policy {name} released by {actor}: {reason}")),
        });
        info!(policy = %name, actor = %actor, "Quarantine lifted.");
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn retire(&self, name: &str, request: RetireRequest) -> Result<Retirement, ControlError> {
        let (policy, before) = self.claim(name, PolicyState::Retiring)?;
        let result = self
            .detached(&policy, |inner, policy| async move {
                inner.exec.retire(&policy, request).await
            })
            .await?;
        {
            let mut st = self.inner.lock();
            if let Some(e) = st.entries.get_mut(name) {
                match &result {
                    Ok(r) => {
                        e.retired = r.state.is_inactive().then(|| retired_text(r));
                        e.state = if r.state == crate::engine::RetireState::Retired {
                            PolicyState::Retired
                        } else {
                            PolicyState::Failed
                        };
                        e.error = r.error.clone();
                    }
                    // Refused (or Vault failed): a record written so far still makes
                    // the engine refuse rotations, which marks the entry retired.
                    Err(_) => e.state = before,
                }
            }
        }
        self.inner.refresh_inputs(&policy).await;
        match &result {
            Ok(r) => {
                info!(policy = %name, state = r.state.as_str(), actor = %r.actor, "Retirement ended.")
            }
            Err(e) => warn!(policy = %name, error = %e, "Retirement did not run."),
        }
        self.inner.wake.notify_one();
        result.map_err(|e| retire_error(name, e))
    }

    async fn enable(
        &self,
        name: &str,
        request: RetireRequest,
    ) -> Result<EnableOutcome, ControlError> {
        let (policy, before) = self.claim(name, PolicyState::Enabling)?;
        let retired = self.inner.exec.retired(name).await;
        if !matches!(&retired, Ok(Some(r)) if r.state.is_inactive()) {
            self.unclaim(&policy, before).await;
            return Err(match retired {
                Err(e) => ControlError::Internal(crate::error_chain(&e)),
                Ok(_) => ControlError::Busy(format!(
                    "policy {name} is not retired; there is nothing to enable"
                )),
            });
        }
        let result = self
            .detached(&policy, |inner, policy| async move {
                inner.exec.enable(&policy, request).await
            })
            .await?;
        match &result {
            Ok(outcome) => {
                let ran: Vec<Rotation> = outcome
                    .rotation
                    .iter()
                    .flat_map(|o| o.resumed.iter().chain(o.rotation.iter()))
                    .cloned()
                    .collect();
                self.inner.finished(&policy, &ran);
                let mut st = self.inner.lock();
                if let Some(e) = st.entries.get_mut(name) {
                    e.retired = outcome
                        .record
                        .state
                        .is_inactive()
                        .then(|| retired_text(&outcome.record));
                    if e.retired.is_some() {
                        e.state = PolicyState::Retired;
                        e.error = outcome.record.error.clone();
                    }
                }
            }
            Err(err) => {
                let mut st = self.inner.lock();
                if let Some(e) = st.entries.get_mut(name) {
                    e.state = if e.retired.is_some() {
                        PolicyState::Retired
                    } else {
                        PolicyState::Failed
                    };
                    e.error = Some(crate::error_chain(err));
                }
            }
        }
        self.inner.refresh_inputs(&policy).await;
        self.inner.wake.notify_one();
        result.map_err(|e| retire_error(name, e))
    }

    async fn approval_request(&self, id: &str) -> Result<Option<ApprovalRecord>, ControlError> {
        self.inner.approvals.get(id, self.inner.clock.now()).await
    }

    async fn approve(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
    ) -> Result<Accepted, ControlError> {
        self.approve_request(id, caller, reason).await
    }

    fn readiness(&self) -> Readiness {
        let problem = self.inner.health.problem();
        let st = self.inner.lock();
        let leader = self.inner.leader.load(Ordering::SeqCst);
        let reason = if st.stopping {
            Some("shutting down".into())
        } else if !st.started {
            Some("resuming open rotations".into())
        } else {
            problem
        };
        Readiness {
            ready: reason.is_none(),
            leader,
            reason,
        }
    }
}
