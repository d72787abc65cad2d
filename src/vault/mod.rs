//! The Vault client: configuration the Vault way (`VAULT_ADDR`, `VAULT_TOKEN`,
//! `VAULT_NAMESPACE`, `VAULT_CACERT`, flags override), logging in (a given token, or
//! Kubernetes / AppRole login chosen with `ROTOR_VAULT_AUTH_METHOD`), keeping the token
//! alive in a long-running agent ([`Vault::keep_alive`]), KV v2 reads and
//! check-and-set writes, and resolution of `…From` references.
//!
//! vaultrs keeps the token in a plain `String` inside a `Debug`-deriving settings
//! struct, so the client is wrapped here and never formatted. The token and the
//! vaultrs client built with it sit behind a lock shared by every clone of a [`Vault`],
//! so a renewal or a new login reaches every caller; the lock is never held across an
//! `.await` (callers clone the `Arc<VaultClient>` / token out first).

mod auth;
mod keeper;
mod kv;
mod request;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tracing::info;
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

pub use self::auth::{
    DEFAULT_JWT_FILE, ENV_AUTH_METHOD, ENV_AUTH_MOUNT, ENV_JWT_FILE, ENV_ROLE, ENV_ROLE_ID_FILE,
    ENV_SECRET_ID_FILE, VaultAuth, VaultAuthSettings,
};
use self::keeper::TokenLease;
pub use self::kv::{KvEntry, describe_reference, resolve_local};
pub use self::request::{AuthAs, RawResponse};

/// How to reach Vault. Built from the environment, then overridden by flags.
#[derive(Clone)]
pub struct VaultConfig {
    /// Server address, e.g. `https://vault.example:8200`.
    pub addr: String,
    /// Token used for every request with [`VaultAuth::Token`] (ignored by the login
    /// methods, which obtain their own).
    pub token: Option<SecretString>,
    /// How rotor logs in ([`VaultAuth::Token`] uses `token`).
    pub auth: VaultAuth,
    /// Enterprise/OpenBao namespace sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM bundle of CA certificates to trust for an `https` address.
    pub ca_cert: Option<PathBuf>,
    /// Per-request (and connect) timeout; [`VaultConfig::from_env`] takes the agent-wide
    /// [`crate::outside::call_timeout`].
    pub timeout: Duration,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("auth", &self.auth)
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl VaultConfig {
    /// Reads `VAULT_ADDR` (default `http://127.0.0.1:8200`), `VAULT_TOKEN` (else
    /// `~/.vault-token`), `VAULT_NAMESPACE` and `VAULT_CACERT`. `auth` is
    /// [`VaultAuth::Token`]; the login methods come from
    /// [`VaultAuthSettings::from_env`], which can fail and so is read separately.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let token = var("VAULT_TOKEN").or_else(|| {
            let home = std::env::var_os("HOME")?;
            let text = std::fs::read_to_string(PathBuf::from(home).join(".vault-token")).ok()?;
            Some(text.trim().to_owned()).filter(|t| !t.is_empty())
        });
        VaultConfig {
            addr: var("VAULT_ADDR").unwrap_or_else(|| "http://127.0.0.1:8200".into()),
            token: token.map(SecretString::from),
            auth: VaultAuth::Token,
            namespace: var("VAULT_NAMESPACE"),
            ca_cert: var("VAULT_CACERT").map(PathBuf::from),
            timeout: crate::outside::call_timeout(),
        }
    }
}

/// A failed Vault operation. Messages carry paths and Vault's own error text, never
/// secret values.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum VaultError {
    /// The configuration cannot produce a client.
    #[error("invalid Vault configuration: {0}")]
    #[strum(serialize = "vault_config")]
    Config(String),
    /// No token was configured.
    #[error(
        "no Vault token: set VAULT_TOKEN (or ~/.vault-token, --vault-token-file), or log in with ROTOR_VAULT_AUTH_METHOD=kubernetes|approle"
    )]
    #[strum(serialize = "vault_no_token")]
    NoToken,
    /// A file holding a login credential (JWT, role id, secret id) cannot be used.
    #[error("cannot read the {what} from {} ({variable}): {detail}", .path.display())]
    #[strum(serialize = "vault_credential_file")]
    CredentialFile {
        /// What the file holds, e.g. `AppRole secret id`.
        what: &'static str,
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (I/O error or "empty"); never the file's content.
        detail: String,
    },
    /// A login was refused or could not be sent.
    #[error("Vault {method} login at auth/{mount} failed: {detail}")]
    #[strum(serialize = "vault_login")]
    Login {
        /// `kubernetes` or `approle`.
        method: &'static str,
        /// The auth mount.
        mount: String,
        /// Vault's answer (status and error strings) or the transport failure.
        detail: String,
    },
    /// Building the HTTP client failed.
    #[error("cannot build the Vault client")]
    #[strum(serialize = "vault_client")]
    Client(#[source] ClientError),
    /// A KV read failed.
    #[error("reading {mount}/{path} from Vault failed: {detail}")]
    #[strum(serialize = "vault_read")]
    Read {
        /// KV mount.
        mount: String,
        /// Path under the mount.
        path: String,
        /// Vault's answer.
        detail: String,
    },
    /// A KV write failed.
    #[error("writing {mount}/{path} to Vault failed: {detail}")]
    #[strum(serialize = "vault_write")]
    Write {
        /// KV mount.
        mount: String,
        /// Path under the mount.
        path: String,
        /// Vault's answer.
        detail: String,
    },
    /// A check-and-set write found another version than expected.
    #[error(
        "check-and-set conflict on {mount}/{path}: expected version {expected}, someone else wrote it"
    )]
    #[strum(serialize = "vault_cas_conflict")]
    CasConflict {
        /// KV mount.
        mount: String,
        /// Path under the mount.
        path: String,
        /// The version we expected to be current (0 = must not exist).
        expected: u64,
    },
    /// A reference names a path or key that does not exist.
    #[error("reference {reference} not found: {detail}")]
    #[strum(serialize = "reference_missing")]
    ReferenceMissing {
        /// The reference, described without any value.
        reference: String,
        /// What was missing.
        detail: String,
    },
    /// Any other failed request.
    #[error("Vault request {operation} failed: {detail}")]
    #[strum(serialize = "vault_request")]
    Request {
        /// What was attempted, e.g. `delete metadata secret/rotor/staging/x`.
        operation: String,
        /// Vault's answer.
        detail: String,
    },
}

impl VaultError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        if self.is_timeout() {
            return "timeout";
        }
        self.into()
    }

    /// Whether Vault did not answer within the call timeout
    /// ([`crate::outside::call_timeout`]); such an error is transient.
    pub fn is_timeout(&self) -> bool {
        match self {
            VaultError::Read { detail, .. }
            | VaultError::Write { detail, .. }
            | VaultError::Request { detail, .. }
            | VaultError::Login { detail, .. } => detail.starts_with("timeout"),
            _ => false,
        }
    }

    /// Whether retrying the same call later may succeed (network trouble, timeouts,
    /// 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Read { detail, .. }
            | VaultError::Write { detail, .. }
            | VaultError::Request { detail, .. }
            | VaultError::Login { detail, .. } => detail_is_transient(detail),
            _ => false,
        }
    }
}

fn detail_is_transient(detail: &str) -> bool {
    detail.starts_with("transport")
        || detail.starts_with("timeout")
        || detail.starts_with("HTTP 5")
        || detail.starts_with("HTTP 429")
}

/// A connected Vault client. Cheap to clone; clones share the token, so a renewal or
/// a new login by [`Vault::keep_alive`] reaches all of them.
#[derive(Clone)]
pub struct Vault {
    addr: String,
    http: reqwest::Client,
    namespace: Option<String>,
    shared: Arc<Shared>,
}

/// What every clone of a [`Vault`] shares: how to log in and the token in use.
struct Shared {
    /// vaultrs settings with an empty token, to build a client for each new token.
    settings: VaultClientSettings,
    auth: VaultAuth,
    /// The current token and the client carrying it. Never held across an `.await`.
    session: RwLock<Session>,
}

/// The token in use.
struct Session {
    client: Arc<VaultClient>,
    token: SecretString,
    /// What Vault said about the token when it was issued or last renewed; `None`
    /// for a given token until [`Vault::keep_alive`] looks it up.
    lease: Option<TokenLease>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("addr", &self.addr)
            .field("auth", &self.shared.auth.method())
            .finish()
    }
}

impl Vault {
    /// Builds a client from `config` with its `token` (whatever `auth` says). Does not
    /// contact the server. See [`Vault::login`] for the login methods.
    pub fn connect(config: &VaultConfig) -> Result<Self, VaultError> {
        let token = config.token.clone().ok_or(VaultError::NoToken)?;
        Self::build(config, token)
    }

    /// Logs in as `config.auth` says: with [`VaultAuth::Token`] this is
    /// [`Vault::connect`]; Kubernetes and AppRole post their credentials to
    /// `auth/<mount>/login` (reading the credential files now) and use the token
    /// Vault returns. The token is never logged.
    pub async fn login(config: &VaultConfig) -> Result<Self, VaultError> {
        if config.auth == VaultAuth::Token {
            return Self::connect(config);
        }
        // No token yet: nothing is sent with the empty one, the login is anonymous.
        let vault = Self::build(config, SecretString::from(String::new()))?;
        let lease = vault.log_in().await?;
        info!(
            method = vault.shared.auth.method(),
            mount = vault.shared.auth.mount().unwrap_or_default(),
            ttl_secs = lease.ttl.as_secs(),
            renewable = lease.renewable,
            "Logged in to Vault."
        );
        Ok(vault)
    }

    fn build(config: &VaultConfig, token: SecretString) -> Result<Self, VaultError> {
        let url = url::Url::parse(&config.addr)
            .map_err(|e| VaultError::Config(format!("VAULT_ADDR {:?}: {e}", config.addr)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VaultError::Config(format!(
                "VAULT_ADDR {:?}: expected an http or https URL",
                config.addr
            )));
        }
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(url.as_str())
            .token("")
            .timeout(Some(config.timeout));
        if let Some(ns) = &config.namespace {
            builder.set_namespace(ns.clone());
        }
        if let Some(ca) = &config.ca_cert {
            builder.ca_certs(vec![ca.display().to_string()]);
        }
        let settings = builder
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        let mut http = reqwest::Client::builder()
            .user_agent(crate::outside::USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| VaultError::Config(format!("VAULT_CACERT {}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| VaultError::Config(format!("VAULT_CACERT {}: {e}", ca.display())))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| VaultError::Config(format!("HTTP client: {e}")))?;
        let client = client_with_token(&settings, &http, &token)?;
        Ok(Vault {
            addr: config.addr.trim_end_matches('/').to_owned(),
            http,
            namespace: config.namespace.clone(),
            shared: Arc::new(Shared {
                settings,
                auth: config.auth.clone(),
                session: RwLock::new(Session {
                    client: Arc::new(client),
                    token,
                    lease: None,
                }),
            }),
        })
    }

    fn session(&self) -> RwLockReadGuard<'_, Session> {
        // A panic while the lock was held cannot leave a half-written session (it is
        // replaced whole), so a poisoned lock is still good to read.
        self.shared
            .session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The token in use now (a clone; the lock is released on return).
    fn current_token(&self) -> SecretString {
        self.session().token.clone()
    }

    /// Makes `token` the one every clone uses from now on.
    fn install(&self, token: SecretString, lease: TokenLease) -> Result<(), VaultError> {
        let client = Arc::new(client_with_token(
            &self.shared.settings,
            &self.http,
            &token,
        )?);
        let mut session = self
            .shared
            .session
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *session = Session {
            client,
            token,
            lease: Some(lease),
        };
        Ok(())
    }

    fn set_lease(&self, lease: TokenLease) {
        let mut session = self
            .shared
            .session
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        session.lease = Some(lease);
    }

    /// The configured address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How this client logs in.
    pub fn auth(&self) -> &VaultAuth {
        &self.shared.auth
    }

    /// The namespace rotor's own requests use.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The underlying vaultrs client, for engines other than KV; it carries the token
    /// in use now. Call this for each request (`vaultrs::…(&*vault.client(), …)`)
    /// rather than keeping the client: a renewal or a new login replaces it.
    pub fn client(&self) -> Arc<VaultClient> {
        Arc::clone(&self.session().client)
    }
}

/// A vaultrs client for `settings` carrying `token` that sends through `http` (rotor's
/// own client: its timeouts, CA and User-Agent) instead of the one vaultrs builds.
fn client_with_token(
    settings: &VaultClientSettings,
    http: &reqwest::Client,
    token: &SecretString,
) -> Result<VaultClient, VaultError> {
    let mut settings = settings.clone();
    settings.token = token.expose_secret().to_owned();
    let mut client = VaultClient::new(settings).map_err(VaultError::Client)?;
    client.http.http = http.clone();
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_response_debug_shows_no_body() {
        let r = RawResponse {
            status: 200,
            body: bytes::Bytes::from_static(br#"{"auth":{"client_token":"s.canary-token"}}"#),
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("canary"), "{dbg}");
        assert!(dbg.contains("200"), "{dbg}");
    }

    #[test]
    fn debug_output_names_no_secret() {
        let config = VaultConfig {
            token: Some(SecretString::from("s.canary-token".to_owned())),
            ..VaultConfig::from_env()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("canary"), "{text}");
        let vault = Vault::connect(&config).unwrap();
        let text = format!("{vault:?}");
        assert!(!text.contains("canary"), "{text}");
    }
}
