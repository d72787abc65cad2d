//! The front of every `/v1` request, before any route: the per-peer throttle, then
//! authentication and the identity's rate limit, then the route; an answer the route
//! did not make itself (a request body over the limit, a path that does not decode, a
//! missing extractor) is turned into a JSON error and audited. So every `/v1` answer
//! is JSON, a refusal of an unauthenticated request is always 401 (or the peer's 429),
//! and every refusal is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{App, Authentication, Caller, Denial, MAX_BODY, Outcome, RequestAudit};

/// How often counted refusal records whose window is over are written.
const COUNTED_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Longest rejection text read back from a route's plain-text answer.
const MAX_REJECTION_TEXT: usize = 4096;

/// Whether `path` is under the authenticated, audited API.
pub(super) fn is_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The middleware (see the module documentation).
pub(super) async fn gate(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_api(request.uri().path()) {
        return next.run(request).await;
    }
    let mut record = RequestAudit::new(request.method(), request.uri(), remote);
    record.policy = policy_in_path(request.uri().path());
    let ip = remote.ip();
    let mut due = Vec::new();
    let admitted = app.peers.admit(ip, Instant::now(), &mut due);
    app.write_counted(due).await;
    if let Err(wait) = admitted {
        return app.refuse(record, peer_throttled(wait)).await;
    }
    let caller = match authenticate(&app, request.headers(), &mut record).await {
        Ok(caller) => caller,
        Err(denial) => {
            // Only a failed authentication spends the peer's budget.
            if denial.status != StatusCode::UNAUTHORIZED {
                app.peers.refund(ip, Instant::now());
            }
            return app.refuse(record, denial).await;
        }
    };
    app.peers.refund(ip, Instant::now());
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || response.status().is_success() {
        return response;
    }
    rejected(&app, record, response).await
}

/// Authenticates the request (noting who on `record`) and takes one request from the
/// identity's budget.
async fn authenticate(
    app: &App,
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
    let caller = match app.auth.authenticate(token).await {
        Ok(Authentication::Known { identity, method }) => {
            let caller = Caller { identity, method };
            record.identity = Some(caller.identity.name.clone());
            record.auth = Some(method.audit_label());
            caller
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
    if let Err(wait) = app.auth.check_rate(&caller.identity) {
        let identity = &caller.identity;
        return Err(too_many(wait, |secs| {
            format!(
                "identity {} is over its rate limit ({} requests per {}s); retry in {secs}s",
                identity.name,
                identity.rate_limit.requests,
                identity.rate_limit.per.as_secs()
            )
        }));
    }
    Ok(caller)
}

/// The policy name of a `/v1/policies/{name}…` path, percent-decoded (for the audit
/// record of a request refused before its route); `None` when it does not decode.
fn policy_in_path(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/v1/policies/")?.split('/').next()?;
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded)
        .ok()
        .filter(|name| !name.is_empty())
}

/// A 429 for a peer over its budget of failed authentications.
fn peer_throttled(wait: Duration) -> Denial {
    too_many(wait, |secs| {
        format!("too many failed authentications from this address; retry in {secs}s")
    })
}

/// A 429 with `Retry-After`: `wait` in whole seconds (rounded up, at least 1), also
/// given to `message`.
fn too_many(wait: Duration, message: impl FnOnce(u64) -> String) -> Denial {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut denial = Denial::new(
        StatusCode::TOO_MANY_REQUESTS,
        Outcome::RateLimited,
        message(secs),
    );
    denial.retry_after = Some(secs);
    denial
}

/// Audits a refusal the route did not make itself (axum's plain-text rejections) and
/// answers it as JSON with the same status.
async fn rejected(app: &App, record: RequestAudit, response: Response) -> Response {
    let status = response.status();
    let text = match axum::body::to_bytes(response.into_body(), MAX_REJECTION_TEXT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is larger than {MAX_BODY} bytes")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text
    };
    let outcome = match status {
        StatusCode::UNAUTHORIZED => Outcome::Unauthenticated,
        StatusCode::FORBIDDEN => Outcome::Forbidden,
        StatusCode::NOT_FOUND => Outcome::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Outcome::RateLimited,
        s if s.is_server_error() => Outcome::Failed,
        _ => Outcome::Invalid,
    };
    app.refuse(record, Denial::new(status, outcome, message))
        .await
}

/// Writes counted refusal records whose window is over, every
/// [`COUNTED_FLUSH_EVERY`], until `stopped` turns true.
pub(super) async fn write_counted_records(
    app: Arc<App>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(COUNTED_FLUSH_EVERY) => false,
            _ = stopped.wait_for(|s| *s) => true,
        };
        if stop {
            return;
        }
        app.write_counted(app.peers.due(Instant::now(), false))
            .await;
    }
}
