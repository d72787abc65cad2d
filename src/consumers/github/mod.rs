//! The `github` consumer: sets a GitHub Actions secret of a repository, of one of its
//! environments, or of an organisation, through the REST API (version 2022-11-28).
//!
//! GitHub only accepts secret values sealed to a public key it hands out per scope: a
//! push reads that key (`…/secrets/public-key`), seals the value in a libsodium sealed
//! box (X25519 + XSalsa20-Poly1305, [`crypto_box`]), and `PUT`s `{encrypted_value,
//! key_id}`. GitHub never returns a value, so the write is verified by the secret's
//! `updated_at`, read before and after: it must have advanced (or the secret must now
//! exist). GitHub's timestamps have a resolution of one second, so two writes within
//! the same second report `verified: false`; the write itself still succeeded.
//!
//! The API base is the consumer's `url`: `https://api.github.com`, or
//! `https://HOST/api/v3` for GitHub Enterprise Server; paths are appended to it.
//!
//! Neither the token nor the value reaches an error or a log: GitHub's error messages
//! are kept (they name the problem) but scrubbed of both first.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use crypto_box::aead::OsRng;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tracing::info;

mod api;

use self::api::{Action, Answer, Call, Scope, advanced, bearer, decode, failure, join, public_key};
use super::{
    Consumer, ConsumerKind, Context, NewValue, PushOutcome, PushResult, ReadBack, ReadBackResult,
    RemoveOutcome, RemoveResult, ci_inputs, scrub::Scrubber, token,
};
use crate::policy::{GithubConsumer, GithubVisibility};

/// The REST API version rotor speaks (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
/// Largest secret value GitHub stores, in bytes (48 KB).
pub const MAX_VALUE_BYTES: usize = 48 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest GitHub error message kept in an error (in characters).
const MAX_MESSAGE_CHARS: usize = 300;

/// One HTTP client for every GitHub consumer: rustls, 10 s to connect, 30 s per
/// request, no redirects, and the headers GitHub asks for (`Accept:
/// application/vnd.github+json`, `X-GitHub-Api-Version`, and rotor's
/// [`crate::outside::USER_AGENT`]: GitHub refuses requests without one).
#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
}

impl fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GithubClient")
    }
}

/// What one [`GithubClient::push`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GithubPushReport {
    /// Always true on success: GitHub cannot read values back, so every push writes.
    pub changed: bool,
    /// Whether the secret's `updated_at` advanced across the write (or it now exists).
    pub verified: bool,
}

impl GithubClient {
    /// Builds the HTTP client.
    pub fn new() -> Result<Self, GithubError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            HeaderName::from_static("x-github-api-version"),
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(crate::outside::USER_AGENT)
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT.min(crate::outside::call_timeout()))
            .timeout(crate::outside::call_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(GithubError::Client)?;
        Ok(GithubClient { http })
    }

    /// Sets the Actions secret `spec.name` of `spec.target` to `value`, authenticating
    /// with `token` as a bearer token.
    ///
    /// Steps: read the scope's public key (a 404 here names the missing repository,
    /// environment or organisation), read the secret's `updated_at` (404: a new
    /// secret), seal and `PUT` the value (201 created, 204 updated; organisations also
    /// get `visibility`), read the secret again. Values over [`MAX_VALUE_BYTES`] and
    /// organisation secrets with visibility `selected` (which need repository ids that
    /// policies do not carry) are refused before any request.
    pub async fn push(
        &self,
        spec: &GithubConsumer,
        token: &SecretString,
        value: &SecretString,
    ) -> Result<GithubPushReport, GithubError> {
        let scope = Scope::of(spec);
        let secret = spec.name.as_str();
        let size = value.expose_secret().len();
        if size > MAX_VALUE_BYTES {
            return Err(GithubError::ValueTooLarge {
                secret: secret.to_owned(),
                target: scope.describe(),
                size,
                limit: MAX_VALUE_BYTES,
            });
        }
        if let Scope::Organization {
            org,
            visibility: GithubVisibility::Selected,
        } = &scope
        {
            return Err(GithubError::SelectedWithoutRepositories {
                secret: secret.to_owned(),
                org: (*org).to_owned(),
            });
        }
        let (calls, answer) = self.open(spec, &scope, token, value).await?;
        let (key_id, key) = public_key(&calls.call(Action::PublicKey), &answer.body)?;

        let before = self.updated_at(&calls, Action::Read).await?;

        let sealed = key
            .seal(&mut OsRng, value.expose_secret().as_bytes())
            .map_err(|_| GithubError::Seal {
                secret: secret.to_owned(),
                target: calls.target.clone(),
            })?;
        let mut body = json!({
            "encrypted_value": base64::engine::general_purpose::STANDARD.encode(sealed),
            "key_id": key_id,
        });
        if let Scope::Organization { visibility, .. } = &scope {
            body["visibility"] = Value::from(visibility.as_str());
        }
        let (write_call, answer) = self
            .on_secret(&calls, Action::Write, Method::PUT, Some(&body))
            .await?;
        let created = match answer.status {
            StatusCode::CREATED => true,
            StatusCode::NO_CONTENT => false,
            _ => return Err(failure(&write_call, &answer, &calls.scrubber)),
        };

        let after = self.updated_at(&calls, Action::ReadBack).await?;
        let verified = match (&before, &after) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => advanced(old, new),
        };
        info!(
            target = %calls.target,
            secret = %secret,
            created,
            verified,
            "GitHub Actions secret written."
        );
        Ok(GithubPushReport {
            changed: true,
            verified,
        })
    }

    /// Deletes `spec`'s Actions secret (`DELETE …/secrets/{name}`) and proves it gone.
    /// The scope is checked first (its public key must answer 200), so a 404 on the
    /// secret means the secret is gone, not that the repository, environment or
    /// organisation is missing or invisible to the token. Returns whether it existed.
    pub async fn remove(
        &self,
        spec: &GithubConsumer,
        token: &SecretString,
    ) -> Result<bool, GithubError> {
        let calls = self.open_without_value(spec, token).await?;
        let (delete_call, answer) = self
            .on_secret(&calls, Action::Delete, Method::DELETE, None)
            .await?;
        let existed = match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            _ => return Err(failure(&delete_call, &answer, &calls.scrubber)),
        };
        if self.updated_at(&calls, Action::ReadBack).await?.is_some() {
            return Err(GithubError::NotRemoved {
                call: calls.call(Action::ReadBack).to_string(),
            });
        }
        info!(target = %calls.target, secret = %calls.secret, existed, "GitHub Actions secret deleted.");
        Ok(existed)
    }

    /// Whether `spec`'s Actions secret exists: `NotReadable` when it does (GitHub never
    /// returns a secret's value), `Missing` when GitHub answers 404 for it. The scope
    /// is checked first, as for [`GithubClient::remove`], so a 404 means the secret.
    pub async fn read_back(
        &self,
        spec: &GithubConsumer,
        token: &SecretString,
    ) -> Result<ReadBack, GithubError> {
        let calls = self.open_without_value(spec, token).await?;
        Ok(match self.updated_at(&calls, Action::Read).await? {
            Some(_) => ReadBack::NotReadable,
            None => ReadBack::Missing,
        })
    }

    /// [`GithubClient::open`] for calls that send no value (a read or a delete).
    async fn open_without_value<'s>(
        &self,
        spec: &'s GithubConsumer,
        token: &SecretString,
    ) -> Result<SecretCalls<'s>, GithubError> {
        let nothing = SecretString::from(String::new());
        let (calls, _) = self.open(spec, &Scope::of(spec), token, &nothing).await?;
        Ok(calls)
    }

    /// Prepares the calls about `spec`'s secret in `scope` (scrubbing `token` and
    /// `value` from GitHub's messages) and reads the scope's public key, which must
    /// answer 200: a 404 there names the missing repository, environment or
    /// organisation. Returns the calls and the key's answer.
    async fn open<'s>(
        &self,
        spec: &'s GithubConsumer,
        scope: &Scope<'_>,
        token: &SecretString,
        value: &SecretString,
    ) -> Result<(SecretCalls<'s>, Answer), GithubError> {
        let secret = spec.name.as_str();
        let auth = bearer(token)?;
        // GitHub does not echo the token or the value, but a proxy in front of GitHub
        // Enterprise might.
        let scrubber = Scrubber::new([token.expose_secret().trim(), value.expose_secret()]);
        let collection = scope.collection();
        let key_url = join(&spec.url, &collection, "public-key")?;
        let secret_url = join(&spec.url, &collection, secret)?;
        let calls = SecretCalls {
            secret,
            target: scope.describe(),
            auth,
            scrubber,
            secret_url,
        };
        let key_call = calls.call(Action::PublicKey);
        let answer = self
            .send(&key_call, Method::GET, key_url, &calls.auth, None)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(&key_call, &answer, &calls.scrubber));
        }
        Ok((calls, answer))
    }

    /// The secret's `updated_at` (a call doing `action`), or `None` when it does not
    /// exist (404).
    async fn updated_at(
        &self,
        calls: &SecretCalls<'_>,
        action: Action,
    ) -> Result<Option<String>, GithubError> {
        let (call, answer) = self.on_secret(calls, action, Method::GET, None).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(failure(&call, &answer, &calls.scrubber)),
        }
        let doc: Value = serde_json::from_slice(&answer.body).map_err(|e| decode(&call, &e))?;
        match doc.get("updated_at").and_then(Value::as_str) {
            Some(t) => Ok(Some(t.to_owned())),
            None => Err(GithubError::Decode {
                call: call.to_string(),
                detail: "no `updated_at` string in the answer".to_owned(),
            }),
        }
    }

    /// One request about the secret itself (its URL, the bearer header): the call
    /// doing `action`, for errors, and GitHub's answer.
    async fn on_secret<'c>(
        &self,
        calls: &'c SecretCalls<'_>,
        action: Action,
        method: Method,
        body: Option<&Value>,
    ) -> Result<(Call<'c>, Answer), GithubError> {
        let call = calls.call(action);
        let answer = self
            .send(&call, method, calls.secret_url.clone(), &calls.auth, body)
            .await?;
        Ok((call, answer))
    }

    async fn send(
        &self,
        call: &Call<'_>,
        method: Method,
        url: url::Url,
        auth: &HeaderValue,
        body: Option<&Value>,
    ) -> Result<Answer, GithubError> {
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, auth.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| {
            crate::outside::note(crate::outside::System::Github, &e);
            GithubError::Transport {
                call: call.to_string(),
                source: e.without_url(),
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// Errors of the GitHub consumer. None of them carries the token or the value.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum GithubError {
    /// The HTTP client could not be built.
    #[error("cannot build the GitHub HTTP client")]
    #[strum(serialize = "client")]
    Client(#[source] reqwest::Error),
    /// The consumer's `url` cannot take API paths (a caller bug: policies are validated).
    #[error("the GitHub API URL {url} cannot take a path")]
    #[strum(serialize = "base_url")]
    BaseUrl {
        /// The URL, without credentials (policies refuse URLs that carry any).
        url: String,
    },
    /// The value is larger than GitHub stores; nothing was sent.
    #[error(
        "the value for GitHub secret {secret} of {target} is {size} bytes, GitHub stores at most {limit}; nothing was sent"
    )]
    #[strum(serialize = "value_too_large")]
    ValueTooLarge {
        /// Secret name.
        secret: String,
        /// Repository, environment or organisation.
        target: String,
        /// Size of the value in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// An organisation secret with visibility `selected` needs the ids of the selected
    /// repositories, which a policy cannot list; nothing was sent.
    #[error(
        "GitHub organization secret {secret} of {org} has visibility `selected`, which needs the ids of the selected repositories (selected_repository_ids), and policies cannot list them; use visibility `all` or `private`. Nothing was sent"
    )]
    #[strum(serialize = "selected_without_repositories")]
    SelectedWithoutRepositories {
        /// Secret name.
        secret: String,
        /// Organisation login.
        org: String,
    },
    /// The token holds characters an HTTP header cannot carry (it is not printed).
    #[error("the GitHub token holds characters an HTTP header cannot carry")]
    #[strum(serialize = "invalid_token")]
    InvalidToken,
    /// No HTTP answer: connection refused, TLS, timeout, broken body.
    #[error("{call}: no answer from GitHub")]
    #[strum(serialize = "transport")]
    Transport {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// Why (without the URL).
        #[source]
        source: reqwest::Error,
    },
    /// GitHub refused the token (401).
    #[error("{call}: GitHub refused the token (HTTP 401: {message})")]
    #[strum(serialize = "auth")]
    Auth {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// GitHub's message, scrubbed.
        message: String,
    },
    /// The token may not do this (403, not a rate limit).
    #[error(
        "{call}: GitHub denied access (HTTP 403: {message}); the token needs write access to Actions secrets there"
    )]
    #[strum(serialize = "forbidden")]
    Forbidden {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// GitHub's message, scrubbed.
        message: String,
    },
    /// A GitHub rate limit (403 with `x-ratelimit-remaining: 0` or `retry-after`, or 429).
    #[error("{call}: GitHub rate limit reached (HTTP {status}); {}", retry_text(*.retry_after_secs))]
    #[strum(serialize = "rate_limited")]
    RateLimited {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// 403 or 429.
        status: u16,
        /// Seconds to wait, from `retry-after` or `x-ratelimit-reset`, when GitHub said.
        retry_after_secs: Option<u64>,
    },
    /// The repository, environment or organisation does not exist, or the token cannot see it (404).
    #[error("{call}: {target} not found on GitHub, or the token cannot see it (HTTP 404)")]
    #[strum(serialize = "not_found")]
    NotFound {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// The repository, environment or organisation.
        target: String,
    },
    /// GitHub refused the request as invalid (422), with its reason.
    #[error("{call}: GitHub rejected the request (HTTP 422: {message})")]
    #[strum(serialize = "rejected")]
    Rejected {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// GitHub's message, scrubbed.
        message: String,
    },
    /// Any other unexpected status (5xx are transient).
    #[error("{call}: GitHub answered HTTP {status} ({message})")]
    #[strum(serialize = "status")]
    Status {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// The status code.
        status: u16,
        /// GitHub's message, scrubbed, or the reason phrase.
        message: String,
    },
    /// The public key GitHub returned is not a base64 32-byte X25519 key.
    #[error("{call}: GitHub returned an unusable public key ({detail})")]
    #[strum(serialize = "public_key")]
    PublicKey {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Sealing the value failed.
    #[error("sealing the value for GitHub secret {secret} of {target} failed")]
    #[strum(serialize = "seal")]
    Seal {
        /// Secret name.
        secret: String,
        /// Repository, environment or organisation.
        target: String,
    },
    /// The secret is still listed after it was deleted.
    #[error("{call}: the secret is still there after it was deleted")]
    #[strum(serialize = "not_removed")]
    NotRemoved {
        /// What rotor was doing, on which secret and target.
        call: String,
    },
    /// A successful answer could not be decoded.
    #[error("{call}: GitHub's answer could not be decoded ({detail})")]
    #[strum(serialize = "decode")]
    Decode {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// What is wrong with it (never the body).
        detail: String,
    },
}

impl GithubError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transport { source, .. } if source.is_timeout() => "timeout",
            other => other.into(),
        }
    }

    /// Whether retrying the same push may succeed: no answer, rate limits, 5xx and
    /// 408. Refused tokens, denied access, missing targets and rejected requests need
    /// a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RateLimited { .. } | Self::NotRemoved { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    /// How long GitHub asked to wait, for rate limits that said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited {
                retry_after_secs: Some(s),
                ..
            } => Some(Duration::from_secs(*s)),
            _ => None,
        }
    }
}

/// The calls about one secret: its URL, the bearer header, and what to scrub from
/// GitHub's messages.
struct SecretCalls<'s> {
    secret: &'s str,
    target: String,
    auth: HeaderValue,
    scrubber: Scrubber,
    secret_url: url::Url,
}

impl SecretCalls<'_> {
    /// The call doing `action` on this secret, for errors.
    fn call(&self, action: Action) -> Call<'_> {
        Call {
            action,
            secret: self.secret,
            target: &self.target,
        }
    }
}

fn retry_text(retry_after_secs: Option<u64>) -> String {
    match retry_after_secs {
        Some(s) => format!("retry after {s} s"),
        None => "retry later".to_owned(),
    }
}

impl Consumer for GithubConsumer {
    fn consumer_kind(&self) -> ConsumerKind {
        ConsumerKind::Github
    }

    async fn push(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        let (token, value) = ci_inputs(ctx.vault, &self.token_from, &self.value, new.vars).await?;
        let r = ctx
            .clients
            .github()
            .await?
            .push(self, &token, &value)
            .await?;
        Ok(PushOutcome::written(r.changed, r.verified))
    }

    /// `NotReadable` while the secret exists (GitHub secrets are write-only), else
    /// `Missing`; the value is not rendered.
    async fn read_back(&self, ctx: &Context<'_>, _new: &NewValue<'_>) -> ReadBackResult {
        let token = token(ctx.vault, &self.token_from).await?;
        Ok(ctx.clients.github().await?.read_back(self, &token).await?)
    }

    async fn remove(&self, ctx: &Context<'_>) -> RemoveResult {
        let token = token(ctx.vault, &self.token_from).await?;
        let existed = ctx.clients.github().await?.remove(self, &token).await?;
        Ok(RemoveOutcome::of_one(
            existed,
            "secret deleted",
            "no such secret",
        ))
    }
}

#[cfg(test)]
mod tests;
