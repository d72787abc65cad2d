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

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, IoError, OptsBuilder, SslOpts};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::ExposeSecret;
use sha1::{Digest, Sha1};
use tracing::{debug, info, warn};
use zeroize::{Zeroize, Zeroizing};

use super::AuthOutcome;
use super::postgres::TargetTls;
use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect, TLS and authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for one statement (or command): the agent-wide call timeout.
fn statement_timeout() -> Duration {
    crate::outside::call_timeout()
}
/// How long a session may take to say goodbye (`COM_QUIT`) before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`MysqlTarget::terminate_sessions`] waits for killed sessions to be gone.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);
/// `program_name` connection attribute of every connection rotor opens.
const PROGRAM_NAME: &str = "rotor";
/// Server error: access denied (wrong password or unknown user).
const ER_ACCESS_DENIED: u16 = 1045;
/// Server error: `ALTER USER` failed (e.g. the account does not exist).
const ER_CANNOT_USER: u16 = 1396;
/// Server error: unknown thread id (the session ended before `KILL`).
const ER_NO_SUCH_THREAD: u16 = 1094;

/// Errors of the MariaDB/MySQL target. None of them carries a password or a password hash.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// The admin credential lacks `username` or `password`.
    #[error("the admin credential has no {key:?} key")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A user name the server cannot hold.
    #[error("invalid MySQL user name {user:?}: {reason}")]
    InvalidUserName {
        /// The name as given.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An account host part the server cannot hold.
    #[error("invalid MySQL account host {account_host:?}: {reason}")]
    InvalidAccountHost {
        /// The host part as given.
        account_host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given (the server would take it as "no password").
    #[error("refusing to set an empty password for {user:?}@{account_host:?}")]
    EmptyPassword {
        /// The user.
        user: String,
        /// The account host.
        account_host: String,
    },
    /// The TLS CA file could not be read.
    #[error("cannot read the TLS CA file {}", path.display())]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TLS CA file holds no usable certificate.
    #[error("the TLS CA file {} holds no usable PEM certificate", path.display())]
    InvalidCaFile {
        /// The file.
        path: PathBuf,
    },
    /// `verify-full` without a CA file, and the system trust store has no certificate.
    #[error("no CA file given and the system trust store holds no usable certificate")]
    NoSystemRoots,
    /// The admin connection failed.
    #[error("cannot connect to MySQL at {host}:{port} as {user:?}{hint}")]
    Connect {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// The admin user.
        user: String,
        /// Extra advice for known causes (empty otherwise).
        hint: &'static str,
        /// Why.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// An admin call did not finish in time.
    #[error("timed out after {}s: {operation} on {host}:{port}", limit.as_secs())]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// The limit that was hit.
        limit: Duration,
    },
    /// The account does not exist on the server.
    #[error("account {user:?}@{account_host:?} does not exist on {host}:{port}")]
    UserNotFound {
        /// The user.
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
    LookupUser {
        /// The user.
        user: String,
        /// The account host.
        account_host: String,
        /// Why.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// `ALTER USER … IDENTIFIED …` failed. The server's message is kept with any echo of
    /// the statement's password hash removed.
    #[error("cannot set the password of {user:?}@{account_host:?}: {message}")]
    SetPassword {
        /// The user.
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
    LockAccount {
        /// The user.
        user: String,
        /// The account host.
        account_host: String,
        /// `lock` or `unlock`.
        action: &'static str,
        /// Why.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// Listing or killing the user's sessions failed.
    #[error("cannot terminate the sessions of user {user:?}")]
    TerminateSessions {
        /// The user.
        user: String,
        /// Why.
        #[source]
        source: Box<mysql_async::Error>,
    },
}

impl MysqlError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MysqlError::AdminKeyMissing { .. } => "admin_key_missing",
            MysqlError::InvalidUserName { .. } => "invalid_user_name",
            MysqlError::InvalidAccountHost { .. } => "invalid_account_host",
            MysqlError::EmptyPassword { .. } => "empty_password",
            MysqlError::ReadCaFile { .. } => "read_ca_file",
            MysqlError::InvalidCaFile { .. } => "invalid_ca_file",
            MysqlError::NoSystemRoots => "no_system_roots",
            MysqlError::Connect { .. } => "connect",
            MysqlError::Timeout { .. } => "timeout",
            MysqlError::UserNotFound { .. } => "user_not_found",
            MysqlError::LookupUser { .. } => "lookup_user",
            MysqlError::SetPassword { .. } => "set_password",
            MysqlError::TerminateSessions { .. } => "terminate_sessions",
            MysqlError::LockAccount { .. } => "lock_account",
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
            MysqlError::Timeout { .. } => true,
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

/// The rustls error behind a failed connection, if TLS is what failed. The handshake's
/// errors reach mysql_async as an `io::Error` wrapping the rustls error.
fn tls_failure(error: &mysql_async::Error) -> Option<&rustls::Error> {
    match error {
        mysql_async::Error::Io(IoError::Tls(mysql_async::TlsError::Tls(e))) => Some(e),
        mysql_async::Error::Io(IoError::Io(e)) => e.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// A MariaDB/MySQL server and the admin account rotor uses on it.
///
/// The admin needs `CREATE USER` (for `ALTER USER`), `SELECT` on `mysql.user`, `PROCESS`
/// and `CONNECTION ADMIN` (or `SUPER`) to see and end other users' sessions.
#[derive(Clone)]
pub struct MysqlTarget {
    host: String,
    port: u16,
    tls: TargetTls,
    ssl: Option<SslOpts>,
    admin_username: String,
    admin_password: SecretString,
    connect_timeout: Duration,
}

impl fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &"[REDACTED]")
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
        let username = admin
            .expose("username")
            .ok_or(MysqlError::AdminKeyMissing { key: "username" })?;
        let password = admin
            .get("password")
            .ok_or(MysqlError::AdminKeyMissing { key: "password" })?;
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
            host: host.to_owned(),
            port,
            tls,
            ssl,
            admin_username: admin_username.to_owned(),
            admin_password,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(crate::outside::call_timeout()),
        })
    }

    /// Replaces the connection limit (TCP connect, TLS and authentication together).
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// `host:port` of the server, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

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
        let mut conn = self.admin_connection().await?;
        let result = self
            .bounded("set password", async {
                if !account_exists(&mut conn, user, account_host).await? {
                    return Err(self.user_not_found(user, account_host));
                }
                let version: Option<String> = conn
                    .query_first("SELECT VERSION()")
                    .await
                    .map_err(|e| set_password_error(user, account_host, &e, &hash))?;
                let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
                let sql = alter_user_sql(user, account_host, &hash, mariadb);
                match conn.query_drop(sql.as_str()).await {
                    Ok(()) => Ok(()),
                    Err(mysql_async::Error::Server(e)) if e.code == ER_CANNOT_USER => {
                        // Dropped between the check and the ALTER.
                        Err(self.user_not_found(user, account_host))
                    }
                    Err(e) => Err(set_password_error(user, account_host, &e, &hash)),
                }
            })
            .await;
        close(conn).await;
        result?;
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
        let sql = format!("ALTER USER {} {clause}", quote_account(user, account_host));
        let mut conn = self.admin_connection().await?;
        let result = self
            .bounded("lock account", async {
                if !account_exists(&mut conn, user, account_host).await? {
                    return Err(self.user_not_found(user, account_host));
                }
                match conn.query_drop(sql.as_str()).await {
                    Ok(()) => Ok(()),
                    Err(mysql_async::Error::Server(e)) if e.code == ER_CANNOT_USER => {
                        Err(self.user_not_found(user, account_host))
                    }
                    Err(source) => Err(MysqlError::LockAccount {
                        user: user.to_owned(),
                        account_host: account_host.to_owned(),
                        action,
                        source: Box::new(source),
                    }),
                }
            })
            .await;
        close(conn).await;
        result?;
        info!(user = %user, account_host = %account_host, target = %self.address(), action, "Account lock changed.");
        Ok(())
    }

    /// Whether the account `'user'@'account_host'` exists (`mysql.user`, a view over
    /// `mysql.global_priv` on MariaDB). The host part must match exactly (`%` is not a
    /// wildcard here).
    pub async fn user_exists(&self, user: &str, account_host: &str) -> Result<bool, MysqlError> {
        validate_user(user)?;
        validate_account_host(account_host)?;
        let mut conn = self.admin_connection().await?;
        let result = self
            .bounded(
                "look up account",
                account_exists(&mut conn, user, account_host),
            )
            .await;
        close(conn).await;
        result
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
            &self.host,
            self.port,
            (&self.tls, self.ssl.clone()),
            user,
            password,
            self.connect_timeout,
        )
        .await;
        match &outcome {
            AuthOutcome::Accepted => {
                debug!(user = %user, target = %self.address(), "Login accepted.")
            }
            AuthOutcome::Rejected { code, .. } => {
                debug!(user = %user, target = %self.address(), code = %code, "Login rejected.")
            }
            AuthOutcome::Unreachable { reason } => {
                warn!(user = %user, target = %self.address(), reason = %reason, "Login attempt inconclusive.")
            }
        }
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
        let mut conn = self.admin_connection().await?;
        let result = self
            .bounded("terminate sessions", async {
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
                wait_until_gone(&mut conn, &killed).await.map_err(err)?;
                Ok(killed.len() as u64)
            })
            .await;
        close(conn).await;
        let killed = result?;
        info!(user = %user, target = %self.address(), sessions = killed, "User sessions terminated.");
        Ok(killed)
    }

    async fn admin_connection(&self) -> Result<Conn, MysqlError> {
        let opts = connect_opts(
            &self.host,
            self.port,
            self.ssl.clone(),
            &self.admin_username,
            &self.admin_password,
        );
        match tokio::time::timeout(self.connect_timeout, Conn::new(opts)).await {
            Err(_) => Err(self.timeout("connect as admin", self.connect_timeout)),
            Ok(Err(source)) => Err(MysqlError::Connect {
                host: self.host.clone(),
                port: self.port,
                user: self.admin_username.clone(),
                hint: tls_hint(&self.tls, &source),
                source: Box::new(source),
            }),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, MysqlError>>,
    ) -> Result<T, MysqlError> {
        tokio::time::timeout(statement_timeout(), work)
            .await
            .map_err(|_| self.timeout(operation, statement_timeout()))?
    }

    fn timeout(&self, operation: &'static str, limit: Duration) -> MysqlError {
        crate::outside::count_timeout(crate::outside::System::Mysql);
        MysqlError::Timeout {
            operation,
            host: self.host.clone(),
            port: self.port,
            limit,
        }
    }

    fn user_not_found(&self, user: &str, account_host: &str) -> MysqlError {
        MysqlError::UserNotFound {
            user: user.to_owned(),
            account_host: account_host.to_owned(),
            host: self.host.clone(),
            port: self.port,
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
        host,
        port,
        (tls, ssl),
        user,
        password,
        DEFAULT_CONNECT_TIMEOUT.min(crate::outside::call_timeout()),
    )
    .await
}

async fn try_login(
    host: &str,
    port: u16,
    (tls, ssl): (&TargetTls, Option<SslOpts>),
    user: &str,
    password: &SecretString,
    connect_timeout: Duration,
) -> AuthOutcome {
    let opts = connect_opts(host, port, ssl, user, password);
    let mut conn = match tokio::time::timeout(connect_timeout, Conn::new(opts)).await {
        Err(_) => {
            crate::outside::count_timeout(crate::outside::System::Mysql);
            return AuthOutcome::Unreachable {
                reason: format!(
                    "no login answer from {host}:{port} within {} ms",
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
    let result =
        tokio::time::timeout(statement_timeout(), conn.query_first::<i64, _>("SELECT 1")).await;
    close(conn).await;
    match result {
        Err(_) => {
            crate::outside::count_timeout(crate::outside::System::Mysql);
            AuthOutcome::Unreachable {
                reason: format!(
                    "logged in, but SELECT 1 got no answer within {}s",
                    statement_timeout().as_secs()
                ),
            }
        }
        Ok(Err(error)) => AuthOutcome::Unreachable {
            reason: format!(
                "logged in, but SELECT 1 failed: {}",
                crate::error_chain(&error)
            ),
        },
        Ok(Ok(Some(1))) => AuthOutcome::Accepted,
        Ok(Ok(other)) => AuthOutcome::Unreachable {
            reason: format!("SELECT 1 answered {other:?}"),
        },
    }
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
    host: &str,
    port: u16,
    ssl: Option<SslOpts>,
    user: &str,
    password: &SecretString,
) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
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

async fn account_exists(
    conn: &mut Conn,
    user: &str,
    account_host: &str,
) -> Result<bool, MysqlError> {
    conn.exec_first::<i64, _, _>(
        "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
        (user, account_host),
    )
    .await
    .map(|count| count.unwrap_or(0) > 0)
    .map_err(|source| MysqlError::LookupUser {
        user: user.to_owned(),
        account_host: account_host.to_owned(),
        source: Box::new(source),
    })
}

/// Polls `PROCESSLIST` until none of `ids` is listed (killed sessions show as `Killed`
/// until their thread has ended), for at most [`TERMINATE_WAIT`].
async fn wait_until_gone(conn: &mut Conn, ids: &[u64]) -> Result<(), mysql_async::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let sql = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ({list})");
    let deadline = Instant::now() + TERMINATE_WAIT;
    loop {
        let left: Option<i64> = conn.query_first(sql.as_str()).await?;
        if left.unwrap_or(0) == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            warn!(
                sessions = left.unwrap_or(0),
                "Killed sessions still listed after {}s.",
                TERMINATE_WAIT.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set_password_error(
    user: &str,
    account_host: &str,
    error: &mysql_async::Error,
    hash: &str,
) -> MysqlError {
    let (code, text) = match error {
        mysql_async::Error::Server(e) => (Some(e.code), e.message.clone()),
        other => (None, crate::error_chain(other)),
    };
    // A syntax error echoes part of the statement; keep the hash out of the message.
    let message = text.replace(hash, "[REDACTED]");
    MysqlError::SetPassword {
        user: user.to_owned(),
        account_host: account_host.to_owned(),
        code,
        message,
    }
}

/// Advice for the known mysql_async gap (see the module documentation): `require` with a
/// CA file still checks the host name.
fn tls_hint(tls: &TargetTls, error: &mysql_async::Error) -> &'static str {
    if matches!(tls, TargetTls::Require { ca_file: Some(_) }) && is_name_mismatch(error) {
        " (tls.mode require with caFile cannot skip the host-name check with this \
         MySQL client library: use a host name the certificate names)"
    } else {
        ""
    }
}

/// Whether the connection failed because the certificate does not name the host.
fn is_name_mismatch(error: &mysql_async::Error) -> bool {
    matches!(
        tls_failure(error),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        ))
    )
}

/// The `mysql_native_password` hash the server stores: `*` followed by the upper-case hex
/// of SHA1(SHA1(password)). The intermediate SHA1(password) — what the protocol's
/// scramble is made of — is wiped.
fn native_password_hash(password: &SecretString) -> Zeroizing<String> {
    let mut stage1: [u8; 20] = Sha1::digest(password.expose_secret().as_bytes()).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    stage1.zeroize();
    Zeroizing::new(format!("*{}", hex::encode_upper(stage2)))
}

/// `ALTER USER` with the hash (which holds only `*` and hex digits, so it needs no escaping).
fn alter_user_sql(user: &str, account_host: &str, hash: &str, mariadb: bool) -> Zeroizing<String> {
    let account = quote_account(user, account_host);
    Zeroizing::new(if mariadb {
        format!("ALTER USER {account} IDENTIFIED VIA mysql_native_password USING '{hash}'")
    } else {
        format!("ALTER USER {account} IDENTIFIED WITH mysql_native_password AS '{hash}'")
    })
}

/// `` `user`@`host` `` with embedded backticks doubled. Account names may be quoted as
/// identifiers; inside backticks a backslash is an ordinary character whatever the
/// `sql_mode` (unlike in a string literal under `NO_BACKSLASH_ESCAPES` or not).
fn quote_account(user: &str, account_host: &str) -> String {
    format!("{}@{}", quote_ident(user), quote_ident(account_host))
}

fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn validate_user(user: &str) -> Result<(), MysqlError> {
    let reason = if user.is_empty() {
        // The anonymous account: never a rotation target.
        "empty (the anonymous account)"
    } else if user.contains('\0') {
        "contains a NUL character"
    } else {
        // Longer names are refused by the server itself (no silent truncation).
        return Ok(());
    };
    Err(MysqlError::InvalidUserName {
        user: user.to_owned(),
        reason,
    })
}

fn validate_account_host(account_host: &str) -> Result<(), MysqlError> {
    if account_host.contains('\0') {
        return Err(MysqlError::InvalidAccountHost {
            account_host: account_host.to_owned(),
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

fn build_ssl_opts(tls: &TargetTls) -> Result<Option<SslOpts>, MysqlError> {
    let ssl = match tls {
        TargetTls::Disable => return Ok(None),
        // Built-in roots stay in: mysql_async's signature verifier needs a non-empty store,
        // and with invalid certificates accepted they decide nothing.
        TargetTls::Require { ca_file: None } => {
            SslOpts::default().with_danger_accept_invalid_certs(true)
        }
        TargetTls::Require {
            ca_file: Some(path),
        } => SslOpts::default()
            .with_root_certs(der_buffers(load_ca_file(path)?))
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(true),
        TargetTls::VerifyFull { ca_file } => {
            let roots = match ca_file {
                Some(path) => load_ca_file(path)?,
                None => system_roots()?,
            };
            SslOpts::default()
                .with_root_certs(der_buffers(roots))
                .with_disable_built_in_roots(true)
        }
    };
    crate::install_crypto_provider();
    Ok(Some(ssl))
}

/// mysql_async's root certificate list (its `PathOrBuf` type is not exported by name);
/// a buffer without PEM markers is taken as one DER certificate.
fn der_buffers<T: From<Vec<u8>>>(certs: Vec<Vec<u8>>) -> Vec<T> {
    certs.into_iter().map(T::from).collect()
}

/// The CA certificates of a PEM file, as DER (read now, not at each connect).
fn load_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, MysqlError> {
    let pem = std::fs::read(path).map_err(|source| MysqlError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let invalid = || MysqlError::InvalidCaFile {
        path: path.to_owned(),
    };
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| invalid())?;
        certs.push(cert.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err(invalid());
    }
    Ok(certs)
}

fn system_roots() -> Result<Vec<Vec<u8>>, MysqlError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        debug!(error = %error, "Skipping part of the system trust store.");
    }
    let certs: Vec<Vec<u8>> = found
        .certs
        .into_iter()
        .map(|cert| cert.as_ref().to_vec())
        .collect();
    debug!(count = certs.len(), "Loaded the system trust store.");
    if certs.is_empty() {
        return Err(MysqlError::NoSystemRoots);
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_the_server_password_function() {
        // SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
        assert_eq!(
            native_password_hash(&SecretString::from("password")).as_str(),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        let hash = native_password_hash(&SecretString::from("canary-Pw-7c1e"));
        assert_eq!(hash.len(), 41);
        assert!(!hash.contains("canary"));
    }

    #[test]
    fn alter_user_carries_the_hash_not_the_password() {
        let password = SecretString::from("canary-Pw-7c1e");
        let hash = native_password_hash(&password);
        let maria = alter_user_sql("app", "%", &hash, true);
        assert_eq!(
            maria.as_str(),
            format!(
                "ALTER USER `app`@`%` IDENTIFIED VIA mysql_native_password USING '{}'",
                *hash
            )
        );
        assert!(!maria.contains("canary-Pw-7c1e"));
        let mysql = alter_user_sql("app", "10.0.0.%", &hash, false);
        assert!(mysql.ends_with(&format!(
            "IDENTIFIED WITH mysql_native_password AS '{}'",
            *hash
        )));
        assert!(!mysql.contains("canary-Pw-7c1e"));
    }

    #[test]
    fn accounts_are_quoted_as_identifiers() {
        assert_eq!(quote_account("app", "%"), "`app`@`%`");
        assert_eq!(quote_account("a`b", "h'\\"), "`a``b`@`h'\\`");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_user("payments_app").is_ok());
        for bad in ["", "a\0b"] {
            assert_eq!(validate_user(bad).unwrap_err().kind(), "invalid_user_name");
        }
        assert!(validate_account_host("%").is_ok());
        assert_eq!(
            validate_account_host("a\0").unwrap_err().kind(),
            "invalid_account_host"
        );
    }

    #[test]
    fn set_password_errors_never_echo_the_hash() {
        let hash = native_password_hash(&SecretString::from("x"));
        let server = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1064,
            message: format!("You have an error in your SQL syntax near '{}'", *hash),
            state: "42000".into(),
        });
        let err = set_password_error("app", "%", &server, &hash);
        let text = err.to_string();
        assert!(!text.contains(hash.as_str()), "{text}");
        assert!(text.contains("[REDACTED]"));
        assert!(!err.is_transient());
        assert!(!format!("{err:?}").contains(hash.as_str()));
    }

    #[test]
    fn debug_redacts_the_admin_password() {
        let target = MysqlTarget::from_parts(
            "127.0.0.1",
            3306,
            TargetTls::Disable,
            "admin",
            SecretString::from("canary-admin-91b2"),
        )
        .unwrap();
        let text = format!("{target:?}");
        assert!(text.contains("admin"));
        assert!(!text.contains("canary-admin-91b2"));
    }

    #[test]
    fn ca_files_are_read_up_front() {
        let err = MysqlTarget::from_parts(
            "127.0.0.1",
            3306,
            TargetTls::VerifyFull {
                ca_file: Some(PathBuf::from("/nonexistent/rotor-ca.pem")),
            },
            "admin",
            SecretString::from("x"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), "read_ca_file");
        assert!(err.to_string().contains("/nonexistent/rotor-ca.pem"));

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = build_ssl_opts(&TargetTls::Require {
            ca_file: Some(junk.clone()),
        })
        .unwrap_err();
        assert_eq!(err.kind(), "invalid_ca_file");
    }

    #[test]
    fn a_host_name_mismatch_under_require_with_a_ca_explains_the_gap() {
        let mismatch = || {
            mysql_async::Error::Io(IoError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
            )))
        };
        let with_ca = TargetTls::Require {
            ca_file: Some(PathBuf::from("/ca.pem")),
        };
        assert!(is_name_mismatch(&mismatch()));
        assert!(tls_hint(&with_ca, &mismatch()).contains("host-name check"));
        assert_eq!(
            tls_hint(&TargetTls::VerifyFull { ca_file: None }, &mismatch()),
            ""
        );
        let unknown_ca = mysql_async::Error::Io(IoError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        assert_eq!(tls_hint(&with_ca, &unknown_ca), "");
        // A TLS failure is not worth retrying; a refused connection is.
        assert!(!connection_failed(&unknown_ca));
        let refused = mysql_async::Error::Io(IoError::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert!(connection_failed(&refused));
    }

    #[test]
    fn only_access_denied_is_a_rejection() {
        let server = |code| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "msg".into(),
                state: "28000".into(),
            })
        };
        assert!(matches!(
            classify_login_error(&server(1045)),
            AuthOutcome::Rejected { code, .. } if code == "1045"
        ));
        for code in [1044, 1130, 4151, 1040] {
            assert!(matches!(
                classify_login_error(&server(code)),
                AuthOutcome::Unreachable { .. }
            ));
        }
    }
}
