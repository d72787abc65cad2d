//! Vault tokens used as API keys (`vault-token`, strategy `overlap`): a new token with
//! the policy's policies is created next to the old one, and the old one is revoked
//! (with its child tokens) once the consumers have the new one.
//!
//! - [`TokenTarget::issue`] creates the token from the token role when the policy names
//!   one (`auth/token/create/<role>`), else as an orphan (`auth/token/create-orphan`, so
//!   it does not die with rotor's own token; rotor's token needs `sudo` there, and for a
//!   `period`). The old token's `meta` is carried over, plus `rotor_rotation`, and so are
//!   its TTL and period where the policy leaves them unset. The value holds `token` and
//!   `accessor`.
//! - [`TokenTarget::revoke`] revokes by accessor (`revoke-accessor`, children included),
//!   else by token. OpenBao 2.7 answers 200 with the warning "No token found with this
//!   accessor" and 204 for an unknown token, so revoking twice is fine.
//! - [`TokenTarget::login`] calls `auth/token/lookup-self` with the token. A 403 is
//!   [`AuthOutcome::Rejected`] only when rotor's own `auth/token/lookup` agrees the
//!   token is invalid: a live token whose policies lack `lookup-self` (no `default`
//!   policy) is never reported dead. A token with a use limit spends one use per probe.

use std::time::Duration;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use super::adapters::IssuingTarget;
use super::vault_userpass::{
    WipedJson, api_error, as_rotor, check_segment, log_outcome, non_empty, scrub, str_field,
};
use super::{AuthOutcome, CredentialError};
use crate::policy::VaultTokenCredential;
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, Vault};

pub use super::vault_userpass::VaultAuthError;

/// What rotor keeps of an old token's lookup: never the token itself.
struct OldToken {
    meta: Map<String, Value>,
    creation_ttl: u64,
    period: u64,
}

/// Creates, revokes and probes Vault tokens with rotor's token.
#[derive(Debug, Clone)]
pub struct TokenTarget {
    vault: Vault,
    policies: Vec<String>,
    ttl: Option<Duration>,
    period: Option<Duration>,
    role: Option<String>,
    display_name: Option<String>,
}

/// Whole seconds for Vault, rounding a sub-second rest up; `None` for zero.
fn seconds(d: Duration) -> Option<u64> {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    (secs > 0).then_some(secs)
}

/// The request that names the token in `value`: its `accessor` to `by_accessor` when it
/// has one, else the `token` itself to `by_token`; with the body (wiped when dropped) and
/// the secret it holds. `None` when the value has neither.
fn by_accessor_or_token<'a>(
    value: &'a SecretMap,
    by_accessor: &'static str,
    by_token: &'static str,
) -> Option<(&'static str, WipedJson, &'a SecretString)> {
    if let Some(accessor) = non_empty(value, "accessor") {
        let body = WipedJson(json!({ "accessor": accessor.expose_secret() }));
        return Some((by_accessor, body, accessor));
    }
    let token = non_empty(value, "token")?;
    let body = WipedJson(json!({ "token": token.expose_secret() }));
    Some((by_token, body, token))
}

impl TokenTarget {
    /// A target for the policy's `vault-token` credential. No I/O.
    pub fn new(vault: Vault, spec: &VaultTokenCredential) -> Self {
        Self {
            vault,
            policies: spec.policies.clone(),
            ttl: spec.ttl,
            period: spec.period,
            role: spec.role.clone(),
            display_name: spec.display_name.clone(),
        }
    }

    /// Creates the new token with the policy's `policies`, `ttl`, `period` and
    /// `displayName`: against the token role when one is set, else as an orphan. When
    /// `old` is given and still valid, its `meta` is carried over (plus
    /// `rotor_rotation: <rotation_id>`), and so are its TTL and period where the policy
    /// leaves them unset. Returns `token` and `accessor` (no accessor for batch tokens).
    pub async fn issue(
        &self,
        old: Option<&SecretMap>,
        rotation_id: &str,
    ) -> Result<SecretMap, VaultAuthError> {
        if let Some(role) = &self.role {
            check_segment("role", role)?;
        }
        let old = match old {
            Some(value) => self.lookup_old(value).await?,
            None => None,
        };
        let mut meta = old.as_ref().map(|o| o.meta.clone()).unwrap_or_default();
        meta.insert(
            "rotor_rotation".into(),
            Value::String(rotation_id.to_owned()),
        );
        let mut body = Map::new();
        body.insert("policies".into(), json!(self.policies));
        body.insert("meta".into(), Value::Object(meta));
        let old_periodic = old.as_ref().is_some_and(|o| o.period > 0);
        let ttl = self.ttl.and_then(seconds).or_else(|| {
            old.as_ref()
                .filter(|o| !old_periodic && o.creation_ttl > 0)
                .map(|o| o.creation_ttl)
        });
        let period = self
            .period
            .and_then(seconds)
            .or_else(|| old.as_ref().map(|o| o.period).filter(|p| *p > 0));
        if let Some(ttl) = ttl {
            body.insert("ttl".into(), Value::String(format!("{ttl}s")));
        }
        if let Some(period) = period {
            body.insert("period".into(), Value::String(format!("{period}s")));
        }
        if let Some(name) = &self.display_name {
            body.insert("display_name".into(), Value::String(name.clone()));
        }
        let path = match &self.role {
            Some(role) => format!("auth/token/create/{role}"),
            None => "auth/token/create-orphan".to_owned(),
        };
        let (operation, resp) =
            as_rotor(&self.vault, Method::POST, &path, Some(&Value::Object(body))).await?;
        if !resp.is_success() {
            return Err(api_error(operation, &resp, &[]));
        }
        let answer = WipedJson(resp.json());
        let auth = answer.0.get("auth").unwrap_or(&Value::Null);
        let token = str_field(auth, "client_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VaultAuthError::InvalidResponse {
                operation: operation.clone(),
                field: "auth.client_token",
            })?;
        let mut value = SecretMap::new();
        value.insert("token", SecretString::from(token.to_owned()));
        if let Some(accessor) = str_field(auth, "accessor").filter(|a| !a.is_empty()) {
            value.insert("accessor", SecretString::from(accessor.to_owned()));
        }
        info!(
            path = %path,
            rotation = %rotation_id,
            policies = ?self.policies,
            carried_over = old.is_some(),
            "Vault token issued."
        );
        Ok(value)
    }

    /// Looks the old token up with rotor's token: `None` when it is no longer valid.
    async fn lookup_old(&self, value: &SecretMap) -> Result<Option<OldToken>, VaultAuthError> {
        let Some((path, body, secret)) =
            by_accessor_or_token(value, "auth/token/lookup-accessor", "auth/token/lookup")
        else {
            warn!("The old token's value has no token and no accessor; nothing to carry over.");
            return Ok(None);
        };
        let (operation, resp) = as_rotor(&self.vault, Method::POST, path, Some(&body.0)).await?;
        match resp.status {
            200..=299 => {}
            // lookup-accessor: "invalid accessor"; lookup: 403 "bad token".
            400 => return Ok(None),
            403 if resp.errors().contains("bad token") => return Ok(None),
            _ => return Err(api_error(operation, &resp, &[secret.expose_secret()])),
        }
        // `auth/token/lookup` answers with the token itself in `data.id`.
        let answer = WipedJson(resp.json());
        let data = answer.0.get("data").unwrap_or(&Value::Null);
        let meta = data
            .get("meta")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.is_string())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let number = |key: &str| data.get(key).and_then(Value::as_u64).unwrap_or(0);
        Ok(Some(OldToken {
            meta,
            creation_ttl: number("creation_ttl"),
            period: number("period"),
        }))
    }

    /// Revokes the token in `value` with its child tokens: by `accessor`
    /// (`auth/token/revoke-accessor`), else by `token` (`auth/token/revoke`). Idempotent:
    /// an already revoked or expired token is `Ok`.
    pub async fn revoke(&self, value: &SecretMap) -> Result<(), VaultAuthError> {
        let Some((path, body, secret)) =
            by_accessor_or_token(value, "auth/token/revoke-accessor", "auth/token/revoke")
        else {
            return Err(VaultAuthError::MissingKey {
                which: "revoked",
                key: "accessor",
            });
        };
        let (operation, resp) = as_rotor(&self.vault, Method::POST, path, Some(&body.0)).await?;
        if !resp.is_success() {
            return Err(api_error(operation, &resp, &[secret.expose_secret()]));
        }
        info!(path = %path, "Vault token revoked.");
        Ok(())
    }

    /// Calls `auth/token/lookup-self` with the token in `value`: 200 is
    /// [`AuthOutcome::Accepted`]; 403 is [`AuthOutcome::Rejected`] with code `"403"`
    /// unless rotor's own lookup finds the token valid (then the token may just not
    /// look itself up: [`AuthOutcome::Unreachable`]); anything else is
    /// [`AuthOutcome::Unreachable`]. Never panics.
    pub async fn login(&self, value: &SecretMap) -> AuthOutcome {
        let path = "auth/token/lookup-self";
        let Some(token) = non_empty(value, "token") else {
            return AuthOutcome::Unreachable {
                reason: "the value has no token".into(),
            };
        };
        let secrets = [token.expose_secret()];
        let outcome = match self
            .vault
            .request(Method::GET, path, None, AuthAs::Token(token))
            .await
        {
            Err(e) => AuthOutcome::Unreachable {
                reason: scrub(&crate::error_chain(&e), &secrets),
            },
            Ok(resp) if resp.is_success() => AuthOutcome::Accepted,
            Ok(resp) if resp.status == 403 => {
                let message = scrub(&resp.errors(), &secrets);
                if self.still_valid(token).await {
                    AuthOutcome::Unreachable {
                        reason: format!(
                            "GET {path}: HTTP 403 ({message}), yet the token is valid: its policies do not allow {path}"
                        ),
                    }
                } else {
                    AuthOutcome::Rejected {
                        code: "403".into(),
                        message,
                    }
                }
            }
            Ok(resp) => {
                let errors = scrub(&resp.errors(), &secrets);
                AuthOutcome::Unreachable {
                    reason: if errors.is_empty() {
                        format!("GET {path}: HTTP {}", resp.status)
                    } else {
                        format!("GET {path}: HTTP {}: {errors}", resp.status)
                    },
                }
            }
        };
        log_outcome(path, &outcome);
        outcome
    }

    /// Whether rotor's `auth/token/lookup` finds `token` valid (200). Any other answer,
    /// including no answer, leaves the token's own 403 standing.
    async fn still_valid(&self, token: &SecretString) -> bool {
        let body = WipedJson(json!({ "token": token.expose_secret() }));
        match self
            .vault
            .request(
                Method::POST,
                "auth/token/lookup",
                Some(&body.0),
                AuthAs::Rotor,
            )
            .await
        {
            // The answer holds the token in `data.id`: only the status is used.
            Ok(resp) => resp.is_success(),
            Err(e) => {
                debug!(error = %e, "Could not confirm a 403 from lookup-self.");
                false
            }
        }
    }
}

/// Revoking a token revokes its children, so there are no other sessions to end: the
/// default [`IssuingTarget::terminate`].
impl IssuingTarget for TokenTarget {
    async fn issue(
        &self,
        current: &SecretMap,
        rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        Ok(TokenTarget::issue(self, Some(current), rotation_id).await?)
    }

    async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError> {
        TokenTarget::revoke(self, value).await?;
        Ok("token revoked (with its child tokens)".into())
    }

    async fn login(&self, value: &SecretMap) -> AuthOutcome {
        TokenTarget::login(self, value).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_whole_seconds() {
        assert_eq!(seconds(Duration::ZERO), None);
        assert_eq!(seconds(Duration::from_millis(1)), Some(1));
        assert_eq!(seconds(Duration::from_secs(3600)), Some(3600));
        assert_eq!(seconds(Duration::from_millis(1500)), Some(2));
    }
}
