//! The wire side of the GitHub consumer: where a secret lives and its URLs, the
//! calls' headers, what GitHub answered and how it is read (errors, rate limits, the
//! repository's public key), and the scrubbing that keeps the value and the token out
//! of every message.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use crypto_box::PublicKey;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{GithubError, MAX_MESSAGE_CHARS};
use crate::consumers::scrub::Scrubber;
use crate::policy::{GithubConsumer, GithubTarget, GithubVisibility};

/// Where the secret lives.
pub(super) enum Scope<'a> {
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
    pub(super) fn of(spec: &'a GithubConsumer) -> Self {
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

    pub(super) fn describe(&self) -> String {
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
    pub(super) fn collection(&self) -> Vec<&'a str> {
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
pub(super) fn join(
    base: &url::Url,
    segments: &[&str],
    last: &str,
) -> Result<url::Url, GithubError> {
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
pub(super) fn bearer(token: &SecretString) -> Result<HeaderValue, GithubError> {
    let text = Zeroizing::new(format!("Bearer {}", token.expose_secret().trim()));
    let mut value = HeaderValue::from_str(&text).map_err(|_| GithubError::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// What rotor was doing when a request failed.
#[derive(Clone, Copy)]
pub(super) enum Action {
    PublicKey,
    Read,
    Write,
    ReadBack,
    Delete,
}

pub(super) struct Call<'a> {
    pub(super) action: Action,
    pub(super) secret: &'a str,
    pub(super) target: &'a str,
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

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// The error for an unexpected answer.
pub(super) fn failure(call: &Call<'_>, answer: &Answer, scrubber: &Scrubber) -> GithubError {
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

pub(super) fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// Seconds to wait: `retry-after` (seconds), else `x-ratelimit-reset` (epoch seconds).
pub(super) fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
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
pub(super) fn github_message(body: &[u8]) -> Option<String> {
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

pub(super) fn shorten(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

pub(super) fn decode(call: &Call<'_>, e: &serde_json::Error) -> GithubError {
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
pub(super) fn public_key(call: &Call<'_>, body: &[u8]) -> Result<(String, PublicKey), GithubError> {
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
pub(super) fn advanced(old: &str, new: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(old),
        chrono::DateTime::parse_from_rfc3339(new),
    ) {
        (Ok(old), Ok(new)) => new > old,
        _ => false,
    }
}
