//! [`FakeGitlab`]: the CI/CD variables part of the GitLab REST API (v4) on loopback, with
//! GitLab's documented behaviour, for testing rotor's `gitlab` consumer over real HTTP.
//!
//! API (JSON everywhere; request bodies may also be form-encoded, as GitLab accepts):
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/v4/{projects,groups}/:id/variables` | 200, every variable of the owner |
//! | `GET /api/v4/{projects,groups}/:id/variables/:key` | 200 the variable |
//! | `POST /api/v4/{projects,groups}/:id/variables` | 201 the new variable |
//! | `PUT /api/v4/{projects,groups}/:id/variables/:key` | 200 the updated variable |
//! | `DELETE /api/v4/{projects,groups}/:id/variables/:key` | 204 |
//!
//! - Auth: `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`; otherwise 401
//!   `{"message":"401 Unauthorized"}`.
//! - `:id` is the numeric id [`FakeGitlab::add_project`] / [`FakeGitlab::add_group`]
//!   returned or the URL-encoded full path (`acme%2Fpayments`, matched case-insensitively);
//!   an unknown one is 404 `{"message":"404 Project Not Found"}` / `404 Group Not Found`.
//! - Variables are keyed by (key, environment scope). `filter[environment_scope]` (query,
//!   or `filter: {environment_scope}` in the body) selects the scope on GET/PUT/DELETE;
//!   without it a key held in several scopes is 409 and a missing one is 404
//!   `{"message":"404 Variable Not Found"}` (also for PUT: GitLab has no upsert).
//! - POST of an existing key and scope is 400 `{"message":{"key":["(KEY) has already been
//!   taken"]}}`; keys are `[A-Za-z0-9_]`, 1–255 characters; `raw`, `masked` and `protected`
//!   default to false, `environment_scope` to `*`, `variable_type` to `env_var`.
//! - Masked values must be at least 8 characters on one line and, with `raw: false`, only
//!   `[a-zA-Z0-9_+=/@:.~-]`; otherwise 400 `{"message":{"value":["is invalid"]}}`.
//!
//! Test hooks: [`FakeGitlab::set_down`] (every request 503), [`FakeGitlab::hide_next_get`]
//! (the next single-variable GET answers 404 although the variable exists, to provoke
//! the create race), [`FakeGitlab::set_variable`] (seed without counting a write).
//! Inspection: [`FakeGitlab::variable`], [`FakeGitlab::writes`], [`FakeGitlab::requests`].
//!
//! The server runs on its own thread with its own tokio runtime (like
//! [`crate::FakeKeyApi`]), so it answers whatever the test's runtime does. Dropping the
//! [`FakeGitlab`] stops it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::loopback::{self, LoopbackServer};

/// Characters a masked variable may hold when `raw` is false (besides ASCII letters and digits).
const MASKABLE: &str = "_+=/@:.~-";
/// The query (or form) parameter that selects a variable's environment scope.
const SCOPE_FILTER: &str = "filter[environment_scope]";

/// A running fake GitLab. `Debug` redacts the token.
///
/// ```
/// let gitlab = rotor_testkit::FakeGitlab::start();
/// let id = gitlab.add_project("acme/payments");
/// assert!(gitlab.base_url.starts_with("http://127.0.0.1:"));
/// assert!(id > 0);
/// assert!(gitlab.variable("acme/payments", "K", "*").is_none());
/// ```
pub struct FakeGitlab {
    /// `http://127.0.0.1:PORT`, without a trailing slash (the GitLab URL, not the API URL).
    pub base_url: String,
    /// The only token the fake accepts (as `PRIVATE-TOKEN` or `Authorization: Bearer`).
    pub token: String,
    state: Arc<State>,
    _server: LoopbackServer,
}

impl fmt::Debug for FakeGitlab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGitlab")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One CI/CD variable as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVariable {
    /// The value.
    pub value: String,
    /// Masked in job logs.
    pub masked: bool,
    /// Only for protected branches and tags.
    pub protected: bool,
    /// No `$` expansion.
    pub raw: bool,
    /// Environment scope (`*` for all).
    pub environment_scope: String,
    /// `env_var` or `file`.
    pub variable_type: String,
}

impl FakeVariable {
    /// An unmasked, unprotected, non-raw `env_var` in scope `*` — GitLab's defaults.
    pub fn new(value: &str) -> Self {
        FakeVariable {
            value: value.to_owned(),
            masked: false,
            protected: false,
            raw: false,
            environment_scope: "*".to_owned(),
            variable_type: "env_var".to_owned(),
        }
    }
}

struct State {
    token: String,
    down: AtomicBool,
    hide_next_get: AtomicBool,
    writes: AtomicU64,
    next_id: AtomicU64,
    agents: crate::UserAgents,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    owners: Vec<Owner>,
    requests: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OwnerKind {
    Project,
    Group,
}

impl OwnerKind {
    fn not_found(self) -> Response<Full<Bytes>> {
        match self {
            OwnerKind::Project => message(StatusCode::NOT_FOUND, "404 Project Not Found"),
            OwnerKind::Group => message(StatusCode::NOT_FOUND, "404 Group Not Found"),
        }
    }
}

struct Owner {
    kind: OwnerKind,
    id: u64,
    path: String,
    /// Variables by (key, environment scope).
    variables: BTreeMap<(String, String), Stored>,
}

#[derive(Clone, PartialEq, Eq)]
struct Stored {
    key: String,
    var: FakeVariable,
    description: Option<String>,
}

impl Stored {
    fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "value": self.var.value,
            "variable_type": self.var.variable_type,
            "protected": self.var.protected,
            "masked": self.var.masked,
            "raw": self.var.raw,
            "environment_scope": self.var.environment_scope,
            "description": self.description,
        })
    }
}

impl State {
    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave the maps half-updated.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Data {
    /// The project (or else the group) with full path `path`.
    fn owner_by_path_mut(&mut self, path: &str) -> Option<&mut Owner> {
        let index = [OwnerKind::Project, OwnerKind::Group]
            .iter()
            .find_map(|kind| {
                self.owners
                    .iter()
                    .position(|o| o.kind == *kind && o.path.eq_ignore_ascii_case(path))
            })?;
        self.owners.get_mut(index)
    }

    fn owner_mut(&mut self, kind: OwnerKind, id: &str) -> Option<&mut Owner> {
        let numeric = id.parse::<u64>().ok();
        self.owners
            .iter_mut()
            .find(|o| o.kind == kind && (numeric == Some(o.id) || o.path.eq_ignore_ascii_case(id)))
    }
}

impl FakeGitlab {
    /// Starts a server on `127.0.0.1:0` with a fresh random token, no projects and no groups.
    ///
    /// # Panics
    ///
    /// When the server thread cannot start or bind.
    pub fn start() -> FakeGitlab {
        let state = Arc::new(State {
            token: format!("glpat-{}", random_text(20)),
            down: AtomicBool::new(false),
            hide_next_get: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            next_id: AtomicU64::new(1000),
            agents: crate::UserAgents::default(),
            data: Mutex::new(Data::default()),
        });
        let server_state = Arc::clone(&state);
        let server = loopback::spawn(
            "fake-gitlab",
            service_fn(move |req| handle(Arc::clone(&server_state), req)),
        );
        FakeGitlab {
            base_url: server.url(),
            token: state.token.clone(),
            state,
            _server: server,
        }
    }

    /// Registers a project under its full path (`acme/payments`) and returns its numeric id.
    pub fn add_project(&self, path: &str) -> u64 {
        self.add_owner(OwnerKind::Project, path)
    }

    /// Registers a group under its full path (`acme` or `acme/team`) and returns its numeric id.
    pub fn add_group(&self, path: &str) -> u64 {
        self.add_owner(OwnerKind::Group, path)
    }

    fn add_owner(&self, kind: OwnerKind, path: &str) -> u64 {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        self.state.data().owners.push(Owner {
            kind,
            id,
            path: path.to_owned(),
            variables: BTreeMap::new(),
        });
        id
    }

    /// The variable `key` in `scope` of the project or group at path `owner`
    /// (projects are searched first).
    pub fn variable(&self, owner: &str, key: &str, scope: &str) -> Option<FakeVariable> {
        let mut data = self.state.data();
        data.owner_by_path_mut(owner)
            .and_then(|o| o.variables.get(&(key.to_owned(), scope.to_owned())))
            .map(|s| s.var.clone())
    }

    /// Stores `var` as `key` (in `var.environment_scope`) of the project or group at path
    /// `owner`, replacing any variable there, without checks and without counting a write.
    ///
    /// # Panics
    ///
    /// When no project or group has that path.
    pub fn set_variable(&self, owner: &str, key: &str, var: FakeVariable) {
        let mut data = self.state.data();
        let Some(o) = data.owner_by_path_mut(owner) else {
            panic!("no project or group {owner} in the fake GitLab");
        };
        o.variables.insert(
            (key.to_owned(), var.environment_scope.clone()),
            Stored {
                key: key.to_owned(),
                var,
                description: None,
            },
        );
    }

    /// How many POST/PUT requests changed a variable.
    pub fn writes(&self) -> u64 {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// `true`: every request answers 503 until set back to `false`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The next `GET …/variables/:key` answers 404 "Variable Not Found" even if the
    /// variable exists (as if it was created right after that read).
    pub fn hide_next_get(&self) {
        self.state.hide_next_get.store(true, Ordering::SeqCst);
    }

    /// Every request so far as (method, path): the path as sent (still URL-encoded) and,
    /// when there was a query, `?` and the decoded parameter names joined by `&`, never
    /// their values (`/api/v4/projects/acme%2Fpayments/variables/K?filter[environment_scope]`).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.data().requests.clone()
    }

    /// The `User-Agent` of every request that reached the server.
    pub fn user_agents(&self) -> &crate::UserAgents {
        &self.state.agents
    }
}

/// A parsed request: what the handlers need, with the body already read.
struct Call {
    method: Method,
    kind: OwnerKind,
    id: String,
    key: Option<String>,
    query: BTreeMap<String, String>,
    body: Map<String, Value>,
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let raw_path = req.uri().path().to_owned();
    state.agents.record(req.method(), &raw_path, req.headers());
    let query: Vec<(String, String)> = req.uri().query().map(parse_form).unwrap_or_default();
    let mut shown = raw_path.clone();
    if req.uri().query().is_some() {
        let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        shown = format!("{shown}?{}", names.join("&"));
    }
    state
        .data()
        .requests
        .push((req.method().as_str().to_owned(), shown));

    if state.down.load(Ordering::SeqCst) {
        return Ok(message(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable",
        ));
    }
    let Some(rest) = raw_path.strip_prefix("/api/v4/") else {
        return Ok(error(StatusCode::NOT_FOUND, "404 Not Found"));
    };
    if !authorized(&state, &req) {
        return Ok(message(StatusCode::UNAUTHORIZED, "401 Unauthorized"));
    }
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let (kind, id, key) = match segments.as_slice() {
        [kind, id, "variables"] => (*kind, *id, None),
        [kind, id, "variables", key] => (*kind, *id, Some(percent_decode(key, false))),
        _ => return Ok(error(StatusCode::NOT_FOUND, "404 Not Found")),
    };
    let kind = match kind {
        "projects" => OwnerKind::Project,
        "groups" => OwnerKind::Group,
        _ => return Ok(error(StatusCode::NOT_FOUND, "404 Not Found")),
    };
    let method = req.method().clone();
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let body = if body.is_empty() {
        Map::new()
    } else if form {
        let text = String::from_utf8_lossy(&body);
        parse_form(&text)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            _ => return Ok(error(StatusCode::BAD_REQUEST, "body is not a JSON object")),
        }
    };
    let call = Call {
        method,
        kind,
        id: percent_decode(id, false),
        key,
        query: query.into_iter().collect(),
        body,
    };
    Ok(route(&state, call))
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let private = req
        .headers()
        .get("private-token")
        .and_then(|v| v.to_str().ok());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    private == Some(state.token.as_str()) || bearer == Some(state.token.as_str())
}

fn route(state: &State, call: Call) -> Response<Full<Bytes>> {
    let mut data = state.data();
    let Some(owner) = data.owner_mut(call.kind, &call.id) else {
        return call.kind.not_found();
    };
    match (&call.method, call.key.as_deref()) {
        (&Method::GET, None) => {
            let all: Vec<Value> = owner.variables.values().map(Stored::to_json).collect();
            json_response(StatusCode::OK, &Value::Array(all))
        }
        (&Method::POST, None) => create(state, owner, &call),
        (&Method::GET, Some(key)) => {
            if state.hide_next_get.swap(false, Ordering::SeqCst) {
                return message(StatusCode::NOT_FOUND, "404 Variable Not Found");
            }
            match select(owner, key, filter(&call).as_deref()) {
                Ok(at) => json_response(StatusCode::OK, &owner.variables[&at].to_json()),
                Err(response) => *response,
            }
        }
        (&Method::PUT, Some(key)) => update(state, owner, key, &call),
        (&Method::DELETE, Some(key)) => match select(owner, key, filter(&call).as_deref()) {
            Ok(at) => {
                owner.variables.remove(&at);
                empty(StatusCode::NO_CONTENT)
            }
            Err(response) => *response,
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed"),
    }
}

/// The environment scope filter of a call: query first, then the body.
fn filter(call: &Call) -> Option<String> {
    if let Some(scope) = call.query.get(SCOPE_FILTER) {
        return Some(scope.clone());
    }
    match call.body.get("filter") {
        Some(Value::Object(f)) => f
            .get("environment_scope")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => call
            .body
            .get(SCOPE_FILTER)
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// Finds the one variable `key` (in `scope`, when given) like GitLab does.
fn select(
    owner: &Owner,
    key: &str,
    scope: Option<&str>,
) -> Result<(String, String), Box<Response<Full<Bytes>>>> {
    let found: Vec<&(String, String)> = owner
        .variables
        .keys()
        .filter(|(k, s)| k == key && scope.is_none_or(|want| want == s))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            "404 Variable Not Found",
        ))),
        _ => Err(Box::new(message(
            StatusCode::CONFLICT,
            "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'",
        ))),
    }
}

fn create(state: &State, owner: &mut Owner, call: &Call) -> Response<Full<Bytes>> {
    let Some(key) = call.body.get("key").and_then(as_text) else {
        return error(StatusCode::BAD_REQUEST, "key is missing");
    };
    let Some(value) = call.body.get("value").and_then(as_text) else {
        return error(StatusCode::BAD_REQUEST, "value is missing");
    };
    if let Some(problem) = key_problem(&key) {
        return field_error("key", problem);
    }
    let mut var = FakeVariable::new(&value);
    let mut description = None;
    if let Err(response) = apply_attributes(&call.body, &mut var, &mut description) {
        return *response;
    }
    if !maskable(&var) {
        return field_error("value", "is invalid");
    }
    let at = (key.clone(), var.environment_scope.clone());
    if owner.variables.contains_key(&at) {
        return field_error("key", &format!("({key}) has already been taken"));
    }
    let stored = Stored {
        key,
        var,
        description,
    };
    let body = stored.to_json();
    owner.variables.insert(at, stored);
    state.writes.fetch_add(1, Ordering::SeqCst);
    json_response(StatusCode::CREATED, &body)
}

fn update(state: &State, owner: &mut Owner, key: &str, call: &Call) -> Response<Full<Bytes>> {
    let at = match select(owner, key, filter(call).as_deref()) {
        Ok(at) => at,
        Err(response) => return *response,
    };
    let Some(value) = call.body.get("value").and_then(as_text) else {
        return error(StatusCode::BAD_REQUEST, "value is missing");
    };
    let old = owner.variables[&at].clone();
    let mut var = old.var.clone();
    var.value = value;
    let mut description = old.description.clone();
    if let Err(response) = apply_attributes(&call.body, &mut var, &mut description) {
        return *response;
    }
    if !maskable(&var) {
        return field_error("value", "is invalid");
    }
    let new_at = (key.to_owned(), var.environment_scope.clone());
    if new_at != at && owner.variables.contains_key(&new_at) {
        return field_error("key", &format!("({key}) has already been taken"));
    }
    let stored = Stored {
        key: key.to_owned(),
        var,
        description,
    };
    let body = stored.to_json();
    if stored != old {
        owner.variables.remove(&at);
        owner.variables.insert(new_at, stored);
        state.writes.fetch_add(1, Ordering::SeqCst);
    }
    json_response(StatusCode::OK, &body)
}

/// Copies the optional attributes present in `body` onto `var`.
fn apply_attributes(
    body: &Map<String, Value>,
    var: &mut FakeVariable,
    description: &mut Option<String>,
) -> Result<(), Box<Response<Full<Bytes>>>> {
    for (name, slot) in [
        ("masked", &mut var.masked),
        ("protected", &mut var.protected),
        ("raw", &mut var.raw),
    ] {
        if let Some(v) = body.get(name) {
            *slot = as_bool(v).ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    &format!("{name} is invalid"),
                ))
            })?;
        }
    }
    if let Some(v) = body.get("variable_type") {
        match as_text(v).as_deref() {
            Some(t @ ("env_var" | "file")) => var.variable_type = t.to_owned(),
            _ => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "variable_type does not have a valid value",
                )));
            }
        }
    }
    if let Some(v) = body.get("environment_scope") {
        match as_text(v) {
            Some(s) if !s.is_empty() => var.environment_scope = s,
            _ => {
                return Err(Box::new(field_error("environment_scope", "can't be blank")));
            }
        }
    }
    if let Some(v) = body.get("description") {
        *description = as_text(v);
    }
    Ok(())
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("can't be blank")
    } else if key.len() > 255 {
        Some("is too long (maximum is 255 characters)")
    } else if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Some("can contain only letters, digits and '_'.")
    } else {
        None
    }
}

/// GitLab's documented masking rules (always true for an unmasked variable).
fn maskable(var: &FakeVariable) -> bool {
    if !var.masked {
        return true;
    }
    let v = &var.value;
    v.chars().count() >= 8
        && !v.contains(['\n', '\r'])
        && (var.raw
            || v.chars()
                .all(|c| c.is_ascii_alphanumeric() || MASKABLE.contains(c)))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` pairs (also the query string), decoded.
fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); bad escapes stay as they are.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| char::from(c).to_digit(16);
        match b {
            b'%' => {
                let decoded = bytes
                    .get(i + 1)
                    .and_then(|h| hex(*h))
                    .zip(bytes.get(i + 2).and_then(|l| hex(*l)));
                match decoded {
                    Some((h, l)) => {
                        // Two hex digits make one byte: h * 16 + l < 256.
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 3;
                    }
                    None => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// GitLab's `{"message": "…"}` error body.
fn message(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    json_response(code, &json!({"message": text}))
}

/// GitLab's `{"message": {"field": ["…"]}}` validation error (400).
fn field_error(field: &str, text: &str) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"message": {field: [text]}}),
    )
}

/// Grape's `{"error": "…"}` body (parameter errors, unknown routes).
fn error(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    json_response(code, &json!({"error": text}))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One HTTP/1.1 request over a plain socket; returns the status and the JSON body.
    fn call(
        gitlab: &FakeGitlab,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let addr = gitlab.base_url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some((name, value)) = auth {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status: u16 = answer[9..12].parse().unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap()
        };
        (status, body)
    }

    fn authed(gitlab: &FakeGitlab, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(
            gitlab,
            method,
            path,
            Some(("PRIVATE-TOKEN", &gitlab.token)),
            body,
        )
    }

    const VARS: &str = "/api/v4/projects/acme%2Fpayments/variables";

    #[test]
    fn debug_hides_the_token() {
        let gitlab = FakeGitlab::start();
        let text = format!("{gitlab:?}");
        assert!(text.contains(&gitlab.base_url));
        assert!(!text.contains(&gitlab.token));
    }

    #[test]
    fn auth_accepts_private_token_and_bearer_only() {
        let gitlab = FakeGitlab::start();
        gitlab.add_project("acme/payments");
        let (status, body) = call(&gitlab, "GET", VARS, None, None);
        assert_eq!(
            (status, body),
            (401, json!({"message": "401 Unauthorized"}))
        );
        let (status, _) = call(
            &gitlab,
            "GET",
            VARS,
            Some(("PRIVATE-TOKEN", "glpat-wrong")),
            None,
        );
        assert_eq!(status, 401);
        let bearer = format!("Bearer {}", gitlab.token);
        let (status, body) = call(
            &gitlab,
            "GET",
            VARS,
            Some(("Authorization", bearer.as_str())),
            None,
        );
        assert_eq!((status, body), (200, json!([])));
    }

    #[test]
    fn create_read_update_delete_like_gitlab() {
        let gitlab = FakeGitlab::start();
        let id = gitlab.add_project("acme/payments");
        let (status, body) = authed(
            &gitlab,
            "POST",
            VARS,
            Some(&json!({"key": "K", "value": "v1"})),
        );
        assert_eq!(status, 201, "{body}");
        // GitLab's defaults.
        assert_eq!(
            body,
            json!({"key": "K", "value": "v1", "variable_type": "env_var", "protected": false,
                   "masked": false, "raw": false, "environment_scope": "*", "description": null})
        );
        assert_eq!(
            gitlab.variable("acme/payments", "K", "*"),
            Some(FakeVariable::new("v1"))
        );
        // The same key and scope again: no upsert.
        let (status, body) = authed(
            &gitlab,
            "POST",
            VARS,
            Some(&json!({"key": "K", "value": "v2"})),
        );
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"message": {"key": ["(K) has already been taken"]}})
        );
        // Numeric id and path address the same project.
        let (status, body) = authed(
            &gitlab,
            "GET",
            &format!("/api/v4/projects/{id}/variables/K"),
            None,
        );
        assert_eq!((status, &body["value"]), (200, &json!("v1")));
        let (status, body) = authed(
            &gitlab,
            "PUT",
            &format!("{VARS}/K"),
            Some(&json!({"value": "v2", "protected": true})),
        );
        assert_eq!(
            (status, &body["value"], &body["protected"]),
            (200, &json!("v2"), &json!(true))
        );
        assert_eq!(gitlab.writes(), 2);
        // A PUT that changes nothing is not a write.
        authed(
            &gitlab,
            "PUT",
            &format!("{VARS}/K"),
            Some(&json!({"value": "v2"})),
        );
        assert_eq!(gitlab.writes(), 2);
        let (status, _) = authed(&gitlab, "DELETE", &format!("{VARS}/K"), None);
        assert_eq!(status, 204);
        let (status, body) = authed(&gitlab, "GET", &format!("{VARS}/K"), None);
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Variable Not Found"}))
        );
        // PUT is no upsert either.
        let (status, body) = authed(
            &gitlab,
            "PUT",
            &format!("{VARS}/K"),
            Some(&json!({"value": "v"})),
        );
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Variable Not Found"}))
        );
    }

    #[test]
    fn scopes_need_the_filter_when_a_key_has_several() {
        let gitlab = FakeGitlab::start();
        gitlab.add_project("acme/payments");
        for scope in ["production", "staging"] {
            let (status, _) = authed(
                &gitlab,
                "POST",
                VARS,
                Some(&json!({"key": "K", "value": scope, "environment_scope": scope})),
            );
            assert_eq!(status, 201);
        }
        let (status, body) = authed(&gitlab, "GET", &format!("{VARS}/K"), None);
        assert_eq!(status, 409);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("filter[environment_scope]")
        );
        let (status, body) = authed(
            &gitlab,
            "GET",
            &format!("{VARS}/K?filter%5Benvironment_scope%5D=staging"),
            None,
        );
        assert_eq!((status, &body["value"]), (200, &json!("staging")));
        let (status, _) = authed(
            &gitlab,
            "PUT",
            &format!("{VARS}/K?filter[environment_scope]=production"),
            Some(&json!({"value": "p2"})),
        );
        assert_eq!(status, 200);
        assert_eq!(
            gitlab
                .variable("acme/payments", "K", "production")
                .unwrap()
                .value,
            "p2"
        );
        assert_eq!(
            gitlab
                .variable("acme/payments", "K", "staging")
                .unwrap()
                .value,
            "staging"
        );
        // Query values are not recorded.
        let requests = gitlab.requests();
        assert!(requests.contains(&(
            "PUT".to_owned(),
            format!("{VARS}/K?filter[environment_scope]")
        )));
        assert!(requests.iter().all(|(_, p)| !p.contains("production")));
    }

    #[test]
    fn masking_rules_and_key_names_are_enforced() {
        let gitlab = FakeGitlab::start();
        gitlab.add_group("acme");
        let vars = "/api/v4/groups/acme/variables";
        let invalid = json!({"message": {"value": ["is invalid"]}});
        for (value, raw) in [
            ("short7!", true),
            ("two\nlines-here", true),
            ("has$dollar", false),
        ] {
            let (status, body) = authed(
                &gitlab,
                "POST",
                vars,
                Some(&json!({"key": "M", "value": value, "masked": true, "raw": raw})),
            );
            assert_eq!((status, body), (400, invalid.clone()), "{value:?}");
        }
        for (value, raw) in [("has$dollar", true), ("abc+/=@:.~-_XYZ", false)] {
            let (status, body) = authed(
                &gitlab,
                "POST",
                vars,
                Some(
                    &json!({"key": "M", "value": value, "masked": true, "raw": raw, "environment_scope": value}),
                ),
            );
            assert_eq!(status, 201, "{value:?} {body}");
        }
        let (status, body) = authed(
            &gitlab,
            "POST",
            vars,
            Some(&json!({"key": "BAD-KEY", "value": "x"})),
        );
        assert_eq!(status, 400);
        assert!(
            body["message"]["key"][0]
                .as_str()
                .unwrap()
                .contains("only letters")
        );
        let (status, body) = authed(&gitlab, "POST", vars, Some(&json!({"key": "K"})));
        assert_eq!((status, body), (400, json!({"error": "value is missing"})));
        assert_eq!(gitlab.writes(), 2);
    }

    #[test]
    fn unknown_owners_and_routes_are_404() {
        let gitlab = FakeGitlab::start();
        gitlab.add_project("acme/payments");
        let (status, body) = authed(
            &gitlab,
            "GET",
            "/api/v4/projects/acme%2Fother/variables/K",
            None,
        );
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Project Not Found"}))
        );
        let (status, body) = authed(&gitlab, "GET", "/api/v4/groups/acme/variables/K", None);
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Group Not Found"}))
        );
        // An unencoded path is another route, as on GitLab.
        let (status, _) = authed(
            &gitlab,
            "GET",
            "/api/v4/projects/acme/payments/variables/K",
            None,
        );
        assert_eq!(status, 404);
    }

    #[test]
    fn hooks_down_and_hidden_get() {
        let gitlab = FakeGitlab::start();
        gitlab.add_project("acme/payments");
        gitlab.set_variable("acme/payments", "K", FakeVariable::new("v"));
        assert_eq!(gitlab.writes(), 0);
        gitlab.hide_next_get();
        assert_eq!(authed(&gitlab, "GET", &format!("{VARS}/K"), None).0, 404);
        assert_eq!(authed(&gitlab, "GET", &format!("{VARS}/K"), None).0, 200);
        gitlab.set_down(true);
        assert_eq!(authed(&gitlab, "GET", &format!("{VARS}/K"), None).0, 503);
        gitlab.set_down(false);
        assert_eq!(authed(&gitlab, "GET", &format!("{VARS}/K"), None).0, 200);
        assert_eq!(gitlab.requests().len(), 4);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("acme%2Fpay%2fments", false),
            "acme/pay/ments"
        );
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(
            parse_form("filter%5Benvironment_scope%5D=prod%2A&x"),
            [
                ("filter[environment_scope]".to_owned(), "prod*".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
    }
}
