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

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::policy::Reference;
use crate::secret::SecretMap;

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

/// Environment variable choosing the login method (`token`, `kubernetes`, `approle`).
pub const ENV_AUTH_METHOD: &str = "ROTOR_VAULT_AUTH_METHOD";
/// Environment variable naming the Vault role of the Kubernetes auth method.
pub const ENV_ROLE: &str = "ROTOR_VAULT_ROLE";
/// Environment variable naming the mount path of the auth method.
pub const ENV_AUTH_MOUNT: &str = "ROTOR_VAULT_AUTH_MOUNT";
/// Environment variable naming the file holding the Kubernetes ServiceAccount token.
pub const ENV_JWT_FILE: &str = "ROTOR_VAULT_JWT_FILE";
/// Environment variable naming the file holding the AppRole role id.
pub const ENV_ROLE_ID_FILE: &str = "ROTOR_VAULT_ROLE_ID_FILE";
/// Environment variable naming the file holding the AppRole secret id.
pub const ENV_SECRET_ID_FILE: &str = "ROTOR_VAULT_SECRET_ID_FILE";
/// Where a pod's ServiceAccount token is mounted.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How rotor obtains its Vault token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token given directly: `VAULT_TOKEN`, `~/.vault-token` or `--vault-token-file`.
    /// It is renewed while the agent runs when it is renewable.
    #[default]
    Token,
    /// Log in with the pod's ServiceAccount token (`POST auth/<mount>/login {role, jwt}`).
    Kubernetes {
        /// The Vault role of the auth method.
        role: String,
        /// Mount path of the auth method (default `kubernetes`).
        mount: String,
        /// File holding the ServiceAccount JWT, read at each login (the kubelet
        /// refreshes it).
        jwt_file: PathBuf,
    },
    /// Log in with a role id and a secret id (`POST auth/<mount>/login {role_id,
    /// secret_id}`); both files are read again at each login.
    AppRole {
        /// Mount path of the auth method (default `approle`).
        mount: String,
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id.
        secret_id_file: PathBuf,
    },
}

impl VaultAuth {
    /// The method's name as `ROTOR_VAULT_AUTH_METHOD` spells it.
    pub fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token => "token",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::AppRole { .. } => "approle",
        }
    }

    /// The auth mount of a login method (`None` for a given token).
    pub fn mount(&self) -> Option<&str> {
        match self {
            VaultAuth::Token => None,
            VaultAuth::Kubernetes { mount, .. } | VaultAuth::AppRole { mount, .. } => Some(mount),
        }
    }
}

/// The login settings as given (environment, then flags), before they are checked
/// by [`VaultAuthSettings::build`]. Nothing here is secret: the credentials stay in
/// their files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultAuthSettings {
    /// `ROTOR_VAULT_AUTH_METHOD` / `--vault-auth-method` (default `token`).
    pub method: Option<String>,
    /// `ROTOR_VAULT_ROLE` / `--vault-role` (Kubernetes).
    pub role: Option<String>,
    /// `ROTOR_VAULT_AUTH_MOUNT` / `--vault-auth-mount`.
    pub mount: Option<String>,
    /// `ROTOR_VAULT_JWT_FILE` (Kubernetes; default [`DEFAULT_JWT_FILE`]).
    pub jwt_file: Option<PathBuf>,
    /// `ROTOR_VAULT_ROLE_ID_FILE` (AppRole).
    pub role_id_file: Option<PathBuf>,
    /// `ROTOR_VAULT_SECRET_ID_FILE` (AppRole).
    pub secret_id_file: Option<PathBuf>,
}

impl VaultAuthSettings {
    /// Reads the `ROTOR_VAULT_*` login variables (empty values count as unset).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`VaultAuthSettings::from_env`], with another source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        VaultAuthSettings {
            method: var(ENV_AUTH_METHOD),
            role: var(ENV_ROLE),
            mount: var(ENV_AUTH_MOUNT),
            jwt_file: var(ENV_JWT_FILE).map(PathBuf::from),
            role_id_file: var(ENV_ROLE_ID_FILE).map(PathBuf::from),
            secret_id_file: var(ENV_SECRET_ID_FILE).map(PathBuf::from),
        }
    }

    /// Checks the settings: a known method and every piece it needs. The error names
    /// the variable (and flag) to set. Does not read the credential files (a login
    /// does, each time).
    pub fn build(&self) -> Result<VaultAuth, VaultError> {
        let method = self.method.as_deref().unwrap_or("token");
        let mount = |default: &str| -> Result<String, VaultError> {
            match self.mount.as_deref() {
                None => Ok(default.to_owned()),
                Some(m) => {
                    let m = m.trim_matches('/');
                    if m.is_empty() || m.contains(char::is_whitespace) {
                        return Err(VaultError::Config(format!(
                            "{ENV_AUTH_MOUNT} (--vault-auth-mount) {m:?} is not a mount path"
                        )));
                    }
                    // Accept `auth/approle` as well as `approle`.
                    Ok(m.strip_prefix("auth/").unwrap_or(m).to_owned())
                }
            }
        };
        match method {
            "token" => Ok(VaultAuth::Token),
            "kubernetes" => {
                let role = self.role.clone().ok_or_else(|| {
                    VaultError::Config(format!(
                        "Kubernetes auth needs the Vault role to log in as: set {ENV_ROLE} (or --vault-role)"
                    ))
                })?;
                Ok(VaultAuth::Kubernetes {
                    role,
                    mount: mount("kubernetes")?,
                    jwt_file: self
                        .jwt_file
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_JWT_FILE)),
                })
            }
            "approle" => {
                let needs = |file: &Option<PathBuf>, var: &str, what: &str| {
                    file.clone().ok_or_else(|| {
                        VaultError::Config(format!(
                            "AppRole auth needs the {what}: set {var} to the file holding it"
                        ))
                    })
                };
                Ok(VaultAuth::AppRole {
                    mount: mount("approle")?,
                    role_id_file: needs(&self.role_id_file, ENV_ROLE_ID_FILE, "role id")?,
                    secret_id_file: needs(&self.secret_id_file, ENV_SECRET_ID_FILE, "secret id")?,
                })
            }
            other => Err(VaultError::Config(format!(
                "{ENV_AUTH_METHOD} (--vault-auth-method) is {other:?}: expected token, kubernetes or approle"
            ))),
        }
    }
}

/// A failed Vault operation. Messages carry paths and Vault's own error text, never
/// secret values.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The configuration cannot produce a client.
    #[error("invalid Vault configuration: {0}")]
    Config(String),
    /// No token was configured.
    #[error(
        "no Vault token: set VAULT_TOKEN (or ~/.vault-token, --vault-token-file), or log in with ROTOR_VAULT_AUTH_METHOD=kubernetes|approle"
    )]
    NoToken,
    /// A file holding a login credential (JWT, role id, secret id) cannot be used.
    #[error("cannot read the {what} from {} ({variable}): {detail}", .path.display())]
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
    Client(#[source] ClientError),
    /// A KV read failed.
    #[error("reading {mount}/{path} from Vault failed: {detail}")]
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
    ReferenceMissing {
        /// The reference, described without any value.
        reference: String,
        /// What was missing.
        detail: String,
    },
    /// Any other failed request.
    #[error("Vault request {operation} failed: {detail}")]
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
        match self {
            VaultError::Config(_) => "vault_config",
            VaultError::NoToken => "vault_no_token",
            VaultError::CredentialFile { .. } => "vault_credential_file",
            VaultError::Login { .. } => "vault_login",
            VaultError::Client(_) => "vault_client",
            VaultError::Read { .. } => "vault_read",
            VaultError::Write { .. } => "vault_write",
            VaultError::CasConflict { .. } => "vault_cas_conflict",
            VaultError::ReferenceMissing { .. } => "reference_missing",
            VaultError::Request { .. } => "vault_request",
        }
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

/// One version of a KV v2 secret.
#[derive(Debug, Clone)]
pub struct KvEntry<T> {
    /// The secret's data.
    pub data: T,
    /// Its version number.
    pub version: u64,
    /// The path's custom metadata.
    pub custom_metadata: HashMap<String, String>,
    /// When this version was written (RFC 3339, as Vault reports it).
    pub created_time: String,
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

/// A token's lease as Vault reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TokenLease {
    /// When the lease was granted (taken before the request was sent, so early).
    granted: Instant,
    /// Time to live from `granted`; zero with a zero `full_ttl`: never expires.
    ttl: Duration,
    /// Whether `auth/token/renew-self` may extend it.
    renewable: bool,
    /// The largest TTL seen for this token: what a renewal grants while the token is
    /// far from its maximum TTL.
    full_ttl: Duration,
}

impl TokenLease {
    /// The last renewal gave less than a full TTL: the token is near its maximum TTL.
    fn capped(&self) -> bool {
        self.ttl < self.full_ttl
    }
}

/// Which token a [`Vault::request`] carries.
#[derive(Clone, Copy)]
pub enum AuthAs<'a> {
    /// rotor's own token (the configured one).
    Rotor,
    /// No token: logins (`auth/*/login`), `sys/health`, CRLs.
    Anonymous,
    /// Another token, e.g. a rotated credential being probed.
    Token(&'a SecretString),
}

/// The answer to a [`Vault::request`]: any HTTP status (callers decide what a 400 or
/// 403 means), and the JSON body when there is one. `Debug` shows the status and the
/// body's size only: a body may hold a token or a secret.
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body; may hold secrets (a login's token), so it is never logged.
    pub body: bytes::Bytes,
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl RawResponse {
    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Vault's `errors` strings joined, for messages (never contains request data).
    pub fn errors(&self) -> String {
        match self.json().get("errors").and_then(Value::as_array) {
            Some(errs) => errs
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            None => String::new(),
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("addr", &self.addr)
            .field("auth", &self.shared.auth.method())
            .finish()
    }
}

/// Renders a vaultrs error as text that contains no request body: the status code
/// and Vault's error strings, or the transport failure.
fn describe(err: &ClientError) -> String {
    match err {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError { source } => transport_detail(source),
        other => other.to_string(),
    }
}

/// `timeout: …` (counted) when `source` ran into the call timeout, else `transport: …`.
fn transport_detail(source: &(dyn std::error::Error + 'static)) -> String {
    if crate::outside::note(crate::outside::System::Vault, source) {
        format!(
            "timeout: Vault did not answer within {} ms: {}",
            crate::outside::call_timeout().as_millis(),
            crate::error_chain(source)
        )
    } else {
        format!("transport: {source}")
    }
}

fn is_not_found(err: &ClientError) -> bool {
    matches!(err, ClientError::APIError { code: 404, .. })
}

fn is_cas_mismatch(err: &ClientError) -> bool {
    matches!(err, ClientError::APIError { code: 400, errors }
        if errors.iter().any(|e| e.contains("check-and-set")))
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
        let client = client_with_token(&settings, &token)?;
        let mut http = reqwest::Client::builder()
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
        let client = Arc::new(client_with_token(&self.shared.settings, &token)?);
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

    /// One HTTP request to `/v1/<path>` with the configured namespace and CA, for the
    /// calls vaultrs lacks or that must run with another (or no) token. Any HTTP status
    /// is returned; only transport failures are errors.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        self.request_in(self.namespace.as_deref(), method, path, body, auth)
            .await
    }

    /// [`Vault::request`] in another namespace (`None`: the root namespace).
    pub async fn request_in(
        &self,
        namespace: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.http.request(method.clone(), &url);
        match auth {
            AuthAs::Rotor => {
                req = req.header("X-Vault-Token", self.current_token().expose_secret())
            }
            AuthAs::Token(t) => req = req.header("X-Vault-Token", t.expose_secret()),
            AuthAs::Anonymous => {}
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let operation = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| VaultError::Request {
            operation: operation.clone(),
            detail: transport_detail(&e.without_url()),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| VaultError::Request {
            operation,
            detail: transport_detail(&e.without_url()),
        })?;
        Ok(RawResponse { status, body })
    }

    /// Like [`Vault::request`], but a non-2xx status is an error carrying Vault's
    /// `errors` text (`HTTP <code>: …`), so 5xx/429 count as transient.
    pub async fn request_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        let resp = self.request(method.clone(), path, body, auth).await?;
        if resp.is_success() {
            return Ok(resp);
        }
        let errors = resp.errors();
        Err(VaultError::Request {
            operation: format!("{method} {path}"),
            detail: if errors.is_empty() {
                format!("HTTP {}", resp.status)
            } else {
                format!("HTTP {}: {errors}", resp.status)
            },
        })
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

    /// Reads the latest version of a KV v2 secret as raw JSON; `None` when the path
    /// has no live version (never written, deleted or destroyed).
    pub async fn kv_read_value(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<KvEntry<Map<String, Value>>>, VaultError> {
        self.kv_read_at(mount, path, None).await
    }

    async fn kv_read_at(
        &self,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<KvEntry<Map<String, Value>>>, VaultError> {
        let endpoint = ReadSecretRequest::builder()
            .mount(mount)
            .path(path)
            .version(version)
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        match vaultrs::api::exec_with_result(self.client().as_ref(), endpoint).await {
            Ok(res) => {
                let data = match res.data {
                    Value::Object(map) => map,
                    // A deleted version reads back with `data: null`.
                    Value::Null => return Ok(None),
                    _ => {
                        return Err(VaultError::Read {
                            mount: mount.into(),
                            path: path.into(),
                            detail: "the secret's data is not a JSON object".into(),
                        });
                    }
                };
                Ok(Some(KvEntry {
                    data,
                    version: res.metadata.version,
                    custom_metadata: res.metadata.custom_metadata.unwrap_or_default(),
                    created_time: res.metadata.created_time,
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(VaultError::Read {
                mount: mount.into(),
                path: path.into(),
                detail: describe(&e),
            }),
        }
    }

    /// Reads the latest version of a KV v2 secret as secret values.
    pub async fn kv_read(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<KvEntry<SecretMap>>, VaultError> {
        Ok(self.kv_read_value(mount, path).await?.map(|e| KvEntry {
            data: SecretMap::from_json_object(&e.data),
            version: e.version,
            custom_metadata: e.custom_metadata,
            created_time: e.created_time,
        }))
    }

    /// Reads one version of a KV v2 secret as secret values.
    pub async fn kv_read_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
    ) -> Result<Option<KvEntry<SecretMap>>, VaultError> {
        Ok(self
            .kv_read_at(mount, path, Some(version))
            .await?
            .map(|e| KvEntry {
                data: SecretMap::from_json_object(&e.data),
                version: e.version,
                custom_metadata: e.custom_metadata,
                created_time: e.created_time,
            }))
    }

    /// Writes a KV v2 secret. With `cas = Some(v)` the write succeeds only if the
    /// current version is `v` (`0`: only if the path does not exist yet); a mismatch
    /// is [`VaultError::CasConflict`]. Returns the new version.
    pub async fn kv_write_value(
        &self,
        mount: &str,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let result = match cas {
            Some(v) => {
                let cas32 = u32::try_from(v).map_err(|_| VaultError::Write {
                    mount: mount.into(),
                    path: path.into(),
                    detail: format!("version {v} does not fit the check-and-set parameter"),
                })?;
                vaultrs::kv2::set_with_options(
                    self.client().as_ref(),
                    mount,
                    path,
                    data,
                    SetSecretRequestOptions { cas: cas32 },
                )
                .await
            }
            None => vaultrs::kv2::set(self.client().as_ref(), mount, path, data).await,
        };
        match result {
            Ok(meta) => Ok(meta.version),
            Err(e) if is_cas_mismatch(&e) => Err(VaultError::CasConflict {
                mount: mount.into(),
                path: path.into(),
                expected: cas.unwrap_or_default(),
            }),
            Err(e) => Err(VaultError::Write {
                mount: mount.into(),
                path: path.into(),
                detail: describe(&e),
            }),
        }
    }

    /// Writes secret values to KV v2 (see [`Vault::kv_write_value`]).
    pub async fn kv_write(
        &self,
        mount: &str,
        path: &str,
        data: &SecretMap,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let json = data.to_json_object();
        self.kv_write_value(mount, path, &json, cas).await
    }

    /// Permanently deletes a KV v2 path with all its versions (used for rotor's own
    /// staging entries once a rotation has ended). Missing paths are fine.
    pub async fn kv_destroy_all(&self, mount: &str, path: &str) -> Result<(), VaultError> {
        match vaultrs::kv2::delete_metadata(self.client().as_ref(), mount, path).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(VaultError::Request {
                operation: format!("delete metadata {mount}/{path}"),
                detail: describe(&e),
            }),
        }
    }

    /// Resolves a reference to the secret values it names: a Vault reference without
    /// `key` yields all keys of the secret (policies expect `username` and
    /// `password`); with `key`, or for `env`/`file`, yields `{"value": …}`.
    pub async fn resolve(&self, reference: &Reference) -> Result<SecretMap, VaultError> {
        match reference {
            Reference::Vault { mount, path, key } => {
                let entry = self.kv_read(mount, path).await?.ok_or_else(|| {
                    VaultError::ReferenceMissing {
                        reference: describe_reference(reference),
                        detail: "no such secret".into(),
                    }
                })?;
                match key {
                    None => Ok(entry.data),
                    Some(k) => {
                        let v = entry.data.get(k).cloned().ok_or_else(|| {
                            VaultError::ReferenceMissing {
                                reference: describe_reference(reference),
                                detail: format!("the secret has no key {k:?}"),
                            }
                        })?;
                        let mut m = SecretMap::new();
                        m.insert("value", v);
                        Ok(m)
                    }
                }
            }
            Reference::Env(_) | Reference::File(_) => resolve_local(reference),
        }
    }
}

/// A vaultrs client for `settings` carrying `token`.
fn client_with_token(
    settings: &VaultClientSettings,
    token: &SecretString,
) -> Result<VaultClient, VaultError> {
    let mut settings = settings.clone();
    settings.token = token.expose_secret().to_owned();
    VaultClient::new(settings).map_err(VaultError::Client)
}

/// Reads one login credential from its file, trimmed. An empty file is an error.
fn read_credential(
    what: &'static str,
    variable: &'static str,
    path: &Path,
) -> Result<SecretString, VaultError> {
    let failed = |detail: String| VaultError::CredentialFile {
        what,
        variable,
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(failed("the file is empty".into()));
    }
    Ok(SecretString::from(value.to_owned()))
}

/// `auth.lease_duration` and `auth.renewable` of a login or renewal answer.
fn auth_lease(body: &Value, granted: Instant, full_ttl: Option<Duration>) -> TokenLease {
    let auth = &body["auth"];
    let ttl = Duration::from_secs(auth["lease_duration"].as_u64().unwrap_or(0));
    TokenLease {
        granted,
        ttl,
        renewable: auth["renewable"].as_bool().unwrap_or(false),
        // The largest TTL seen is the full one (a looked-up token shows what is left).
        full_ttl: full_ttl.map_or(ttl, |full| full.max(ttl)),
    }
}

/// What the token keeper does next, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `auth/token/renew-self`.
    Renew,
    /// Log in again (the token cannot be renewed, or is near its maximum TTL).
    LogIn,
    /// Nothing more can be done for this token.
    Stop(&'static str),
}

/// The keeper's next step for `lease`: act at two thirds of the lease, renewing while
/// a renewal still gives a full TTL, then (login methods) logging in again.
fn next_step(lease: &TokenLease, can_log_in: bool) -> (Instant, Step) {
    if lease.ttl.is_zero() && lease.full_ttl.is_zero() {
        return (lease.granted, Step::Stop("the token does not expire"));
    }
    // A TTL from Vault may be absurd (u64 seconds): no arithmetic that can overflow.
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    let at = lease
        .granted
        .checked_add((lease.ttl / 3).saturating_mul(2).min(CENTURY))
        .unwrap_or(lease.granted);
    let step = match (can_log_in, lease.renewable && !lease.capped()) {
        (_, true) => Step::Renew,
        (true, false) => Step::LogIn,
        (false, false) if !lease.renewable => Step::Stop("the token is not renewable"),
        (false, false) => Step::Stop("the token reaches its maximum TTL"),
    };
    (at, step)
}

/// Backoff between failed attempts: 1 s, doubling, at most 60 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

impl Vault {
    /// One login with the configured method; installs the new token.
    async fn log_in(&self) -> Result<TokenLease, VaultError> {
        let (mount, body) = match &self.shared.auth {
            VaultAuth::Token => {
                return Err(VaultError::Config(
                    "a given token cannot log in again: set ROTOR_VAULT_AUTH_METHOD to kubernetes or approle".into(),
                ));
            }
            VaultAuth::Kubernetes {
                role,
                mount,
                jwt_file,
            } => {
                let jwt =
                    read_credential("Kubernetes service account token", ENV_JWT_FILE, jwt_file)?;
                (mount, json!({"role": role, "jwt": jwt.expose_secret()}))
            }
            VaultAuth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_credential("AppRole role id", ENV_ROLE_ID_FILE, role_id_file)?;
                let secret_id =
                    read_credential("AppRole secret id", ENV_SECRET_ID_FILE, secret_id_file)?;
                (
                    mount,
                    json!({"role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret()}),
                )
            }
        };
        let method = self.shared.auth.method();
        let failed = |detail: String| VaultError::Login {
            method,
            mount: mount.clone(),
            detail,
        };
        let granted = Instant::now();
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                Some(&body),
                AuthAs::Anonymous,
            )
            .await
            .map_err(|e| match e {
                VaultError::Request { detail, .. } => failed(detail),
                other => other,
            })?;
        drop(body);
        if !resp.is_success() {
            let errors = resp.errors();
            return Err(failed(if errors.is_empty() {
                format!("HTTP {}", resp.status)
            } else {
                format!("HTTP {}: {errors}", resp.status)
            }));
        }
        let json = resp.json();
        let token = json["auth"]["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| failed("the answer carries no auth.client_token".into()))?;
        let lease = auth_lease(&json, granted, None);
        self.install(token, lease)?;
        Ok(lease)
    }

    /// `auth/token/renew-self` for the token in use.
    async fn renew(&self, full_ttl: Duration) -> Result<TokenLease, VaultError> {
        let granted = Instant::now();
        let resp = self
            .request_ok(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                AuthAs::Rotor,
            )
            .await?;
        let lease = auth_lease(&resp.json(), granted, Some(full_ttl));
        self.set_lease(lease);
        Ok(lease)
    }

    /// `auth/token/lookup-self`: the lease of a given token.
    async fn look_up(&self) -> Result<TokenLease, VaultError> {
        let granted = Instant::now();
        let resp = self
            .request_ok(
                reqwest::Method::GET,
                "auth/token/lookup-self",
                None,
                AuthAs::Rotor,
            )
            .await?;
        let data = &resp.json()["data"];
        let secs = |k: &str| Duration::from_secs(data[k].as_u64().unwrap_or(0));
        let lease = TokenLease {
            granted,
            ttl: secs("ttl"),
            renewable: data["renewable"].as_bool().unwrap_or(false),
            // What is left, not `creation_ttl`: the first renewal shows the full TTL.
            full_ttl: secs("ttl"),
        };
        self.set_lease(lease);
        Ok(lease)
    }

    /// Keeps the token valid until `shutdown` resolves, in a task of its own: renews
    /// it (`auth/token/renew-self`) at two thirds of each lease; with Kubernetes or
    /// AppRole auth, logs in again when a renewal fails, when the token is not
    /// renewable, or when renewals stop giving a full TTL (its maximum TTL is near).
    /// A given token is renewed while it is renewable; otherwise there is nothing to
    /// do. Each renewal and login is logged (never the token); failures are logged as
    /// errors and retried with backoff (1 s doubling to 60 s).
    pub fn keep_alive<F>(&self, shutdown: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let vault = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {}
                () = vault.keep_alive_loop() => {}
            }
        })
    }

    async fn keep_alive_loop(&self) {
        let method = self.shared.auth.method();
        let mount = self.shared.auth.mount().unwrap_or_default();
        let can_log_in = self.shared.auth != VaultAuth::Token;
        let mut attempt = 0u32;
        let lease = loop {
            let known = self.session().lease;
            let result = match known {
                Some(lease) => Ok(lease),
                None => self.look_up().await,
            };
            match result {
                Ok(lease) => break lease,
                Err(e) => {
                    let wait = backoff(attempt);
                    error!(error = %e, retry_in_secs = wait.as_secs(), "Cannot look up the Vault token's lease; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        };
        let mut lease = lease;
        attempt = 0;
        // After a failed renewal of a given token: when to try again.
        let mut retry_at: Option<Instant> = None;
        loop {
            let (mut at, step) = next_step(&lease, can_log_in);
            if let Some(retry) = retry_at.take() {
                at = retry;
            }
            match step {
                Step::Stop(why) => {
                    if lease.ttl.is_zero() && lease.full_ttl.is_zero() {
                        debug!(method, "The Vault token does not expire; nothing to renew.");
                    } else {
                        warn!(
                            method,
                            reason = why,
                            expires_in_secs =
                                lease.ttl.saturating_sub(lease.granted.elapsed()).as_secs(),
                            "The Vault token cannot be kept alive; replace it before it expires."
                        );
                    }
                    return;
                }
                Step::Renew => {
                    tokio::time::sleep_until(at).await;
                    match self.renew(lease.full_ttl).await {
                        Ok(renewed) => {
                            info!(
                                method,
                                mount,
                                ttl_secs = renewed.ttl.as_secs(),
                                "Renewed the Vault token."
                            );
                            lease = renewed;
                        }
                        Err(e) if can_log_in => {
                            warn!(method, mount, error = %e, "Renewing the Vault token failed; logging in again.");
                            lease = self.log_in_until_done("renewal_failed").await;
                        }
                        Err(e) => {
                            // A given token cannot be replaced: renew again later.
                            let wait = backoff(attempt);
                            attempt += 1;
                            error!(method, error = %e, retry_in_secs = wait.as_secs(), "Renewing the Vault token failed; retrying.");
                            retry_at = Some(Instant::now() + wait);
                            continue;
                        }
                    }
                    attempt = 0;
                }
                Step::LogIn => {
                    tokio::time::sleep_until(at).await;
                    let reason = if lease.renewable {
                        "max_ttl"
                    } else {
                        "not_renewable"
                    };
                    lease = self.log_in_until_done(reason).await;
                }
            }
        }
    }

    /// Logs in again, retrying with backoff until it works.
    async fn log_in_until_done(&self, reason: &'static str) -> TokenLease {
        let method = self.shared.auth.method();
        let mount = self.shared.auth.mount().unwrap_or_default();
        let mut attempt = 0u32;
        loop {
            match self.log_in().await {
                Ok(lease) => {
                    info!(
                        method,
                        mount,
                        reason,
                        ttl_secs = lease.ttl.as_secs(),
                        renewable = lease.renewable,
                        "Logged in to Vault again."
                    );
                    return lease;
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    attempt += 1;
                    error!(method, mount, error = %e, retry_in_secs = wait.as_secs(), "Logging in to Vault failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Resolves an `env` or `file` reference without Vault. A Vault reference is an error.
pub fn resolve_local(reference: &Reference) -> Result<SecretMap, VaultError> {
    let value = match reference {
        Reference::Env(name) => std::env::var(name).map_err(|_| VaultError::ReferenceMissing {
            reference: describe_reference(reference),
            detail: "the environment variable is not set".into(),
        })?,
        Reference::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| VaultError::ReferenceMissing {
                reference: describe_reference(reference),
                detail: e.to_string(),
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        Reference::Vault { .. } => {
            return Err(VaultError::Config(
                "a Vault reference needs a Vault client".into(),
            ));
        }
    };
    let mut map = SecretMap::new();
    // A JSON object (e.g. {"username": …, "password": …}) yields its keys.
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&value) {
        return Ok(SecretMap::from_json_object(&obj));
    }
    map.insert("value", SecretString::from(value));
    Ok(map)
}

/// A description of a reference that names where it points, never a value.
pub fn describe_reference(reference: &Reference) -> String {
    match reference {
        Reference::Vault { mount, path, key } => match key {
            Some(k) => format!("vault:{mount}/{path}#{k}"),
            None => format!("vault:{mount}/{path}"),
        },
        Reference::Env(name) => format!("env:{name}"),
        Reference::File(path) => format!("file:{}", path.display()),
    }
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

    fn settings(pairs: &[(&str, &str)]) -> VaultAuthSettings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        VaultAuthSettings::from_lookup(|k| map.get(k).cloned())
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        settings(pairs)
            .build()
            .expect_err("invalid settings")
            .to_string()
    }

    #[test]
    fn no_method_means_token() {
        assert_eq!(settings(&[]).build().unwrap(), VaultAuth::Token);
        assert_eq!(
            settings(&[(ENV_AUTH_METHOD, " ")]).build().unwrap(),
            VaultAuth::Token
        );
    }

    #[test]
    fn kubernetes_defaults_and_overrides() {
        let auth = settings(&[(ENV_AUTH_METHOD, "kubernetes"), (ENV_ROLE, "rotor")])
            .build()
            .unwrap();
        assert_eq!(
            auth,
            VaultAuth::Kubernetes {
                role: "rotor".into(),
                mount: "kubernetes".into(),
                jwt_file: PathBuf::from(DEFAULT_JWT_FILE),
            }
        );
        let auth = settings(&[
            (ENV_AUTH_METHOD, "kubernetes"),
            (ENV_ROLE, "rotor"),
            (ENV_AUTH_MOUNT, "/auth/k8s-prod/"),
            (ENV_JWT_FILE, "/tmp/jwt"),
        ])
        .build()
        .unwrap();
        assert_eq!(auth.mount(), Some("k8s-prod"));
        assert!(
            matches!(auth, VaultAuth::Kubernetes { jwt_file, .. } if jwt_file == Path::new("/tmp/jwt"))
        );
    }

    #[test]
    fn missing_pieces_name_the_variable() {
        let e = config_error(&[(ENV_AUTH_METHOD, "kubernetes")]);
        assert!(
            e.contains("ROTOR_VAULT_ROLE") && e.contains("--vault-role"),
            "{e}"
        );
        let e = config_error(&[(ENV_AUTH_METHOD, "approle")]);
        assert!(e.contains("ROTOR_VAULT_ROLE_ID_FILE"), "{e}");
        let e = config_error(&[(ENV_AUTH_METHOD, "approle"), (ENV_ROLE_ID_FILE, "/r")]);
        assert!(e.contains("ROTOR_VAULT_SECRET_ID_FILE"), "{e}");
        let e = config_error(&[(ENV_AUTH_METHOD, "ldap")]);
        assert!(
            e.contains("ROTOR_VAULT_AUTH_METHOD") && e.contains("\"ldap\""),
            "{e}"
        );
        let e = config_error(&[(ENV_AUTH_METHOD, "approle"), (ENV_AUTH_MOUNT, "//")]);
        assert!(e.contains("ROTOR_VAULT_AUTH_MOUNT"), "{e}");
    }

    fn lease(ttl: u64, full: u64, renewable: bool) -> TokenLease {
        TokenLease {
            granted: Instant::now(),
            ttl: Duration::from_secs(ttl),
            renewable,
            full_ttl: Duration::from_secs(full),
        }
    }

    #[test]
    fn renews_at_two_thirds_then_logs_in_near_the_max_ttl() {
        let l = lease(3600, 3600, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::Renew);
        assert_eq!(at - l.granted, Duration::from_secs(2400));
        // A renewal capped by the maximum TTL: log in again before it runs out.
        let l = lease(600, 3600, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::LogIn);
        assert_eq!(at - l.granted, Duration::from_secs(400));
        assert_eq!(next_step(&lease(60, 60, false), true).1, Step::LogIn);
        // A renewal that gave nothing: log in at once.
        let l = lease(0, 60, true);
        assert_eq!(next_step(&l, true), (l.granted, Step::LogIn));
    }

    #[test]
    fn an_absurd_ttl_from_vault_cannot_overflow_the_keeper() {
        // `granted + ttl * 2 / 3` panicked for a TTL near u64::MAX seconds.
        let l = lease(u64::MAX, u64::MAX, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::Renew);
        assert!(at > l.granted, "renewal is still in the future");
    }

    #[test]
    fn a_given_token_is_renewed_while_it_can_be() {
        assert_eq!(next_step(&lease(90, 90, true), false).1, Step::Renew);
        assert!(matches!(
            next_step(&lease(90, 90, false), false).1,
            Step::Stop(_)
        ));
        assert!(matches!(
            next_step(&lease(30, 90, true), false).1,
            Step::Stop(_)
        ));
        // A root token never expires.
        assert!(matches!(
            next_step(&lease(0, 0, false), true).1,
            Step::Stop(_)
        ));
    }

    #[test]
    fn a_looked_up_lease_learns_the_full_ttl_from_its_first_renewal() {
        // lookup-self said 2 s were left of a 3 s token; the renewal grants 3 s.
        let answer = json!({"auth": {"lease_duration": 3, "renewable": true}});
        let renewed = auth_lease(&answer, Instant::now(), Some(Duration::from_secs(2)));
        assert_eq!(renewed.full_ttl, Duration::from_secs(3));
        assert!(!renewed.capped());
        // Near the maximum TTL the renewal grants less than that: capped.
        let answer = json!({"auth": {"lease_duration": 1, "renewable": true}});
        let capped = auth_lease(&answer, Instant::now(), Some(renewed.full_ttl));
        assert!(capped.capped());
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
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
