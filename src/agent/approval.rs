//! Four-eyes approval of on-demand rotations (`spec.onDemand.approval`).
//!
//! An on-demand request for a policy that requires approval does not start a rotation:
//! it becomes an [`ApprovalRecord`], written to Vault before the API answers, so that
//! restarts and other replicas see it. Other identities listed in the policy's
//! `approvers` approve it; once `required` distinct approvers (never the requester)
//! have, the record is marked `used` — written first, so it can start one rotation
//! only — and the rotation is queued as the requester's, with the approvers recorded.
//! A request that is not approved within its ttl expires; a newer request for the same
//! policy supersedes it.
//!
//! Storage, next to the journal in the state KV mount:
//! - `<prefix>/requests/<id>`: the record (JSON under the key `record`), written with
//!   check-and-set so two writers never both change it;
//! - `<prefix>/pending-request/<policy>`: the id of the policy's latest pending
//!   request. A pending record that this pointer does not name is superseded, so a
//!   crash between writing a new request and marking the old one cannot leave two
//!   requests approvable.
//!
//! The agent keeps the pending requests' expiry times in memory (loaded from the
//! pointers when it resumes a policy) and its scheduler loop sweeps them: each expired
//! request is marked `expired` once, audited and notified (`approval_expired`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ControlError;
use crate::engine::{Asker, RotationId, RotationRequest, Trigger};
use crate::notify::{Notification, NotifyEvent};
use crate::policy::ApprovalSpec;
use crate::state::{self, Key, StateError, Store};
use crate::vault::VaultError;

/// How long a request waits for approval when neither the policy nor `--approval-ttl`
/// says otherwise.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(2 * 3600);

/// How long after a failed attempt to mark a request expired the sweep tries again.
const EXPIRE_RETRY: Duration = Duration::from_secs(10);

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for approvals.
    Pending,
    /// Approved; its rotation was queued (single use).
    Used,
    /// Its ttl ran out before enough approvals.
    Expired,
    /// A newer request for the same policy replaced it.
    Superseded,
}

impl ApprovalState {
    /// Lower-case name (`pending`, `used`, `expired`, `superseded`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Used => "used",
            ApprovalState::Expired => "expired",
            ApprovalState::Superseded => "superseded",
        }
    }
}

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEntry {
    /// Who approved (the API actor, `api:<identity>`).
    pub identity: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, if the approver said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An on-demand rotation request waiting for (or done with) approval. Holds names,
/// times and the words people wrote, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// ULID.
    pub id: String,
    /// The policy to rotate.
    pub policy: String,
    /// Who asked (the API actor); becomes the rotation's actor.
    pub requester: String,
    /// The reason the requester gave (free text, audited).
    #[serde(default)]
    pub reason: Option<String>,
    /// Ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// A compromise request (no grace, sessions ended once it runs).
    #[serde(default)]
    pub compromise: bool,
    /// When it was made (RFC 3339, the agent's clock).
    pub created_at: String,
    /// When it expires unless approved (RFC 3339).
    pub expires_at: String,
    /// Distinct approvals needed.
    pub required: u32,
    /// Approvals so far, in order; one per identity.
    #[serde(default)]
    pub approvals: Vec<ApprovalEntry>,
    /// Its state. The API reports the effective state ([`ApprovalRecord::state_at`]):
    /// a pending request past its expiry is `expired`, one the policy's pointer no
    /// longer names is `superseded`, even before the sweep has written that.
    pub state: ApprovalState,
    /// The rotation it started, once that has been planned.
    #[serde(default)]
    pub rotation_id: Option<RotationId>,
    /// How the requester proved who they are (`unknown` in records written before
    /// rotor kept it).
    #[serde(default)]
    pub authenticated_by: crate::audit::AuthMethod,
}

impl ApprovalRecord {
    /// The state as of `now`, given the id the policy's pending pointer names.
    pub fn state_at(&self, latest: Option<&str>, now: DateTime<Utc>) -> ApprovalState {
        if self.state != ApprovalState::Pending {
            return self.state;
        }
        if latest != Some(self.id.as_str()) {
            ApprovalState::Superseded
        } else if parse_time(&self.expires_at).is_none_or(|t| now >= t) {
            ApprovalState::Expired
        } else {
            ApprovalState::Pending
        }
    }

    /// The approvers' identities, in approval order.
    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|a| a.identity.clone()).collect()
    }

    /// The rotation an approved request starts: the requester's, with the approvers.
    pub fn rotation_request(&self) -> RotationRequest {
        RotationRequest {
            trigger: if self.compromise {
                Trigger::Compromise
            } else {
                Trigger::OnDemand
            },
            asker: Asker {
                actor: self.requester.clone(),
                authenticated_by: self.authenticated_by,
                vault_identity: None,
            },
            reason: self.reason.clone(),
            ticket: self.ticket.clone(),
            approvers: self.approvers(),
            break_glass: false,
            approval_request: Some(self.id.clone()),
        }
    }

    /// A notification about this request (no secret: names, times, reason, ticket).
    pub fn notification(&self, event: NotifyEvent, detail: String) -> Notification {
        let mut n = Notification::new(event, self.policy.clone());
        n.request_id = Some(self.id.clone());
        n.status = Some(self.state.as_str().to_owned());
        n.trigger = Some(
            if self.compromise {
                Trigger::Compromise
            } else {
                Trigger::OnDemand
            }
            .as_str()
            .to_owned(),
        );
        n.actor = Some(self.requester.clone());
        n.reason = self.reason.clone();
        n.ticket = self.ticket.clone();
        n.rotation_id = self.rotation_id.clone();
        n.detail = Some(detail);
        n
    }
}

/// A failed read or write of approval records.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum ApprovalError {
    /// Vault refused or could not be reached.
    #[error(transparent)]
    #[strum(disabled)]
    Vault(#[from] VaultError),
    /// A stored record is not the JSON rotor writes.
    #[error("the approval record at {path} cannot be read: {detail}")]
    #[strum(serialize = "approval_decode")]
    Decode {
        /// Where it is (`<mount>/<path>`).
        path: String,
        /// What was wrong (no record content).
        detail: String,
    },
}

impl ApprovalError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApprovalError::Vault(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApprovalError::Vault(e) => e.is_transient(),
            ApprovalError::Decode { .. } => false,
        }
    }
}

impl From<StateError> for ApprovalError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Vault(e) => ApprovalError::Vault(e),
            StateError::Corrupt(c) => ApprovalError::Decode {
                path: c.location,
                detail: c.detail,
            },
        }
    }
}

impl From<ApprovalError> for ControlError {
    fn from(e: ApprovalError) -> Self {
        ControlError::Internal(e.to_string())
    }
}

/// Reads and writes approval records and the per-policy pointers, in rotor's state
/// store ([`crate::state::Key::Request`], [`crate::state::Key::PendingRequest`]).
#[derive(Debug, Clone)]
pub struct ApprovalStore {
    store: Arc<dyn Store>,
}

impl ApprovalStore {
    /// Records and pointers in `store`.
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        ApprovalStore { store }
    }

    /// The record `id` and its KV version (for check-and-set), if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<(ApprovalRecord, u64)>, ApprovalError> {
        // Ids are ULIDs; anything else cannot name a record (and must not become a path).
        if ulid::Ulid::from_string(id).is_err() {
            return Ok(None);
        }
        let key = Key::Request(id);
        Ok(state::APPROVAL.read(&*self.store, key).await?)
    }

    /// Writes `record`; `cas`: `Some(0)` creates only, `Some(v)` replaces version `v`
    /// only. Returns the new version.
    pub async fn put(
        &self,
        record: &ApprovalRecord,
        cas: Option<u64>,
    ) -> Result<u64, ApprovalError> {
        let key = Key::Request(&record.id);
        let extra = [
            ("policy", record.policy.as_str()),
            ("state", record.state.as_str()),
        ];
        let data = state::APPROVAL.data(&*self.store, key, record, &extra)?;
        Ok(self.store.write(key, &data, cas).await?)
    }

    /// The id of the policy's latest pending request, if any. A pointer without an id
    /// is [`ApprovalError::Decode`], never "no pending request".
    pub async fn latest(&self, policy: &str) -> Result<Option<String>, ApprovalError> {
        let key = Key::PendingRequest(policy);
        let Some(entry) = self.store.read(key).await? else {
            return Ok(None);
        };
        match entry.data.get("id").and_then(Value::as_str) {
            Some(id) => Ok(Some(id.to_owned())),
            None => Err(ApprovalError::Decode {
                path: self.store.location(key),
                detail: "no text under `id`".into(),
            }),
        }
    }

    /// Points the policy at its latest pending request, or (`None`) at none.
    pub async fn set_latest(&self, policy: &str, id: Option<&str>) -> Result<(), ApprovalError> {
        let key = Key::PendingRequest(policy);
        match id {
            Some(id) => {
                let mut data = Map::new();
                data.insert("id".into(), Value::String(id.to_owned()));
                self.store.write(key, &data, None).await?;
            }
            None => self.store.delete(key).await?,
        }
        Ok(())
    }
}

/// What recording a new approval request did.
#[derive(Debug, Clone)]
pub struct Created {
    /// The new, pending request.
    pub record: ApprovalRecord,
    /// The policy's previous pending request, now superseded.
    pub superseded: Option<ApprovalRecord>,
}

/// What an approval did.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The record after the approval.
    pub record: ApprovalRecord,
    /// Its KV version.
    pub version: u64,
    /// Enough approvals: the record is now `used` and its rotation must be queued.
    pub complete: bool,
}

/// Who approves, as the API authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalCaller {
    /// Identity name (matched against `approvers`).
    pub name: String,
    /// The actor recorded (`api:<name>`), compared with the requester.
    pub actor: String,
    /// The identity's groups (matched against `group:NAME` approvers).
    pub groups: Vec<String>,
}

/// The agent's side of approvals: the store, one writer at a time, and the expiry
/// times of pending requests for the scheduler's sweep.
pub(crate) struct Approvals {
    store: Option<ApprovalStore>,
    default_ttl: Duration,
    /// Serialises read-modify-write of records in this process (Vault's check-and-set
    /// guards against other processes).
    write: tokio::sync::Mutex<()>,
    /// Policy → (pending request id, expiry).
    due: Mutex<BTreeMap<String, (String, DateTime<Utc>)>>,
}

/// RFC 3339 with milliseconds, UTC.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn gone(id: &str, state: ApprovalState) -> ControlError {
    let message = match state {
        ApprovalState::Used => format!("request {id} was already approved and used"),
        ApprovalState::Expired => format!("request {id} has expired"),
        ApprovalState::Superseded => {
            format!("request {id} was superseded by a newer request for its policy")
        }
        ApprovalState::Pending => format!("request {id} is pending"),
    };
    ControlError::Gone {
        message,
        reason: state.as_str(),
    }
}

impl Approvals {
    pub(crate) fn new(store: Option<ApprovalStore>, default_ttl: Duration) -> Approvals {
        Approvals {
            store,
            default_ttl: if default_ttl.is_zero() {
                DEFAULT_APPROVAL_TTL
            } else {
                default_ttl
            },
            write: tokio::sync::Mutex::new(()),
            due: Mutex::new(BTreeMap::new()),
        }
    }

    fn due(&self) -> MutexGuard<'_, BTreeMap<String, (String, DateTime<Utc>)>> {
        // Each update is a single insert or removal: a panic cannot leave it torn.
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> Result<&ApprovalStore, ControlError> {
        self.store.as_ref().ok_or_else(|| {
            ControlError::Internal(
                "approvals need Vault, and this agent has no approval store".into(),
            )
        })
    }

    /// Records a new pending request for `policy` (written before anything is
    /// answered) and supersedes the policy's previous one.
    pub(crate) async fn create(
        &self,
        policy: &str,
        rule: &ApprovalSpec,
        request: &RotationRequest,
        now: DateTime<Utc>,
    ) -> Result<Created, ControlError> {
        let store = self.store()?;
        let ttl = rule.ttl.unwrap_or(self.default_ttl);
        let expires = crate::schedule::saturating_after(now, ttl);
        let record = ApprovalRecord {
            id: ulid::Ulid::new().to_string(),
            policy: policy.to_owned(),
            requester: request.asker.actor.clone(),
            reason: request.reason.clone(),
            ticket: request.ticket.clone(),
            compromise: request.trigger == Trigger::Compromise,
            created_at: format_time(now),
            expires_at: format_time(expires),
            required: rule.required,
            approvals: Vec::new(),
            state: ApprovalState::Pending,
            rotation_id: None,
            authenticated_by: request.asker.authenticated_by,
        };
        let _guard = self.write.lock().await;
        store.put(&record, Some(0)).await?;
        let previous = store.latest(policy).await?;
        // From here the pointer makes the new request the only approvable one.
        store.set_latest(policy, Some(&record.id)).await?;
        self.due()
            .insert(policy.to_owned(), (record.id.clone(), expires));
        let mut superseded = None;
        if let Some(old_id) = previous.filter(|p| *p != record.id) {
            match store.get(&old_id).await {
                Ok(Some((mut old, version))) if old.state == ApprovalState::Pending => {
                    old.state = ApprovalState::Superseded;
                    match store.put(&old, Some(version)).await {
                        Ok(_) => superseded = Some(old),
                        Err(e) => {
                            tracing::warn!(request = %old_id, error = %e, "Cannot mark the superseded request; the pointer already retires it.")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(request = %old_id, error = %e, "Cannot read the previous request of the policy.")
                }
            }
        }
        Ok(Created { record, superseded })
    }

    /// The request `id` with its effective state (see [`ApprovalRecord::state_at`]).
    pub(crate) async fn get(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRecord>, ControlError> {
        let store = self.store()?;
        let Some((mut record, _)) = store.get(id).await? else {
            return Ok(None);
        };
        if record.state == ApprovalState::Pending {
            let latest = store.latest(&record.policy).await?;
            record.state = record.state_at(latest.as_deref(), now);
        }
        Ok(Some(record))
    }

    /// Adds `caller`'s approval to request `id`. `rule_of` gives a policy's current
    /// approval rule. Errors, in this order: unknown request (404); the requester, or
    /// not an approver (403); request used, expired or superseded (410). Approving twice
    /// counts once. With enough approvals the record is written `used` before this
    /// returns, so a second call gets 410.
    pub(crate) async fn approve(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
        rule_of: impl Fn(&str) -> Option<ApprovalSpec>,
        now: DateTime<Utc>,
    ) -> Result<Approved, ControlError> {
        let store = self.store()?;
        let _guard = self.write.lock().await;
        let Some((mut record, version)) = store.get(id).await? else {
            return Err(ControlError::UnknownRequest(id.to_owned()));
        };
        if record.requester == caller.actor {
            return Err(ControlError::Forbidden(format!(
                "{}: cannot approve your own request",
                caller.name
            )));
        }
        let Some(rule) = rule_of(&record.policy) else {
            return Err(ControlError::Forbidden(format!(
                "policy {} does not require approval (any more); request the rotation again",
                record.policy
            )));
        };
        if !rule.allows(&caller.name, &caller.groups) {
            return Err(ControlError::Forbidden(format!(
                "identity {} is not an approver of policy {}",
                caller.name, record.policy
            )));
        }
        let latest = if record.state == ApprovalState::Pending {
            store.latest(&record.policy).await?
        } else {
            None
        };
        let state = record.state_at(latest.as_deref(), now);
        if state != ApprovalState::Pending {
            return Err(gone(id, state));
        }
        let mut changed = false;
        if !record.approvals.iter().any(|a| a.identity == caller.actor) {
            record.approvals.push(ApprovalEntry {
                identity: caller.actor.clone(),
                at: format_time(now),
                reason: reason.map(str::to_owned),
            });
            changed = true;
        }
        let complete = record.approvals.len() >= record.required as usize;
        if complete {
            record.state = ApprovalState::Used;
            changed = true;
        }
        let version = if changed {
            store
                .put(&record, Some(version))
                .await
                .map_err(|e| match e {
                    ApprovalError::Vault(VaultError::CasConflict { .. }) => ControlError::Busy(
                        format!("request {id} was changed at the same time; try again"),
                    ),
                    other => other.into(),
                })?
        } else {
            version
        };
        if complete {
            self.forget(&record.policy, &record.id);
            if let Err(e) = store.set_latest(&record.policy, None).await {
                // A used record is never approvable again, pointer or not.
                tracing::warn!(request = %id, error = %e, "Cannot clear the policy's pending-request pointer.");
            }
        }
        Ok(Approved {
            record,
            version,
            complete,
        })
    }

    /// Puts an approved request back to pending (its rotation could not be queued),
    /// so that any approver can trigger it again while it has not expired.
    pub(crate) async fn reopen(&self, approved: &Approved) -> Result<(), ControlError> {
        let store = self.store()?;
        let _guard = self.write.lock().await;
        let mut record = approved.record.clone();
        record.state = ApprovalState::Pending;
        store.put(&record, Some(approved.version)).await?;
        if store.latest(&record.policy).await?.is_none() {
            store.set_latest(&record.policy, Some(&record.id)).await?;
            if let Some(expires) = parse_time(&record.expires_at) {
                self.due()
                    .insert(record.policy.clone(), (record.id.clone(), expires));
            }
        }
        Ok(())
    }

    /// Notes the rotation an approved request started.
    pub(crate) async fn set_rotation(
        &self,
        id: &str,
        rotation_id: &str,
    ) -> Result<(), ControlError> {
        let store = self.store()?;
        let _guard = self.write.lock().await;
        if let Some((mut record, version)) = store.get(id).await?
            && record.rotation_id.is_none()
        {
            record.rotation_id = Some(rotation_id.into());
            store.put(&record, Some(version)).await?;
        }
        Ok(())
    }

    /// Reads the policy's pending request (start-up, new leader) for the sweep.
    pub(crate) async fn load(&self, policy: &str) -> Result<(), ControlError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let Some(id) = store.latest(policy).await? else {
            self.due().remove(policy);
            return Ok(());
        };
        match store.get(&id).await? {
            Some((record, _)) if record.state == ApprovalState::Pending => {
                let expires = parse_time(&record.expires_at).unwrap_or_else(Utc::now);
                self.due().insert(policy.to_owned(), (id, expires));
            }
            _ => {
                self.due().remove(policy);
            }
        }
        Ok(())
    }

    fn forget(&self, policy: &str, id: &str) {
        let mut due = self.due();
        if due.get(policy).is_some_and(|(d, _)| d == id) {
            due.remove(policy);
        }
    }

    /// When the next pending request expires.
    pub(crate) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.due().values().map(|(_, t)| *t).min()
    }

    /// Removes and returns the (policy, id) of every request expired by `now`.
    pub(crate) fn take_expired(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut due = self.due();
        let expired: Vec<(String, String)> = due
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(p, (id, _))| (p.clone(), id.clone()))
            .collect();
        for (policy, _) in &expired {
            due.remove(policy);
        }
        expired
    }

    /// Marks request `id` expired if it still is pending and past its expiry; returns
    /// it when this call did (so it is notified once). A failed write is retried by a
    /// later sweep.
    pub(crate) async fn expire(
        &self,
        policy: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRecord>, ControlError> {
        let result = self.try_expire(policy, id, now).await;
        if result.is_err() {
            let retry = now + chrono::Duration::from_std(EXPIRE_RETRY).unwrap_or_default();
            self.due()
                .entry(policy.to_owned())
                .or_insert((id.to_owned(), retry));
        }
        result
    }

    async fn try_expire(
        &self,
        policy: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRecord>, ControlError> {
        let store = self.store()?;
        let _guard = self.write.lock().await;
        let Some((mut record, version)) = store.get(id).await? else {
            return Ok(None);
        };
        if record.state != ApprovalState::Pending {
            return Ok(None);
        }
        let latest = store.latest(policy).await?;
        match record.state_at(latest.as_deref(), now) {
            ApprovalState::Expired => {
                record.state = ApprovalState::Expired;
                store.put(&record, Some(version)).await?;
                if latest.as_deref() == Some(id) {
                    store.set_latest(policy, None).await?;
                }
                Ok(Some(record))
            }
            ApprovalState::Pending => {
                // Not yet (clock skew between the sweep and the record): look again then.
                if let Some(t) = parse_time(&record.expires_at) {
                    self.due().insert(policy.to_owned(), (id.to_owned(), t));
                }
                Ok(None)
            }
            // Superseded: its successor's creation already said so.
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ApprovalState, expires_at: &str) -> ApprovalRecord {
        ApprovalRecord {
            id: "01J00000000000000000000000".into(),
            policy: "p".into(),
            requester: "api:alice".into(),
            reason: Some("r".into()),
            ticket: None,
            compromise: false,
            created_at: "2027-01-01T00:00:00.000Z".into(),
            expires_at: expires_at.into(),
            required: 1,
            approvals: Vec::new(),
            state,
            rotation_id: None,
            authenticated_by: crate::audit::AuthMethod::ApiToken,
        }
    }

    #[test]
    fn effective_state_follows_the_pointer_and_the_clock() {
        let now = parse_time("2027-01-01T01:00:00Z").expect("time");
        let id = "01J00000000000000000000000";
        let r = record(ApprovalState::Pending, "2027-01-01T02:00:00.000Z");
        assert_eq!(r.state_at(Some(id), now), ApprovalState::Pending);
        assert_eq!(
            r.state_at(Some("01J00000000000000000000001"), now),
            ApprovalState::Superseded
        );
        assert_eq!(r.state_at(None, now), ApprovalState::Superseded);
        let late = parse_time("2027-01-01T02:00:00Z").expect("time");
        assert_eq!(r.state_at(Some(id), late), ApprovalState::Expired);
        let used = record(ApprovalState::Used, "2027-01-01T02:00:00.000Z");
        assert_eq!(used.state_at(None, late), ApprovalState::Used);
    }

    #[test]
    fn the_sweep_takes_only_what_is_due() {
        let a = Approvals::new(None, Duration::ZERO);
        assert_eq!(a.default_ttl, DEFAULT_APPROVAL_TTL);
        let t = |s: &str| parse_time(s).expect("time");
        a.due()
            .insert("p".into(), ("A".into(), t("2027-01-01T01:00:00Z")));
        a.due()
            .insert("q".into(), ("B".into(), t("2027-01-01T03:00:00Z")));
        assert_eq!(a.next_expiry(), Some(t("2027-01-01T01:00:00Z")));
        assert!(a.take_expired(t("2027-01-01T00:59:59Z")).is_empty());
        assert_eq!(
            a.take_expired(t("2027-01-01T02:00:00Z")),
            [("p".to_owned(), "A".to_owned())]
        );
        assert_eq!(a.next_expiry(), Some(t("2027-01-01T03:00:00Z")));
        a.forget("q", "other");
        assert!(a.next_expiry().is_some());
        a.forget("q", "B");
        assert_eq!(a.next_expiry(), None);
    }

    #[test]
    fn an_approved_request_becomes_the_requesters_rotation() {
        let mut r = record(ApprovalState::Used, "2027-01-01T02:00:00.000Z");
        r.compromise = true;
        r.approvals.push(ApprovalEntry {
            identity: "api:bob".into(),
            at: "2027-01-01T00:10:00.000Z".into(),
            reason: None,
        });
        let req = r.rotation_request();
        assert_eq!(req.trigger, Trigger::Compromise);
        assert_eq!(req.asker.actor, "api:alice");
        assert_eq!(req.approvers, ["api:bob"]);
        assert!(!req.break_glass);
        assert_eq!(req.approval_request.as_deref(), Some(r.id.as_str()));
        let n = r.notification(NotifyEvent::ApprovalExpired, "x".into());
        assert_eq!(n.request_id.as_deref(), Some(r.id.as_str()));
        assert_eq!(n.status.as_deref(), Some("used"));
        assert_eq!(n.trigger.as_deref(), Some("compromise"));
    }

    #[tokio::test]
    async fn corrupt_approval_records_and_pointers_are_errors() {
        use crate::state::memory::MemoryStore;
        let store = Arc::new(MemoryStore::new());
        let approvals = ApprovalStore::with_store(store.clone());
        let id = ulid::Ulid::new().to_string();
        let r = record(ApprovalState::Pending, "2030-01-01T00:00:00Z");
        let key = Key::Request(&r.id);
        assert!(approvals.get(&r.id).await.unwrap().is_none());
        let v = approvals.put(&r, Some(0)).await.unwrap();
        assert!(matches!(
            approvals.put(&r, Some(0)).await,
            Err(ApprovalError::Vault(VaultError::CasConflict { .. }))
        ));
        assert_eq!(approvals.get(&r.id).await.unwrap(), Some((r.clone(), v)));
        for data in [
            serde_json::json!({"policy": "p"}),
            serde_json::json!({"record": "{\"id\": \"canary-id\"}"}),
        ] {
            let Value::Object(data) = data else {
                unreachable!()
            };
            store.write(key, &data, None).await.unwrap();
            let e = approvals.get(&r.id).await.expect_err("corrupt");
            assert_eq!(e.kind(), "approval_decode");
            let text = e.to_string();
            assert!(
                text.contains(&format!("secret/rotor/requests/{}", r.id)),
                "{text}"
            );
            assert!(!text.contains("canary"), "{text}");
        }
        // The pending pointer: set, read, cleared; one without an id is an error.
        approvals.set_latest("p", Some(&id)).await.unwrap();
        assert_eq!(approvals.latest("p").await.unwrap(), Some(id));
        approvals.set_latest("p", None).await.unwrap();
        assert_eq!(approvals.latest("p").await.unwrap(), None);
        let mut bad = Map::new();
        bad.insert("ids".into(), Value::Null);
        store
            .write(Key::PendingRequest("p"), &bad, None)
            .await
            .unwrap();
        let e = approvals.latest("p").await.expect_err("corrupt pointer");
        assert!(
            e.to_string().contains("secret/rotor/pending-request/p"),
            "{e}"
        );
    }
}
