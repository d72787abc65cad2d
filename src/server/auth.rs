//! Who may call the API: the `--auth-config` file ([`AuthConfig`]), bearer-token and
//! Kubernetes TokenReview authentication ([`Authenticator`]), per-identity grants
//! ([`Identity`]) and rate limits (a token bucket per identity).
//!
//! ```yaml
//! identities:
//!   - name: team-payments
//!     tokenFrom: {file: /etc/rotor/tokens/payments}   # or {env: NAME} or {vault: {path, key, mount?}}
//!     policies: [payments-db]                         # names ("*" = all), and/or
//!     selector: {team: payments}                      # labels (all must match)
//!     compromise: false                               # may request compromise rotations
//!     groups: [payments-leads]                        # for `approvers: ["group:payments-leads"]`
//!     rateLimit: {requests: 10, per: 1m}              # default 30 per minute
//!   - name: ci
//!     kubernetes: {serviceAccount: ci/deployer}       # in-cluster TokenReview identity
//!     policies: ["*"]
//!     compromise: true
//!     breakGlass: true    # a compromise rotation skips the policy's approval (needs compromise: true)
//! ```
//!
//! Configured tokens are kept only as SHA-256 digests; a presented token is hashed and
//! compared in constant time against every digest, without stopping at a match.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::policy::{Reference, parse_duration};
use crate::secret::{SecretString, constant_time_eq};
use crate::vault::{Vault, VaultError, describe_reference, resolve_local};

/// Requests per window when an identity sets no `rateLimit`.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    requests: 30,
    per: Duration::from_secs(60),
};

/// The shortest static token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// KV mount of a `tokenFrom: {vault: …}` reference that names none.
pub const DEFAULT_VAULT_MOUNT: &str = "secret";

/// How long a successful TokenReview is reused for the same token.
const REVIEW_CACHE_TTL: Duration = Duration::from_secs(60);

/// Most TokenReview results kept at once.
const REVIEW_CACHE_MAX: usize = 1024;

/// A failure loading the auth configuration, resolving tokens or reviewing a token.
/// Messages name identities, files and references, never a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The configuration file cannot be read.
    #[error("reading auth config {path} failed")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid YAML of the expected shape.
    #[error("auth config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message with line and column (no source snippet).
        message: String,
    },
    /// The configuration parsed but has problems; all of them are listed.
    #[error("auth config {path} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, each naming the field (`identities[1].tokenFrom`).
        problems: Vec<String>,
    },
    /// An identity's token reference cannot be resolved.
    #[error("identity {identity}: resolving its token from {reference} failed")]
    Resolve {
        /// Identity name.
        identity: String,
        /// The reference, described without a value.
        reference: String,
        /// Vault's or the file system's error (boxed: it is large).
        #[source]
        source: Box<VaultError>,
    },
    /// A token reference does not yield exactly one value.
    #[error(
        "identity {identity}: {reference} does not hold a single token (a file or variable with a JSON object, or a Vault secret without `key`)"
    )]
    NotSingleValue {
        /// Identity name.
        identity: String,
        /// The reference, described without a value.
        reference: String,
    },
    /// A token is shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "identity {identity}: the token from {reference} is {len} characters long; use at least {MIN_TOKEN_LEN} random characters"
    )]
    TokenTooShort {
        /// Identity name.
        identity: String,
        /// The reference, described without a value.
        reference: String,
        /// Its length.
        len: usize,
    },
    /// Two identities resolve to the same token, so a caller could not be told apart.
    #[error("identities {first} and {second} have the same token; give each its own")]
    DuplicateToken {
        /// The first identity.
        first: String,
        /// The second identity.
        second: String,
    },
    /// A Vault reference was given but no Vault client.
    #[error("identity {identity}: {reference} needs Vault, but no Vault client is configured")]
    NoVault {
        /// Identity name.
        identity: String,
        /// The reference.
        reference: String,
    },
    /// The Kubernetes API server could not review a token.
    #[error("Kubernetes TokenReview failed: {0}")]
    TokenReview(String),
}

impl AuthError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Read { .. } => "auth_config_read",
            AuthError::Parse { .. } => "auth_config_parse",
            AuthError::Invalid { .. } => "auth_config_invalid",
            AuthError::Resolve { .. } => "auth_token_resolve",
            AuthError::NotSingleValue { .. } => "auth_token_not_single",
            AuthError::TokenTooShort { .. } => "auth_token_too_short",
            AuthError::DuplicateToken { .. } => "auth_token_duplicate",
            AuthError::NoVault { .. } => "auth_no_vault",
            AuthError::TokenReview(_) => "token_review",
        }
    }

    /// Whether trying again later may succeed (Vault or the Kubernetes API unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Resolve { source, .. } => source.is_transient(),
            AuthError::TokenReview(_) => true,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration

/// At most `requests` requests per `per`, refilled continuously (token bucket; a full
/// bucket allows a burst of `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size and requests per window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

/// A Kubernetes ServiceAccount, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceAccount {
    /// The account of a TokenReview username `system:serviceaccount:NS:NAME`.
    pub fn from_username(username: &str) -> Option<ServiceAccount> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        if namespace.is_empty() || name.is_empty() || name.contains(':') {
            return None;
        }
        Some(ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which policies an identity may see and rotate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Every policy (`policies: ["*"]`).
    pub all: bool,
    /// Policies by name.
    pub names: Vec<String>,
    /// A label selector; empty means "no selector". All labels must match.
    pub selector: BTreeMap<String, String>,
}

impl Grants {
    /// Whether a policy with this name and labels is granted.
    pub fn allows(&self, policy: &str, labels: &BTreeMap<String, String>) -> bool {
        self.all
            || self.names.iter().any(|n| n == policy)
            || (!self.selector.is_empty()
                && self
                    .selector
                    .iter()
                    .all(|(k, v)| labels.get(k).is_some_and(|l| l == v)))
    }
}

/// One identity as configured (tokens still as references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Name; the rotation's actor becomes `api:<name>`.
    pub name: String,
    /// Where its bearer token is.
    pub token_from: Option<Reference>,
    /// The ServiceAccount that authenticates as this identity through TokenReview.
    pub service_account: Option<ServiceAccount>,
    /// What it may see and rotate.
    pub grants: Grants,
    /// Whether it may request compromise rotations.
    pub compromise: bool,
    /// Groups it belongs to, for policies' `approvers: ["group:NAME"]`.
    pub groups: Vec<String>,
    /// `breakGlass`: its compromise rotations start at once, without the approval the
    /// policy requires (recorded as `break_glass`). Needs `compromise`.
    pub break_glass: bool,
    /// Its request budget.
    pub rate_limit: RateLimit,
}

/// The validated `--auth-config` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Identities, in file order.
    pub identities: Vec<IdentityConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    identities: Vec<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    name: String,
    // Read as an untyped value and checked by hand: serde's type errors quote the
    // value, and a token pasted here by mistake must not end up in an error message.
    #[serde(default)]
    token_from: Option<Value>,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
    #[serde(default)]
    compromise: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKubernetes {
    service_account: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    requests: u32,
    per: String,
}

const REFERENCE_EXPECTED: &str = "{file: PATH}, {env: NAME} or {vault: {path, key, mount?}}";

impl AuthConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<AuthConfig, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthConfig::parse(path, &text)
    }

    /// Parses and validates YAML `text` as if read from `path` (used in messages).
    pub fn parse(path: &Path, text: &str) -> Result<AuthConfig, AuthError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| AuthError::Parse {
            path: path.to_path_buf(),
            message: e.without_snippet().to_string(),
        })?;
        let mut problems = Vec::new();
        let mut identities = Vec::new();
        let mut seen_names: HashMap<String, usize> = HashMap::new();
        let mut seen_accounts: HashMap<ServiceAccount, String> = HashMap::new();
        for (i, raw) in raw.identities.into_iter().enumerate() {
            let at = format!("identities[{i}]");
            let name = raw.name.trim().to_owned();
            if !valid_name(&name) {
                problems.push(format!(
                    "{at}.name: expected a name of letters, digits, '-', '_', '.' or ':' (1-128 characters)"
                ));
            } else if name.starts_with("group:") {
                problems.push(format!(
                    "{at}.name: names starting with `group:` are reserved for approver groups"
                ));
            } else if let Some(first) = seen_names.insert(name.clone(), i) {
                problems.push(format!(
                    "{at}.name: {name} is already used by identities[{first}]"
                ));
            }
            let token_from = match &raw.token_from {
                None => None,
                Some(value) => match reference(value) {
                    Ok(r) => Some(r),
                    Err(message) => {
                        problems.push(format!("{at}.tokenFrom: {message}"));
                        None
                    }
                },
            };
            let service_account = match &raw.kubernetes {
                None => None,
                Some(k) => match k.service_account.split_once('/') {
                    Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                        let account = ServiceAccount {
                            namespace: ns.to_owned(),
                            name: sa.to_owned(),
                        };
                        if let Some(first) = seen_accounts.insert(account.clone(), name.clone()) {
                            problems.push(format!(
                                "{at}.kubernetes.serviceAccount: {account} is already identity {first}"
                            ));
                        }
                        Some(account)
                    }
                    _ => {
                        problems.push(format!(
                            "{at}.kubernetes.serviceAccount: expected NAMESPACE/NAME"
                        ));
                        None
                    }
                },
            };
            if raw.token_from.is_none() && raw.kubernetes.is_none() {
                problems.push(format!(
                    "{at}: identity {name} has no way to authenticate: set tokenFrom and/or kubernetes"
                ));
            }
            let mut grants = Grants {
                selector: raw.selector,
                ..Grants::default()
            };
            for (j, p) in raw.policies.into_iter().enumerate() {
                match p.trim() {
                    "*" => grants.all = true,
                    "" => problems.push(format!("{at}.policies[{j}]: empty policy name")),
                    p => grants.names.push(p.to_owned()),
                }
            }
            if !grants.all && grants.names.is_empty() && grants.selector.is_empty() {
                problems.push(format!(
                    "{at}: identity {name} is granted nothing: set policies and/or selector"
                ));
            }
            let rate_limit = match raw.rate_limit {
                None => DEFAULT_RATE_LIMIT,
                Some(r) => {
                    if r.requests == 0 {
                        problems.push(format!("{at}.rateLimit.requests: expected at least 1"));
                    }
                    match parse_duration(&r.per) {
                        Some(per) if !per.is_zero() => RateLimit {
                            requests: r.requests.max(1),
                            per,
                        },
                        _ => {
                            problems.push(format!(
                                "{at}.rateLimit.per: expected a duration like 10s, 1m or 1h"
                            ));
                            DEFAULT_RATE_LIMIT
                        }
                    }
                }
            };
            let mut groups: Vec<String> = Vec::new();
            for (j, g) in raw.groups.iter().enumerate() {
                let g = g.trim();
                if !valid_name(g) {
                    problems.push(format!(
                        "{at}.groups[{j}]: expected a group name of letters, digits, '-', '_', '.' or ':' (1-128 characters)"
                    ));
                } else if !groups.iter().any(|x| x == g) {
                    groups.push(g.to_owned());
                }
            }
            if raw.break_glass && !raw.compromise {
                problems.push(format!(
                    "{at}.breakGlass: found true without compromise: true, expected compromise: true as well (break-glass skips approval for compromise rotations only)"
                ));
            }
            identities.push(IdentityConfig {
                name,
                token_from,
                service_account,
                grants,
                compromise: raw.compromise,
                groups,
                break_glass: raw.break_glass && raw.compromise,
                rate_limit,
            });
        }
        if identities.is_empty() {
            problems.push("identities: no identity is configured".into());
        }
        if problems.is_empty() {
            Ok(AuthConfig { identities })
        } else {
            Err(AuthError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// What kind of YAML value this is, for messages that must not quote it.
fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Reads a `tokenFrom` value. Messages describe shapes and field names only.
fn reference(value: &Value) -> Result<Reference, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "found {}, expected {REFERENCE_EXPECTED} (never the token itself)",
            shape(value)
        ));
    };
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    if keys.len() != 1 || !matches!(keys[0], "file" | "env" | "vault") {
        return Err(format!(
            "found a mapping with {}, expected exactly one of {REFERENCE_EXPECTED}",
            if keys.is_empty() {
                "no keys".to_owned()
            } else {
                format!("keys [{}]", keys.join(", "))
            }
        ));
    }
    let text = |v: &Value, what: &str| -> Result<String, String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            other => Err(format!("found {}, expected {what}", shape(other))),
        }
    };
    match (keys[0], &map[keys[0]]) {
        ("file", v) => Ok(Reference::File(PathBuf::from(text(v, "a file path")?))),
        ("env", v) => {
            let name = text(v, "an environment variable name")?;
            let ok = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !ok {
                return Err(
                    "expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)".into(),
                );
            }
            Ok(Reference::Env(name))
        }
        (_, Value::Object(v)) => {
            if let Some(extra) = v
                .keys()
                .find(|k| !matches!(k.as_str(), "path" | "key" | "mount"))
            {
                return Err(format!(
                    "vault: unknown field {extra}, expected path, key, mount"
                ));
            }
            let path = v
                .get("path")
                .ok_or_else(|| "vault: missing path".to_owned())
                .and_then(|p| text(p, "a KV path").map_err(|e| format!("vault.path: {e}")))?;
            let key = v
                .get("key")
                .ok_or_else(|| "vault: missing key (the secret's key holding the token)".to_owned())
                .and_then(|k| text(k, "a key name").map_err(|e| format!("vault.key: {e}")))?;
            let mount = match v.get("mount") {
                None => DEFAULT_VAULT_MOUNT.to_owned(),
                Some(m) => text(m, "a mount name").map_err(|e| format!("vault.mount: {e}"))?,
            };
            Ok(Reference::Vault {
                mount: mount.trim_matches('/').to_owned(),
                path: path.trim_matches('/').to_owned(),
                key: Some(key),
            })
        }
        (_, other) => Err(format!(
            "vault: found {}, expected {{path, key, mount?}}",
            shape(other)
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Identities and authentication

/// An identity the API knows, with what it may do. Holds no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// What it may see and rotate.
    pub grants: Grants,
    /// Whether it may request compromise rotations.
    pub compromise: bool,
    /// Groups it belongs to (approver groups).
    pub groups: Vec<String>,
    /// Whether its compromise rotations skip approval (break-glass).
    pub break_glass: bool,
    /// Its request budget.
    pub rate_limit: RateLimit,
}

impl Identity {
    /// Whether it may see and rotate the policy `name` with `labels`.
    pub fn may_access(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.grants.allows(name, labels)
    }

    /// The rotation's actor for requests by this identity: `api:<name>`.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// How a caller was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A configured static bearer token.
    Token,
    /// A Kubernetes ServiceAccount token accepted by TokenReview.
    Kubernetes,
}

/// The result of checking a bearer token.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// The token belongs to this identity.
    Known {
        /// Who.
        identity: Arc<Identity>,
        /// How.
        method: AuthMethod,
    },
    /// The token belongs to nobody rotor knows; `detail` says why (never the token).
    Unknown {
        /// For the audit record.
        detail: String,
    },
}

/// Asks something (the Kubernetes API) who a bearer token belongs to.
#[async_trait::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// The authenticated username (`system:serviceaccount:NS:NAME`), or `None` when the
    /// token is not authenticated. Errors mean the question could not be answered.
    async fn review(&self, token: &SecretString) -> Result<Option<String>, AuthError>;
}

/// [`TokenReviewer`] over `authentication.k8s.io/v1` TokenReview (needs RBAC
/// `create` on `tokenreviews`, e.g. the `system:auth-delegator` ClusterRole).
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl KubeTokenReviewer {
    /// Reviews tokens with `client`; `audiences` empty means the API server's own.
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        KubeTokenReviewer { client, audiences }
    }
}

#[async_trait::async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &SecretString) -> Result<Option<String>, AuthError> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.expose_secret().to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        // The answer echoes the token in `spec`: only `status` is read, nothing is printed.
        let mut answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::TokenReview(kube_error(&e)))?;
        {
            use zeroize::Zeroize;
            answer.spec.token.zeroize();
            let mut sent = review;
            sent.spec.token.zeroize();
        }
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        Ok(status.user.and_then(|u| u.username))
    }
}

/// kube's error without anything from the request (kube errors carry the API
/// server's Status message and HTTP details, not the request body).
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("HTTP {}: {}", status.code, status.message),
        other => {
            crate::outside::note(crate::outside::System::Kubernetes, other);
            crate::error_chain(other)
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Authenticates bearer tokens, holds identities and their rate-limit buckets.
pub struct Authenticator {
    identities: Vec<Arc<Identity>>,
    /// Hex SHA-256 of each static token, with the identity's index.
    digests: Vec<(String, usize)>,
    accounts: HashMap<ServiceAccount, usize>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    review_cache: Mutex<HashMap<String, (usize, Instant)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "identities",
                &self.identities.iter().map(|i| &i.name).collect::<Vec<_>>(),
            )
            .field("static_tokens", &self.digests.len())
            .field("token_review", &self.reviewer.is_some())
            .finish()
    }
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Authenticator {
    /// An authenticator that knows nobody: every `/v1` request gets 401. For an agent
    /// started without `--auth-config`.
    pub fn deny_all() -> Authenticator {
        Authenticator::build(Vec::new(), Vec::new(), HashMap::new())
    }

    fn build(
        identities: Vec<Arc<Identity>>,
        digests: Vec<(String, usize)>,
        accounts: HashMap<ServiceAccount, usize>,
    ) -> Authenticator {
        Authenticator {
            identities,
            digests,
            accounts,
            reviewer: None,
            review_cache: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves every identity's token (`file`/`env` locally, `vault` through `vault`)
    /// and keeps only their digests. Fails on a missing, short or shared token.
    pub async fn from_config(
        config: &AuthConfig,
        vault: Option<&Vault>,
    ) -> Result<Authenticator, AuthError> {
        let mut identities = Vec::new();
        let mut digests: Vec<(String, usize)> = Vec::new();
        let mut accounts = HashMap::new();
        for (index, c) in config.identities.iter().enumerate() {
            identities.push(Arc::new(Identity {
                name: c.name.clone(),
                grants: c.grants.clone(),
                compromise: c.compromise,
                groups: c.groups.clone(),
                break_glass: c.break_glass,
                rate_limit: c.rate_limit,
            }));
            if let Some(account) = &c.service_account {
                accounts.insert(account.clone(), index);
            }
            let Some(reference) = &c.token_from else {
                continue;
            };
            let described = describe_reference(reference);
            let resolved = match (reference, vault) {
                (Reference::Vault { .. }, Some(vault)) => vault.resolve(reference).await,
                (Reference::Vault { .. }, None) => {
                    return Err(AuthError::NoVault {
                        identity: c.name.clone(),
                        reference: described,
                    });
                }
                _ => resolve_local(reference),
            }
            .map_err(|source| AuthError::Resolve {
                identity: c.name.clone(),
                reference: described.clone(),
                source: Box::new(source),
            })?;
            let token = match (resolved.len(), resolved.expose("value")) {
                (1, Some(token)) => token.trim(),
                _ => {
                    return Err(AuthError::NotSingleValue {
                        identity: c.name.clone(),
                        reference: described,
                    });
                }
            };
            let len = token.chars().count();
            if len < MIN_TOKEN_LEN {
                return Err(AuthError::TokenTooShort {
                    identity: c.name.clone(),
                    reference: described,
                    len,
                });
            }
            let d = digest(token);
            if let Some((_, other)) = digests.iter().find(|(x, _)| *x == d) {
                return Err(AuthError::DuplicateToken {
                    first: config.identities[*other].name.clone(),
                    second: c.name.clone(),
                });
            }
            digests.push((d, index));
        }
        Ok(Authenticator::build(identities, digests, accounts))
    }

    /// Adds Kubernetes TokenReview for tokens that match no static token.
    pub fn with_token_reviewer(mut self, reviewer: Arc<dyn TokenReviewer>) -> Authenticator {
        self.reviewer = Some(reviewer);
        self
    }

    /// Adds TokenReview through `client` ([`KubeTokenReviewer`], API server audience).
    pub fn with_kube(self, client: kube::Client) -> Authenticator {
        self.with_token_reviewer(Arc::new(KubeTokenReviewer::new(client, Vec::new())))
    }

    /// Identities, in configuration order.
    pub fn identities(&self) -> &[Arc<Identity>] {
        &self.identities
    }

    /// Who `token` belongs to. Static tokens first (every digest compared in constant
    /// time, no early exit); then, if a reviewer is set and some identity names a
    /// ServiceAccount, a TokenReview. Errors only when the review itself failed.
    pub async fn authenticate(&self, token: &str) -> Result<Authentication, AuthError> {
        let presented = digest(token);
        let mut found = None;
        for (d, index) in &self.digests {
            let equal = constant_time_eq(&presented, d);
            if equal && found.is_none() {
                found = Some(*index);
            }
        }
        if let Some(index) = found {
            return Ok(Authentication::Known {
                identity: Arc::clone(&self.identities[index]),
                method: AuthMethod::Token,
            });
        }
        let Some(reviewer) = self.reviewer.as_ref().filter(|_| !self.accounts.is_empty()) else {
            return Ok(Authentication::Unknown {
                detail: "the bearer token matches no identity".into(),
            });
        };
        if let Some(index) = self.cached_review(&presented) {
            return Ok(Authentication::Known {
                identity: Arc::clone(&self.identities[index]),
                method: AuthMethod::Kubernetes,
            });
        }
        let secret = SecretString::from(token.to_owned());
        let Some(username) = reviewer.review(&secret).await? else {
            return Ok(Authentication::Unknown {
                detail:
                    "the bearer token matches no identity and Kubernetes did not authenticate it"
                        .into(),
            });
        };
        let Some(account) = ServiceAccount::from_username(&username) else {
            return Ok(Authentication::Unknown {
                detail: format!("Kubernetes user {username} is not a ServiceAccount"),
            });
        };
        let Some(&index) = self.accounts.get(&account) else {
            return Ok(Authentication::Unknown {
                detail: format!("ServiceAccount {account} is not a configured identity"),
            });
        };
        self.remember_review(presented, index);
        Ok(Authentication::Known {
            identity: Arc::clone(&self.identities[index]),
            method: AuthMethod::Kubernetes,
        })
    }

    fn cached_review(&self, digest: &str) -> Option<usize> {
        let cache = self.review_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(digest)
            .filter(|(_, at)| at.elapsed() < REVIEW_CACHE_TTL)
            .map(|(index, _)| *index)
    }

    fn remember_review(&self, digest: String, index: usize) {
        let mut cache = self.review_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE_TTL);
            if cache.len() >= REVIEW_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (index, Instant::now()));
    }

    /// Takes one request from `identity`'s bucket; `Err(wait)` when it is empty, with
    /// the time until the next request is allowed.
    pub fn check_rate(&self, identity: &Identity) -> Result<(), Duration> {
        self.check_rate_at(identity, Instant::now())
    }

    fn check_rate_at(&self, identity: &Identity, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(identity.rate_limit.requests.max(1));
        let per_second = capacity / identity.rate_limit.per.as_secs_f64().max(0.001);
        // A std mutex, held for a few arithmetic operations and never across an await.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(identity.name.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuthConfig, AuthError> {
        AuthConfig::parse(Path::new("auth.yaml"), text)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(AuthError::Invalid { problems, .. }) => problems,
            Err(other) => panic!("expected Invalid, got {other}"),
            Ok(_) => panic!("expected Invalid, got a config"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let config = parse(
            r#"
identities:
  - name: team-payments
    tokenFrom: {file: /etc/rotor/tokens/payments}
    policies: [payments-db]
    selector: {team: payments}
    rateLimit: {requests: 10, per: 1m}
  - name: ci
    kubernetes: {serviceAccount: ci/deployer}
    policies: ["*"]
    compromise: true
  - name: ops
    tokenFrom: {vault: {path: rotor/api, key: ops}}
    selector: {tier: critical}
"#,
        )
        .unwrap();
        let [payments, ci, ops] = &config.identities[..] else {
            panic!("three identities")
        };
        assert_eq!(
            payments.token_from,
            Some(Reference::File("/etc/rotor/tokens/payments".into()))
        );
        assert_eq!(payments.grants.names, ["payments-db"]);
        assert_eq!(payments.grants.selector["team"], "payments");
        assert!(!payments.compromise);
        assert_eq!(
            payments.rate_limit,
            RateLimit {
                requests: 10,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(
            ci.service_account,
            Some(ServiceAccount {
                namespace: "ci".into(),
                name: "deployer".into()
            })
        );
        assert!(ci.grants.all && ci.compromise);
        assert_eq!(ci.rate_limit, DEFAULT_RATE_LIMIT);
        assert_eq!(
            ops.token_from,
            Some(Reference::Vault {
                mount: "secret".into(),
                path: "rotor/api".into(),
                key: Some("ops".into())
            })
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let p = problems(
            r#"
identities:
  - name: a
    policies: [x]
  - name: a
    tokenFrom: {file: /t}
  - name: "bad name"
    tokenFrom: {env: "1X"}
    kubernetes: {serviceAccount: nonamespace}
    policies: [x]
    rateLimit: {requests: 0, per: soon}
"#,
        );
        let text = p.join("\n");
        for want in [
            "identities[0]: identity a has no way to authenticate",
            "identities[1].name: a is already used by identities[0]",
            "identities[1]: identity a is granted nothing",
            "identities[2].name: expected a name",
            "identities[2].tokenFrom: expected an environment variable name",
            "identities[2].kubernetes.serviceAccount: expected NAMESPACE/NAME",
            "identities[2].rateLimit.requests: expected at least 1",
            "identities[2].rateLimit.per: expected a duration",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn groups_and_break_glass_are_read_and_checked() {
        let config = parse(
            r#"
identities:
  - name: alice
    tokenFrom: {file: /t/a}
    policies: ["*"]
    groups: [security, sre, security]
  - name: oncall
    tokenFrom: {file: /t/o}
    policies: ["*"]
    compromise: true
    breakGlass: true
"#,
        )
        .unwrap();
        let [alice, oncall] = &config.identities[..] else {
            panic!("two identities")
        };
        assert_eq!(alice.groups, ["security", "sre"]);
        assert!(!alice.break_glass);
        assert!(oncall.break_glass && oncall.compromise);

        let p = problems(
            r#"
identities:
  - name: a
    tokenFrom: {file: /t/a}
    policies: [x]
    breakGlass: true
  - name: "group:ops"
    tokenFrom: {file: /t/b}
    policies: [x]
    groups: ["bad group"]
"#,
        );
        let text = p.join("\n");
        for want in [
            "identities[0].breakGlass: found true without compromise: true, expected compromise: true as well",
            "identities[1].name: names starting with `group:` are reserved",
            "identities[1].groups[0]: expected a group name",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn a_token_pasted_into_the_config_is_never_quoted() {
        let secret = "s3cr3t-token-value-0123456789";
        for text in [
            format!("identities:\n  - name: a\n    tokenFrom: {secret}\n    policies: [x]\n"),
            format!(
                "identities:\n  - name: a\n    tokenFrom: {{file: [{secret}]}}\n    policies: [x]\n"
            ),
            format!(
                "identities:\n  - name: a\n    tokenFrom: {{vault: {{path: p, key: k, x: {secret}}}}}\n    policies: [x]\n"
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("tokenFrom"), "{err}");
            assert!(!err.contains(secret), "the token leaked into: {err}");
        }
    }

    #[test]
    fn yaml_errors_name_the_position_without_a_snippet() {
        let err = parse("identities:\n  - name: a\n    tokenFrom: {file: /t}\n    polices: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("auth config auth.yaml: "), "{err}");
        assert!(err.contains("polices"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn grants_by_name_wildcard_and_selector() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let g = Grants {
            all: false,
            names: vec!["one".into()],
            selector: labels(&[("team", "pay"), ("env", "prod")]),
        };
        assert!(g.allows("one", &labels(&[])));
        assert!(g.allows(
            "two",
            &labels(&[("team", "pay"), ("env", "prod"), ("x", "y")])
        ));
        assert!(!g.allows("two", &labels(&[("team", "pay")])));
        assert!(!g.allows("two", &labels(&[("team", "pay"), ("env", "dev")])));
        let names_only = Grants {
            names: vec!["one".into()],
            ..Grants::default()
        };
        assert!(!names_only.allows("two", &labels(&[])));
        let all = Grants {
            all: true,
            ..Grants::default()
        };
        assert!(all.allows("anything", &labels(&[])));
    }

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            ServiceAccount::from_username("system:serviceaccount:ci:deployer")
                .unwrap()
                .to_string(),
            "ci/deployer"
        );
        for bad in [
            "system:serviceaccount:ci",
            "system:serviceaccount::x",
            "system:serviceaccount:ci:a:b",
            "alice",
        ] {
            assert_eq!(ServiceAccount::from_username(bad), None, "{bad}");
        }
    }

    fn identity(requests: u32, per: Duration) -> Authenticator {
        Authenticator::build(
            vec![Arc::new(Identity {
                name: "x".into(),
                grants: Grants::default(),
                compromise: false,
                groups: Vec::new(),
                break_glass: false,
                rate_limit: RateLimit { requests, per },
            })],
            Vec::new(),
            HashMap::new(),
        )
    }

    #[test]
    fn token_bucket_allows_a_burst_then_refills() {
        let auth = identity(3, Duration::from_secs(60));
        let id = Arc::clone(&auth.identities()[0]);
        let t0 = Instant::now();
        for _ in 0..3 {
            auth.check_rate_at(&id, t0).unwrap();
        }
        let wait = auth.check_rate_at(&id, t0).unwrap_err();
        assert_eq!(wait.as_secs_f64().round(), 20.0, "{wait:?}");
        let wait = auth
            .check_rate_at(&id, t0 + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(wait.as_secs_f64().round(), 5.0, "{wait:?}");
        let t1 = t0 + Duration::from_secs(20);
        auth.check_rate_at(&id, t1).unwrap();
        assert!(auth.check_rate_at(&id, t1).is_err());
        let t2 = t1 + Duration::from_secs(600);
        for _ in 0..3 {
            auth.check_rate_at(&id, t2).unwrap();
        }
        assert!(
            auth.check_rate_at(&id, t2).is_err(),
            "the bucket never holds more than 3"
        );
    }
}
