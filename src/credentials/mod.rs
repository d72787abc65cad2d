//! Credential kinds, one module each, dispatched by the [`Credential`] enum. A kind
//! knows how to generate a new value, apply it to its target, test it, restore the
//! previous one, and probe whether a value is still accepted.

pub mod http_api_key;
pub mod mysql;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod vault_approle;
pub mod vault_database;
pub mod vault_pki;
pub mod vault_token;
pub mod vault_userpass;

use serde::Serialize;

use crate::policy::{CredentialSpec, PasswordGenerator, Strategy};
use crate::secret::{SecretMap, SecretString};
use crate::vault::{Vault, VaultError};

use self::postgres::{LoginOutcome, PostgresError, PostgresTarget};

/// What a target said when a credential was tried.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthOutcome {
    /// The target accepted the credential.
    Accepted,
    /// The target refused it with an authentication error (the only outcome that
    /// proves a credential dead).
    Rejected {
        /// The target's error code, e.g. SQLSTATE `28P01`.
        code: String,
        /// The target's message.
        message: String,
    },
    /// No answer about the credential: connection refused, timeout, TLS, other errors.
    Unreachable {
        /// Why.
        reason: String,
    },
}

impl AuthOutcome {
    /// One line for reports and the journal.
    pub fn evidence(&self) -> String {
        match self {
            AuthOutcome::Accepted => "accepted".into(),
            AuthOutcome::Rejected { code, message } => format!("rejected: {code} {message}"),
            AuthOutcome::Unreachable { reason } => format!("inconclusive: {reason}"),
        }
    }
}

impl From<LoginOutcome> for AuthOutcome {
    fn from(o: LoginOutcome) -> Self {
        match o {
            LoginOutcome::Accepted => AuthOutcome::Accepted,
            LoginOutcome::Rejected { code, message } => AuthOutcome::Rejected { code, message },
            LoginOutcome::Unreachable { reason } => AuthOutcome::Unreachable { reason },
        }
    }
}

/// A failed credential operation.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// This build cannot rotate the kind or strategy yet; nothing was changed.
    #[error(
        "credential type {kind} with strategy {strategy} is not supported by this version of rotor"
    )]
    Unsupported {
        /// Kind name.
        kind: &'static str,
        /// Strategy name.
        strategy: &'static str,
    },
    /// An admin or input reference could not be resolved.
    #[error("resolving {what}: {source}")]
    Reference {
        /// Which reference.
        what: &'static str,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// A stored value lacks a key the kind needs.
    #[error("the {which} value has no key {key:?}")]
    MissingKey {
        /// `current`, `staged`, `admin`…
        which: &'static str,
        /// The key.
        key: &'static str,
    },
    /// PostgreSQL failed.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
}

impl CredentialError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialError::Unsupported { .. } => "unsupported",
            CredentialError::Reference { .. } => "reference",
            CredentialError::MissingKey { .. } => "missing_key",
            CredentialError::Postgres(e) => e.kind(),
        }
    }
}

/// A credential kind ready to act on its target (admin references resolved).
pub enum Credential {
    /// A PostgreSQL role password, changed in place.
    Postgres {
        /// The server, logged in as the admin.
        target: PostgresTarget,
        /// The rotated role.
        username: String,
        /// Password generator.
        generator: PasswordGenerator,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Postgres { username, .. } => f
                .debug_struct("Credential::Postgres")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

fn strategy_name(s: &Strategy) -> &'static str {
    match s {
        Strategy::Single => "single",
        Strategy::Alternating => "alternating",
        Strategy::Overlap => "overlap",
    }
}

/// Fails with [`CredentialError::Unsupported`] for kinds this build cannot rotate,
/// without any I/O, so a rotation never starts half-way.
pub fn check_supported(spec: &CredentialSpec) -> Result<(), CredentialError> {
    match spec {
        CredentialSpec::Postgres(pg) if matches!(pg.strategy, Strategy::Single) => Ok(()),
        CredentialSpec::Postgres(pg) => Err(CredentialError::Unsupported {
            kind: "postgres",
            strategy: strategy_name(&pg.strategy),
        }),
        other => Err(CredentialError::Unsupported {
            kind: other.kind(),
            strategy: "any",
        }),
    }
}

/// The keys Vault's current value must hold before a rotation starts: what the kind
/// needs to restore the target on rollback and to prove the old value dead.
pub fn required_current_keys(spec: &CredentialSpec) -> &'static [&'static str] {
    match spec {
        CredentialSpec::Postgres(_) => &["password"],
        _ => &[],
    }
}

fn need<'a>(
    map: &'a SecretMap,
    which: &'static str,
    key: &'static str,
) -> Result<&'a SecretString, CredentialError> {
    map.get(key)
        .ok_or(CredentialError::MissingKey { which, key })
}

impl Credential {
    /// Resolves the kind's admin references and connects nothing yet.
    pub async fn prepare(spec: &CredentialSpec, vault: &Vault) -> Result<Self, CredentialError> {
        check_supported(spec)?;
        match spec {
            CredentialSpec::Postgres(pg) => {
                let admin = vault
                    .resolve(&pg.connection.admin_from)
                    .await
                    .map_err(|source| CredentialError::Reference {
                        what: "spec.credential.connection.adminFrom",
                        source,
                    })?;
                Ok(Credential::Postgres {
                    target: PostgresTarget::new(&pg.connection, &admin)?,
                    username: pg.username.clone(),
                    generator: pg.password.clone(),
                })
            }
            other => Err(CredentialError::Unsupported {
                kind: other.kind(),
                strategy: "any",
            }),
        }
    }

    /// A fresh value with every key the kind writes to Vault.
    pub fn generate(&self) -> SecretMap {
        match self {
            Credential::Postgres {
                username,
                generator,
                ..
            } => {
                let mut m = SecretMap::new();
                m.insert("username", SecretString::from(username.clone()));
                m.insert("password", generator.generate());
                m
            }
        }
    }

    /// Makes the target accept `new` (for `single`, in place of the old value).
    /// Idempotent: applying the same value twice is harmless.
    pub async fn apply(&self, new: &SecretMap) -> Result<(), CredentialError> {
        match self {
            Credential::Postgres {
                target, username, ..
            } => {
                let password = need(new, "staged", "password")?;
                target.set_password(username, password).await?;
                Ok(())
            }
        }
    }

    /// Puts `old` back on the target (rollback before promote).
    pub async fn restore(&self, old: &SecretMap) -> Result<(), CredentialError> {
        match self {
            Credential::Postgres {
                target, username, ..
            } => {
                let password = need(old, "current", "password")?;
                target.set_password(username, password).await?;
                Ok(())
            }
        }
    }

    /// Tries `value` against the target.
    pub async fn login(&self, value: &SecretMap) -> Result<AuthOutcome, CredentialError> {
        match self {
            Credential::Postgres {
                target, username, ..
            } => {
                let password = need(value, "tested", "password")?;
                Ok(target.login(username, password).await.into())
            }
        }
    }

    /// Ends the sessions of the rotated identity that were opened with the old
    /// credential, i.e. before `changed_at` (when the target switched to the new
    /// value); returns how many.
    pub async fn terminate_sessions(
        &self,
        changed_at: Option<std::time::SystemTime>,
    ) -> Result<u64, CredentialError> {
        match self {
            Credential::Postgres {
                target, username, ..
            } => Ok(target.terminate_sessions(username, changed_at).await?),
        }
    }

    /// Whether the kind has a separate revoke step (overlap/alternating strategies).
    pub fn has_revoke_step(&self) -> bool {
        match self {
            Credential::Postgres { .. } => false,
        }
    }
}
