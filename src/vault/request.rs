//! Raw requests to `/v1/…` for the calls vaultrs lacks or that run with another (or no)
//! token, and how vaultrs and transport errors are described (never a request body).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use vaultrs::error::ClientError;

use super::{Vault, VaultError};

/// Which token a [`Vault::request`] carries.
#[derive(Clone, Copy)]
pub enum AuthAs<'a> {
    /// rotor's own token (the configured one).
    Rotor,
    /// No token: logins (`auth/*/login`), `sys/health`, CRLs.
    Anonymous,
    /// Another token, e.g. a rotated credential being probed.
    Token(&'a SecretString),
}

/// The answer to a [`Vault::request`]: any HTTP status (callers decide what a 400 or
/// 403 means), and the JSON body when there is one. `Debug` shows the status and the
/// body's size only: a body may hold a token or a secret.
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body; may hold secrets (a login's token), so it is never logged.
    pub body: bytes::Bytes,
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl RawResponse {
    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Vault's `errors` strings joined, for messages (never contains request data).
    pub fn errors(&self) -> String {
        match self.json().get("errors").and_then(Value::as_array) {
            Some(errs) => errs
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            None => String::new(),
        }
    }

    /// `HTTP <code>`, with Vault's `errors` text after a colon when there is any.
    pub fn status_detail(&self) -> String {
        let errors = self.errors();
        if errors.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {errors}", self.status)
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Renders a vaultrs error as text that contains no request body: the status code
/// and Vault's error strings, or the transport failure.
pub(super) fn describe(err: &ClientError) -> String {
    match err {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError { source } => transport_detail(source),
        other => other.to_string(),
    }
}

/// `timeout: …` (counted) when `source` ran into the call timeout, else `transport: …`.
pub(super) fn transport_detail(source: &(dyn std::error::Error + 'static)) -> String {
    if crate::outside::note(crate::outside::System::Vault, source) {
        format!(
            "timeout: Vault did not answer within {} ms: {}",
            crate::outside::call_timeout().as_millis(),
            crate::error_chain(source)
        )
    } else {
        format!("transport: {source}")
    }
}

pub(super) fn is_not_found(err: &ClientError) -> bool {
    matches!(err, ClientError::APIError { code: 404, .. })
}

pub(super) fn is_cas_mismatch(err: &ClientError) -> bool {
    matches!(err, ClientError::APIError { code: 400, errors }
        if errors.iter().any(|e| e.contains("check-and-set")))
}

impl Vault {
    /// One HTTP request to `/v1/<path>` with the configured namespace and CA, for the
    /// calls vaultrs lacks or that must run with another (or no) token. Any HTTP status
    /// is returned; only transport failures are errors.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        self.request_in(self.namespace.as_deref(), method, path, body, auth)
            .await
    }

    /// [`Vault::request`] in another namespace (`None`: the root namespace).
    pub async fn request_in(
        &self,
        namespace: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.http.request(method.clone(), &url);
        match auth {
            AuthAs::Rotor => {
                req = req.header("X-Vault-Token", self.current_token().expose_secret())
            }
            AuthAs::Token(t) => req = req.header("X-Vault-Token", t.expose_secret()),
            AuthAs::Anonymous => {}
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let failed = |e: reqwest::Error| VaultError::Request {
            operation: format!("{method} {path}"),
            detail: transport_detail(&e.without_url()),
        };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(failed)?;
        Ok(RawResponse { status, body })
    }

    /// Like [`Vault::request`], but a non-2xx status is an error carrying Vault's
    /// `errors` text (`HTTP <code>: …`), so 5xx/429 count as transient.
    pub async fn request_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        auth: AuthAs<'_>,
    ) -> Result<RawResponse, VaultError> {
        let resp = self.request(method.clone(), path, body, auth).await?;
        if resp.is_success() {
            return Ok(resp);
        }
        Err(VaultError::Request {
            operation: format!("{method} {path}"),
            detail: resp.status_detail(),
        })
    }
}
