//! Quarantine: a policy whose rotations keep failing — or whose last rotation showed
//! that the old credential still works, or that after a rollback not even the old
//! credential authenticates (a possible lockout) — is locked until a person looks. No
//! automatic attempt is made while it is quarantined. The record lives in Vault next
//! to the journal (`<prefix>/quarantine/<policy>`, see [`crate::state`]), as JSON text
//! under the key `record`, so it survives restarts and is the
//! same for every replica; `rotor release` (`POST /v1/policies/NAME/release`) lifts it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{Check, Rotation, RotationId};
use crate::state::{self, Key, StateError, Store};

/// Why and since when a policy is quarantined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantine {
    /// When it was quarantined (RFC 3339).
    pub since: String,
    /// Why, for people.
    pub reason: String,
    /// The rotation that tipped it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<RotationId>,
    /// Consecutive failed rotations counted.
    pub failures: u32,
}

/// Reads and writes quarantine records, in rotor's state store
/// ([`crate::state::Key::Quarantine`]).
#[derive(Debug, Clone)]
pub struct QuarantineStore {
    store: Arc<dyn Store>,
}

impl QuarantineStore {
    /// Records in `store` (under `<prefix>/quarantine/` of a
    /// [`crate::state::VaultStore`]).
    pub fn with_store(store: Arc<dyn Store>) -> Self {
        QuarantineStore { store }
    }

    /// The policy's quarantine, if it is quarantined. A record that does not decode
    /// is [`StateError::Corrupt`], never "not quarantined".
    pub async fn get(&self, policy: &str) -> Result<Option<Quarantine>, StateError> {
        let key = Key::Quarantine(policy);
        let found = state::QUARANTINE.read(&*self.store, key).await?;
        Ok(found.map(|(q, _)| q))
    }

    /// Quarantines a policy, or lifts its quarantine (`None`).
    pub async fn set(&self, policy: &str, q: Option<&Quarantine>) -> Result<(), StateError> {
        let key = Key::Quarantine(policy);
        match q {
            Some(q) => {
                let data = state::QUARANTINE.data(&*self.store, key, q, &[])?;
                self.store.write(key, &data, None).await?;
            }
            None => self.store.delete(key).await?,
        }
        Ok(())
    }
}

/// Why a finished rotation quarantines its policy at once, if it does: the old
/// credential is still accepted, or after a rollback the target refused the old
/// credential too. Only the target's own answer counts: a check that got no answer
/// (inconclusive: timeout, refused connection) quarantines nothing; the rotation stays
/// open and the check is repeated after a backoff.
pub fn immediate_reason(rotation: &Rotation) -> Option<String> {
    let old_accepted = rotation
        .verification
        .iter()
        .any(|v| v.check == Check::OldCredentialRejected && !v.passed && v.evidence == "accepted");
    if old_accepted {
        return Some("the old credential is still accepted by the target".into());
    }
    // The last restore check decides: an earlier one may have got no answer.
    let restore_refused = rotation
        .verification
        .iter()
        .rev()
        .find(|v| v.check == Check::OldCredentialRestored)
        .is_some_and(|v| !v.passed && !v.inconclusive && v.evidence.starts_with("rejected"));
    if restore_refused {
        return Some(
            "after a rollback the old credential does not authenticate either (possible lockout)"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::state::memory::MemoryStore;

    #[tokio::test]
    async fn quarantine_records_are_stored_as_text_and_lifted_by_a_delete() {
        let store = Arc::new(MemoryStore::new());
        let quarantines = QuarantineStore::with_store(store.clone());
        let q = Quarantine {
            since: "2027-01-01T00:00:00Z".into(),
            reason: "3 consecutive failed rotations".into(),
            rotation_id: None,
            failures: 3,
        };
        quarantines.set("p", Some(&q)).await.unwrap();
        let raw = store.read(Key::Quarantine("p")).await.unwrap().unwrap();
        assert_eq!(
            raw.data["record"],
            r#"{"since":"2027-01-01T00:00:00Z","reason":"3 consecutive failed rotations","failures":3}"#
        );
        assert_eq!(quarantines.get("p").await.unwrap(), Some(q));
        quarantines.set("p", None).await.unwrap();
        assert_eq!(quarantines.get("p").await.unwrap(), None);
        assert!(store.paths().is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_quarantine_record_is_an_error_not_a_release() {
        let store = Arc::new(MemoryStore::new());
        let quarantines = QuarantineStore::with_store(store.clone());
        for data in [
            json!({"reason": "canary-reason"}),
            json!({"record": "{\"reason\": \"canary-reason\"}"}),
        ] {
            let Value::Object(data) = data else {
                unreachable!()
            };
            store
                .write(Key::Quarantine("p"), &data, None)
                .await
                .unwrap();
            let e = quarantines.get("p").await.expect_err("corrupt");
            let text = e.to_string();
            assert_eq!(e.kind(), "state_corrupt");
            assert!(
                text.contains("quarantine record at secret/rotor/quarantine/p"),
                "{text}"
            );
            assert!(!text.contains("canary"), "{text}");
        }
    }
}
