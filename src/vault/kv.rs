//! KV v2: reads (latest or one version), check-and-set writes, destroying a path, and
//! resolving `…From` references (Vault, environment, file).

use std::collections::HashMap;

use secrecy::SecretString;
use serde_json::{Map, Value};
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

use super::request::{describe, is_cas_mismatch, is_not_found};
use super::{Vault, VaultError};
use crate::policy::Reference;
use crate::secret::SecretMap;

/// One version of a KV v2 secret.
#[derive(Debug, Clone)]
pub struct KvEntry<T> {
    /// The secret's data.
    pub data: T,
    /// Its version number.
    pub version: u64,
    /// The path's custom metadata.
    pub custom_metadata: HashMap<String, String>,
    /// When this version was written (RFC 3339, as Vault reports it).
    pub created_time: String,
}

impl Vault {
    /// Reads the latest version of a KV v2 secret as raw JSON; `None` when the path
    /// has no live version (never written, deleted or destroyed).
    pub async fn kv_read_value(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<KvEntry<Map<String, Value>>>, VaultError> {
        self.kv_read_at(mount, path, None).await
    }

    async fn kv_read_at(
        &self,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<KvEntry<Map<String, Value>>>, VaultError> {
        let endpoint = ReadSecretRequest::builder()
            .mount(mount)
            .path(path)
            .version(version)
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        let failed = |detail: String| VaultError::Read {
            mount: mount.into(),
            path: path.into(),
            detail,
        };
        match vaultrs::api::exec_with_result(self.client().as_ref(), endpoint).await {
            Ok(res) => {
                let data = match res.data {
                    Value::Object(map) => map,
                    // A deleted version reads back with `data: null`.
                    Value::Null => return Ok(None),
                    _ => return Err(failed("the secret's data is not a JSON object".into())),
                };
                Ok(Some(KvEntry {
                    data,
                    version: res.metadata.version,
                    custom_metadata: res.metadata.custom_metadata.unwrap_or_default(),
                    created_time: res.metadata.created_time,
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(failed(describe(&e))),
        }
    }

    /// Reads the latest version of a KV v2 secret as secret values.
    pub async fn kv_read(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<KvEntry<SecretMap>>, VaultError> {
        Ok(self.kv_read_value(mount, path).await?.map(secret_entry))
    }

    /// Reads one version of a KV v2 secret as secret values.
    pub async fn kv_read_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
    ) -> Result<Option<KvEntry<SecretMap>>, VaultError> {
        let entry = self.kv_read_at(mount, path, Some(version)).await?;
        Ok(entry.map(secret_entry))
    }

    /// Writes a KV v2 secret. With `cas = Some(v)` the write succeeds only if the
    /// current version is `v` (`0`: only if the path does not exist yet); a mismatch
    /// is [`VaultError::CasConflict`]. Returns the new version.
    pub async fn kv_write_value(
        &self,
        mount: &str,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let failed = |detail: String| VaultError::Write {
            mount: mount.into(),
            path: path.into(),
            detail,
        };
        let result = match cas {
            Some(v) => {
                let cas32 = u32::try_from(v).map_err(|_| {
                    failed(format!(
                        "version {v} does not fit the check-and-set parameter"
                    ))
                })?;
                vaultrs::kv2::set_with_options(
                    self.client().as_ref(),
                    mount,
                    path,
                    data,
                    SetSecretRequestOptions { cas: cas32 },
                )
                .await
            }
            None => vaultrs::kv2::set(self.client().as_ref(), mount, path, data).await,
        };
        match result {
            Ok(meta) => Ok(meta.version),
            Err(e) if is_cas_mismatch(&e) => Err(VaultError::CasConflict {
                mount: mount.into(),
                path: path.into(),
                expected: cas.unwrap_or_default(),
            }),
            Err(e) => Err(failed(describe(&e))),
        }
    }

    /// Writes secret values to KV v2 (see [`Vault::kv_write_value`]).
    pub async fn kv_write(
        &self,
        mount: &str,
        path: &str,
        data: &SecretMap,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let json = data.to_json_object();
        self.kv_write_value(mount, path, &json, cas).await
    }

    /// Permanently deletes a KV v2 path with all its versions (used for rotor's own
    /// staging entries once a rotation has ended). Missing paths are fine.
    pub async fn kv_destroy_all(&self, mount: &str, path: &str) -> Result<(), VaultError> {
        match vaultrs::kv2::delete_metadata(self.client().as_ref(), mount, path).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(VaultError::Request {
                operation: format!("delete metadata {mount}/{path}"),
                detail: describe(&e),
            }),
        }
    }

    /// Resolves a reference to the secret values it names: a Vault reference without
    /// `key` yields all keys of the secret (policies expect `username` and
    /// `password`); with `key`, or for `env`/`file`, yields `{"value": …}`.
    pub async fn resolve(&self, reference: &Reference) -> Result<SecretMap, VaultError> {
        match reference {
            Reference::Vault { mount, path, key } => {
                let entry = self.kv_read(mount, path).await?.ok_or_else(|| {
                    VaultError::ReferenceMissing {
                        reference: describe_reference(reference),
                        detail: "no such secret".into(),
                    }
                })?;
                match key {
                    None => Ok(entry.data),
                    Some(k) => {
                        let v = entry.data.get(k).cloned().ok_or_else(|| {
                            VaultError::ReferenceMissing {
                                reference: describe_reference(reference),
                                detail: format!("the secret has no key {k:?}"),
                            }
                        })?;
                        let mut m = SecretMap::new();
                        m.insert("value", v);
                        Ok(m)
                    }
                }
            }
            Reference::Env(_) | Reference::File(_) => resolve_local(reference),
        }
    }
}

/// A read entry's data as secret values.
fn secret_entry(e: KvEntry<Map<String, Value>>) -> KvEntry<SecretMap> {
    KvEntry {
        data: SecretMap::from_json_object(&e.data),
        version: e.version,
        custom_metadata: e.custom_metadata,
        created_time: e.created_time,
    }
}

/// Resolves an `env` or `file` reference without Vault. A Vault reference is an error.
pub fn resolve_local(reference: &Reference) -> Result<SecretMap, VaultError> {
    let value = match reference {
        Reference::Env(name) => std::env::var(name).map_err(|_| VaultError::ReferenceMissing {
            reference: describe_reference(reference),
            detail: "the environment variable is not set".into(),
        })?,
        Reference::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| VaultError::ReferenceMissing {
                reference: describe_reference(reference),
                detail: e.to_string(),
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        Reference::Vault { .. } => {
            return Err(VaultError::Config(
                "a Vault reference needs a Vault client".into(),
            ));
        }
    };
    let mut map = SecretMap::new();
    // A JSON object (e.g. {"username": …, "password": …}) yields its keys.
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&value) {
        return Ok(SecretMap::from_json_object(&obj));
    }
    map.insert("value", SecretString::from(value));
    Ok(map)
}

/// A description of a reference that names where it points, never a value.
pub fn describe_reference(reference: &Reference) -> String {
    match reference {
        Reference::Vault { mount, path, key } => match key {
            Some(k) => format!("vault:{mount}/{path}#{k}"),
            None => format!("vault:{mount}/{path}"),
        },
        Reference::Env(name) => format!("env:{name}"),
        Reference::File(path) => format!("file:{}", path.display()),
    }
}
