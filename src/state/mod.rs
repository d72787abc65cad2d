//! Everything rotor keeps in Vault for itself, in one place: the rotation journal,
//! staging values, reuse histories, retirement records, quarantine records, approval
//! requests and the per-policy pending-request pointers, and the fingerprint key.
//!
//! Each of them is a [`Key`]; the only place that turns a key into a KV path is
//! [`Key::path`]. Records are read and written through the narrow [`Store`] trait:
//! latest version, check-and-set write, delete with every version. [`VaultStore`]
//! keeps them in a KV v2 mount (`<mount>/<prefix>/…`, the paths and JSON rotor has
//! always used); [`memory::MemoryStore`] keeps them in memory with the same
//! semantics, for tests.
//!
//! A stored record that is not what rotor writes is an error ([`Corrupt`]) naming
//! where it is, never what it holds: it is never read as "no record".

pub mod memory;
pub mod records;
mod vault;

use std::fmt;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::secret::{Fingerprinter, SecretMap, SecretString};
use crate::vault::VaultError;

pub use self::vault::VaultStore;

/// One record rotor keeps, by what it is. Its path under the store's prefix is
/// [`Key::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    /// A policy's rotation journal (`journal/<policy>`).
    Journal(&'a str),
    /// The new value of one rotation until it ends (`staging/<policy>/<rotation>`);
    /// holds a secret.
    Staging {
        /// The policy's name (`metadata.name`).
        policy: &'a str,
        /// Rotation id (ULID).
        rotation: &'a str,
    },
    /// A policy's reuse history of fingerprints (`history/<policy>`).
    History(&'a str),
    /// A policy's retirement record (`retired/<policy>`).
    Retired(&'a str),
    /// A policy's quarantine record (`quarantine/<policy>`).
    Quarantine(&'a str),
    /// One approval request, by id (`requests/<id>`).
    Request(&'a str),
    /// The id of a policy's latest pending approval request (`pending-request/<policy>`).
    PendingRequest(&'a str),
    /// The HMAC key of fingerprints all replicas share (`config/fingerprint-key`);
    /// holds a secret.
    FingerprintKey,
}

impl Key<'_> {
    /// The key's path under the state mount, below `prefix` (default `rotor`).
    pub fn path(&self, prefix: &str) -> String {
        match self {
            Key::Journal(policy) => format!("{prefix}/journal/{policy}"),
            Key::Staging { policy, rotation } => format!("{prefix}/staging/{policy}/{rotation}"),
            Key::History(policy) => format!("{prefix}/history/{policy}"),
            Key::Retired(policy) => format!("{prefix}/retired/{policy}"),
            Key::Quarantine(policy) => format!("{prefix}/quarantine/{policy}"),
            Key::Request(id) => format!("{prefix}/requests/{id}"),
            Key::PendingRequest(policy) => format!("{prefix}/pending-request/{policy}"),
            Key::FingerprintKey => format!("{prefix}/config/fingerprint-key"),
        }
    }
}

/// The latest version of a stored record. `Debug` shows the key names and the
/// version only, and the values are wiped when it is dropped: staging values and the
/// fingerprint key are secrets.
pub struct Entry {
    /// The record's JSON object.
    pub data: Map<String, Value>,
    /// Its version (the check-and-set base of the next write).
    pub version: u64,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.data.values_mut() {
            if let Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

/// Where rotor keeps its own records: KV v2 semantics, one JSON object per key.
///
/// - [`Store::read`] returns the latest version, `None` when the key has none (never
///   written, or deleted);
/// - [`Store::write`] with `cas = Some(v)` succeeds only if the latest version is `v`
///   (`0`: only if the key does not exist), else it is
///   [`VaultError::CasConflict`]; it returns the new version (versions count up from 1
///   and are never reused until the key is deleted);
/// - [`Store::delete`] removes the key and all its versions; a missing key is fine.
#[async_trait::async_trait]
pub trait Store: fmt::Debug + Send + Sync {
    /// The KV mount the records live in (named in messages and records).
    fn mount(&self) -> &str;

    /// The path prefix under the mount (default `rotor`).
    fn prefix(&self) -> &str;

    /// The latest version of `key`, if any.
    async fn read(&self, key: Key<'_>) -> Result<Option<Entry>, VaultError>;

    /// Writes `data` as the new version of `key`, with check-and-set when `cas` is
    /// given. Returns the new version.
    async fn write(
        &self,
        key: Key<'_>,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError>;

    /// Deletes `key` with all its versions.
    async fn delete(&self, key: Key<'_>) -> Result<(), VaultError>;

    /// `key`'s path under the mount.
    fn path(&self, key: Key<'_>) -> String {
        key.path(self.prefix())
    }

    /// `key`'s place, `<mount>/<path>`, for messages and records.
    fn location(&self, key: Key<'_>) -> String {
        format!("{}/{}", self.mount(), self.path(key))
    }
}

/// A stored record that is not what rotor writes. Names where it is and what is
/// wrong with it, never its content.
#[derive(Debug, thiserror::Error)]
#[error("the {record} at {location} is unreadable ({detail}); fix or delete it")]
pub struct Corrupt {
    /// What the record is, e.g. `quarantine record`.
    pub record: &'static str,
    /// `<mount>/<path>`.
    pub location: String,
    /// What is wrong (a missing key, a type error and its position); no value.
    pub detail: String,
}

/// A failed read or write of rotor's own records.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum StateError {
    /// Vault failed, refused, or found another version than expected.
    #[error(transparent)]
    #[strum(disabled)]
    Vault(#[from] VaultError),
    /// A stored record cannot be decoded.
    #[error(transparent)]
    #[strum(serialize = "state_corrupt")]
    Corrupt(#[from] Corrupt),
}

impl StateError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StateError::Vault(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed (a corrupt record stays corrupt).
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Vault(e) => e.is_transient(),
            StateError::Corrupt(_) => false,
        }
    }
}

/// What is wrong with JSON that does not decode, without the value: serde's message
/// up to the first quoted part (`invalid type`, `missing field \`x\``) and the
/// position when there is one.
pub fn decode_detail(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let names_a_field = ["missing field", "unknown field", "duplicate field"]
        .iter()
        .any(|p| text.starts_with(p));
    let mut detail = if names_a_field {
        // Field names are rotor's schema, not data; the message ends at the name.
        text
    } else {
        text.split([':', '"', '`', ','])
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    // serde_json puts the position at the end of every message; it is added once below.
    if let Some(at) = detail.find(" at line ") {
        detail.truncate(at);
    }
    if error.line() > 0 {
        detail.push_str(&format!(
            " at line {} column {}",
            error.line(),
            error.column()
        ));
    }
    detail
}

/// How one kind of record sits in its key's JSON object: under which key, and as
/// JSON (an object) or as JSON text (a string). Next to it, some records keep a copy
/// of their state for people browsing Vault; rotor reads only this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// What the record is, for messages (`journal`, `quarantine record`).
    pub name: &'static str,
    /// The key holding it.
    pub field: &'static str,
    /// Stored as JSON text rather than as a JSON object.
    pub text: bool,
}

/// A policy's rotation journal: the rotation under `rotation` (next to `status`).
pub const JOURNAL: Layout = Layout::object("journal", "rotation");
/// A policy's retirement record: under `retirement` (next to `state`).
pub const RETIREMENT: Layout = Layout::object("retirement record", "retirement");
/// A policy's quarantine record: JSON text under `record`.
pub const QUARANTINE: Layout = Layout::text("quarantine record", "record");
/// An approval request: JSON text under `record` (next to `policy` and `state`).
pub const APPROVAL: Layout = Layout::text("approval record", "record");

impl Layout {
    /// A record kept as a JSON object under `field`.
    pub const fn object(name: &'static str, field: &'static str) -> Layout {
        Layout {
            name,
            field,
            text: false,
        }
    }

    /// A record kept as JSON text under `field`.
    pub const fn text(name: &'static str, field: &'static str) -> Layout {
        Layout {
            name,
            field,
            text: true,
        }
    }

    /// The record at `key` and its version, if there is one. One that does not decode
    /// is [`Corrupt`].
    pub async fn read<T: DeserializeOwned>(
        &self,
        store: &dyn Store,
        key: Key<'_>,
    ) -> Result<Option<(T, u64)>, StateError> {
        let Some(entry) = store.read(key).await? else {
            return Ok(None);
        };
        let corrupt = |detail: String| Corrupt {
            record: self.name,
            location: store.location(key),
            detail,
        };
        let field = self.field;
        let decoded = match (entry.data.get(field), self.text) {
            (None, _) => return Err(corrupt(format!("no key `{field}`")).into()),
            (Some(Value::String(text)), true) => serde_json::from_str(text),
            (Some(_), true) => return Err(corrupt(format!("`{field}` is not text")).into()),
            (Some(value), false) => serde_json::from_value(value.clone()),
        };
        let decoded = decoded.map_err(|e| corrupt(decode_detail(&e)))?;
        Ok(Some((decoded, entry.version)))
    }

    /// `value` as this layout stores it at `key` (a JSON object, or JSON text in the
    /// type's field order), to put under [`Layout::field`]. Serialising rotor's own
    /// types does not fail; if it ever did, the error names the place.
    pub fn encode<T: serde::Serialize>(
        &self,
        store: &dyn Store,
        key: Key<'_>,
        value: &T,
    ) -> Result<Value, StateError> {
        let encoded = if self.text {
            serde_json::to_string(value).map(Value::String)
        } else {
            serde_json::to_value(value)
        };
        encoded.map_err(|e| {
            Corrupt {
                record: self.name,
                location: store.location(key),
                detail: format!("cannot be encoded: {}", decode_detail(&e)),
            }
            .into()
        })
    }

    /// The data written for a record: `value` encoded under [`Layout::field`], then
    /// `extra` (copies of a state for people browsing Vault).
    pub fn data<T: serde::Serialize>(
        &self,
        store: &dyn Store,
        key: Key<'_>,
        value: &T,
        extra: &[(&str, &str)],
    ) -> Result<Map<String, Value>, StateError> {
        let mut data = Map::new();
        data.insert(self.field.into(), self.encode(store, key, value)?);
        for (k, v) in extra {
            data.insert((*k).into(), Value::String((*v).into()));
        }
        Ok(data)
    }
}

/// A rotation's staged value, if it is still there.
pub async fn read_staged(
    store: &dyn Store,
    policy: &str,
    rotation: &str,
) -> Result<Option<SecretMap>, VaultError> {
    let entry = store.read(Key::Staging { policy, rotation }).await?;
    Ok(entry.map(|e| SecretMap::from_json_object(&e.data)))
}

/// Stages a rotation's new value: create-only (check-and-set 0), so a second value can
/// never replace the first ([`VaultError::CasConflict`] when one is there).
pub async fn write_staged(
    store: &dyn Store,
    policy: &str,
    rotation: &str,
    value: &SecretMap,
) -> Result<u64, VaultError> {
    let json = value.to_json_object();
    store
        .write(Key::Staging { policy, rotation }, &json, Some(0))
        .await
}

/// Destroys a rotation's staged value (all versions); a missing one is fine.
pub async fn delete_staged(
    store: &dyn Store,
    policy: &str,
    rotation: &str,
) -> Result<(), VaultError> {
    store.delete(Key::Staging { policy, rotation }).await
}

/// Loads the HMAC key all replicas share, creating it once (check-and-set 0; a
/// replica that loses the race reads the winner's).
pub async fn fingerprint_key(store: &dyn Store) -> Result<Fingerprinter, StateError> {
    let key = Key::FingerprintKey;
    for _ in 0..2 {
        if let Some(entry) = store.read(key).await? {
            let bytes = SecretMap::from_json_object(&entry.data)
                .expose("key")
                .and_then(|k| hex::decode(k).ok())
                .filter(|k| k.len() >= 32)
                .ok_or_else(|| Corrupt {
                    record: "fingerprint key",
                    location: store.location(key),
                    detail: "key `key` must hold at least 32 hex-encoded bytes".into(),
                })?;
            return Ok(Fingerprinter::new(bytes));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        let mut data = SecretMap::new();
        data.insert("key", SecretString::from(hex::encode(bytes)));
        match store.write(key, &data.to_json_object(), Some(0)).await {
            Ok(_) | Err(VaultError::CasConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::Read {
        mount: store.mount().to_owned(),
        path: store.path(key),
        detail: "the fingerprint key could not be created".into(),
    }
    .into())
}

#[cfg(test)]
mod tests;
