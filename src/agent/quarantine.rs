//! Quarantine: a policy whose rotations keep failing — or whose last rotation showed
//! that the old credential still works, or that after a rollback not even the old
//! credential authenticates (a possible lockout) — is locked until a person looks. No
//! automatic attempt is made while it is quarantined. The record lives in Vault next
//! to the journal (`<prefix>/quarantine/<policy>`), so it survives restarts and is the
//! same for every replica; `rotor release` (`POST /v1/policies/NAME/release`) lifts it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::Rotation;
use crate::vault::{Vault, VaultError};

/// Why and since when a policy is quarantined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantine {
    /// When it was quarantined (RFC 3339).
    pub since: String,
    /// Why, for people.
    pub reason: String,
    /// The rotation that tipped it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// Consecutive failed rotations counted.
    pub failures: u32,
}

/// Reads and writes quarantine records.
#[derive(Debug, Clone)]
pub struct QuarantineStore {
    vault: Vault,
    mount: String,
    prefix: String,
}

impl QuarantineStore {
    /// Records under `<mount>/<prefix>/quarantine/`.
    pub fn new(vault: Vault, mount: &str, prefix: &str) -> Self {
        QuarantineStore {
            vault,
            mount: mount.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    fn path(&self, policy: &str) -> String {
        format!("{}/quarantine/{policy}", self.prefix)
    }

    /// The policy's quarantine, if it is quarantined.
    pub async fn get(&self, policy: &str) -> Result<Option<Quarantine>, VaultError> {
        let Some(entry) = self
            .vault
            .kv_read_value(&self.mount, &self.path(policy))
            .await?
        else {
            return Ok(None);
        };
        Ok(entry
            .data
            .get("record")
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str(t).ok()))
    }

    /// Quarantines a policy, or lifts its quarantine (`None`).
    pub async fn set(&self, policy: &str, q: Option<&Quarantine>) -> Result<(), VaultError> {
        match q {
            Some(q) => {
                let mut data = Map::new();
                data.insert(
                    "record".into(),
                    Value::String(serde_json::to_string(q).unwrap_or_default()),
                );
                self.vault
                    .kv_write_value(&self.mount, &self.path(policy), &data, None)
                    .await?;
            }
            None => {
                self.vault
                    .kv_destroy_all(&self.mount, &self.path(policy))
                    .await?;
            }
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
        .any(|v| v.check == "old_credential_rejected" && !v.passed && v.evidence == "accepted");
    if old_accepted {
        return Some("the old credential is still accepted by the target".into());
    }
    // The last restore check decides: an earlier one may have got no answer.
    let restore_refused = rotation
        .verification
        .iter()
        .rev()
        .find(|v| v.check == "old_credential_restored")
        .is_some_and(|v| !v.passed && !v.inconclusive && v.evidence.starts_with("rejected"));
    if restore_refused {
        return Some(
            "after a rollback the old credential does not authenticate either (possible lockout)"
                .into(),
        );
    }
    None
}
