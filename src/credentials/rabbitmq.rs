//! RabbitMQ user passwords through the management HTTP API (RabbitMQ 3.9+, strategy
//! `single`): change a user's password, prove a password accepted or refused, and close
//! the user's connections.
//!
//! - [`RabbitmqTarget::set_password`] reads the user (`GET /api/users/{user}`) and writes it
//!   back (`PUT /api/users/{user}`) with the same tags and a `password_hash` computed here
//!   (`rabbit_password_hashing_sha256`: base64 of a 4-byte random salt followed by
//!   SHA-256(salt ‖ password)), so the cleartext never reaches the broker, its logs or its
//!   definitions export. The algorithm is named in the request, so the broker's own default
//!   (`password_hashing_module`) does not matter. Permissions live apart from the user
//!   record and are untouched. The user is never created: a missing one is
//!   [`RabbitmqError::UserNotFound`] (a user deleted between the read and the write would
//!   be re-created with its old tags; the API offers no conditional write).
//! - [`RabbitmqTarget::login`] asks `GET /api/whoami` as the user; see its documentation
//!   for how the broker's answers are read (a user without a management tag gets 401 even
//!   with the right password, and the body tells that apart from a refused password).
//! - [`RabbitmqTarget::terminate_sessions`] lists the user's connections from the broker's
//!   connection tracking (`GET /api/connections/username/{user}`, current at once, unlike
//!   `GET /api/connections`, which lags by the statistics interval) and closes them with
//!   an `X-Reason` header (see there for how the opening-time cutoff is applied).
//!
//! The admin needs the `administrator` tag (to read and write users and close other
//! users' connections). Reading users and listing and closing connections go through the
//! `rabbitmq_http_client` crate; the password change and the probe use `reqwest` directly
//! (the crate's user request has no `hashing_algorithm` field, and the probe must read
//! the body of a 401). Redirects are never followed, so credentials go to the configured
//! address only.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rabbitmq_http_client::api::Client as ApiClient;
use rabbitmq_http_client::error::HttpClientError;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tracing::{debug, info};
use url::Url;
use zeroize::Zeroizing;

use super::CredentialError;
use super::adapters::PasswordTarget;
use super::target::{AdminLogin, AuthOutcome, Endpoint, admin_login, log_login};
use crate::secret::{SecretMap, SecretString};

/// Limit for establishing the connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The `hashing_algorithm` rotor sends with every password hash.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";
/// The `X-Reason` sent when closing a connection; the broker passes it to the client.
pub const CLOSE_REASON: &str = "rotor: credential rotated";

/// 401 reasons the broker gives *after* it accepted the password: the user may not use
/// the management API (no management tag), or may log in from localhost only.
const REFUSED_AFTER_LOGIN: &[&str] = &["Not management user", "User can only log in via localhost"];
/// The 401 reason of a refused password (or unknown user).
const LOGIN_FAILED: &str = "Login failed";

/// Why an HTTP call to the management API failed. Carries statuses and the broker's
/// `reason` text, never a request or response body.
#[derive(Debug, thiserror::Error)]
pub enum HttpFailure {
    /// No HTTP answer: refused connection, TLS, timeout, broken body.
    #[error("no answer")]
    Transport(#[source] reqwest::Error),
    /// The API answered with an error status.
    #[error("HTTP {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The broker's `reason` (or `error`) field, when the body had one.
        reason: Option<String>,
    },
    /// The answer could not be read as expected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl HttpFailure {
    /// A transport failure, counted when it is a timeout.
    fn transport(error: reqwest::Error) -> Self {
        crate::outside::note(crate::outside::System::Rabbitmq, &error);
        HttpFailure::Transport(error)
    }

    fn is_timeout(&self) -> bool {
        matches!(self, HttpFailure::Transport(e) if e.is_timeout())
    }

    fn is_transient(&self) -> bool {
        match self {
            HttpFailure::Transport(_) => true,
            HttpFailure::Status { status, .. } => *status >= 500 || *status == 429,
            HttpFailure::Unexpected(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            HttpFailure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<HttpClientError> for HttpFailure {
    fn from(error: HttpClientError) -> Self {
        match error {
            HttpClientError::NotFound => HttpFailure::Status {
                status: 404,
                reason: None,
            },
            HttpClientError::ClientErrorResponse {
                status_code,
                error_details,
                ..
            }
            | HttpClientError::ServerErrorResponse {
                status_code,
                error_details,
                ..
            } => HttpFailure::Status {
                status: status_code.as_u16(),
                reason: error_details.and_then(|d| d.reason().map(str::to_owned)),
            },
            HttpClientError::RequestError { error, .. } => HttpFailure::transport(error),
            other => HttpFailure::Unexpected(other.to_string()),
        }
    }
}

/// Errors of the RabbitMQ target. None carries a password or a password hash.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum RabbitmqError {
    /// The admin credential lacks `username` or `password`.
    #[error("the admin credential has no {key:?} key")]
    #[strum(serialize = "admin_key_missing")]
    AdminKeyMissing {
        /// The missing key.
        key: &'static str,
    },
    /// A URL rotor cannot use.
    #[error("the {which} URL {url} is not usable: {reason}")]
    #[strum(serialize = "invalid_url")]
    InvalidUrl {
        /// `managementUrl` or `amqpUrl`.
        which: &'static str,
        /// The URL without any user information.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty user name.
    #[error("the RabbitMQ user name is empty")]
    #[strum(serialize = "empty_user_name")]
    EmptyUserName,
    /// An empty password was given (it would disable password login).
    #[error("refusing to set an empty password for RabbitMQ user {user:?}")]
    #[strum(serialize = "empty_password")]
    EmptyPassword {
        /// The account the call was about (a name, never its password).
        user: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    #[strum(serialize = "http_client")]
    HttpClient(#[source] reqwest::Error),
    /// The user does not exist (rotor never creates users).
    #[error("RabbitMQ user {user:?} does not exist on {api}")]
    #[strum(serialize = "user_not_found")]
    UserNotFound {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The management API.
        api: String,
    },
    /// Reading the user failed.
    #[error("cannot read RabbitMQ user {user:?} on {api}")]
    #[strum(serialize = "lookup_user")]
    LookupUser {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The management API.
        api: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: HttpFailure,
    },
    /// Writing the new password hash failed.
    #[error("cannot set the password of RabbitMQ user {user:?} on {api}")]
    #[strum(serialize = "set_password")]
    SetPassword {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The management API.
        api: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: HttpFailure,
    },
    /// Listing the user's connections failed.
    #[error("cannot list the connections of RabbitMQ user {user:?} on {api}")]
    #[strum(serialize = "list_connections")]
    ListConnections {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The management API.
        api: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: HttpFailure,
    },
    /// Closing one of the user's connections failed.
    #[error("cannot close connection {connection:?} of RabbitMQ user {user:?} on {api}")]
    #[strum(serialize = "close_connection")]
    CloseConnection {
        /// The account the call was about (a name, never its password).
        user: String,
        /// The connection's name.
        connection: String,
        /// The management API.
        api: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: HttpFailure,
    },
}

impl RabbitmqError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RabbitmqError::LookupUser { source, .. }
            | RabbitmqError::SetPassword { source, .. }
            | RabbitmqError::ListConnections { source, .. }
            | RabbitmqError::CloseConnection { source, .. }
                if source.is_timeout() =>
            {
                "timeout"
            }
            RabbitmqError::LookupUser { source, .. }
            | RabbitmqError::SetPassword { source, .. }
            | RabbitmqError::ListConnections { source, .. }
            | RabbitmqError::CloseConnection { source, .. }
                if matches!(source.status(), Some(401 | 403)) =>
            {
                "admin_unauthorized"
            }
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed (no answer, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            RabbitmqError::LookupUser { source, .. }
            | RabbitmqError::SetPassword { source, .. }
            | RabbitmqError::ListConnections { source, .. }
            | RabbitmqError::CloseConnection { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// A RabbitMQ broker's management API and the admin credential rotor uses on it.
#[derive(Clone)]
pub struct RabbitmqTarget {
    management_url: Url,
    amqp_url: Option<Url>,
    admin: AdminLogin,
    http: reqwest::Client,
}

impl fmt::Debug for RabbitmqTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqTarget")
            .field("management_url", &self.management_url.as_str())
            .field("amqp_url", &self.amqp_url.as_ref().map(Url::as_str))
            .field("admin", &self.admin)
            .finish()
    }
}

impl RabbitmqTarget {
    /// A target from a policy's `rabbitmq` credential and its resolved `adminFrom`
    /// (keys `username`, `password`). No I/O.
    pub fn new(
        spec: &crate::policy::RabbitmqCredential,
        admin: &SecretMap,
    ) -> Result<Self, RabbitmqError> {
        let (user, password) =
            admin_login(admin).map_err(|key| RabbitmqError::AdminKeyMissing { key })?;
        Self::from_parts(
            spec.management_url.clone(),
            spec.amqp_url.clone(),
            user,
            password.clone(),
        )
    }

    /// A target from its parts. `management_url` is the API's base (`http(s)://host:15672`,
    /// with a path prefix if the API sits behind one); `amqp_url` (`amqp(s)://host:5672`) is
    /// recorded for reports. Neither may carry credentials. No I/O.
    pub fn from_parts(
        management_url: Url,
        amqp_url: Option<Url>,
        admin_user: &str,
        admin_password: SecretString,
    ) -> Result<Self, RabbitmqError> {
        check_url("managementUrl", &management_url, &["http", "https"])?;
        if let Some(url) = &amqp_url {
            check_url("amqpUrl", url, &["amqp", "amqps"])?;
        }
        let http = reqwest::Client::builder()
            .user_agent(crate::outside::USER_AGENT)
            .timeout(crate::outside::call_timeout())
            .connect_timeout(Endpoint::connect_limit(DEFAULT_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RabbitmqError::HttpClient)?;
        Ok(Self {
            management_url,
            amqp_url,
            admin: AdminLogin::new(admin_user, admin_password),
            http,
        })
    }

    /// Whether the user exists (`GET /api/users/{user}`).
    pub async fn user_exists(&self, user: &str) -> Result<bool, RabbitmqError> {
        check_user(user)?;
        match self.api().get_user(user).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(RabbitmqError::LookupUser {
                user: user.to_owned(),
                api: self.api_base(),
                source: e.into(),
            }),
        }
    }

    /// Changes `user`'s password, keeping its tags (and, untouched, its permissions): reads
    /// the user, then `PUT /api/users/{user}` with `password_hash` (computed here, fresh salt)
    /// and `hashing_algorithm`. Idempotent. Fails with [`RabbitmqError::UserNotFound`] when
    /// the user does not exist.
    pub async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), RabbitmqError> {
        check_user(user)?;
        let password_hash = password_hash(user, password)?;
        let existing = self.api().get_user(user).await.map_err(|e| {
            if e.is_not_found() {
                self.user_not_found(user)
            } else {
                RabbitmqError::LookupUser {
                    user: user.to_owned(),
                    api: self.api_base(),
                    source: e.into(),
                }
            }
        })?;
        let tags = existing.tags.0.join(",");
        let body = serde_json::json!({
            "password_hash": password_hash,
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": tags,
        });
        let set_error = |source| RabbitmqError::SetPassword {
            user: user.to_owned(),
            api: self.api_base(),
            source,
        };
        let request = self
            .admin_request(reqwest::Method::PUT, &["users", user])
            .json(&body);
        send(request).await.map_err(set_error)?;
        info!(user = %user, api = %self.api_base(), tags = %tags, "RabbitMQ password set.");
        Ok(())
    }

    /// Asks `GET /api/whoami` as `user` with `password`.
    ///
    /// - 2xx: [`AuthOutcome::Accepted`].
    /// - 401 whose reason is `Login failed`: [`AuthOutcome::Rejected`] (code `401`). The
    ///   broker says this when the password (or the user) is refused, the same refusal an
    ///   AMQP client sees as `ACCESS_REFUSED`.
    /// - 401 whose reason shows the broker accepted the password and then refused the
    ///   request (`Not management user`: a user without a management tag;
    ///   `User can only log in via localhost`): [`AuthOutcome::Accepted`] — the password
    ///   is valid, and that is what the probe is about.
    /// - Any other answer, or none: [`AuthOutcome::Unreachable`].
    ///
    /// The AMQP URL is not used to probe: that needs an AMQP client this build does not
    /// include, and the management API's answer is the broker's own authentication result.
    pub async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        let outcome = match self
            .http
            .get(self.api_url(&["whoami"]))
            .basic_auth(user, Some(password.expose_secret()))
            .send()
            .await
        {
            Err(error) => AuthOutcome::Unreachable {
                reason: format!(
                    "no answer from {}: {}",
                    self.api_base(),
                    crate::error_chain(&error.without_url())
                ),
            },
            Ok(response) => {
                let status = response.status();
                // The body is `{"error", "reason"}` on failure and the user's name and
                // tags on success; never a secret.
                let body = response.text().await.unwrap_or_default();
                classify_whoami(status, &body)
            }
        };
        log_login!(outcome, user = %user, api = %self.api_base());
        outcome
    }

    /// Closes `user`'s connections opened before `opened_before` (all of them with `None`)
    /// and returns how many were closed. The broker sends each client a `connection.close`
    /// with `CONNECTION_FORCED` and the reason `rotor: credential rotated` (`X-Reason`),
    /// serves nothing more on it, and drops the socket once the client acknowledges or
    /// after 30 s.
    ///
    /// The list comes from connection tracking (`GET /api/connections/username/{user}`),
    /// which knows a connection the moment it opens. The opening time (`connected_at`) and
    /// closing one connection by name (`DELETE /api/connections/{name}`) need the
    /// statistics database, which learns of a connection only after the statistics
    /// interval (5 s by default). So:
    /// - without a cutoff, every connection is closed at once
    ///   (`DELETE /api/connections/username/{user}`);
    /// - with a cutoff, connections known to have opened at or after it are kept and the
    ///   others are closed by name; if any connection's opening time is not known yet, it
    ///   may have been opened with the old password, and the only way to close it is to
    ///   close all of the user's connections: that is done, and a client that had just
    ///   connected with the new password reconnects once.
    pub async fn terminate_sessions(
        &self,
        user: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, RabbitmqError> {
        check_user(user)?;
        let api = self.api();
        let list_error = |e: HttpClientError| RabbitmqError::ListConnections {
            user: user.to_owned(),
            api: self.api_base(),
            source: e.into(),
        };
        let tracked = api.list_user_connections(user).await.map_err(list_error)?;
        if tracked.is_empty() {
            debug!(user = %user, api = %self.api_base(), "No RabbitMQ connections to close.");
            return Ok(0);
        }
        let cutoff_ms = opened_before.map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        });
        let mut by_name = Vec::new();
        let mut close_all = cutoff_ms.is_none();
        if let Some(cutoff) = cutoff_ms {
            for connection in &tracked {
                match self.connected_at(user, &connection.name).await? {
                    Some(at) if u128::from(at) >= cutoff => {
                        debug!(user = %user, connection = %connection.name, "Keeping a connection opened after the cutoff.");
                    }
                    Some(_) => by_name.push(connection.name.clone()),
                    None => {
                        info!(user = %user, connection = %connection.name, "A connection's opening time is not known yet; closing all of the user's connections.");
                        close_all = true;
                        break;
                    }
                }
            }
        }
        let closed = if close_all {
            api.close_user_connections(user, Some(CLOSE_REASON), true)
                .await
                .map_err(|e| RabbitmqError::CloseConnection {
                    user: user.to_owned(),
                    connection: "*".into(),
                    api: self.api_base(),
                    source: e.into(),
                })?;
            tracked.len() as u64
        } else {
            let mut closed = 0u64;
            for name in by_name {
                match api.close_connection(&name, Some(CLOSE_REASON), false).await {
                    Ok(()) => closed += 1,
                    // Gone already.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        return Err(RabbitmqError::CloseConnection {
                            user: user.to_owned(),
                            connection: name,
                            api: self.api_base(),
                            source: e.into(),
                        });
                    }
                }
            }
            closed
        };
        info!(user = %user, api = %self.api_base(), sessions = closed, "RabbitMQ connections closed.");
        Ok(closed)
    }

    /// `connected_at` (ms since the epoch) of a connection from `GET /api/connections/{name}`;
    /// `None` when the statistics database does not know the connection (yet).
    async fn connected_at(&self, user: &str, name: &str) -> Result<Option<u64>, RabbitmqError> {
        let list_error = |source| RabbitmqError::ListConnections {
            user: user.to_owned(),
            api: self.api_base(),
            source,
        };
        let request = self.admin_request(reqwest::Method::GET, &["connections", name]);
        let response = match send(request).await {
            // Not in the statistics database (yet).
            Err(HttpFailure::Status { status: 404, .. }) => return Ok(None),
            sent => sent.map_err(list_error)?,
        };
        let json: serde_json::Value = response
            .json()
            .await
            .map_err(|e| list_error(HttpFailure::transport(e)))?;
        Ok(json.get("connected_at").and_then(serde_json::Value::as_u64))
    }

    /// A request to `…/api/<segments>` as the admin, for the calls the crate's client
    /// does not offer.
    fn admin_request(&self, method: reqwest::Method, segments: &[&str]) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.api_url(segments))
            .basic_auth(
                &self.admin.username,
                Some(self.admin.password.expose_secret()),
            )
    }

    /// The crate's client as the admin, for one call.
    fn api(&self) -> ApiClient<String, &str, &str> {
        ApiClient::from_http_client(
            self.http.clone(),
            self.api_base(),
            self.admin.username.as_str(),
            self.admin.password.expose_secret(),
        )
    }

    /// `…/api`, for logs and the crate's client.
    fn api_base(&self) -> String {
        format!("{}/api", self.management_url.as_str().trim_end_matches('/'))
    }

    /// `…/api/<segments>`, each segment percent-encoded (user and connection names may
    /// hold `/`, spaces or `>`).
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.management_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("api").extend(segments);
        }
        url
    }

    fn user_not_found(&self, user: &str) -> RabbitmqError {
        RabbitmqError::UserNotFound {
            user: user.to_owned(),
            api: self.api_base(),
        }
    }
}

/// Reads `/api/whoami`'s answer (see [`RabbitmqTarget::login`]).
fn classify_whoami(status: StatusCode, body: &str) -> AuthOutcome {
    if status.is_success() {
        return AuthOutcome::Accepted;
    }
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
    match (status.as_u16(), reason.as_deref()) {
        (401, Some(LOGIN_FAILED)) => AuthOutcome::Rejected {
            code: "401".into(),
            message: LOGIN_FAILED.into(),
        },
        (401, Some(r)) if REFUSED_AFTER_LOGIN.contains(&r) => AuthOutcome::Accepted,
        (code, Some(r)) => AuthOutcome::Unreachable {
            reason: format!(
                "HTTP {code} ({r}), which does not say whether the password was accepted"
            ),
        },
        (code, None) => AuthOutcome::Unreachable {
            reason: format!("HTTP {code} without a reason the probe understands"),
        },
    }
}

/// Sends a request the crate's client does not offer: no answer is
/// [`HttpFailure::Transport`] (counted when it is a timeout), an answer other than 2xx
/// is [`status_failure`].
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, HttpFailure> {
    let response = request.send().await.map_err(HttpFailure::transport)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(status_failure(response).await)
    }
}

/// The status and the broker's `reason` of a failed response.
async fn status_failure(response: reqwest::Response) -> HttpFailure {
    let status = response.status().as_u16();
    let reason = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| {
            v.get("reason")
                .or_else(|| v.get("error"))
                .and_then(|r| r.as_str())
                .map(str::to_owned)
        });
    HttpFailure::Status { status, reason }
}

fn check_url(which: &'static str, url: &Url, schemes: &[&str]) -> Result<(), RabbitmqError> {
    let invalid = |reason| {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        RabbitmqError::InvalidUrl {
            which,
            url: shown.to_string(),
            reason,
        }
    };
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(if which == "amqpUrl" {
            "the scheme must be amqp or amqps"
        } else {
            "the scheme must be http or https"
        }));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it must not hold credentials (they come from adminFrom)",
        ));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), RabbitmqError> {
    if user.is_empty() {
        return Err(RabbitmqError::EmptyUserName);
    }
    Ok(())
}

/// `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)) with a fresh
/// 4-byte salt.
fn password_hash(user: &str, password: &SecretString) -> Result<String, RabbitmqError> {
    let text = password.expose_secret();
    if text.is_empty() {
        return Err(RabbitmqError::EmptyPassword {
            user: user.to_owned(),
        });
    }
    Ok(salted_hash(rand::random::<[u8; 4]>(), text))
}

fn salted_hash(salt: [u8; 4], password: &str) -> String {
    let mut salted = Zeroizing::new(Vec::with_capacity(4 + password.len()));
    salted.extend_from_slice(&salt);
    salted.extend_from_slice(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&Sha256::digest(salted.as_slice()));
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// RabbitMQ users have no login flag to lift: the default [`PasswordTarget::enable`].
impl PasswordTarget for RabbitmqTarget {
    async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        Ok(RabbitmqTarget::set_password(self, user, password).await?)
    }

    async fn disable(&self, user: &str, unknown: &SecretString) -> Result<String, CredentialError> {
        RabbitmqTarget::set_password(self, user, unknown).await?;
        Ok(format!(
            "user {user}: password replaced by an unknown random one (tags kept)"
        ))
    }

    async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        RabbitmqTarget::login(self, user, password).await
    }

    async fn terminate(
        &self,
        user: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        Ok(self.terminate_sessions(user, opened_before).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_brokers_algorithm() {
        let salt = [0x90, 0x8d, 0xc6, 0x0a];
        // The crate computes it the way the broker does.
        let expected =
            rabbitmq_http_client::password_hashing::base64_encoded_salted_password_hash_sha256(
                &salt, "test12",
            );
        assert_eq!(salted_hash(salt, "test12"), expected);
        let fresh = password_hash("u", &SecretString::from("test12")).unwrap();
        assert_ne!(
            fresh,
            password_hash("u", &SecretString::from("test12")).unwrap()
        );
        assert!(!fresh.contains("test12"));
        let err = password_hash("u", &SecretString::from("")).unwrap_err();
        assert_eq!(err.kind(), "empty_password");
    }

    #[test]
    fn whoami_answers_are_classified() {
        let body =
            |error: &str, reason: &str| format!(r#"{{"error":"{error}","reason":"{reason}"}}"#);
        assert!(matches!(
            classify_whoami(StatusCode::OK, r#"{"name":"u","tags":[]}"#),
            AuthOutcome::Accepted
        ));
        assert!(matches!(
            classify_whoami(StatusCode::UNAUTHORIZED, &body("not_authorized", "Login failed")),
            AuthOutcome::Rejected { code, .. } if code == "401"
        ));
        assert!(matches!(
            classify_whoami(
                StatusCode::UNAUTHORIZED,
                &body("not_authorised", "Not management user")
            ),
            AuthOutcome::Accepted
        ));
        assert!(matches!(
            classify_whoami(StatusCode::UNAUTHORIZED, "<html>proxy says no</html>"),
            AuthOutcome::Unreachable { .. }
        ));
        assert!(matches!(
            classify_whoami(
                StatusCode::UNAUTHORIZED,
                &body("not_authorised", "Something new")
            ),
            AuthOutcome::Unreachable { .. }
        ));
        assert!(matches!(
            classify_whoami(StatusCode::BAD_GATEWAY, ""),
            AuthOutcome::Unreachable { .. }
        ));
    }

    #[test]
    fn urls_with_credentials_or_odd_schemes_are_refused() {
        let target = |mgmt: &str, amqp: Option<&str>| {
            RabbitmqTarget::from_parts(
                Url::parse(mgmt).unwrap(),
                amqp.map(|a| Url::parse(a).unwrap()),
                "admin",
                SecretString::from("canary-admin-5e1f"),
            )
        };
        assert!(target("http://127.0.0.1:15672", Some("amqp://127.0.0.1:5672")).is_ok());
        let err = target("http://admin:canary-url-77@127.0.0.1:15672", None).unwrap_err();
        assert_eq!(err.kind(), "invalid_url");
        assert!(!err.to_string().contains("canary-url-77"), "{err}");
        let err = target("ftp://127.0.0.1", None).unwrap_err();
        assert_eq!(err.kind(), "invalid_url");
        let err = target("http://127.0.0.1:15672", Some("http://127.0.0.1:5672")).unwrap_err();
        assert_eq!(err.kind(), "invalid_url");
    }

    #[test]
    fn api_urls_encode_each_segment() {
        let target = RabbitmqTarget::from_parts(
            Url::parse("https://mq.example/rabbit/").unwrap(),
            None,
            "admin",
            SecretString::from("x"),
        )
        .unwrap();
        assert_eq!(target.api_base(), "https://mq.example/rabbit/api");
        assert_eq!(
            target
                .api_url(&["connections", "127.0.0.1:1 -> 127.0.0.1:5672"])
                .as_str(),
            "https://mq.example/rabbit/api/connections/127.0.0.1:1%20-%3E%20127.0.0.1:5672"
        );
        assert_eq!(
            target.api_url(&["users", "a/b"]).as_str(),
            "https://mq.example/rabbit/api/users/a%2Fb"
        );
    }
}
