//! `vault-database`: a Vault database-engine static role. Vault owns the password:
//! rotor triggers `rotate-role`, reads the new credential from `static-creds`, pushes it
//! to the consumers, and proves with a login to the database itself that the previous
//! password is refused.
//!
//! The change happens when the new value is staged (Vault applies it to the database
//! at once), so there is no separate apply step and no way back: Vault keeps only the
//! new password. A failed test after `rotate-role` therefore fails the rotation rather
//! than rolling it back.

use std::time::SystemTime;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::info;

use super::postgres::{PostgresError, PostgresTarget};
use super::target::{AuthOutcome, TargetTls};
use crate::policy::{DatabaseProbe, ProbeKind, VaultDatabaseCredential};
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, Vault, VaultError};

/// A failed static-role operation.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum DatabaseError {
    /// Vault refused or failed a request.
    #[error("vault database role {role}: {source}")]
    #[strum(serialize = "vault_database")]
    Vault {
        /// `mount/role`.
        role: String,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// `static-creds` answered without a username or password.
    #[error("vault database role {role}: static-creds returned no {field}")]
    #[strum(serialize = "static_creds_incomplete")]
    Incomplete {
        /// `mount/role`.
        role: String,
        /// The missing field.
        field: &'static str,
    },
    /// A value lacks a key.
    #[error("the {which} value has no key {key:?}")]
    #[strum(serialize = "missing_key")]
    MissingKey {
        /// Which value.
        which: &'static str,
        /// The key.
        key: &'static str,
    },
    /// Ending sessions on the database failed.
    #[error(transparent)]
    #[strum(disabled)]
    Postgres(#[from] PostgresError),
}

impl DatabaseError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DatabaseError::Vault { source, .. } if source.is_timeout() => "timeout",
            DatabaseError::Postgres(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DatabaseError::Vault { source, .. } => source.is_transient(),
            DatabaseError::Postgres(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A static role and the database probe that proves which password works.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    vault: Vault,
    mount: String,
    role: String,
    probe: DatabaseProbe,
}

fn field<'a>(
    map: &'a SecretMap,
    which: &'static str,
    key: &'static str,
) -> Result<&'a SecretString, DatabaseError> {
    map.get(key).ok_or(DatabaseError::MissingKey { which, key })
}

impl DatabaseTarget {
    /// The role of a policy. No I/O.
    pub fn new(vault: Vault, spec: &VaultDatabaseCredential) -> Self {
        DatabaseTarget {
            vault,
            mount: spec.mount.clone(),
            role: spec.role.clone(),
            probe: spec.probe.clone(),
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.mount, self.role)
    }

    fn vault_err(&self, source: VaultError) -> DatabaseError {
        DatabaseError::Vault {
            role: self.name(),
            source,
        }
    }

    /// Triggers `rotate-role` (Vault sets a new password on the database) and reads
    /// the new credential: keys `username`, `password`.
    pub async fn issue(&self) -> Result<SecretMap, DatabaseError> {
        let rotate = format!("{}/rotate-role/{}", self.mount, self.role);
        self.vault
            .request_ok(Method::POST, &rotate, None, AuthAs::Rotor)
            .await
            .map_err(|e| self.vault_err(e))?;
        info!(role = %self.name(), "Vault rotated the static role.");
        self.read().await
    }

    /// The credential Vault holds now (`static-creds`).
    pub async fn read(&self) -> Result<SecretMap, DatabaseError> {
        let path = format!("{}/static-creds/{}", self.mount, self.role);
        let resp = self
            .vault
            .request_ok(Method::GET, &path, None, AuthAs::Rotor)
            .await
            .map_err(|e| self.vault_err(e))?;
        let body = resp.json();
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        let get = |f: &'static str| {
            data.get(f)
                .and_then(Value::as_str)
                .map(|s| SecretString::from(s.to_owned()))
                .ok_or(DatabaseError::Incomplete {
                    role: self.name(),
                    field: f,
                })
        };
        let mut m = SecretMap::new();
        m.insert("username", get("username")?);
        m.insert("password", get("password")?);
        Ok(m)
    }

    fn postgres(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<PostgresTarget, PostgresError> {
        PostgresTarget::from_parts(
            &self.probe.host,
            self.probe.port,
            self.probe.database.as_deref().unwrap_or("postgres"),
            TargetTls::Disable,
            user,
            password.clone(),
        )
    }

    /// Logs in to the database with `value`'s username and password.
    pub async fn login(&self, value: &SecretMap) -> Result<AuthOutcome, DatabaseError> {
        let user = field(value, "probed", "username")?
            .expose_secret()
            .to_owned();
        let password = field(value, "probed", "password")?;
        let (host, port, tls) = (&self.probe.host, self.probe.port, &TargetTls::Disable);
        Ok(match self.probe.kind {
            ProbeKind::Postgres => match self.postgres(&user, password) {
                Ok(t) => t.login(&user, password).await,
                Err(e) => AuthOutcome::Unreachable {
                    reason: crate::error_chain(&e),
                },
            },
            ProbeKind::Mysql => super::mysql::login(host, port, tls, &user, password).await,
            ProbeKind::Redis => super::redis::login(host, port, tls, &user, password).await,
        })
    }

    /// Ends the role's sessions opened before `cutoff`, logged in as the role itself
    /// with the `new` credential (a PostgreSQL role may end its own sessions; rotor
    /// holds no admin login for a database Vault manages). Other probe kinds: 0.
    pub async fn terminate_sessions(
        &self,
        new: &SecretMap,
        cutoff: Option<SystemTime>,
    ) -> Result<u64, DatabaseError> {
        let user = field(new, "new", "username")?.expose_secret().to_owned();
        let password = field(new, "new", "password")?;
        match self.probe.kind {
            ProbeKind::Postgres => Ok(self
                .postgres(&user, password)?
                .terminate_sessions(&user, cutoff)
                .await?),
            ProbeKind::Mysql | ProbeKind::Redis => Ok(0),
        }
    }
}
