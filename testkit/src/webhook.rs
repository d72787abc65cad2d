//! [`WebhookReceiver`]: a webhook endpoint on loopback that checks every request the way
//! a careful receiver of rotor's notifications would, written from the documented scheme
//! (not from rotor's code):
//!
//! - `X-Rotor-Signature: sha256=<hex>` must be the HMAC-SHA256, under the receiver's key,
//!   of `X-Rotor-Timestamp + "." + body` (compared in constant time);
//! - `X-Rotor-Timestamp` (Unix seconds) must be within 5 minutes of the receiver's clock;
//! - the body must be a JSON object whose `event` and `delivery` equal the
//!   `X-Rotor-Event` and `X-Rotor-Delivery` headers.
//!
//! A request failing the signature or timestamp check is answered 401, a malformed one
//! 400; both are recorded as [`Rejection`]s. An accepted one is answered 200 and
//! recorded as a [`Delivery`]. [`WebhookReceiver::fail_next`] answers the next requests
//! with a chosen status instead (before any check), to exercise retries. Every request
//! is also recorded as an [`Attempt`] with what was answered and when.
//!
//! The server runs on its own thread with its own tokio runtime (see [`crate::loopback`]);
//! dropping the receiver stops it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::loopback::{self, LoopbackServer};

/// How far from the receiver's clock a timestamp may be.
const REPLAY_WINDOW_SECS: u64 = 300;

/// An accepted, correctly signed notification.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Rotor-Event`.
    pub event: String,
    /// `X-Rotor-Delivery`.
    pub id: String,
    /// The body, parsed.
    pub body: Value,
    /// The body as received.
    pub raw: String,
}

/// A request refused by the checks.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `X-Rotor-Delivery`, if sent.
    pub id: Option<String>,
    /// The status answered (401 or 400).
    pub status: u16,
    /// Which check failed, e.g. `signature does not match`.
    pub reason: String,
}

/// Any request the receiver got, with what it answered.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `X-Rotor-Delivery`, if sent.
    pub id: Option<String>,
    /// `X-Rotor-Event`, if sent.
    pub event: Option<String>,
    /// `X-Rotor-Signature`, if sent (lets a test check that logs never show it).
    pub signature: Option<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// A running webhook receiver. `Debug` leaves the key out.
///
/// ```
/// let receiver = rotor_testkit::WebhookReceiver::start("signing-key");
/// assert!(receiver.url.starts_with("http://127.0.0.1:"));
/// assert!(receiver.deliveries().is_empty());
/// ```
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/webhook`: where to send notifications.
    pub url: String,
    /// `http://127.0.0.1:PORT`: the receiver accepts any path under it.
    pub base_url: String,
    state: Arc<State>,
    _server: LoopbackServer,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

struct State {
    key: Vec<u8>,
    agents: crate::UserAgents,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    deliveries: Vec<Delivery>,
    rejected: Vec<Rejection>,
    attempts: Vec<Attempt>,
    /// Statuses to answer the next requests with, before any check.
    fail: VecDeque<u16>,
    /// `Retry-After` seconds sent with those failures.
    retry_after: Option<u64>,
}

impl State {
    fn log(&self) -> MutexGuard<'_, Log> {
        // Every update is a single push or pop: a panic cannot leave the log torn.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WebhookReceiver {
    /// Starts a receiver on `127.0.0.1:0` that verifies signatures with `key`.
    ///
    /// # Panics
    ///
    /// When the server thread cannot start or bind.
    pub fn start(key: &str) -> WebhookReceiver {
        let state = Arc::new(State {
            key: key.as_bytes().to_vec(),
            agents: crate::UserAgents::default(),
            log: Mutex::new(Log::default()),
        });
        let server_state = Arc::clone(&state);
        let server = loopback::spawn(
            "webhook-receiver",
            service_fn(move |req| handle(Arc::clone(&server_state), req)),
        );
        WebhookReceiver {
            url: format!("{}/webhook", server.url()),
            base_url: server.url(),
            state,
            _server: server,
        }
    }

    /// Accepted deliveries, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.log().deliveries.clone()
    }

    /// Requests refused by the checks, in arrival order.
    pub fn rejected(&self) -> Vec<Rejection> {
        self.state.log().rejected.clone()
    }

    /// Every request, in arrival order, with the status it got.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.log().attempts.clone()
    }

    /// The `User-Agent` of every request that reached the server.
    pub fn user_agents(&self) -> &crate::UserAgents {
        &self.state.agents
    }

    /// Answers the next `n` requests with `status` (e.g. 503), without checking them.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.log().fail.extend(std::iter::repeat_n(status, n));
    }

    /// Sends `Retry-After: <secs>` with the answers [`Self::fail_next`] sets up (`None`:
    /// no header, the default).
    pub fn set_retry_after(&self, secs: Option<u64>) {
        self.state.log().retry_after = secs;
    }

    /// Waits until at least `n` deliveries were accepted and returns them all.
    ///
    /// # Panics
    ///
    /// When `timeout` passes first; the message says what arrived instead.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let log = self.state.log();
                if log.deliveries.len() >= n {
                    return log.deliveries.clone();
                }
                if Instant::now() >= deadline {
                    let reasons: Vec<&str> =
                        log.rejected.iter().map(|r| r.reason.as_str()).collect();
                    panic!(
                        "expected {n} webhook deliveries within {timeout:?}, got {} ({} requests; rejected: {reasons:?})",
                        log.deliveries.len(),
                        log.attempts.len(),
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    state
        .agents
        .record(req.method(), req.uri().path(), req.headers());
    let (parts, body) = req.into_parts();
    let id = header_text(&parts.headers, "x-rotor-delivery");
    let event = header_text(&parts.headers, "x-rotor-event");
    let body = body.collect().await.map(|b| b.to_bytes()).ok();

    let mut log = state.log();
    let mut attempt = Attempt {
        id: id.clone(),
        event: event.clone(),
        signature: header_text(&parts.headers, "x-rotor-signature"),
        status: 0,
        at,
    };
    if let Some(status) = log.fail.pop_front() {
        attempt.status = status;
        log.attempts.push(attempt);
        let mut response = text(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "failing on purpose",
        );
        if let Some(secs) = log.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return Ok(response);
    }
    let verdict = match body {
        None => Err((StatusCode::BAD_REQUEST, "unreadable body".to_owned())),
        Some(body) => check(&state.key, &parts.method, &parts.headers, &body),
    };
    let response = match verdict {
        Ok((event, id, body, raw)) => {
            log.deliveries.push(Delivery {
                event,
                id,
                body,
                raw,
            });
            text(StatusCode::OK, "accepted")
        }
        Err((status, reason)) => {
            log.rejected.push(Rejection {
                id: id.clone(),
                status: status.as_u16(),
                reason: reason.clone(),
            });
            text(status, &reason)
        }
    };
    attempt.status = response.status().as_u16();
    log.attempts.push(attempt);
    Ok(response)
}

type Checked = (String, String, Value, String);

/// The documented checks, in order: method, signature, timestamp, body.
fn check(
    key: &[u8],
    method: &http::Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Checked, (StatusCode, String)> {
    let unauthorized = |reason: &str| Err((StatusCode::UNAUTHORIZED, reason.to_owned()));
    let bad = |reason: &str| Err((StatusCode::BAD_REQUEST, reason.to_owned()));
    if method != http::Method::POST {
        return bad("method is not POST");
    }
    let Some(timestamp) = header_text(headers, "x-rotor-timestamp") else {
        return unauthorized("no X-Rotor-Timestamp");
    };
    let Some(signature) = header_text(headers, "x-rotor-signature") else {
        return unauthorized("no X-Rotor-Signature");
    };
    let Some(sent) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return unauthorized("signature is not sha256=<hex>");
    };
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return unauthorized("unusable key"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    if mac.verify_slice(&sent).is_err() {
        return unauthorized("signature does not match");
    }
    let Ok(ts) = timestamp.parse::<u64>() else {
        return unauthorized("timestamp is not Unix seconds");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if now.abs_diff(ts) > REPLAY_WINDOW_SECS {
        return unauthorized("timestamp outside the 5-minute window");
    }
    let content_type = header_text(headers, "content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return bad("content type is not application/json");
    }
    let Ok(raw) = String::from_utf8(body.to_vec()) else {
        return bad("body is not UTF-8");
    };
    let Ok(parsed) = serde_json::from_str::<Value>(&raw) else {
        return bad("body is not JSON");
    };
    let field = |name: &str| parsed.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(event), Some(id)) = (field("event"), field("delivery")) else {
        return bad("body lacks event or delivery");
    };
    if header_text(headers, "x-rotor-event").as_deref() != Some(event.as_str()) {
        return bad("X-Rotor-Event differs from the body's event");
    }
    if header_text(headers, "x-rotor-delivery").as_deref() != Some(id.as_str()) {
        return bad("X-Rotor-Delivery differs from the body's delivery");
    }
    Ok((event, id, parsed, raw))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn text(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        json!({"message": message}).to_string(),
    )));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], ts: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac");
        mac.update(format!("{ts}.{body}").as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(ts: &str, sig: &str, event: &str, id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-rotor-timestamp", ts.parse().expect("ts"));
        h.insert("x-rotor-signature", sig.parse().expect("sig"));
        h.insert("x-rotor-event", event.parse().expect("event"));
        h.insert("x-rotor-delivery", id.parse().expect("id"));
        h.insert("content-type", "application/json".parse().expect("ct"));
        h
    }

    fn now() -> String {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string()
    }

    #[test]
    fn accepts_a_signed_request_and_refuses_tampering_and_replays() {
        let body = r#"{"delivery":"01J","event":"success","policy":"p"}"#;
        let ts = now();
        let ok = headers(&ts, &sign(b"k", &ts, body), "success", "01J");
        let post = http::Method::POST;
        assert!(check(b"k", &post, &ok, body.as_bytes()).is_ok());

        let tampered = body.replace("\"p\"", "\"q\"");
        let e = check(b"k", &post, &ok, tampered.as_bytes()).expect_err("tampered");
        assert_eq!(e.0, StatusCode::UNAUTHORIZED);

        let e = check(b"other", &post, &ok, body.as_bytes()).expect_err("wrong key");
        assert_eq!(e.1, "signature does not match");

        let old = (now().parse::<u64>().expect("ts") - 301).to_string();
        let stale = headers(&old, &sign(b"k", &old, body), "success", "01J");
        let e = check(b"k", &post, &stale, body.as_bytes()).expect_err("stale");
        assert_eq!(e.1, "timestamp outside the 5-minute window");

        let wrong_event = headers(&ts, &sign(b"k", &ts, body), "failure", "01J");
        let e = check(b"k", &post, &wrong_event, body.as_bytes()).expect_err("event");
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
    }
}
