//! The state kept in a Vault KV v2 mount: the paths, JSON and check-and-set rotor has
//! always used.

use serde_json::{Map, Value};

use super::{Entry, Key, Store};
use crate::vault::{Vault, VaultError};

/// rotor's records in the KV v2 mount `mount`, under `prefix` (`secret`, `rotor` by
/// default: `secret/rotor/journal/<policy>`, …).
#[derive(Debug, Clone)]
pub struct VaultStore {
    vault: Vault,
    mount: String,
    prefix: String,
}

impl VaultStore {
    /// Records under `<mount>/<prefix>/`.
    pub fn new(vault: Vault, mount: impl Into<String>, prefix: impl Into<String>) -> Self {
        VaultStore {
            vault,
            mount: mount.into(),
            prefix: prefix.into(),
        }
    }
}

#[async_trait::async_trait]
impl Store for VaultStore {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn read(&self, key: Key<'_>) -> Result<Option<Entry>, VaultError> {
        let entry = self
            .vault
            .kv_read_value(&self.mount, &self.path(key))
            .await?;
        Ok(entry.map(|e| Entry {
            data: e.data,
            version: e.version,
        }))
    }

    async fn write(
        &self,
        key: Key<'_>,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        self.vault
            .kv_write_value(&self.mount, &self.path(key), data, cas)
            .await
    }

    async fn delete(&self, key: Key<'_>) -> Result<(), VaultError> {
        self.vault
            .kv_destroy_all(&self.mount, &self.path(key))
            .await
    }
}
