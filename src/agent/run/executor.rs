//! What the agent needs from the rotation engine: [`Executor`], implemented by the
//! real [`Engine`] and by fakes in the scheduler tests.

use chrono::{DateTime, Utc};

use crate::agent::approval::ApprovalStore;
use crate::agent::quarantine::{Quarantine, QuarantineStore};
use crate::engine::{
    EnableOutcome, Engine, EngineError, RetireRequest, Retirement, Rotation, RotationOutcome,
    RotationRequest,
};
use crate::policy::ValidatedPolicy;
use crate::schedule;

/// What the agent needs from the rotation engine (the real [`Engine`], or a fake in
/// scheduler tests).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// One rotation (resuming an open one first).
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError>;
    /// Finishes the policy's open rotation, if any; `end_grace` revokes at once.
    async fn resume(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError>;
    /// When the current secret was written and when a certificate is due for renewal.
    async fn inputs(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError>;
    /// The policy's journal record.
    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError>;
    /// Notes on the policy's journal record `rotation_id`, if it is still open, that a
    /// job was interrupted by a panic (`note` is added to its `error`); returns the
    /// record as written. The rotation stays open: the next attempt resumes or rolls it
    /// back from the journal, as after a crash.
    async fn note_interrupted(
        &self,
        _policy: &str,
        _rotation_id: &str,
        _note: &str,
    ) -> Result<Option<Rotation>, EngineError> {
        Ok(None)
    }
    /// The policy's quarantine record, if any.
    async fn quarantine(&self, _policy: &str) -> Result<Option<Quarantine>, EngineError> {
        Ok(None)
    }
    /// Stores (or with `None` removes) the policy's quarantine record.
    async fn set_quarantine(
        &self,
        _policy: &str,
        _q: Option<&Quarantine>,
    ) -> Result<(), EngineError> {
        Ok(())
    }
    /// The policy's retirement record, if any (any state).
    async fn retired(&self, _policy: &str) -> Result<Option<Retirement>, EngineError> {
        Ok(None)
    }
    /// Where approval requests are kept; `None`: policies that require approval
    /// cannot be rotated on demand.
    fn approval_store(&self) -> Option<ApprovalStore> {
        None
    }
    /// Retires the policy ([`Engine::retire`]).
    async fn retire(
        &self,
        _policy: &ValidatedPolicy,
        _request: RetireRequest,
    ) -> Result<Retirement, EngineError> {
        Err(EngineError::Unsupported(
            "this executor cannot retire policies",
        ))
    }
    /// Enables a retired policy again ([`Engine::enable`]).
    async fn enable(
        &self,
        _policy: &ValidatedPolicy,
        _request: RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        Err(EngineError::Unsupported(
            "this executor cannot enable policies",
        ))
    }
}

#[async_trait::async_trait]
impl Executor for Engine {
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        Engine::rotate(self, policy, request).await
    }

    async fn resume(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        self.resume_with(policy, end_grace).await
    }

    async fn inputs(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError> {
        let loc = &policy.spec.vault;
        let Some(entry) = self.vault().kv_read(&loc.mount, &loc.path).await? else {
            return Ok((None, None));
        };
        let created = DateTime::parse_from_rfc3339(&entry.created_time)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Ok((created, schedule::renewal_due(policy, &entry.data)))
    }

    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError> {
        Ok(self.journal().load(policy).await?.0)
    }

    async fn note_interrupted(
        &self,
        policy: &str,
        rotation_id: &str,
        note: &str,
    ) -> Result<Option<Rotation>, EngineError> {
        let (record, version) = self.journal().load(policy).await?;
        let Some(mut r) = record.filter(|r| r.rotation_id == rotation_id && r.status.is_open())
        else {
            return Ok(None);
        };
        // Once per distinct note: a job that panics on every attempt does not grow it.
        r.error = Some(match r.error.take() {
            Some(before) if before.contains(note) => before,
            Some(before) => format!("{before}; {note}"),
            None => note.to_owned(),
        });
        r.updated_at = crate::state::records::time::now();
        self.journal().write(&r, version).await?;
        Ok(Some(r))
    }

    async fn quarantine(&self, policy: &str) -> Result<Option<Quarantine>, EngineError> {
        Ok(self.quarantine_store().get(policy).await?)
    }

    async fn set_quarantine(
        &self,
        policy: &str,
        q: Option<&Quarantine>,
    ) -> Result<(), EngineError> {
        Ok(self.quarantine_store().set(policy, q).await?)
    }

    async fn retired(&self, policy: &str) -> Result<Option<Retirement>, EngineError> {
        self.retirement(policy).await
    }

    fn approval_store(&self) -> Option<ApprovalStore> {
        Some(ApprovalStore::with_store(self.state().clone()))
    }

    async fn retire(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<Retirement, EngineError> {
        Engine::retire(self, policy, request).await
    }

    async fn enable(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        Engine::enable(self, policy, request).await
    }
}

impl Engine {
    /// The quarantine records in the engine's state store.
    pub(crate) fn quarantine_store(&self) -> QuarantineStore {
        QuarantineStore::with_store(self.state().clone())
    }
}
