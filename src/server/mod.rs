//! The agent's HTTP API (axum): health, readiness, metrics, policies and on-demand
//! rotation, with bearer-token / Kubernetes TokenReview authentication, per-identity
//! grants and rate limits, and an audit record for every `/v1` request.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `GET /healthz` | none | 200 while the process serves |
//! | `GET /readyz` | none | 200 / 503 with [`Readiness`] JSON |
//! | `GET /metrics` | none | Prometheus text format 0.0.4 |
//! | `GET /v1/policies` | bearer | the [`crate::api::PolicyView`]s the identity may see |
//! | `GET /v1/policies/{name}` | bearer | one policy |
//! | `POST /v1/policies/{name}/rotate` | bearer | 202 [`crate::api::Accepted`]; body `{reason?, ticket?, compromise?}` |
//! | `POST /v1/policies/{name}/release` | bearer | 200 `{"state": "released"}`; body `{reason}` (required) |
//! | `POST /v1/policies/{name}/retire` | bearer | 200 the retirement record (offboarding: credential disabled, consumers emptied, refusal proven); body `{reason, ticket?}`; 500 with the record when it did not complete |
//! | `POST /v1/policies/{name}/enable` | bearer | 200 `{record, rotation}` (a retired policy rotates to a working credential again); body `{reason, ticket?}` |
//! | `POST /v1/rotations` | bearer | 202 [`crate::api::BulkAccepted`]; body `{selector, reason?, ticket?, compromise?}`: every policy whose labels match (all checked before any is queued) |
//! | `GET /v1/rotations/{id}` | bearer | the [`crate::engine::Rotation`] if its policy is visible |
//! | `GET /v1/requests/{id}` | bearer | the approval request ([`crate::agent::ApprovalRecord`]) if its policy is visible |
//! | `POST /v1/requests/{id}/approve` | bearer | 200 [`crate::api::Accepted`]; body `{reason?}`; 403 unless a listed approver other than the requester, 410 `{error, reason}` once `expired`, `superseded` or `used` |
//!
//! `/v1` checks run in this order: 429 (the peer — remote IPv4 address or IPv6 /64 —
//! has used up its budget of failed authentications, checked before the token is
//! looked at; `Retry-After`), 401 (no or unknown token), 429 (identity over its rate
//! limit, with `Retry-After`), 413 (body over 64 KiB), 400 (a path that does not
//! decode, malformed body), 403 (policy not granted — a name that does not exist is
//! not granted either, so the answer is the same for both; compromise not allowed),
//! 404 (unknown policy the identity would be granted), 400 (reason/ticket the policy
//! requires), then the agent: 409 (busy), 503 (not leader, audit log down), 500.
//! Every `/v1` answer is JSON; error bodies are `{"error": "…"}` ([`crate::api::ErrorBody`])
//! and never contain the token. The bodies and answers are the types of [`crate::api`].
//! Every audited handler opens with the same `call::Call` (record, caller, body,
//! reason/ticket checks). See `gate` and `peers`.
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
mod auth_config;
mod bulk;
mod call;
mod client;
pub mod fuzzing;
mod gate;
mod peers;
mod policies;
mod retire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

pub use auth::{
    AuthMethod, Authentication, Authenticator, Identity, KubeTokenReviewer, TokenReviewer,
};
pub use auth_config::{
    AuthConfig, AuthError, DEFAULT_RATE_LIMIT, DEFAULT_VAULT_MOUNT, Grants, IdentityConfig,
    MIN_TOKEN_LEN, RateLimit, ServiceAccount,
};
pub use bulk::MAX_BULK_POLICIES;
pub use client::{AgentClient, RemoteError};

use crate::agent::{Control, ControlError, Readiness};
use crate::api::{ErrorBody, Health};
use crate::engine::{Asker, RotationId, Trigger};

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
    /// The outcome's name in the audit record (`allowed`, `rate_limited`, …).
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
    pub rotation_id: Option<RotationId>,
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
    /// Answered without an audit record of the refusal (the audit log just failed).
    unaudited: bool,
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
            unaudited: false,
        }
    }

    /// 404: what the caller named does not exist (or it may not know that it does).
    fn not_found(message: impl Into<String>) -> Denial {
        Denial::new(StatusCode::NOT_FOUND, Outcome::NotFound, message)
    }

    fn detail(mut self, detail: impl Into<String>) -> Denial {
        self.detail = Some(detail.into());
        self
    }

    /// The refusal for an agent's error (see the status order in the module docs).
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

    /// The JSON answer: [`ErrorBody`], with `WWW-Authenticate` on a 401 and
    /// `Retry-After` when set.
    fn response(&self) -> Response {
        let body = ErrorBody {
            error: self.message.clone(),
            reason: self.reason.map(str::to_owned),
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

/// What every handler shares: the agent, the authenticator, `/metrics`, the audit
/// sink and the per-peer defences.
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
    /// How the bearer token was checked: a static API token or a Kubernetes TokenReview.
    method: AuthMethod,
}

impl Caller {
    /// A new audit record of a request by this caller.
    fn record(&self, method: &Method, uri: &Uri, remote: SocketAddr) -> RequestAudit {
        let mut record = RequestAudit::new(method, uri, remote);
        record.identity = Some(self.identity.name.clone());
        record.auth = Some(self.method.audit_label());
        record
    }

    /// This caller as the asker of a rotation, retirement or enable.
    fn asker(&self) -> Asker {
        Asker {
            actor: self.identity.actor(),
            authenticated_by: self.method,
            vault_identity: None,
        }
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
}

impl From<ControlError> for Denial {
    fn from(e: ControlError) -> Denial {
        Denial::from_control(&e)
    }
}

/// A 503: the audit record that must come first cannot be written. Answered as is,
/// never audited (the audit log just failed).
fn audit_unavailable() -> Denial {
    let mut denial = Denial::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Failed,
        "the audit log cannot be written; nothing was done",
    );
    denial.unaudited = true;
    denial
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
        .route("/v1/policies", get(policies::list_policies))
        .route("/v1/policies/{name}", get(policies::get_policy))
        .route("/v1/policies/{name}/rotate", post(policies::rotate))
        .route("/v1/policies/{name}/release", post(policies::release))
        .route("/v1/policies/{name}/retire", post(retire::retire))
        .route("/v1/policies/{name}/enable", post(retire::enable))
        .route("/v1/rotations", post(bulk::rotate_selected))
        .route("/v1/rotations/{id}", get(policies::get_rotation))
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
    axum::Json(Health { status: "ok" }).into_response()
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

/// The address the request came from (the connection's peer).
async fn peer(parts: &mut Parts, app: &Arc<App>) -> Result<SocketAddr, Response> {
    let ConnectInfo(remote) = ConnectInfo::<SocketAddr>::from_request_parts(parts, app)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(remote)
}

/// A request no route takes, with what the audit needs about it.
struct Unrouted {
    app: Arc<App>,
    remote: SocketAddr,
    caller: Option<Caller>,
    method: Method,
    uri: Uri,
}

impl FromRequestParts<Arc<App>> for Unrouted {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let remote = peer(parts, app).await?;
        Ok(Unrouted {
            app: Arc::clone(app),
            remote,
            caller: parts.extensions.get::<Caller>().cloned(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        })
    }
}

impl Unrouted {
    /// Answers `denial`; under `/v1` the request was authenticated by [`gate::gate`]
    /// (401 first) and is audited like any other API request.
    async fn refuse(self, denial: Denial) -> Response {
        match self.caller {
            Some(caller) if gate::is_api(self.uri.path()) => {
                let record = caller.record(&self.method, &self.uri, self.remote);
                self.app.refuse(record, denial).await
            }
            _ => denial.response(),
        }
    }
}

async fn fallback(unrouted: Unrouted) -> Response {
    let message = format!("no endpoint {} {}", unrouted.method, unrouted.uri.path());
    let denial = Denial::new(StatusCode::NOT_FOUND, Outcome::NotFound, message);
    unrouted.refuse(denial).await
}

async fn method_not_allowed(unrouted: Unrouted) -> Response {
    let message = format!(
        "{} is not allowed on {}",
        unrouted.method,
        unrouted.uri.path()
    );
    let denial = Denial::new(StatusCode::METHOD_NOT_ALLOWED, Outcome::Invalid, message);
    unrouted.refuse(denial).await
}
