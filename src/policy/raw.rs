//! Serde structs mirroring the policy YAML, read through [`super::yaml::NodeDe`].
//!
//! Closed sets (`RawCredential`, `RawConsumer`) are plain serde enums: `NodeDe` reads
//! them internally tagged by `type`, keeping positions, which serde's own
//! `#[serde(tag = "type")]` cannot (it buffers the content and loses them).
//! `Checked` marks error barriers (one bad section does not hide errors in the next);
//! `Located` keeps the position and path needed by validation messages; `ScalarText`
//! takes a scalar as written (durations, file modes). No `Debug`: a user may have put a
//! secret where a name was expected, and these values are never printed.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::yaml::{Checked, Located, ScalarText};

/// An integer with a custom "expected" text (`found a literal string, expected …`).
macro_rules! raw_int {
    ($name:ident, $expecting:literal) => {
        #[derive(Clone, Copy)]
        pub(crate) struct $name(pub i128);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        Ok($name(v.into()))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name(v.into()))
                    }
                    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<$name, E> {
                        Ok($name(v))
                    }
                }
                d.deserialize_i128(V)
            }
        }
    };
}

raw_int!(RawPort, "a port number 1-65535");
raw_int!(RawLength, "a password length 8-1024");
raw_int!(RawMinCount, "a character count 0-1024");
raw_int!(RawApprovals, "a number of approvals (at least 1)");

/// `apiVersion`.
#[derive(Deserialize)]
pub(crate) enum ApiVersion {
    #[serde(rename = "rotor/v1")]
    V1,
}

/// `kind`.
#[derive(Deserialize)]
pub(crate) enum Kind {
    RotationPolicy,
}

/// One YAML document.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a RotationPolicy mapping {apiVersion, kind, metadata, spec}"
)]
pub(crate) struct RawPolicy {
    pub api_version: Checked<ApiVersion>,
    pub kind: Checked<Kind>,
    pub metadata: Checked<RawMetadata>,
    pub spec: Checked<RawSpec>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {name, labels?}"
)]
pub(crate) struct RawMetadata {
    pub name: Located<String>,
    #[serde(default)]
    pub labels: Option<Located<BTreeMap<String, Located<String>>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {credential, vault, schedule?, consumers?, verify?, onDemand?, notify?}"
)]
pub(crate) struct RawSpec {
    pub credential: Checked<Located<RawCredential>>,
    pub vault: Checked<Located<RawVault>>,
    #[serde(default)]
    pub schedule: Option<Checked<Located<RawSchedule>>>,
    #[serde(default)]
    pub consumers: Option<Vec<Checked<Located<RawConsumer>>>>,
    #[serde(default)]
    pub verify: Option<Checked<RawVerify>>,
    #[serde(default)]
    pub on_demand: Option<Checked<RawOnDemand>>,
    #[serde(default)]
    pub notify: Option<Vec<Checked<Located<RawNotify>>>>,
    #[serde(default)]
    pub cascade: Option<Vec<Located<String>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {mount?, path}"
)]
pub(crate) struct RawVault {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    pub path: Located<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {cron?, timezone?, jitter?, window?, maxAge?}"
)]
pub(crate) struct RawSchedule {
    #[serde(default)]
    pub cron: Option<Located<String>>,
    #[serde(default)]
    pub timezone: Option<Located<String>>,
    #[serde(default)]
    pub jitter: Option<Located<ScalarText>>,
    #[serde(default)]
    pub window: Option<Located<String>>,
    #[serde(default)]
    pub max_age: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {oldRejected?, terminateSessions?}"
)]
pub(crate) struct RawVerify {
    #[serde(default)]
    pub old_rejected: Option<bool>,
    #[serde(default)]
    pub terminate_sessions: Option<bool>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {requireReason?, requireTicket?, approval?}"
)]
pub(crate) struct RawOnDemand {
    #[serde(default)]
    pub require_reason: Option<bool>,
    #[serde(default)]
    pub require_ticket: Option<bool>,
    #[serde(default)]
    pub approval: Option<Checked<Located<RawApproval>>>,
}

/// `spec.onDemand.approval`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {required?, approvers, ttl?}"
)]
pub(crate) struct RawApproval {
    #[serde(default)]
    pub required: Option<Located<RawApprovals>>,
    #[serde(default)]
    pub approvers: Option<Located<Vec<Located<String>>>>,
    #[serde(default)]
    pub ttl: Option<Located<ScalarText>>,
}

/// `spec.notify[]`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a webhook mapping {url, secretFrom, events?}"
)]
pub(crate) struct RawNotify {
    pub url: Located<String>,
    pub secret_from: Checked<Located<RawReference>>,
    #[serde(default)]
    pub events: Option<Located<Vec<Located<RawNotifyEvent>>>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawNotifyEvent {
    Success,
    Failure,
    Compromise,
    Quarantine,
    ApprovalRequested,
    ApprovalExpired,
}

// ---------------------------------------------------------------------------------------
// Shared pieces

/// `{vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a reference {vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}"
)]
pub(crate) struct RawReference {
    #[serde(default)]
    pub vault: Option<Located<RawVaultRef>>,
    #[serde(default)]
    pub env: Option<Located<String>>,
    #[serde(default)]
    pub file: Option<Located<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a Vault reference {path, key?, mount?}"
)]
pub(crate) struct RawVaultRef {
    pub path: Located<String>,
    #[serde(default)]
    pub key: Option<Located<String>>,
    #[serde(default)]
    pub mount: Option<Located<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a password generator {length?, alphabet?, minLower?, minUpper?, minDigits?, minSymbols?, exclude?} (passwords are generated, never written inline)"
)]
pub(crate) struct RawPassword {
    #[serde(default)]
    pub length: Option<Located<RawLength>>,
    #[serde(default)]
    pub alphabet: Option<Located<String>>,
    #[serde(default)]
    pub min_lower: Option<Located<RawMinCount>>,
    #[serde(default)]
    pub min_upper: Option<Located<RawMinCount>>,
    #[serde(default)]
    pub min_digits: Option<Located<RawMinCount>>,
    #[serde(default)]
    pub min_symbols: Option<Located<RawMinCount>>,
    #[serde(default)]
    pub exclude: Option<Located<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping {mode?, caFile?}"
)]
pub(crate) struct RawTls {
    #[serde(default)]
    pub mode: Option<RawTlsMode>,
    #[serde(default)]
    pub ca_file: Option<Located<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawTlsMode {
    Disable,
    Require,
    VerifyFull,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawStrategy {
    Single,
    Alternating,
    Overlap,
}

// ---------------------------------------------------------------------------------------
// Credentials

#[derive(Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a credential mapping with a `type`"
)]
pub(crate) enum RawCredential {
    Postgres(RawPostgres),
    Mysql(RawMysql),
    Redis(RawRedis),
    Rabbitmq(RawRabbitmq),
    VaultUserpass(RawVaultUserpass),
    VaultApprole(RawVaultApprole),
    VaultToken(RawVaultToken),
    VaultPki(RawVaultPki),
    VaultDatabase(RawVaultDatabase),
    HttpApiKey(RawHttpApiKey),
}

impl RawCredential {
    /// The YAML type name.
    pub fn kind(&self) -> &'static str {
        match self {
            RawCredential::Postgres(_) => "postgres",
            RawCredential::Mysql(_) => "mysql",
            RawCredential::Redis(_) => "redis",
            RawCredential::Rabbitmq(_) => "rabbitmq",
            RawCredential::VaultUserpass(_) => "vault-userpass",
            RawCredential::VaultApprole(_) => "vault-approle",
            RawCredential::VaultToken(_) => "vault-token",
            RawCredential::VaultPki(_) => "vault-pki",
            RawCredential::VaultDatabase(_) => "vault-database",
            RawCredential::HttpApiKey(_) => "http-api-key",
        }
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a connection mapping {host, port?, database?, tls?, adminFrom}"
)]
pub(crate) struct RawPgConnection {
    pub host: Located<String>,
    #[serde(default)]
    pub port: Option<Located<RawPort>>,
    #[serde(default)]
    pub database: Option<Located<String>>,
    #[serde(default)]
    pub tls: Option<Checked<Located<RawTls>>>,
    pub admin_from: Checked<Located<RawReference>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a postgres credential"
)]
pub(crate) struct RawPostgres {
    pub connection: Located<RawPgConnection>,
    pub username: Located<String>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub password: Option<Checked<Located<RawPassword>>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a connection mapping {host, port?, tls?, adminFrom}"
)]
pub(crate) struct RawMysqlConnection {
    pub host: Located<String>,
    #[serde(default)]
    pub port: Option<Located<RawPort>>,
    #[serde(default)]
    pub tls: Option<Checked<Located<RawTls>>>,
    pub admin_from: Checked<Located<RawReference>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mysql credential"
)]
pub(crate) struct RawMysql {
    pub connection: Located<RawMysqlConnection>,
    pub username: Located<String>,
    #[serde(default)]
    pub account_host: Option<Located<String>>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub password: Option<Checked<Located<RawPassword>>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a connection mapping {host, port?, tls?, adminFrom?}"
)]
pub(crate) struct RawRedisConnection {
    pub host: Located<String>,
    #[serde(default)]
    pub port: Option<Located<RawPort>>,
    #[serde(default)]
    pub tls: Option<Checked<Located<RawTls>>>,
    #[serde(default)]
    pub admin_from: Option<Checked<Located<RawReference>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a redis credential"
)]
pub(crate) struct RawRedis {
    pub connection: Located<RawRedisConnection>,
    pub username: Located<String>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub password: Option<Checked<Located<RawPassword>>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a rabbitmq credential"
)]
pub(crate) struct RawRabbitmq {
    pub management_url: Located<String>,
    pub admin_from: Checked<Located<RawReference>>,
    pub username: Located<String>,
    #[serde(default)]
    pub amqp_url: Option<Located<String>>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub password: Option<Checked<Located<RawPassword>>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-userpass credential"
)]
pub(crate) struct RawVaultUserpass {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    pub username: Located<String>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub password: Option<Checked<Located<RawPassword>>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-approle credential"
)]
pub(crate) struct RawVaultApprole {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    pub role: Located<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Located<String>>>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-token credential"
)]
pub(crate) struct RawVaultToken {
    pub policies: Located<Vec<Located<String>>>,
    #[serde(default)]
    pub ttl: Option<Located<ScalarText>>,
    #[serde(default)]
    pub period: Option<Located<ScalarText>>,
    #[serde(default)]
    pub role: Option<Located<String>>,
    #[serde(default)]
    pub display_name: Option<Located<String>>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-pki credential"
)]
pub(crate) struct RawVaultPki {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    pub role: Located<String>,
    pub common_name: Located<String>,
    #[serde(default)]
    pub alt_names: Option<Vec<Located<String>>>,
    #[serde(default)]
    pub ip_sans: Option<Vec<Located<String>>>,
    pub ttl: Located<ScalarText>,
    #[serde(default)]
    pub renew_before: Option<Located<ScalarText>>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-database credential"
)]
pub(crate) struct RawVaultDatabase {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    pub role: Located<String>,
    pub probe: Located<RawProbe>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a probe mapping {type, host, port?, database?}"
)]
pub(crate) struct RawProbe {
    #[serde(rename = "type")]
    pub kind: RawProbeKind,
    pub host: Located<String>,
    #[serde(default)]
    pub port: Option<Located<RawPort>>,
    #[serde(default)]
    pub database: Option<Located<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProbeKind {
    Postgres,
    Mysql,
    Redis,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "an http-api-key credential"
)]
pub(crate) struct RawHttpApiKey {
    pub admin_from: Checked<Located<RawReference>>,
    pub create: Located<RawHttpCreate>,
    pub revoke: Located<RawHttpRequest>,
    pub probe: Located<RawHttpRequest>,
    #[serde(default)]
    pub strategy: Option<Located<RawStrategy>>,
    #[serde(default)]
    pub grace: Option<Located<ScalarText>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a request mapping {method, url, headers?, body?, keyField, idField}"
)]
pub(crate) struct RawHttpCreate {
    pub method: RawMethod,
    pub url: Located<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Located<String>>>,
    #[serde(default)]
    pub body: Option<Located<String>>,
    pub key_field: Located<String>,
    pub id_field: Located<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a request mapping {method, url, headers?}"
)]
pub(crate) struct RawHttpRequest {
    pub method: RawMethod,
    pub url: Located<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Located<String>>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum RawMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

// ---------------------------------------------------------------------------------------
// Consumers

#[derive(Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a consumer mapping with a `type`"
)]
pub(crate) enum RawConsumer {
    Kubernetes(RawKubernetes),
    Gitlab(RawGitlab),
    Github(RawGithub),
    VaultKv(RawVaultKv),
    File(RawFile),
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a kubernetes consumer"
)]
pub(crate) struct RawKubernetes {
    pub namespace: Located<String>,
    pub secret: Located<String>,
    pub data: Located<BTreeMap<String, Located<String>>>,
    #[serde(default)]
    pub secret_type: Option<Located<String>>,
    #[serde(default)]
    pub restart: Option<Vec<Located<String>>>,
    #[serde(default)]
    pub force: Option<bool>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a gitlab consumer"
)]
pub(crate) struct RawGitlab {
    #[serde(default)]
    pub url: Option<Located<String>>,
    pub token_from: Checked<Located<RawReference>>,
    #[serde(default)]
    pub project: Option<Located<ScalarText>>,
    #[serde(default)]
    pub group: Option<Located<ScalarText>>,
    pub key: Located<String>,
    pub value: Located<String>,
    #[serde(default)]
    pub masked: Option<Located<bool>>,
    #[serde(default)]
    pub protected: Option<bool>,
    #[serde(default)]
    pub raw: Option<Located<bool>>,
    #[serde(default)]
    pub environment_scope: Option<Located<String>>,
    #[serde(default)]
    pub variable_type: Option<RawGitlabVariableType>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawGitlabVariableType {
    EnvVar,
    File,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a github consumer"
)]
pub(crate) struct RawGithub {
    #[serde(default)]
    pub url: Option<Located<String>>,
    pub token_from: Checked<Located<RawReference>>,
    #[serde(default)]
    pub repository: Option<Located<String>>,
    #[serde(default)]
    pub environment: Option<Located<String>>,
    #[serde(default)]
    pub organization: Option<Located<String>>,
    #[serde(default)]
    pub visibility: Option<Located<RawVisibility>>,
    pub name: Located<String>,
    pub value: Located<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawVisibility {
    All,
    Private,
    Selected,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a vault-kv consumer"
)]
pub(crate) struct RawVaultKv {
    #[serde(default)]
    pub mount: Option<Located<String>>,
    #[serde(default)]
    pub namespace: Option<Located<String>>,
    pub path: Located<String>,
    pub data: Located<BTreeMap<String, Located<String>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a file consumer"
)]
pub(crate) struct RawFile {
    pub path: Located<String>,
    pub content: Located<String>,
    #[serde(default)]
    pub mode: Option<Located<ScalarText>>,
    #[serde(default)]
    pub owner: Option<Located<ScalarText>>,
    #[serde(default)]
    pub group: Option<Located<ScalarText>>,
}
