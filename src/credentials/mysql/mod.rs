//! MariaDB/MySQL user passwords: the primitives the engine calls to change, test, prove
//! revoked and contain an account's password on a real server.
//!
//! - [`MysqlTarget::set_password`] sends `ALTER USER … IDENTIFIED VIA mysql_native_password
//!   USING '*<hash>'` (MariaDB; `IDENTIFIED WITH mysql_native_password AS '*<hash>'` on
//!   MySQL). The hash (`*` + upper-case hex of SHA1(SHA1(password))) is computed here, so
//!   the cleartext never reaches SQL, the general log or `SHOW PROCESSLIST`.
//! - [`MysqlTarget::login`] (and the standalone [`login`]) log in as the account and run
//!   `SELECT 1`; only server error 1045 (access denied) counts as
//!   [`AuthOutcome::Rejected`].
//! - [`MysqlTarget::terminate_sessions`] ends the user's sessions with `KILL CONNECTION`.
//!
//! Every call opens its own admin connection (over TCP, never the server's unix socket)
//! and closes it with `COM_QUIT` before returning; a pool is the next step if thousands of
//! policies share one server. mysql_async keeps a copy of the password it logs in with in
//! its (non-zeroizing) options for the life of that connection.
//!
//! TLS mirrors [`TargetTls`] as far as mysql_async 0.37 allows:
//! - `disable`: plain TCP.
//! - `require` without a CA file: encrypted, certificate not checked (handshake
//!   signatures are).
//! - `require` with a CA file: the chain must lead to the CA; the host name is meant not to
//!   be checked (libpq's `verify-ca`). **Gap:** mysql_async 0.37.1 ignores its
//!   "skip domain validation" switch with current rustls (blackbeam/mysql_async#404, fixed
//!   upstream by #408, not released yet), so today a certificate whose names do not cover
//!   the host is refused here too. That fails closed: nothing is accepted that should not
//!   be. The error then says so.
//! - `verify-full`: chain against the CA file (or the system trust store, loaded the same
//!   way as for PostgreSQL, not mysql_async's built-in Mozilla list) and host name.
//!
//! mysql_async builds its rustls configuration with the process-wide crypto provider, so
//! a TLS target installs rotor's provider ([`crate::install_crypto_provider`]) if none is.

mod sql;
mod tls;

use std::fmt;
use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, IoError, OptsBuilder, SslOpts};
use secrecy::ExposeSecret;
use tracing::{debug, info};
use zeroize::Zeroizing;

use self::sql::{
    account_exists, alter_user_sql, native_password_hash, quote_account, set_password_error,
    validate_account_host, validate_user, wait_until_gone,
};
use self::tls::{build_ssl_opts, tls_failure, tls_hint};
use super::CredentialError;
use super::adapters::PasswordTarget;
use super::target::{
    AdminLogin, AuthOutcome, CallTimeout, Endpoint, TargetTls, TlsSetupError, admin_login,
    endpoint_accessors, log_login,
};
use crate::outside::System;
use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect, TLS and authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session may take to say goodbye (`COM_QUIT`) before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// `program_name` connection attribute of every connection rotor opens.
const PROGRAM_NAME: &str = "rotor";
/// Server error: access denied (wrong password or unknown user).
const ER_ACCESS_DENIED: u16 = 1045;
/// Server error: `ALTER USER` failed (e.g. the account does not exist).
const ER_CANNOT_USER: u16 = 1396;
/// Server error: unknown thread id (the session ended before `KILL`).
const ER_NO_SUCH_THREAD: u16 = 1094;

/// Errors of the MariaDB/MySQL target. None of them carries a password or a password hash.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum MysqlError {
    /// The admin credential lacks `username` or `password`.
    #[error("the admin credential has no {key:?} key")]
    #[strum(serialize = "admin_key_missing")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A user name the server cannot hold.
    #[error("invalid MySQL user name {user:?}: {reason}")]
    #[strum(serialize = "invalid_user_name")]
    InvalidUserName {
        /// The name as given.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An account host part the server cannot hold.
    #[error("invalid MySQL account host {account_host:?}: {reason}")]
    #[strum(serialize = "invalid_account_host")]
    InvalidAccountHost {
        /// The host part as given.
        account_host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given (the server would take it as "no password").
    #[error("refusing to set an empty password for {user:?}@{account_host:?}")]
    #[strum(serialize = "empty_password")]
    EmptyPassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The account host.
        account_host: String,
    },
    /// The TLS settings cannot be used (CA file, trust store).
    #[error(transparent)]
    #[strum(disabled)]
    Tls(#[from] TlsSetupError),
    /// The admin connection failed.
    #[error("cannot connect to MySQL at {host}:{port} as {user:?}{hint}")]
    #[strum(serialize = "connect")]
    Connect {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// The admin user.
        user: String,
        /// Extra advice for known causes (empty otherwise).
        hint: &'static str,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// An admin call did not finish in time.
    #[error(transparent)]
    #[strum(serialize = "timeout")]
    Timeout(#[from] CallTimeout),
    /// The account does not exist on the server.
    #[error("account {user:?}@{account_host:?} does not exist on {host}:{port}")]
    #[strum(serialize = "user_not_found")]
    UserNotFound {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The account host.
        account_host: String,
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
    },
    /// Looking up the account failed.
    #[error("cannot look up account {user:?}@{account_host:?}")]
    #[strum(serialize = "lookup_user")]
    LookupUser {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The account host.
        account_host: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// `ALTER USER … IDENTIFIED …` failed. The server's message is kept with any echo of
    /// the statement's password hash removed.
    #[error("cannot set the password of {user:?}@{account_host:?}: {message}")]
    #[strum(serialize = "set_password")]
    SetPassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The account host.
        account_host: String,
        /// The server error code; `None` when the connection failed instead.
        code: Option<u16>,
        /// What the server (or the connection) said, without the hash.
        message: String,
    },
    /// `ALTER USER … ACCOUNT LOCK` or `… ACCOUNT UNLOCK` failed.
    #[error("cannot {action} account {user:?}@{account_host:?}")]
    #[strum(serialize = "lock_account")]
    LockAccount {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The account host.
        account_host: String,
        /// `lock` or `unlock`.
        action: &'static str,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// Listing or killing the user's sessions failed.
    #[error("cannot terminate the sessions of user {user:?}")]
    #[strum(serialize = "terminate_sessions")]
    TerminateSessions {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: Box<mysql_async::Error>,
    },
}

impl MysqlError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MysqlError::Tls(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed (the server was unreachable, overloaded or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            MysqlError::Connect { source, .. } => match source.as_ref() {
                // Too many connections, shutting down, per-user connection limits.
                mysql_async::Error::Server(e) => matches!(e.code, 1040 | 1053 | 1203 | 1226),
                other => connection_failed(other),
            },
            MysqlError::Timeout(_) => true,
            MysqlError::LookupUser { source, .. }
            | MysqlError::TerminateSessions { source, .. }
            | MysqlError::LockAccount { source, .. } => {
                match source.as_ref() {
                    // Lock wait timeout, deadlock.
                    mysql_async::Error::Server(e) => matches!(e.code, 1205 | 1213),
                    other => connection_failed(other),
                }
            }
            MysqlError::SetPassword { code, .. } => matches!(code, None | Some(1205 | 1213)),
            _ => false,
        }
    }
}

/// Network trouble (worth a retry), as opposed to TLS, protocol or setup failures.
fn connection_failed(error: &mysql_async::Error) -> bool {
    match error {
        mysql_async::Error::Io(IoError::Io(_)) => tls_failure(error).is_none(),
        mysql_async::Error::Driver(DriverError::ConnectionClosed) => true,
        _ => false,
    }
}

/// A MariaDB/MySQL server and the admin account rotor uses on it.
///
/// The admin needs `CREATE USER` (for `ALTER USER`), `SELECT` on `mysql.user`, `PROCESS`
/// and `CONNECTION ADMIN` (or `SUPER`) to see and end other users' sessions.
#[derive(Clone)]
pub struct MysqlTarget {
    endpoint: Endpoint,
    tls: TargetTls,
    ssl: Option<SslOpts>,
    admin: AdminLogin,
    connect_timeout: Duration,
}

impl fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlTarget")
            .field("host", &self.endpoint.host())
            .field("port", &self.endpoint.port())
            .field("tls", &self.tls)
            .field("admin", &self.admin)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl MysqlTarget {
    /// A target from a policy's `connection` and the admin credential it references
    /// (keys `username` and `password`). Reads the TLS CA file, if any; no network.
    pub fn new(
        conn: &crate::policy::MysqlConnection,
        admin: &SecretMap,
    ) -> Result<Self, MysqlError> {
        let tls = TargetTls::from(conn.tls.as_ref());
        let (username, password) =
            admin_login(admin).map_err(|key| MysqlError::AdminKeyMissing { key })?;
        Self::from_parts(&conn.host, conn.port, tls, username, password.clone())
    }

    /// A target from its parts (for probes that are not a policy `connection`, and tests).
    /// Reads the TLS CA file (or the system trust store), if any; no network.
    pub fn from_parts(
        host: &str,
        port: u16,
        tls: TargetTls,
        admin_username: &str,
        admin_password: SecretString,
    ) -> Result<Self, MysqlError> {
        let ssl = build_ssl_opts(&tls)?;
        Ok(Self {
            endpoint: Endpoint::new(host, port, System::Mysql),
            tls,
            ssl,
            admin: AdminLogin::new(admin_username, admin_password),
            connect_timeout: Endpoint::connect_limit(DEFAULT_CONNECT_TIMEOUT),
        })
    }

    endpoint_accessors!("TCP connect, TLS and authentication");

    /// Sets the password of `'user'@'account_host'` without the cleartext in SQL: the
    /// `mysql_native_password` hash is computed here and sent as
    /// `ALTER USER … IDENTIFIED VIA mysql_native_password USING '*HASH'` (MariaDB) or
    /// `… IDENTIFIED WITH mysql_native_password AS '*HASH'` (MySQL; 8.4 and later need the
    /// plugin enabled). Idempotent. Fails with [`MysqlError::UserNotFound`] when the
    /// account does not exist.
    pub async fn set_password(
        &self,
        user: &str,
        account_host: &str,
        password: &SecretString,
    ) -> Result<(), MysqlError> {
        validate_user(user)?;
        validate_account_host(account_host)?;
        if password.expose_secret().is_empty() {
            return Err(MysqlError::EmptyPassword {
                user: user.to_owned(),
                account_host: account_host.to_owned(),
            });
        }
        let hash = native_password_hash(password);
        self.alter_account(
            user,
            account_host,
            "set password",
            async |conn: &mut Conn| {
                let version: Option<String> = conn
                    .query_first("SELECT VERSION()")
                    .await
                    .map_err(|e| set_password_error(user, account_host, &e, &hash))?;
                let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
                Ok(alter_user_sql(user, account_host, &hash, mariadb))
            },
            |e| set_password_error(user, account_host, &e, &hash),
        )
        .await?;
        info!(user = %user, account_host = %account_host, target = %self.address(), "Account password set.");
        Ok(())
    }

    /// Locks `'user'@'account_host'` (`ALTER USER … ACCOUNT LOCK`, MariaDB 10.4+ and
    /// MySQL 5.7+) with `lock`, or unlocks it. A locked account cannot open new
    /// sessions even with its password; rotor retires an account by locking it *and*
    /// giving it an unknown password, so an old password is refused with `1045` (the
    /// server checks the password before the lock). Idempotent. Fails with
    /// [`MysqlError::UserNotFound`] when the account does not exist.
    pub async fn set_locked(
        &self,
        user: &str,
        account_host: &str,
        lock: bool,
    ) -> Result<(), MysqlError> {
        validate_user(user)?;
        validate_account_host(account_host)?;
        let (clause, action) = if lock {
            ("ACCOUNT LOCK", "lock")
        } else {
            ("ACCOUNT UNLOCK", "unlock")
        };
        let sql = Zeroizing::new(format!(
            "ALTER USER {} {clause}",
            quote_account(user, account_host)
        ));
        self.alter_account(
            user,
            account_host,
            "lock account",
            async |_: &mut Conn| Ok(sql),
            |source| MysqlError::LockAccount {
                user: user.to_owned(),
                account_host: account_host.to_owned(),
                action,
                source: Box::new(source),
            },
        )
        .await?;
        info!(user = %user, account_host = %account_host, target = %self.address(), action, "Account lock changed.");
        Ok(())
    }

    /// Whether the account `'user'@'account_host'` exists (`mysql.user`, a view over
    /// `mysql.global_priv` on MariaDB). The host part must match exactly (`%` is not a
    /// wildcard here).
    pub async fn user_exists(&self, user: &str, account_host: &str) -> Result<bool, MysqlError> {
        validate_user(user)?;
        validate_account_host(account_host)?;
        self.with_admin("look up account", async |conn: &mut Conn| {
            account_exists(conn, user, account_host).await
        })
        .await
    }

    /// Logs in as `user` with `password` (no database) and runs `SELECT 1`.
    ///
    /// [`AuthOutcome::Rejected`] only for server error 1045 (access denied: a wrong
    /// password, or no such account). Everything else is [`AuthOutcome::Unreachable`]:
    /// refused connection, timeout, TLS failure, 1044, 1130 (host not allowed), a locked
    /// account, an authentication plugin this client lacks — none of them says the
    /// password is dead. Never panics.
    pub async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        let outcome = try_login(
            &self.endpoint,
            (&self.tls, self.ssl.clone()),
            user,
            password,
            self.connect_timeout,
        )
        .await;
        log_login!(outcome, user = %user, target = %self.address());
        outcome
    }

    /// Ends every session of `user` — from any host, since `PROCESSLIST` shows the user
    /// name only — with `KILL CONNECTION id`, never the admin's own connection, then waits
    /// (up to 5 s) until they are gone. Returns how many were killed.
    ///
    /// Unlike PostgreSQL, MariaDB's `PROCESSLIST` has no connection start time, so
    /// sessions opened with the new password are ended too; their clients reconnect.
    pub async fn terminate_sessions(&self, user: &str) -> Result<u64, MysqlError> {
        validate_user(user)?;
        let killed = self
            .with_admin("terminate sessions", async |conn: &mut Conn| {
                let err = |source| MysqlError::TerminateSessions {
                    user: user.to_owned(),
                    source: Box::new(source),
                };
                let ids: Vec<u64> = conn
                    .exec(
                        "SELECT ID FROM information_schema.PROCESSLIST \
                         WHERE USER = ? AND ID <> CONNECTION_ID()",
                        (user,),
                    )
                    .await
                    .map_err(err)?;
                let mut killed = Vec::with_capacity(ids.len());
                for id in ids {
                    match conn.query_drop(format!("KILL CONNECTION {id}")).await {
                        Ok(()) => killed.push(id),
                        // Gone already.
                        Err(mysql_async::Error::Server(e)) if e.code == ER_NO_SUCH_THREAD => {}
                        Err(e) => return Err(err(e)),
                    }
                }
                wait_until_gone(conn, &killed).await.map_err(err)?;
                Ok(killed.len() as u64)
            })
            .await?;
        info!(user = %user, target = %self.address(), sessions = killed, "User sessions terminated.");
        Ok(killed)
    }

    async fn admin_connection(&self) -> Result<Conn, MysqlError> {
        let opts = connect_opts(
            &self.endpoint,
            self.ssl.clone(),
            &self.admin.username,
            &self.admin.password,
        );
        self.endpoint
            .connect_admin(self.connect_timeout, async {
                Conn::new(opts).await.map_err(|source| MysqlError::Connect {
                    host: self.endpoint.host().to_owned(),
                    port: self.endpoint.port(),
                    user: self.admin.username.clone(),
                    hint: tls_hint(&self.tls, &source),
                    source: Box::new(source),
                })
            })
            .await
    }

    /// Runs `work` on a new admin connection within the call limit, then says goodbye.
    async fn with_admin<T>(
        &self,
        operation: &'static str,
        work: impl AsyncFnOnce(&mut Conn) -> Result<T, MysqlError>,
    ) -> Result<T, MysqlError> {
        let mut conn = self.admin_connection().await?;
        let result = self.endpoint.bounded(operation, work(&mut conn)).await;
        close(conn).await;
        result
    }

    /// Runs the `ALTER USER` that `statement` writes as the admin if the account exists:
    /// [`MysqlError::UserNotFound`] when it does not (also when it is dropped between
    /// the check and the statement), `failed` for any other error.
    async fn alter_account(
        &self,
        user: &str,
        account_host: &str,
        operation: &'static str,
        statement: impl AsyncFnOnce(&mut Conn) -> Result<Zeroizing<String>, MysqlError>,
        failed: impl FnOnce(mysql_async::Error) -> MysqlError,
    ) -> Result<(), MysqlError> {
        self.with_admin(operation, async |conn: &mut Conn| {
            if !account_exists(conn, user, account_host).await? {
                return Err(self.user_not_found(user, account_host));
            }
            let sql = statement(conn).await?;
            match conn.query_drop(sql.as_str()).await {
                Ok(()) => Ok(()),
                // Dropped between the check and the ALTER.
                Err(mysql_async::Error::Server(e)) if e.code == ER_CANNOT_USER => {
                    Err(self.user_not_found(user, account_host))
                }
                Err(e) => Err(failed(e)),
            }
        })
        .await
    }

    fn user_not_found(&self, user: &str, account_host: &str) -> MysqlError {
        MysqlError::UserNotFound {
            user: user.to_owned(),
            account_host: account_host.to_owned(),
            host: self.endpoint.host().to_owned(),
            port: self.endpoint.port(),
        }
    }
}

/// Logs in to `host:port` as `user` with `password` and runs `SELECT 1` — the probe the
/// `vault-database` kind uses for `probe: {type: mysql}`. Same outcomes as
/// [`MysqlTarget::login`]; a CA file that cannot be read is [`AuthOutcome::Unreachable`].
pub async fn login(
    host: &str,
    port: u16,
    tls: &TargetTls,
    user: &str,
    password: &SecretString,
) -> AuthOutcome {
    let ssl = match build_ssl_opts(tls) {
        Ok(ssl) => ssl,
        Err(error) => {
            return AuthOutcome::Unreachable {
                reason: crate::error_chain(&error),
            };
        }
    };
    try_login(
        &Endpoint::new(host, port, System::Mysql),
        (tls, ssl),
        user,
        password,
        Endpoint::connect_limit(DEFAULT_CONNECT_TIMEOUT),
    )
    .await
}

async fn try_login(
    endpoint: &Endpoint,
    (tls, ssl): (&TargetTls, Option<SslOpts>),
    user: &str,
    password: &SecretString,
    connect_timeout: Duration,
) -> AuthOutcome {
    let opts = connect_opts(endpoint, ssl, user, password);
    let mut conn = match tokio::time::timeout(connect_timeout, Conn::new(opts)).await {
        Err(_) => {
            endpoint.count_timeout();
            return AuthOutcome::Unreachable {
                reason: format!(
                    "no login answer from {} within {} ms",
                    endpoint.address(),
                    connect_timeout.as_millis()
                ),
            };
        }
        Ok(Err(error)) => {
            return match classify_login_error(&error) {
                AuthOutcome::Unreachable { reason } => AuthOutcome::Unreachable {
                    reason: format!("{reason}{}", tls_hint(tls, &error)),
                },
                other => other,
            };
        }
        Ok(Ok(conn)) => conn,
    };
    let outcome = endpoint
        .after_login(
            conn.query_first::<i64, _>("SELECT 1"),
            |answer| match answer {
                Some(1) => AuthOutcome::Accepted,
                other => AuthOutcome::Unreachable {
                    reason: format!("SELECT 1 answered {other:?}"),
                },
            },
        )
        .await;
    close(conn).await;
    outcome
}

fn classify_login_error(error: &mysql_async::Error) -> AuthOutcome {
    match error {
        mysql_async::Error::Server(e) if e.code == ER_ACCESS_DENIED => AuthOutcome::Rejected {
            code: e.code.to_string(),
            message: e.message.clone(),
        },
        mysql_async::Error::Server(e) => AuthOutcome::Unreachable {
            reason: format!(
                "server answered error {} ({}), which does not prove the password is rejected",
                e.code, e.message
            ),
        },
        other => AuthOutcome::Unreachable {
            reason: crate::error_chain(other),
        },
    }
}

/// Options for one TCP connection (never switched to the unix socket, which would skip TLS
/// and match other accounts).
fn connect_opts(
    endpoint: &Endpoint,
    ssl: Option<SslOpts>,
    user: &str,
    password: &SecretString,
) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(endpoint.host())
        .tcp_port(endpoint.port())
        .user(Some(user))
        .pass(Some(password.expose_secret()))
        .prefer_socket(false)
        .ssl_opts(ssl)
        .tcp_nodelay(true)
        .connect_attribute("program_name", PROGRAM_NAME)
}

/// Says goodbye with `COM_QUIT`; a connection that does not answer in time is dropped.
async fn close(conn: Conn) {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.disconnect()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(error = %error, "MySQL connection ended with an error."),
        Err(_) => debug!("MySQL connection did not close in time; dropped it."),
    }
}

/// The accounts of one host part on a MariaDB/MySQL server: the adapter of the `mysql`
/// kind.
pub struct MysqlAccounts {
    target: MysqlTarget,
    account_host: String,
}

impl MysqlAccounts {
    /// The accounts `'user'@'account_host'` of `target`.
    pub fn new(target: MysqlTarget, account_host: &str) -> Self {
        MysqlAccounts {
            target,
            account_host: account_host.to_owned(),
        }
    }
}

impl PasswordTarget for MysqlAccounts {
    async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        Ok(self
            .target
            .set_password(user, &self.account_host, password)
            .await?)
    }

    async fn disable(&self, user: &str, unknown: &SecretString) -> Result<String, CredentialError> {
        let account_host = &self.account_host;
        self.target
            .set_password(user, account_host, unknown)
            .await?;
        self.target.set_locked(user, account_host, true).await?;
        Ok(format!(
            "account {user}@{account_host}: locked, password replaced by an unknown random one"
        ))
    }

    async fn enable(&self, user: &str) -> Result<Option<String>, CredentialError> {
        let account_host = &self.account_host;
        self.target.set_locked(user, account_host, false).await?;
        Ok(Some(format!("account {user}@{account_host}: unlocked")))
    }

    async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        self.target.login(user, password).await
    }

    /// MariaDB shows no connection start time: every session of the user ends.
    async fn terminate(
        &self,
        user: &str,
        _opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        Ok(self.target.terminate_sessions(user).await?)
    }
}

#[cfg(test)]
mod tests;
