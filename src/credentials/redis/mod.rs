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

mod acl;
mod persist;

use std::time::{Duration, SystemTime};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, ServerErrorKind};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tracing::{debug, info};

use self::acl::{AclUser, password_hash, set_user, validate_user};
use super::CredentialError;
use super::adapters::PasswordTarget;
use super::target::{
    AbortOnDrop, AdminLogin, AuthOutcome, CallTimeout, Endpoint, TargetTls, endpoint_accessors,
    log_login,
};
use crate::outside::System;
use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect and the admin's `AUTH`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The user an admin credential without a `username` key logs in as.
const DEFAULT_USER: &str = "default";

/// Errors of the Redis target. None of them carries a password or a password hash.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum RedisError {
    /// The admin credential lacks `password`.
    #[error("the admin credential has no {key:?} key")]
    #[strum(serialize = "admin_key_missing")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A TLS mode this version does not implement for Redis.
    #[error(
        "TLS mode {mode} is not supported for Redis targets by this version of rotor (only `disable`)"
    )]
    #[strum(serialize = "tls_unsupported")]
    TlsUnsupported {
        /// The requested mode.
        mode: &'static str,
    },
    /// A user name Redis would reject.
    #[error("invalid Redis user name {user:?}: {reason}")]
    #[strum(serialize = "invalid_user_name")]
    InvalidUserName {
        /// The name as given.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given.
    #[error("refusing an empty password for Redis user {user:?}")]
    #[strum(serialize = "empty_password")]
    EmptyPassword {
        /// The account the call was about (a name, never its password).
        user: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to Redis at {address}")]
    #[strum(serialize = "connect")]
    Connect {
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// The server refused the admin's `AUTH`, or it failed.
    #[error("Redis at {address} did not accept the admin login as {user:?}")]
    #[strum(serialize = "admin_login")]
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
    #[error(transparent)]
    #[strum(serialize = "timeout")]
    Timeout(#[from] CallTimeout),
    /// The ACL user does not exist (rotor never creates users).
    #[error("Redis user {user:?} does not exist on {address}")]
    #[strum(serialize = "user_not_found")]
    UserNotFound {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
    },
    /// Removing the password would leave the user with none, locking every client out.
    #[error(
        "refusing to remove the only password of Redis user {user:?} on {address}: every client would be locked out"
    )]
    #[strum(serialize = "last_password")]
    LastPassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
    },
    /// `ACL GETUSER` failed.
    #[error("cannot look up Redis user {user:?} on {address}")]
    #[strum(serialize = "lookup_user")]
    LookupUser {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL GETUSER` answered something this module does not understand.
    #[error("unexpected answer to ACL GETUSER {user:?} from {address}: {detail}")]
    #[strum(serialize = "unexpected_reply")]
    UnexpectedReply {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
        /// What was odd.
        detail: &'static str,
    },
    /// `ACL SETUSER … #<hash>` failed.
    #[error("cannot add a password to Redis user {user:?} on {address}")]
    #[strum(serialize = "add_password")]
    AddPassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL SETUSER … !<hash>` failed.
    #[error("cannot remove a password of Redis user {user:?} on {address}")]
    #[strum(serialize = "remove_password")]
    RemovePassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// `ACL SETUSER … off resetpass` or `ACL SETUSER … on` failed.
    #[error("cannot {action} Redis user {user:?} on {address}")]
    #[strum(serialize = "set_enabled")]
    SetEnabled {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `disable` or `enable`.
        action: &'static str,
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// `CLIENT KILL USER` failed.
    #[error("cannot terminate the connections of Redis user {user:?} on {address}")]
    #[strum(serialize = "terminate_sessions")]
    TerminateSessions {
        /// The account the call was about (a name, never its password).
        user: String,
        /// `host:port`.
        address: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
    /// The ACL change is live but saving it failed.
    #[error("the ACL change on {address} is live but {method} failed, so a restart would undo it")]
    #[strum(serialize = "persist")]
    Persist {
        /// `host:port`.
        address: String,
        /// `ACL SAVE`, `CONFIG REWRITE` or `CONFIG GET aclfile`.
        method: &'static str,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: ::redis::RedisError,
    },
}

impl RedisError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether trying again later may succeed (network, timeouts, a server that is
    /// loading or failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            RedisError::Connect { .. } | RedisError::Timeout(_) => true,
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

/// A Redis server and the admin credential rotor uses on it. Its `Debug` shows the
/// admin's username, never the password.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    endpoint: Endpoint,
    admin: Option<AdminLogin>,
    connect_timeout: Duration,
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
            endpoint: Endpoint::new(host, port, System::Redis),
            admin: admin.map(|(username, password)| AdminLogin { username, password }),
            connect_timeout: Endpoint::connect_limit(DEFAULT_CONNECT_TIMEOUT),
        })
    }

    endpoint_accessors!("TCP connect and the admin's `AUTH`");

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
        let added = self
            .change_passwords(
                "add password",
                user,
                password,
                async |session, acl, hash| {
                    let added = !acl.passwords.contains(&hash);
                    if added {
                        set_user(session, user, &[&format!("#{hash}")])
                            .await
                            .map_err(|source| RedisError::AddPassword {
                                user: user.to_owned(),
                                address: self.address(),
                                source,
                            })?;
                    }
                    Ok(added)
                },
            )
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
        let removed = self
            .change_passwords(
                "remove password",
                user,
                password,
                async |session, acl, hash| {
                    let present = acl.passwords.contains(&hash);
                    if present && acl.passwords.len() == 1 && !acl.nopass() {
                        return Err(RedisError::LastPassword {
                            user: user.to_owned(),
                            address: self.address(),
                        });
                    }
                    if present {
                        match set_user(session, user, &[&format!("!{hash}")]).await {
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
                    Ok(present)
                },
            )
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
        let action = if enable { "enable" } else { "disable" };
        self.with_user("change user", user, async |session: &mut Session, _| {
            let rules: &[&str] = if enable {
                &["on"]
            } else {
                &["off", "resetpass"]
            };
            set_user(session, user, rules)
                .await
                .map_err(|source| RedisError::SetEnabled {
                    user: user.to_owned(),
                    action,
                    address: self.address(),
                    source,
                })?;
            self.persist(session).await
        })
        .await?;
        info!(user = %user, target = %self.address(), action, "Redis user changed.");
        Ok(())
    }

    /// How many passwords `user` has (for tests and reports). Fails with
    /// [`RedisError::UserNotFound`] when the user does not exist.
    pub async fn password_count(&self, user: &str) -> Result<usize, RedisError> {
        validate_user(user)?;
        self.with_user("look up user", user, async |_: &mut Session, acl| {
            Ok(acl.passwords.len())
        })
        .await
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
        log_login!(outcome, user = %user, target = %self.address());
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
                self.endpoint.count_timeout();
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

    /// Opens a plain connection without any handshake command.
    async fn open(&self) -> Result<Session, ::redis::RedisError> {
        let stream = TcpStream::connect((self.endpoint.host(), self.endpoint.port())).await?;
        stream.set_nodelay(true)?;
        // No HELLO, no CLIENT SETINFO: nothing is sent before our own AUTH.
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(Some(Endpoint::call_limit()));
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
            if let Some(admin) = &self.admin {
                auth(&mut session.conn, &admin.username, &admin.password)
                    .await
                    .map_err(|source| RedisError::AdminLogin {
                        address: self.address(),
                        user: admin.username.clone(),
                        source,
                    })?;
            }
            Ok(session)
        };
        self.endpoint
            .connect_admin(self.connect_timeout, work)
            .await
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        self.endpoint.bounded(operation, work).await
    }

    /// Runs `work` with an admin session and `user`'s ACL, within the call limit;
    /// [`RedisError::UserNotFound`] when the user does not exist.
    async fn with_user<T>(
        &self,
        operation: &'static str,
        user: &str,
        work: impl AsyncFnOnce(&mut Session, AclUser) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let mut session = self.admin_session().await?;
        self.bounded(operation, async {
            let acl = self
                .get_user(&mut session, user)
                .await?
                .ok_or_else(|| self.user_not_found(user))?;
            work(&mut session, acl).await
        })
        .await
    }

    /// Runs `change` with an admin session, `user`'s ACL and the SHA-256 of `password`
    /// (both checked first), within the call limit, then makes the ACL durable: also when
    /// `change` says nothing changed, since an earlier call may have failed to save.
    async fn change_passwords(
        &self,
        operation: &'static str,
        user: &str,
        password: &SecretString,
        change: impl AsyncFnOnce(&mut Session, AclUser, String) -> Result<bool, RedisError>,
    ) -> Result<bool, RedisError> {
        validate_user(user)?;
        let hash = password_hash(user, password)?;
        self.with_user(operation, user, async |session: &mut Session, acl| {
            let changed = change(session, acl, hash).await?;
            self.persist(session).await?;
            Ok(changed)
        })
        .await
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

/// One connection: the multiplexed handle and the task driving its socket. Dropping it
/// closes the socket.
struct Session {
    conn: MultiplexedConnection,
    _driver: AbortOnDrop,
}

impl PasswordTarget for RedisTarget {
    /// Adds the password beside the user's others.
    async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        Ok(self.add_password(user, password).await?)
    }

    async fn disable(
        &self,
        user: &str,
        _unknown: &SecretString,
    ) -> Result<String, CredentialError> {
        self.set_enabled(user, false).await?;
        Ok(format!("ACL user {user}: off, every password removed"))
    }

    async fn enable(&self, user: &str) -> Result<Option<String>, CredentialError> {
        self.set_enabled(user, true).await?;
        Ok(Some(format!("ACL user {user}: on")))
    }

    async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        RedisTarget::login(self, user, password).await
    }

    /// Redis cannot tell which password a connection used: all of them end.
    async fn terminate(
        &self,
        user: &str,
        _opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        Ok(self.terminate_sessions(user).await?)
    }
}

#[cfg(test)]
mod tests;
