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
use tracing::{debug, info};
use url::Url;
use zeroize::Zeroizing;

mod api;
mod error;

use self::api::{Answer, Call, Created, RemoteVariable};
use super::{
    Consumer, ConsumerKind, Context, NewValue, PushOutcome, PushResult, ReadBack, ReadBackResult,
    RemoveOutcome, RemoveResult, ci_inputs, token,
};
use crate::policy::GitlabConsumer;
use crate::secret::SecretString;

pub use self::error::{GitlabError, GitlabOperation, VariableLocation};

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

impl GitlabClient {
    /// A client with rotor's timeouts, rustls and no redirects. No I/O.
    pub fn new() -> Result<Self, GitlabError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(crate::outside::call_timeout()))
            .timeout(crate::outside::call_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::outside::USER_AGENT)
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

        let changed = match self.compare(&call, GitlabOperation::Read).await? {
            ReadBack::Matches => {
                debug!(variable = %call.location, "GitLab variable already up to date.");
                return Ok(GitlabPushReport {
                    changed: false,
                    verified: true,
                });
            }
            ReadBack::Missing => {
                match self.create(&call).await? {
                    Created::Yes => {}
                    Created::AlreadyTaken => {
                        debug!(variable = %call.location, "GitLab variable appeared since it was read; updating instead.");
                        self.update(&call).await?;
                    }
                }
                true
            }
            found => {
                debug!(variable = %call.location, found = ?found, "GitLab variable differs; updating.");
                self.update(&call).await?;
                true
            }
        };

        let verified = match self.compare(&call, GitlabOperation::ReadBack).await? {
            ReadBack::Matches => true,
            ReadBack::NotReadable => false,
            ReadBack::Missing => {
                return Err(GitlabError::ReadBackMismatch {
                    variable: call.location(),
                    fields: vec!["(the variable is gone)".to_owned()],
                });
            }
            ReadBack::Differs { fields } => {
                return Err(GitlabError::ReadBackMismatch {
                    variable: call.location(),
                    fields,
                });
            }
        };
        info!(variable = %call.location, changed, verified, "GitLab variable pushed.");
        Ok(GitlabPushReport { changed, verified })
    }

    /// Reads `spec`'s CI/CD variable and compares it with `value` and `spec`'s
    /// attributes, without writing: `Missing` when GitLab has no such variable,
    /// `NotReadable` for a hidden variable whose attributes match.
    pub async fn read_back(
        &self,
        spec: &GitlabConsumer,
        token: &SecretString,
        value: &SecretString,
    ) -> Result<ReadBack, GitlabError> {
        self.compare(&Call::new(spec, token, value)?, GitlabOperation::Read)
            .await
    }

    /// Reads the variable (a call doing `operation`) and compares it with the call's
    /// value and attributes; a variable of another scope is an error.
    async fn compare(
        &self,
        call: &Call<'_>,
        operation: GitlabOperation,
    ) -> Result<ReadBack, GitlabError> {
        let Some(remote) = self.read(call, operation).await? else {
            return Ok(ReadBack::Missing);
        };
        call.check_scope(&remote, operation)?;
        Ok(call.differences(&remote).read_back())
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
                fields: vec!["(the variable is still there)".to_owned()],
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

impl Consumer for GitlabConsumer {
    fn consumer_kind(&self) -> ConsumerKind {
        ConsumerKind::Gitlab
    }

    async fn push(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        let (token, value) = ci_inputs(ctx.vault, &self.token_from, &self.value, new.vars).await?;
        let r = ctx
            .clients
            .gitlab()
            .await?
            .push(self, &token, &value)
            .await?;
        Ok(PushOutcome::written(r.changed, r.verified))
    }

    async fn read_back(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> ReadBackResult {
        let (token, value) = ci_inputs(ctx.vault, &self.token_from, &self.value, new.vars).await?;
        let client = ctx.clients.gitlab().await?;
        Ok(client.read_back(self, &token, &value).await?)
    }

    async fn remove(&self, ctx: &Context<'_>) -> RemoveResult {
        let token = token(ctx.vault, &self.token_from).await?;
        let existed = ctx.clients.gitlab().await?.remove(self, &token).await?;
        Ok(RemoveOutcome::of_one(
            existed,
            "variable deleted",
            "no such variable",
        ))
    }
}

#[cfg(test)]
mod tests;
