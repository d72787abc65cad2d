//! The Vault client: configuration the Vault way (`VAULT_ADDR`, `VAULT_TOKEN`,
//! `VAULT_NAMESPACE`, `VAULT_CACERT`, flags override), KV v2 reads and check-and-set
//! writes, and resolution of `…From` references.
//!
//! vaultrs keeps the token in a plain `String` inside a `Debug`-deriving settings
//! struct, so the client is wrapped here and never formatted.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::policy::Reference;
use crate::secret::SecretMap;

/// How to reach Vault. Built from the environment, then overridden by flags.
#[derive(Clone)]
pub struct VaultConfig {
    /// Server address, e.g. `https://vault.example:8200`.
    pub addr: String,
    /// Token used for every request.
    pub token: Option<SecretString>,
    /// Enterprise/OpenBao namespace sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM bundle of CA certificates to trust for an `https` address.
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("namespace", &self.namespace)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl VaultConfig {
    /// Reads `VAULT_ADDR` (default `http://127.0.0.1:8200`), `VAULT_TOKEN` (else
    /// `~/.vault-token`), `VAULT_NAMESPACE` and `VAULT_CACERT`.
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
            namespace: var("VAULT_NAMESPACE"),
            ca_cert: var("VAULT_CACERT").map(PathBuf::from),
            timeout: Duration::from_secs(30),
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
    #[error("no Vault token: set VAULT_TOKEN (or ~/.vault-token)")]
    NoToken,
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
        match self {
            VaultError::Config(_) => "vault_config",
            VaultError::NoToken => "vault_no_token",
            VaultError::Client(_) => "vault_client",
            VaultError::Read { .. } => "vault_read",
            VaultError::Write { .. } => "vault_write",
            VaultError::CasConflict { .. } => "vault_cas_conflict",
            VaultError::ReferenceMissing { .. } => "reference_missing",
            VaultError::Request { .. } => "vault_request",
        }
    }

    /// Whether retrying the same call later may succeed (network trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Read { detail, .. }
            | VaultError::Write { detail, .. }
            | VaultError::Request { detail, .. } => detail_is_transient(detail),
            _ => false,
        }
    }
}

fn detail_is_transient(detail: &str) -> bool {
    detail.starts_with("transport")
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

/// A connected Vault client. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    client: Arc<VaultClient>,
    addr: String,
    http: reqwest::Client,
    token: SecretString,
    namespace: Option<String>,
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
/// 403 means), and the JSON body when there is one.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body; may hold secrets (a login's token), so it is never logged. Its
    /// `Debug` is the derived one: do not format a response that carries a secret.
    pub body: bytes::Bytes,
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
        f.debug_struct("Vault").field("addr", &self.addr).finish()
    }
}

/// Renders a vaultrs error as text that contains no request body: the status code
/// and Vault's error strings, or the transport failure.
fn describe(err: &ClientError) -> String {
    match err {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError { source } => format!("transport: {source}"),
        other => other.to_string(),
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
    /// Builds a client from `config`. Does not contact the server.
    pub fn connect(config: &VaultConfig) -> Result<Self, VaultError> {
        let url = url::Url::parse(&config.addr)
            .map_err(|e| VaultError::Config(format!("VAULT_ADDR {:?}: {e}", config.addr)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VaultError::Config(format!(
                "VAULT_ADDR {:?}: expected an http or https URL",
                config.addr
            )));
        }
        let token = config.token.as_ref().ok_or(VaultError::NoToken)?;
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(url.as_str())
            .token(token.expose_secret())
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
        let client = VaultClient::new(settings).map_err(VaultError::Client)?;
        let mut http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10));
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
            client: Arc::new(client),
            addr: config.addr.trim_end_matches('/').to_owned(),
            http,
            token: token.clone(),
            namespace: config.namespace.clone(),
        })
    }

    /// The configured address.
    pub fn addr(&self) -> &str {
        &self.addr
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
            AuthAs::Rotor => req = req.header("X-Vault-Token", self.token.expose_secret()),
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
            detail: format!("transport: {}", e.without_url()),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| VaultError::Request {
            operation,
            detail: format!("transport: {}", e.without_url()),
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

    /// The underlying vaultrs client, for engines other than KV.
    pub fn client(&self) -> &VaultClient {
        &self.client
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
        match vaultrs::api::exec_with_result(self.client.as_ref(), endpoint).await {
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
                    self.client.as_ref(),
                    mount,
                    path,
                    data,
                    SetSecretRequestOptions { cas: cas32 },
                )
                .await
            }
            None => vaultrs::kv2::set(self.client.as_ref(), mount, path, data).await,
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
        match vaultrs::kv2::delete_metadata(self.client.as_ref(), mount, path).await {
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
