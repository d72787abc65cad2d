//! [`FakeKeyApi`]: a small API-key service on loopback that behaves like a real one (a
//! SaaS admin API issuing personal access tokens), for testing rotor's `http-api-key`
//! credential kind over real HTTP.
//!
//! API (JSON everywhere; errors are `{"error": "…"}`):
//!
//! | request | auth | answer |
//! |---|---|---|
//! | `POST /v1/keys` `{"name": …}` | `Bearer <admin token>` | 201 `{"id", "key", "name", "created_at"}` |
//! | `POST /v2/keys` `{"name": …}` | admin | 201 `{"data": {"id", "token", "name", "created_at"}}` (the same, in an envelope) |
//! | `GET /v1/keys` | admin | 200 `{"keys": [{"id", "name", "created_at"}]}` (never key values) |
//! | `DELETE /v1/keys/{id}` | admin | 204, or 404 when the id is unknown or revoked already |
//! | `GET /v1/whoami` | `Bearer <key>` | 200 `{"id", "name"}` while the key is live, else 401 |
//!
//! A missing or wrong admin token is 401; a create without a non-empty `name` is 400.
//! [`FakeKeyApi::set_down`] makes every request answer 503, to test failures.
//!
//! The server runs on its own thread with its own tokio runtime (like
//! [`crate::FakeKube`]), so it answers whatever the test's runtime does. Dropping the
//! [`FakeKeyApi`] stops it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use rand::Rng;
use serde_json::{Value, json};

use crate::loopback::{self, LoopbackServer};

/// A running fake key API. `Debug` redacts the admin token.
///
/// ```
/// let api = rotor_testkit::FakeKeyApi::start();
/// assert!(api.base_url.starts_with("http://127.0.0.1:"));
/// assert!(api.live_keys().is_empty());
/// ```
pub struct FakeKeyApi {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// The token that authorizes `/v1/keys` (send it as `Authorization: Bearer …`).
    pub admin_token: String,
    state: Arc<State>,
    _server: LoopbackServer,
}

impl fmt::Debug for FakeKeyApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKeyApi")
            .field("base_url", &self.base_url)
            .field("admin_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

struct State {
    admin_token: String,
    down: AtomicBool,
    counter: AtomicU64,
    agents: crate::UserAgents,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    /// Live keys by id.
    live: BTreeMap<String, KeyRecord>,
    /// Ids revoked so far, in order.
    revoked: Vec<String>,
}

struct KeyRecord {
    name: String,
    key: String,
    created_at: String,
}

impl State {
    fn keys(&self) -> MutexGuard<'_, Keys> {
        // A panic while holding the lock cannot leave the maps half-updated.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeKeyApi {
    /// Starts a server on `127.0.0.1:0` with a fresh random admin token and no keys.
    ///
    /// # Panics
    ///
    /// When the server thread cannot start or bind.
    pub fn start() -> FakeKeyApi {
        let state = Arc::new(State {
            admin_token: format!("admin-{}", random_text(40)),
            down: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            agents: crate::UserAgents::default(),
            keys: Mutex::new(Keys::default()),
        });
        let server_state = Arc::clone(&state);
        let server = loopback::spawn(
            "fake-key-api",
            service_fn(move |req| handle(Arc::clone(&server_state), req)),
        );
        FakeKeyApi {
            base_url: server.url(),
            admin_token: state.admin_token.clone(),
            state,
            _server: server,
        }
    }

    /// Ids of the live (not revoked) keys, sorted.
    pub fn live_keys(&self) -> Vec<String> {
        self.state.keys().live.keys().cloned().collect()
    }

    /// Ids revoked through `DELETE /v1/keys/{id}`, in order.
    pub fn revoked_ids(&self) -> Vec<String> {
        self.state.keys().revoked.clone()
    }

    /// `true`: every request answers 503 until set back to `false`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The `User-Agent` of every request that reached the server.
    pub fn user_agents(&self) -> &crate::UserAgents {
        &self.state.agents
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state
        .agents
        .record(req.method(), req.uri().path(), req.headers());
    if state.down.load(Ordering::SeqCst) {
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
        ));
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    let bearer = bearer(&req);
    let is_admin = bearer.as_deref() == Some(state.admin_token.as_str());
    let response = match (method, path.as_str()) {
        (Method::GET, "/v1/whoami") => whoami(&state, bearer.as_deref()),
        (_, "/v1/whoami") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, p) if p == "/v1/keys" || p == "/v2/keys" || p.starts_with("/v1/keys/") => {
            if !is_admin {
                error(StatusCode::UNAUTHORIZED, "invalid admin token")
            } else {
                admin_route(&state, req, &path).await
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

async fn admin_route(state: &State, req: Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    match (method, path) {
        (Method::POST, "/v1/keys" | "/v2/keys") => {
            let envelope = path == "/v2/keys";
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::BAD_REQUEST, "unreadable body"),
            };
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
                .filter(|n| !n.is_empty());
            let Some(name) = name else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a JSON body with a non-empty \"name\" is required",
                );
            };
            let n = state.counter.fetch_add(1, Ordering::SeqCst);
            let id = format!("key_{n}_{}", random_text(6));
            let key = format!("fk_{}", random_text(40));
            let created_at = rfc3339_now();
            state.keys().live.insert(
                id.clone(),
                KeyRecord {
                    name: name.clone(),
                    key: key.clone(),
                    created_at: created_at.clone(),
                },
            );
            let body = if envelope {
                json!({"data": {"id": id, "token": key, "name": name, "created_at": created_at}})
            } else {
                json!({"id": id, "key": key, "name": name, "created_at": created_at})
            };
            json_response(StatusCode::CREATED, &body)
        }
        (Method::GET, "/v1/keys") => {
            let keys: Vec<Value> = state
                .keys()
                .live
                .iter()
                .map(|(id, r)| json!({"id": id, "name": r.name, "created_at": r.created_at}))
                .collect();
            json_response(StatusCode::OK, &json!({"keys": keys}))
        }
        (Method::DELETE, p) if p.starts_with("/v1/keys/") => {
            let id = &p["/v1/keys/".len()..];
            let mut keys = state.keys();
            if keys.live.remove(id).is_some() {
                keys.revoked.push(id.to_owned());
                empty(StatusCode::NO_CONTENT)
            } else {
                error(StatusCode::NOT_FOUND, "no such key")
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn whoami(state: &State, bearer: Option<&str>) -> Response<Full<Bytes>> {
    let keys = state.keys();
    let found = bearer.and_then(|token| keys.live.iter().find(|(_, r)| r.key == token));
    match found {
        Some((id, r)) => json_response(StatusCode::OK, &json!({"id": id, "name": r.name})),
        None => error(StatusCode::UNAUTHORIZED, "invalid api key"),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(code, &json!({"error": message}))
}

fn empty(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() >= "2024-01-01T00:00:00Z", "{t}");
    }

    #[test]
    fn debug_hides_the_admin_token() {
        let api = FakeKeyApi::start();
        let text = format!("{api:?}");
        assert!(text.contains(&api.base_url));
        assert!(!text.contains(&api.admin_token));
    }
}
