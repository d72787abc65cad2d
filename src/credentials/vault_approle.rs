//! Vault AppRole secret-ids (`vault-approle`, strategy `overlap`): a new secret-id is
//! issued next to the old one, and the old one is destroyed by its accessor once the
//! consumers have the new one.
//!
//! - [`ApproleTarget::issue`] reads the role-id and creates a secret-id with the policy's
//!   metadata plus `rotor_rotation: <rotation id>`; the value holds `roleId`, `secretId`
//!   and `secretIdAccessor`.
//! - [`ApproleTarget::destroy`] destroys a secret-id by accessor (or by the secret-id
//!   itself). OpenBao 2.7 answers HTTP 500 "failed to find accessor entry" when the
//!   accessor is already gone, and 500 "role … does not exist" for a deleted role; both
//!   are confirmed (accessor lookup 404, role-id 404) and count as done.
//! - [`ApproleTarget::login`] logs in anonymously on `auth/<mount>/login`; a token is
//!   [`AuthOutcome::Accepted`] and revoked at once, HTTP 400 (OpenBao: `invalid role or
//!   secret ID`) is [`AuthOutcome::Rejected`], anything else [`AuthOutcome::Unreachable`].
//! - [`ApproleTarget::terminate_sessions`] revokes the role's login tokens with the
//!   accessor scan described in [`super::vault_userpass`] (O(number of tokens), `sudo`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tracing::{debug, info};

use super::adapters::IssuingTarget;
use super::vault_userpass::{
    MountEntry, WipedJson, api_error, as_rotor, check_mount, non_empty, probe_login,
    revoke_entry_logins, str_field,
};
use super::{AuthOutcome, CredentialError};
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, Vault};

pub use super::vault_userpass::VaultAuthError;

/// An AppRole role on a Vault auth mount, managed with rotor's token.
#[derive(Debug, Clone)]
pub struct ApproleTarget {
    vault: Vault,
    role: MountEntry,
    metadata: BTreeMap<String, String>,
}

impl ApproleTarget {
    /// The role `role` on the AppRole mount `mount` (e.g. `approle`); `metadata` is
    /// attached to every secret-id issued. No I/O; names are checked by each call.
    pub fn new(vault: Vault, mount: &str, role: &str, metadata: &BTreeMap<String, String>) -> Self {
        Self {
            vault,
            role: MountEntry::new(mount, "role", "role", role),
            metadata: metadata.clone(),
        }
    }

    fn role_not_found(&self) -> VaultAuthError {
        VaultAuthError::RoleNotFound {
            mount: self.role.mount.clone(),
            role: self.role.name.clone(),
        }
    }

    /// The role-id, `None` when the role does not exist (a missing mount is an error).
    async fn role_id(&self) -> Result<Option<SecretString>, VaultAuthError> {
        let path = format!("{}/role-id", self.role.path());
        let (operation, resp) = as_rotor(&self.vault, Method::GET, &path, None).await?;
        match resp.status {
            200..=299 => {
                let answer = resp.json();
                str_field(answer.pointer("/data").unwrap_or(&Value::Null), "role_id")
                    .filter(|id| !id.is_empty())
                    .map(|id| Some(SecretString::from(id.to_owned())))
                    .ok_or(VaultAuthError::InvalidResponse {
                        operation,
                        field: "data.role_id",
                    })
            }
            // A missing role answers 404 with no error text; a missing mount answers
            // 404 "no handler for route".
            404 if resp.errors().is_empty() => Ok(None),
            _ => Err(api_error(operation, &resp, &[])),
        }
    }

    /// Creates a new secret-id for the role with the policy's metadata plus
    /// `rotor_rotation: <rotation_id>`, and returns `roleId`, `secretId` and
    /// `secretIdAccessor`. Earlier secret-ids keep working. Fails with
    /// [`VaultAuthError::RoleNotFound`] when the role does not exist.
    pub async fn issue(&self, rotation_id: &str) -> Result<SecretMap, VaultAuthError> {
        self.role.check()?;
        let role_id = self.role_id().await?.ok_or_else(|| self.role_not_found())?;
        let mut metadata: Map<String, Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        metadata.insert(
            "rotor_rotation".into(),
            Value::String(rotation_id.to_owned()),
        );
        // The API takes the metadata as a JSON-encoded string.
        let body = json!({ "metadata": Value::Object(metadata).to_string() });
        let path = format!("{}/secret-id", self.role.path());
        let (operation, resp) = as_rotor(&self.vault, Method::POST, &path, Some(&body)).await?;
        if resp.status == 404 {
            return Err(self.role_not_found());
        }
        if !resp.is_success() {
            return Err(api_error(operation, &resp, &[role_id.expose_secret()]));
        }
        let answer = WipedJson(resp.json());
        let data = answer.0.get("data").unwrap_or(&Value::Null);
        let field = |name: &str| str_field(data, name).filter(|v| !v.is_empty());
        let secret_id = field("secret_id").ok_or_else(|| VaultAuthError::InvalidResponse {
            operation: operation.clone(),
            field: "data.secret_id",
        })?;
        let accessor =
            field("secret_id_accessor").ok_or_else(|| VaultAuthError::InvalidResponse {
                operation: operation.clone(),
                field: "data.secret_id_accessor",
            })?;
        let mut value = SecretMap::new();
        value.insert("roleId", role_id);
        value.insert("secretId", SecretString::from(secret_id.to_owned()));
        value.insert("secretIdAccessor", SecretString::from(accessor.to_owned()));
        info!(mount = %self.role.mount, role = %self.role.name, rotation = %rotation_id, "AppRole secret-id issued.");
        Ok(value)
    }

    /// Destroys the secret-id in `value`: by `secretIdAccessor`
    /// (`secret-id-accessor/destroy`), else by `secretId` (`secret-id/destroy`).
    /// Idempotent: a secret-id that is already gone, or whose role was deleted, is `Ok`.
    pub async fn destroy(&self, value: &SecretMap) -> Result<(), VaultAuthError> {
        self.role.check()?;
        if let Some(accessor) = non_empty(value, "secretIdAccessor") {
            let accessor = accessor.expose_secret();
            let path = format!("{}/secret-id-accessor/destroy", self.role.path());
            let body = json!({ "secret_id_accessor": accessor });
            let (operation, resp) = as_rotor(&self.vault, Method::POST, &path, Some(&body)).await?;
            if resp.is_success() {
                info!(mount = %self.role.mount, role = %self.role.name, "AppRole secret-id destroyed.");
                return Ok(());
            }
            let err = api_error(operation, &resp, &[accessor]);
            if self.accessor_gone(accessor).await {
                debug!(mount = %self.role.mount, role = %self.role.name, "AppRole secret-id was already destroyed.");
                return Ok(());
            }
            return Err(err);
        }
        let Some(secret_id) = non_empty(value, "secretId") else {
            return Err(VaultAuthError::MissingKey {
                which: "revoked",
                key: "secretIdAccessor",
            });
        };
        let path = format!("{}/secret-id/destroy", self.role.path());
        let body = WipedJson(json!({ "secret_id": secret_id.expose_secret() }));
        let (operation, resp) = as_rotor(&self.vault, Method::POST, &path, Some(&body.0)).await?;
        // An unknown secret-id answers 204 as well.
        if resp.is_success() {
            info!(mount = %self.role.mount, role = %self.role.name, "AppRole secret-id destroyed.");
            return Ok(());
        }
        let err = api_error(operation, &resp, &[secret_id.expose_secret()]);
        if let Ok(None) = self.role_id().await {
            debug!(mount = %self.role.mount, role = %self.role.name, "AppRole role is gone, and its secret-ids with it.");
            return Ok(());
        }
        Err(err)
    }

    /// After a failed destroy: true when the role is gone or the accessor lookup
    /// answers 404, i.e. the secret-id cannot be used any more.
    async fn accessor_gone(&self, accessor: &str) -> bool {
        if let Ok(None) = self.role_id().await {
            return true;
        }
        let path = format!("{}/secret-id-accessor/lookup", self.role.path());
        let body = json!({ "secret_id_accessor": accessor });
        matches!(
            self.vault
                .request(Method::POST, &path, Some(&body), AuthAs::Rotor)
                .await,
            Ok(resp) if resp.status == 404
        )
    }

    /// Logs in with `value`'s `roleId` and `secretId` (`POST auth/<mount>/login`, no
    /// token). A token means [`AuthOutcome::Accepted`] and is revoked at once; HTTP 400
    /// (OpenBao: `invalid role or secret ID`) is [`AuthOutcome::Rejected`] with code
    /// `"400"`; anything else is [`AuthOutcome::Unreachable`]. Never panics.
    pub async fn login(&self, value: &SecretMap) -> AuthOutcome {
        if let Err(e) = check_mount(&self.role.mount) {
            return AuthOutcome::Unreachable {
                reason: e.to_string(),
            };
        }
        let (Some(role_id), Some(secret_id)) =
            (non_empty(value, "roleId"), non_empty(value, "secretId"))
        else {
            return AuthOutcome::Unreachable {
                reason: "the value has no roleId or no secretId".into(),
            };
        };
        let path = format!("auth/{}/login", self.role.mount);
        let body = WipedJson(json!({
            "role_id": role_id.expose_secret(),
            "secret_id": secret_id.expose_secret(),
        }));
        probe_login(
            &self.vault,
            &path,
            &body.0,
            &[secret_id.expose_secret(), role_id.expose_secret()],
        )
        .await
    }

    /// Revokes the tokens obtained by logins to this role (token `path`
    /// `auth/<mount>/login`, `meta.role_name` = role) issued before `cutoff` (`None`:
    /// all), with their children; returns how many. Same accessor scan, cost and
    /// permissions as [`super::vault_userpass::UserpassTarget::terminate_sessions`].
    pub async fn terminate_sessions(
        &self,
        cutoff: Option<SystemTime>,
    ) -> Result<u64, VaultAuthError> {
        let revoked = revoke_entry_logins(&self.vault, &self.role, cutoff, |rest, data| {
            rest.is_empty()
                && data
                    .get("meta")
                    .and_then(|meta| str_field(meta, "role_name"))
                    == Some(self.role.name.as_str())
        })
        .await?;
        info!(mount = %self.role.mount, role = %self.role.name, tokens = revoked, "AppRole login tokens revoked.");
        Ok(revoked)
    }
}

impl IssuingTarget for ApproleTarget {
    async fn issue(
        &self,
        _current: &SecretMap,
        rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        Ok(ApproleTarget::issue(self, rotation_id).await?)
    }

    async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError> {
        self.destroy(value).await?;
        Ok("secret-id destroyed".into())
    }

    async fn login(&self, value: &SecretMap) -> AuthOutcome {
        ApproleTarget::login(self, value).await
    }

    async fn terminate(&self, cutoff: Option<SystemTime>) -> Result<u64, CredentialError> {
        Ok(self.terminate_sessions(cutoff).await?)
    }
}
