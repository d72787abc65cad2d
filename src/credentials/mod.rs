//! Credential kinds, one module each, dispatched by [`Credential`]. A module is a
//! target adapter (how to change, issue, revoke and probe one kind of credential on
//! its real system) and implements one of the two adapter traits of `adapters.rs`
//! (`PasswordTarget` or `IssuingTarget`); [`target`] holds the plumbing the database
//! kinds share (TLS settings, bounded calls, admin sessions, login outcomes). This file
//! maps the three strategies onto those adapters:
//!
//! - **single**: the secret is changed in place; nothing is left to revoke.
//! - **alternating** (postgres, mysql): two accounts `NAME_a`/`NAME_b`. The idle one
//!   gets the new password and becomes current; after the grace period the previously
//!   current one is reset to an unknown random password, so its old secret is refused.
//! - **overlap** (redis, approle, token, pki, http-api-key): a new credential is
//!   created beside the old one; the old one is revoked after the grace period.
//!
//! Kinds whose new credential is *issued by the target* (approle secret-ids, tokens,
//! certificates, API keys, Vault database static roles) create it while staging. If
//! rotor dies between issuing and staging, the issued credential's secret existed only
//! in the dead process's memory; it is never handed to anyone and expires with its TTL.

mod adapters;
pub mod http_api_key;
pub mod mysql;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod target;
pub mod vault_approle;
pub mod vault_database;
pub mod vault_pki;
pub mod vault_token;
pub mod vault_userpass;

use std::time::SystemTime;

use crate::policy::{CredentialSpec, PasswordGenerator, Strategy};
use crate::secret::{SecretMap, SecretString};
use crate::vault::{Vault, VaultError};

use self::adapters::{Accounts, Issuer};
use self::http_api_key::{HttpApiKeyError, HttpApiKeyTarget};
use self::mysql::{MysqlAccounts, MysqlError, MysqlTarget};
use self::postgres::{PostgresError, PostgresTarget};
use self::rabbitmq::{RabbitmqError, RabbitmqTarget};
use self::redis::{RedisError, RedisTarget};
use self::vault_approle::ApproleTarget;
use self::vault_database::{DatabaseError, DatabaseTarget};
use self::vault_pki::{PkiError, PkiTarget};
use self::vault_token::TokenTarget;
use self::vault_userpass::{UserpassAccounts, VaultAuthError};

pub use self::target::AuthOutcome;

/// A failed credential operation.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum CredentialError {
    /// An admin or input reference could not be resolved.
    #[error("resolving {what}: {source}")]
    #[strum(serialize = "reference")]
    Reference {
        /// Which reference.
        what: &'static str,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// A stored value lacks a key the kind needs.
    #[error("the {which} value has no key {key:?}")]
    #[strum(serialize = "missing_key")]
    MissingKey {
        /// `current`, `staged`, `admin`…
        which: &'static str,
        /// The key.
        key: &'static str,
    },
    /// The current value names an account that is not one of the alternating pair.
    #[error(
        "strategy alternating: the current value's username {found:?} is neither {a:?} nor {b:?}; seed the canonical copy with one of the two accounts"
    )]
    #[strum(serialize = "not_alternating_account")]
    NotAlternatingAccount {
        /// What the current value holds.
        found: String,
        /// First account.
        a: String,
        /// Second account.
        b: String,
    },
    /// The change cannot be undone on this kind (the target owns the secret).
    #[error("{0}")]
    #[strum(serialize = "cannot_roll_back")]
    CannotRollBack(&'static str),
    /// The kind cannot be retired by rotor (the target owns the secret).
    #[error("{0}")]
    #[strum(serialize = "cannot_disable")]
    CannotDisable(&'static str),
    /// PostgreSQL failed.
    #[error(transparent)]
    #[strum(disabled)]
    Postgres(#[from] PostgresError),
    /// A Vault database static role failed.
    #[error(transparent)]
    #[strum(disabled)]
    Database(#[from] DatabaseError),
    /// MariaDB/MySQL failed.
    #[error(transparent)]
    #[strum(disabled)]
    Mysql(#[from] MysqlError),
    /// Redis failed.
    #[error(transparent)]
    #[strum(disabled)]
    Redis(#[from] RedisError),
    /// RabbitMQ's management API failed.
    #[error(transparent)]
    #[strum(disabled)]
    Rabbitmq(#[from] RabbitmqError),
    /// A Vault auth method (userpass, approle, token) failed.
    #[error(transparent)]
    #[strum(disabled)]
    VaultAuth(#[from] VaultAuthError),
    /// Vault PKI failed.
    #[error(transparent)]
    #[strum(disabled)]
    Pki(#[from] PkiError),
    /// The key-issuing HTTP API failed.
    #[error(transparent)]
    #[strum(disabled)]
    HttpApiKey(#[from] HttpApiKeyError),
}

impl CredentialError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialError::Postgres(e) => e.kind(),
            CredentialError::Database(e) => e.kind(),
            CredentialError::Mysql(e) => e.kind(),
            CredentialError::Redis(e) => e.kind(),
            CredentialError::Rabbitmq(e) => e.kind(),
            CredentialError::VaultAuth(e) => e.kind(),
            CredentialError::Pki(e) => e.kind(),
            CredentialError::HttpApiKey(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::Reference { source, .. } => source.is_transient(),
            CredentialError::Postgres(e) => e.is_transient(),
            CredentialError::Database(e) => e.is_transient(),
            CredentialError::Mysql(e) => e.is_transient(),
            CredentialError::Redis(e) => e.is_transient(),
            CredentialError::Rabbitmq(e) => e.is_transient(),
            CredentialError::VaultAuth(e) => e.is_transient(),
            CredentialError::Pki(e) => e.is_transient(),
            CredentialError::HttpApiKey(e) => e.is_transient(),
            _ => false,
        }
    }
}

enum Kind {
    /// Password kinds: rotor generates the secret and sets it on an account.
    Password {
        accounts: Accounts,
        username: String,
        generator: PasswordGenerator,
    },
    /// A Vault database-engine static role: Vault changes the password.
    Database(DatabaseTarget),
    /// The target issues the new credential (strategy overlap).
    Issued(Issuer),
}

/// A credential kind ready to act on its target (admin references resolved).
pub struct Credential {
    kind: Kind,
    strategy: Strategy,
    name: &'static str,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.name)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
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

/// Where the database kinds (PostgreSQL, MySQL, Redis) name their admin credential.
const CONNECTION_ADMIN_FROM: &str = "spec.credential.connection.adminFrom";

async fn resolve_admin(
    vault: &Vault,
    reference: &crate::policy::Reference,
    what: &'static str,
) -> Result<SecretMap, CredentialError> {
    vault
        .resolve(reference)
        .await
        .map_err(|source| CredentialError::Reference { what, source })
}

/// The two accounts of an alternating pair.
fn pair(username: &str) -> (String, String) {
    (format!("{username}_a"), format!("{username}_b"))
}

impl Credential {
    /// Resolves the kind's admin references; connects nothing yet.
    pub async fn prepare(spec: &CredentialSpec, vault: &Vault) -> Result<Self, CredentialError> {
        let strategy = spec.strategy();
        let name = spec.kind();
        let kind = match spec {
            CredentialSpec::Postgres(pg) => {
                let admin =
                    resolve_admin(vault, &pg.connection.admin_from, CONNECTION_ADMIN_FROM).await?;
                Kind::Password {
                    accounts: Accounts::Postgres(PostgresTarget::new(&pg.connection, &admin)?),
                    username: pg.username.clone(),
                    generator: pg.password.clone(),
                }
            }
            CredentialSpec::Mysql(my) => {
                let admin =
                    resolve_admin(vault, &my.connection.admin_from, CONNECTION_ADMIN_FROM).await?;
                Kind::Password {
                    accounts: Accounts::Mysql(MysqlAccounts::new(
                        MysqlTarget::new(&my.connection, &admin)?,
                        &my.account_host,
                    )),
                    username: my.username.clone(),
                    generator: my.password.clone(),
                }
            }
            CredentialSpec::Redis(r) => {
                let admin = match &r.connection.admin_from {
                    Some(reference) => {
                        Some(resolve_admin(vault, reference, CONNECTION_ADMIN_FROM).await?)
                    }
                    None => None,
                };
                Kind::Password {
                    accounts: Accounts::Redis(RedisTarget::new(&r.connection, admin.as_ref())?),
                    username: r.username.clone(),
                    generator: r.password.clone(),
                }
            }
            CredentialSpec::Rabbitmq(r) => {
                let admin =
                    resolve_admin(vault, &r.admin_from, "spec.credential.adminFrom").await?;
                Kind::Password {
                    accounts: Accounts::Rabbitmq(RabbitmqTarget::new(r, &admin)?),
                    username: r.username.clone(),
                    generator: r.password.clone(),
                }
            }
            CredentialSpec::VaultUserpass(u) => Kind::Password {
                accounts: Accounts::Userpass(UserpassAccounts::new(vault.clone(), &u.mount)),
                username: u.username.clone(),
                generator: u.password.clone(),
            },
            CredentialSpec::VaultApprole(a) => Kind::Issued(Issuer::Approle(ApproleTarget::new(
                vault.clone(),
                &a.mount,
                &a.role,
                &a.metadata,
            ))),
            CredentialSpec::VaultToken(t) => {
                Kind::Issued(Issuer::Token(TokenTarget::new(vault.clone(), t)))
            }
            CredentialSpec::VaultPki(p) => {
                Kind::Issued(Issuer::Pki(PkiTarget::new(vault.clone(), p)))
            }
            CredentialSpec::HttpApiKey(h) => {
                let admin =
                    resolve_admin(vault, &h.admin_from, "spec.credential.adminFrom").await?;
                Kind::Issued(Issuer::Http(HttpApiKeyTarget::new(h, &admin)?))
            }
            CredentialSpec::VaultDatabase(db) => {
                Kind::Database(DatabaseTarget::new(vault.clone(), db))
            }
        };
        Ok(Credential {
            kind,
            strategy,
            name,
        })
    }

    /// The strategy in effect.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether [`Credential::create`] changes the target (the new credential is issued
    /// there), so a rollback must discard it even if `applied` was never reached.
    pub fn creates_on_target(&self) -> bool {
        !matches!(self.kind, Kind::Password { .. })
    }

    /// The account a password value belongs to: the configured one, or for
    /// `alternating` the one the value names.
    fn account<'a>(&'a self, value: &'a SecretMap, username: &'a str) -> &'a str {
        if self.strategy == Strategy::Alternating {
            value.expose("username").unwrap_or(username)
        } else {
            username
        }
    }

    /// The next credential, with every key the kind writes to Vault. Password kinds
    /// generate it here (no side effect); issuing kinds create it on the target.
    pub async fn create(
        &self,
        current: &SecretMap,
        rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        match &self.kind {
            Kind::Password {
                username,
                generator,
                ..
            } => {
                let user = if self.strategy == Strategy::Alternating {
                    let (a, b) = pair(username);
                    match current.expose("username") {
                        Some(u) if u == a => b,
                        Some(u) if u == b => a,
                        other => {
                            return Err(CredentialError::NotAlternatingAccount {
                                found: other.unwrap_or_default().to_owned(),
                                a,
                                b,
                            });
                        }
                    }
                } else {
                    username.clone()
                };
                let mut m = SecretMap::new();
                m.insert("username", SecretString::from(user));
                m.insert("password", generator.generate());
                Ok(m)
            }
            Kind::Database(t) => Ok(t.issue().await?),
            Kind::Issued(i) => i.issue(current, rotation_id).await,
        }
    }

    /// Makes the target accept `new` beside or instead of `current` (idempotent).
    /// `None` when the kind has nothing to apply (the credential was issued when staged).
    pub async fn apply(
        &self,
        _current: &SecretMap,
        new: &SecretMap,
    ) -> Result<Option<String>, CredentialError> {
        match &self.kind {
            Kind::Password {
                accounts, username, ..
            } => {
                let user = self.account(new, username);
                accounts
                    .set_password(user, need(new, "staged", "password")?)
                    .await?;
                Ok(Some(match self.strategy {
                    Strategy::Alternating => {
                        format!("idle account {user} accepts the new password")
                    }
                    Strategy::Overlap => {
                        format!("{user} accepts the new password beside the old one")
                    }
                    Strategy::Single => format!("{user} accepts the new password"),
                }))
            }
            Kind::Database(_) | Kind::Issued(_) => Ok(None),
        }
    }

    /// Tries `value` against the target.
    pub async fn login(&self, value: &SecretMap) -> Result<AuthOutcome, CredentialError> {
        match &self.kind {
            Kind::Password {
                accounts, username, ..
            } => {
                let user = self.account(value, username);
                Ok(accounts
                    .login(user, need(value, "probed", "password")?)
                    .await)
            }
            Kind::Database(t) => t.login(value).await.map_err(Into::into),
            Kind::Issued(i) => Ok(i.login(value).await),
        }
    }

    /// Undoes a rotation before promote so that only `current` works, as before:
    /// restores the old password, or discards the credential issued for `new`.
    pub async fn rollback(
        &self,
        current: &SecretMap,
        new: Option<&SecretMap>,
    ) -> Result<String, CredentialError> {
        match &self.kind {
            Kind::Password {
                accounts,
                username,
                generator,
            } => match self.strategy {
                Strategy::Overlap => {
                    let Some(new) = new else {
                        return Ok("nothing staged; the old password is untouched".into());
                    };
                    let Accounts::Redis(t) = accounts else {
                        return Err(CredentialError::CannotRollBack(
                            "overlap needs an account with several passwords",
                        ));
                    };
                    t.remove_password(username, need(new, "staged", "password")?)
                        .await?;
                    Ok(format!(
                        "the new password of {username} was removed; the old one was never touched"
                    ))
                }
                Strategy::Alternating => {
                    let Some(new) = new else {
                        return Ok("nothing staged; the current account is untouched".into());
                    };
                    let idle = self.account(new, username);
                    accounts.set_password(idle, &generator.generate()).await?;
                    Ok(format!(
                        "idle account {idle} reset to an unknown password; the current account was never touched"
                    ))
                }
                _ => {
                    let user = self.account(current, username);
                    accounts
                        .set_password(user, need(current, "current", "password")?)
                        .await?;
                    Ok(format!("{user} has the previous password again"))
                }
            },
            Kind::Database(_) => Err(CredentialError::CannotRollBack(
                "Vault's static role changed the password and keeps only the new one; it cannot be restored",
            )),
            Kind::Issued(i) => match new {
                Some(new) => Ok(format!(
                    "the new credential was discarded ({}); the old one was never touched",
                    i.revoke(new).await?
                )),
                None => Ok("nothing was issued".into()),
            },
        }
    }

    /// Whether [`Credential::revoke`] changes anything on the target (`single`
    /// passwords change in place; OpenBao's static roles revoke nothing).
    pub fn revokes_anything(&self) -> bool {
        !matches!(
            (&self.kind, self.strategy),
            (Kind::Password { .. }, Strategy::Single) | (Kind::Database(_), _)
        )
    }

    /// Disables the previous credential after the grace period. `None` when the
    /// strategy left nothing to revoke (`single` changed it in place).
    pub async fn revoke(
        &self,
        old: &SecretMap,
        _new: &SecretMap,
    ) -> Result<Option<String>, CredentialError> {
        match (&self.kind, self.strategy) {
            (Kind::Password { .. }, Strategy::Single) | (Kind::Database(_), _) => Ok(None),
            (
                Kind::Password {
                    accounts,
                    username,
                    generator,
                },
                Strategy::Alternating,
            ) => {
                let previous = self.account(old, username);
                accounts
                    .set_password(previous, &generator.generate())
                    .await?;
                Ok(Some(format!(
                    "previous account {previous} reset to an unknown password"
                )))
            }
            (
                Kind::Password {
                    accounts: Accounts::Redis(t),
                    username,
                    ..
                },
                Strategy::Overlap,
            ) => {
                t.remove_password(username, need(old, "previous", "password")?)
                    .await?;
                Ok(Some(format!(
                    "the previous password of {username} was removed"
                )))
            }
            (Kind::Password { .. }, Strategy::Overlap) => Err(CredentialError::CannotRollBack(
                "overlap needs an account with several passwords",
            )),
            (Kind::Issued(i), _) => Ok(Some(i.revoke(old).await?)),
        }
    }

    /// Whether [`Credential::disable`] can retire this kind (`vault-database` cannot:
    /// Vault's static role owns that password).
    pub fn can_disable(&self) -> Result<(), CredentialError> {
        match self.kind {
            Kind::Database(_) => Err(CredentialError::CannotDisable(
                "a vault-database credential belongs to Vault's static role, which sets the password and hands it out (static-creds); rotor cannot retire it without Vault undoing that: retire the static role in Vault instead (delete it and drop or lock the database user)",
            )),
            _ => Ok(()),
        }
    }

    /// The accounts a retirement disables: the configured one, or both accounts of an
    /// `alternating` pair. Empty for kinds whose credential is issued by the target.
    pub fn accounts(&self) -> Vec<String> {
        match &self.kind {
            Kind::Password { username, .. } if self.strategy == Strategy::Alternating => {
                let (a, b) = pair(username);
                vec![a, b]
            }
            Kind::Password { username, .. } => vec![username.clone()],
            _ => Vec::new(),
        }
    }

    /// Retires the credential on its target so that `current` (and, for `alternating`,
    /// either account's password) no longer works, and ends the sessions the kind can
    /// see. Says what was done. Idempotent, so a retirement resumed after a crash
    /// repeats it safely:
    ///
    /// - postgres: `ALTER ROLE … NOLOGIN PASSWORD NULL` (both accounts for alternating),
    ///   sessions terminated;
    /// - mysql: an unknown random password and `ACCOUNT LOCK` (both accounts), sessions
    ///   killed;
    /// - redis: `ACL SETUSER … off resetpass` (saved like every ACL change), connections
    ///   closed;
    /// - rabbitmq: an unknown random password hash, tags kept, connections closed;
    /// - vault-userpass: an unknown random password (the user and its policies stay, so
    ///   `rotor enable` is an ordinary password change), login tokens revoked;
    /// - vault-approle: the current secret-id destroyed, the role's login tokens revoked;
    /// - vault-token: revoked with its children; vault-pki: the serial revoked;
    ///   http-api-key: the `revoke` request;
    /// - vault-database: refused ([`Credential::can_disable`]).
    pub async fn disable(&self, current: &SecretMap) -> Result<String, CredentialError> {
        self.can_disable()?;
        match &self.kind {
            Kind::Password {
                accounts,
                generator,
                ..
            } => {
                let mut notes = Vec::new();
                let mut sessions = 0;
                for user in self.accounts() {
                    notes.push(accounts.disable(&user, &generator.generate()).await?);
                    sessions += accounts.terminate(&user, None).await?;
                }
                Ok(format!("{}; {sessions} session(s) ended", notes.join("; ")))
            }
            Kind::Issued(i) => {
                let done = i.revoke(current).await?;
                let sessions = i.terminate(None).await?;
                Ok(format!("{done}; {sessions} session(s) ended"))
            }
            Kind::Database(_) => Err(CredentialError::CannotDisable("vault-database")),
        }
    }

    /// Before the rotation that re-enables a retired credential: lifts what
    /// [`Credential::disable`] set on the accounts beside the password (postgres
    /// `LOGIN`, mysql `ACCOUNT UNLOCK`, redis `on`). Nothing works yet: the accounts have
    /// no password anyone knows until the rotation sets one. `None` when the kind has no
    /// such flag (its rotation alone re-enables it).
    pub async fn reenable(&self) -> Result<Option<String>, CredentialError> {
        self.can_disable()?;
        let Kind::Password { accounts, .. } = &self.kind else {
            return Ok(None);
        };
        let mut notes = Vec::new();
        for user in self.accounts() {
            if let Some(note) = accounts.enable(&user).await? {
                notes.push(note);
            }
        }
        Ok((!notes.is_empty()).then(|| notes.join("; ")))
    }

    /// The other account of an `alternating` pair than the one `value` names.
    pub fn other_account(&self, value: &SecretMap) -> Option<String> {
        let Kind::Password { username, .. } = &self.kind else {
            return None;
        };
        if self.strategy != Strategy::Alternating {
            return None;
        }
        let (a, b) = pair(username);
        match value.expose("username") {
            Some(u) if u == a => Some(b),
            Some(u) if u == b => Some(a),
            _ => None,
        }
    }

    /// Ends the sessions opened with the previous credential: those of the rotated
    /// identity opened before `cutoff` (when the target started accepting the new
    /// value), or for `alternating` every session of the previous account. Returns
    /// how many.
    pub async fn terminate_sessions(
        &self,
        old: &SecretMap,
        new: &SecretMap,
        cutoff: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        match &self.kind {
            Kind::Password {
                accounts, username, ..
            } => {
                if self.strategy == Strategy::Alternating {
                    accounts.terminate(self.account(old, username), None).await
                } else {
                    accounts.terminate(username, cutoff).await
                }
            }
            Kind::Database(t) => Ok(t.terminate_sessions(new, cutoff).await?),
            Kind::Issued(i) => i.terminate(cutoff).await,
        }
    }
}
