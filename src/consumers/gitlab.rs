//! The `gitlab` consumer: writes a rendered value into a project or group CI/CD variable
//! through the GitLab REST API (v4), then reads it back to prove the write.
//!
//! GitLab has no upsert, so [`GitlabClient::push`] reads first:
//!
//! 1. `GET /api/v4/{projects|groups}/:id/variables/:key?filter[environment_scope]=<scope>`
//!    (`:id` is the numeric id or the URL-encoded path, `acme%2Fpayments`). The filter is
//!    always sent, so a key held in several environment scopes is never ambiguous.
//! 2. Missing (`404 Variable Not Found`): `POST …/variables` with `key`, `value`, `masked`,
//!    `protected`, `raw`, `environment_scope` and `variable_type`. A POST answered 400
//!    "has already been taken" lost a race with another writer and is retried once as a PUT.
//!    Present: when the value and every attribute already match, nothing is written
//!    (`changed: false`); otherwise `PUT …/variables/:key?filter[environment_scope]=…`.
//! 3. The variable is read again and compared (value in constant time, and attributes).
//!
//! Attributes GitLab does not return (older versions lack `raw`) are not compared. A
//! hidden variable (GitLab 17.4+) is returned without its value: it is then always
//! written, and the read-back reports `verified: false` instead of failing.
//! GitLab before 16.9 ignores the scope filter on group variables; when GitLab answers
//! with a variable of another scope the push stops with [`GitlabError::ScopeMismatch`]
//! rather than overwrite the wrong variable.
//!
//! Secrets: the token travels only in the `PRIVATE-TOKEN` header (marked sensitive);
//! request bodies holding the value are serialized into a buffer sized up front and wiped
//! when the HTTP stack drops it, and response bodies are collected into a buffer wiped
//! on drop (copies made inside hyper and rustls are out of reach). Bodies are never
//! logged, and GitLab's messages are scrubbed of the value and the token before they
//! reach an error. Redirects are never followed, so the token goes to the configured
//! host only.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use url::Url;
use zeroize::{Zeroize, Zeroizing};

use crate::policy::{GitlabConsumer, GitlabTarget};
use crate::secret::{SecretString, constant_time_eq};

/// Limit for establishing a connection to GitLab.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying the token.
pub const TOKEN_HEADER: &str = "PRIVATE-TOKEN";
/// The query parameter selecting a variable's environment scope.
pub const SCOPE_FILTER: &str = "filter[environment_scope]";

/// Largest response body read; a variable holds at most a few kilobytes (10 000
/// characters on gitlab.com), so more than this is not a GitLab variable answer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Longest GitLab message kept in an error.
const MAX_MESSAGE_CHARS: usize = 400;

/// One HTTP client for every GitLab consumer (rustls, 10 s connect / 30 s total
/// timeouts, no redirects). Holds no token: each push brings its own.
#[derive(Clone)]
pub struct GitlabClient {
    http: reqwest::Client,
}

impl fmt::Debug for GitlabClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GitlabClient")
    }
}

/// What one [`GitlabClient::push`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GitlabPushReport {
    /// Whether the variable was created or updated (value or an attribute differed).
    pub changed: bool,
    /// Whether the variable was read back with the pushed value and attributes. `false`
    /// only for a hidden variable, whose value GitLab never returns.
    pub verified: bool,
}

impl fmt::Display for GitlabPushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "changed={} verified={}", self.changed, self.verified)
    }
}

/// Which variable an error is about, as shown in messages:
/// `project acme/payments variable KEY (environment scope production) on gitlab.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableLocation {
    /// GitLab's host (and port, when not the scheme's default).
    pub host: String,
    /// `project` or `group`.
    pub owner_kind: &'static str,
    /// The project or group path (or numeric id) as the policy names it.
    pub owner: String,
    /// The variable key.
    pub key: String,
    /// The environment scope.
    pub scope: String,
}

impl VariableLocation {
    fn of(spec: &GitlabConsumer) -> Self {
        let (owner_kind, owner) = match &spec.target {
            GitlabTarget::Project(p) => ("project", p.clone()),
            GitlabTarget::Group(g) => ("group", g.clone()),
        };
        let host = match (spec.url.host_str(), spec.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => "(no host)".to_owned(),
        };
        VariableLocation {
            host,
            owner_kind,
            owner,
            key: spec.key.clone(),
            scope: spec.environment_scope.clone(),
        }
    }
}

impl fmt::Display for VariableLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} variable {} (environment scope {}) on {}",
            self.owner_kind, self.owner, self.key, self.scope, self.host
        )
    }
}

/// The request a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitlabOperation {
    /// The first `GET` of the variable.
    Read,
    /// `POST` (create).
    Create,
    /// `PUT` (update).
    Update,
    /// The `GET` after the write.
    ReadBack,
    /// `DELETE` (retirement).
    Delete,
}

impl fmt::Display for GitlabOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GitlabOperation::Read => "reading",
            GitlabOperation::Create => "creating",
            GitlabOperation::Update => "updating",
            GitlabOperation::ReadBack => "reading back",
            GitlabOperation::Delete => "deleting",
        })
    }
}

/// Errors of the GitLab consumer. They name the host, project or group, key, scope and
/// HTTP status, and carry GitLab's own message scrubbed of the value and the token;
/// never a request body, the value or the token.
#[derive(Debug, thiserror::Error)]
pub enum GitlabError {
    /// The HTTP client could not be built (TLS back-end).
    #[error("building the HTTP client for GitLab failed")]
    Client(#[source] reqwest::Error),
    /// The consumer's `url` cannot be used as a GitLab base URL.
    #[error("the GitLab URL {url} cannot be used: {reason}")]
    InvalidUrl {
        /// The URL without user information.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token is empty or not a valid HTTP header value (a line break, say).
    #[error("the GitLab token for {variable} is empty or not a valid HTTP header value")]
    InvalidToken {
        /// The variable the token was for.
        variable: Box<VariableLocation>,
    },
    /// GitLab refused the token (401) or its permissions (403).
    #[error("GitLab refused the token while {operation} {variable}: HTTP {status}: {message}")]
    Auth {
        /// The request that was refused.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// 401 or 403.
        status: u16,
        /// GitLab's message.
        message: String,
    },
    /// The project or group does not exist, or the token cannot see it (GitLab answers
    /// 404 for both).
    #[error(
        "GitLab on {} has no {} {} (or the token cannot see it) while {operation} variable {}: HTTP 404: {message}",
        variable.host, variable.owner_kind, variable.owner, variable.key
    )]
    NotFound {
        /// The request answered 404.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// GitLab's message (`404 Project Not Found`).
        message: String,
    },
    /// GitLab refused the request as invalid (400, 409, 422): masking rules, key rules, …
    #[error("GitLab rejected {operation} {variable}: HTTP {status}: {message}")]
    Rejected {
        /// The refused request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP status.
        status: u16,
        /// GitLab's message (`value is invalid`), scrubbed.
        message: String,
    },
    /// Any other HTTP error status (5xx and 429 are transient).
    #[error("GitLab answered HTTP {status} while {operation} {variable}: {message}")]
    Http {
        /// The failed request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP status.
        status: u16,
        /// GitLab's message, scrubbed.
        message: String,
    },
    /// No usable answer: refused connection, TLS failure, timeout, broken body.
    #[error("no answer from GitLab while {operation} {variable}")]
    Transport {
        /// The failed request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP client's error (it names the URL, which holds no secret).
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON GitLab documents.
    #[error("unexpected answer from GitLab while {operation} {variable}: {detail}")]
    Decode {
        /// The request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// What was wrong, without any content of the answer.
        detail: String,
    },
    /// GitLab returned the variable of another environment scope than asked for.
    #[error(
        "GitLab answered {operation} {variable} with the variable of environment scope {returned:?}; it ignores filter[environment_scope] (group variables before GitLab 16.9), so rotor does not write"
    )]
    ScopeMismatch {
        /// The request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The scope GitLab returned.
        returned: String,
    },
    /// Someone else changed the variable during the push (it vanished before the update).
    #[error("{variable} changed while rotor was {operation} it: {detail}")]
    Concurrent {
        /// The request that noticed.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// What happened.
        detail: &'static str,
    },
    /// The variable read back after the write does not hold what was written.
    #[error("{variable} read back after the write differs in {fields:?}")]
    ReadBackMismatch {
        /// The variable.
        variable: Box<VariableLocation>,
        /// The differing fields (`value`, `masked`, …); never their values.
        fields: Vec<&'static str>,
    },
}

impl GitlabError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::InvalidToken { .. } => "invalid_token",
            Self::Auth { .. } => "auth",
            Self::NotFound { .. } => "not_found",
            Self::Rejected { .. } => "rejected",
            Self::Http { .. } => "http",
            Self::Transport { source, .. } if source.is_timeout() => "timeout",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
            Self::ScopeMismatch { .. } => "scope_mismatch",
            Self::Concurrent { .. } => "concurrent_change",
            Self::ReadBackMismatch { .. } => "read_back_mismatch",
        }
    }

    /// Whether retrying the same push may succeed: connection failures, timeouts, 5xx,
    /// 429 and 408 are transient, and so are a concurrent change and a read-back
    /// mismatch (another writer may have won; the next push writes again). A refused
    /// token, a missing project and a rejected value need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !source.is_builder(),
            Self::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Concurrent { .. } | Self::ReadBackMismatch { .. } => true,
            Self::Client(_)
            | Self::InvalidUrl { .. }
            | Self::InvalidToken { .. }
            | Self::Auth { .. }
            | Self::NotFound { .. }
            | Self::Rejected { .. }
            | Self::Decode { .. }
            | Self::ScopeMismatch { .. } => false,
        }
    }

    /// The HTTP status GitLab answered, when the error comes from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Auth { status, .. }
            | Self::Rejected { status, .. }
            | Self::Http { status, .. } => Some(*status),
            Self::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}

impl GitlabClient {
    /// A client with rotor's timeouts, rustls and no redirects. No I/O.
    pub fn new() -> Result<Self, GitlabError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(crate::outside::call_timeout()))
            .timeout(crate::outside::call_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(GitlabError::Client)?;
        Ok(GitlabClient { http })
    }

    /// Creates or updates `spec`'s CI/CD variable to `value` and reads it back (see the
    /// module documentation for the requests). `changed` is false when the variable
    /// already held `value` with every attribute of `spec`; nothing is written then.
    pub async fn push(
        &self,
        spec: &GitlabConsumer,
        token: &SecretString,
        value: &SecretString,
    ) -> Result<GitlabPushReport, GitlabError> {
        let call = Call::new(spec, token, value)?;

        let changed = match self.read(&call, GitlabOperation::Read).await? {
            Some(current) => {
                call.check_scope(&current, GitlabOperation::Read)?;
                let diff = call.differences(&current);
                if diff.is_empty() {
                    debug!(variable = %call.location, "GitLab variable already up to date.");
                    return Ok(GitlabPushReport {
                        changed: false,
                        verified: true,
                    });
                }
                debug!(variable = %call.location, fields = ?diff.fields(), "GitLab variable differs; updating.");
                drop(current);
                self.update(&call).await?;
                true
            }
            None => {
                match self.create(&call).await? {
                    Created::Yes => {}
                    Created::AlreadyTaken => {
                        debug!(variable = %call.location, "GitLab variable appeared since it was read; updating instead.");
                        self.update(&call).await?;
                    }
                }
                true
            }
        };

        let Some(read_back) = self.read(&call, GitlabOperation::ReadBack).await? else {
            return Err(GitlabError::ReadBackMismatch {
                variable: call.location(),
                fields: vec!["(the variable is gone)"],
            });
        };
        call.check_scope(&read_back, GitlabOperation::ReadBack)?;
        let diff = call.differences(&read_back);
        drop(read_back);
        if !diff.attributes.is_empty() || diff.value == ValueState::Differs {
            return Err(GitlabError::ReadBackMismatch {
                variable: call.location(),
                fields: diff.fields(),
            });
        }
        let verified = diff.value == ValueState::Same;
        info!(variable = %call.location, changed, verified, "GitLab variable pushed.");
        Ok(GitlabPushReport { changed, verified })
    }

    /// Deletes `spec`'s CI/CD variable (`DELETE …/variables/:key?filter[environment_scope]=…`)
    /// and reads it back to prove it is gone. Returns whether it existed; a variable
    /// GitLab already answers `404 Variable Not Found` for is gone already. A 404 for the
    /// project or group is an error (nothing proves the variable is gone).
    pub async fn remove(
        &self,
        spec: &GitlabConsumer,
        token: &SecretString,
    ) -> Result<bool, GitlabError> {
        let nothing = SecretString::from(String::new());
        let call = Call::new(spec, token, &nothing)?;
        let operation = GitlabOperation::Delete;
        let answer = self
            .send(&call, operation, Method::DELETE, &call.item_url, None)
            .await?;
        let existed = match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => true,
            StatusCode::NOT_FOUND if answer.is_missing_variable(&call) => false,
            _ => return Err(answer.failure(&call, operation)),
        };
        if let Some(still) = self.read(&call, GitlabOperation::ReadBack).await? {
            // A variable of another scope answered (filter ignored) is not ours.
            call.check_scope(&still, GitlabOperation::ReadBack)?;
            return Err(GitlabError::ReadBackMismatch {
                variable: call.location(),
                fields: vec!["(the variable is still there)"],
            });
        }
        info!(variable = %call.location, existed, "GitLab variable deleted.");
        Ok(existed)
    }

    /// `GET` the variable: `None` when GitLab says `404 Variable Not Found`.
    async fn read(
        &self,
        call: &Call<'_>,
        operation: GitlabOperation,
    ) -> Result<Option<RemoteVariable>, GitlabError> {
        let answer = self
            .send(call, operation, Method::GET, &call.item_url, None)
            .await?;
        match answer.status {
            StatusCode::OK => answer.variable(call, operation).map(Some),
            StatusCode::NOT_FOUND if answer.is_missing_variable(call) => Ok(None),
            _ => Err(answer.failure(call, operation)),
        }
    }

    async fn create(&self, call: &Call<'_>) -> Result<Created, GitlabError> {
        let operation = GitlabOperation::Create;
        let body = call.body(true)?;
        let answer = self
            .send(
                call,
                operation,
                Method::POST,
                &call.collection_url,
                Some(body),
            )
            .await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK => Ok(Created::Yes),
            StatusCode::BAD_REQUEST if answer.message(call).contains("has already been taken") => {
                Ok(Created::AlreadyTaken)
            }
            _ => Err(answer.failure(call, operation)),
        }
    }

    async fn update(&self, call: &Call<'_>) -> Result<(), GitlabError> {
        let operation = GitlabOperation::Update;
        let body = call.body(false)?;
        let answer = self
            .send(call, operation, Method::PUT, &call.item_url, Some(body))
            .await?;
        match answer.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND if answer.is_missing_variable(call) => {
                Err(GitlabError::Concurrent {
                    operation,
                    variable: call.location(),
                    detail: "it was deleted before the update",
                })
            }
            _ => Err(answer.failure(call, operation)),
        }
    }

    /// One request; the answer's body is read whole (bounded) into a wiped buffer.
    async fn send(
        &self,
        call: &Call<'_>,
        operation: GitlabOperation,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<Answer, GitlabError> {
        let transport = |source: reqwest::Error| {
            crate::outside::note(crate::outside::System::Gitlab, &source);
            GitlabError::Transport {
                operation,
                variable: call.location(),
                source,
            }
        };
        let mut request = self
            .http
            .request(method, url.clone())
            .header(TOKEN_HEADER, call.token.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(GitlabError::Decode {
                    operation,
                    variable: call.location(),
                    detail: format!("HTTP {status} with a body over {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            if body.capacity() < body.len() + chunk.len() {
                // Grow by hand so the old buffer is wiped, not just freed.
                let mut bigger = Zeroizing::new(Vec::with_capacity(
                    (body.len() + chunk.len()).max(body.capacity() * 2),
                ));
                bigger.extend_from_slice(&body);
                body = bigger;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }
}

/// What a POST did.
enum Created {
    Yes,
    /// 400 "has already been taken": another writer created it since the read.
    AlreadyTaken,
}

/// Everything one push needs, computed once.
struct Call<'a> {
    spec: &'a GitlabConsumer,
    value: &'a SecretString,
    location: VariableLocation,
    token: HeaderValue,
    collection_url: Url,
    item_url: Url,
    scrubber: Scrubber,
}

impl<'a> Call<'a> {
    fn new(
        spec: &'a GitlabConsumer,
        token: &SecretString,
        value: &'a SecretString,
    ) -> Result<Self, GitlabError> {
        let location = VariableLocation::of(spec);
        let (collection_url, item_url) = urls(spec)?;
        let exposed = token.expose_secret();
        let mut header = HeaderValue::from_str(exposed)
            .ok()
            .filter(|_| !exposed.trim().is_empty())
            .ok_or_else(|| GitlabError::InvalidToken {
                variable: Box::new(location.clone()),
            })?;
        header.set_sensitive(true);
        Ok(Call {
            spec,
            value,
            location,
            token: header,
            collection_url,
            item_url,
            scrubber: Scrubber::new(&[value.expose_secret(), exposed]),
        })
    }

    /// The variable, for an error.
    fn location(&self) -> Box<VariableLocation> {
        Box::new(self.location.clone())
    }

    /// The JSON body of a POST (`with_key`) or PUT, in a buffer wiped when dropped.
    fn body(&self, with_key: bool) -> Result<Bytes, GitlabError> {
        let spec = self.spec;
        let value = self.value.expose_secret();
        let body = WriteBody {
            key: with_key.then_some(spec.key.as_str()),
            value,
            variable_type: spec.variable_type.as_str(),
            protected: spec.protected,
            masked: spec.masked,
            raw: spec.raw,
            environment_scope: &spec.environment_scope,
        };
        // JSON escapes at most six bytes per input byte (`\u00XX`): with room for that,
        // the buffer never reallocates and leaves no unwiped copy behind.
        let capacity = 6 * (value.len() + spec.key.len() + spec.environment_scope.len()) + 256;
        let mut buf = WipedBuf(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut buf.0, &body).map_err(|e| GitlabError::Decode {
            operation: if with_key {
                GitlabOperation::Create
            } else {
                GitlabOperation::Update
            },
            variable: self.location(),
            detail: format!("could not encode the request ({:?})", e.classify()),
        })?;
        Ok(Bytes::from_owner(buf))
    }

    /// Fails when GitLab answered with a variable of another scope (filter ignored).
    fn check_scope(
        &self,
        remote: &RemoteVariable,
        operation: GitlabOperation,
    ) -> Result<(), GitlabError> {
        match &remote.environment_scope {
            Some(scope) if *scope != self.spec.environment_scope => {
                Err(GitlabError::ScopeMismatch {
                    operation,
                    variable: self.location(),
                    returned: scope.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// How `remote` differs from what the push wants.
    fn differences(&self, remote: &RemoteVariable) -> Difference {
        let spec = self.spec;
        let value = match &remote.value {
            Some(v) if constant_time_eq(v, self.value.expose_secret()) => ValueState::Same,
            Some(_) => ValueState::Differs,
            None => ValueState::Unreadable,
        };
        let mut attributes = Vec::new();
        let checks: [(&'static str, Option<bool>); 4] = [
            ("masked", remote.masked.map(|m| m == spec.masked)),
            ("protected", remote.protected.map(|p| p == spec.protected)),
            ("raw", remote.raw.map(|r| r == spec.raw)),
            (
                "variable_type",
                remote
                    .variable_type
                    .as_deref()
                    .map(|t| t == spec.variable_type.as_str()),
            ),
        ];
        for (name, same) in checks {
            // An attribute GitLab does not return cannot be compared.
            if same == Some(false) {
                attributes.push(name);
            }
        }
        Difference { value, attributes }
    }
}

/// Where the remote variable's value stands against the wanted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueState {
    Same,
    Differs,
    /// Hidden variable: GitLab returns no value.
    Unreadable,
}

#[derive(Debug)]
struct Difference {
    value: ValueState,
    attributes: Vec<&'static str>,
}

impl Difference {
    fn is_empty(&self) -> bool {
        self.value == ValueState::Same && self.attributes.is_empty()
    }

    fn fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        match self.value {
            ValueState::Same => {}
            ValueState::Differs => fields.push("value"),
            ValueState::Unreadable => fields.push("value (hidden)"),
        }
        fields.extend(&self.attributes);
        fields
    }
}

/// The collection URL (`…/variables`) and the item URL (`…/variables/KEY?filter…`).
fn urls(spec: &GitlabConsumer) -> Result<(Url, Url), GitlabError> {
    let base = &spec.url;
    let invalid = |reason| {
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        GitlabError::InvalidUrl {
            url: shown.to_string(),
            reason,
        }
    };
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be https or http"));
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(invalid(
            "it must not hold credentials (the token comes from tokenFrom)",
        ));
    }
    let (kind, owner) = match &spec.target {
        GitlabTarget::Project(p) => ("projects", p),
        GitlabTarget::Group(g) => ("groups", g),
    };
    let prefix = base.path().trim_end_matches('/');
    let mut collection = base.clone();
    collection.set_query(None);
    collection.set_fragment(None);
    collection.set_path(&format!(
        "{prefix}/api/v4/{kind}/{}/variables",
        encode_component(owner)
    ));
    let mut item = collection.clone();
    item.set_path(&format!(
        "{}/{}",
        collection.path(),
        encode_component(&spec.key)
    ));
    item.query_pairs_mut()
        .append_pair(SCOPE_FILTER, &spec.environment_scope);
    Ok((collection, item))
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ~`, so a path becomes one segment
/// (`acme/payments` → `acme%2Fpayments`), as GitLab's API wants for `:id`.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
struct WriteBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    value: &'a str,
    variable_type: &'static str,
    protected: bool,
    masked: bool,
    raw: bool,
    environment_scope: &'a str,
}

/// A byte buffer wiped when the last reference to it (inside `Bytes`) is dropped.
struct WipedBuf(Vec<u8>);

impl AsRef<[u8]> for WipedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A variable as GitLab returns it; the value is wiped on drop. Never `Debug`-printed.
#[derive(Deserialize)]
struct RemoteVariable {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    variable_type: Option<String>,
    #[serde(default)]
    protected: Option<bool>,
    #[serde(default)]
    masked: Option<bool>,
    #[serde(default)]
    raw: Option<bool>,
    #[serde(default)]
    environment_scope: Option<String>,
}

impl Drop for RemoteVariable {
    fn drop(&mut self) {
        if let Some(v) = self.value.as_mut() {
            v.zeroize();
        }
    }
}

/// A response: status and whole body.
struct Answer {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

impl Answer {
    fn variable(
        &self,
        call: &Call<'_>,
        operation: GitlabOperation,
    ) -> Result<RemoteVariable, GitlabError> {
        serde_json::from_slice(&self.body).map_err(|e| GitlabError::Decode {
            operation,
            variable: call.location(),
            // serde_json's Display can quote the offending value: keep the shape only.
            detail: format!(
                "the variable is not the documented JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    /// GitLab's message (`message`, else `error_description`, else `error`), rendered
    /// as text, scrubbed and shortened; a placeholder when the body has none.
    fn message(&self, call: &Call<'_>) -> String {
        let text = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| render_message(&v))
            .unwrap_or_else(|| "(no GitLab message)".to_owned());
        let mut text = call.scrubber.scrub(text);
        if text.chars().count() > MAX_MESSAGE_CHARS {
            text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        text
    }

    /// Whether a 404 says the variable (not the project or group) is missing.
    fn is_missing_variable(&self, call: &Call<'_>) -> bool {
        self.message(call).contains("Variable Not Found")
    }

    /// The error for an unexpected status.
    fn failure(&self, call: &Call<'_>, operation: GitlabOperation) -> GitlabError {
        let variable = call.location();
        let message = self.message(call);
        let status = self.status.as_u16();
        match status {
            401 | 403 => GitlabError::Auth {
                operation,
                variable,
                status,
                message,
            },
            404 => GitlabError::NotFound {
                operation,
                variable,
                message,
            },
            400 | 409 | 422 => GitlabError::Rejected {
                operation,
                variable,
                status,
                message,
            },
            _ => GitlabError::Http {
                operation,
                variable,
                status,
                message,
            },
        }
    }
}

/// Text of GitLab's error body: `{"message": "…"}`, `{"message": {"field": ["…"]}}`
/// (rendered `field …; other …`), `{"error": "…", "error_description": "…"}`.
fn render_message(body: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let found = ["message", "error_description", "error"]
        .iter()
        .find_map(|name| body.get(*name).filter(|v| !v.is_null()))?;
    let text = match found {
        Value::Object(fields) => fields
            .iter()
            .flat_map(|(field, messages)| {
                strings(messages)
                    .into_iter()
                    .map(move |m| format!("{field} {m}"))
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => strings(other).join("; "),
    };
    (!text.is_empty()).then_some(text)
}

/// Replaces secrets (plain and JSON-escaped) in GitLab's messages.
struct Scrubber {
    needles: Vec<Zeroizing<String>>,
}

impl Scrubber {
    fn new(secrets: &[&str]) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            needles.push(Zeroizing::new((*secret).to_owned()));
            if let Ok(json) = serde_json::to_string(secret) {
                let json = Zeroizing::new(json);
                let inner = json
                    .strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(&json);
                if inner != *secret {
                    needles.push(Zeroizing::new(inner.to_owned()));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Scrubber { needles }
    }

    fn scrub(&self, text: String) -> String {
        let mut out = text;
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                let replaced = out.replace(needle.as_str(), "[REDACTED]");
                out.zeroize();
                out = replaced;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{GitlabVariableType, Reference, Template};
    use serde_json::json;

    fn spec(url: &str, target: GitlabTarget) -> GitlabConsumer {
        GitlabConsumer {
            url: Url::parse(url).unwrap(),
            token_from: Reference::Env("T".to_owned()),
            target,
            key: "DB_PASSWORD".to_owned(),
            value: Template::parse("{{ password }}").unwrap(),
            masked: true,
            protected: false,
            raw: true,
            environment_scope: "production/*".to_owned(),
            variable_type: GitlabVariableType::EnvVar,
        }
    }

    fn remote(value: Option<&str>) -> RemoteVariable {
        RemoteVariable {
            value: value.map(str::to_owned),
            variable_type: Some("env_var".to_owned()),
            protected: Some(false),
            masked: Some(true),
            raw: Some(true),
            environment_scope: Some("production/*".to_owned()),
        }
    }

    #[test]
    fn urls_encode_the_path_and_keep_a_prefix() {
        let s = spec(
            "https://git.example.com/gitlab/",
            GitlabTarget::Project("acme/pay.ments".into()),
        );
        let (collection, item) = urls(&s).unwrap();
        assert_eq!(
            collection.as_str(),
            "https://git.example.com/gitlab/api/v4/projects/acme%2Fpay.ments/variables"
        );
        assert_eq!(
            item.as_str(),
            "https://git.example.com/gitlab/api/v4/projects/acme%2Fpay.ments/variables/DB_PASSWORD?filter%5Benvironment_scope%5D=production%2F*"
        );
        let s = spec("http://127.0.0.1:8080", GitlabTarget::Group("42".into()));
        let (collection, _) = urls(&s).unwrap();
        assert_eq!(
            collection.as_str(),
            "http://127.0.0.1:8080/api/v4/groups/42/variables"
        );
        assert_eq!(VariableLocation::of(&s).host, "127.0.0.1:8080");
        let s = spec(
            "https://user:pw@gitlab.com",
            GitlabTarget::Group("acme".into()),
        );
        let err = urls(&s).unwrap_err();
        assert_eq!(err.kind(), "invalid_url");
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn messages_are_rendered_from_every_gitlab_shape() {
        for (body, want) in [
            (
                json!({"message": "404 Project Not Found"}),
                "404 Project Not Found",
            ),
            (
                json!({"message": {"value": ["is invalid"]}}),
                "value is invalid",
            ),
            (
                json!({"message": {"key": ["(K) has already been taken"], "value": ["is invalid", "x"]}}),
                "key (K) has already been taken; value is invalid; value x",
            ),
            (
                json!({"error": "insufficient_scope", "error_description": "The request requires higher privileges."}),
                "The request requires higher privileges.",
            ),
            (json!({"error": "value is missing"}), "value is missing"),
        ] {
            assert_eq!(render_message(&body).as_deref(), Some(want));
        }
        assert_eq!(render_message(&json!({"other": 1})), None);
        assert_eq!(render_message(&json!({"message": null})), None);
    }

    #[test]
    fn scrubber_removes_plain_and_json_escaped_secrets() {
        let scrubber = Scrubber::new(&["pa\"ss\nword", "tok-123", ""]);
        let out = scrubber
            .scrub("echo pa\"ss\nword and {\"v\":\"pa\\\"ss\\nword\"} with tok-123 end".to_owned());
        assert!(
            !out.contains("ss\nword") && !out.contains("ss\\nword"),
            "{out}"
        );
        assert!(!out.contains("tok-123"), "{out}");
        assert!(
            out.starts_with("echo [REDACTED] and") && out.ends_with(" end"),
            "{out}"
        );
    }

    #[test]
    fn differences_compare_value_and_returned_attributes_only() {
        let s = spec("https://gitlab.com", GitlabTarget::Project("1".into()));
        let value = SecretString::from("s3cr3t-value".to_owned());
        let token = SecretString::from("glpat-x".to_owned());
        let call = Call::new(&s, &token, &value).unwrap();
        assert!(call.differences(&remote(Some("s3cr3t-value"))).is_empty());
        let d = call.differences(&remote(Some("old-value")));
        assert_eq!(d.fields(), ["value"]);
        let mut r = remote(Some("s3cr3t-value"));
        r.protected = Some(true);
        r.variable_type = Some("file".to_owned());
        assert_eq!(
            call.differences(&r).fields(),
            ["protected", "variable_type"]
        );
        // Older GitLab without `raw`: not compared.
        let mut r = remote(Some("s3cr3t-value"));
        r.raw = None;
        assert!(call.differences(&r).is_empty());
        // Hidden: no value returned.
        let d = call.differences(&remote(None));
        assert_eq!(d.value, ValueState::Unreadable);
        assert!(!d.is_empty());
        // Another scope is refused, a missing scope field is not.
        let mut r = remote(Some("s3cr3t-value"));
        r.environment_scope = Some("*".to_owned());
        let err = call.check_scope(&r, GitlabOperation::Read).unwrap_err();
        assert_eq!(err.kind(), "scope_mismatch");
        assert!(!err.is_transient());
        r.environment_scope = None;
        assert!(call.check_scope(&r, GitlabOperation::Read).is_ok());
    }

    #[test]
    fn bodies_hold_every_attribute_and_the_key_only_on_create() {
        let s = spec("https://gitlab.com", GitlabTarget::Project("1".into()));
        let value = SecretString::from("va\"lue\u{1}".to_owned());
        let token = SecretString::from("glpat-x".to_owned());
        let call = Call::new(&s, &token, &value).unwrap();
        let post: serde_json::Value = serde_json::from_slice(&call.body(true).unwrap()).unwrap();
        assert_eq!(
            post,
            json!({"key": "DB_PASSWORD", "value": "va\"lue\u{1}", "variable_type": "env_var",
                   "protected": false, "masked": true, "raw": true,
                   "environment_scope": "production/*"})
        );
        let put: serde_json::Value = serde_json::from_slice(&call.body(false).unwrap()).unwrap();
        assert!(put.get("key").is_none());
        assert_eq!(put["value"], "va\"lue\u{1}");
    }

    #[test]
    fn tokens_must_be_header_values_and_are_never_shown() {
        let s = spec("https://gitlab.com", GitlabTarget::Project("1".into()));
        let value = SecretString::from("v".to_owned());
        for bad in ["", "  ", "glpat-abc\ndef"] {
            let token = SecretString::from(bad.to_owned());
            let err = Call::new(&s, &token, &value).err().unwrap();
            assert_eq!(err.kind(), "invalid_token");
            assert!(!err.is_transient());
        }
        let token = SecretString::from("glpat-canary-token".to_owned());
        let call = Call::new(&s, &token, &value).unwrap();
        assert!(call.token.is_sensitive());
        assert!(!format!("{:?}", call.token).contains("canary"));
        assert_eq!(
            format!("{:?}", GitlabClient::new().unwrap()),
            "GitlabClient"
        );
    }

    #[test]
    fn status_classification() {
        let s = spec("https://gitlab.com", GitlabTarget::Project("acme/x".into()));
        let value = SecretString::from("the-value".to_owned());
        let token = SecretString::from("glpat-x".to_owned());
        let call = Call::new(&s, &token, &value).unwrap();
        let answer = |status: u16, body: serde_json::Value| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: Zeroizing::new(body.to_string().into_bytes()),
        };
        for (status, kind, transient) in [
            (401, "auth", false),
            (403, "auth", false),
            (404, "not_found", false),
            (400, "rejected", false),
            (409, "rejected", false),
            (422, "rejected", false),
            (429, "http", true),
            (408, "http", true),
            (500, "http", true),
            (503, "http", true),
            (418, "http", false),
        ] {
            let err = answer(status, json!({"message": "m"})).failure(&call, GitlabOperation::Read);
            assert_eq!(
                (err.kind(), err.is_transient()),
                (kind, transient),
                "{status}"
            );
            assert_eq!(err.status(), Some(status));
        }
        // A message echoing the value is scrubbed.
        let err = answer(400, json!({"message": {"value": ["the-value is bad"]}}))
            .failure(&call, GitlabOperation::Create);
        let text = err.to_string();
        assert!(!text.contains("the-value"), "{text}");
        assert!(text.contains("value [REDACTED] is bad"), "{text}");
        assert!(
            text.contains(
                "project acme/x variable DB_PASSWORD (environment scope production/*) on gitlab.com"
            ),
            "{text}"
        );
        assert!(
            answer(404, json!({"message": "404 Variable Not Found"})).is_missing_variable(&call)
        );
        assert!(
            !answer(404, json!({"message": "404 Project Not Found"})).is_missing_variable(&call)
        );
        assert!(!answer(404, json!("<html>")).is_missing_variable(&call));
    }
}
