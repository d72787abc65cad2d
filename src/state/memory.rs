//! An in-memory [`Store`] with the semantics of the Vault one (versions, check-and-set
//! conflicts, deletes), so the engine's and the agent's records can be tested without
//! OpenBao. It keeps values in clear in memory: for tests only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};

use super::{Entry, Key, Store};
use crate::vault::VaultError;

/// One key's latest version.
struct Slot {
    version: u64,
    data: Map<String, Value>,
}

/// rotor's records in memory, under the same mount and prefix names as in Vault (so
/// messages and records name the same places). `Debug` shows how many keys it holds,
/// never a value.
pub struct MemoryStore {
    mount: String,
    prefix: String,
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("keys", &self.slots().len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store named like the default Vault one (`secret`, `rotor`).
    pub fn new() -> Self {
        MemoryStore::named("secret", "rotor")
    }

    /// An empty store named `<mount>/<prefix>`.
    pub fn named(mount: impl Into<String>, prefix: impl Into<String>) -> Self {
        MemoryStore {
            mount: mount.into(),
            prefix: prefix.into(),
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// The paths that hold a record now, in order.
    pub fn paths(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        // Every change replaces a slot whole: a poisoned lock still holds good data.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn read(&self, key: Key<'_>) -> Result<Option<Entry>, VaultError> {
        Ok(self.slots().get(&self.path(key)).map(|slot| Entry {
            data: slot.data.clone(),
            version: slot.version,
        }))
    }

    async fn write(
        &self,
        key: Key<'_>,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let path = self.path(key);
        let mut slots = self.slots();
        let current = slots.get(&path).map_or(0, |s| s.version);
        if let Some(expected) = cas
            && expected != current
        {
            return Err(VaultError::CasConflict {
                mount: self.mount.clone(),
                path,
                expected,
            });
        }
        let version = current + 1;
        slots.insert(
            path,
            Slot {
                version,
                data: data.clone(),
            },
        );
        Ok(version)
    }

    async fn delete(&self, key: Key<'_>) -> Result<(), VaultError> {
        self.slots().remove(&self.path(key));
        Ok(())
    }
}
