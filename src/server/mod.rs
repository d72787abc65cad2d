//! The agent's HTTP API (axum): health, readiness, metrics, policies and on-demand
//! rotation, with bearer-token / Kubernetes TokenReview authentication, per-identity
//! grants and rate limits, and an audit record for every `/v1` request.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `GET /healthz` | none | 200 while the process serves |
//! | `GET /readyz` | none | 200 / 503 with [`Readiness`] JSON |
//! | `GET /metrics` | none | Prometheus text format 0.0.4 |
//! | `GET /v1/policies` | bearer | the [`crate::agent::PolicyView`]s the identity may see |
//! | `GET /v1/policies/{name}` | bearer | one policy |
//! | `POST /v1/policies/{name}/rotate` | bearer | 202 [`crate::agent::Accepted`]; body `{reason?, ticket?, compromise?}` |
//! | `POST /v1/policies/{name}/release` | bearer | 200 `{"state": "released"}`; body `{reason}` (required) |
//! | `POST /v1/policies/{name}/retire` | bearer | 200 the retirement record (offboarding: credential disabled, consumers emptied, refusal proven); body `{reason, ticket?}`; 500 with the record when it did not complete |
//! | `POST /v1/policies/{name}/enable` | bearer | 200 `{record, rotation}` (a retired policy rotates to a working credential again); body `{reason, ticket?}` |
//! | `POST /v1/rotations` | bearer | 202 [`BulkAccepted`]; body `{selector, reason?, ticket?, compromise?}`: every policy whose labels match (all checked before any is queued) |
//! | `GET /v1/rotations/{id}` | bearer | the [`Rotation`] if its policy is visible |
//! | `GET /v1/requests/{id}` | bearer | the approval request ([`crate::agent::ApprovalRecord`]) if its policy is visible |
//! | `POST /v1/requests/{id}/approve` | bearer | 200 [`crate::agent::Accepted`]; body `{reason?}`; 403 unless a listed approver other than the requester, 410 `{error, reason}` once `expired`, `superseded` or `used` |
//!
//! `/v1` checks run in this order: 429 (the peer — remote IPv4 address or IPv6 /64 —
//! has used up its budget of failed authentications, checked before the token is
//! looked at; `Retry-After`), 401 (no or unknown token), 429 (identity over its rate
//! limit, with `Retry-After`), 413 (body over 64 KiB), 400 (a path that does not
//! decode, malformed body), 403 (policy not granted — a name that does not exist is
//! not granted either, so the answer is the same for both; compromise not allowed),
//! 404 (unknown policy the identity would be granted), 400 (reason/ticket the policy
//! requires), then the agent: 409 (busy), 503 (not leader, audit log down), 500.
//! Every `/v1` answer is JSON; error bodies are `{"error": "…"}` and never contain the
//! token. See `gate` and `peers`.
//!
//! Auditing: each `/v1` request produces one [`RequestAudit`] with its final status,
//! except that refusals with status 401 or 429 from one peer are written one by one
//! only for the first five of each minute (per identity or none, and status); the
//! others are counted and written as one record with `count` when the minute is over
//! (or the server stops).
//! A rotate or release request that passes every check first produces an `authorized` record;
//! if that record cannot be written the answer is 503 and the agent is not asked
//! (fail closed), otherwise a second record carries the agent's answer. A read whose
//! record cannot be written is answered 503 instead of its data. Health, readiness and
//! metrics are not audited (no identity; Prometheus scrapes every few seconds).

mod approval;
mod auth;
mod bulk;
mod client;
pub mod fuzzing;
mod gate;
mod peers;
mod retire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use auth::{
    AuthConfig, AuthError, AuthMethod, Authentication, Authenticator, DEFAULT_RATE_LIMIT,
    DEFAULT_VAULT_MOUNT, Grants, Identity, IdentityConfig, KubeTokenReviewer, MIN_TOKEN_LEN,
    RateLimit, ServiceAccount, TokenReviewer,
};
pub use bulk::{BulkAccepted, BulkItem, MAX_BULK_POLICIES};
pub use client::{
    RemoteError, remote_approval_request, remote_approve, remote_enable, remote_policies,
    remote_policy, remote_release, remote_retire, remote_rotate, remote_rotate_selected,
    remote_rotation,
};

use crate::agent::{Control, ControlError, PolicyMeta, Readiness};
use crate::engine::{Rotation, RotationRequest, Trigger};

/// Where `rotor run` listens when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";

/// Content type of `/metrics` (Prometheus text exposition format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest accepted `reason`, in characters.
pub const MAX_REASON_LEN: usize = 1024;

/// Longest accepted `ticket`, in characters.
pub const MAX_TICKET_LEN: usize = 256;

/// Largest accepted request body, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// What `rotor run` needs to start the API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (`--listen`).
    pub listen: SocketAddr,
    /// Identities (`--auth-config`).
    pub auth: AuthConfig,
}

/// The Prometheus text of every metric (e.g. `move || metrics.encode()`).
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Writes one request record to the audit trail; `Err` (a reason, no secret) means it
/// was not written. Called on a blocking thread, so it may do file I/O.
pub type AuditFn = Arc<dyn Fn(RequestAudit) -> Result<(), String> + Send + Sync>;

/// How a request ended, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Served (a read), or the rotation was accepted by the agent.
    Allowed,
    /// A rotate request passed every check; the agent is asked next.
    Authorized,
    /// No token, or one that belongs to nobody (401).
    Unauthenticated,
    /// Not granted the policy, or not allowed compromise (403).
    Forbidden,
    /// Malformed body or missing reason/ticket (400).
    Invalid,
    /// Over the identity's rate limit (429).
    RateLimited,
    /// No such policy, rotation or endpoint (404).
    NotFound,
    /// The agent refused or failed (409, 410, 5xx).
    Failed,
}

impl Outcome {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Authorized => "authorized",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Invalid => "invalid",
            Outcome::RateLimited => "rate_limited",
            Outcome::NotFound => "not_found",
            Outcome::Failed => "failed",
        }
    }
}

/// The audit record of one API request. Never holds the token.
#[derive(Debug, Clone, Serialize)]
pub struct RequestAudit {
    /// When the record was made (RFC 3339, UTC).
    pub at: String,
    /// The caller's identity, once authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `token` or `kubernetes`, once authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<&'static str>,
    /// HTTP method.
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// The policy concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The rotation concerned, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// For rotate requests: `on_demand` or `compromise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// For rotate requests: the reason given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For rotate requests: the ticket given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// HTTP status answered (for `authorized`: 202, the answer if the agent accepts).
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, for people.
    pub detail: String,
    /// The peer's address.
    pub remote: SocketAddr,
    /// How many requests this record stands for: 1, or more for refusals of one kind
    /// from one peer counted in one record (see `peers`).
    pub count: u64,
}

impl RequestAudit {
    fn new(method: &Method, uri: &Uri, remote: SocketAddr) -> RequestAudit {
        RequestAudit {
            at: String::new(),
            identity: None,
            auth: None,
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            policy: None,
            rotation_id: None,
            trigger: None,
            reason: None,
            ticket: None,
            status: 0,
            outcome: Outcome::Allowed,
            detail: String::new(),
            remote,
            count: 1,
        }
    }
}

/// An error answer with what to audit about it.
struct Denial {
    status: StatusCode,
    outcome: Outcome,
    /// Sent to the caller.
    message: String,
    /// Recorded in the audit (defaults to `message`).
    detail: Option<String>,
    retry_after: Option<u64>,
    /// Sent as `reason` beside `error` (410: `expired`, `superseded`, `used`).
    reason: Option<&'static str>,
}

impl Denial {
    fn new(status: StatusCode, outcome: Outcome, message: impl Into<String>) -> Denial {
        Denial {
            status,
            outcome,
            message: message.into(),
            detail: None,
            retry_after: None,
            reason: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Denial {
        self.detail = Some(detail.into());
        self
    }

    fn from_control(e: &ControlError) -> Denial {
        let text = e.to_string();
        match e {
            ControlError::UnknownPolicy(_) => {
                Denial::new(StatusCode::NOT_FOUND, Outcome::NotFound, text)
            }
            ControlError::Incomplete { .. } => {
                Denial::new(StatusCode::BAD_REQUEST, Outcome::Invalid, text)
            }
            ControlError::Busy(_) => Denial::new(StatusCode::CONFLICT, Outcome::Failed, text),
            ControlError::UnknownRequest(_) => {
                Denial::new(StatusCode::NOT_FOUND, Outcome::NotFound, text)
            }
            ControlError::Forbidden(_) => {
                Denial::new(StatusCode::FORBIDDEN, Outcome::Forbidden, text)
            }
            ControlError::Gone { reason, .. } => {
                let mut d = Denial::new(StatusCode::GONE, Outcome::Failed, text);
                d.reason = Some(reason);
                d
            }
            ControlError::NotLeader | ControlError::Audit(_) => {
                Denial::new(StatusCode::SERVICE_UNAVAILABLE, Outcome::Failed, text)
            }
            ControlError::Internal(_) => Denial::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::Failed,
                "internal error; see the agent's log",
            )
            .detail(text),
        }
    }

    fn response(&self) -> Response {
        let body = match self.reason {
            Some(reason) => json!({"error": self.message, "reason": reason}),
            None => json!({"error": self.message}),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rotor\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

struct App {
    control: Arc<dyn Control>,
    auth: Arc<Authenticator>,
    metrics: MetricsFn,
    audit: Option<AuditFn>,
    /// Per-peer throttle and refusal counts (see `peers`).
    peers: peers::Peers,
}

/// An authenticated caller (put in the request's extensions by [`gate::gate`]).
#[derive(Clone)]
struct Caller {
    identity: Arc<Identity>,
    /// `token` or `kubernetes`.
    auth: &'static str,
}

impl Caller {
    /// How the caller proved who they are, for the records of what they start.
    fn authenticated_by(&self) -> crate::audit::AuthMethod {
        if self.auth == "kubernetes" {
            crate::audit::AuthMethod::KubernetesTokenReview
        } else {
            crate::audit::AuthMethod::ApiToken
        }
    }

    /// A new audit record of a request by this caller.
    fn record(&self, method: &Method, uri: &Uri, remote: SocketAddr) -> RequestAudit {
        let mut record = RequestAudit::new(method, uri, remote);
        record.identity = Some(self.identity.name.clone());
        record.auth = Some(self.auth);
        record
    }
}

impl App {
    /// Sends `record` to the audit callback on a blocking thread (and to the log).
    async fn audit(&self, mut record: RequestAudit) -> Result<(), String> {
        record.at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let identity = record.identity.as_deref().unwrap_or("-");
        if record.status >= 400 {
            tracing::warn!(
                identity, method = %record.method, path = %record.path, status = record.status,
                outcome = record.outcome.as_str(), remote = %record.remote, detail = %record.detail,
                count = record.count, "API request refused."
            );
        } else {
            tracing::info!(
                identity, method = %record.method, path = %record.path, status = record.status,
                outcome = record.outcome.as_str(), remote = %record.remote,
                "API request."
            );
        }
        let Some(sink) = self.audit.clone() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || sink(record)).await {
            Ok(result) => result,
            Err(e) => Err(format!("the audit writer panicked or was cancelled: {e}")),
        }
    }

    /// Audits a refused request and answers it. A failed audit does not change the
    /// answer (the caller gets nothing either way); it is logged.
    async fn refuse(&self, mut record: RequestAudit, denial: Denial) -> Response {
        record.status = denial.status.as_u16();
        record.outcome = denial.outcome;
        record.detail = denial
            .detail
            .clone()
            .unwrap_or_else(|| denial.message.clone());
        let folded = self
            .peers
            .fold(&record, std::time::Instant::now(), chrono::Utc::now());
        self.write_counted(folded.due).await;
        if folded.write {
            if let Err(error) = self.audit(record).await {
                tracing::error!(error = %error, "Writing the audit record of a refused API request failed.");
            }
        } else {
            tracing::debug!(
                method = %record.method, path = %record.path, status = record.status,
                remote = %record.remote, detail = %record.detail,
                "API request refused; counted in the peer's next audit record."
            );
        }
        denial.response()
    }

    /// Writes counted refusal records (see `peers`); a failure is logged.
    async fn write_counted(&self, records: Vec<RequestAudit>) {
        for record in records {
            if let Err(error) = self.audit(record).await {
                tracing::error!(error = %error, "Writing a counted audit record of refused API requests failed.");
            }
        }
    }

    /// Audits a successful request; answers 503 instead when the record cannot be written.
    async fn serve_audited(
        &self,
        mut record: RequestAudit,
        detail: impl Into<String>,
        response: Response,
    ) -> Response {
        record.status = response.status().as_u16();
        record.outcome = Outcome::Allowed;
        record.detail = detail.into();
        match self.audit(record).await {
            Ok(()) => response,
            Err(error) => {
                tracing::error!(error = %error, "Writing the audit record of an API request failed; answering 503.");
                audit_unavailable().response()
            }
        }
    }

    /// Authenticates the request and takes one request from the identity's budget.
    async fn caller(
        &self,
        headers: &HeaderMap,
        record: &mut RequestAudit,
    ) -> Result<Caller, Denial> {
        let unauthenticated =
            |m: &str| Denial::new(StatusCode::UNAUTHORIZED, Outcome::Unauthenticated, m);
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthenticated(
                "missing bearer token (Authorization: Bearer …)",
            ));
        };
        let Some(token) = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
        else {
            return Err(unauthenticated("expected Authorization: Bearer <token>"));
        };
        let (identity, auth) = match self.auth.authenticate(token).await {
            Ok(Authentication::Known { identity, method }) => {
                let auth = match method {
                    AuthMethod::Token => "token",
                    AuthMethod::Kubernetes => "kubernetes",
                };
                record.identity = Some(identity.name.clone());
                record.auth = Some(auth);
                (identity, auth)
            }
            Ok(Authentication::Unknown { detail }) => {
                return Err(unauthenticated("invalid bearer token").detail(detail));
            }
            Err(e) => {
                return Err(Denial::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Outcome::Failed,
                    "the token cannot be checked right now; try again",
                )
                .detail(crate::error_chain(&e)));
            }
        };
        if let Err(wait) = self.auth.check_rate(&identity) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut denial = Denial::new(
                StatusCode::TOO_MANY_REQUESTS,
                Outcome::RateLimited,
                format!(
                    "identity {} is over its rate limit ({} requests per {}s); retry in {secs}s",
                    identity.name,
                    identity.rate_limit.requests,
                    identity.rate_limit.per.as_secs()
                ),
            );
            denial.retry_after = Some(secs.max(1));
            return Err(denial);
        }
        Ok(Caller { identity, auth })
    }
}

fn audit_unavailable() -> Denial {
    Denial::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Failed,
        "the audit log cannot be written; nothing was done",
    )
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests
/// in flight. `metrics` renders `/metrics`; `audit`, when given, receives a
/// [`RequestAudit`] for every `/v1` request (see the module documentation).
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn Control>,
    auth: Arc<Authenticator>,
    metrics: MetricsFn,
    audit: Option<AuditFn>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Arc::new(App {
        control,
        auth,
        metrics,
        audit,
        peers: peers::Peers::new(peers::PeerLimits::default()),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let counter = tokio::spawn(gate::write_counted_records(Arc::clone(&app), stopped));
    let served = axum::serve(
        listener,
        router(Arc::clone(&app)).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    let _ = stop.send(true);
    if let Err(e) = counter.await {
        tracing::error!(error = %e, "The task writing counted audit records failed.");
    }
    // What is still counted is written before the server is done.
    app.write_counted(app.peers.due(std::time::Instant::now(), true))
        .await;
    served
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{name}", get(get_policy))
        .route("/v1/policies/{name}/rotate", post(rotate))
        .route("/v1/policies/{name}/release", post(release))
        .route("/v1/policies/{name}/retire", post(retire::retire))
        .route("/v1/policies/{name}/enable", post(retire::enable))
        .route("/v1/rotations", post(bulk::rotate_selected))
        .route("/v1/rotations/{id}", get(get_rotation))
        .route("/v1/requests/{id}", get(approval::get_request))
        .route("/v1/requests/{id}/approve", post(approval::approve))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            gate::gate,
        ))
        .with_state(app)
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness: Readiness = app.control.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        (app.metrics)(),
    )
        .into_response()
}

async fn list_policies(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
) -> Response {
    let record = caller.record(&method, &uri, remote);
    let visible: Vec<_> = app
        .control
        .policies()
        .await
        .into_iter()
        .filter(|p| caller.identity.may_access(&p.name, &p.labels))
        .collect();
    let detail = format!("listed {} policies", visible.len());
    app.serve_audited(record, detail, axum::Json(visible).into_response())
        .await
}

async fn get_policy(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(name): Path<String>,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    record.policy = Some(name.clone());
    let view = app
        .control
        .policies()
        .await
        .into_iter()
        .find(|p| p.name == name);
    let labels = view.as_ref().map(|v| &v.labels);
    if let Err(d) = grant_check(&caller, &name, labels) {
        return app.refuse(record, d).await;
    }
    let Some(view) = view else {
        return app.refuse(record, no_policy(&name)).await;
    };
    app.serve_audited(record, "read policy", axum::Json(view).into_response())
        .await
}

/// The named policy's facts, when the caller is granted it and it exists.
fn granted_policy(app: &App, caller: &Caller, name: &str) -> Result<PolicyMeta, Denial> {
    let meta = app.control.policy_meta(name);
    grant_check(caller, name, meta.as_ref().map(|m| &m.labels))?;
    meta.ok_or_else(|| no_policy(name))
}

/// 403 unless the caller is granted the policy `name` with `labels` (`None`: there is
/// no such policy). The grant is checked first, and a missing policy has no labels,
/// so a caller gets the same answer for a policy it is not granted and for a name
/// that does not exist (only the audit record tells them apart); 404 is for names the
/// caller would be granted (by name or `*`).
fn grant_check(
    caller: &Caller,
    name: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), Denial> {
    let none = std::collections::BTreeMap::new();
    if caller.identity.may_access(name, labels.unwrap_or(&none)) {
        return Ok(());
    }
    let d = not_granted(caller, name);
    Err(match labels {
        Some(_) => d,
        None => {
            let detail = format!("{} (there is no policy of that name)", d.message);
            d.detail(detail)
        }
    })
}

fn no_policy(name: &str) -> Denial {
    Denial::new(
        StatusCode::NOT_FOUND,
        Outcome::NotFound,
        format!("no policy named {name}"),
    )
}

/// A 400 for a request the caller must correct.
fn invalid(message: String) -> Denial {
    Denial::new(StatusCode::BAD_REQUEST, Outcome::Invalid, message)
}

/// The JSON body of a request: its type's default when the body is empty, a 400
/// naming the expected `shape` when it does not parse.
fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    shape: &str,
) -> Result<T, Denial> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("the body must be JSON {shape}: {e}")))
}

/// A 400 when `text` is longer than `max` characters.
fn too_long(text: Option<&str>, max: usize, what: &str) -> Option<Denial> {
    text.filter(|t| t.chars().count() > max)
        .map(|_| invalid(format!("{what} is longer than {max} characters")))
}

fn not_granted(caller: &Caller, policy: &str) -> Denial {
    Denial::new(
        StatusCode::FORBIDDEN,
        Outcome::Forbidden,
        format!(
            "identity {} is not granted policy {policy}",
            caller.identity.name
        ),
    )
}

/// The body of `POST /v1/policies/{name}/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    compromise: Option<bool>,
}

/// `Some(trimmed)` unless absent or blank.
fn given(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A request's reason and ticket, trimmed (blank is none) and noted on `record`; one
/// over its length limit refuses the request and is left out of the record.
fn reason_and_ticket(
    record: &mut RequestAudit,
    reason: Option<String>,
    ticket: Option<String>,
) -> Result<(Option<String>, Option<String>), Denial> {
    let reason = given(reason);
    let ticket = given(ticket);
    let long_reason = too_long(reason.as_deref(), MAX_REASON_LEN, "reason");
    let long_ticket = too_long(ticket.as_deref(), MAX_TICKET_LEN, "ticket");
    record.reason = reason.clone().filter(|_| long_reason.is_none());
    record.ticket = ticket.clone().filter(|_| long_ticket.is_none());
    match long_reason.or(long_ticket) {
        Some(d) => Err(d),
        None => Ok((reason, ticket)),
    }
}

async fn rotate(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    record.policy = Some(name.clone());

    let parsed: RotateBody = match json_body(
        &body,
        "{\"reason\": string?, \"ticket\": string?, \"compromise\": bool?}",
    ) {
        Ok(b) => b,
        Err(d) => return app.refuse(record, d).await,
    };
    let compromise = parsed.compromise.unwrap_or(false);
    let trigger = if compromise {
        Trigger::Compromise
    } else {
        Trigger::OnDemand
    };
    record.trigger = Some(trigger);
    let (reason, ticket) = match reason_and_ticket(&mut record, parsed.reason, parsed.ticket) {
        Ok(t) => t,
        Err(d) => return app.refuse(record, d).await,
    };

    let meta = match granted_policy(&app, &caller, &name) {
        Ok(meta) => meta,
        Err(d) => return app.refuse(record, d).await,
    };
    if compromise && !caller.identity.compromise {
        let d = Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!(
                "identity {} may not request compromise rotations",
                caller.identity.name
            ),
        );
        return app.refuse(record, d).await;
    }
    if meta.require_reason && reason.is_none() {
        let d = invalid(format!(
            "policy {name} requires a reason for on-demand rotations"
        ));
        return app.refuse(record, d).await;
    }
    if meta.require_ticket && ticket.is_none() {
        let d = invalid(format!(
            "policy {name} requires a ticket for on-demand rotations"
        ));
        return app.refuse(record, d).await;
    }

    // Fail closed: nothing is asked of the agent unless this record is written.
    let mut authorized = record.clone();
    authorized.status = StatusCode::ACCEPTED.as_u16();
    authorized.outcome = Outcome::Authorized;
    authorized.detail = format!("{} rotation requested", trigger.as_str());
    if let Err(error) = app.audit(authorized).await {
        tracing::error!(policy = %name, error = %error, "Writing the audit record of a rotate request failed; the rotation was not requested.");
        return audit_unavailable().response();
    }

    let request = RotationRequest {
        trigger,
        actor: caller.identity.actor(),
        reason,
        ticket,
        // Skips the policy's approval, if it requires one (the agent decides).
        break_glass: compromise && caller.identity.break_glass,
        authenticated_by: caller.authenticated_by(),
        ..Default::default()
    };
    match app.control.rotate(&name, request).await {
        Ok(accepted) => {
            record.rotation_id = accepted.rotation_id.clone();
            record.status = StatusCode::ACCEPTED.as_u16();
            record.outcome = Outcome::Allowed;
            record.detail = match &accepted.request_id {
                Some(id) => format!("rotation {} (approval request {id})", accepted.state),
                None => format!("rotation {}", accepted.state),
            };
            if let Err(error) = app.audit(record).await {
                // The rotation is already queued: say so, and log the lost record.
                tracing::error!(policy = %name, error = %error, "Writing the audit record of an accepted rotation failed.");
            }
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
        }
        Err(e) => app.refuse(record, Denial::from_control(&e)).await,
    }
}

/// The body of `POST /v1/policies/{name}/release`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Lifts a policy's quarantine; checked and audited like [`rotate`], and a reason is
/// always required.
async fn release(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    record.policy = Some(name.clone());

    let parsed: ReleaseBody = match json_body(&body, "{\"reason\": string}") {
        Ok(b) => b,
        Err(d) => return app.refuse(record, d).await,
    };
    let reason = match reason_and_ticket(&mut record, parsed.reason, None) {
        Ok((reason, _)) => reason,
        Err(d) => return app.refuse(record, d).await,
    };

    if let Err(d) = granted_policy(&app, &caller, &name) {
        return app.refuse(record, d).await;
    }
    let Some(reason) = reason else {
        let d = invalid(format!(
            "releasing policy {name} from quarantine requires a reason"
        ));
        return app.refuse(record, d).await;
    };

    // Fail closed: nothing is asked of the agent unless this record is written.
    let mut authorized = record.clone();
    authorized.status = StatusCode::OK.as_u16();
    authorized.outcome = Outcome::Authorized;
    authorized.detail = "quarantine release requested".to_owned();
    if let Err(error) = app.audit(authorized).await {
        tracing::error!(policy = %name, error = %error, "Writing the audit record of a release request failed; the quarantine was not lifted.");
        return audit_unavailable().response();
    }

    match app
        .control
        .release(&name, &caller.identity.actor(), &reason)
        .await
    {
        Ok(()) => {
            record.status = StatusCode::OK.as_u16();
            record.outcome = Outcome::Allowed;
            record.detail = "quarantine released".to_owned();
            if let Err(error) = app.audit(record).await {
                // The quarantine is already lifted: say so, and log the lost record.
                tracing::error!(policy = %name, error = %error, "Writing the audit record of a released quarantine failed.");
            }
            (StatusCode::OK, axum::Json(json!({"state": "released"}))).into_response()
        }
        Err(e) => app.refuse(record, Denial::from_control(&e)).await,
    }
}

async fn get_rotation(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let mut record = caller.record(&method, &uri, remote);
    record.rotation_id = Some(id.clone());
    let rotation: Rotation = match app.control.rotation(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let d = Denial::new(
                StatusCode::NOT_FOUND,
                Outcome::NotFound,
                format!("no rotation {id}"),
            );
            return app.refuse(record, d).await;
        }
        Err(e) => return app.refuse(record, Denial::from_control(&e)).await,
    };
    record.policy = Some(rotation.policy.clone());
    let labels = app
        .control
        .policy_meta(&rotation.policy)
        .map(|m| m.labels)
        .unwrap_or_default();
    if !caller.identity.may_access(&rotation.policy, &labels) {
        // The caller is not told which policy the rotation belongs to.
        let d = Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!(
                "identity {} may not see rotation {id}",
                caller.identity.name
            ),
        );
        return app.refuse(record, d).await;
    }
    app.serve_audited(
        record,
        "read rotation",
        axum::Json(rotation).into_response(),
    )
    .await
}

async fn fallback(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    caller: Option<Extension<Caller>>,
    method: Method,
    uri: Uri,
) -> Response {
    let denial = Denial::new(
        StatusCode::NOT_FOUND,
        Outcome::NotFound,
        format!("no endpoint {} {}", method, uri.path()),
    );
    refuse_unrouted(&app, remote, caller, method, uri, denial).await
}

async fn method_not_allowed(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    caller: Option<Extension<Caller>>,
    method: Method,
    uri: Uri,
) -> Response {
    let denial = Denial::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Outcome::Invalid,
        format!("{} is not allowed on {}", method, uri.path()),
    );
    refuse_unrouted(&app, remote, caller, method, uri, denial).await
}

/// Answers a request no route takes; under `/v1` it was authenticated by
/// [`gate::gate`] (401 first) and is audited like any other API request.
async fn refuse_unrouted(
    app: &App,
    remote: SocketAddr,
    caller: Option<Extension<Caller>>,
    method: Method,
    uri: Uri,
    denial: Denial,
) -> Response {
    match caller {
        Some(Extension(caller)) if gate::is_api(uri.path()) => {
            let record = caller.record(&method, &uri, remote);
            app.refuse(record, denial).await
        }
        _ => denial.response(),
    }
}
