//! The traits a credential kind's adapter implements, and the two closed sets the
//! strategies of [`super::Credential`] dispatch over:
//!
//! - [`PasswordTarget`]: a system where named accounts have passwords that rotor
//!   generates (postgres, mysql, redis, rabbitmq, vault-userpass), one arm of
//!   [`Accounts`] each;
//! - [`IssuingTarget`]: a system that issues the new credential itself (vault-approle,
//!   vault-token, vault-pki, http-api-key), one arm of [`Issuer`] each.
//!
//! (vault-database, where Vault's static role owns the password, is its own arm of the
//! credential's kind.) Each kind implements its trait in its own module; the matches
//! here are exhaustive, so a new arm without its adapter does not compile.

use std::time::SystemTime;

use super::http_api_key::HttpApiKeyTarget;
use super::mysql::MysqlAccounts;
use super::postgres::PostgresTarget;
use super::rabbitmq::RabbitmqTarget;
use super::redis::RedisTarget;
use super::vault_approle::ApproleTarget;
use super::vault_pki::PkiTarget;
use super::vault_token::TokenTarget;
use super::vault_userpass::UserpassAccounts;
use super::{AuthOutcome, CredentialError};
use crate::secret::{SecretMap, SecretString};

/// A system where named accounts have passwords: the adapter of a password kind.
/// Every call is idempotent, so a step resumed after a crash repeats it safely.
pub(crate) trait PasswordTarget {
    /// Makes `user` accept `password` (for systems that hold several passwords at once,
    /// beside the others).
    async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError>;

    /// Retires `user` so that no password of it works any more; says what was done.
    /// `unknown` is a fresh random password nobody will ever see, for targets that
    /// cannot remove a password.
    async fn disable(&self, user: &str, unknown: &SecretString) -> Result<String, CredentialError>;

    /// Undoes the account-level part of [`PasswordTarget::disable`] (login allowed, lock
    /// lifted, user on); no password works until the next one is set. `None` (the
    /// default) when the kind has no such flag.
    async fn enable(&self, _user: &str) -> Result<Option<String>, CredentialError> {
        Ok(None)
    }

    /// Tries `password` for `user` against the target.
    async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome;

    /// Ends `user`'s sessions (those opened before `opened_before`, where the target
    /// can tell) and returns how many.
    async fn terminate(
        &self,
        user: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError>;
}

/// A system that issues the new credential itself: the adapter of an issuing kind
/// (strategy `overlap`).
pub(crate) trait IssuingTarget {
    /// Creates a new credential beside the current one; earlier ones keep working.
    async fn issue(
        &self,
        current: &SecretMap,
        rotation_id: &str,
    ) -> Result<SecretMap, CredentialError>;

    /// Revokes, destroys or deletes `value` on the target (idempotent); says what was
    /// done.
    async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError>;

    /// Tries `value` against the target.
    async fn login(&self, value: &SecretMap) -> AuthOutcome;

    /// Ends the sessions opened with the credential before `cutoff` and returns how
    /// many (0, the default, where the target has none rotor can see).
    async fn terminate(&self, _cutoff: Option<SystemTime>) -> Result<u64, CredentialError> {
        Ok(0)
    }
}

/// The password kinds' systems.
pub(crate) enum Accounts {
    Postgres(PostgresTarget),
    Mysql(MysqlAccounts),
    /// Redis ACL users hold several passwords at once: `overlap` adds the new one
    /// and removes the old one after the grace period.
    Redis(RedisTarget),
    Rabbitmq(RabbitmqTarget),
    Userpass(UserpassAccounts),
}

/// `$body` with `$t` bound to the adapter of whichever kind `$accounts` is.
macro_rules! each_account_kind {
    ($accounts:expr, $t:ident => $body:expr) => {
        match $accounts {
            Accounts::Postgres($t) => $body,
            Accounts::Mysql($t) => $body,
            Accounts::Redis($t) => $body,
            Accounts::Rabbitmq($t) => $body,
            Accounts::Userpass($t) => $body,
        }
    };
}

impl Accounts {
    /// See [`PasswordTarget::set_password`].
    pub(crate) async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        each_account_kind!(self, t => PasswordTarget::set_password(t, user, password).await)
    }

    /// See [`PasswordTarget::disable`].
    pub(crate) async fn disable(
        &self,
        user: &str,
        unknown: &SecretString,
    ) -> Result<String, CredentialError> {
        each_account_kind!(self, t => PasswordTarget::disable(t, user, unknown).await)
    }

    /// See [`PasswordTarget::enable`].
    pub(crate) async fn enable(&self, user: &str) -> Result<Option<String>, CredentialError> {
        each_account_kind!(self, t => PasswordTarget::enable(t, user).await)
    }

    /// See [`PasswordTarget::login`].
    pub(crate) async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        each_account_kind!(self, t => PasswordTarget::login(t, user, password).await)
    }

    /// See [`PasswordTarget::terminate`].
    pub(crate) async fn terminate(
        &self,
        user: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        each_account_kind!(self, t => PasswordTarget::terminate(t, user, opened_before).await)
    }
}

/// The issuing kinds' systems.
pub(crate) enum Issuer {
    Approle(ApproleTarget),
    Token(TokenTarget),
    Pki(PkiTarget),
    Http(HttpApiKeyTarget),
}

/// `$body` with `$t` bound to the adapter of whichever kind `$issuer` is.
macro_rules! each_issuer_kind {
    ($issuer:expr, $t:ident => $body:expr) => {
        match $issuer {
            Issuer::Approle($t) => $body,
            Issuer::Token($t) => $body,
            Issuer::Pki($t) => $body,
            Issuer::Http($t) => $body,
        }
    };
}

impl Issuer {
    /// See [`IssuingTarget::issue`].
    pub(crate) async fn issue(
        &self,
        current: &SecretMap,
        rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        each_issuer_kind!(self, t => IssuingTarget::issue(t, current, rotation_id).await)
    }

    /// See [`IssuingTarget::revoke`].
    pub(crate) async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError> {
        each_issuer_kind!(self, t => IssuingTarget::revoke(t, value).await)
    }

    /// See [`IssuingTarget::login`].
    pub(crate) async fn login(&self, value: &SecretMap) -> AuthOutcome {
        each_issuer_kind!(self, t => IssuingTarget::login(t, value).await)
    }

    /// See [`IssuingTarget::terminate`].
    pub(crate) async fn terminate(
        &self,
        cutoff: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        each_issuer_kind!(self, t => IssuingTarget::terminate(t, cutoff).await)
    }
}
