//! The validated policy model: what the rest of rotor consumes. Every value here has
//! been checked by [`super::validate`]; no field holds a secret (only [`Reference`]s).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::generator::PasswordGenerator;
use super::template::Template;

/// One loaded, validated policy.
#[derive(Debug, Clone)]
pub struct ValidatedPolicy {
    /// `metadata.name`: an RFC 1123 DNS label, unique across everything loaded.
    pub name: String,
    /// `metadata.labels`. Policies with the same labels share one map (thousands of
    /// policies often carry a handful of distinct label sets).
    pub labels: std::sync::Arc<BTreeMap<String, String>>,
    /// The file the policy was loaded from.
    pub file: PathBuf,
    /// `spec`.
    pub spec: PolicySpec,
}

/// `spec`: what to rotate, where its canonical copy lives, when, and who consumes it.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    /// `spec.credential`: the credential kind and its target.
    pub credential: CredentialSpec,
    /// `spec.vault`: the KV v2 location of the canonical copy.
    pub vault: VaultLocation,
    /// `spec.schedule`: absent means the policy rotates only on demand.
    pub schedule: Option<ScheduleSpec>,
    /// `spec.consumers`: where the new credential is pushed (may be empty).
    pub consumers: Vec<ConsumerSpec>,
    /// `spec.verify`.
    pub verify: VerifySpec,
    /// `spec.onDemand`.
    pub on_demand: OnDemandSpec,
    /// `spec.cascade`: dependent policies rotated together with this one, under the
    /// same trigger (names of loaded policies; no cycles).
    pub cascade: Vec<String>,
    /// `spec.notify`: webhooks told about this policy's events (may be empty).
    pub notify: Vec<NotifyTarget>,
}

/// `spec.vault`: a KV v2 secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultLocation {
    /// KV v2 mount, default `secret`.
    pub mount: String,
    /// Path inside the mount (no leading or trailing `/`).
    pub path: String,
}

/// `spec.verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySpec {
    /// A rotation is complete only once the old secret is rejected (default true).
    pub old_rejected: bool,
    /// End sessions opened with the old secret (default false; forced by a compromise trigger).
    pub terminate_sessions: bool,
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            old_rejected: true,
            terminate_sessions: false,
        }
    }
}

/// `spec.onDemand`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDemandSpec {
    /// An on-demand rotation must carry a reason (default true).
    pub require_reason: bool,
    /// An on-demand rotation must carry a ticket id (default false).
    pub require_ticket: bool,
    /// `approval`: on-demand rotations through the agent wait for other people's
    /// approval (four eyes); `None` rotates at once.
    pub approval: Option<ApprovalSpec>,
}

/// `spec.onDemand.approval`: who must approve an on-demand rotation before the agent
/// starts it. Scheduled rotations never wait for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// `required`: distinct approvers needed, the requester never counting (default 1).
    pub required: u32,
    /// `approvers`: who may approve (never empty).
    pub approvers: Vec<Approver>,
    /// `ttl`: how long a request waits for its approvals; `None` takes the agent's
    /// `--approval-ttl` (default 2h). Positive, at most 30d
    /// ([`crate::policy::APPROVAL_TTL_BOUND`]).
    pub ttl: Option<Duration>,
}

impl ApprovalSpec {
    /// Whether the API identity `name`, member of `groups`, may approve.
    pub fn allows(&self, name: &str, groups: &[String]) -> bool {
        self.approvers.iter().any(|a| a.matches(name, groups))
    }
}

/// One `approvers` entry: an API identity by name, or every member of a group
/// (`group:NAME`, the identities' `groups` in the agent's auth config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approver {
    /// An identity name.
    Identity(String),
    /// `group:NAME`.
    Group(String),
}

impl Approver {
    /// Whether the identity `name` with `groups` is this approver.
    pub fn matches(&self, name: &str, groups: &[String]) -> bool {
        match self {
            Approver::Identity(n) => n == name,
            Approver::Group(g) => groups.iter().any(|x| x == g),
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Identity(n) => f.write_str(n),
            Approver::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl OnDemandSpec {
    /// What an on-demand request lacks (`"a reason"`, `"a ticket"`), if anything;
    /// blank text counts as missing.
    pub fn missing(&self, reason: Option<&str>, ticket: Option<&str>) -> Option<&'static str> {
        let blank = |s: Option<&str>| s.is_none_or(|t| t.trim().is_empty());
        if self.require_reason && blank(reason) {
            Some("a reason")
        } else if self.require_ticket && blank(ticket) {
            Some("a ticket")
        } else {
            None
        }
    }
}

impl Default for OnDemandSpec {
    fn default() -> Self {
        Self {
            require_reason: true,
            require_ticket: false,
            approval: None,
        }
    }
}

/// `spec.notify[]`: a webhook that receives signed JSON about a policy's events
/// (see [`crate::notify`] for the payload and signature scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// `url`: an absolute `http` or `https` URL without credentials in it.
    pub url: url::Url,
    /// `secretFrom`: the HMAC-SHA256 signing key; a reference naming one value.
    pub secret_from: Reference,
    /// `events`: what is sent (default: every event), without duplicates.
    pub events: Vec<NotifyEvent>,
}

impl NotifyTarget {
    /// Whether this target wants `event`.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.contains(&event)
    }
}

/// An event a webhook can be told about (`spec.notify[].events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// `success`: a rotation completed.
    Success,
    /// `failure`: a rotation failed or rolled back.
    Failure,
    /// `compromise`: a compromise rotation was started or finished.
    Compromise,
    /// `quarantine`: the policy was quarantined (no more automatic attempts).
    Quarantine,
    /// `approval_requested`: an on-demand request waits for approval.
    ApprovalRequested,
    /// `approval_expired`: a pending request expired or was superseded.
    ApprovalExpired,
}

impl NotifyEvent {
    /// Every event, in declaration order (the default of `events`).
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::Success,
        NotifyEvent::Failure,
        NotifyEvent::Compromise,
        NotifyEvent::Quarantine,
        NotifyEvent::ApprovalRequested,
        NotifyEvent::ApprovalExpired,
    ];

    /// The YAML and payload name (`success`, `approval_requested`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Success => "success",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Compromise => "compromise",
            NotifyEvent::Quarantine => "quarantine",
            NotifyEvent::ApprovalRequested => "approval_requested",
            NotifyEvent::ApprovalExpired => "approval_expired",
        }
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.schedule`. At least one of `cron` and `max_age` is set.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Parsed POSIX 5-field cron (0 = Sunday); known to fire at least once. Shared
    /// by the loaded policies that write the same line.
    pub cron: Option<std::sync::Arc<croner::Cron>>,
    /// The cron line as written.
    pub cron_source: Option<String>,
    /// IANA time zone the cron and window are read in (default UTC).
    pub timezone: chrono_tz::Tz,
    /// Upper bound of the random delay added to each fire time (default 0); at most 1d
    /// ([`crate::policy::JITTER_BOUND`]).
    pub jitter: Duration,
    /// Rotations only start inside this local window.
    pub window: Option<Window>,
    /// Rotate when the current secret is older than this. Positive, at most 3650d
    /// (10 years, [`crate::policy::MAX_AGE_BOUND`]).
    pub max_age: Option<Duration>,
}

/// A daily local-time window `start-end`; wraps midnight when `end < start`.
/// Never empty (`start != end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub start: chrono::NaiveTime,
    /// Exclusive end.
    pub end: chrono::NaiveTime,
}

impl Window {
    /// Whether `t` lies inside the window (start inclusive, end exclusive).
    pub fn contains(&self, t: chrono::NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// How a credential kind replaces the old credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One credential; its secret is replaced in place.
    Single,
    /// Two credentials used in turn; the idle one is rotated and promoted.
    Alternating,
    /// A new credential is created next to the old one, which is revoked after `grace`.
    Overlap,
}

impl Strategy {
    /// The YAML name (`single`, `alternating`, `overlap`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Single => "single",
            Strategy::Alternating => "alternating",
            Strategy::Overlap => "overlap",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where rotor reads a secret it needs itself (an admin login, an API token). Never the
/// secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A KV v2 secret. Without `key` it yields the keys `username` and `password`.
    Vault {
        /// KV v2 mount; defaults to `spec.vault.mount`.
        mount: String,
        /// Path inside the mount.
        path: String,
        /// One key of the secret; `None` means `username` + `password`.
        key: Option<String>,
    },
    /// An environment variable of the rotor process.
    Env(String),
    /// A file on the rotor host (its whole content, trailing newline trimmed by readers).
    File(PathBuf),
}

impl Reference {
    /// Whether the reference names exactly one value (env, file, or Vault with a key).
    pub fn is_single_value(&self) -> bool {
        !matches!(self, Reference::Vault { key: None, .. })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Vault { mount, path, key } => {
                write!(f, "vault {mount}/{path}")?;
                if let Some(key) = key {
                    write!(f, "#{key}")?;
                }
                Ok(())
            }
            Reference::Env(name) => write!(f, "env {name}"),
            Reference::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// TLS settings for a database connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// `mode` (default `verify-full`).
    pub mode: TlsMode,
    /// `caFile`: PEM bundle to verify the server with (default: system roots).
    pub ca_file: Option<PathBuf>,
}

/// `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS, certificate and host name verified.
    VerifyFull,
}

impl TlsMode {
    /// The YAML name.
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `spec.credential`: the closed set of credential kinds.
#[derive(Debug, Clone)]
pub enum CredentialSpec {
    /// `postgres`: a PostgreSQL role password.
    Postgres(PostgresCredential),
    /// `mysql`: a MariaDB/MySQL user password.
    Mysql(MysqlCredential),
    /// `redis`: a Redis ACL user password.
    Redis(RedisCredential),
    /// `rabbitmq`: a RabbitMQ user password.
    Rabbitmq(RabbitmqCredential),
    /// `vault-userpass`: a Vault userpass password.
    VaultUserpass(VaultUserpassCredential),
    /// `vault-approle`: an AppRole secret-id.
    VaultApprole(VaultApproleCredential),
    /// `vault-token`: a Vault token used as an API key.
    VaultToken(VaultTokenCredential),
    /// `vault-pki`: a certificate and key from a PKI role.
    VaultPki(VaultPkiCredential),
    /// `vault-database`: a database-engine static role.
    VaultDatabase(VaultDatabaseCredential),
    /// `http-api-key`: an API key behind templated HTTP requests.
    HttpApiKey(HttpApiKeyCredential),
}

const USER_PASS: &[&str] = &["username", "password"];

impl CredentialSpec {
    /// Every kind's YAML type name, in declaration order.
    pub const KINDS: &'static [&'static str] = &[
        "postgres",
        "mysql",
        "redis",
        "rabbitmq",
        "vault-userpass",
        "vault-approle",
        "vault-token",
        "vault-pki",
        "vault-database",
        "http-api-key",
    ];

    /// The YAML type name (`postgres`, `vault-userpass`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialSpec::Postgres(_) => "postgres",
            CredentialSpec::Mysql(_) => "mysql",
            CredentialSpec::Redis(_) => "redis",
            CredentialSpec::Rabbitmq(_) => "rabbitmq",
            CredentialSpec::VaultUserpass(_) => "vault-userpass",
            CredentialSpec::VaultApprole(_) => "vault-approle",
            CredentialSpec::VaultToken(_) => "vault-token",
            CredentialSpec::VaultPki(_) => "vault-pki",
            CredentialSpec::VaultDatabase(_) => "vault-database",
            CredentialSpec::HttpApiKey(_) => "http-api-key",
        }
    }

    /// The keys this kind writes to Vault; they are the consumers' template variables.
    pub fn output_keys(&self) -> &'static [&'static str] {
        output_keys_of(self.kind())
    }

    /// The strategy in effect.
    pub fn strategy(&self) -> Strategy {
        match self {
            CredentialSpec::Postgres(c) => c.strategy,
            CredentialSpec::Mysql(c) => c.strategy,
            CredentialSpec::Redis(c) => c.strategy,
            CredentialSpec::Rabbitmq(c) => c.strategy,
            CredentialSpec::VaultUserpass(c) => c.strategy,
            CredentialSpec::VaultApprole(c) => c.strategy,
            CredentialSpec::VaultToken(c) => c.strategy,
            CredentialSpec::VaultPki(c) => c.strategy,
            CredentialSpec::VaultDatabase(c) => c.strategy,
            CredentialSpec::HttpApiKey(c) => c.strategy,
        }
    }

    /// How long the old credential stays valid after promotion (0 for `single`).
    pub fn grace(&self) -> Duration {
        match self {
            CredentialSpec::Postgres(c) => c.grace,
            CredentialSpec::Mysql(c) => c.grace,
            CredentialSpec::Redis(c) => c.grace,
            CredentialSpec::Rabbitmq(c) => c.grace,
            CredentialSpec::VaultUserpass(c) => c.grace,
            CredentialSpec::VaultApprole(c) => c.grace,
            CredentialSpec::VaultToken(c) => c.grace,
            CredentialSpec::VaultPki(c) => c.grace,
            CredentialSpec::VaultDatabase(c) => c.grace,
            CredentialSpec::HttpApiKey(c) => c.grace,
        }
    }

    /// The password generator, for kinds whose secret rotor generates.
    pub fn password_generator(&self) -> Option<&PasswordGenerator> {
        match self {
            CredentialSpec::Postgres(c) => Some(&c.password),
            CredentialSpec::Mysql(c) => Some(&c.password),
            CredentialSpec::Redis(c) => Some(&c.password),
            CredentialSpec::Rabbitmq(c) => Some(&c.password),
            CredentialSpec::VaultUserpass(c) => Some(&c.password),
            _ => None,
        }
    }

    /// Human description of what is rotated, for `rotor plan` (never a secret).
    pub fn target(&self) -> String {
        match self {
            CredentialSpec::Postgres(c) => format!(
                "postgres role {} on {}:{}/{}",
                c.username, c.connection.host, c.connection.port, c.connection.database
            ),
            CredentialSpec::Mysql(c) => format!(
                "mysql user '{}'@'{}' on {}:{}",
                c.username, c.account_host, c.connection.host, c.connection.port
            ),
            CredentialSpec::Redis(c) => format!(
                "redis ACL user {} on {}:{}",
                c.username, c.connection.host, c.connection.port
            ),
            CredentialSpec::Rabbitmq(c) => {
                format!("rabbitmq user {} at {}", c.username, c.management_url)
            }
            CredentialSpec::VaultUserpass(c) => {
                format!("vault userpass user {} (mount {})", c.username, c.mount)
            }
            CredentialSpec::VaultApprole(c) => {
                format!("vault approle {} secret-id (mount {})", c.role, c.mount)
            }
            CredentialSpec::VaultToken(c) => {
                let mut s = format!("vault token with policies [{}]", c.policies.join(", "));
                if let Some(role) = &c.role {
                    s.push_str(&format!(" from token role {role}"));
                }
                s
            }
            CredentialSpec::VaultPki(c) => format!(
                "vault pki certificate {} from role {} (mount {})",
                c.common_name, c.role, c.mount
            ),
            CredentialSpec::VaultDatabase(c) => format!(
                "vault database static role {} (mount {}), probed on {} {}:{}",
                c.role,
                c.mount,
                c.probe.kind.as_str(),
                c.probe.host,
                c.probe.port
            ),
            CredentialSpec::HttpApiKey(c) => format!(
                "http api key created by {} {}",
                c.create.method.as_str(),
                c.create.url.source()
            ),
        }
    }
}

/// The output keys of a credential kind by YAML type name (empty for an unknown name).
pub fn output_keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "postgres" | "mysql" | "redis" | "rabbitmq" | "vault-userpass" | "vault-database" => {
            USER_PASS
        }
        "vault-approle" => &["roleId", "secretId", "secretIdAccessor"],
        "vault-token" => &["token", "accessor"],
        "vault-pki" => &[
            "certificate",
            "privateKey",
            "caChain",
            "serial",
            "expiration",
        ],
        "http-api-key" => &["key", "id"],
        _ => &[],
    }
}

/// The strategies a credential kind offers, its default first.
pub fn strategies_of(kind: &str) -> &'static [Strategy] {
    match kind {
        "postgres" | "mysql" => &[Strategy::Single, Strategy::Alternating],
        "rabbitmq" | "vault-userpass" | "vault-database" => &[Strategy::Single],
        "redis" | "vault-approle" | "vault-token" | "vault-pki" | "http-api-key" => {
            &[Strategy::Overlap]
        }
        _ => &[],
    }
}

/// `postgres`.
#[derive(Debug, Clone)]
pub struct PostgresCredential {
    /// How rotor connects as an administrator.
    pub connection: PostgresConnection,
    /// The role whose password is rotated.
    pub username: String,
    /// `single` (default) or `alternating`.
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old credential stays valid (alternating only; default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `postgres` `connection`.
#[derive(Debug, Clone)]
pub struct PostgresConnection {
    /// Host name or address.
    pub host: String,
    /// Port, default 5432.
    pub port: u16,
    /// Database to connect to, default `postgres`.
    pub database: String,
    /// TLS settings; absent means no TLS.
    pub tls: Option<TlsSpec>,
    /// The admin login (`username`, `password`).
    pub admin_from: Reference,
}

/// `mysql`.
#[derive(Debug, Clone)]
pub struct MysqlCredential {
    /// How rotor connects as an administrator.
    pub connection: MysqlConnection,
    /// The user whose password is rotated.
    pub username: String,
    /// The account's host part, default `%`.
    pub account_host: String,
    /// `single` (default) or `alternating`.
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old credential stays valid (alternating only; default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `mysql` `connection`.
#[derive(Debug, Clone)]
pub struct MysqlConnection {
    /// Host name or address.
    pub host: String,
    /// Port, default 3306.
    pub port: u16,
    /// TLS settings; absent means no TLS.
    pub tls: Option<TlsSpec>,
    /// The admin login (`username`, `password`).
    pub admin_from: Reference,
}

/// `redis` (strategy is always `overlap`: ACL users hold several passwords).
#[derive(Debug, Clone)]
pub struct RedisCredential {
    /// How rotor connects as an administrator.
    pub connection: RedisConnection,
    /// The ACL user whose password is rotated.
    pub username: String,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old password stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `redis` `connection`.
#[derive(Debug, Clone)]
pub struct RedisConnection {
    /// Host name or address.
    pub host: String,
    /// Port, default 6379.
    pub port: u16,
    /// TLS settings; absent means no TLS.
    pub tls: Option<TlsSpec>,
    /// The admin login; absent means the default user without a password.
    pub admin_from: Option<Reference>,
}

/// `rabbitmq`.
#[derive(Debug, Clone)]
pub struct RabbitmqCredential {
    /// Management API base URL (no credentials in it).
    pub management_url: url::Url,
    /// The management API admin login (`username`, `password`).
    pub admin_from: Reference,
    /// The user whose password is rotated.
    pub username: String,
    /// AMQP URL used to probe the old and new password (no credentials in it).
    pub amqp_url: Option<url::Url>,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-userpass`.
#[derive(Debug, Clone)]
pub struct VaultUserpassCredential {
    /// Auth mount, default `userpass`.
    pub mount: String,
    /// The user whose password is rotated.
    pub username: String,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-approle`: a new secret-id is generated, the old one destroyed by accessor.
#[derive(Debug, Clone)]
pub struct VaultApproleCredential {
    /// Auth mount, default `approle`.
    pub mount: String,
    /// The AppRole name.
    pub role: String,
    /// Metadata attached to each new secret-id.
    pub metadata: BTreeMap<String, String>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old secret-id stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-token`: a new token with the same policies, the old one revoked.
#[derive(Debug, Clone)]
pub struct VaultTokenCredential {
    /// Policies of the new token (at least one).
    pub policies: Vec<String>,
    /// Token TTL; at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub ttl: Option<Duration>,
    /// Periodic token period; at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub period: Option<Duration>,
    /// Token role to create the token against.
    pub role: Option<String>,
    /// Display name of the new token.
    pub display_name: Option<String>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old token stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-pki`: a certificate and key issued from a PKI role.
#[derive(Debug, Clone)]
pub struct VaultPkiCredential {
    /// PKI mount, default `pki`.
    pub mount: String,
    /// PKI role to issue from.
    pub role: String,
    /// Certificate common name.
    pub common_name: String,
    /// Subject alternative DNS names.
    pub alt_names: Vec<String>,
    /// Subject alternative IP addresses.
    pub ip_sans: Vec<IpAddr>,
    /// Certificate lifetime: positive, at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub ttl: Duration,
    /// Re-issue when less than this is left (a schedule trigger besides `maxAge`);
    /// shorter than `ttl`.
    pub renew_before: Option<Duration>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old certificate stays unrevoked (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-database`: rotor triggers `rotate-role` on a static role, then propagates.
#[derive(Debug, Clone)]
pub struct VaultDatabaseCredential {
    /// Database secrets engine mount, default `database`.
    pub mount: String,
    /// Static role name.
    pub role: String,
    /// Where to prove the old password is rejected.
    pub probe: DatabaseProbe,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-database` `probe`.
#[derive(Debug, Clone)]
pub struct DatabaseProbe {
    /// `type`.
    pub kind: ProbeKind,
    /// Host name or address.
    pub host: String,
    /// Port (default by kind: 5432, 3306, 6379).
    pub port: u16,
    /// Database to log in to (postgres default `postgres`).
    pub database: Option<String>,
}

/// `probe.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB/MySQL.
    Mysql,
    /// Redis.
    Redis,
}

impl ProbeKind {
    /// The YAML name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeKind::Postgres => "postgres",
            ProbeKind::Mysql => "mysql",
            ProbeKind::Redis => "redis",
        }
    }

    /// The usual port.
    pub fn default_port(&self) -> u16 {
        match self {
            ProbeKind::Postgres => 5432,
            ProbeKind::Mysql => 3306,
            ProbeKind::Redis => 6379,
        }
    }
}

/// `http-api-key`: an API key behind templated HTTP requests.
///
/// Template variables: the admin secret is `{{ admin }}` when `adminFrom` names one value
/// (env, file, or Vault with `key`), or `{{ username }}`/`{{ password }}` for a Vault
/// reference without `key`. `create` sees the admin variables; `revoke` sees them plus
/// `{{ id }}` and `{{ key }}`; `probe` sees `{{ key }}` and `{{ id }}`.
#[derive(Debug, Clone)]
pub struct HttpApiKeyCredential {
    /// The admin secret used by `create` and `revoke`.
    pub admin_from: Reference,
    /// Request that creates a new key.
    pub create: HttpCreateRequest,
    /// Request that revokes a key by id.
    pub revoke: HttpRequestSpec,
    /// Request that proves a key works (2xx) or is dead (401/403).
    pub probe: HttpRequestSpec,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old key stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `http-api-key` `create`.
#[derive(Debug, Clone)]
pub struct HttpCreateRequest {
    /// HTTP method.
    pub method: HttpMethod,
    /// URL template.
    pub url: Template,
    /// Header templates.
    pub headers: BTreeMap<String, Template>,
    /// Body template.
    pub body: Option<Template>,
    /// Response field holding the new key: a top-level name or a JSON pointer (`/a/b`).
    pub key_field: String,
    /// Response field holding the new key's id: a top-level name or a JSON pointer.
    pub id_field: String,
}

/// `http-api-key` `revoke` and `probe`.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// HTTP method.
    pub method: HttpMethod,
    /// URL template.
    pub url: Template,
    /// Header templates (for `revoke`, default: `create.headers`).
    pub headers: BTreeMap<String, Template>,
}

/// An HTTP method (written upper case in YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// The method name.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// `spec.consumers[]`: the closed set of consumer kinds.
#[derive(Debug, Clone)]
pub enum ConsumerSpec {
    /// `kubernetes`: a Secret, optionally rolling workloads.
    Kubernetes(KubernetesConsumer),
    /// `gitlab`: a project or group CI/CD variable.
    Gitlab(GitlabConsumer),
    /// `github`: a repository, environment or organisation Actions secret.
    Github(GithubConsumer),
    /// `vault-kv`: an extra KV v2 copy.
    VaultKv(VaultKvConsumer),
    /// `file`: a file on the agent's host.
    File(FileConsumer),
}

impl ConsumerSpec {
    /// Every kind's YAML type name.
    pub const KINDS: &'static [&'static str] =
        &["kubernetes", "gitlab", "github", "vault-kv", "file"];

    /// The YAML type name.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsumerSpec::Kubernetes(_) => "kubernetes",
            ConsumerSpec::Gitlab(_) => "gitlab",
            ConsumerSpec::Github(_) => "github",
            ConsumerSpec::VaultKv(_) => "vault-kv",
            ConsumerSpec::File(_) => "file",
        }
    }

    /// Human description for `rotor plan` and logs (never a secret).
    pub fn describe(&self) -> String {
        match self {
            ConsumerSpec::Kubernetes(c) => {
                let mut s = format!("kubernetes secret {}/{}", c.namespace, c.secret);
                if !c.restart.is_empty() {
                    let names: Vec<String> = c.restart.iter().map(ToString::to_string).collect();
                    s.push_str(&format!(" (restart {})", names.join(", ")));
                }
                s
            }
            ConsumerSpec::Gitlab(c) => {
                let target = match &c.target {
                    GitlabTarget::Project(p) => format!("project {p}"),
                    GitlabTarget::Group(g) => format!("group {g}"),
                };
                let mut s = format!("gitlab {target} variable {}", c.key);
                if c.environment_scope != "*" {
                    s.push_str(&format!(" (scope {})", c.environment_scope));
                }
                s
            }
            ConsumerSpec::Github(c) => match &c.target {
                GithubTarget::Repository {
                    owner,
                    name,
                    environment: None,
                } => format!("github repository {owner}/{name} secret {}", c.name),
                GithubTarget::Repository {
                    owner,
                    name,
                    environment: Some(env),
                } => format!(
                    "github repository {owner}/{name} environment {env} secret {}",
                    c.name
                ),
                GithubTarget::Organization { name, visibility } => format!(
                    "github organization {name} secret {} (visibility {})",
                    c.name,
                    visibility.as_str()
                ),
            },
            ConsumerSpec::VaultKv(c) => format!("vault-kv {}/{}", c.mount, c.path),
            ConsumerSpec::File(c) => format!("file {} (mode {:04o})", c.path.display(), c.mode),
        }
    }

    /// The templates this consumer renders, with their field names.
    pub fn templates(&self) -> Vec<(String, &Template)> {
        match self {
            ConsumerSpec::Kubernetes(c) => c
                .data
                .iter()
                .map(|(k, t)| (format!("data.{k}"), t))
                .collect(),
            ConsumerSpec::Gitlab(c) => vec![("value".to_owned(), &c.value)],
            ConsumerSpec::Github(c) => vec![("value".to_owned(), &c.value)],
            ConsumerSpec::VaultKv(c) => c
                .data
                .iter()
                .map(|(k, t)| (format!("data.{k}"), t))
                .collect(),
            ConsumerSpec::File(c) => vec![("content".to_owned(), &c.content)],
        }
    }
}

/// `kubernetes` consumer.
#[derive(Debug, Clone)]
pub struct KubernetesConsumer {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Secret name.
    pub secret: String,
    /// Secret keys and their templates.
    pub data: BTreeMap<String, Template>,
    /// `Opaque` | `kubernetes.io/tls` | `kubernetes.io/basic-auth` (absent: `Opaque`).
    pub secret_type: Option<String>,
    /// Workloads rolled (only if the data changed).
    pub restart: Vec<WorkloadRef>,
    /// Take over a Secret that rotor did not create (default false).
    pub force: bool,
}

/// A workload to restart, written `deployment/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name (DNS subdomain).
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// Kinds of workload rotor can restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The lower-case prefix used in policies (`deployment`, `statefulset`, `daemonset`).
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }
}

/// `gitlab` consumer.
#[derive(Debug, Clone)]
pub struct GitlabConsumer {
    /// GitLab base URL, default `https://gitlab.com`.
    pub url: url::Url,
    /// The API token (scope `api`).
    pub token_from: Reference,
    /// Project or group owning the variable.
    pub target: GitlabTarget,
    /// Variable key (`[A-Za-z0-9_]`, at most 255).
    pub key: String,
    /// Value template.
    pub value: Template,
    /// Masked in job logs (default false).
    pub masked: bool,
    /// Only exposed to protected branches/tags (default false).
    pub protected: bool,
    /// No `$` expansion (default true).
    pub raw: bool,
    /// Environment scope, default `*`.
    pub environment_scope: String,
    /// `env_var` (default) or `file`.
    pub variable_type: GitlabVariableType,
}

/// Owner of a GitLab variable: a project or group path (or numeric id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitlabTarget {
    /// `project: acme/payments`.
    Project(String),
    /// `group: acme`.
    Group(String),
}

/// GitLab variable type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitlabVariableType {
    /// `env_var`.
    EnvVar,
    /// `file`.
    File,
}

impl GitlabVariableType {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        match self {
            GitlabVariableType::EnvVar => "env_var",
            GitlabVariableType::File => "file",
        }
    }
}

/// `github` consumer.
#[derive(Debug, Clone)]
pub struct GithubConsumer {
    /// API base URL, default `https://api.github.com`.
    pub url: url::Url,
    /// The API token.
    pub token_from: Reference,
    /// Repository (optionally an environment of it) or organisation.
    pub target: GithubTarget,
    /// Secret name (`[A-Za-z0-9_]`, not starting with a digit, no `GITHUB_` prefix).
    pub name: String,
    /// Value template.
    pub value: Template,
}

/// Owner of a GitHub Actions secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubTarget {
    /// A repository secret, or an environment secret when `environment` is set.
    Repository {
        /// Repository owner.
        owner: String,
        /// Repository name.
        name: String,
        /// Environment name.
        environment: Option<String>,
    },
    /// An organisation secret.
    Organization {
        /// Organisation login.
        name: String,
        /// Which repositories see it.
        visibility: GithubVisibility,
    },
}

/// Visibility of an organisation secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GithubVisibility {
    /// `all`.
    All,
    /// `private`.
    Private,
    /// `selected`.
    Selected,
}

impl GithubVisibility {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        match self {
            GithubVisibility::All => "all",
            GithubVisibility::Private => "private",
            GithubVisibility::Selected => "selected",
        }
    }
}

/// `vault-kv` consumer: an extra KV v2 copy.
#[derive(Debug, Clone)]
pub struct VaultKvConsumer {
    /// KV v2 mount; defaults to `spec.vault.mount`.
    pub mount: String,
    /// Vault namespace of the copy (Enterprise/OpenBao); default: rotor's own.
    pub namespace: Option<String>,
    /// Path inside the mount (never the canonical `spec.vault` location).
    pub path: String,
    /// Keys and their templates.
    pub data: BTreeMap<String, Template>,
}

/// `file` consumer: a file on the agent's host.
#[derive(Debug, Clone)]
pub struct FileConsumer {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Content template.
    pub content: Template,
    /// Permission bits, default `0o600`.
    pub mode: u32,
    /// Owner: a user name or numeric uid (default: the agent's user).
    pub owner: Option<String>,
    /// Group: a group name or numeric gid (default: the agent's group).
    pub group: Option<String>,
}
