//! The client side of the API, for `rotor rotate --server URL` and
//! `rotor status --server URL`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::agent::ApprovalRecord;
use crate::api::{
    Accepted, ApproveBody, BulkAccepted, BulkRotateBody, Enabled, ErrorBody, PolicyView,
    ReleaseBody, Released, RetireBody, RotateBody,
};
use crate::engine::{Retirement, Rotation};
use crate::secret::SecretString;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A failed API call. Messages carry the URL and the server's `error` text, never the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server URL cannot take a path (e.g. `mailto:`).
    #[error("server URL {0} cannot be used as a base URL (expected http://HOST:PORT)")]
    BaseUrl(String),
    /// The token cannot be sent in an HTTP header.
    #[error("the API token contains characters that cannot be sent in an HTTP header")]
    Token,
    /// Building the HTTP client failed.
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("{method} {url} failed")]
    Transport {
        /// The HTTP method (`GET`, `POST`).
        method: &'static str,
        /// The URL called, without any user:password written into it.
        url: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{method} {url}: the server answered {status}: {message}")]
    Status {
        /// The HTTP method (`GET`, `POST`).
        method: &'static str,
        /// The URL called, without any user:password written into it.
        url: String,
        /// The status the server answered (4xx, 5xx).
        status: u16,
        /// The server's `error` text (or the start of the body).
        message: String,
        /// Seconds to wait, from `Retry-After` (429, 503).
        retry_after: Option<u64>,
    },
    /// The answer is not the JSON expected.
    #[error("{method} {url}: unexpected answer: {detail}")]
    Decode {
        /// The HTTP method (`GET`, `POST`).
        method: &'static str,
        /// The URL called, without any user:password written into it.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl RemoteError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::BaseUrl(_) => "remote_base_url",
            RemoteError::Token => "remote_token",
            RemoteError::Client(_) => "remote_client",
            RemoteError::Transport { .. } => "remote_transport",
            RemoteError::Status { .. } => "remote_status",
            RemoteError::Decode { .. } => "remote_decode",
        }
    }

    /// Whether trying again later may succeed (no answer, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Transport { .. } => true,
            RemoteError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status the server answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `base` with `segments` appended as path segments (each percent-encoded).
fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, RemoteError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| RemoteError::BaseUrl(base.to_string()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `url` without any user:password written into the server URL, for messages.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// `GET url`.
async fn get<T: for<'de> Deserialize<'de>>(
    url: Url,
    token: &SecretString,
) -> Result<T, RemoteError> {
    call("GET", url, token, None).await
}

/// `POST url` with the JSON `body` (its keys in name order).
async fn post<T: for<'de> Deserialize<'de>>(
    url: Url,
    token: &SecretString,
    body: &impl Serialize,
) -> Result<T, RemoteError> {
    // Through a `Value`, whose keys are in name order: the bytes sent stay the same
    // whatever the field order of the body's type. It cannot fail for these types.
    let body = serde_json::to_value(body).unwrap_or_default();
    call("POST", url, token, Some(body)).await
}

async fn call<T: for<'de> Deserialize<'de>>(
    method: &'static str,
    url: Url,
    token: &SecretString,
    body: Option<Value>,
) -> Result<T, RemoteError> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(RemoteError::Client)?;
    let mut auth =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| RemoteError::Token)?;
    auth.set_sensitive(true);
    let mut request = match method {
        "POST" => client.post(url.clone()),
        _ => client.get(url.clone()),
    }
    .header(reqwest::header::AUTHORIZATION, auth)
    .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let shown = shown(&url);
    let response = request
        .send()
        .await
        .map_err(|source| RemoteError::Transport {
            method,
            url: shown.clone(),
            source: source.without_url(),
        })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let bytes = response
        .bytes()
        .await
        .map_err(|source| RemoteError::Transport {
            method,
            url: shown.clone(),
            source: source.without_url(),
        })?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .map(|e| e.error)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.chars().take(200).collect();
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text
                }
            });
        return Err(RemoteError::Status {
            method,
            url: shown,
            status: status.as_u16(),
            message,
            retry_after,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| RemoteError::Decode {
        method,
        url: shown,
        detail: e.to_string(),
    })
}

/// Asks the agent at `base` to rotate policy `name` (`POST /v1/policies/{name}/rotate`).
pub async fn remote_rotate(
    base: &Url,
    token: &SecretString,
    name: &str,
    reason: Option<&str>,
    ticket: Option<&str>,
    compromise: bool,
) -> Result<Accepted, RemoteError> {
    let url = endpoint(base, &["v1", "policies", name, "rotate"])?;
    let body = RotateBody {
        reason: reason.map(str::to_owned),
        ticket: ticket.map(str::to_owned),
        compromise: Some(compromise),
    };
    // `pending_approval` answers carry the approval request's id, expiry and count.
    post(url, token, &body).await
}

/// Approves approval request `id` (`POST /v1/requests/{id}/approve`). The answer's
/// `state` is `pending_approval` while more approvals are needed, else the rotation's
/// (`queued`…). A 403 (not an approver, own request) or 410 (expired, superseded,
/// used) is a [`RemoteError::Status`] with the server's text.
pub async fn remote_approve(
    base: &Url,
    token: &SecretString,
    id: &str,
    reason: Option<&str>,
) -> Result<Accepted, RemoteError> {
    let url = endpoint(base, &["v1", "requests", id, "approve"])?;
    let body = ApproveBody {
        reason: reason.map(str::to_owned),
    };
    post(url, token, &body).await
}

/// An approval request by id (`GET /v1/requests/{id}`).
pub async fn remote_approval_request(
    base: &Url,
    token: &SecretString,
    id: &str,
) -> Result<ApprovalRecord, RemoteError> {
    get(endpoint(base, &["v1", "requests", id])?, token).await
}

/// Asks the agent at `base` to rotate every policy whose labels match `selector`
/// (`POST /v1/rotations`); the answer lists each policy's rotation or refusal.
pub async fn remote_rotate_selected(
    base: &Url,
    token: &SecretString,
    selector: &std::collections::BTreeMap<String, String>,
    reason: Option<&str>,
    ticket: Option<&str>,
    compromise: bool,
) -> Result<BulkAccepted, RemoteError> {
    let url = endpoint(base, &["v1", "rotations"])?;
    let body = BulkRotateBody {
        selector: selector.clone(),
        reason: reason.map(str::to_owned),
        ticket: ticket.map(str::to_owned),
        compromise: Some(compromise),
    };
    post(url, token, &body).await
}

/// Asks the agent at `base` to lift policy `name`'s quarantine
/// (`POST /v1/policies/{name}/release`); `reason` is required and recorded.
pub async fn remote_release(
    base: &Url,
    token: &SecretString,
    name: &str,
    reason: &str,
) -> Result<(), RemoteError> {
    let url = endpoint(base, &["v1", "policies", name, "release"])?;
    let shown = shown(&url);
    let body = ReleaseBody {
        reason: Some(reason.to_owned()),
    };
    let wire: Released = post(url, token, &body).await?;
    if wire.state != Released::STATE {
        return Err(RemoteError::Decode {
            method: "POST",
            url: shown,
            detail: format!("expected state \"released\", got {:?}", wire.state),
        });
    }
    Ok(())
}

/// Asks the agent at `base` to retire policy `name` (`POST /v1/policies/{name}/retire`)
/// and waits for the end. The answer is the retirement record (state `retired`); a
/// retirement that did not complete is a [`RemoteError::Status`] 500 with its error.
pub async fn remote_retire(
    base: &Url,
    token: &SecretString,
    name: &str,
    reason: &str,
    ticket: Option<&str>,
) -> Result<Retirement, RemoteError> {
    let url = endpoint(base, &["v1", "policies", name, "retire"])?;
    post(url, token, &retire_body(reason, ticket)).await
}

/// Asks the agent at `base` to enable retired policy `name` again
/// (`POST /v1/policies/{name}/enable`): the record and the rotation.
pub async fn remote_enable(
    base: &Url,
    token: &SecretString,
    name: &str,
    reason: &str,
    ticket: Option<&str>,
) -> Result<Enabled, RemoteError> {
    let url = endpoint(base, &["v1", "policies", name, "enable"])?;
    post(url, token, &retire_body(reason, ticket)).await
}

/// The body of retire and enable (`ticket: null` when there is none).
fn retire_body(reason: &str, ticket: Option<&str>) -> RetireBody {
    RetireBody {
        reason: Some(reason.to_owned()),
        ticket: ticket.map(str::to_owned),
    }
}

/// The policies the token's identity may see (`GET /v1/policies`).
pub async fn remote_policies(
    base: &Url,
    token: &SecretString,
) -> Result<Vec<PolicyView>, RemoteError> {
    get(endpoint(base, &["v1", "policies"])?, token).await
}

/// One policy (`GET /v1/policies/{name}`).
pub async fn remote_policy(
    base: &Url,
    token: &SecretString,
    name: &str,
) -> Result<PolicyView, RemoteError> {
    get(endpoint(base, &["v1", "policies", name])?, token).await
}

/// A rotation by id (`GET /v1/rotations/{id}`).
pub async fn remote_rotation(
    base: &Url,
    token: &SecretString,
    id: &str,
) -> Result<Rotation, RemoteError> {
    get(endpoint(base, &["v1", "rotations", id])?, token).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path_and_encode_names() {
        let at = |base: &str, segs: &[&str]| {
            endpoint(&Url::parse(base).unwrap(), segs)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            at("http://127.0.0.1:9464", &["v1", "policies"]),
            "http://127.0.0.1:9464/v1/policies"
        );
        assert_eq!(
            at(
                "https://rotor.example/agent/?x=1",
                &["v1", "policies", "a b/c", "rotate"]
            ),
            "https://rotor.example/agent/v1/policies/a%20b%2Fc/rotate"
        );
        assert!(endpoint(&Url::parse("mailto:x@y").unwrap(), &["v1"]).is_err());
    }
}
