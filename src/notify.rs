//! Webhook notifications: signed JSON about a policy's events, sent to the policy's
//! `spec.notify` targets and the agent's global ones, retried with backoff.
//!
//! [`Notifier::send`] never blocks its caller: every delivery runs in a task of its
//! own; [`Notifier::flush`] waits for the ones started so far (tests, shutdown).
//!
//! # What a receiver gets
//!
//! `POST <url>` with `Content-Type: application/json` and these headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Rotor-Event` | the event: `success`, `failure`, `compromise`, `quarantine`, `approval_requested`, `approval_expired` |
//! | `X-Rotor-Delivery` | a ULID, the same on every retry of one delivery |
//! | `X-Rotor-Timestamp` | Unix seconds at which this attempt was signed |
//! | `X-Rotor-Signature` | `sha256=` and the lower-case hex HMAC-SHA256, keyed with the target's `secretFrom` value, of `timestamp + "." + body` |
//!
//! The body is one JSON object: `delivery` (equal to `X-Rotor-Delivery`, but covered by
//! the signature), `event`, `policy`, `rotation_id`, `request_id` (the approval request,
//! for `approval_requested` and `approval_expired`), `status`, `trigger`, `actor`,
//! `reason`, `ticket`, `detail` and `at` (RFC 3339); an unknown value is `null`.
//!
//! `approval_requested` is sent when an on-demand request waits for approval (`status`
//! `pending`; `actor` is the requester, `detail` names who may approve and until when);
//! `approval_expired` when such a request ran out of time (`status` `expired`) or was
//! replaced by a newer one (`status` `superseded`), once per request.
//!
//! To verify a request, a receiver:
//! 1. recomputes the HMAC over the `X-Rotor-Timestamp` value, a `.`, and the body bytes
//!    exactly as received, and compares it with `X-Rotor-Signature` in constant time;
//! 2. rejects a timestamp more than [`REPLAY_WINDOW`] (5 minutes) away from its own
//!    clock, so a captured request cannot be replayed later (each retry is signed anew,
//!    so a late retry still passes);
//! 3. de-duplicates on `delivery`: a retry after a lost answer repeats it.
//!
//! It answers 2xx to accept. 408, 429 (waiting at least its `Retry-After`) and 5xx, like
//! a refused connection or a timeout, are retried; any other status is final.
//!
//! A payload never holds a secret, nor a fingerprint of one: [`Notification`] has no
//! field for them. Logs name the receiver by host only (webhook URLs often carry a
//! token in their path) and never show the key or a signature.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::policy::Reference;
pub use crate::policy::{NotifyEvent, NotifyTarget};
use crate::state::records::{Rotation, RotationId};
use crate::vault::{Vault, VaultError, describe_reference, resolve_local};

/// Header carrying the event name.
pub const EVENT_HEADER: &str = "X-Rotor-Event";
/// Header carrying the delivery id (a ULID, the same across retries).
pub const DELIVERY_HEADER: &str = "X-Rotor-Delivery";
/// Header carrying the Unix seconds the attempt was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Rotor-Timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "X-Rotor-Signature";
/// How far from its own clock a receiver should accept `X-Rotor-Timestamp`.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// Delay before the first retry, doubled for each further one.
const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Attempts per delivery, the first included.
const DEFAULT_ATTEMPTS: u32 = 5;
/// No wait between attempts is longer, whatever the backoff or `Retry-After` says.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// Per-request timeout, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One event, as sent in the body. Holds names, ids and the words people wrote
/// (reason, ticket), never a secret or a fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// What happened.
    pub event: NotifyEvent,
    /// The policy's name (`metadata.name`).
    pub policy: String,
    /// The rotation's ULID, when the event is about one.
    pub rotation_id: Option<RotationId>,
    /// The approval request's ULID, for approval events.
    pub request_id: Option<String>,
    /// The rotation's status (`completed`, `failed`, …) or the request's state.
    pub status: Option<String>,
    /// What started it (`schedule`, `on_demand`, `compromise`).
    pub trigger: Option<String>,
    /// Who asked (user, API identity, `scheduler`).
    pub actor: Option<String>,
    /// Why, as the actor wrote it.
    pub reason: Option<String>,
    /// Ticket reference.
    pub ticket: Option<String>,
    /// What went wrong or what is asked of the reader (never a secret).
    pub detail: Option<String>,
    /// When the event happened (RFC 3339, UTC).
    pub at: String,
}

impl Notification {
    /// An event about `policy` happening now, with nothing else filled in (approval
    /// requests, quarantine: set the fields that apply).
    pub fn new(event: NotifyEvent, policy: impl Into<String>) -> Self {
        Notification {
            event,
            policy: policy.into(),
            rotation_id: None,
            request_id: None,
            status: None,
            trigger: None,
            actor: None,
            reason: None,
            ticket: None,
            detail: None,
            at: now_rfc3339(),
        }
    }

    /// An event about `rotation`: its id, status, trigger, actor, reason, ticket and
    /// error (as `detail`). Fingerprints, paths and versions are left out.
    pub fn from_rotation(event: NotifyEvent, rotation: &Rotation) -> Self {
        Notification {
            rotation_id: Some(rotation.rotation_id.clone()),
            request_id: rotation.approval_request.clone(),
            status: Some(rotation.status.as_str().to_owned()),
            trigger: Some(rotation.trigger.as_str().to_owned()),
            actor: Some(rotation.actor.clone()),
            reason: rotation.reason.clone(),
            ticket: rotation.ticket.clone(),
            detail: rotation.error.clone(),
            ..Notification::new(event, rotation.policy.clone())
        }
    }
}

/// The body: the notification and its delivery id, so that the id is signed too.
#[derive(Serialize)]
struct Payload<'a> {
    delivery: &'a str,
    #[serde(flatten)]
    notification: &'a Notification,
}

/// The `X-Rotor-Signature` value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the lower-case hex HMAC-SHA256 of `timestamp + "." + body` under `key`.
///
/// ```
/// let sig = rotor::notify::signature(b"key", 1_700_000_000, br#"{"event":"success"}"#);
/// assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
/// ```
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why one delivery attempt failed. Messages name the receiver's host, never its full
/// URL, the key or a signature.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum NotifyError {
    /// The signing key could not be read.
    #[error("reading the signing key {reference} failed")]
    #[strum(serialize = "notify_key")]
    Key {
        /// The reference, described without any value.
        reference: String,
        /// The cause.
        #[source]
        source: VaultError,
    },
    /// The key is in Vault but the notifier has no Vault client.
    #[error("the signing key {reference} is in Vault, but no Vault client is configured")]
    #[strum(serialize = "notify_no_vault")]
    NoVault {
        /// The reference, described without any value.
        reference: String,
    },
    /// The reference does not yield exactly one non-empty value.
    #[error("the signing key {reference} does not name one non-empty value")]
    #[strum(serialize = "notify_key_shape")]
    KeyShape {
        /// The reference, described without any value.
        reference: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("the webhook HTTP client could not be built: {0}")]
    #[strum(serialize = "notify_client")]
    Client(String),
    /// No answer: refused connection, timeout, TLS failure.
    #[error("webhook {host} could not be reached")]
    #[strum(serialize = "notify_transport")]
    Transport {
        /// The receiver's host (and port).
        host: String,
        /// The cause (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// The receiver answered with a status other than 2xx.
    #[error("webhook {host} answered HTTP {status}")]
    #[strum(serialize = "notify_status")]
    Status {
        /// The receiver's host (and port).
        host: String,
        /// The status code.
        status: u16,
        /// Its `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

impl NotifyError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyError::Transport { source, .. } if source.is_timeout() => "timeout",
            other => other.into(),
        }
    }

    /// Whether a later attempt may succeed: no answer, HTTP 408, 429 or 5xx, or a
    /// transient Vault failure while reading the key.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Key { source, .. } => source.is_transient(),
            NotifyError::Transport { source, .. } => !source.is_builder(),
            NotifyError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            NotifyError::NoVault { .. } | NotifyError::KeyShape { .. } | NotifyError::Client(_) => {
                false
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            NotifyError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How often and how patiently a delivery is retried.
#[derive(Debug, Clone, Copy)]
struct Retry {
    base: Duration,
    attempts: u32,
}

impl Retry {
    /// The wait after failed attempt number `attempt` (1-based): `base · 2^(attempt-1)`
    /// plus up to 25 % jitter, at least the receiver's `Retry-After`, at most 5 min.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        let nominal = self.base.saturating_mul(factor).min(MAX_DELAY);
        let jitter = nominal.mul_f64(rand::rng().random_range(0.0..0.25));
        let backoff = (nominal + jitter).min(MAX_DELAY);
        match retry_after {
            Some(wait) => backoff.max(wait.min(MAX_DELAY)),
            None => backoff,
        }
    }
}

/// Sends [`Notification`]s to webhooks. Cheap to clone; clones share the key cache and
/// the count of deliveries in flight.
///
/// Each target's key is read once (from Vault, an environment variable or a file) and
/// cached for the life of the notifier: build a new one (e.g. on reload) to re-read
/// rotated keys.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
    retry: Retry,
}

struct Inner {
    vault: Option<Vault>,
    global: Vec<NotifyTarget>,
    http: Result<reqwest::Client, String>,
    /// Signing keys by reference description.
    keys: Mutex<HashMap<String, Arc<SecretString>>>,
    /// Deliveries started and not yet finished.
    pending: watch::Sender<usize>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("global_targets", &self.inner.global.len())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier that reads Vault keys through `vault` (env and file keys need none)
    /// and also sends to the `global` targets, whatever the policy. Retries: 5 attempts,
    /// waiting about 1 s, 2 s, 4 s, 8 s between them.
    pub fn new(vault: Option<Vault>, global: Vec<NotifyTarget>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT.min(crate::outside::call_timeout()))
            .connect_timeout(CONNECT_TIMEOUT.min(crate::outside::call_timeout()))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::outside::USER_AGENT)
            .build()
            .map_err(|e| crate::error_chain(&e));
        if let Err(error) = &http {
            warn!(error = %error, "The webhook HTTP client could not be built; notifications will fail.");
        }
        let (pending, _) = watch::channel(0);
        Notifier {
            inner: Arc::new(Inner {
                vault,
                global,
                http,
                keys: Mutex::new(HashMap::new()),
                pending,
            }),
            retry: Retry {
                base: DEFAULT_RETRY_BASE,
                attempts: DEFAULT_ATTEMPTS,
            },
        }
    }

    /// The same notifier with another retry schedule: `attempts` tries in all (at
    /// least 1), waiting `base`, `2·base`, `4·base`, … (plus jitter) between them.
    pub fn with_retry(mut self, base: Duration, attempts: u32) -> Self {
        self.retry = Retry {
            base,
            attempts: attempts.max(1),
        };
        self
    }

    /// Sends `n` to every target of `policy_targets` and of the global list whose
    /// `events` include `n.event` (a target listed in both is sent to once). Returns at
    /// once: each delivery runs in a task of its own, retried on no answer, 408, 429
    /// and 5xx, and logs its outcome. Outside a tokio runtime nothing is sent (logged).
    pub fn send(&self, policy_targets: &[NotifyTarget], n: Notification) {
        let targets = self.targets(policy_targets, n.event);
        if targets.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(policy = %n.policy, event = %n.event, "Notification dropped: no async runtime to send it from.");
            return;
        };
        for target in targets {
            let delivery = ulid::Ulid::new().to_string();
            let payload = Payload {
                delivery: &delivery,
                notification: &n,
            };
            let body = match serde_json::to_vec(&payload) {
                Ok(body) => body,
                Err(error) => {
                    // Only strings and enums: serialization cannot fail in practice.
                    warn!(policy = %n.policy, event = %n.event, error = %error, "Notification could not be encoded.");
                    continue;
                }
            };
            let job = Job {
                target,
                delivery,
                event: n.event,
                policy: n.policy.clone(),
                body,
            };
            let guard = InFlight::start(Arc::clone(&self.inner));
            runtime.spawn(deliver(Arc::clone(&self.inner), self.retry, job, guard));
        }
    }

    /// Waits until every delivery started so far has finished (delivered or given up).
    pub async fn flush(&self) {
        let mut pending = self.inner.pending.subscribe();
        // The sender lives in `self.inner`, so the channel cannot close while we wait.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// The targets `event` goes to: the policy's, then the global ones, each once.
    fn targets(&self, policy_targets: &[NotifyTarget], event: NotifyEvent) -> Vec<NotifyTarget> {
        let mut out: Vec<NotifyTarget> = Vec::new();
        for t in policy_targets.iter().chain(&self.inner.global) {
            let seen = out
                .iter()
                .any(|o| o.url == t.url && o.secret_from == t.secret_from);
            if t.wants(event) && !seen {
                out.push(t.clone());
            }
        }
        out
    }
}

/// One delivery: a body for one target.
struct Job {
    target: NotifyTarget,
    delivery: String,
    event: NotifyEvent,
    policy: String,
    body: Vec<u8>,
}

/// Counts a delivery as in flight until dropped (also when its task is cancelled).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn start(inner: Arc<Inner>) -> Self {
        inner.pending.send_modify(|n| *n += 1);
        InFlight(inner)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Tries `job` until it is accepted, fails for good, or runs out of attempts.
async fn deliver(inner: Arc<Inner>, retry: Retry, job: Job, _in_flight: InFlight) {
    let host = host_of(&job.target.url);
    let mut attempt = 1;
    loop {
        match inner.attempt(&job, &host).await {
            Ok(status) => {
                info!(
                    policy = %job.policy, event = %job.event, delivery = %job.delivery,
                    host = %host, status, attempt, "Notification delivered."
                );
                return;
            }
            Err(error) if error.is_transient() && attempt < retry.attempts => {
                let wait = retry.delay(attempt, error.retry_after());
                info!(
                    policy = %job.policy, event = %job.event, delivery = %job.delivery,
                    host = %host, attempt, kind = error.kind(),
                    error = %crate::error_chain(&error), wait_ms = wait.as_millis() as u64,
                    "Notification not delivered yet; retrying."
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => {
                warn!(
                    policy = %job.policy, event = %job.event, delivery = %job.delivery,
                    host = %host, attempt, kind = error.kind(),
                    error = %crate::error_chain(&error),
                    "Notification not delivered; giving up."
                );
                return;
            }
        }
    }
}

impl Inner {
    fn key_cache(&self) -> MutexGuard<'_, HashMap<String, Arc<SecretString>>> {
        // The map is only ever inserted into: a panic elsewhere cannot leave it torn.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing key of `reference`, read on first use and cached.
    async fn key(&self, reference: &Reference) -> Result<Arc<SecretString>, NotifyError> {
        let id = describe_reference(reference);
        if let Some(key) = self.key_cache().get(&id) {
            return Ok(Arc::clone(key));
        }
        let values = match (reference, &self.vault) {
            (Reference::Vault { .. }, Some(vault)) => vault.resolve(reference).await,
            (Reference::Vault { .. }, None) => return Err(NotifyError::NoVault { reference: id }),
            _ => resolve_local(reference),
        }
        .map_err(|source| NotifyError::Key {
            reference: id.clone(),
            source,
        })?;
        let value = match values.get("value") {
            Some(v) if values.len() == 1 && !v.expose_secret().is_empty() => v.clone(),
            _ => return Err(NotifyError::KeyShape { reference: id }),
        };
        let key = Arc::new(value);
        self.key_cache().insert(id, Arc::clone(&key));
        Ok(key)
    }

    /// One signed POST; the status when it was 2xx.
    async fn attempt(&self, job: &Job, host: &str) -> Result<u16, NotifyError> {
        let key = self.key(&job.target.secret_from).await?;
        let http = self
            .http
            .as_ref()
            .map_err(|e| NotifyError::Client(e.clone()))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut sig = reqwest::header::HeaderValue::from_str(&signature(
            key.expose_secret().as_bytes(),
            timestamp,
            &job.body,
        ))
        .map_err(|_| NotifyError::Client("the signature is not a header value".into()))?;
        sig.set_sensitive(true);
        let response = http
            .post(job.target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, job.event.as_str())
            .header(DELIVERY_HEADER, job.delivery.as_str())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sig)
            .body(job.body.clone())
            .send()
            .await
            .map_err(|e| {
                crate::outside::note(crate::outside::System::Webhook, &e);
                NotifyError::Transport {
                    host: host.to_owned(),
                    source: e.without_url(),
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Err(NotifyError::Status {
            host: host.to_owned(),
            status: status.as_u16(),
            retry_after,
        })
    }
}

/// `Retry-After`: delay seconds, or an HTTP date (the wait until then, 0 if past).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The receiver's host and explicit port: all a log may say about a webhook URL.
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "(no host)".to_owned(),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Computed with Python: hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
        let sig = signature(b"k", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "sha256=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        assert_ne!(sig, signature(b"k", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature(b"other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_honours_retry_after() {
        let retry = Retry {
            base: Duration::from_secs(1),
            attempts: 5,
        };
        for (attempt, nominal) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let d = retry.delay(attempt, None);
            let nominal = Duration::from_secs(nominal);
            assert!(
                d >= nominal && d < nominal.mul_f64(1.25),
                "{attempt}: {d:?}"
            );
        }
        assert_eq!(retry.delay(30, None), MAX_DELAY);
        let d = retry.delay(1, Some(Duration::from_secs(30)));
        assert_eq!(d, Duration::from_secs(30));
        assert_eq!(retry.delay(1, Some(Duration::from_secs(86_400))), MAX_DELAY);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let wait = parse_retry_after(&later).expect("date");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_are_retried_as_documented() {
        let status = |status| NotifyError::Status {
            host: "h".into(),
            status,
            retry_after: None,
        };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 301] {
            assert!(!status(s).is_transient(), "{s}");
        }
    }

    #[test]
    fn logs_name_the_host_only() {
        let url = url::Url::parse("https://hooks.example.com/services/T0/B0/secret-token?x=1")
            .expect("url");
        assert_eq!(host_of(&url), "hooks.example.com");
        let url = url::Url::parse("http://127.0.0.1:8080/a").expect("url");
        assert_eq!(host_of(&url), "127.0.0.1:8080");
    }
}
