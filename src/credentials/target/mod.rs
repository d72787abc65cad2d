//! Plumbing shared by the adapters of database-like targets (postgres, mysql, redis,
//! rabbitmq, and the probes of vault-database):
//!
//! - [`AuthOutcome`]: what a target answered when a credential was tried, and
//!   `log_login!` to log it the same way
//!   everywhere;
//! - [`TargetTls`] and [`tls`]: how the connection is protected, CA files, the system
//!   trust store and the rustls client configuration;
//! - [`Endpoint`]: the server's address and the bounded calls to it (connect and call
//!   limits, [`CallTimeout`] counted in `rotor_outside_call_timeouts_total`);
//! - [`AdminLogin`] and [`admin_login`]: the account rotor uses on a target, and the
//!   `username` and `password` of a referenced admin credential;
//! - [`check_name`]: an account name checked against an adapter's rules;
//! - [`AbortOnDrop`]: the task driving a connection's socket.

pub mod tls;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::outside::System;
use crate::secret::{SecretMap, SecretString};

pub use self::tls::{TargetTls, TlsSetupError};

/// What a target said when a credential was tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthOutcome {
    /// The target accepted the credential.
    Accepted,
    /// The target refused it with an authentication error (the only outcome that
    /// proves a credential dead).
    Rejected {
        /// The target's error code, e.g. SQLSTATE `28P01`.
        code: String,
        /// The target's message (it names the account, never the secret).
        message: String,
    },
    /// No answer about the credential: connection refused, timeout, TLS, other errors.
    /// Verification must fail on this outcome, never pass.
    Unreachable {
        /// What happened instead of an answer.
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

/// Logs a login attempt's [`AuthOutcome`] with the caller's fields: accepted and
/// rejected at debug level, inconclusive as a warning. A macro, so the event keeps the
/// calling module as its target.
///
/// `log_login!(outcome, role = %role, target = %address)`
macro_rules! log_login {
    ($outcome:expr, $($field:tt)+) => {
        match &$outcome {
            $crate::credentials::AuthOutcome::Accepted => {
                tracing::debug!($($field)+, "Login accepted.")
            }
            $crate::credentials::AuthOutcome::Rejected { code, .. } => {
                tracing::debug!($($field)+, code = %code, "Login rejected.")
            }
            $crate::credentials::AuthOutcome::Unreachable { reason } => {
                tracing::warn!($($field)+, reason = %reason, "Login attempt inconclusive.")
            }
        }
    };
}
pub(crate) use log_login;

/// The public `with_connect_timeout` and `address` of a target struct that has the
/// fields `endpoint: Endpoint` and `connect_timeout: Duration`; `$connect` says what
/// the connection limit covers.
macro_rules! endpoint_accessors {
    ($connect:literal) => {
        #[doc = concat!("Replaces the connection limit (", $connect, " together).")]
        pub fn with_connect_timeout(mut self, limit: std::time::Duration) -> Self {
            self.connect_timeout = limit;
            self
        }

        /// `host:port` of the server, for logs.
        pub fn address(&self) -> String {
            self.endpoint.address()
        }
    };
}
pub(crate) use endpoint_accessors;

/// The account rotor logs in to a target as. Its `Debug` shows the username and
/// `[REDACTED]` in place of the password.
#[derive(Clone)]
pub(crate) struct AdminLogin {
    /// The admin's user (or role) name.
    pub(crate) username: String,
    /// The admin's password.
    pub(crate) password: SecretString,
}

impl AdminLogin {
    /// A login from a target's parts.
    pub(crate) fn new(username: &str, password: SecretString) -> Self {
        Self {
            username: username.to_owned(),
            password,
        }
    }
}

impl fmt::Debug for AdminLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminLogin")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// The `username` and `password` of an admin credential; `Err` names the missing key.
pub(crate) fn admin_login(admin: &SecretMap) -> Result<(&str, &SecretString), &'static str> {
    let username = admin.expose("username").ok_or("username")?;
    let password = admin.get("password").ok_or("password")?;
    Ok((username, password))
}

/// A rule of [`check_name`]: a test that finds a fault in a name, and the reason to give
/// for it.
pub(crate) type NameRule = (fn(&str) -> bool, &'static str);

/// Checks a user or role name against an adapter's `rules`, in order; `Err` is the
/// reason of the first rule the name breaks.
pub(crate) fn check_name(name: &str, rules: &[NameRule]) -> Result<(), &'static str> {
    match rules.iter().find(|(fault, _)| fault(name)) {
        Some(&(_, reason)) => Err(reason),
        None => Ok(()),
    }
}

/// An outside call that did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {}s: {operation} on {address}", limit.as_secs())]
pub struct CallTimeout {
    /// What was being done, e.g. `set password`.
    pub operation: &'static str,
    /// `host:port` of the server.
    pub address: String,
    /// The limit that was hit.
    pub limit: Duration,
}

/// A server rotor calls: where it is and which outside system it counts as. Its calls
/// are bounded: connecting by the target's connect limit, each call by the agent-wide
/// call timeout ([`crate::outside::call_timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    system: System,
}

impl Endpoint {
    /// `host:port` of a `system`.
    pub fn new(host: &str, port: u16, system: System) -> Self {
        Endpoint {
            host: host.to_owned(),
            port,
            system,
        }
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, for logs and errors.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The limit of one call (statement or command): the agent-wide call timeout.
    pub fn call_limit() -> Duration {
        crate::outside::call_timeout()
    }

    /// The connect limit of a target whose own default is `default`: never longer
    /// than the agent-wide call timeout.
    pub fn connect_limit(default: Duration) -> Duration {
        default.min(crate::outside::call_timeout())
    }

    /// Counts a timeout of this system and describes it.
    pub fn timeout(&self, operation: &'static str, limit: Duration) -> CallTimeout {
        crate::outside::count_timeout(self.system);
        CallTimeout {
            operation,
            address: self.address(),
            limit,
        }
    }

    /// Counts a timeout of this system (for outcomes that are not errors).
    pub fn count_timeout(&self) {
        crate::outside::count_timeout(self.system);
    }

    /// Runs one call within [`Endpoint::call_limit`]; past it, `operation` timed out.
    pub async fn bounded<T, E: From<CallTimeout>>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let limit = Self::call_limit();
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| self.timeout(operation, limit))?
    }

    /// Opens an admin session within `limit` (TCP, TLS and authentication together);
    /// past it, `connect as admin` timed out.
    pub async fn connect_admin<T, E: From<CallTimeout>>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| self.timeout("connect as admin", limit))?
    }

    /// The answer to the `SELECT 1` a login probe sends once logged in, within
    /// [`Endpoint::call_limit`]: no answer or an error is
    /// [`AuthOutcome::Unreachable`]; an answer is judged by `judge`.
    pub async fn after_login<A, E: std::error::Error + 'static>(
        &self,
        query: impl Future<Output = Result<A, E>>,
        judge: impl FnOnce(A) -> AuthOutcome,
    ) -> AuthOutcome {
        let limit = Self::call_limit();
        match tokio::time::timeout(limit, query).await {
            Err(_) => {
                self.count_timeout();
                AuthOutcome::Unreachable {
                    reason: format!(
                        "logged in, but SELECT 1 got no answer within {}s",
                        limit.as_secs()
                    ),
                }
            }
            Ok(Err(error)) => AuthOutcome::Unreachable {
                reason: format!(
                    "logged in, but SELECT 1 failed: {}",
                    crate::error_chain(&error)
                ),
            },
            Ok(Ok(answer)) => judge(answer),
        }
    }
}

/// Overwrites every string in a JSON value (a request or answer that held secrets)
/// before it is dropped.
pub(crate) fn wipe_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe_json),
        _ => {}
    }
}

/// The task driving a connection's socket, aborted when dropped (a call cancelled
/// half-way leaves no connection behind).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::mysql::MysqlTarget;
    use crate::credentials::postgres::PostgresTarget;
    use crate::credentials::rabbitmq::RabbitmqTarget;
    use crate::credentials::redis::RedisTarget;

    #[test]
    fn a_name_gets_the_reason_of_the_first_rule_it_breaks() {
        let rules: &[NameRule] = &[
            (str::is_empty, "empty"),
            (|name| name.len() > 3, "long"),
            (|name| name.contains('\0'), "nul"),
        ];
        assert_eq!(check_name("abc", rules), Ok(()));
        assert_eq!(check_name("", rules), Err("empty"));
        assert_eq!(check_name("a\0bcd", rules), Err("long"));
        assert_eq!(check_name("a\0", rules), Err("nul"));
    }

    #[test]
    fn debug_of_every_admin_target_shows_the_user_but_not_the_password() {
        let password = || SecretString::from("canary-admin-91b2");
        let url = |text: &str| url::Url::parse(text).unwrap();
        let texts = [
            format!(
                "{:?}",
                MysqlTarget::from_parts("127.0.0.1", 3306, TargetTls::Disable, "admin", password())
                    .unwrap()
            ),
            format!(
                "{:?}",
                PostgresTarget::from_parts(
                    "127.0.0.1",
                    5432,
                    "postgres",
                    TargetTls::Disable,
                    "admin",
                    password()
                )
                .unwrap()
            ),
            format!(
                "{:?}",
                RedisTarget::from_parts(
                    "127.0.0.1",
                    6379,
                    TargetTls::Disable,
                    Some(("admin".into(), password()))
                )
                .unwrap()
            ),
            format!(
                "{:?}",
                RabbitmqTarget::from_parts(
                    url("http://127.0.0.1:15672"),
                    None,
                    "admin",
                    password()
                )
                .unwrap()
            ),
        ];
        for text in texts {
            assert!(text.contains("\"admin\""), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
            assert!(!text.contains("canary-admin-91b2"), "{text}");
        }
    }
}
