//! The `--auth-config` file ([`AuthConfig`]): who may call the API, read with the
//! policy files' position-keeping YAML reader (`crate::policy::yaml`), so every
//! error names the file, line, column and field path, and none quotes a value.
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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::policy::yaml::{DeError, Located, NodeDe, Pos, ScalarText, Sink, parse_documents};
use crate::policy::{PolicyError, Reference, parse_duration, raw_mapping};
use crate::vault::VaultError;

/// Requests per window when an identity sets no `rateLimit`.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    requests: 30,
    per: Duration::from_secs(60),
};

/// The shortest static token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// KV mount of a `tokenFrom: {vault: …}` reference that names none.
pub const DEFAULT_VAULT_MOUNT: &str = "secret";

/// A failure loading the auth configuration, resolving tokens or reviewing a token.
/// Messages name identities, files and references, never a token.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum AuthError {
    /// The configuration file cannot be read.
    #[error("reading auth config {path} failed")]
    #[strum(serialize = "auth_config_read")]
    Read {
        /// The `--auth-config` path given.
        path: PathBuf,
        /// Why it could not be read (missing, permissions, not UTF-8).
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not YAML of the expected shape (syntax, an unknown or
    /// missing field, a value of the wrong type). Read like a policy file: each error
    /// names the file, line, column and field path, and never quotes a string value.
    #[error("auth config {path} is not of the expected shape:{}", bullets(errors))]
    #[strum(serialize = "auth_config_parse")]
    Parse {
        /// The `--auth-config` path given.
        path: PathBuf,
        /// Each error, `FILE:LINE:COLUMN: FIELD: found …, expected …`.
        errors: Vec<PolicyError>,
    },
    /// The configuration parsed but has problems; all of them are listed, each with
    /// its file, line, column and field path (`identities[1].tokenFrom`).
    #[error("auth config {path} is invalid:{}", bullets(problems))]
    #[strum(serialize = "auth_config_invalid")]
    Invalid {
        /// The `--auth-config` path given.
        path: PathBuf,
        /// One per problem, in file order.
        problems: Vec<PolicyError>,
    },
    /// An identity's token reference cannot be resolved.
    #[error("identity {identity}: resolving its token from {reference} failed")]
    #[strum(serialize = "auth_token_resolve")]
    Resolve {
        /// The identity whose `tokenFrom` failed.
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
    #[strum(serialize = "auth_token_not_single")]
    NotSingleValue {
        /// The identity whose `tokenFrom` failed.
        identity: String,
        /// The reference, described without a value.
        reference: String,
    },
    /// A token is shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "identity {identity}: the token from {reference} is {len} characters long; use at least {MIN_TOKEN_LEN} random characters"
    )]
    #[strum(serialize = "auth_token_too_short")]
    TokenTooShort {
        /// The identity whose `tokenFrom` failed.
        identity: String,
        /// The reference, described without a value.
        reference: String,
        /// The token's length in characters (never the token).
        len: usize,
    },
    /// Two identities resolve to the same token, so a caller could not be told apart.
    #[error("identities {first} and {second} have the same token; give each its own")]
    #[strum(serialize = "auth_token_duplicate")]
    DuplicateToken {
        /// The identity listed first.
        first: String,
        /// The later identity with the same token.
        second: String,
    },
    /// A Vault reference was given but no Vault client.
    #[error("identity {identity}: {reference} needs Vault, but no Vault client is configured")]
    #[strum(serialize = "auth_no_vault")]
    NoVault {
        /// The identity whose `tokenFrom` failed.
        identity: String,
        /// The `tokenFrom: {vault: …}` reference, described without a value.
        reference: String,
    },
    /// The Kubernetes API server could not review a token.
    #[error("Kubernetes TokenReview failed: {0}")]
    #[strum(serialize = "token_review")]
    TokenReview(String),
}

impl AuthError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
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
    /// The window `requests` are counted over (`per: 1m`).
    pub per: Duration,
}

/// A Kubernetes ServiceAccount, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// The namespace (`ci` in `ci/deployer`).
    pub namespace: String,
    /// The account's name in its namespace (`deployer`).
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

raw_mapping! {
    without_schema "a mapping with `identities`",
    struct RawConfig {
        identities: Located<Vec<Located<RawIdentity>>>,
    }
}

raw_mapping! {
    without_schema "an identity: a mapping with `name`",
    struct RawIdentity {
        name: Located<Text>,
        // Read as an untyped value and checked by hand (`reference`), so that a token
        // pasted here by mistake is described, never quoted.
        #[serde(default)]
        token_from: Option<Located<Value>>,
        #[serde(default)]
        kubernetes: Option<RawKubernetes>,
        #[serde(default)]
        policies: Vec<Located<Text>>,
        #[serde(default)]
        selector: BTreeMap<Text, Text>,
        #[serde(default)]
        compromise: Flag,
        #[serde(default)]
        groups: Vec<Located<Text>>,
        #[serde(default)]
        break_glass: Option<Located<Flag>>,
        #[serde(default)]
        rate_limit: Option<RawRateLimit>,
    }
}

raw_mapping! {
    without_schema "a mapping with `serviceAccount`",
    struct RawKubernetes {
        service_account: Located<Text>,
    }
}

raw_mapping! {
    without_schema "a mapping with `requests` and `per`",
    struct RawRateLimit {
        requests: Located<Count>,
        per: Located<Text>,
    }
}

// The scalars of this file are read as the file has always been read (it was
// deserialized by serde-saphyr before it shared the policy reader): a string field
// takes any scalar as written (`name: 855`), a flag takes `true`/`yes`/`on`/`y` and
// their opposites in any case, quoted or not, and a count takes `10`, `'10'`, `+10`,
// `1_000`, `0x10`, `0o7` or `0b101` but not `010`.

/// A scalar as written, whatever its YAML type.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ScalarText::deserialize(d).map(|t| Text(t.0))
    }
}

/// A yes/no flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(d)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(Flag(true)),
            "false" | "no" | "n" | "off" => Ok(Flag(false)),
            _ => Err(serde::de::Error::custom(
                "found a scalar that is not a boolean, expected true or false",
            )),
        }
    }
}

/// A whole number of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(d)?;
        let text = text.trim();
        let digits = text.strip_prefix('+').unwrap_or(text).replace('_', "");
        let radix = |prefix: [&str; 2]| prefix.iter().find_map(|p| digits.strip_prefix(p));
        let parsed = if let Some(hex) = radix(["0x", "0X"]) {
            u32::from_str_radix(hex, 16).ok()
        } else if let Some(oct) = radix(["0o", "0O"]) {
            u32::from_str_radix(oct, 8).ok()
        } else if let Some(bin) = radix(["0b", "0B"]) {
            u32::from_str_radix(bin, 2).ok()
        } else if digits.len() > 1 && digits.starts_with('0') {
            None // `010`: octal in YAML 1.1, decimal in 1.2; refused rather than guessed
        } else {
            digits.parse().ok()
        };
        parsed.map(Count).ok_or_else(|| {
            serde::de::Error::custom(
                "found a scalar that is not a whole number, expected a number from 0 to 4294967295",
            )
        })
    }
}

const REFERENCE_EXPECTED: &str = "{file: PATH}, {env: NAME} or {vault: {path, key, mount?}}";

/// `"\n  - "` before each error.
fn bullets(errors: &[PolicyError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

/// The problems found in one file, each at a place in it.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<PolicyError>,
}

impl Problems<'_> {
    /// A problem at `pos` (the field `path`).
    fn at_pos(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.list.push(PolicyError {
            file: self.file.to_path_buf(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            path: if path.is_empty() {
                "(document)".to_owned()
            } else {
                path.to_owned()
            },
            message: message.into(),
        });
    }

    /// A problem with the value `at`.
    fn at<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.at_pos(at.pos, &at.path, message);
    }

    /// A reader's error (its place, or the start of the document when it has none).
    fn read_error(&mut self, e: DeError) {
        let pos = e.pos.unwrap_or(Pos { line: 1, column: 1 });
        self.at_pos(pos, e.path.as_deref().unwrap_or(""), e.message);
    }
}

/// Names seen so far, to refuse the second identity with a name or ServiceAccount.
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    accounts: HashMap<ServiceAccount, String>,
}

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
        let mut problems = Problems {
            file: path,
            list: Vec::new(),
        };
        let Some(raw) = read(text, &mut problems) else {
            return Err(AuthError::Parse {
                path: path.to_path_buf(),
                errors: problems.list,
            });
        };
        let mut identities = Vec::new();
        let mut seen = Seen::default();
        for (i, raw) in raw.identities.value.iter().enumerate() {
            identities.push(identity(i, raw, &mut seen, &mut problems));
        }
        if identities.is_empty() {
            problems.at(&raw.identities, "no identity is configured");
        }
        if problems.list.is_empty() {
            Ok(AuthConfig { identities })
        } else {
            Err(AuthError::Invalid {
                path: path.to_path_buf(),
                problems: problems.list,
            })
        }
    }
}

/// The file's one YAML document as [`RawConfig`]; `None` with the errors noted when
/// it is not YAML of that shape.
fn read(text: &str, problems: &mut Problems<'_>) -> Option<RawConfig> {
    let documents = parse_documents(text);
    if let Some(second) = documents.get(1) {
        let pos = second
            .root
            .as_ref()
            .map_or(Pos { line: 1, column: 1 }, |r| r.pos);
        problems.at_pos(
            pos,
            "(document)",
            "found a second YAML document, expected one",
        );
    }
    let mut root = None;
    for (i, doc) in documents.into_iter().enumerate() {
        for e in doc.errors {
            problems.at_pos(e.pos, &e.path, e.message);
        }
        if i == 0 {
            root = doc.root.filter(|root| !root.is_null());
        }
    }
    let Some(root) = root else {
        if problems.list.is_empty() {
            let start = Pos { line: 1, column: 1 };
            problems.at_pos(
                start,
                "(document)",
                "found an empty file, expected a mapping with `identities`",
            );
        }
        return None;
    };
    let sink = Sink::default();
    let result = RawConfig::deserialize(NodeDe::root(&root, &sink));
    for e in sink.into_inner() {
        problems.read_error(e);
    }
    match result {
        Ok(config) if problems.list.is_empty() => Some(config),
        Ok(_) | Err(DeError { reported: true, .. }) => None,
        Err(e) => {
            problems.read_error(e);
            None
        }
    }
}

/// One identity, checked; its problems are noted (the identity is still returned).
fn identity(
    i: usize,
    raw: &Located<RawIdentity>,
    seen: &mut Seen,
    problems: &mut Problems<'_>,
) -> IdentityConfig {
    let item = raw;
    let raw = &raw.value;
    let name = raw.name.value.0.trim().to_owned();
    if !valid_name(&name) {
        problems.at(
            &raw.name,
            "expected a name of letters, digits, '-', '_', '.' or ':' (1-128 characters)",
        );
    } else if name.starts_with("group:") {
        problems.at(
            &raw.name,
            "names starting with `group:` are reserved for approver groups",
        );
    } else if let Some(first) = seen.names.insert(name.clone(), i) {
        problems.at(
            &raw.name,
            format!("{name} is already used by identities[{first}]"),
        );
    }
    let token_from = raw.token_from.as_ref().and_then(|value| {
        reference(&value.value)
            .map_err(|message| problems.at(value, message))
            .ok()
    });
    let service_account = raw.kubernetes.as_ref().and_then(|k| {
        let account = service_account(&k.service_account, problems)?;
        if let Some(first) = seen.accounts.insert(account.clone(), name.clone()) {
            problems.at(
                &k.service_account,
                format!("{account} is already identity {first}"),
            );
        }
        Some(account)
    });
    if raw.token_from.is_none() && raw.kubernetes.is_none() {
        problems.at(
            item,
            format!("identity {name} has no way to authenticate: set tokenFrom and/or kubernetes"),
        );
    }
    let mut grants = Grants {
        selector: (raw.selector.iter())
            .map(|(k, v)| (k.0.clone(), v.0.clone()))
            .collect(),
        ..Grants::default()
    };
    for p in &raw.policies {
        match p.value.0.trim() {
            "*" => grants.all = true,
            "" => problems.at(p, "empty policy name"),
            name => grants.names.push(name.to_owned()),
        }
    }
    if !grants.all && grants.names.is_empty() && grants.selector.is_empty() {
        problems.at(
            item,
            format!("identity {name} is granted nothing: set policies and/or selector"),
        );
    }
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .map_or(DEFAULT_RATE_LIMIT, |r| rate_limit(r, problems));
    let mut groups: Vec<String> = Vec::new();
    for g in &raw.groups {
        let text = g.value.0.trim();
        if !valid_name(text) {
            problems.at(
                g,
                "expected a group name of letters, digits, '-', '_', '.' or ':' (1-128 characters)",
            );
        } else if !groups.iter().any(|x| x == text) {
            groups.push(text.to_owned());
        }
    }
    let compromise = raw.compromise.0;
    let break_glass = raw.break_glass.as_ref().is_some_and(|b| b.value.0);
    if let Some(b) = raw
        .break_glass
        .as_ref()
        .filter(|b| b.value.0 && !compromise)
    {
        problems.at(b, "found true without compromise: true, expected compromise: true as well (break-glass skips approval for compromise rotations only)");
    }
    IdentityConfig {
        name,
        token_from,
        service_account,
        grants,
        compromise,
        groups,
        break_glass: break_glass && compromise,
        rate_limit,
    }
}

/// `NAMESPACE/NAME`, or `None` with the problem noted.
fn service_account(text: &Located<Text>, problems: &mut Problems<'_>) -> Option<ServiceAccount> {
    match text.value.0.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
            Some(ServiceAccount {
                namespace: ns.to_owned(),
                name: sa.to_owned(),
            })
        }
        _ => {
            problems.at(text, "expected NAMESPACE/NAME");
            None
        }
    }
}

/// A `rateLimit`, with its problems noted (the default stands in for a bad window).
fn rate_limit(raw: &RawRateLimit, problems: &mut Problems<'_>) -> RateLimit {
    let requests = raw.requests.value.0;
    if requests == 0 {
        problems.at(&raw.requests, "expected at least 1");
    }
    match parse_duration(&raw.per.value.0) {
        Some(per) if !per.is_zero() => RateLimit {
            requests: requests.max(1),
            per,
        },
        _ => {
            problems.at(&raw.per, "expected a duration like 10s, 1m or 1h");
            DEFAULT_RATE_LIMIT
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuthConfig, AuthError> {
        AuthConfig::parse(Path::new("auth.yaml"), text)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(AuthError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
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
        assert!(err.starts_with("auth config auth.yaml "), "{err}");
        assert!(err.contains("polices"), "{err}");
        // Line 4, column 5, like a policy file's errors.
        assert!(
            err.contains(
                "\n  - auth.yaml:4:5: identities[0].polices: found unknown field `polices`"
            ),
            "{err}"
        );
        assert_eq!(err.lines().count(), 2, "one error, no snippet: {err}");
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

    #[test]
    fn problems_name_file_line_column_and_field_like_policy_errors() {
        let text = "identities:\n  - name: a\n    tokenFrom: {file: /t/a}\n    policies: [x]\n  - name: a\n    tokenFrom: {env: \"1X\"}\n    policies: [\"\"]\n    rateLimit: {requests: 0, per: soon}\n";
        let Err(AuthError::Invalid { problems, .. }) = parse(text) else {
            panic!("expected Invalid");
        };
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "auth.yaml:5:11: identities[1].name: a is already used by identities[0]",
                "auth.yaml:6:16: identities[1].tokenFrom: expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                "auth.yaml:7:16: identities[1].policies[0]: empty policy name",
                "auth.yaml:5:5: identities[1]: identity a is granted nothing: set policies and/or selector",
                "auth.yaml:8:27: identities[1].rateLimit.requests: expected at least 1",
                "auth.yaml:8:35: identities[1].rateLimit.per: expected a duration like 10s, 1m or 1h",
            ]
        );
        let first = &problems[0];
        assert_eq!(
            (
                first.file.as_path(),
                first.line,
                first.column,
                first.path.as_str()
            ),
            (Path::new("auth.yaml"), 5, 11, "identities[1].name")
        );
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "auth config auth.yaml is invalid:\n  - auth.yaml:5:11: identities[1].name: "
            ),
            "{err}"
        );
    }

    #[test]
    fn shape_errors_name_file_line_column_and_field() {
        for (text, want) in [
            (
                "identities:\n  - name: a\n    tokenFrom: {file: /t}\n    policies: [x]\n    rateLimit: {requests: many, per: 1m}\n",
                "auth.yaml:5:27: identities[0].rateLimit.requests: found a scalar that is not a whole number",
            ),
            (
                "identities:\n  - name: a\n    kubernetes: {}\n    policies: [x]\n",
                "auth.yaml:3:5: identities[0].kubernetes.serviceAccount: found no `serviceAccount`",
            ),
            (
                "identities:\n  - name: a\n    policies: [x]\n  - [b]\n",
                "auth.yaml:4:5: identities[1]: found a sequence, expected an identity: a mapping with `name`",
            ),
            (
                "identities: [}\n",
                "auth.yaml:1:13: (yaml): found invalid YAML",
            ),
            (
                "identities: []\n---\nidentities: []\n",
                "auth.yaml:3:1: (document): found a second YAML document",
            ),
            (
                "# nothing\n",
                "auth.yaml:1:1: (document): found an empty file",
            ),
        ] {
            let Err(AuthError::Parse { errors, .. }) = parse(text) else {
                panic!("expected Parse for {text:?}");
            };
            let shown = errors[0].to_string();
            assert!(shown.starts_with(want), "{text:?}: {shown}");
        }
    }

    #[test]
    fn scalars_are_read_as_before_the_shared_reader() {
        // As serde-saphyr read them: strings from any scalar, YAML 1.1 flags, counts
        // quoted or in another base.
        let config = parse(
            r#"
identities:
  - name: 2024
    tokenFrom: {file: /t}
    policies: [7, true]
    selector: {version: 2, canary: yes}
    compromise: yes
    breakGlass: "On"
    rateLimit: {requests: '0x10', per: 1h}
  - name: b
    tokenFrom: {file: /u}
    policies: ["*"]
    compromise: False
    rateLimit: {requests: 1_000, per: 1m}
"#,
        )
        .unwrap();
        let [a, b] = &config.identities[..] else {
            panic!("two identities")
        };
        assert_eq!(a.name, "2024");
        assert_eq!(a.grants.names, ["7", "true"]);
        assert_eq!(a.grants.selector["version"], "2");
        assert_eq!(a.grants.selector["canary"], "yes");
        assert!(a.compromise && a.break_glass);
        assert_eq!(a.rate_limit.requests, 16);
        assert!(!b.compromise);
        assert_eq!(b.rate_limit.requests, 1000);
        for bad in [
            "requests: 010",
            "requests: -1",
            "requests: 4294967296",
            "requests: 1.5",
        ] {
            let text = format!(
                "identities:\n  - name: a\n    tokenFrom: {{file: /t}}\n    policies: [x]\n    rateLimit: {{{bad}, per: 1m}}\n"
            );
            assert!(
                matches!(parse(&text), Err(AuthError::Parse { .. })),
                "{bad}"
            );
        }
    }
}
