//! PostgreSQL role passwords: the primitives the engine calls to change, test, prove
//! revoked and contain a role's password on a real server.
//!
//! - [`PostgresTarget::set_password`] sends `ALTER ROLE … PASSWORD '<SCRAM-SHA-256 verifier>'`;
//!   the verifier is computed here, so the cleartext never reaches SQL, the server log
//!   (`log_statement = all`) or `pg_stat_activity`.
//! - [`PostgresTarget::login`] logs in as the role and runs `SELECT 1`; only an
//!   authentication failure (SQLSTATE `28P01`) counts as [`LoginOutcome::Rejected`].
//! - [`PostgresTarget::terminate_sessions`] ends the role's sessions (`pg_terminate_backend`).
//!
//! Admin connections (`application_name = rotor`) are reused: after a call that
//! succeeded, the connection waits up to 30 s (at most 8 per server and admin login)
//! for the next call, checked alive before reuse, so a rotation's calls and rotations of
//! policies sharing a server skip the connect, backend start and SCRAM exchange. Only
//! under a multi-threaded tokio runtime (the agent's and the CLI's), because a
//! connection belongs to the runtime that opened it. Logins with the credentials being
//! tested always use a new connection.
//!
//! TLS (`disable` | `require` | `verify-full`) uses rustls with the aws-lc-rs provider.
//! `require` encrypts without checking the certificate unless a CA file is given, in
//! which case the chain is checked but not the host name (libpq's behaviour: `require`
//! with a root certificate acts as `verify-ca`). Over TLS the SCRAM exchange is bound to
//! the server certificate (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`) when the
//! certificate's signature algorithm allows it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket, config::SslMode};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect, TLS and authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit for one statement (or command): the agent-wide call timeout.
fn statement_timeout() -> Duration {
    crate::outside::call_timeout()
}
/// How long a session may take to say goodbye before its task is aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `pg_terminate_backend` waits for each session to be gone (milliseconds).
const TERMINATE_WAIT_MS: i64 = 5_000;
/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which could name another role.
const MAX_ROLE_NAME_BYTES: usize = 63;
/// `application_name` of every connection rotor opens.
const APPLICATION_NAME: &str = "rotor";
/// How long an admin connection stays open, idle, for the next call.
const ADMIN_IDLE: Duration = Duration::from_secs(30);
/// Idle admin connections kept per server and admin login.
const ADMIN_IDLE_MAX: usize = 8;
/// How long a kept connection may take to prove it is alive before it is replaced.
const ADMIN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle admin connections by [`PostgresTarget::pool_key`], newest last, each with the
/// id its expiry timer looks for.
type IdleSessions = HashMap<String, Vec<(u64, Session)>>;
static ADMIN_POOL: LazyLock<Mutex<IdleSessions>> = LazyLock::new(Mutex::default);
/// Ids of kept connections.
static ADMIN_POOL_IDS: AtomicU64 = AtomicU64::new(0);

fn admin_pool() -> std::sync::MutexGuard<'static, IdleSessions> {
    // Entries are inserted and removed whole; a panic cannot leave one half-written.
    ADMIN_POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Errors of the PostgreSQL target. None of them carries a password or a verifier.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The admin credential lacks `username` or `password`.
    #[error("the admin credential has no {key:?} key")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A role name PostgreSQL would reject or silently truncate.
    #[error("invalid role name {role:?}: {reason}")]
    InvalidRoleName {
        /// The name as given.
        role: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given (PostgreSQL treats it as "no password").
    #[error("refusing to set an empty password for role {role:?}")]
    EmptyPassword {
        /// The role.
        role: String,
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
    /// The TLS client configuration could not be built.
    #[error("cannot build the TLS configuration")]
    TlsConfig {
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The certificate verifier could not be built.
    #[error("cannot build the TLS certificate verifier")]
    TlsVerifier {
        /// Why.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    /// The admin connection failed.
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user:?}")]
    Connect {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// The admin role.
        user: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
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
    /// The role does not exist on the server.
    #[error("role {role:?} does not exist on {host}:{port}")]
    RoleNotFound {
        /// The role.
        role: String,
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
    },
    /// Looking up the role failed.
    #[error("cannot look up role {role:?}")]
    LookupRole {
        /// The role.
        role: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `ALTER ROLE … PASSWORD` failed.
    #[error("cannot set the password of role {role:?}")]
    SetPassword {
        /// The role.
        role: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Listing or terminating the role's sessions failed.
    #[error("cannot terminate the sessions of role {role:?}")]
    TerminateSessions {
        /// The role.
        role: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `ALTER ROLE … NOLOGIN PASSWORD NULL` or `ALTER ROLE … LOGIN` failed.
    #[error("cannot {action} role {role:?}")]
    AlterRole {
        /// The role.
        role: String,
        /// `disable` or `enable`.
        action: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `CREATE ROLE` failed.
    #[error("cannot create role {role:?}")]
    EnsureRole {
        /// The role.
        role: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PostgresError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PostgresError::AdminKeyMissing { .. } => "admin_key_missing",
            PostgresError::InvalidRoleName { .. } => "invalid_role_name",
            PostgresError::EmptyPassword { .. } => "empty_password",
            PostgresError::ReadCaFile { .. } => "read_ca_file",
            PostgresError::InvalidCaFile { .. } => "invalid_ca_file",
            PostgresError::NoSystemRoots => "no_system_roots",
            PostgresError::TlsConfig { .. } => "tls_config",
            PostgresError::TlsVerifier { .. } => "tls_verifier",
            PostgresError::Connect { .. } => "connect",
            PostgresError::Timeout { .. } => "timeout",
            PostgresError::RoleNotFound { .. } => "role_not_found",
            PostgresError::LookupRole { .. } => "lookup_role",
            PostgresError::SetPassword { .. } => "set_password",
            PostgresError::TerminateSessions { .. } => "terminate_sessions",
            PostgresError::EnsureRole { .. } => "ensure_role",
            PostgresError::AlterRole { .. } => "alter_role",
        }
    }

    /// Whether trying again later may succeed (the server was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            PostgresError::Connect { source, .. } => source.as_db_error().is_none_or(|db| {
                // Too many connections, server starting or shutting down.
                matches!(db.code().code(), c if c.starts_with("53") || c.starts_with("57"))
            }),
            PostgresError::Timeout { .. } => true,
            PostgresError::LookupRole { source, .. }
            | PostgresError::SetPassword { source, .. }
            | PostgresError::TerminateSessions { source, .. }
            | PostgresError::EnsureRole { source, .. }
            | PostgresError::AlterRole { source, .. } => source.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// The outcome of logging in with a credential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum LoginOutcome {
    /// The server accepted the password and answered `SELECT 1`.
    Accepted,
    /// The server refused the password (SQLSTATE `28P01` invalid_password).
    Rejected {
        /// The SQLSTATE, `28P01`.
        code: String,
        /// The server's message (it names the role, never the password).
        message: String,
    },
    /// Anything else: no answer, TLS failure, or a refusal that says nothing about the
    /// password. Verification must fail on this outcome, never pass.
    Unreachable {
        /// What happened.
        reason: String,
    },
}

/// How the connection to the server is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetTls {
    /// Plain TCP.
    Disable,
    /// TLS; with a CA file the chain is checked (not the host name), without one nothing is.
    Require {
        /// PEM file of trusted CA certificates.
        ca_file: Option<PathBuf>,
    },
    /// TLS with the chain checked against the CA file (or the system trust store) and
    /// the host name checked against the certificate.
    VerifyFull {
        /// PEM file of trusted CA certificates; the system trust store when absent.
        ca_file: Option<PathBuf>,
    },
}

impl From<Option<&crate::policy::TlsSpec>> for TargetTls {
    /// The policy's `tls` of a connection; no `tls` is plain TCP.
    fn from(spec: Option<&crate::policy::TlsSpec>) -> Self {
        let Some(spec) = spec else {
            return TargetTls::Disable;
        };
        let ca_file = spec.ca_file.clone();
        match spec.mode {
            crate::policy::TlsMode::Disable => TargetTls::Disable,
            crate::policy::TlsMode::Require => TargetTls::Require { ca_file },
            crate::policy::TlsMode::VerifyFull => TargetTls::VerifyFull { ca_file },
        }
    }
}

/// A PostgreSQL server and the admin credential rotor uses on it.
#[derive(Clone)]
pub struct PostgresTarget {
    host: String,
    port: u16,
    database: String,
    tls: TargetTls,
    tls_config: Option<Arc<ClientConfig>>,
    admin_username: String,
    admin_password: SecretString,
    connect_timeout: Duration,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &"[REDACTED]")
            .finish()
    }
}

impl PostgresTarget {
    /// A target from a policy's `connection` and the admin credential it references
    /// (keys `username` and `password`). Reads the TLS CA file, if any; no network.
    pub fn new(
        conn: &crate::policy::PostgresConnection,
        admin: &SecretMap,
    ) -> Result<Self, PostgresError> {
        let tls = TargetTls::from(conn.tls.as_ref());
        let username = admin
            .expose("username")
            .ok_or(PostgresError::AdminKeyMissing { key: "username" })?;
        let password = admin
            .get("password")
            .ok_or(PostgresError::AdminKeyMissing { key: "password" })?;
        Self::from_parts(
            &conn.host,
            conn.port,
            &conn.database,
            tls,
            username,
            password.clone(),
        )
    }

    /// A target from its parts (for probes that are not a policy `connection`, and tests).
    pub fn from_parts(
        host: &str,
        port: u16,
        database: &str,
        tls: TargetTls,
        admin_username: &str,
        admin_password: SecretString,
    ) -> Result<Self, PostgresError> {
        let tls_config = build_tls_config(&tls)?;
        Ok(Self {
            host: host.to_owned(),
            port,
            database: database.to_owned(),
            tls,
            tls_config,
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

    /// Sets `role`'s password with `ALTER ROLE <role> PASSWORD '<SCRAM-SHA-256 verifier>'`.
    /// The verifier is computed here with a fresh salt, so the cleartext never goes into
    /// SQL or the server's logs. Fails with [`PostgresError::RoleNotFound`] when the role
    /// does not exist.
    pub async fn set_password(
        &self,
        role: &str,
        password: &SecretString,
    ) -> Result<(), PostgresError> {
        validate_role(role)?;
        let verifier = scram_verifier(role, password)?;
        let sql = Zeroizing::new(format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(role),
            *quote_literal(&verifier)
        ));
        let session = self.admin_session().await?;
        let result = self
            .bounded("set password", async {
                if !role_exists(&session.client, role).await? {
                    return Err(self.role_not_found(role));
                }
                session.client.batch_execute(&sql).await.map_err(|source| {
                    if source.code() == Some(&SqlState::UNDEFINED_OBJECT) {
                        self.role_not_found(role)
                    } else {
                        PostgresError::SetPassword {
                            role: role.to_owned(),
                            source,
                        }
                    }
                })
            })
            .await;
        self.release(session, result.is_ok()).await;
        result?;
        info!(role = %role, target = %self.address(), "Role password set.");
        Ok(())
    }

    /// Logs in as `role` with `password` and runs `SELECT 1`.
    ///
    /// [`LoginOutcome::Rejected`] only for SQLSTATE `28P01` (invalid_password): the
    /// server checked this password and refused it (PostgreSQL also answers `28P01` for
    /// a role that does not exist, so a dropped role counts as rejected).
    /// SQLSTATE `28000` (invalid_authorization_specification) is **not** a rejection:
    /// PostgreSQL raises it when no pg_hba line matches or `reject` matches (the
    /// password was never checked) and for a `NOLOGIN` role *after* the password was
    /// accepted — either way the old password may still be valid, so it is
    /// [`LoginOutcome::Unreachable`], like every other failure (refused connection,
    /// timeout, TLS error, other SQLSTATEs such as a missing database or `CONNECT` privilege).
    pub async fn login(&self, role: &str, password: &SecretString) -> LoginOutcome {
        let mut config = self.config(role);
        config.password(password.expose_secret());
        let outcome = self.try_login(&config).await;
        match &outcome {
            LoginOutcome::Accepted => {
                debug!(role = %role, target = %self.address(), "Login accepted.")
            }
            LoginOutcome::Rejected { code, .. } => {
                debug!(role = %role, target = %self.address(), code = %code, "Login rejected.")
            }
            LoginOutcome::Unreachable { reason } => {
                warn!(role = %role, target = %self.address(), reason = %reason, "Login attempt inconclusive.")
            }
        }
        outcome
    }

    /// Ends every session of `role` except the caller's own with `pg_terminate_backend`
    /// (waiting up to 5 s for each to be gone) and returns how many were ended. The admin
    /// needs `pg_signal_backend` (or superuser, to end a superuser's sessions).
    ///
    /// With `opened_before`, only sessions that started before that instant are ended:
    /// after an in-place password change those are the ones opened with the old
    /// password, while sessions opened since (with the new one) are left alone.
    pub async fn terminate_sessions(
        &self,
        role: &str,
        opened_before: Option<std::time::SystemTime>,
    ) -> Result<u64, PostgresError> {
        validate_role(role)?;
        let session = self.admin_session().await?;
        let client = &session.client;
        let result = self
            .bounded("terminate sessions", async {
                let err = |source| PostgresError::TerminateSessions {
                    role: role.to_owned(),
                    source,
                };
                let pids: Vec<i32> = client
                    .query(
                        "SELECT pid FROM pg_catalog.pg_stat_activity \
                         WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid() \
                         AND ($2::timestamptz IS NULL OR backend_start < $2::timestamptz)",
                        &[&role, &opened_before],
                    )
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                let mut ended = 0u64;
                for pid in pids {
                    if terminate_backend(client, pid).await.map_err(err)? {
                        ended += 1;
                    }
                }
                Ok(ended)
            })
            .await;
        self.release(session, result.is_ok()).await;
        let ended = result?;
        info!(role = %role, target = %self.address(), sessions = ended, "Role sessions terminated.");
        Ok(ended)
    }

    /// Retires `role`: `ALTER ROLE <role> NOLOGIN PASSWORD NULL`. Without a password no
    /// password login can succeed (the server answers `28P01` to any password), and
    /// `NOLOGIN` keeps it so even if a password is set again by hand. Idempotent. Fails
    /// with [`PostgresError::RoleNotFound`] when the role does not exist.
    pub async fn disable_login(&self, role: &str) -> Result<(), PostgresError> {
        self.alter_role(role, "NOLOGIN PASSWORD NULL", "disable")
            .await?;
        info!(role = %role, target = %self.address(), "Role disabled (NOLOGIN, no password).");
        Ok(())
    }

    /// Undoes [`PostgresTarget::disable_login`] in part: `ALTER ROLE <role> LOGIN`. The role
    /// still has no password until one is set, so nothing can log in yet. Idempotent.
    pub async fn enable_login(&self, role: &str) -> Result<(), PostgresError> {
        self.alter_role(role, "LOGIN", "enable").await?;
        info!(role = %role, target = %self.address(), "Role may log in again (LOGIN).");
        Ok(())
    }

    async fn alter_role(
        &self,
        role: &str,
        clause: &'static str,
        action: &'static str,
    ) -> Result<(), PostgresError> {
        validate_role(role)?;
        let sql = format!("ALTER ROLE {} {clause}", quote_ident(role));
        let session = self.admin_session().await?;
        let result = self
            .bounded("alter role", async {
                if !role_exists(&session.client, role).await? {
                    return Err(self.role_not_found(role));
                }
                session.client.batch_execute(&sql).await.map_err(|source| {
                    if source.code() == Some(&SqlState::UNDEFINED_OBJECT) {
                        self.role_not_found(role)
                    } else {
                        PostgresError::AlterRole {
                            role: role.to_owned(),
                            action,
                            source,
                        }
                    }
                })
            })
            .await;
        self.release(session, result.is_ok()).await;
        result
    }

    /// Creates `role` as a `LOGIN` role with `password` (as a SCRAM verifier) when it
    /// does not exist. An existing role is left as it is, password included.
    pub async fn ensure_role(
        &self,
        role: &str,
        password: &SecretString,
    ) -> Result<(), PostgresError> {
        validate_role(role)?;
        let verifier = scram_verifier(role, password)?;
        let sql = Zeroizing::new(format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(role),
            *quote_literal(&verifier)
        ));
        let session = self.admin_session().await?;
        let result = self
            .bounded("ensure role", async {
                if role_exists(&session.client, role).await? {
                    return Ok(false);
                }
                match session.client.batch_execute(&sql).await {
                    Ok(()) => Ok(true),
                    // Created concurrently by someone else: it exists, which is what we want.
                    Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(false),
                    Err(source) => Err(PostgresError::EnsureRole {
                        role: role.to_owned(),
                        source,
                    }),
                }
            })
            .await;
        session.close().await;
        if result? {
            info!(role = %role, target = %self.address(), "Role created.");
        }
        Ok(())
    }

    /// Connects with `config` (bounded by the connect timeout: a server that accepts TCP
    /// and then says nothing is unreachable) and runs `SELECT 1`.
    async fn try_login(&self, config: &Config) -> LoginOutcome {
        let session = match tokio::time::timeout(self.connect_timeout, self.open(config)).await {
            Err(_) => {
                crate::outside::count_timeout(crate::outside::System::Postgres);
                return LoginOutcome::Unreachable {
                    reason: format!(
                        "no login answer within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                };
            }
            Ok(Err(error)) => return classify_login_error(&error),
            Ok(Ok(session)) => session,
        };
        let result = tokio::time::timeout(
            statement_timeout(),
            session.client.query_one("SELECT 1", &[]),
        )
        .await;
        session.close().await;
        match result {
            Err(_) => {
                crate::outside::count_timeout(crate::outside::System::Postgres);
                LoginOutcome::Unreachable {
                    reason: format!(
                        "logged in, but SELECT 1 got no answer within {}s",
                        statement_timeout().as_secs()
                    ),
                }
            }
            Ok(Err(error)) => LoginOutcome::Unreachable {
                reason: format!(
                    "logged in, but SELECT 1 failed: {}",
                    crate::error_chain(&error)
                ),
            },
            Ok(Ok(row)) => match row.try_get::<_, i32>(0) {
                Ok(1) => LoginOutcome::Accepted,
                Ok(other) => LoginOutcome::Unreachable {
                    reason: format!("SELECT 1 answered {other}"),
                },
                Err(error) => LoginOutcome::Unreachable {
                    reason: format!("SELECT 1 answered oddly: {}", crate::error_chain(&error)),
                },
            },
        }
    }

    fn config(&self, user: &str) -> Config {
        let mut config = Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(user)
            .application_name(APPLICATION_NAME)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.tls {
                TargetTls::Disable => SslMode::Disable,
                TargetTls::Require { .. } | TargetTls::VerifyFull { .. } => SslMode::Require,
            });
        config
    }

    async fn open(&self, config: &Config) -> Result<Session, tokio_postgres::Error> {
        let (client, connection) = config
            .connect(MakeRustls {
                config: self.tls_config.clone(),
            })
            .await?;
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(error = %error, "PostgreSQL connection ended with an error.");
            }
        });
        Ok(Session {
            client,
            task: AbortOnDrop(task),
        })
    }

    async fn admin_session(&self) -> Result<Session, PostgresError> {
        if let Some(session) = self.kept_session().await {
            return Ok(session);
        }
        let mut config = self.config(&self.admin_username);
        config.password(self.admin_password.expose_secret());
        match tokio::time::timeout(self.connect_timeout, self.open(&config)).await {
            Err(_) => Err(self.timeout("connect as admin", self.connect_timeout)),
            Ok(Err(source)) => Err(PostgresError::Connect {
                host: self.host.clone(),
                port: self.port,
                user: self.admin_username.clone(),
                source,
            }),
            Ok(Ok(session)) => Ok(session),
        }
    }

    /// Server, database, TLS and admin login: which kept connections this target may
    /// use. The password enters only as a SHA-256 digest and the key is never shown.
    fn pool_key(&self) -> String {
        let digest = Sha256::digest(self.admin_password.expose_secret().as_bytes());
        format!(
            "{}\0{}\0{}\0{:?}\0{}\0{}",
            self.host,
            self.port,
            self.database,
            self.tls,
            self.admin_username,
            hex::encode(digest)
        )
    }

    /// A kept admin connection that answers a sync message, newest first; dead ones
    /// are dropped.
    async fn kept_session(&self) -> Option<Session> {
        let key = self.pool_key();
        loop {
            let (_, session) = admin_pool().get_mut(&key)?.pop()?;
            if session.client.is_closed() {
                continue;
            }
            let alive =
                tokio::time::timeout(ADMIN_CHECK_TIMEOUT, session.client.check_connection()).await;
            if matches!(alive, Ok(Ok(()))) {
                debug!(target = %self.address(), "Reusing an admin connection.");
                return Some(session);
            }
            session.close().await;
        }
    }

    /// Ends an admin call: after a call that succeeded the connection is kept for
    /// [`ADMIN_IDLE`] (see the module documentation), else closed.
    async fn release(&self, session: Session, succeeded: bool) {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !succeeded || !multi_thread || session.client.is_closed() {
            return session.close().await;
        }
        let key = self.pool_key();
        let id = ADMIN_POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let full = {
            let mut pool = admin_pool();
            let idle = pool.entry(key.clone()).or_default();
            if idle.len() >= ADMIN_IDLE_MAX {
                Some(session)
            } else {
                idle.push((id, session));
                None
            }
        };
        if let Some(session) = full {
            return session.close().await;
        }
        tokio::spawn(async move {
            tokio::time::sleep(ADMIN_IDLE).await;
            let expired = {
                let mut pool = admin_pool();
                let found = pool.get_mut(&key).and_then(|idle| {
                    let at = idle.iter().position(|(i, _)| *i == id)?;
                    Some(idle.remove(at).1)
                });
                if pool.get(&key).is_some_and(Vec::is_empty) {
                    pool.remove(&key);
                }
                found
            };
            if let Some(session) = expired {
                session.close().await;
            }
        });
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, PostgresError>>,
    ) -> Result<T, PostgresError> {
        tokio::time::timeout(statement_timeout(), work)
            .await
            .map_err(|_| self.timeout(operation, statement_timeout()))?
    }

    fn timeout(&self, operation: &'static str, limit: Duration) -> PostgresError {
        crate::outside::count_timeout(crate::outside::System::Postgres);
        PostgresError::Timeout {
            operation,
            host: self.host.clone(),
            port: self.port,
            limit,
        }
    }

    fn role_not_found(&self, role: &str) -> PostgresError {
        PostgresError::RoleNotFound {
            role: role.to_owned(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// One connection: the client and the task driving its socket.
struct Session {
    client: Client,
    task: AbortOnDrop,
}

impl Session {
    /// Drops the client (the connection then sends Terminate and ends) and waits briefly
    /// for the task; a task still running after that is aborted when dropped.
    async fn close(self) {
        let Session { client, mut task } = self;
        drop(client);
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut task.0)
            .await
            .is_err()
        {
            debug!("PostgreSQL connection did not close in time; aborting it.");
        }
    }
}

/// Aborts the connection task when a call is cancelled before [`Session::close`].
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn role_exists(client: &Client, role: &str) -> Result<bool, PostgresError> {
    client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .map(|row| row.is_some())
        .map_err(|source| PostgresError::LookupRole {
            role: role.to_owned(),
            source,
        })
}

/// `pg_terminate_backend(pid, timeout)` (PostgreSQL 14+: waits until the session is
/// gone), falling back to the one-argument form on older servers.
async fn terminate_backend(client: &Client, pid: i32) -> Result<bool, tokio_postgres::Error> {
    match client
        .query_one(
            "SELECT pg_catalog.pg_terminate_backend($1, $2)",
            &[&pid, &TERMINATE_WAIT_MS],
        )
        .await
    {
        Ok(row) => row.try_get(0),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => client
            .query_one("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
            .await?
            .try_get(0),
        Err(e) => Err(e),
    }
}

fn classify_login_error(error: &tokio_postgres::Error) -> LoginOutcome {
    if let Some(db) = error.as_db_error() {
        if *db.code() == SqlState::INVALID_PASSWORD {
            return LoginOutcome::Rejected {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
            };
        }
        return LoginOutcome::Unreachable {
            reason: format!(
                "server answered SQLSTATE {} ({}), which does not prove the password is rejected",
                db.code().code(),
                db.message()
            ),
        };
    }
    LoginOutcome::Unreachable {
        reason: crate::error_chain(error),
    }
}

fn validate_role(role: &str) -> Result<(), PostgresError> {
    let reason = if role.is_empty() {
        "empty"
    } else if role.len() > MAX_ROLE_NAME_BYTES {
        "longer than 63 bytes (PostgreSQL would truncate it)"
    } else if role.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(PostgresError::InvalidRoleName {
        role: role.to_owned(),
        reason,
    })
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (fresh random salt).
fn scram_verifier(role: &str, password: &SecretString) -> Result<Zeroizing<String>, PostgresError> {
    let password = password.expose_secret();
    if password.is_empty() {
        return Err(PostgresError::EmptyPassword {
            role: role.to_owned(),
        });
    }
    Ok(Zeroizing::new(postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    )))
}

/// `"name"` with embedded double quotes doubled.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `'text'` with embedded single quotes doubled. Backslashes are literal because
/// `standard_conforming_strings` is on (the default since PostgreSQL 9.1); the verifier
/// holds only base64, digits, `-`, `$` and `:` anyway.
fn quote_literal(text: &str) -> Zeroizing<String> {
    Zeroizing::new(format!("'{}'", text.replace('\'', "''")))
}

fn build_tls_config(tls: &TargetTls) -> Result<Option<Arc<ClientConfig>>, PostgresError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match tls {
        TargetTls::Disable => return Ok(None),
        TargetTls::Require { ca_file: None } => Arc::new(NoCertificateCheck {
            provider: provider.clone(),
        }),
        TargetTls::Require {
            ca_file: Some(path),
        } => Arc::new(ChainOnly(webpki_verifier(
            load_ca_file(path)?,
            provider.clone(),
        )?)),
        TargetTls::VerifyFull { ca_file } => {
            let roots = match ca_file {
                Some(path) => load_ca_file(path)?,
                None => system_roots()?,
            };
            webpki_verifier(roots, provider.clone())?
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PostgresError::TlsConfig { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, PostgresError> {
    let pem = std::fs::read(path).map_err(|source| PostgresError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| PostgresError::InvalidCaFile {
            path: path.to_owned(),
        })?;
        roots.add(cert).map_err(|_| PostgresError::InvalidCaFile {
            path: path.to_owned(),
        })?;
    }
    if roots.is_empty() {
        return Err(PostgresError::InvalidCaFile {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, PostgresError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        debug!(error = %error, "Skipping part of the system trust store.");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "Loaded the system trust store.");
    if roots.is_empty() {
        return Err(PostgresError::NoSystemRoots);
    }
    Ok(roots)
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PostgresError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| PostgresError::TlsVerifier { source })
}

/// `require` without a CA file: encryption only, as libpq does. Handshake signatures
/// are still checked, and SCRAM channel binding ties the login to this certificate.
#[derive(Debug)]
struct NoCertificateCheck {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `require` with a CA file (libpq's `verify-ca`): the chain must lead to the CA, the
/// host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook over tokio-rustls. `config: None` (mode `disable`) is never
/// asked to connect, because the connection's `sslmode` is `disable` then.
#[derive(Clone)]
struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let server_name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            server_name,
        })
    }
}

struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is disabled for this target",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(self.server_name, stream)
                .await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, connection) = self.0.get_ref();
        connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map(ChannelBinding::tls_server_end_point)
            .unwrap_or_else(ChannelBinding::none)
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash
/// (SHA-256 for MD5 and SHA-1). `None` for algorithms without a single hash (RSA-PSS,
/// Ed25519): the client then does plain SCRAM-SHA-256, as PostgreSQL itself would.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    enum Hash {
        Sha256,
        Sha384,
        Sha512,
    }
    let oid = signature_algorithm_oid(cert)?;
    let hash = match oid {
        [prefix @ .., last] if prefix == RSA => match last {
            0x04 | 0x05 | 0x0b => Hash::Sha256,
            0x0c => Hash::Sha384,
            0x0d => Hash::Sha512,
            _ => return None,
        },
        [prefix @ .., last] if prefix == ECDSA_SHA2 => match last {
            0x02 => Hash::Sha256,
            0x03 => Hash::Sha384,
            0x04 => Hash::Sha512,
            _ => return None,
        },
        oid if oid == ECDSA_SHA1 => Hash::Sha256,
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => Sha256::digest(cert).to_vec(),
        Hash::Sha384 => Sha384::digest(cert).to_vec(),
        Hash::Sha512 => Sha512::digest(cert).to_vec(),
    })
}

/// The OID bytes of `Certificate.signatureAlgorithm` in a DER certificate.
fn signature_algorithm_oid(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(cert, 0x30)?;
    let (_tbs, rest) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    Some(oid)
}

/// Splits one DER element with tag `tag` off `input`: `(contents, rest)`.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's").as_str(), "'it''s'");
    }

    #[test]
    fn role_names_are_checked() {
        assert!(validate_role("payments_app").is_ok());
        assert!(validate_role(&"x".repeat(63)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(64)] {
            let err = validate_role(bad).unwrap_err();
            assert_eq!(err.kind(), "invalid_role_name");
        }
    }

    #[test]
    fn verifier_is_scram_and_hides_the_password() {
        let password = SecretString::from("canary-Pw-7c1e");
        let verifier = scram_verifier("r", &password).unwrap();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{}", *verifier);
        assert!(!verifier.contains("canary-Pw-7c1e"));
        // Fresh salt each time.
        assert_ne!(*verifier, *scram_verifier("r", &password).unwrap());
        // Nothing in it needs escaping inside a literal.
        assert!(
            verifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c))
        );
        let err = scram_verifier("r", &SecretString::from("")).unwrap_err();
        assert_eq!(err.kind(), "empty_password");
    }

    #[test]
    fn debug_redacts_the_admin_password() {
        let target = PostgresTarget::from_parts(
            "127.0.0.1",
            5432,
            "postgres",
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
    fn missing_ca_file_is_reported_with_its_path() {
        let err = build_tls_config(&TargetTls::VerifyFull {
            ca_file: Some(PathBuf::from("/nonexistent/rotor-ca.pem")),
        })
        .unwrap_err();
        assert_eq!(err.kind(), "read_ca_file");
        assert!(err.to_string().contains("/nonexistent/rotor-ca.pem"));
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // Certificate ::= SEQUENCE { tbs SEQUENCE {}, signatureAlgorithm SEQUENCE { OID }, BIT STRING }
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend_from_slice(&alg);
            body.extend_from_slice(&[0x03, 0x01, 0x00]);
            let mut der = vec![0x30, body.len() as u8];
            der.extend_from_slice(&body);
            der
        };
        let ecdsa_sha256 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
        assert_eq!(
            tls_server_end_point(&ecdsa_sha256),
            Some(Sha256::digest(&ecdsa_sha256).to_vec())
        );
        let rsa_sha384 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]);
        assert_eq!(
            tls_server_end_point(&rsa_sha384),
            Some(Sha384::digest(&rsa_sha384).to_vec())
        );
        let rsa_sha1 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(
            tls_server_end_point(&rsa_sha1),
            Some(Sha256::digest(&rsa_sha1).to_vec())
        );
        let ed25519 = cert(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        assert_eq!(tls_server_end_point(b"not der"), None);
    }
}
