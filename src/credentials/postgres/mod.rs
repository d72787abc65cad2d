//! PostgreSQL role passwords: the primitives the engine calls to change, test, prove
//! revoked and contain a role's password on a real server.
//!
//! - [`PostgresTarget::set_password`] sends `ALTER ROLE … PASSWORD '<SCRAM-SHA-256 verifier>'`;
//!   the verifier is computed here, so the cleartext never reaches SQL, the server log
//!   (`log_statement = all`) or `pg_stat_activity`.
//! - [`PostgresTarget::login`] logs in as the role and runs `SELECT 1`; only an
//!   authentication failure (SQLSTATE `28P01`) counts as [`AuthOutcome::Rejected`].
//! - [`PostgresTarget::terminate_sessions`] ends the role's sessions (`pg_terminate_backend`).
//!
//! Admin connections (`application_name = rotor`) are reused (`pool.rs`), so a
//! rotation's calls and rotations of policies sharing a server skip the connect,
//! backend start and SCRAM exchange. Logins with the credentials being tested always
//! use a new connection.
//!
//! TLS (`disable` | `require` | `verify-full`) uses rustls with the aws-lc-rs provider
//! ([`crate::credentials::target::tls`]). Over TLS the SCRAM exchange is bound to the
//! server certificate (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`) when the
//! certificate's signature algorithm allows it (`tls.rs`).

mod pool;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use secrecy::ExposeSecret;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, config::SslMode};
use tracing::{debug, info};
use zeroize::Zeroizing;

use self::pool::Session;
use self::tls::MakeRustls;
use super::CredentialError;
use super::adapters::PasswordTarget;
use super::target::{
    AbortOnDrop, AdminLogin, AuthOutcome, CallTimeout, Endpoint, TargetTls, TlsSetupError,
    admin_login, check_name, endpoint_accessors, log_login,
};
use crate::outside::System;
use crate::secret::{SecretMap, SecretString};

/// Default limit for establishing a connection (TCP connect, TLS and authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `pg_terminate_backend` waits for each session to be gone (milliseconds).
const TERMINATE_WAIT_MS: i64 = 5_000;
/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which could name another role.
const MAX_ROLE_NAME_BYTES: usize = 63;
/// `application_name` of every connection rotor opens.
const APPLICATION_NAME: &str = "rotor";

/// Errors of the PostgreSQL target. None of them carries a password or a verifier.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum PostgresError {
    /// The admin credential lacks `username` or `password`.
    #[error("the admin credential has no {key:?} key")]
    #[strum(serialize = "admin_key_missing")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A role name PostgreSQL would reject or silently truncate.
    #[error("invalid role name {role:?}: {reason}")]
    #[strum(serialize = "invalid_role_name")]
    InvalidRoleName {
        /// The name as given.
        role: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given (PostgreSQL treats it as "no password").
    #[error("refusing to set an empty password for role {role:?}")]
    #[strum(serialize = "empty_password")]
    EmptyPassword {
        /// The role.
        role: String,
    },
    /// The TLS settings cannot be used (CA file, trust store, rustls configuration).
    #[error(transparent)]
    #[strum(disabled)]
    Tls(#[from] TlsSetupError),
    /// The admin connection failed.
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user:?}")]
    #[strum(serialize = "connect")]
    Connect {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// The admin role.
        user: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An admin call did not finish in time.
    #[error(transparent)]
    #[strum(serialize = "timeout")]
    Timeout(#[from] CallTimeout),
    /// The role does not exist on the server.
    #[error("role {role:?} does not exist on {host}:{port}")]
    #[strum(serialize = "role_not_found")]
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
    #[strum(serialize = "lookup_role")]
    LookupRole {
        /// The role.
        role: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `ALTER ROLE … PASSWORD` failed.
    #[error("cannot set the password of role {role:?}")]
    #[strum(serialize = "set_password")]
    SetPassword {
        /// The role.
        role: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Listing or terminating the role's sessions failed.
    #[error("cannot terminate the sessions of role {role:?}")]
    #[strum(serialize = "terminate_sessions")]
    TerminateSessions {
        /// The role.
        role: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `ALTER ROLE … NOLOGIN PASSWORD NULL` or `ALTER ROLE … LOGIN` failed.
    #[error("cannot {action} role {role:?}")]
    #[strum(serialize = "alter_role")]
    AlterRole {
        /// The role.
        role: String,
        /// `disable` or `enable`.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `CREATE ROLE` failed.
    #[error("cannot create role {role:?}")]
    #[strum(serialize = "ensure_role")]
    EnsureRole {
        /// The role.
        role: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PostgresError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PostgresError::Tls(e) => e.kind(),
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed (the server was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            PostgresError::Connect { source, .. } => source.as_db_error().is_none_or(|db| {
                // Too many connections, server starting or shutting down.
                matches!(db.code().code(), c if c.starts_with("53") || c.starts_with("57"))
            }),
            PostgresError::Timeout(_) => true,
            PostgresError::LookupRole { source, .. }
            | PostgresError::SetPassword { source, .. }
            | PostgresError::TerminateSessions { source, .. }
            | PostgresError::EnsureRole { source, .. }
            | PostgresError::AlterRole { source, .. } => source.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// A PostgreSQL server and the admin credential rotor uses on it.
#[derive(Clone)]
pub struct PostgresTarget {
    endpoint: Endpoint,
    database: String,
    tls: TargetTls,
    tls_config: Option<Arc<ClientConfig>>,
    admin: AdminLogin,
    connect_timeout: Duration,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("host", &self.endpoint.host())
            .field("port", &self.endpoint.port())
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("admin", &self.admin)
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
        let (username, password) =
            admin_login(admin).map_err(|key| PostgresError::AdminKeyMissing { key })?;
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
        let tls_config = super::target::tls::client_config(&tls)?;
        Ok(Self {
            endpoint: Endpoint::new(host, port, System::Postgres),
            database: database.to_owned(),
            tls,
            tls_config,
            admin: AdminLogin::new(admin_username, admin_password),
            connect_timeout: Endpoint::connect_limit(DEFAULT_CONNECT_TIMEOUT),
        })
    }

    endpoint_accessors!("TCP connect, TLS and authentication");

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
        let sql = password_sql("ALTER ROLE", role, "", password)?;
        self.alter_existing(role, "set password", &sql, |source| {
            PostgresError::SetPassword {
                role: role.to_owned(),
                source,
            }
        })
        .await?;
        info!(role = %role, target = %self.address(), "Role password set.");
        Ok(())
    }

    /// Logs in as `role` with `password` and runs `SELECT 1`.
    ///
    /// [`AuthOutcome::Rejected`] only for SQLSTATE `28P01` (invalid_password): the
    /// server checked this password and refused it (PostgreSQL also answers `28P01` for
    /// a role that does not exist, so a dropped role counts as rejected).
    /// SQLSTATE `28000` (invalid_authorization_specification) is **not** a rejection:
    /// PostgreSQL raises it when no pg_hba line matches or `reject` matches (the
    /// password was never checked) and for a `NOLOGIN` role *after* the password was
    /// accepted — either way the old password may still be valid, so it is
    /// [`AuthOutcome::Unreachable`], like every other failure (refused connection,
    /// timeout, TLS error, other SQLSTATEs such as a missing database or `CONNECT` privilege).
    pub async fn login(&self, role: &str, password: &SecretString) -> AuthOutcome {
        let mut config = self.config(role);
        config.password(password.expose_secret());
        let outcome = self.try_login(&config).await;
        log_login!(outcome, role = %role, target = %self.address());
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
        opened_before: Option<SystemTime>,
    ) -> Result<u64, PostgresError> {
        validate_role(role)?;
        let ended = self
            .with_admin("terminate sessions", async |client: &Client| {
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
            .await?;
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
        self.alter_existing(role, "alter role", &sql, |source| {
            PostgresError::AlterRole {
                role: role.to_owned(),
                action,
                source,
            }
        })
        .await
    }

    /// Runs `sql` (an `ALTER ROLE`) as the admin if `role` exists:
    /// [`PostgresError::RoleNotFound`] when it does not (also when it is dropped between
    /// the check and the statement), `failed` for any other error.
    async fn alter_existing(
        &self,
        role: &str,
        operation: &'static str,
        sql: &str,
        failed: impl FnOnce(tokio_postgres::Error) -> PostgresError,
    ) -> Result<(), PostgresError> {
        self.with_admin(operation, async |client: &Client| {
            if !role_exists(client, role).await? {
                return Err(self.role_not_found(role));
            }
            client.batch_execute(sql).await.map_err(|source| {
                if source.code() == Some(&SqlState::UNDEFINED_OBJECT) {
                    self.role_not_found(role)
                } else {
                    failed(source)
                }
            })
        })
        .await
    }

    /// Creates `role` as a `LOGIN` role with `password` (as a SCRAM verifier) when it
    /// does not exist. An existing role is left as it is, password included.
    pub async fn ensure_role(
        &self,
        role: &str,
        password: &SecretString,
    ) -> Result<(), PostgresError> {
        validate_role(role)?;
        let sql = password_sql("CREATE ROLE", role, "LOGIN ", password)?;
        let session = self.admin_session().await?;
        let result = self
            .endpoint
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
    async fn try_login(&self, config: &Config) -> AuthOutcome {
        let session = match tokio::time::timeout(self.connect_timeout, self.open(config)).await {
            Err(_) => {
                self.endpoint.count_timeout();
                return AuthOutcome::Unreachable {
                    reason: format!(
                        "no login answer within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                };
            }
            Ok(Err(error)) => return classify_login_error(&error),
            Ok(Ok(session)) => session,
        };
        let outcome = self
            .endpoint
            .after_login(session.client.query_one("SELECT 1", &[]), |row| {
                match row.try_get::<_, i32>(0) {
                    Ok(1) => AuthOutcome::Accepted,
                    Ok(other) => AuthOutcome::Unreachable {
                        reason: format!("SELECT 1 answered {other}"),
                    },
                    Err(error) => AuthOutcome::Unreachable {
                        reason: format!("SELECT 1 answered oddly: {}", crate::error_chain(&error)),
                    },
                }
            })
            .await;
        session.close().await;
        outcome
    }

    fn config(&self, user: &str) -> Config {
        let mut config = Config::new();
        config
            .host(self.endpoint.host())
            .port(self.endpoint.port())
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
        let mut config = self.config(&self.admin.username);
        config.password(self.admin.password.expose_secret());
        self.endpoint
            .connect_admin(self.connect_timeout, async {
                self.open(&config)
                    .await
                    .map_err(|source| PostgresError::Connect {
                        host: self.endpoint.host().to_owned(),
                        port: self.endpoint.port(),
                        user: self.admin.username.clone(),
                        source,
                    })
            })
            .await
    }

    /// Runs `work` on an admin session within the call limit; the session is kept for
    /// the next call when `work` succeeded (see `pool.rs`).
    async fn with_admin<T>(
        &self,
        operation: &'static str,
        work: impl AsyncFnOnce(&Client) -> Result<T, PostgresError>,
    ) -> Result<T, PostgresError> {
        let session = self.admin_session().await?;
        let result = self
            .endpoint
            .bounded(operation, work(&session.client))
            .await;
        self.release(session, result.is_ok()).await;
        result
    }

    fn role_not_found(&self, role: &str) -> PostgresError {
        PostgresError::RoleNotFound {
            role: role.to_owned(),
            host: self.endpoint.host().to_owned(),
            port: self.endpoint.port(),
        }
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

fn classify_login_error(error: &tokio_postgres::Error) -> AuthOutcome {
    if let Some(db) = error.as_db_error() {
        if *db.code() == SqlState::INVALID_PASSWORD {
            return AuthOutcome::Rejected {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
            };
        }
        return AuthOutcome::Unreachable {
            reason: format!(
                "server answered SQLSTATE {} ({}), which does not prove the password is rejected",
                db.code().code(),
                db.message()
            ),
        };
    }
    AuthOutcome::Unreachable {
        reason: crate::error_chain(error),
    }
}

fn validate_role(role: &str) -> Result<(), PostgresError> {
    check_name(
        role,
        &[
            (str::is_empty, "empty"),
            (
                |role| role.len() > MAX_ROLE_NAME_BYTES,
                "longer than 63 bytes (PostgreSQL would truncate it)",
            ),
            (|role| role.contains('\0'), "contains a NUL character"),
        ],
    )
    .map_err(|reason| PostgresError::InvalidRoleName {
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

/// `<command> "<role>" <options>PASSWORD '<SCRAM-SHA-256 verifier>'`: the statement
/// carries the verifier (fresh salt), never the password.
fn password_sql(
    command: &str,
    role: &str,
    options: &str,
    password: &SecretString,
) -> Result<Zeroizing<String>, PostgresError> {
    let verifier = scram_verifier(role, password)?;
    Ok(Zeroizing::new(format!(
        "{command} {} {options}PASSWORD {}",
        quote_ident(role),
        *quote_literal(&verifier)
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

impl PasswordTarget for PostgresTarget {
    async fn set_password(
        &self,
        role: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        Ok(PostgresTarget::set_password(self, role, password).await?)
    }

    async fn disable(
        &self,
        role: &str,
        _unknown: &SecretString,
    ) -> Result<String, CredentialError> {
        self.disable_login(role).await?;
        Ok(format!("role {role}: NOLOGIN, password removed"))
    }

    async fn enable(&self, role: &str) -> Result<Option<String>, CredentialError> {
        self.enable_login(role).await?;
        Ok(Some(format!("role {role}: LOGIN")))
    }

    async fn login(&self, role: &str, password: &SecretString) -> AuthOutcome {
        PostgresTarget::login(self, role, password).await
    }

    async fn terminate(
        &self,
        role: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        Ok(self.terminate_sessions(role, opened_before).await?)
    }
}

#[cfg(test)]
mod tests;
