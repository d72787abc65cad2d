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
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum RemoteError {
    /// The server URL cannot take a path (e.g. `mailto:`).
    #[error("server URL {0} cannot be used as a base URL (expected http://HOST:PORT)")]
    #[strum(serialize = "remote_base_url")]
    BaseUrl(String),
    /// The token cannot be sent in an HTTP header.
    #[error("the API token contains characters that cannot be sent in an HTTP header")]
    #[strum(serialize = "remote_token")]
    Token,
    /// Building the HTTP client failed.
    #[error("building the HTTP client failed")]
    #[strum(serialize = "remote_client")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("{method} {url} failed")]
    #[strum(serialize = "remote_transport")]
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
    #[strum(serialize = "remote_status")]
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
    #[strum(serialize = "remote_decode")]
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
        self.into()
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

/// A client of the HTTP API of the agent at a base URL, calling with an API token
/// (`rotor … --server URL`). Each call is one request of at most 30 seconds.
#[derive(Debug, Clone)]
pub struct AgentClient {
    base: Url,
    token: SecretString,
}

impl AgentClient {
    /// The agent at `base` (its path is kept: `https://host/agent/` calls
    /// `https://host/agent/v1/…`), called with `token`.
    pub fn new(base: Url, token: SecretString) -> AgentClient {
        AgentClient { base, token }
    }

    /// The base URL, as given.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `GET` the endpoint at `segments`.
    async fn get<T: for<'de> Deserialize<'de>>(&self, segments: &[&str]) -> Result<T, RemoteError> {
        call("GET", endpoint(&self.base, segments)?, &self.token, None).await
    }

    /// `POST` the JSON `body` (its keys in name order) to the endpoint at `segments`.
    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, RemoteError> {
        // Through a `Value`, whose keys are in name order: the bytes sent stay the same
        // whatever the field order of the body's type. It cannot fail for these types.
        let body = serde_json::to_value(body).unwrap_or_default();
        let url = endpoint(&self.base, segments)?;
        call("POST", url, &self.token, Some(body)).await
    }

    /// Asks the agent to rotate policy `name` (`POST /v1/policies/{name}/rotate`).
    /// `pending_approval` answers carry the approval request's id, expiry and count.
    pub async fn rotate(&self, name: &str, body: &RotateBody) -> Result<Accepted, RemoteError> {
        self.post(&["v1", "policies", name, "rotate"], body).await
    }

    /// Asks the agent to rotate every policy whose labels match the body's selector
    /// (`POST /v1/rotations`); the answer lists each policy's rotation or refusal.
    pub async fn rotate_selected(
        &self,
        body: &BulkRotateBody,
    ) -> Result<BulkAccepted, RemoteError> {
        self.post(&["v1", "rotations"], body).await
    }

    /// Approves approval request `id` (`POST /v1/requests/{id}/approve`). The
    /// answer's `state` is `pending_approval` while more approvals are needed, else
    /// the rotation's (`queued`…). A 403 (not an approver, own request) or 410
    /// (expired, superseded, used) is a [`RemoteError::Status`] with the server's text.
    pub async fn approve(&self, id: &str, reason: Option<&str>) -> Result<Accepted, RemoteError> {
        let body = ApproveBody {
            reason: reason.map(str::to_owned),
        };
        self.post(&["v1", "requests", id, "approve"], &body).await
    }

    /// An approval request by id (`GET /v1/requests/{id}`).
    pub async fn approval_request(&self, id: &str) -> Result<ApprovalRecord, RemoteError> {
        self.get(&["v1", "requests", id]).await
    }

    /// Asks the agent to lift policy `name`'s quarantine
    /// (`POST /v1/policies/{name}/release`); `reason` is required and recorded.
    pub async fn release(&self, name: &str, reason: &str) -> Result<(), RemoteError> {
        let segments = ["v1", "policies", name, "release"];
        let body = ReleaseBody {
            reason: Some(reason.to_owned()),
        };
        let wire: Released = self.post(&segments, &body).await?;
        if wire.state != Released::STATE {
            return Err(RemoteError::Decode {
                method: "POST",
                url: shown(&endpoint(&self.base, &segments)?),
                detail: format!("expected state \"released\", got {:?}", wire.state),
            });
        }
        Ok(())
    }

    /// Asks the agent to retire policy `name` (`POST /v1/policies/{name}/retire`) and
    /// waits for the end. The answer is the retirement record (state `retired`); a
    /// retirement that did not complete is a [`RemoteError::Status`] 500 with its error.
    pub async fn retire(&self, name: &str, body: &RetireBody) -> Result<Retirement, RemoteError> {
        self.post(&["v1", "policies", name, "retire"], body).await
    }

    /// Asks the agent to enable retired policy `name` again
    /// (`POST /v1/policies/{name}/enable`): the record and the rotation.
    pub async fn enable(&self, name: &str, body: &RetireBody) -> Result<Enabled, RemoteError> {
        self.post(&["v1", "policies", name, "enable"], body).await
    }

    /// The policies the token's identity may see (`GET /v1/policies`).
    pub async fn policies(&self) -> Result<Vec<PolicyView>, RemoteError> {
        self.get(&["v1", "policies"]).await
    }

    /// One policy (`GET /v1/policies/{name}`).
    pub async fn policy(&self, name: &str) -> Result<PolicyView, RemoteError> {
        self.get(&["v1", "policies", name]).await
    }

    /// A rotation by id (`GET /v1/rotations/{id}`).
    pub async fn rotation(&self, id: &str) -> Result<Rotation, RemoteError> {
        self.get(&["v1", "rotations", id]).await
    }
}

/// One request: `method` `url` with the bearer `token` and, for `POST`, the JSON `body`.
async fn call<T: for<'de> Deserialize<'de>>(
    method: &'static str,
    url: Url,
    token: &SecretString,
    body: Option<Value>,
) -> Result<T, RemoteError> {
    let client = reqwest::Client::builder()
        .user_agent(crate::outside::USER_AGENT)
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
    let transport = |source: reqwest::Error| RemoteError::Transport {
        method,
        url: shown.clone(),
        source: source.without_url(),
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let bytes = response.bytes().await.map_err(transport)?;
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
