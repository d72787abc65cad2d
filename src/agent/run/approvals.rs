//! Four-eyes approval of on-demand rotations (see [`crate::agent::approval`]).

use std::sync::atomic::Ordering;

use tracing::{error, info, warn};

use super::{Agent, Inner};
use crate::agent::Control;
use crate::agent::approval::ApprovalCaller;
use crate::agent::{Accepted, ControlError};
use crate::audit::AuditEvent;
use crate::engine::{RotationId, RotationRequest, Trigger};
use crate::notify::NotifyEvent;

impl Agent {
    /// For a policy that requires approval, turns an on-demand request into a pending
    /// approval request and answers it (`Some`); lets through scheduled requests,
    /// approved ones and a break-glass compromise (`None`). Clears `break_glass` where
    /// it skips nothing, so a rotation records it only when approval was skipped.
    pub(super) async fn approval_gate(
        &self,
        name: &str,
        request: &mut RotationRequest,
    ) -> Result<Option<Accepted>, ControlError> {
        let (rule, notify) = {
            let st = self.inner.lock();
            let Some(e) = st.entries.get(name) else {
                return Err(ControlError::UnknownPolicy(name.to_owned()));
            };
            (
                e.policy.spec.on_demand.approval.clone(),
                e.policy.spec.notify.clone(),
            )
        };
        let compromise = request.trigger == Trigger::Compromise;
        let Some(rule) = rule.filter(|_| request.trigger != Trigger::Schedule) else {
            request.break_glass = false;
            return Ok(None);
        };
        if compromise && request.break_glass {
            warn!(policy = %name, actor = %request.asker.actor, "Break-glass compromise rotation: the required approval is skipped.");
            return Ok(None);
        }
        request.break_glass = false;
        // Only `approve_request` sets `approval_request`, once the request has its
        // approvals and is marked used (the API never does).
        if request.approval_request.is_some()
            && !request.approvers.is_empty()
            && !request.approvers.contains(&request.asker.actor)
        {
            return Ok(None);
        }
        {
            let st = self.inner.lock();
            if st.stopping {
                return Err(ControlError::Busy("the agent is shutting down".into()));
            }
            if let Some(e) = st.entries.get(name) {
                e.check_on_demand(request)?;
                e.check_quarantine(compromise)?;
            }
        }
        let now = self.inner.clock.now();
        let created = self
            .inner
            .approvals
            .create(name, &rule, request, now)
            .await?;
        let record = &created.record;
        let who: Vec<String> = rule.approvers.iter().map(ToString::to_string).collect();
        let detail = format!(
            "request {} by {} needs {} approval(s) from [{}] before {}",
            record.id,
            record.requester,
            record.required,
            who.join(", "),
            record.expires_at
        );
        info!(policy = %name, request = %record.id, requester = %record.requester, "On-demand rotation waits for approval.");
        self.inner.audit_event(&AuditEvent::Agent {
            action: "approval_requested".into(),
            detail: Some(format!("policy {name}: {detail}")),
        });
        self.inner.notifier.send(
            &notify,
            record.notification(NotifyEvent::ApprovalRequested, detail),
        );
        if let Some(old) = &created.superseded {
            let detail = format!("superseded by request {}", record.id);
            self.inner.audit_event(&AuditEvent::Agent {
                action: "approval_superseded".into(),
                detail: Some(format!("policy {name}: request {} {detail}", old.id)),
            });
            self.inner.notifier.send(
                &notify,
                old.notification(NotifyEvent::ApprovalExpired, detail),
            );
        }
        // The sweep may have to wake earlier than it planned.
        self.inner.wake.notify_one();
        Ok(Some(Accepted {
            rotation_id: None,
            state: "pending_approval".into(),
            request_id: Some(record.id.clone()),
            expires_at: Some(record.expires_at.clone()),
            required: Some(record.required),
            approvals: Some(0),
        }))
    }

    /// [`Control::approve`]: records the approval; with enough of them the request is
    /// used (written first) and its rotation queued through [`Control::rotate`]. If the
    /// rotation cannot be queued, the request is pending again and the error returned.
    pub(super) async fn approve_request(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
    ) -> Result<Accepted, ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        let rule_of = |policy: &str| {
            self.inner
                .lock()
                .entries
                .get(policy)
                .and_then(|e| e.policy.spec.on_demand.approval.clone())
        };
        let now = self.inner.clock.now();
        let approved = self
            .inner
            .approvals
            .approve(id, caller, reason, rule_of, now)
            .await?;
        let record = &approved.record;
        let count = u32::try_from(record.approvals.len()).unwrap_or(u32::MAX);
        info!(policy = %record.policy, request = %id, approver = %caller.actor, approvals = count, required = record.required, "Approval recorded.");
        self.inner.audit_event(&AuditEvent::Agent {
            action: "approval_granted".into(),
            detail: Some(format!(
                "policy {}: request {id} approved by {} ({count} of {})",
                record.policy, caller.actor, record.required
            )),
        });
        let answer = |state: &str, rotation_id: Option<RotationId>| Accepted {
            rotation_id,
            state: state.to_owned(),
            request_id: Some(record.id.clone()),
            expires_at: Some(record.expires_at.clone()),
            required: Some(record.required),
            approvals: Some(count),
        };
        if !approved.complete {
            return Ok(answer("pending_approval", None));
        }
        match self.rotate(&record.policy, record.rotation_request()).await {
            Ok(accepted) => Ok(answer(&accepted.state, accepted.rotation_id)),
            Err(e) => {
                warn!(policy = %record.policy, request = %id, error = %e, "The approved rotation could not be queued; the request is pending again.");
                if let Err(err) = self.inner.approvals.reopen(&approved).await {
                    error!(request = %id, error = %err, "Cannot reopen the approval request.");
                }
                Err(e)
            }
        }
    }
}

impl Inner {
    /// Marks an approval request expired (once), audits and notifies it.
    pub(super) async fn expire_approval(&self, policy: &str, id: &str) {
        let now = self.clock.now();
        match self.approvals.expire(policy, id, now).await {
            Ok(Some(record)) => {
                let detail = format!(
                    "request {id} by {} expired at {} with {} of {} approval(s)",
                    record.requester,
                    record.expires_at,
                    record.approvals.len(),
                    record.required
                );
                info!(policy = %policy, request = %id, "Approval request expired.");
                self.audit_event(&AuditEvent::Agent {
                    action: "approval_expired".into(),
                    detail: Some(format!("policy {policy}: {detail}")),
                });
                let targets = self
                    .lock()
                    .entries
                    .get(policy)
                    .map(|e| e.policy.spec.notify.clone())
                    .unwrap_or_default();
                self.notifier.send(
                    &targets,
                    record.notification(NotifyEvent::ApprovalExpired, detail),
                );
            }
            Ok(None) => {}
            Err(e) => {
                warn!(policy = %policy, request = %id, error = %e, "Cannot mark the approval request expired; trying again later.")
            }
        }
        self.wake.notify_one();
    }
}
