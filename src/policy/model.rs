//! The validated policy model: what the rest of rotor consumes. Every value here has
//! been checked by [`super::validate`]; no field holds a secret (only [`Reference`]s).
//! The credential kinds' specs are in [`super::kinds`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use strum::{Display, IntoStaticStr};

use super::consumer::ConsumerSpec;
use super::kinds::CredentialSpec;
use schemars::JsonSchema;

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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    JsonSchema,
    IntoStaticStr,
    Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
        self.into()
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, JsonSchema, IntoStaticStr, Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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
        self.into()
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
