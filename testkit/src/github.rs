//! [`FakeGithub`]: the GitHub Actions secrets REST API on loopback, following GitHub's
//! documented behaviour closely enough to test rotor's `github` consumer over real
//! HTTP — including the cryptography: every scope has its own X25519 key pair, and a
//! `PUT` is decrypted (libsodium sealed box) so tests can check the plaintext.
//!
//! Routes (under an optional path prefix such as `/api/v3`, as on GitHub Enterprise
//! Server); `{scope}` is `repos/{owner}/{repo}/actions`,
//! `repos/{owner}/{repo}/environments/{env}` or `orgs/{org}/actions`:
//!
//! | request | answer |
//! |---|---|
//! | `GET {scope}/secrets/public-key` | 200 `{"key_id", "key"}` (base64 X25519 public key) |
//! | `GET {scope}/secrets/{name}` | 200 `{"name", "created_at", "updated_at"}` (+ `visibility` for organisations), never the value; 404 when missing |
//! | `PUT {scope}/secrets/{name}` `{"encrypted_value", "key_id", "visibility"?}` | 201 created, 204 updated; 422 for a bad name, a missing field, a stale `key_id`, a value that does not decrypt, an organisation secret without a valid `visibility`, a value over 48 KB |
//! | `DELETE {scope}/secrets/{name}` | 204, or 404 when missing |
//!
//! Every request needs `Authorization: Bearer <token>` (or `token <token>`), else 401
//! `{"message": "Bad credentials"}`, and a `User-Agent`, else 403 (as GitHub does). An
//! `X-GitHub-Api-Version` other than a supported one is 400. Unknown repositories,
//! environments and organisations are 404 `{"message": "Not Found"}`; owner, repository,
//! environment and organisation names are case-insensitive, and secret names are stored
//! upper-case, as on GitHub. Error messages follow GitHub's wording where it is known.
//!
//! `updated_at` strictly increases with every write, even within one second: the fake's
//! clock is the wall clock, moved one second past the previous write when needed (GitHub's
//! timestamps have a resolution of one second).
//!
//! Faults: [`FakeGithub::set_down`] (503 everywhere), [`FakeGithub::set_rate_limited`]
//! (403 with `x-ratelimit-remaining: 0`), [`FakeGithub::set_read_only`] (403 on writes),
//! [`FakeGithub::rotate_key`] (a new key pair; the old `key_id` is refused).
//!
//! The server runs on its own thread with its own tokio runtime, so it answers whatever
//! the test's runtime does. Dropping the [`FakeGithub`] stops it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use crypto_box::SecretKey;
use crypto_box::aead::OsRng;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use rand::Rng;
use serde_json::{Value, json};

use crate::loopback::{self, LoopbackServer};

/// Largest secret value GitHub stores, in bytes (48 KB).
pub const MAX_VALUE_BYTES: usize = 48 * 1024;
/// API versions the fake accepts in `X-GitHub-Api-Version`.
pub const API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];

const DOCS: &str = "https://docs.github.com/rest";
const IMPROPERLY_ENCRYPTED: &str =
    "Bad request - validation failed due to an improperly encrypted secret";
/// Largest request body read (GitHub's own limits are far above a 48 KB secret).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A running fake GitHub API. `Debug` redacts the token and never shows keys or values.
///
/// ```
/// let gh = rotor_testkit::FakeGithub::start();
/// gh.add_repository("acme/payments");
/// assert!(gh.base_url.starts_with("http://127.0.0.1:"));
/// assert!(gh.secret("acme/payments", "DB_PASSWORD").is_none());
/// ```
pub struct FakeGithub {
    /// `http://127.0.0.1:PORT` plus the path prefix, without a trailing slash: the
    /// consumer's `url`.
    pub base_url: String,
    /// The token every request must carry.
    pub token: String,
    state: Arc<State>,
    _server: LoopbackServer,
}

impl fmt::Debug for FakeGithub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGithub")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field(
                "scopes",
                &self.state.store().scopes.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A secret as the fake stores it (the decrypted value). `Debug` hides the plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct FakeSecret {
    /// The decrypted value.
    pub plaintext: String,
    /// RFC 3339, seconds, UTC (`2024-05-01T10:00:00Z`).
    pub created_at: String,
    /// RFC 3339, seconds, UTC; strictly increasing across writes.
    pub updated_at: String,
    /// `all` | `private` | `selected` for organisation secrets, else `None`.
    pub visibility: Option<String>,
}

impl fmt::Debug for FakeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSecret")
            .field("plaintext", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("visibility", &self.visibility)
            .finish()
    }
}

struct State {
    token: String,
    prefix: String,
    down: AtomicBool,
    read_only: AtomicBool,
    /// Seconds until the rate limit resets; `u64::MAX` means not limited.
    rate_limited: AtomicU64,
    requests: AtomicU64,
    agents: crate::UserAgents,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    /// By scope key: `owner/repo`, `owner/repo:env` or `org:org`, lower-case.
    scopes: BTreeMap<String, Scope>,
    /// Unix seconds of the last write.
    last_write: i64,
}

struct Scope {
    organization: bool,
    key: SecretKey,
    key_id: String,
    /// By upper-case name.
    secrets: BTreeMap<String, FakeSecret>,
}

impl Scope {
    fn new(organization: bool) -> Self {
        Scope {
            organization,
            key: SecretKey::generate(&mut OsRng),
            key_id: new_key_id(),
            secrets: BTreeMap::new(),
        }
    }
}

impl State {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the maps half-updated.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// The time of a new write: now, or one second after the previous write.
    fn tick(&mut self) -> String {
        let now = Utc::now().timestamp().max(self.last_write + 1);
        self.last_write = now;
        DateTime::<Utc>::from_timestamp(now, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

impl FakeGithub {
    /// Starts a server on `127.0.0.1:0` serving the API at the root (as
    /// `api.github.com` does), with a fresh random token and no repositories.
    ///
    /// # Panics
    ///
    /// When the server thread cannot start or bind.
    pub fn start() -> FakeGithub {
        Self::start_with_prefix("")
    }

    /// Like [`FakeGithub::start`], serving the API under `prefix` (e.g. `/api/v3`, as
    /// GitHub Enterprise Server does); requests outside it are 404.
    ///
    /// # Panics
    ///
    /// When the server thread cannot start or bind, or `prefix` is neither empty nor
    /// starts with `/`.
    pub fn start_with_prefix(prefix: &str) -> FakeGithub {
        let prefix = prefix.trim_end_matches('/').to_owned();
        assert!(
            prefix.is_empty() || prefix.starts_with('/'),
            "the path prefix must start with `/`"
        );
        let state = Arc::new(State {
            token: format!("ghp_{}", random_text(36)),
            prefix: prefix.clone(),
            down: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            rate_limited: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            agents: crate::UserAgents::default(),
            store: Mutex::new(Store::default()),
        });
        let server_state = Arc::clone(&state);
        let server = loopback::spawn(
            "fake-github",
            service_fn(move |req| handle(Arc::clone(&server_state), req)),
        );
        FakeGithub {
            base_url: format!("{}{prefix}", server.url()),
            token: state.token.clone(),
            state,
            _server: server,
        }
    }

    /// Registers the repository `owner/name` (idempotent).
    pub fn add_repository(&self, repository: &str) {
        assert!(
            repository.split('/').count() == 2,
            "a repository is owner/name"
        );
        self.state
            .store()
            .scopes
            .entry(repository.to_ascii_lowercase())
            .or_insert_with(|| Scope::new(false));
    }

    /// Registers the environment `environment` of `repository` (and the repository).
    pub fn add_environment(&self, repository: &str, environment: &str) {
        self.add_repository(repository);
        self.state
            .store()
            .scopes
            .entry(format!("{repository}:{environment}").to_ascii_lowercase())
            .or_insert_with(|| Scope::new(false));
    }

    /// Registers the organisation `org` (idempotent).
    pub fn add_organization(&self, org: &str) {
        self.state
            .store()
            .scopes
            .entry(format!("org:{org}").to_ascii_lowercase())
            .or_insert_with(|| Scope::new(true));
    }

    /// The secret `name` of `scope` (`acme/payments`, `acme/payments:production` or
    /// `org:acme`), decrypted.
    pub fn secret(&self, scope: &str, name: &str) -> Option<FakeSecret> {
        self.state
            .store()
            .scopes
            .get(&scope.to_ascii_lowercase())?
            .secrets
            .get(&name.to_ascii_uppercase())
            .cloned()
    }

    /// The current `key_id` of `scope`, if the scope is registered.
    pub fn key_id(&self, scope: &str) -> Option<String> {
        self.state
            .store()
            .scopes
            .get(&scope.to_ascii_lowercase())
            .map(|s| s.key_id.clone())
    }

    /// Gives `scope` a new key pair and returns its `key_id`; values sealed to the old
    /// key (or sent with the old `key_id`) are refused from now on.
    ///
    /// # Panics
    ///
    /// When the scope is not registered.
    pub fn rotate_key(&self, scope: &str) -> String {
        let mut store = self.state.store();
        let s = store
            .scopes
            .get_mut(&scope.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("scope {scope} is not registered"));
        s.key = SecretKey::generate(&mut OsRng);
        s.key_id = new_key_id();
        s.key_id.clone()
    }

    /// `true`: every request answers 503 until set back to `false`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// `Some(secs)`: every request answers 403 with `x-ratelimit-remaining: 0` and a
    /// reset `secs` from now, as GitHub's primary rate limit does; `None` lifts it.
    pub fn set_rate_limited(&self, reset_in_secs: Option<u64>) {
        self.state
            .rate_limited
            .store(reset_in_secs.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// `true`: the token may read but not write secrets (403 "Resource not accessible
    /// by personal access token" on `PUT` and `DELETE`).
    pub fn set_read_only(&self, read_only: bool) {
        self.state.read_only.store(read_only, Ordering::SeqCst);
    }

    /// How many HTTP requests reached the server so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The `User-Agent` of every request that reached the server.
    pub fn user_agents(&self) -> &crate::UserAgents {
        &self.state.agents
    }
}

/// Where a request points: a scope key and the last path segment.
struct Route {
    scope: String,
    organization: bool,
    item: String,
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state
        .agents
        .record(req.method(), req.uri().path(), req.headers());
    if state.down.load(Ordering::SeqCst) {
        return Ok(message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        ));
    }
    let path = req.uri().path().to_owned();
    let Some(path) = path
        .strip_prefix(state.prefix.as_str())
        .filter(|p| p.starts_with('/'))
    else {
        return Ok(not_found());
    };
    if !authorized(&state, &req) {
        return Ok(message(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if !req.headers().contains_key(header::USER_AGENT) {
        return Ok(message(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header.",
        ));
    }
    if let Some(version) = req.headers().get("x-github-api-version") {
        let version = version.to_str().unwrap_or("");
        if !API_VERSIONS.contains(&version) {
            return Ok(message(
                StatusCode::BAD_REQUEST,
                &format!("API version '{version}' is not supported."),
            ));
        }
    }
    let reset_in = state.rate_limited.load(Ordering::SeqCst);
    if reset_in != u64::MAX {
        return Ok(rate_limited(reset_in));
    }
    let Some(route) = route(path) else {
        return Ok(not_found());
    };
    let response = match (req.method().clone(), route.item.as_str()) {
        (Method::GET, "public-key") => public_key(&state, &route),
        (_, "public-key") => not_found(),
        (Method::GET, _) => read_secret(&state, &route),
        (Method::PUT, _) => write_secret(&state, &route, req).await,
        (Method::DELETE, _) => delete_secret(&state, &route),
        _ => not_found(),
    };
    Ok(response)
}

/// `Authorization: Bearer <token>` or `token <token>`.
fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        && token.trim() == state.token
}

fn route(path: &str) -> Option<Route> {
    let decoded: Vec<String> = path[1..].split('/').map(percent_decode).collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let (scope, organization, item) = match segments.as_slice() {
        ["repos", owner, repo, "actions", "secrets", item] => {
            (format!("{owner}/{repo}"), false, item)
        }
        ["repos", owner, repo, "environments", env, "secrets", item] => {
            (format!("{owner}/{repo}:{env}"), false, item)
        }
        ["orgs", org, "actions", "secrets", item] => (format!("org:{org}"), true, item),
        _ => return None,
    };
    (!item.is_empty()).then(|| Route {
        scope: scope.to_ascii_lowercase(),
        organization,
        item: (*item).to_owned(),
    })
}

fn public_key(state: &State, route: &Route) -> Response<Full<Bytes>> {
    let store = state.store();
    let Some(scope) = store.scopes.get(&route.scope) else {
        return not_found();
    };
    let key = base64::engine::general_purpose::STANDARD.encode(scope.key.public_key().as_bytes());
    json_response(StatusCode::OK, &json!({"key_id": scope.key_id, "key": key}))
}

fn read_secret(state: &State, route: &Route) -> Response<Full<Bytes>> {
    let store = state.store();
    let Some(scope) = store.scopes.get(&route.scope) else {
        return not_found();
    };
    let name = route.item.to_ascii_uppercase();
    let Some(secret) = scope.secrets.get(&name) else {
        return not_found();
    };
    let mut body = json!({
        "name": name,
        "created_at": secret.created_at,
        "updated_at": secret.updated_at,
    });
    if let Some(visibility) = &secret.visibility {
        body["visibility"] = Value::from(visibility.as_str());
    }
    json_response(StatusCode::OK, &body)
}

fn delete_secret(state: &State, route: &Route) -> Response<Full<Bytes>> {
    if state.read_only.load(Ordering::SeqCst) {
        return not_accessible();
    }
    let mut store = state.store();
    let Some(scope) = store.scopes.get_mut(&route.scope) else {
        return not_found();
    };
    match scope.secrets.remove(&route.item.to_ascii_uppercase()) {
        Some(_) => empty(StatusCode::NO_CONTENT),
        None => not_found(),
    }
}

async fn write_secret(
    state: &State,
    route: &Route,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !state.store().scopes.contains_key(&route.scope) {
        return not_found();
    }
    if state.read_only.load(Ordering::SeqCst) {
        return not_accessible();
    }
    if let Err(problem) = check_name(&route.item) {
        return unprocessable(problem);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return message(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(key_id) = doc.get("key_id").and_then(Value::as_str) else {
        return unprocessable("Invalid request.\n\n\"key_id\" wasn't supplied.");
    };
    let Some(encrypted) = doc.get("encrypted_value").and_then(Value::as_str) else {
        return unprocessable("Invalid request.\n\n\"encrypted_value\" wasn't supplied.");
    };
    let visibility = if route.organization {
        match doc.get("visibility").and_then(Value::as_str) {
            None => return unprocessable("Invalid request.\n\n\"visibility\" wasn't supplied."),
            Some(v @ ("all" | "private" | "selected")) => Some(v.to_owned()),
            Some(other) => {
                return unprocessable(&format!(
                    "Invalid request.\n\nFor 'properties/visibility', \"{other}\" is not one of [\"all\", \"private\", \"selected\"]."
                ));
            }
        }
    } else {
        None
    };

    let mut store = state.store();
    let Some(scope) = store.scopes.get(&route.scope) else {
        return not_found();
    };
    debug_assert_eq!(scope.organization, route.organization);
    if key_id != scope.key_id {
        return unprocessable(IMPROPERLY_ENCRYPTED);
    }
    let Ok(sealed) = base64::engine::general_purpose::STANDARD.decode(encrypted) else {
        return unprocessable(IMPROPERLY_ENCRYPTED);
    };
    let Ok(plain) = scope.key.unseal(&sealed) else {
        return unprocessable(IMPROPERLY_ENCRYPTED);
    };
    if plain.len() > MAX_VALUE_BYTES {
        return unprocessable("Secret value is too large: secrets can store up to 48 KB.");
    }
    let plaintext = String::from_utf8_lossy(&plain).into_owned();
    let now = store.tick();
    let Some(scope) = store.scopes.get_mut(&route.scope) else {
        return not_found();
    };
    let name = route.item.to_ascii_uppercase();
    match scope.secrets.get_mut(&name) {
        Some(existing) => {
            existing.plaintext = plaintext;
            existing.updated_at = now;
            existing.visibility = visibility;
            empty(StatusCode::NO_CONTENT)
        }
        None => {
            scope.secrets.insert(
                name,
                FakeSecret {
                    plaintext,
                    created_at: now.clone(),
                    updated_at: now,
                    visibility,
                },
            );
            json_response(StatusCode::CREATED, &json!({}))
        }
    }
}

/// GitHub's rules for secret names.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(
            "Secret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_). Spaces are not allowed.",
        );
    }
    if name.as_bytes()[0].is_ascii_digit() {
        return Err("Secret names must not start with a number.");
    }
    if name.to_ascii_uppercase().starts_with("GITHUB_") {
        return Err("Secret names must not start with the GITHUB_ prefix.");
    }
    Ok(())
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or_default() * 16 + hex(l).unwrap_or_default();
                out.push(u8::try_from(value).unwrap_or_default());
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn rate_limited(reset_in: u64) -> Response<Full<Bytes>> {
    let reset = u64::try_from(Utc::now().timestamp())
        .unwrap_or_default()
        .saturating_add(reset_in);
    let mut response = message(
        StatusCode::FORBIDDEN,
        "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
    );
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
        headers.insert("x-ratelimit-reset", v);
    }
    response
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// GitHub's error shape: `{"message", "documentation_url", "status"}`.
fn message(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({"message": text, "documentation_url": DOCS, "status": code.as_u16().to_string()}),
    )
}

fn not_found() -> Response<Full<Bytes>> {
    message(StatusCode::NOT_FOUND, "Not Found")
}

fn not_accessible() -> Response<Full<Bytes>> {
    message(
        StatusCode::FORBIDDEN,
        "Resource not accessible by personal access token",
    )
}

fn unprocessable(text: &str) -> Response<Full<Bytes>> {
    message(StatusCode::UNPROCESSABLE_ENTITY, text)
}

fn empty(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

fn new_key_id() -> String {
    rand::rng()
        .random_range(1_000_000_000_000_000_000u64..u64::MAX)
        .to_string()
}

fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_repository_environment_and_organization() {
        let r = route("/repos/Acme/Payments/actions/secrets/public-key").unwrap();
        assert_eq!((r.scope.as_str(), r.organization), ("acme/payments", false));
        assert_eq!(r.item, "public-key");
        let r = route("/repos/acme/payments/environments/prod%20eu/secrets/DB").unwrap();
        assert_eq!(r.scope, "acme/payments:prod eu");
        assert_eq!(r.item, "DB");
        let r = route("/orgs/acme/actions/secrets/DB").unwrap();
        assert_eq!((r.scope.as_str(), r.organization), ("org:acme", true));
        assert!(route("/repos/acme/payments/actions/variables/DB").is_none());
        assert!(route("/repos/acme/payments/actions/secrets/").is_none());
    }

    #[test]
    fn names_follow_github_rules() {
        assert!(check_name("DB_PASSWORD").is_ok());
        assert!(check_name("_x1").is_ok());
        assert!(check_name("A-B").is_err());
        assert!(check_name("1ABC").is_err());
        assert!(check_name("github_token").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn the_clock_advances_every_write() {
        let mut store = Store::default();
        let a = store.tick();
        let b = store.tick();
        let c = store.tick();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.len(), 20, "{a}");
    }

    #[test]
    fn sealed_values_decrypt_with_the_scope_key() {
        let scope = Scope::new(false);
        let sealed = scope.key.public_key().seal(&mut OsRng, b"hello").unwrap();
        assert_eq!(scope.key.unseal(&sealed).unwrap(), b"hello");
        let other = Scope::new(false);
        assert!(other.key.unseal(&sealed).is_err());
    }

    #[test]
    fn debug_hides_the_token_and_plaintext() {
        let gh = FakeGithub::start();
        gh.add_repository("acme/payments");
        let text = format!("{gh:?}");
        assert!(text.contains(&gh.base_url), "{text}");
        assert!(!text.contains(&gh.token), "{text}");
        let secret = FakeSecret {
            plaintext: "hunter2-plain".into(),
            created_at: "t".into(),
            updated_at: "t".into(),
            visibility: None,
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
