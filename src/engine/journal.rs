//! The rotation journal: one JSON record per policy in rotor's state store
//! ([`crate::state`]; in Vault KV v2 at `<state mount>/rotor/journal/<policy>`), written with check-and-set before every
//! step's side effect. Because it lives in Vault, any replica can resume a rotation;
//! because every write is check-and-set on the version it read, two agents can never
//! drive the same policy's rotation at once.
//!
//! The record holds no secret: values are referred to by their staging path and HMAC
//! fingerprints only.

use std::sync::Arc;

pub use crate::state::records::{
    Check, ConsumerRecord, ConsumerState, Rotation, RotationId, Status, Step, StepOutcome,
    StepRecord, Trigger, Verification,
};
use crate::state::{self, Key, StateError, Store, VaultStore};
use crate::vault::{Vault, VaultError};

/// Reads and writes journal records with check-and-set, in rotor's state store
/// ([`crate::state::Key::Journal`]).
#[derive(Debug, Clone)]
pub struct Journal {
    store: Arc<dyn Store>,
}

/// A record with the KV version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The record.
    pub rotation: Rotation,
    /// Its KV version (the check-and-set base of the next write).
    pub version: u64,
}

/// A failed journal operation.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum JournalError {
    /// Vault refused or failed.
    #[error("journal for policy {policy}: {source}")]
    #[strum(serialize = "journal_vault")]
    Vault {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// Another agent wrote the journal since we read it.
    #[error(
        "journal for policy {policy} was changed by another rotor agent; it owns this rotation now"
    )]
    #[strum(serialize = "journal_conflict")]
    Conflict {
        /// The policy's name (`metadata.name`).
        policy: String,
    },
    /// The stored record is not a rotation record.
    #[error("journal for policy {policy} is unreadable: {detail}")]
    #[strum(serialize = "journal_corrupt")]
    Corrupt {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// Where the record is and what is wrong with it (never its content).
        detail: String,
    },
}

impl JournalError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    fn from_state(policy: &str, e: StateError) -> Self {
        let policy = policy.to_owned();
        match e {
            StateError::Vault(VaultError::CasConflict { .. }) => JournalError::Conflict { policy },
            StateError::Vault(source) => JournalError::Vault { policy, source },
            StateError::Corrupt(c) => JournalError::Corrupt {
                policy,
                detail: format!("{} ({})", c.location, c.detail),
            },
        }
    }
}

impl Journal {
    /// A journal in Vault under `<mount>/<prefix>/journal/`.
    pub fn new(vault: Vault, mount: impl Into<String>, prefix: impl Into<String>) -> Self {
        Journal::with_store(Arc::new(VaultStore::new(vault, mount, prefix)))
    }

    /// A journal in `store`.
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        Journal { store }
    }

    /// KV mount of rotor's own state.
    pub fn mount(&self) -> &str {
        self.store.mount()
    }

    /// The staging path of one rotation (relative to the state mount).
    pub fn staging_path(&self, policy: &str, rotation_id: &str) -> String {
        self.store.path(Key::Staging {
            policy,
            rotation: rotation_id,
        })
    }

    /// The policy's latest record and its version, or `(None, version)` when there
    /// is none (version 0 = the path was never written).
    pub async fn load(&self, policy: &str) -> Result<(Option<Rotation>, u64), JournalError> {
        // A path with no live version was never written: rotor never deletes journal
        // versions, so 0 is the right check-and-set base.
        match state::JOURNAL
            .read(&*self.store, Key::Journal(policy))
            .await
        {
            Ok(Some((rotation, version))) => Ok((Some(rotation), version)),
            Ok(None) => Ok((None, 0)),
            Err(e) => Err(JournalError::from_state(policy, e)),
        }
    }

    /// Writes `rotation` if the journal is still at `version`; returns the new version.
    pub async fn write(&self, rotation: &Rotation, version: u64) -> Result<u64, JournalError> {
        let policy = &rotation.policy;
        let key = Key::Journal(policy);
        let failed = |e| JournalError::from_state(policy, e);
        let status = [("status", rotation.status.as_str())];
        let data = state::JOURNAL
            .data(&*self.store, key, rotation, &status)
            .map_err(failed)?;
        self.store
            .write(key, &data, Some(version))
            .await
            .map_err(|e| failed(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::state::memory::MemoryStore;

    fn journal() -> (Arc<MemoryStore>, Journal) {
        let store = Arc::new(MemoryStore::new());
        (store.clone(), Journal::with_store(store))
    }

    #[tokio::test]
    async fn a_corrupt_journal_is_reported_with_its_place() {
        let (store, journal) = journal();
        assert!(matches!(journal.load("p").await, Ok((None, 0))));
        for data in [
            json!({"status": "open"}),
            json!({"rotation": {"rotation_id": "canary-id"}, "status": "open"}),
        ] {
            let Value::Object(data) = data else {
                unreachable!()
            };
            store.write(Key::Journal("p"), &data, None).await.unwrap();
            let e = journal.load("p").await.expect_err("corrupt");
            assert_eq!(e.kind(), "journal_corrupt");
            let text = e.to_string();
            assert!(text.contains("secret/rotor/journal/p"), "{text}");
            assert!(!text.contains("canary"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_journal_write_on_a_stale_version_is_a_conflict() {
        let (_, journal) = journal();
        let rotation: Rotation = serde_json::from_value(json!({
            "rotation_id": "01JABCDEFGHJKMNPQRSTVWXYZ0", "policy": "p", "kind": "postgres",
            "strategy": "single", "trigger": "schedule", "actor": "scheduler",
            "status": "open", "canonical": "secret/app/db", "canonical_version": 3,
            "staging": "secret/rotor/staging/p/01JABCDEFGHJKMNPQRSTVWXYZ0",
            "steps": [{"step": "planned", "outcome": "ok", "started_at": "2026-01-01T00:00:00.000Z"}],
            "started_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"
        }))
        .expect("a record");
        let v1 = journal.write(&rotation, 0).await.expect("create");
        assert!(matches!(
            journal.write(&rotation, 0).await,
            Err(JournalError::Conflict { .. })
        ));
        let (back, version) = journal.load(&rotation.policy).await.expect("load");
        assert_eq!(version, v1);
        assert_eq!(back.expect("record").rotation_id, rotation.rotation_id);
    }
}
