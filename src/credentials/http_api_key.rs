//! API keys behind templated HTTP requests (`http-api-key`, strategy `overlap`): a new
//! key is created next to the old one, consumers are updated, and the old key is revoked
//! once the grace period is over.
//!
//! - [`HttpApiKeyTarget::issue`] sends `create` and reads the new key and its id from the
//!   JSON response (`keyField`, `idField`); the value written to Vault is `{key, id}`.
//! - [`HttpApiKeyTarget::revoke`] sends `revoke` for a value's id; 404 and 410 count as
//!   done, so revoking twice is harmless.
//! - [`HttpApiKeyTarget::login`] sends `probe` with a value's key: 2xx is
//!   [`AuthOutcome::Accepted`], 401/403 is [`AuthOutcome::Rejected`], anything else is
//!   [`AuthOutcome::Unreachable`].
//!
//! Template variables: `create` sees the admin secret (`{{ admin }}` when `adminFrom`
//! names one value; `{{ username }}`/`{{ password }}` for a Vault reference without
//! `key`); `revoke` sees those plus `{{ id }}` and `{{ key }}`; `probe` sees `{{ key }}`
//! and `{{ id }}`.
//!
//! `keyField`/`idField` name a field of the create response, looked up in this order:
//! a JSON pointer when it starts with `/` (`/data/token`); a top-level field with exactly
//! that name (`token`, or even `api.key` when the API uses dots in names); a dotted path
//! into nested objects, with numbers as array indexes (`data.token`, `items.0.id`). The
//! field must be a string (or a number, used as its decimal text).
//!
//! Rendered URLs, headers and bodies hold secrets: they exist in memory only, headers are
//! marked sensitive, and no error, log line or `Debug` output contains them (errors name
//! the request by its method and URL *template*, which holds variable names only). A
//! request body without a `Content-Type` header is sent as `application/json`. Redirects
//! are not followed (a 3xx answer is an error or inconclusive), so no secret header is
//! ever sent to another address.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::{debug, info, warn};
use zeroize::Zeroize;

use super::adapters::IssuingTarget;
use super::target::wipe_json;
use super::{AuthOutcome, CredentialError};
use crate::policy::{
    HttpApiKeyCredential, HttpCreateRequest, HttpMethod, HttpRequestSpec, Template, TemplateError,
};
use crate::secret::{SecretMap, SecretString};

/// Limit for establishing the connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Key of the API key in a value.
pub const KEY: &str = "key";
/// Key of the API key's id in a value.
pub const ID: &str = "id";

/// Errors of the HTTP API key target. They name requests by method and URL template and
/// quote HTTP statuses and field names, never a rendered URL, header, body or response.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum HttpApiKeyError {
    /// The admin credential lacks a variable the `create`/`revoke` templates use.
    #[error(
        "the admin credential (adminFrom) has no {key:?} value, which the {operation} request uses"
    )]
    #[strum(serialize = "admin_key_missing")]
    AdminKeyMissing {
        /// The variable.
        key: String,
        /// `create` or `revoke`.
        operation: &'static str,
    },
    /// A key value lacks `id` or `key`.
    #[error("the API key value has no {key:?}, which the {operation} request uses")]
    #[strum(serialize = "missing_key")]
    ValueKeyMissing {
        /// `id` or `key`.
        key: &'static str,
        /// `revoke` or `probe`.
        operation: &'static str,
    },
    /// A template could not be rendered.
    #[error("rendering the {operation} request failed")]
    #[strum(disabled)]
    Template {
        /// `create`, `revoke` or `probe`.
        operation: &'static str,
        /// Why (names a variable, never a value).
        #[source]
        source: TemplateError,
    },
    /// The rendered URL is not a valid absolute URL.
    #[error("the {operation} URL rendered from {template:?} is invalid: {reason}")]
    #[strum(serialize = "invalid_url")]
    InvalidUrl {
        /// `create`, `revoke` or `probe`.
        operation: &'static str,
        /// The URL template.
        template: String,
        /// The parser's reason (no URL text).
        reason: String,
    },
    /// A header name is invalid or its rendered value is not a valid header value.
    #[error(
        "the {operation} header {header:?} is invalid (its name, or its rendered value holds characters HTTP headers cannot carry)"
    )]
    #[strum(serialize = "invalid_header")]
    InvalidHeader {
        /// `create`, `revoke` or `probe`.
        operation: &'static str,
        /// The header name.
        header: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    #[strum(serialize = "http_client")]
    Client(#[source] reqwest::Error),
    /// The request got no HTTP answer (connection refused, TLS, timeout, broken body).
    #[error("the {operation} request {method} {url} got no answer")]
    #[strum(serialize = "http_transport")]
    Transport {
        /// `create`, `revoke` or `probe`.
        operation: &'static str,
        /// HTTP method.
        method: &'static str,
        /// The URL template.
        url: String,
        /// Why (the error has its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("the {operation} request {method} {url} answered HTTP {status} {reason}")]
    #[strum(serialize = "http_status")]
    Status {
        /// `create`, `revoke` or `probe`.
        operation: &'static str,
        /// HTTP method.
        method: &'static str,
        /// The URL template.
        url: String,
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The create response is not a JSON document.
    #[error("the create request answered HTTP {status} with a body that is not JSON")]
    #[strum(serialize = "response_not_json")]
    NotJson {
        /// The status code.
        status: u16,
    },
    /// The create response lacks `keyField` or `idField`.
    #[error("the create request answered HTTP {status}, but the response has no field {field:?}")]
    #[strum(serialize = "response_missing_field")]
    MissingField {
        /// `keyField` or `idField` as configured.
        field: String,
        /// The status code.
        status: u16,
    },
    /// The field exists but is neither a non-empty string nor a number.
    #[error(
        "the create request answered HTTP {status}, but the field {field:?} is not a non-empty string or number"
    )]
    #[strum(serialize = "response_field_type")]
    FieldNotText {
        /// `keyField` or `idField` as configured.
        field: String,
        /// The status code.
        status: u16,
    },
}

impl HttpApiKeyError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpApiKeyError::Template { source, .. } => source.kind(),
            HttpApiKeyError::Transport { source, .. } if source.is_timeout() => "timeout",
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed: no answer, or HTTP 408, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpApiKeyError::Transport { .. } => true,
            HttpApiKeyError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }
}

/// One of the three requests.
#[derive(Clone, Copy)]
enum Operation {
    Create,
    Revoke,
    Probe,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Revoke => "revoke",
            Operation::Probe => "probe",
        }
    }
}

/// A request as configured: templates only.
struct RequestTemplate<'a> {
    method: HttpMethod,
    url: &'a Template,
    headers: &'a BTreeMap<String, Template>,
    body: Option<&'a Template>,
}

impl<'a> From<&'a HttpRequestSpec> for RequestTemplate<'a> {
    fn from(spec: &'a HttpRequestSpec) -> Self {
        RequestTemplate {
            method: spec.method,
            url: &spec.url,
            headers: &spec.headers,
            body: None,
        }
    }
}

impl<'a> From<&'a HttpCreateRequest> for RequestTemplate<'a> {
    fn from(spec: &'a HttpCreateRequest) -> Self {
        RequestTemplate {
            method: spec.method,
            url: &spec.url,
            headers: &spec.headers,
            body: spec.body.as_ref(),
        }
    }
}

impl RequestTemplate<'_> {
    fn variables(&self) -> impl Iterator<Item = &str> {
        self.url
            .variables()
            .chain(self.headers.values().flat_map(|t| t.variables()))
            .chain(self.body.into_iter().flat_map(|t| t.variables()))
    }
}

/// An HTTP API that issues, revokes and checks API keys, with the admin secret resolved.
pub struct HttpApiKeyTarget {
    http: reqwest::Client,
    create: HttpCreateRequest,
    revoke: HttpRequestSpec,
    probe: HttpRequestSpec,
    /// `admin`, or `username`/`password`.
    admin: SecretMap,
}

impl fmt::Debug for HttpApiKeyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = |method: HttpMethod, url: &Template| format!("{} {url}", method.as_str());
        f.debug_struct("HttpApiKeyTarget")
            .field("create", &request(self.create.method, &self.create.url))
            .field("key_field", &self.create.key_field)
            .field("id_field", &self.create.id_field)
            .field("revoke", &request(self.revoke.method, &self.revoke.url))
            .field("probe", &request(self.probe.method, &self.probe.url))
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl HttpApiKeyTarget {
    /// A target for `spec` with the resolved `adminFrom` secret (as
    /// [`crate::vault::Vault::resolve`] returns it: `{value}` for a single-value
    /// reference, the secret's keys otherwise). Checks that every admin variable the
    /// `create` and `revoke` templates use has a value. No I/O.
    pub fn new(spec: &HttpApiKeyCredential, admin: &SecretMap) -> Result<Self, HttpApiKeyError> {
        let mut vars = SecretMap::new();
        if spec.admin_from.is_single_value() {
            if let Some(v) = admin.get("value").or_else(|| admin.get("admin")) {
                vars.insert("admin", v.clone());
            }
        } else {
            for key in ["username", "password"] {
                if let Some(v) = admin.get(key) {
                    vars.insert(key, v.clone());
                }
            }
        }
        let requests = [
            (Operation::Create, RequestTemplate::from(&spec.create)),
            (Operation::Revoke, RequestTemplate::from(&spec.revoke)),
        ];
        for (operation, request) in &requests {
            for var in request.variables() {
                if var != ID && var != KEY && vars.get(var).is_none() {
                    return Err(HttpApiKeyError::AdminKeyMissing {
                        key: var.to_owned(),
                        operation: operation.as_str(),
                    });
                }
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(crate::outside::USER_AGENT)
            .timeout(crate::outside::call_timeout())
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT.min(crate::outside::call_timeout()))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(HttpApiKeyError::Client)?;
        Ok(HttpApiKeyTarget {
            http,
            create: spec.create.clone(),
            revoke: spec.revoke.clone(),
            probe: spec.probe.clone(),
            admin: vars,
        })
    }

    /// Creates a new key with the `create` request. The answer must be 2xx with a JSON
    /// body holding `keyField` and `idField`; returns `{key, id}`. Errors quote the
    /// status and the field name, never the body (it holds a key).
    pub async fn issue(&self) -> Result<SecretMap, HttpApiKeyError> {
        let op = Operation::Create;
        let request = RequestTemplate::from(&self.create);
        let resp = self.send(op, &request, &self.admin).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(op, &request, status));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(op, &request, e))?;
        let parsed = serde_json::from_slice::<Value>(&body);
        // The body holds the new key: wipe our copy (when no one else shares the buffer).
        if let Ok(mut raw) = body.try_into_mut() {
            raw.as_mut().zeroize();
        }
        let mut json = parsed.map_err(|_| HttpApiKeyError::NotJson {
            status: status.as_u16(),
        })?;
        let key = field_text(&json, &self.create.key_field, status.as_u16());
        let id = field_text(&json, &self.create.id_field, status.as_u16());
        wipe_json(&mut json);
        let (key, id) = (key?, id?);
        info!(
            request = %format!("{} {}", request.method.as_str(), request.url),
            id = %id.expose_secret(),
            "API key created."
        );
        let mut value = SecretMap::new();
        value.insert(KEY, key);
        value.insert(ID, id);
        Ok(value)
    }

    /// Revokes `value`'s key with the `revoke` request. 2xx → done; 404 and 410 → done
    /// too (the key is gone already), so revoking twice is harmless.
    pub async fn revoke(&self, value: &SecretMap) -> Result<(), HttpApiKeyError> {
        let op = Operation::Revoke;
        let request = RequestTemplate::from(&self.revoke);
        let mut vars = self.admin.clone();
        add_value_vars(op, &request, value, &mut vars)?;
        let resp = self.send(op, &request, &vars).await?;
        let status = resp.status();
        let id = value.expose(ID).unwrap_or("?");
        match status.as_u16() {
            200..=299 => {
                info!(id = %id, "API key revoked.");
                Ok(())
            }
            404 | 410 => {
                info!(id = %id, status = status.as_u16(), "API key already gone.");
                Ok(())
            }
            _ => Err(status_error(op, &request, status)),
        }
    }

    /// Tries `value`'s key with the `probe` request: 2xx → [`AuthOutcome::Accepted`];
    /// 401/403 → [`AuthOutcome::Rejected`] (code `401`/`403`, message
    /// `HTTP 401 Unauthorized`); anything else, including no answer →
    /// [`AuthOutcome::Unreachable`].
    pub async fn login(&self, value: &SecretMap) -> AuthOutcome {
        let outcome = self.try_login(value).await;
        let request = format!("{} {}", self.probe.method.as_str(), self.probe.url);
        match &outcome {
            AuthOutcome::Accepted => debug!(request = %request, "API key accepted."),
            AuthOutcome::Rejected { code, .. } => {
                debug!(request = %request, code = %code, "API key rejected.")
            }
            AuthOutcome::Unreachable { reason } => {
                warn!(request = %request, reason = %reason, "API key probe inconclusive.")
            }
        }
        outcome
    }

    async fn try_login(&self, value: &SecretMap) -> AuthOutcome {
        let op = Operation::Probe;
        let request = RequestTemplate::from(&self.probe);
        let mut vars = SecretMap::new();
        if let Err(e) = add_value_vars(op, &request, value, &mut vars) {
            return AuthOutcome::Unreachable {
                reason: e.to_string(),
            };
        }
        let resp = match self.send(op, &request, &vars).await {
            Ok(resp) => resp,
            Err(e) => {
                return AuthOutcome::Unreachable {
                    reason: crate::error_chain(&e),
                };
            }
        };
        let status = resp.status();
        match status.as_u16() {
            200..=299 => AuthOutcome::Accepted,
            code @ (401 | 403) => AuthOutcome::Rejected {
                code: code.to_string(),
                message: format!(
                    "HTTP {code} {}",
                    status.canonical_reason().unwrap_or_default()
                )
                .trim_end()
                .to_owned(),
            },
            _ => AuthOutcome::Unreachable {
                reason: status_error(op, &request, status).to_string(),
            },
        }
    }

    /// Renders `request` with `vars` and sends it.
    async fn send(
        &self,
        op: Operation,
        request: &RequestTemplate<'_>,
        vars: &SecretMap,
    ) -> Result<reqwest::Response, HttpApiKeyError> {
        let template_err = |source| HttpApiKeyError::Template {
            operation: op.as_str(),
            source,
        };
        let url = request.url.render(vars).map_err(template_err)?;
        let url =
            reqwest::Url::parse(url.expose_secret()).map_err(|e| HttpApiKeyError::InvalidUrl {
                operation: op.as_str(),
                template: request.url.source().to_owned(),
                reason: e.to_string(),
            })?;
        let mut headers = HeaderMap::new();
        for (name, template) in request.headers {
            let invalid = || HttpApiKeyError::InvalidHeader {
                operation: op.as_str(),
                header: name.clone(),
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let rendered = template.render(vars).map_err(template_err)?;
            let mut value =
                HeaderValue::from_str(rendered.expose_secret()).map_err(|_| invalid())?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        let method = match request.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, url);
        if let Some(body) = request.body {
            let rendered = body.render(vars).map_err(template_err)?;
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            builder = builder.body(rendered.expose_secret().to_owned());
        }
        builder
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport_error(op, request, e))
    }
}

/// Adds `id` and `key` from `value` to `vars`; fails when a template uses one the value lacks.
fn add_value_vars(
    op: Operation,
    request: &RequestTemplate<'_>,
    value: &SecretMap,
    vars: &mut SecretMap,
) -> Result<(), HttpApiKeyError> {
    for key in [ID, KEY] {
        match value.get(key) {
            Some(v) => vars.insert(key, v.clone()),
            None if request.variables().any(|v| v == key) => {
                return Err(HttpApiKeyError::ValueKeyMissing {
                    key,
                    operation: op.as_str(),
                });
            }
            None => {}
        }
    }
    Ok(())
}

fn status_error(
    op: Operation,
    request: &RequestTemplate<'_>,
    status: reqwest::StatusCode,
) -> HttpApiKeyError {
    HttpApiKeyError::Status {
        operation: op.as_str(),
        method: request.method.as_str(),
        url: request.url.source().to_owned(),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or_default().to_owned(),
    }
}

fn transport_error(
    op: Operation,
    request: &RequestTemplate<'_>,
    error: reqwest::Error,
) -> HttpApiKeyError {
    crate::outside::note(crate::outside::System::HttpApi, &error);
    HttpApiKeyError::Transport {
        operation: op.as_str(),
        method: request.method.as_str(),
        url: request.url.source().to_owned(),
        source: error.without_url(),
    }
}

/// Looks `field` up in `json` (see the module documentation for the syntax).
fn lookup<'v>(json: &'v Value, field: &str) -> Option<&'v Value> {
    if field.starts_with('/') {
        return json.pointer(field);
    }
    if let Some(v) = json.get(field) {
        return Some(v);
    }
    let mut current = json;
    for part in field.split('.') {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn field_text(json: &Value, field: &str, status: u16) -> Result<SecretString, HttpApiKeyError> {
    match lookup(json, field) {
        None | Some(Value::Null) => Err(HttpApiKeyError::MissingField {
            field: field.to_owned(),
            status,
        }),
        Some(Value::String(s)) if !s.is_empty() => Ok(SecretString::from(s.as_str())),
        Some(Value::Number(n)) => Ok(SecretString::from(n.to_string())),
        Some(_) => Err(HttpApiKeyError::FieldNotText {
            field: field.to_owned(),
            status,
        }),
    }
}

/// API keys have no sessions rotor can see: the default [`IssuingTarget::terminate`].
impl IssuingTarget for HttpApiKeyTarget {
    async fn issue(
        &self,
        _current: &SecretMap,
        _rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        Ok(HttpApiKeyTarget::issue(self).await?)
    }

    async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError> {
        HttpApiKeyTarget::revoke(self, value).await?;
        Ok(format!("key {} revoked", value.expose("id").unwrap_or("?")))
    }

    async fn login(&self, value: &SecretMap) -> AuthOutcome {
        HttpApiKeyTarget::login(self, value).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_found_by_name_pointer_and_dotted_path() {
        let doc = json!({
            "id": 42,
            "api.key": "dotted-name",
            "data": {"token": "t-1", "items": [{"id": "x"}]},
        });
        let text = |f: &str| field_text(&doc, f, 201).map(|s| s.expose_secret().to_owned());
        assert_eq!(text("id").unwrap(), "42");
        assert_eq!(text("api.key").unwrap(), "dotted-name");
        assert_eq!(text("data.token").unwrap(), "t-1");
        assert_eq!(text("/data/token").unwrap(), "t-1");
        assert_eq!(text("data.items.0.id").unwrap(), "x");
        let missing = text("data.secret").unwrap_err();
        assert_eq!(missing.kind(), "response_missing_field");
        assert!(missing.to_string().contains("\"data.secret\""));
        assert!(missing.to_string().contains("201"));
        assert_eq!(text("data").unwrap_err().kind(), "response_field_type");
    }

    #[test]
    fn transient_statuses() {
        let status = |status| HttpApiKeyError::Status {
            operation: "create",
            method: "POST",
            url: "https://x/keys".into(),
            status,
            reason: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(401).is_transient());
        assert!(!status(400).is_transient());
    }
}
