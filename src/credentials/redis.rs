//! Redis ACL user passwords (strategy `overlap`): the primitives the engine calls to add
//! a new password beside the old one, prove each one accepted or refused, remove the old
//! one, and end the user's connections, on a real Redis 6+ server.
//!
//! - [`RedisTarget::add_password`] sends `ACL SETUSER <user> #<sha256 hex>`: Redis takes a
//!   password by its SHA-256, so the cleartext never crosses the wire in a command and
//!   never shows in `MONITOR`, the slow log or `ACL LOG`. The user keeps its other
//!   passwords, so consumers still holding the old one keep working until
//!   [`RedisTarget::remove_password`] (`ACL SETUSER <user> !<sha256 hex>`) retires it.
//!   Neither call creates a user: both fail with [`RedisError::UserNotFound`] when it is
//!   missing (checked with `ACL GETUSER` first; a user deleted between that check and the
//!   change would be re-created empty and disabled, which Redis offers no way to prevent).
//! - [`RedisTarget::login`] sends `AUTH <user> <password>` on a fresh connection; only the
//!   server's `WRONGPASS` counts as [`AuthOutcome::Rejected`].
//! - [`RedisTarget::terminate_sessions`] sends `CLIENT KILL USER <user>`.
//!
//! **Durability.** An ACL change lives in memory until it is saved. After each change the
//! target asks `CONFIG GET aclfile`: with an ACL file it runs `ACL SAVE`; without one it
//! runs `CONFIG REWRITE` (which writes the users into the config file). A server started
//! without a config file cannot persist users at all: that is logged as a warning once
//! per server and is not an error, and neither is a server that hides `CONFIG` from the
//! admin (managed services persist ACLs their own way). A failing `ACL SAVE` or
//! `CONFIG REWRITE` is an error ([`RedisError::Persist`]); the change itself is live then,
//! and repeating the call (both calls are idempotent) saves again.
//!
//! Every call opens its own connection and closes it before returning. The admin logs in
//! with `AUTH` when an admin credential is given; without one, commands run as whatever
//! the server grants an unauthenticated connection (the `default` user).
//!
//! **TLS** is not implemented for Redis targets yet: [`RedisTarget::new`] and
//! [`RedisTarget::from_parts`] refuse any mode but `disable` with
//! [`RedisError::TlsUnsupported`], before any I/O.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, ServerErrorKind, Value};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::AuthOutcome;
use super::postgres::TargetTls;
use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect and the admin's `AUTH`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit for one statement (or command): the agent-wide call timeout.
fn command_timeout() -> Duration {
    crate::outside::call_timeout()
}
/// The user an admin credential without a `username` key logs in as.
const DEFAULT_USER: &str = "default";

/// Errors of the Redis target. None of them carries a password or a password hash.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The admin credential lacks `password`.
    #[error("the admin credential has no {key:?} key")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A TLS mode this version does not implement for Redis.
    #[error(
        "TLS mode {mode} is not supported for Redis targets by this version of rotor (only `disable`)"
    )]
    TlsUnsupported {
        /// The requested mode.
        mode: &'static str,
    },
    /// A user name Redis would reject.
    #[error("invalid Redis user name {user:?}: {reason}")]
    InvalidUserName {
        /// The name as given.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given.
    #[error("refusing an empty password for Redis user {user:?}")]
    EmptyPassword {
        /// The user.
        user: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to Redis at {address}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// The server refused the admin's `AUTH`, or it failed.
    #[error("Redis at {address} did not accept the admin login as {user:?}")]
    AdminLogin {
        /// `host:port`.
        address: String,
        /// The admin user.
        user: String,
        /// The server's answer.
        #[source]
        source: ::redis::RedisError,
    },
    /// A call did not finish in time.
    #[error("timed out after {}s: {operation} on {address}", limit.as_secs())]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// `host:port`.
        address: String,
        /// The limit that was hit.
        limit: Duration,
    },
    /// The ACL user does not exist (rotor never creates users).
    #[error("Redis user {user:?} does not exist on {address}")]
    UserNotFound {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
    },
    /// Removing the password would leave the user with none, locking every client out.
    #[error(
        "refusing to remove the only password of Redis user {user:?} on {address}: every client would be locked out"
    )]
    LastPassword {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
    },
    /// `ACL GETUSER` failed.
    #[error("cannot look up Redis user {user:?} on {address}")]
    LookupUser {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL GETUSER` answered something this module does not understand.
    #[error("unexpected answer to ACL GETUSER {user:?} from {address}: {detail}")]
    UnexpectedReply {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
        /// What was odd.
        detail: &'static str,
    },
    /// `ACL SETUSER … #<hash>` failed.
    #[error("cannot add a password to Redis user {user:?} on {address}")]
    AddPassword {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL SETUSER … !<hash>` failed.
    #[error("cannot remove a password of Redis user {user:?} on {address}")]
    RemovePassword {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL SETUSER … off resetpass` or `ACL SETUSER … on` failed.
    #[error("cannot {action} Redis user {user:?} on {address}")]
    SetEnabled {
        /// The user.
        user: String,
        /// `disable` or `enable`.
        action: &'static str,
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// `CLIENT KILL USER` failed.
    #[error("cannot terminate the connections of Redis user {user:?} on {address}")]
    TerminateSessions {
        /// The user.
        user: String,
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
    /// The ACL change is live but saving it failed.
    #[error("the ACL change on {address} is live but {method} failed, so a restart would undo it")]
    Persist {
        /// `host:port`.
        address: String,
        /// `ACL SAVE`, `CONFIG REWRITE` or `CONFIG GET aclfile`.
        method: &'static str,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
}

impl RedisError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisError::AdminKeyMissing { .. } => "admin_key_missing",
            RedisError::TlsUnsupported { .. } => "tls_unsupported",
            RedisError::InvalidUserName { .. } => "invalid_user_name",
            RedisError::EmptyPassword { .. } => "empty_password",
            RedisError::Connect { .. } => "connect",
            RedisError::AdminLogin { .. } => "admin_login",
            RedisError::Timeout { .. } => "timeout",
            RedisError::UserNotFound { .. } => "user_not_found",
            RedisError::LastPassword { .. } => "last_password",
            RedisError::LookupUser { .. } => "lookup_user",
            RedisError::UnexpectedReply { .. } => "unexpected_reply",
            RedisError::AddPassword { .. } => "add_password",
            RedisError::RemovePassword { .. } => "remove_password",
            RedisError::TerminateSessions { .. } => "terminate_sessions",
            RedisError::Persist { .. } => "persist",
            RedisError::SetEnabled { .. } => "set_enabled",
        }
    }

    /// Whether trying again later may succeed (network, timeouts, a server that is
    /// loading or failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            RedisError::Connect { .. } | RedisError::Timeout { .. } => true,
            RedisError::AdminLogin { source, .. }
            | RedisError::LookupUser { source, .. }
            | RedisError::AddPassword { source, .. }
            | RedisError::RemovePassword { source, .. }
            | RedisError::TerminateSessions { source, .. }
            | RedisError::SetEnabled { source, .. }
            | RedisError::Persist { source, .. } => transient(source),
            _ => false,
        }
    }
}

/// Connection trouble, or a server state that passes (loading, failover, cluster down).
fn transient(error: &::redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// A Redis server and the admin credential rotor uses on it.
#[derive(Clone)]
pub struct RedisTarget {
    host: String,
    port: u16,
    admin: Option<(String, SecretString)>,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_username", &self.admin.as_ref().map(|(user, _)| user))
            .field("admin_password", &self.admin.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl RedisTarget {
    /// A target from a policy's `connection` and the resolved `adminFrom` (key `password`,
    /// and `username`, which defaults to `default`), or `None` to send commands without
    /// `AUTH`. No I/O.
    pub fn new(
        conn: &crate::policy::RedisConnection,
        admin: Option<&SecretMap>,
    ) -> Result<Self, RedisError> {
        let tls = TargetTls::from(conn.tls.as_ref());
        let admin = match admin {
            None => None,
            Some(map) => {
                let password = map
                    .get("password")
                    .ok_or(RedisError::AdminKeyMissing { key: "password" })?;
                let username = map.expose("username").unwrap_or(DEFAULT_USER);
                Some((username.to_owned(), password.clone()))
            }
        };
        Self::from_parts(&conn.host, conn.port, tls, admin)
    }

    /// A target from its parts (for probes that are not a policy `connection`, and tests).
    /// `admin` is `(username, password)`; `None` sends commands without `AUTH`.
    pub fn from_parts(
        host: &str,
        port: u16,
        tls: TargetTls,
        admin: Option<(String, SecretString)>,
    ) -> Result<Self, RedisError> {
        match tls {
            TargetTls::Disable => {}
            TargetTls::Require { .. } => {
                return Err(RedisError::TlsUnsupported { mode: "require" });
            }
            TargetTls::VerifyFull { .. } => {
                return Err(RedisError::TlsUnsupported {
                    mode: "verify-full",
                });
            }
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            admin,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(crate::outside::call_timeout()),
        })
    }

    /// Replaces the connection limit (TCP connect and the admin's `AUTH` together).
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// `host:port` of the server, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether the ACL user exists (`ACL GETUSER`).
    pub async fn user_exists(&self, user: &str) -> Result<bool, RedisError> {
        validate_user(user)?;
        let mut session = self.admin_session().await?;
        self.bounded("look up user", self.get_user(&mut session, user))
            .await
            .map(|found| found.is_some())
    }

    /// Adds `password` to `user`'s passwords by its SHA-256 (`ACL SETUSER <user> #<hex>`),
    /// keeping the others, then makes the change durable (see the module documentation).
    /// Idempotent: a password the user has already is not added twice. Fails with
    /// [`RedisError::UserNotFound`] when the user does not exist (it is never created).
    /// A `nopass` user loses that flag (Redis clears it with the first password), so from
    /// then on it takes only its passwords.
    pub async fn add_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), RedisError> {
        validate_user(user)?;
        let hash = password_hash(user, password)?;
        let mut session = self.admin_session().await?;
        let added = self
            .bounded("add password", async {
                let acl = self
                    .get_user(&mut session, user)
                    .await?
                    .ok_or_else(|| self.user_not_found(user))?;
                let added = !acl.passwords.contains(&hash);
                if added {
                    ::redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg(user)
                        .arg(format!("#{hash}"))
                        .query_async::<()>(&mut session.conn)
                        .await
                        .map_err(|source| RedisError::AddPassword {
                            user: user.to_owned(),
                            address: self.address(),
                            source,
                        })?;
                }
                // Also when nothing changed: an earlier call may have failed to save.
                self.persist(&mut session).await?;
                Ok(added)
            })
            .await?;
        if added {
            info!(user = %user, target = %self.address(), "Redis password added.");
        } else {
            debug!(user = %user, target = %self.address(), "Redis password was already set.");
        }
        Ok(())
    }

    /// Removes `password` from `user`'s passwords (`ACL SETUSER <user> !<hex>`), then makes
    /// the change durable. Idempotent: a password the user does not have is already
    /// removed. Refuses with [`RedisError::LastPassword`] to remove the user's only
    /// password (every client would be locked out), and with [`RedisError::UserNotFound`]
    /// when the user does not exist.
    pub async fn remove_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), RedisError> {
        validate_user(user)?;
        let hash = password_hash(user, password)?;
        let mut session = self.admin_session().await?;
        let removed = self
            .bounded("remove password", async {
                let acl = self
                    .get_user(&mut session, user)
                    .await?
                    .ok_or_else(|| self.user_not_found(user))?;
                let present = acl.passwords.contains(&hash);
                if present && acl.passwords.len() == 1 && !acl.nopass() {
                    return Err(RedisError::LastPassword {
                        user: user.to_owned(),
                        address: self.address(),
                    });
                }
                if present {
                    let result = ::redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg(user)
                        .arg(format!("!{hash}"))
                        .query_async::<()>(&mut session.conn)
                        .await;
                    match result {
                        Ok(()) => {}
                        // Removed by someone else since the lookup: what we wanted. (The
                        // server's message quotes the hash, so it is not passed on.)
                        Err(e) if e.detail().is_some_and(|d| d.contains("does not exist")) => {}
                        Err(source) => {
                            return Err(RedisError::RemovePassword {
                                user: user.to_owned(),
                                address: self.address(),
                                source,
                            });
                        }
                    }
                }
                self.persist(&mut session).await?;
                Ok(present)
            })
            .await?;
        if removed {
            info!(user = %user, target = %self.address(), "Redis password removed.");
        } else {
            debug!(user = %user, target = %self.address(), "Redis password was already absent.");
        }
        Ok(())
    }

    /// Retires `user` with `ACL SETUSER <user> off resetpass` (disabled, every password
    /// removed, `nopass` cleared), or with `enable` makes it usable again with
    /// `ACL SETUSER <user> on` (still without passwords until one is added), then makes
    /// the change durable. Idempotent. Fails with [`RedisError::UserNotFound`] when the
    /// user does not exist.
    pub async fn set_enabled(&self, user: &str, enable: bool) -> Result<(), RedisError> {
        validate_user(user)?;
        let mut session = self.admin_session().await?;
        let action = if enable { "enable" } else { "disable" };
        self.bounded("change user", async {
            self.get_user(&mut session, user)
                .await?
                .ok_or_else(|| self.user_not_found(user))?;
            let mut cmd = ::redis::cmd("ACL");
            cmd.arg("SETUSER").arg(user);
            if enable {
                cmd.arg("on");
            } else {
                cmd.arg("off").arg("resetpass");
            }
            cmd.query_async::<()>(&mut session.conn)
                .await
                .map_err(|source| RedisError::SetEnabled {
                    user: user.to_owned(),
                    action,
                    address: self.address(),
                    source,
                })?;
            self.persist(&mut session).await
        })
        .await?;
        info!(user = %user, target = %self.address(), action, "Redis user changed.");
        Ok(())
    }

    /// How many passwords `user` has (for tests and reports). Fails with
    /// [`RedisError::UserNotFound`] when the user does not exist.
    pub async fn password_count(&self, user: &str) -> Result<usize, RedisError> {
        validate_user(user)?;
        let mut session = self.admin_session().await?;
        let acl = self
            .bounded("look up user", self.get_user(&mut session, user))
            .await?
            .ok_or_else(|| self.user_not_found(user))?;
        Ok(acl.passwords.len())
    }

    /// Sends `AUTH <user> <password>` on a fresh connection.
    ///
    /// [`AuthOutcome::Rejected`] (code `WRONGPASS`) only when the server refuses the
    /// pair. Redis gives the same answer for a user that does not exist (which counts
    /// as rejected, like PostgreSQL's `28P01`) and for a disabled (`off`) user, whose
    /// passwords it does not check at all: when the admin can read the user and finds it
    /// `off` and still holding this password, the outcome is [`AuthOutcome::Unreachable`]
    /// instead, because the password would be valid once the user is enabled again (a
    /// retired user, `off` without passwords, refuses it either way: rejected).
    /// Everything else (refused connection, timeout, a server without ACLs) is
    /// [`AuthOutcome::Unreachable`].
    /// Never panics; neither outcome quotes the password.
    pub async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        let mut outcome = self.try_login(user, password).await;
        if matches!(outcome, AuthOutcome::Rejected { .. })
            && self.disabled_with(user, password).await
        {
            outcome = AuthOutcome::Unreachable {
                reason: format!(
                    "WRONGPASS, but user {user:?} is disabled (off): Redis did not check the password"
                ),
            };
        }
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

    /// Closes every connection authenticated as `user` (`CLIENT KILL USER <user>`, never
    /// the caller's own) and returns how many were closed; 0 when the user does not exist.
    ///
    /// Redis cannot tell which password a connection authenticated with, so connections
    /// opened with the *new* password are closed too; well-behaved clients reconnect
    /// (with the new password) at once.
    pub async fn terminate_sessions(&self, user: &str) -> Result<u64, RedisError> {
        validate_user(user)?;
        let mut session = self.admin_session().await?;
        let reply = self
            .bounded("terminate sessions", async {
                Ok(::redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("USER")
                    .arg(user)
                    .query_async::<u64>(&mut session.conn)
                    .await)
            })
            .await?;
        let closed = match reply {
            Ok(n) => n,
            // Redis answers `ERR No such user '<user>'`: nobody is logged in as it.
            Err(e) if e.detail().is_some_and(|d| d.starts_with("No such user")) => 0,
            Err(source) => {
                return Err(RedisError::TerminateSessions {
                    user: user.to_owned(),
                    address: self.address(),
                    source,
                });
            }
        };
        info!(user = %user, target = %self.address(), sessions = closed, "Redis connections closed.");
        Ok(closed)
    }

    /// Connects and sends `AUTH`, both within the connect timeout (a server that accepts
    /// TCP and then says nothing is unreachable).
    async fn try_login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        // Outer error: no connection; inner: the answer to AUTH.
        let work = async {
            let mut session = self.open().await?;
            Ok::<_, ::redis::RedisError>(auth(&mut session.conn, user, password).await)
        };
        match tokio::time::timeout(self.connect_timeout, work).await {
            Err(_) => {
                crate::outside::count_timeout(crate::outside::System::Redis);
                AuthOutcome::Unreachable {
                    reason: format!(
                        "no answer to AUTH from {} within {} ms",
                        self.address(),
                        self.connect_timeout.as_millis()
                    ),
                }
            }
            Ok(Err(error)) => AuthOutcome::Unreachable {
                reason: format!(
                    "cannot connect to {}: {}",
                    self.address(),
                    crate::error_chain(&error)
                ),
            },
            Ok(Ok(Ok(()))) => AuthOutcome::Accepted,
            Ok(Ok(Err(e))) if e.code() == Some("WRONGPASS") => AuthOutcome::Rejected {
                code: "WRONGPASS".into(),
                message: e.detail().unwrap_or_default().trim().to_owned(),
            },
            Ok(Ok(Err(e))) => AuthOutcome::Unreachable {
                reason: format!("AUTH failed: {}", crate::error_chain(&e)),
            },
        }
    }

    /// True only when the admin can read `user`, it is `off`, and `password` would still
    /// be accepted once it is enabled again (it is one of the user's passwords, or the
    /// user is `nopass`). A disabled user without that password (e.g. retired with
    /// `off resetpass`) refuses it either way, so `WRONGPASS` stands as a rejection.
    async fn disabled_with(&self, user: &str, password: &SecretString) -> bool {
        if validate_user(user).is_err() {
            return false;
        }
        let hash = password_hash(user, password).ok();
        let Ok(mut session) = self.admin_session().await else {
            return false;
        };
        match self
            .bounded("look up user", self.get_user(&mut session, user))
            .await
        {
            Ok(Some(acl)) => {
                acl.flags.iter().any(|f| f == "off")
                    && (acl.nopass() || hash.is_none_or(|h| acl.passwords.contains(&h)))
            }
            Ok(None) => false,
            Err(error) => {
                debug!(user = %user, target = %self.address(), error = %error, "Cannot tell whether the user is enabled.");
                false
            }
        }
    }

    /// `ACL GETUSER`: `None` when the user does not exist.
    async fn get_user(
        &self,
        session: &mut Session,
        user: &str,
    ) -> Result<Option<AclUser>, RedisError> {
        let value = ::redis::cmd("ACL")
            .arg("GETUSER")
            .arg(user)
            .query_async::<Value>(&mut session.conn)
            .await
            .map_err(|source| RedisError::LookupUser {
                user: user.to_owned(),
                address: self.address(),
                source,
            })?;
        AclUser::parse(value).map_err(|detail| RedisError::UnexpectedReply {
            user: user.to_owned(),
            address: self.address(),
            detail,
        })
    }

    /// Makes the last ACL change survive a restart, where the server allows it.
    async fn persist(&self, session: &mut Session) -> Result<(), RedisError> {
        let persist_error = |method, source| RedisError::Persist {
            address: self.address(),
            method,
            source,
        };
        let aclfile = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async::<std::collections::HashMap<String, String>>(&mut session.conn)
            .await;
        let aclfile = match aclfile {
            Ok(map) => map.get("aclfile").cloned().unwrap_or_default(),
            Err(e) if config_unavailable(&e) => {
                self.warn_once(
                    "CONFIG is not available to the admin, so rotor cannot tell how this server persists ACL changes; make sure they survive a restart",
                );
                return Ok(());
            }
            Err(source) => return Err(persist_error("CONFIG GET aclfile", source)),
        };
        if !aclfile.is_empty() {
            return ::redis::cmd("ACL")
                .arg("SAVE")
                .query_async::<()>(&mut session.conn)
                .await
                .map_err(|source| persist_error("ACL SAVE", source));
        }
        match ::redis::cmd("CONFIG")
            .arg("REWRITE")
            .query_async::<()>(&mut session.conn)
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if e.detail()
                    .is_some_and(|d| d.contains("without a config file")) =>
            {
                self.warn_once(
                    "the server runs without a config file or ACL file, so ACL changes are lost when it restarts",
                );
                Ok(())
            }
            Err(e) if config_unavailable(&e) => {
                self.warn_once(
                    "CONFIG REWRITE is not available to the admin; ACL changes may be lost when the server restarts",
                );
                Ok(())
            }
            Err(source) => Err(persist_error("CONFIG REWRITE", source)),
        }
    }

    /// Logs `message` once per server address for the life of the process.
    fn warn_once(&self, message: &'static str) {
        static WARNED: OnceLock<Mutex<HashSet<(String, &'static str)>>> = OnceLock::new();
        let first = WARNED
            .get_or_init(Default::default)
            .lock()
            .map(|mut set| set.insert((self.address(), message)))
            .unwrap_or(true);
        if first {
            warn!(target_address = %self.address(), "{message}");
        }
    }

    /// Opens a plain connection without any handshake command.
    async fn open(&self) -> Result<Session, ::redis::RedisError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        // No HELLO, no CLIENT SETINFO: nothing is sent before our own AUTH.
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(Some(command_timeout()));
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, stream, config).await?;
        Ok(Session {
            conn,
            _driver: AbortOnDrop(tokio::spawn(driver)),
        })
    }

    async fn admin_session(&self) -> Result<Session, RedisError> {
        let work = async {
            let mut session = self.open().await.map_err(|source| RedisError::Connect {
                address: self.address(),
                source,
            })?;
            if let Some((user, password)) = &self.admin {
                auth(&mut session.conn, user, password)
                    .await
                    .map_err(|source| RedisError::AdminLogin {
                        address: self.address(),
                        user: user.clone(),
                        source,
                    })?;
            }
            Ok(session)
        };
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .map_err(|_| self.timeout("connect as admin", self.connect_timeout))?
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        tokio::time::timeout(command_timeout(), work)
            .await
            .map_err(|_| self.timeout(operation, command_timeout()))?
    }

    fn timeout(&self, operation: &'static str, limit: Duration) -> RedisError {
        crate::outside::count_timeout(crate::outside::System::Redis);
        RedisError::Timeout {
            operation,
            address: self.address(),
            limit,
        }
    }

    fn user_not_found(&self, user: &str) -> RedisError {
        RedisError::UserNotFound {
            user: user.to_owned(),
            address: self.address(),
        }
    }
}

/// Sends `AUTH <user> <password>` on `host:port` (no TLS but `disable`) and reports the
/// answer as [`RedisTarget::login`] does, without the admin's check for a disabled user:
/// for the `vault-database` probe, which has no admin credential.
pub async fn login(
    host: &str,
    port: u16,
    tls: &TargetTls,
    user: &str,
    password: &SecretString,
) -> AuthOutcome {
    match RedisTarget::from_parts(host, port, tls.clone(), None) {
        Ok(target) => target.login(user, password).await,
        Err(error) => AuthOutcome::Unreachable {
            reason: error.to_string(),
        },
    }
}

/// `AUTH user password`; the reply to a successful `AUTH` is always `OK`.
async fn auth(
    conn: &mut MultiplexedConnection,
    user: &str,
    password: &SecretString,
) -> Result<(), ::redis::RedisError> {
    ::redis::cmd("AUTH")
        .arg(user)
        .arg(password.expose_secret())
        .query_async::<()>(conn)
        .await
}

/// `NOPERM`, or `CONFIG` renamed away (managed services): the admin cannot use it.
fn config_unavailable(error: &::redis::RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || error.code() == Some("NOPERM")
        || error
            .detail()
            .is_some_and(|d| d.contains("unknown command"))
}

/// Redis refuses user names with spaces or NUL; other control characters would corrupt
/// the ACL file.
fn validate_user(user: &str) -> Result<(), RedisError> {
    let reason = if user.is_empty() {
        "it is empty"
    } else if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(RedisError::InvalidUserName {
        user: user.to_owned(),
        reason,
    })
}

/// Lowercase hex SHA-256 of the password, as Redis stores and `ACL GETUSER` lists it.
fn password_hash(user: &str, password: &SecretString) -> Result<String, RedisError> {
    let text = password.expose_secret();
    if text.is_empty() {
        return Err(RedisError::EmptyPassword {
            user: user.to_owned(),
        });
    }
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// What `ACL GETUSER` says about a user, as far as rotor needs it.
#[derive(Debug, Default)]
struct AclUser {
    flags: Vec<String>,
    passwords: Vec<String>,
}

impl AclUser {
    fn nopass(&self) -> bool {
        self.flags.iter().any(|f| f == "nopass")
    }

    /// Reads the flat key/value array of RESP2 or the map of RESP3; `Nil` = no such user.
    fn parse(value: Value) -> Result<Option<AclUser>, &'static str> {
        let pairs: Vec<(Value, Value)> = match value {
            Value::Nil => return Ok(None),
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                if items.len() % 2 != 0 {
                    return Err("an odd number of fields");
                }
                let mut items = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            _ => return Err("neither a map nor an array"),
        };
        let mut user = AclUser::default();
        let mut saw_passwords = false;
        for (key, value) in pairs {
            match text(&key).as_deref() {
                Some("flags") => user.flags = texts(value)?,
                Some("passwords") => {
                    user.passwords = texts(value)?;
                    saw_passwords = true;
                }
                _ => {}
            }
        }
        if !saw_passwords {
            return Err("no passwords field");
        }
        Ok(Some(user))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn texts(value: Value) -> Result<Vec<String>, &'static str> {
    match value {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .map(|item| text(item).ok_or("a list item that is not a string"))
            .collect(),
        _ => Err("a field that is not a list"),
    }
}

/// One connection: the multiplexed handle and the task driving its socket. Dropping it
/// closes the socket.
struct Session {
    conn: MultiplexedConnection,
    _driver: AbortOnDrop,
}

/// Aborts the connection task when the session is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_lowercase_sha256_hex() {
        let hash = password_hash("u", &SecretString::from("foobar")).unwrap();
        // `echo -n foobar | sha256sum`
        assert_eq!(
            hash,
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
        let err = password_hash("u", &SecretString::from("")).unwrap_err();
        assert_eq!(err.kind(), "empty_password");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(validate_user("app_1-x").is_ok());
        for bad in ["", "a b", "a\0b", "a\nb"] {
            assert_eq!(validate_user(bad).unwrap_err().kind(), "invalid_user_name");
        }
    }

    #[test]
    fn getuser_reply_is_parsed() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk("aa"), bulk("bb")]),
            bulk("commands"),
            bulk("+@all"),
        ]);
        let user = AclUser::parse(reply).unwrap().unwrap();
        assert_eq!(user.flags, ["on"]);
        assert_eq!(user.passwords, ["aa", "bb"]);
        assert!(!user.nopass());
        assert!(AclUser::parse(Value::Nil).unwrap().is_none());
        assert!(AclUser::parse(Value::Array(vec![bulk("flags")])).is_err());
    }

    #[test]
    fn tls_modes_other_than_disable_are_refused_without_io() {
        let err = RedisTarget::from_parts(
            "127.0.0.1",
            6379,
            TargetTls::VerifyFull { ca_file: None },
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind(), "tls_unsupported");
        assert!(err.to_string().contains("verify-full"), "{err}");
    }
}
