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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use crypto_box::PublicKey;
use crypto_box::aead::OsRng;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tracing::info;
use zeroize::Zeroizing;

use crate::policy::{GithubConsumer, GithubTarget, GithubVisibility};

/// The REST API version rotor speaks (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
/// Largest secret value GitHub stores, in bytes (48 KB).
pub const MAX_VALUE_BYTES: usize = 48 * 1024;
/// The `User-Agent` of every request (GitHub refuses requests without one).
pub const USER_AGENT: &str = concat!("rotor/", env!("CARGO_PKG_VERSION"));

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest GitHub error message kept in an error (in characters).
const MAX_MESSAGE_CHARS: usize = 300;

/// One HTTP client for every GitHub consumer: rustls, 10 s to connect, 30 s per
/// request, no redirects, and the headers GitHub asks for (`Accept:
/// application/vnd.github+json`, `X-GitHub-Api-Version`, [`USER_AGENT`]).
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
            .user_agent(USER_AGENT)
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
        let auth = bearer(token)?;
        let scrubber = Scrubber::new(token, value);
        let collection = scope.collection();
        let key_url = join(&spec.url, &collection, "public-key")?;
        let secret_url = join(&spec.url, &collection, secret)?;
        let target = scope.describe();
        let call = |action: Action| Call {
            action,
            secret,
            target: &target,
        };

        let key_call = call(Action::PublicKey);
        let answer = self
            .send(&key_call, Method::GET, key_url, &auth, None)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(&key_call, &answer, &scrubber));
        }
        let (key_id, key) = public_key(&key_call, &answer.body)?;

        let before = self
            .updated_at(&call(Action::Read), &secret_url, &auth, &scrubber)
            .await?;

        let sealed = key
            .seal(&mut OsRng, value.expose_secret().as_bytes())
            .map_err(|_| GithubError::Seal {
                secret: secret.to_owned(),
                target: target.clone(),
            })?;
        let mut body = json!({
            "encrypted_value": base64::engine::general_purpose::STANDARD.encode(sealed),
            "key_id": key_id,
        });
        if let Scope::Organization { visibility, .. } = &scope {
            body["visibility"] = Value::from(visibility.as_str());
        }
        let write_call = call(Action::Write);
        let answer = self
            .send(
                &write_call,
                Method::PUT,
                secret_url.clone(),
                &auth,
                Some(&body),
            )
            .await?;
        let created = match answer.status {
            StatusCode::CREATED => true,
            StatusCode::NO_CONTENT => false,
            _ => return Err(failure(&write_call, &answer, &scrubber)),
        };

        let after = self
            .updated_at(&call(Action::ReadBack), &secret_url, &auth, &scrubber)
            .await?;
        let verified = match (&before, &after) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => advanced(old, new),
        };
        info!(
            target = %target,
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
        let scope = Scope::of(spec);
        let secret = spec.name.as_str();
        let auth = bearer(token)?;
        let nothing = SecretString::from(String::new());
        let scrubber = Scrubber::new(token, &nothing);
        let collection = scope.collection();
        let key_url = join(&spec.url, &collection, "public-key")?;
        let secret_url = join(&spec.url, &collection, secret)?;
        let target = scope.describe();
        let call = |action: Action| Call {
            action,
            secret,
            target: &target,
        };
        let key_call = call(Action::PublicKey);
        let answer = self
            .send(&key_call, Method::GET, key_url, &auth, None)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(&key_call, &answer, &scrubber));
        }
        let delete_call = call(Action::Delete);
        let answer = self
            .send(
                &delete_call,
                Method::DELETE,
                secret_url.clone(),
                &auth,
                None,
            )
            .await?;
        let existed = match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            _ => return Err(failure(&delete_call, &answer, &scrubber)),
        };
        let check = call(Action::ReadBack);
        if self
            .updated_at(&check, &secret_url, &auth, &scrubber)
            .await?
            .is_some()
        {
            return Err(GithubError::NotRemoved {
                call: check.to_string(),
            });
        }
        info!(target = %target, secret = %secret, existed, "GitHub Actions secret deleted.");
        Ok(existed)
    }

    /// The secret's `updated_at`, or `None` when it does not exist (404).
    async fn updated_at(
        &self,
        call: &Call<'_>,
        url: &url::Url,
        auth: &HeaderValue,
        scrubber: &Scrubber,
    ) -> Result<Option<String>, GithubError> {
        let answer = self
            .send(call, Method::GET, url.clone(), auth, None)
            .await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(failure(call, &answer, scrubber)),
        }
        let doc: Value = serde_json::from_slice(&answer.body).map_err(|e| decode(call, &e))?;
        match doc.get("updated_at").and_then(Value::as_str) {
            Some(t) => Ok(Some(t.to_owned())),
            None => Err(GithubError::Decode {
                call: call.to_string(),
                detail: "no `updated_at` string in the answer".to_owned(),
            }),
        }
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
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The HTTP client could not be built.
    #[error("cannot build the GitHub HTTP client")]
    Client(#[source] reqwest::Error),
    /// The consumer's `url` cannot take API paths (a caller bug: policies are validated).
    #[error("the GitHub API URL {url} cannot take a path")]
    BaseUrl {
        /// The URL, without credentials (policies refuse URLs that carry any).
        url: String,
    },
    /// The value is larger than GitHub stores; nothing was sent.
    #[error(
        "the value for GitHub secret {secret} of {target} is {size} bytes, GitHub stores at most {limit}; nothing was sent"
    )]
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
    SelectedWithoutRepositories {
        /// Secret name.
        secret: String,
        /// Organisation login.
        org: String,
    },
    /// The token holds characters an HTTP header cannot carry (it is not printed).
    #[error("the GitHub token holds characters an HTTP header cannot carry")]
    InvalidToken,
    /// No HTTP answer: connection refused, TLS, timeout, broken body.
    #[error("{call}: no answer from GitHub")]
    Transport {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// Why (without the URL).
        #[source]
        source: reqwest::Error,
    },
    /// GitHub refused the token (401).
    #[error("{call}: GitHub refused the token (HTTP 401: {message})")]
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
    Forbidden {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// GitHub's message, scrubbed.
        message: String,
    },
    /// A GitHub rate limit (403 with `x-ratelimit-remaining: 0` or `retry-after`, or 429).
    #[error("{call}: GitHub rate limit reached (HTTP {status}); {}", retry_text(*.retry_after_secs))]
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
    NotFound {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// The repository, environment or organisation.
        target: String,
    },
    /// GitHub refused the request as invalid (422), with its reason.
    #[error("{call}: GitHub rejected the request (HTTP 422: {message})")]
    Rejected {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// GitHub's message, scrubbed.
        message: String,
    },
    /// Any other unexpected status (5xx are transient).
    #[error("{call}: GitHub answered HTTP {status} ({message})")]
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
    PublicKey {
        /// What rotor was doing, on which secret and target.
        call: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Sealing the value failed.
    #[error("sealing the value for GitHub secret {secret} of {target} failed")]
    Seal {
        /// Secret name.
        secret: String,
        /// Repository, environment or organisation.
        target: String,
    },
    /// The secret is still listed after it was deleted.
    #[error("{call}: the secret is still there after it was deleted")]
    NotRemoved {
        /// What rotor was doing, on which secret and target.
        call: String,
    },
    /// A successful answer could not be decoded.
    #[error("{call}: GitHub's answer could not be decoded ({detail})")]
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
            Self::Client(_) => "client",
            Self::BaseUrl { .. } => "base_url",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::SelectedWithoutRepositories { .. } => "selected_without_repositories",
            Self::InvalidToken => "invalid_token",
            Self::Transport { source, .. } if source.is_timeout() => "timeout",
            Self::Transport { .. } => "transport",
            Self::Auth { .. } => "auth",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::NotFound { .. } => "not_found",
            Self::Rejected { .. } => "rejected",
            Self::Status { .. } => "status",
            Self::PublicKey { .. } => "public_key",
            Self::Seal { .. } => "seal",
            Self::Decode { .. } => "decode",
            Self::NotRemoved { .. } => "not_removed",
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

fn retry_text(retry_after_secs: Option<u64>) -> String {
    match retry_after_secs {
        Some(s) => format!("retry after {s} s"),
        None => "retry later".to_owned(),
    }
}

/// Where the secret lives.
enum Scope<'a> {
    Repository {
        owner: &'a str,
        repo: &'a str,
    },
    Environment {
        owner: &'a str,
        repo: &'a str,
        environment: &'a str,
    },
    Organization {
        org: &'a str,
        visibility: GithubVisibility,
    },
}

impl<'a> Scope<'a> {
    fn of(spec: &'a GithubConsumer) -> Self {
        match &spec.target {
            GithubTarget::Repository {
                owner,
                name,
                environment: None,
            } => Scope::Repository { owner, repo: name },
            GithubTarget::Repository {
                owner,
                name,
                environment: Some(environment),
            } => Scope::Environment {
                owner,
                repo: name,
                environment,
            },
            GithubTarget::Organization { name, visibility } => Scope::Organization {
                org: name,
                visibility: *visibility,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Repository { owner, repo } => format!("repository {owner}/{repo}"),
            Scope::Environment {
                owner,
                repo,
                environment,
            } => format!("environment {environment:?} of repository {owner}/{repo}"),
            Scope::Organization { org, .. } => format!("organization {org}"),
        }
    }

    /// The path segments of the scope's `secrets` collection.
    fn collection(&self) -> Vec<&'a str> {
        match self {
            Scope::Repository { owner, repo } => {
                vec!["repos", owner, repo, "actions", "secrets"]
            }
            Scope::Environment {
                owner,
                repo,
                environment,
            } => vec!["repos", owner, repo, "environments", environment, "secrets"],
            Scope::Organization { org, .. } => vec!["orgs", org, "actions", "secrets"],
        }
    }
}

/// `base` + `segments` + `last`, each segment percent-encoded, so that both
/// `https://api.github.com` and `https://host/api/v3` (with or without a trailing
/// slash) work.
fn join(base: &url::Url, segments: &[&str], last: &str) -> Result<url::Url, GithubError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url.path_segments_mut().map_err(|()| GithubError::BaseUrl {
            url: base.to_string(),
        })?;
        path.pop_if_empty();
        path.extend(segments);
        path.push(last);
    }
    Ok(url)
}

/// The `Authorization` header, marked sensitive.
fn bearer(token: &SecretString) -> Result<HeaderValue, GithubError> {
    let text = Zeroizing::new(format!("Bearer {}", token.expose_secret().trim()));
    let mut value = HeaderValue::from_str(&text).map_err(|_| GithubError::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// What rotor was doing when a request failed.
#[derive(Clone, Copy)]
enum Action {
    PublicKey,
    Read,
    Write,
    ReadBack,
    Delete,
}

struct Call<'a> {
    action: Action,
    secret: &'a str,
    target: &'a str,
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secret, target) = (self.secret, self.target);
        match self.action {
            Action::PublicKey => write!(
                f,
                "reading the Actions public key of {target} (for secret {secret})"
            ),
            Action::Read => write!(f, "reading GitHub secret {secret} of {target}"),
            Action::Write => write!(f, "writing GitHub secret {secret} of {target}"),
            Action::ReadBack => write!(f, "reading GitHub secret {secret} of {target} back"),
            Action::Delete => write!(f, "deleting GitHub secret {secret} of {target}"),
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The error for an unexpected answer.
fn failure(call: &Call<'_>, answer: &Answer, scrubber: &Scrubber) -> GithubError {
    let status = answer.status;
    let message = || {
        let text = github_message(&answer.body)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
        shorten(scrubber.scrub(&text))
    };
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (header_text(&answer.headers, "x-ratelimit-remaining") == Some("0")
                || answer.headers.contains_key(RETRY_AFTER)));
    if rate_limited {
        return GithubError::RateLimited {
            call: call.to_string(),
            status: status.as_u16(),
            retry_after_secs: retry_after_secs(&answer.headers),
        };
    }
    match status {
        StatusCode::UNAUTHORIZED => GithubError::Auth {
            call: call.to_string(),
            message: message(),
        },
        StatusCode::FORBIDDEN => GithubError::Forbidden {
            call: call.to_string(),
            message: message(),
        },
        StatusCode::NOT_FOUND => GithubError::NotFound {
            call: call.to_string(),
            target: call.target.to_owned(),
        },
        StatusCode::UNPROCESSABLE_ENTITY => GithubError::Rejected {
            call: call.to_string(),
            message: message(),
        },
        _ => GithubError::Status {
            call: call.to_string(),
            status: status.as_u16(),
            message: message(),
        },
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// Seconds to wait: `retry-after` (seconds), else `x-ratelimit-reset` (epoch seconds).
fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    if let Some(s) = header_text(headers, "retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(s);
    }
    let reset = header_text(headers, "x-ratelimit-reset")?
        .parse::<u64>()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Some(reset.saturating_sub(now))
}

/// GitHub's `message`, with the messages of its `errors` list, if the body is JSON.
fn github_message(body: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let mut text = doc.get("message")?.as_str()?.trim().to_owned();
    if let Some(errors) = doc.get("errors").and_then(Value::as_array) {
        for e in errors {
            if let Some(m) = e.get("message").and_then(Value::as_str) {
                text.push_str("; ");
                text.push_str(m);
            }
        }
    }
    Some(text)
}

fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn decode(call: &Call<'_>, e: &serde_json::Error) -> GithubError {
    // serde_json's Display can quote input: keep the category and position only.
    GithubError::Decode {
        call: call.to_string(),
        detail: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

/// `(key_id, key)` from a public-key answer.
fn public_key(call: &Call<'_>, body: &[u8]) -> Result<(String, PublicKey), GithubError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| decode(call, &e))?;
    let bad = |detail: &str| GithubError::PublicKey {
        call: call.to_string(),
        detail: detail.to_owned(),
    };
    let key_id = match doc.get("key_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("no `key_id`")),
    };
    let encoded = doc
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `key`"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad("`key` is not base64"))?;
    let key = PublicKey::try_from(raw.as_slice()).map_err(|_| bad("`key` is not 32 bytes"))?;
    Ok((key_id, key))
}

/// Whether `new` is a later instant than `old` (both RFC 3339).
fn advanced(old: &str, new: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(old),
        chrono::DateTime::parse_from_rfc3339(new),
    ) {
        (Ok(old), Ok(new)) => new > old,
        _ => false,
    }
}

/// Removes the token and the value from GitHub's messages (GitHub does not echo
/// them, but a proxy in front of GitHub Enterprise might).
struct Scrubber {
    needles: Vec<Zeroizing<String>>,
}

impl Scrubber {
    fn new(token: &SecretString, value: &SecretString) -> Self {
        let mut needles = Vec::new();
        for secret in [token.expose_secret().trim(), value.expose_secret()] {
            if secret.is_empty() {
                continue;
            }
            needles.push(Zeroizing::new(secret.to_owned()));
            if let Ok(json) = serde_json::to_string(secret) {
                let json = Zeroizing::new(json);
                let inner = json
                    .strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(&json);
                if inner != secret {
                    needles.push(Zeroizing::new(inner.to_owned()));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Scrubber { needles }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "[REDACTED]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn paths_join_onto_github_com_and_enterprise_bases() {
        let segs = ["repos", "acme", "payments", "actions", "secrets"];
        for (base, want) in [
            (
                "https://api.github.com",
                "https://api.github.com/repos/acme/payments/actions/secrets/public-key",
            ),
            (
                "https://api.github.com/",
                "https://api.github.com/repos/acme/payments/actions/secrets/public-key",
            ),
            (
                "https://ghe.example.com/api/v3",
                "https://ghe.example.com/api/v3/repos/acme/payments/actions/secrets/public-key",
            ),
            (
                "https://ghe.example.com/api/v3/",
                "https://ghe.example.com/api/v3/repos/acme/payments/actions/secrets/public-key",
            ),
        ] {
            assert_eq!(
                join(&url(base), &segs, "public-key").unwrap().as_str(),
                want
            );
        }
    }

    #[test]
    fn environment_names_are_one_encoded_segment() {
        let segs = [
            "repos",
            "acme",
            "payments",
            "environments",
            "prod/eu 1",
            "secrets",
        ];
        let joined = join(&url("https://api.github.com"), &segs, "X").unwrap();
        assert_eq!(
            joined.path(),
            "/repos/acme/payments/environments/prod%2Feu%201/secrets/X"
        );
    }

    #[test]
    fn updated_at_must_advance() {
        assert!(advanced("2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z"));
        assert!(!advanced("2024-05-01T10:00:01Z", "2024-05-01T10:00:01Z"));
        assert!(!advanced("2024-05-01T10:00:02Z", "2024-05-01T10:00:01Z"));
        assert!(advanced(
            "2024-05-01T10:00:00Z",
            "2024-05-01T12:00:01+02:00"
        ));
        assert!(!advanced("garbage", "2024-05-01T10:00:01Z"));
    }

    #[test]
    fn rate_limits_read_retry_after_then_reset() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("42"));
        assert_eq!(retry_after_secs(&h), Some(42));
        let mut h = HeaderMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&(now + 120).to_string()).unwrap(),
        );
        let secs = retry_after_secs(&h).unwrap();
        assert!((118..=120).contains(&secs), "{secs}");
        assert_eq!(retry_after_secs(&HeaderMap::new()), None);
    }

    #[test]
    fn messages_are_scrubbed_and_shortened() {
        let s = Scrubber::new(
            &SecretString::from("ghp_token123"),
            &SecretString::from("va\"lue"),
        );
        assert_eq!(
            s.scrub(r#"x ghp_token123 va"lue va\"lue"#),
            "x [REDACTED] [REDACTED] [REDACTED]"
        );
        let long = shorten("é".repeat(400));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn github_messages_include_listed_errors() {
        let body = br#"{"message":"Validation Failed","errors":[{"message":"name is bad"}]}"#;
        assert_eq!(
            github_message(body).as_deref(),
            Some("Validation Failed; name is bad")
        );
        assert_eq!(github_message(b"<html>"), None);
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_refused_without_echo() {
        let err = bearer(&SecretString::from("bad\ntoken-secret")).unwrap_err();
        assert_eq!(err.kind(), "invalid_token");
        assert!(!err.to_string().contains("token-secret"));
    }
}
