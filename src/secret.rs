//! Secret-holding types. Every credential value lives in a [`SecretString`] (whose
//! `Debug` prints `[REDACTED]`) or a [`SecretMap`]; the only thing about a secret that
//! may leave the process in logs, errors, metrics or the audit log is its keyed
//! [`Fingerprinter::fingerprint`].

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
pub use secrecy::SecretString;
use sha2::Sha256;

/// Named secret values, e.g. the keys a credential kind writes to Vault
/// (`username`, `password`). `Debug` lists the key names only.
#[derive(Clone, Default)]
pub struct SecretMap(BTreeMap<String, SecretString>);

impl SecretMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: SecretString) {
        self.0.insert(key.into(), value);
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }

    /// The value under `key`, exposed. Callers must not log it.
    pub fn expose(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.expose_secret())
    }

    /// Key names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when both maps hold the same keys with the same values (constant time per value).
    pub fn same_values(&self, other: &SecretMap) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().all(|(k, v)| {
                other
                    .0
                    .get(k)
                    .is_some_and(|o| constant_time_eq(v.expose_secret(), o.expose_secret()))
            })
    }

    /// Builds a map from a JSON object of strings (as stored in Vault KV); non-string
    /// values are rendered as their JSON text.
    pub fn from_json_object(obj: &serde_json::Map<String, serde_json::Value>) -> Self {
        let mut map = SecretMap::new();
        for (k, v) in obj {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            map.insert(k.clone(), SecretString::from(text));
        }
        map
    }

    /// The map as a JSON object of strings, for writing to Vault. The returned value
    /// holds the secrets in clear and wipes them when dropped: pass it straight to
    /// the client and drop it.
    pub fn to_json_object(&self) -> ExposedJson {
        ExposedJson(
            self.0
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::Value::String(v.expose_secret().to_owned()),
                    )
                })
                .collect(),
        )
    }
}

/// A JSON object holding secrets in clear, zeroed on drop.
pub struct ExposedJson(serde_json::Map<String, serde_json::Value>);

impl std::ops::Deref for ExposedJson {
    type Target = serde_json::Map<String, serde_json::Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for ExposedJson {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.0.values_mut() {
            if let serde_json::Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[REDACTED]")))
            .finish()
    }
}

impl FromIterator<(String, SecretString)> for SecretMap {
    fn from_iter<T: IntoIterator<Item = (String, SecretString)>>(iter: T) -> Self {
        SecretMap(iter.into_iter().collect())
    }
}

/// Compares two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Computes keyed HMAC-SHA256 fingerprints of secrets: stable for one key, useless
/// to anyone without it. The key is loaded once (from Vault, shared by all replicas).
#[derive(Clone)]
pub struct Fingerprinter {
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl Fingerprinter {
    /// A fingerprinter over `key` (at least 32 bytes recommended).
    pub fn new(key: Vec<u8>) -> Self {
        Self {
            key: zeroize::Zeroizing::new(key),
        }
    }

    /// `hmac-sha256:` followed by the hex digest of `secret`.
    pub fn fingerprint(&self, secret: &str) -> String {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// One fingerprint over all entries of `map` (keys and values, length-prefixed).
    pub fn fingerprint_map(&self, map: &SecretMap) -> String {
        let mut mac = self.mac();
        for (k, v) in map.iter() {
            let v = v.expose_secret();
            mac.update(&(k.len() as u64).to_be_bytes());
            mac.update(k.as_bytes());
            mac.update(&(v.len() as u64).to_be_bytes());
            mac.update(v.as_bytes());
        }
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let mut m = SecretMap::new();
        m.insert("password", SecretString::from("canary-3f9a"));
        let text = format!("{m:?}");
        assert!(text.contains("password"));
        assert!(!text.contains("canary-3f9a"));
    }

    #[test]
    fn fingerprints_depend_on_key_and_value() {
        let a = Fingerprinter::new(b"key-one-key-one-key-one-key-one!".to_vec());
        let b = Fingerprinter::new(b"key-two-key-two-key-two-key-two!".to_vec());
        assert_eq!(a.fingerprint("x"), a.fingerprint("x"));
        assert_ne!(a.fingerprint("x"), a.fingerprint("y"));
        assert_ne!(a.fingerprint("x"), b.fingerprint("x"));
        assert!(!a.fingerprint("secret-value").contains("secret-value"));
    }

    #[test]
    fn same_values_compares_keys_and_values() {
        let mk = |p: &str| {
            let mut m = SecretMap::new();
            m.insert("password", SecretString::from(p.to_owned()));
            m
        };
        assert!(mk("a").same_values(&mk("a")));
        assert!(!mk("a").same_values(&mk("b")));
        assert!(!mk("a").same_values(&SecretMap::new()));
    }
}
