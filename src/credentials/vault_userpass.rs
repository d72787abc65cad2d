//! Vault userpass passwords (`vault-userpass`, strategy `single`), and what the three
//! Vault auth kinds share (`vault-userpass`, [`super::vault_approle`],
//! [`super::vault_token`]): the error type [`VaultAuthError`], the login probe that
//! revokes the token it obtains, and the token-accessor scan that ends sessions.
//!
//! - [`UserpassTarget::set_password`] writes `auth/<mount>/users/<user>/password` with
//!   rotor's token; the user must exist (rotor rotates, it does not provision).
//! - [`UserpassTarget::login`] logs in anonymously on `auth/<mount>/login/<user>`. A token
//!   in the answer is [`AuthOutcome::Accepted`] and is revoked at once (`revoke-self`,
//!   else `revoke-accessor` with rotor's token), so probes leave no tokens behind. Only
//!   Vault's refusal of the password (HTTP 400, OpenBao 2.7 says `invalid username or
//!   password`) is [`AuthOutcome::Rejected`]; a missing mount answers 403 and, like a
//!   transport failure or a 5xx, is [`AuthOutcome::Unreachable`].
//! - [`UserpassTarget::terminate_sessions`] revokes the tokens that logins of the user
//!   obtained. Vault has no index from a user to its tokens, so this lists every token
//!   accessor and looks each one up: O(number of tokens in Vault) requests (eight at a
//!   time), and rotor's token needs `sudo` on `auth/token/accessors`.
//!
//! Answers that carry secrets (login tokens) are never logged or put into errors; Vault's
//! error text is scrubbed of the values sent before it reaches an error or an outcome.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::adapters::PasswordTarget;
use super::target::wipe_json;
use super::{AuthOutcome, CredentialError};
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, RawResponse, Vault, VaultError};

/// How many token lookups [`revoke_login_tokens`] keeps in flight.
const SCAN_CONCURRENCY: usize = 8;

/// Errors of the Vault auth kinds (`vault-userpass`, `vault-approle`, `vault-token`).
/// None carries a password, secret-id or token: Vault's error text is scrubbed of the
/// values that were sent.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum VaultAuthError {
    /// A mount, user or role name that cannot be used as (part of) a Vault path.
    #[error("invalid {what} {value:?}: {reason}")]
    #[strum(serialize = "invalid_name")]
    InvalidName {
        /// `mount`, `username`, `role`.
        what: &'static str,
        /// The name as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty password was given.
    #[error("refusing to set an empty password for user {username:?} on auth/{mount}")]
    #[strum(serialize = "empty_password")]
    EmptyPassword {
        /// Auth mount.
        mount: String,
        /// The account the call was about (a name, never its password).
        username: String,
    },
    /// A stored value lacks a key the operation needs.
    #[error("the {which} value has no usable {key:?} key")]
    #[strum(serialize = "missing_key")]
    MissingKey {
        /// Which value (`revoked`, …).
        which: &'static str,
        /// The key.
        key: &'static str,
    },
    /// Vault did not answer (connection refused, timeout, TLS).
    #[error("{operation}: no answer from Vault")]
    #[strum(serialize = "vault_transport")]
    Transport {
        /// The request, e.g. `POST auth/userpass/users/app/password`.
        operation: String,
        /// The underlying client's error; it never holds a password.
        #[source]
        source: VaultError,
    },
    /// Vault answered with an error status.
    #[error("{operation}: Vault answered HTTP {status}{}", errors_suffix(errors))]
    #[strum(serialize = "vault_api")]
    Api {
        /// The request.
        operation: String,
        /// HTTP status.
        status: u16,
        /// Vault's `errors`, scrubbed of the values sent.
        errors: String,
    },
    /// The userpass user does not exist.
    #[error("user {username:?} does not exist on auth/{mount}")]
    #[strum(serialize = "user_not_found")]
    UserNotFound {
        /// Auth mount.
        mount: String,
        /// The account the call was about (a name, never its password).
        username: String,
    },
    /// The AppRole role does not exist.
    #[error("AppRole role {role:?} does not exist on auth/{mount}")]
    #[strum(serialize = "role_not_found")]
    RoleNotFound {
        /// Auth mount.
        mount: String,
        /// The role.
        role: String,
    },
    /// Vault answered 2xx without a field the operation needs.
    #[error("{operation}: Vault's answer has no {field}")]
    #[strum(serialize = "invalid_response")]
    InvalidResponse {
        /// The request.
        operation: String,
        /// The missing field, e.g. `auth.client_token`.
        field: &'static str,
    },
}

fn errors_suffix(errors: &str) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {errors}")
    }
}

impl VaultAuthError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultAuthError::Transport { source, .. } if source.is_timeout() => "timeout",
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed: no answer, 5xx, 429 (rate limited) or
    /// 412 (a performance standby not caught up yet).
    pub fn is_transient(&self) -> bool {
        match self {
            VaultAuthError::Transport { .. } => true,
            VaultAuthError::Api { status, .. } => {
                *status >= 500 || *status == 429 || *status == 412
            }
            _ => false,
        }
    }
}

/// A userpass user on a Vault auth mount, changed with rotor's token.
#[derive(Debug, Clone)]
pub struct UserpassTarget {
    vault: Vault,
    user: MountEntry,
}

impl UserpassTarget {
    /// The user `username` on the userpass mount `mount` (e.g. `userpass`). No I/O;
    /// names are checked by each call.
    pub fn new(vault: Vault, mount: &str, username: &str) -> Self {
        Self {
            vault,
            user: MountEntry::new(mount, "users", "username", username),
        }
    }

    /// Whether the user exists (`GET auth/<mount>/users/<user>`). A missing mount is an
    /// error, not `false`.
    pub async fn user_exists(&self) -> Result<bool, VaultAuthError> {
        self.user.check()?;
        let path = self.user.path();
        let (operation, resp) = as_rotor(&self.vault, Method::GET, &path, None).await?;
        match resp.status {
            200..=299 => Ok(true),
            // A missing user answers 404 with no error text; a missing mount answers
            // 404 "no handler for route".
            404 if resp.errors().is_empty() => Ok(false),
            _ => Err(api_error(operation, &resp, &[])),
        }
    }

    /// Sets the user's password (`POST auth/<mount>/users/<user>/password`). Idempotent.
    /// Fails with [`VaultAuthError::UserNotFound`] when the user does not exist.
    pub async fn set_password(&self, password: &SecretString) -> Result<(), VaultAuthError> {
        self.user.check()?;
        if password.expose_secret().is_empty() {
            return Err(VaultAuthError::EmptyPassword {
                mount: self.user.mount.clone(),
                username: self.user.name.clone(),
            });
        }
        let path = format!("{}/password", self.user.path());
        let body = WipedJson(json!({ "password": password.expose_secret() }));
        let (operation, resp) = as_rotor(&self.vault, Method::POST, &path, Some(&body.0)).await?;
        drop(body);
        if resp.is_success() {
            info!(mount = %self.user.mount, user = %self.user.name, "Userpass password set.");
            return Ok(());
        }
        let err = api_error(operation, &resp, &[password.expose_secret()]);
        // OpenBao answers 500 "username does not exist" for a missing user.
        if let Ok(false) = self.user_exists().await {
            return Err(VaultAuthError::UserNotFound {
                mount: self.user.mount.clone(),
                username: self.user.name.clone(),
            });
        }
        Err(err)
    }

    /// Logs in with `password` (`POST auth/<mount>/login/<user>`, no token). A token in
    /// the answer means [`AuthOutcome::Accepted`], and that token is revoked at once.
    /// HTTP 400 (OpenBao: `invalid username or password`) is
    /// [`AuthOutcome::Rejected`] with code `"400"`; anything else (no answer, 5xx, 403
    /// for a missing mount) is [`AuthOutcome::Unreachable`]. Never panics.
    pub async fn login(&self, password: &SecretString) -> AuthOutcome {
        if let Err(e) = self.user.check() {
            return AuthOutcome::Unreachable {
                reason: e.to_string(),
            };
        }
        let path = format!("auth/{}/login/{}", self.user.mount, self.user.name);
        let body = WipedJson(json!({ "password": password.expose_secret() }));
        probe_login(&self.vault, &path, &body.0, &[password.expose_secret()]).await
    }

    /// Revokes the tokens obtained by logins of this user (token `path`
    /// `auth/<mount>/login/<user>`) that were issued before `cutoff` (`None`: all of
    /// them), with their child tokens; returns how many.
    ///
    /// Cost: one `LIST auth/token/accessors` plus one `lookup-accessor` per token in
    /// Vault (eight at a time), so O(number of tokens). rotor's token needs `sudo` on
    /// `auth/token/accessors` and `update` on `auth/token/lookup-accessor` and
    /// `auth/token/revoke-accessor`. Batch tokens have no accessor and cannot be revoked;
    /// they end with their TTL.
    pub async fn terminate_sessions(
        &self,
        cutoff: Option<SystemTime>,
    ) -> Result<u64, VaultAuthError> {
        let revoked = revoke_entry_logins(&self.vault, &self.user, cutoff, |rest, _| {
            rest.strip_prefix('/')
                // userpass lower-cases user names, the recorded path keeps the case sent.
                .is_some_and(|user| user.eq_ignore_ascii_case(&self.user.name))
        })
        .await?;
        info!(mount = %self.user.mount, user = %self.user.name, tokens = revoked, "Userpass login tokens revoked.");
        Ok(revoked)
    }
}

/// The users of one userpass mount: the adapter of the `vault-userpass` kind.
pub struct UserpassAccounts {
    vault: Vault,
    mount: String,
}

impl UserpassAccounts {
    /// The users on the userpass mount `mount`, changed with rotor's token.
    pub fn new(vault: Vault, mount: &str) -> Self {
        UserpassAccounts {
            vault,
            mount: mount.to_owned(),
        }
    }

    fn user(&self, user: &str) -> UserpassTarget {
        UserpassTarget::new(self.vault.clone(), &self.mount, user)
    }
}

/// Userpass users have no login flag to lift: the default [`PasswordTarget::enable`].
impl PasswordTarget for UserpassAccounts {
    async fn set_password(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<(), CredentialError> {
        Ok(self.user(user).set_password(password).await?)
    }

    async fn disable(&self, user: &str, unknown: &SecretString) -> Result<String, CredentialError> {
        self.user(user).set_password(unknown).await?;
        Ok(format!(
            "userpass user {user} on auth/{}: password replaced by an unknown random one (user and policies kept)",
            self.mount
        ))
    }

    async fn login(&self, user: &str, password: &SecretString) -> AuthOutcome {
        self.user(user).login(password).await
    }

    async fn terminate(
        &self,
        user: &str,
        opened_before: Option<SystemTime>,
    ) -> Result<u64, CredentialError> {
        Ok(self.user(user).terminate_sessions(opened_before).await?)
    }
}

// ---------------------------------------------------------------------------------------
// Shared by the Vault auth kinds.
// ---------------------------------------------------------------------------------------

/// A JSON request body holding secrets in clear; its strings are zeroed when dropped.
pub(crate) struct WipedJson(pub(crate) Value);

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

/// A named entry of a Vault auth mount (a userpass user, an AppRole role): the mount,
/// slashes around it trimmed, and the name. Both are checked by each call, not here.
#[derive(Debug, Clone)]
pub(crate) struct MountEntry {
    /// The auth mount, e.g. `userpass`.
    pub(crate) mount: String,
    /// The user's or role's name.
    pub(crate) name: String,
    /// The mount's path to its entries: `users`, `role`.
    collection: &'static str,
    /// What the name is, for errors: `username`, `role`.
    what: &'static str,
}

impl MountEntry {
    /// The entry `name` (a `what`) under `auth/<mount>/<collection>/`.
    pub(crate) fn new(
        mount: &str,
        collection: &'static str,
        what: &'static str,
        name: &str,
    ) -> Self {
        MountEntry {
            mount: normalize_mount(mount),
            name: name.to_owned(),
            collection,
            what,
        }
    }

    /// Whether the mount and the name can be used in a Vault path.
    pub(crate) fn check(&self) -> Result<(), VaultAuthError> {
        check_mount(&self.mount)?;
        check_segment(self.what, &self.name)
    }

    /// `auth/<mount>/<collection>/<name>`.
    pub(crate) fn path(&self) -> String {
        format!("auth/{}/{}/{}", self.mount, self.collection, self.name)
    }
}

/// Checks `entry`, then revokes the tokens of logins on its mount with
/// [`revoke_login_tokens`]: those whose `path` starts with `auth/<mount>/login` and that
/// `matches`, given the rest of the path and the token's lookup data.
pub(crate) async fn revoke_entry_logins(
    vault: &Vault,
    entry: &MountEntry,
    cutoff: Option<SystemTime>,
    matches: impl Fn(&str, &Value) -> bool,
) -> Result<u64, VaultAuthError> {
    entry.check()?;
    let login = format!("auth/{}/login", entry.mount);
    revoke_login_tokens(vault, cutoff, |data| {
        str_field(data, "path")
            .and_then(|path| path.strip_prefix(&login))
            .is_some_and(|rest| matches(rest, data))
    })
    .await
}

/// Trims slashes around a mount path (`/userpass/` → `userpass`).
fn normalize_mount(mount: &str) -> String {
    mount.trim_matches('/').to_owned()
}

/// A mount path: one or more segments separated by `/`.
pub(crate) fn check_mount(mount: &str) -> Result<(), VaultAuthError> {
    if mount.is_empty() {
        return Err(invalid_name("mount", mount, "it is empty"));
    }
    for segment in mount.split('/') {
        check_segment("mount", segment).map_err(|_| {
            invalid_name(
                "mount",
                mount,
                "segments must be non-empty, not `.` or `..`, without `?#%`, spaces or control characters",
            )
        })?;
    }
    Ok(())
}

/// One path segment (a user or role name): nothing that would change the request's path.
pub(crate) fn check_segment(what: &'static str, value: &str) -> Result<(), VaultAuthError> {
    if value.is_empty() {
        return Err(invalid_name(what, value, "it is empty"));
    }
    if value == "." || value == ".." {
        return Err(invalid_name(what, value, "it is `.` or `..`"));
    }
    if value
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(invalid_name(
            what,
            value,
            "it contains `/`, `?`, `#`, `%`, `\\`, a space or a control character",
        ));
    }
    Ok(())
}

fn invalid_name(what: &'static str, value: &str, reason: &'static str) -> VaultAuthError {
    VaultAuthError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// Replaces every occurrence of a non-empty `secrets` entry in `text` by `[REDACTED]`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret) {
            out = out.replace(secret, "[REDACTED]");
        }
    }
    out
}

/// A value's key when present and non-empty (an empty token would make Vault fall back
/// to the caller's own token in `auth/token/lookup`).
pub(crate) fn non_empty<'a>(value: &'a SecretMap, key: &str) -> Option<&'a SecretString> {
    value.get(key).filter(|v| !v.expose_secret().is_empty())
}

pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// [`Vault::request`] with transport failures as [`VaultAuthError::Transport`].
pub(crate) async fn send(
    vault: &Vault,
    method: Method,
    path: &str,
    body: Option<&Value>,
    auth: AuthAs<'_>,
    operation: &str,
) -> Result<RawResponse, VaultAuthError> {
    vault
        .request(method, path, body, auth)
        .await
        .map_err(|source| VaultAuthError::Transport {
            operation: operation.to_owned(),
            source,
        })
}

/// [`send`] with rotor's token; also returns the operation's name (`POST <path>`) for
/// errors.
pub(crate) async fn as_rotor(
    vault: &Vault,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(String, RawResponse), VaultAuthError> {
    let operation = format!("{method} {path}");
    let resp = send(vault, method, path, body, AuthAs::Rotor, &operation).await?;
    Ok((operation, resp))
}

/// [`VaultAuthError::Api`] from a non-2xx answer, Vault's text scrubbed of `secrets`.
pub(crate) fn api_error(operation: String, resp: &RawResponse, secrets: &[&str]) -> VaultAuthError {
    VaultAuthError::Api {
        operation,
        status: resp.status,
        errors: scrub(&resp.errors(), secrets),
    }
}

pub(crate) fn log_outcome(path: &str, outcome: &AuthOutcome) {
    super::target::log_login!(outcome, path = %path);
}

/// Sends a login request anonymously, classifies the answer and logs it: a token is
/// [`AuthOutcome::Accepted`] (and is revoked before returning), HTTP 400 is Vault's
/// refusal ([`AuthOutcome::Rejected`], code `"400"`), anything else is
/// [`AuthOutcome::Unreachable`]. `secrets` are scrubbed from every text returned.
pub(crate) async fn probe_login(
    vault: &Vault,
    path: &str,
    body: &Value,
    secrets: &[&str],
) -> AuthOutcome {
    let outcome = login_answer(vault, path, body, secrets).await;
    log_outcome(path, &outcome);
    outcome
}

/// [`probe_login`] without the log line.
async fn login_answer(vault: &Vault, path: &str, body: &Value, secrets: &[&str]) -> AuthOutcome {
    let resp = match vault
        .request(Method::POST, path, Some(body), AuthAs::Anonymous)
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            return AuthOutcome::Unreachable {
                reason: scrub(&crate::error_chain(&e), secrets),
            };
        }
    };
    match resp.status {
        200..=299 => {
            // The answer holds the new token: keep it only as long as needed.
            let answer = WipedJson(resp.json());
            let auth = answer.0.get("auth").unwrap_or(&Value::Null);
            let Some(token) = str_field(auth, "client_token").filter(|t| !t.is_empty()) else {
                return AuthOutcome::Unreachable {
                    reason: format!(
                        "POST {path}: HTTP {} without a token (MFA or response wrapping?)",
                        resp.status
                    ),
                };
            };
            let token = SecretString::from(token.to_owned());
            let accessor = str_field(auth, "accessor").filter(|a| !a.is_empty());
            let batch = str_field(auth, "token_type") == Some("batch");
            if batch {
                debug!(path = %path, "Probe login returned a batch token; it ends with its TTL.");
            } else {
                revoke_probe_token(vault, path, &token, accessor).await;
            }
            AuthOutcome::Accepted
        }
        400 => AuthOutcome::Rejected {
            code: "400".into(),
            message: scrub(&resp.errors(), secrets),
        },
        status => AuthOutcome::Unreachable {
            reason: format!(
                "POST {path}: HTTP {status}{}",
                errors_suffix(&scrub(&resp.errors(), secrets))
            ),
        },
    }
}

/// Revokes the token a probe login obtained: `revoke-self` with it, else
/// `revoke-accessor` with rotor's token. A failure is logged, never returned: the probe
/// already has its answer, and the token still ends with its TTL.
async fn revoke_probe_token(
    vault: &Vault,
    path: &str,
    token: &SecretString,
    accessor: Option<&str>,
) {
    match vault
        .request(
            Method::POST,
            "auth/token/revoke-self",
            None,
            AuthAs::Token(token),
        )
        .await
    {
        Ok(resp) if resp.is_success() => {
            debug!(path = %path, "Probe token revoked.");
            return;
        }
        Ok(resp) => {
            debug!(path = %path, status = resp.status, "revoke-self refused; trying revoke-accessor.")
        }
        Err(e) => debug!(path = %path, error = %e, "revoke-self failed; trying revoke-accessor."),
    }
    if let Some(accessor) = accessor {
        let body = json!({ "accessor": accessor });
        match vault
            .request(
                Method::POST,
                "auth/token/revoke-accessor",
                Some(&body),
                AuthAs::Rotor,
            )
            .await
        {
            Ok(resp) if resp.is_success() => {
                debug!(path = %path, "Probe token revoked by accessor.");
            }
            Ok(resp) => {
                warn!(path = %path, status = resp.status, "Could not revoke the token of a probe login; it ends with its TTL.")
            }
            Err(e) => {
                warn!(path = %path, error = %e, "Could not revoke the token of a probe login; it ends with its TTL.")
            }
        }
    } else {
        warn!(path = %path, "Could not revoke the token of a probe login; it ends with its TTL.");
    }
}

/// When the token described by a `lookup-accessor` answer was issued: `issue_time`
/// (RFC 3339, nanoseconds), else `creation_time` (Unix seconds).
fn issued_at(data: &Value) -> Option<SystemTime> {
    if let Some(at) =
        str_field(data, "issue_time").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        return Some(at.into());
    }
    data.get("creation_time")
        .and_then(Value::as_u64)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// Whether a token is in scope for a cutoff. A token whose issue time cannot be read
/// is revoked: ending sessions is a containment step, a spare one does less harm.
fn issued_before(data: &Value, cutoff: Option<SystemTime>) -> bool {
    match (cutoff, issued_at(data)) {
        (None, _) | (Some(_), None) => true,
        (Some(cutoff), Some(at)) => at < cutoff,
    }
}

/// Lists every token accessor, looks each up, and revokes (with children) the tokens
/// whose lookup data `matches` and that were issued before `cutoff`. Tokens that vanish
/// during the scan are skipped. Keeps going after a failed lookup or revoke and then
/// returns the first error (what was revoked stays revoked; a retry finds the rest).
async fn revoke_login_tokens<F>(
    vault: &Vault,
    cutoff: Option<SystemTime>,
    matches: F,
) -> Result<u64, VaultAuthError>
where
    F: Fn(&Value) -> bool,
{
    let operation = "LIST auth/token/accessors";
    let resp = send(
        vault,
        Method::GET,
        "auth/token/accessors?list=true",
        None,
        AuthAs::Rotor,
        operation,
    )
    .await?;
    let accessors: Vec<String> = match resp.status {
        200..=299 => resp
            .json()
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        // LIST answers 404 when there is nothing to list.
        404 => Vec::new(),
        _ => return Err(api_error(operation.into(), &resp, &[])),
    };
    let scanned = accessors.len();
    // Owned items: a stream over `&accessors` makes the futures higher-ranked over the
    // borrow, which the compiler cannot prove `Send` for inside a spawned task.
    let matches = &matches;
    let results: Vec<Result<bool, VaultAuthError>> = stream::iter(accessors)
        .map(|accessor: String| async move { revoke_if(vault, &accessor, cutoff, matches).await })
        .buffer_unordered(SCAN_CONCURRENCY)
        .collect()
        .await;
    let mut revoked = 0u64;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(true) => revoked += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    debug!(scanned, revoked, "Token accessor scan done.");
    match first_error {
        None => Ok(revoked),
        Some(e) => {
            warn!(scanned, revoked, error = %e, "Token accessor scan incomplete.");
            Err(e)
        }
    }
}

async fn revoke_if<F>(
    vault: &Vault,
    accessor: &str,
    cutoff: Option<SystemTime>,
    matches: &F,
) -> Result<bool, VaultAuthError>
where
    F: Fn(&Value) -> bool,
{
    // Both calls send the accessor to `auth/token/<call>-accessor` with rotor's token.
    let body = json!({ "accessor": accessor });
    let by_accessor = |path| as_rotor(vault, Method::POST, path, Some(&body));
    let (operation, resp) = by_accessor("auth/token/lookup-accessor").await?;
    match resp.status {
        200..=299 => {}
        // "invalid accessor": the token expired or was revoked since the list.
        400 => return Ok(false),
        _ => return Err(api_error(operation, &resp, &[])),
    }
    let answer = resp.json();
    let data = answer.get("data").unwrap_or(&Value::Null);
    if !matches(data) || !issued_before(data, cutoff) {
        return Ok(false);
    }
    let (operation, resp) = by_accessor("auth/token/revoke-accessor").await?;
    if !resp.is_success() {
        return Err(api_error(operation, &resp, &[]));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        assert!(check_segment("username", "app-1_x.y").is_ok());
        for bad in [
            "", ".", "..", "a/b", "a?b", "a#b", "a%2f", "a b", "a\nb", "a\\b",
        ] {
            let err = check_segment("username", bad).unwrap_err();
            assert_eq!(err.kind(), "invalid_name", "{bad:?}");
        }
        assert!(check_mount("userpass").is_ok());
        assert!(check_mount("team/userpass").is_ok());
        for bad in ["", "a//b", "a/../b", "a?b"] {
            assert!(check_mount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_mount("/userpass/"), "userpass");
    }

    #[test]
    fn scrub_redacts_every_secret_sent() {
        let text = scrub(
            "bad value s3cr3t and t0ken, s3cr3t",
            &["s3cr3t", "", "t0ken"],
        );
        assert_eq!(text, "bad value [REDACTED] and [REDACTED], [REDACTED]");
    }

    #[test]
    fn issue_time_prefers_nanoseconds_and_cutoff_is_strict() {
        let data = json!({
            "issue_time": "2026-11-21T23:18:23.125089789Z",
            "creation_time": 1_795_303_103u64,
        });
        let at = issued_at(&data).unwrap();
        let secs = at.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 1_795_303_103);
        assert_eq!(secs.subsec_nanos(), 125_089_789);
        assert!(issued_before(&data, None));
        assert!(issued_before(&data, Some(at + Duration::from_nanos(1))));
        assert!(!issued_before(&data, Some(at)));
        let only_secs = json!({ "creation_time": 10u64 });
        assert_eq!(
            issued_at(&only_secs),
            Some(UNIX_EPOCH + Duration::from_secs(10))
        );
        // Unknown issue time: in scope.
        assert!(issued_before(&json!({}), Some(UNIX_EPOCH)));
    }

    #[test]
    fn transient_errors_are_no_answer_5xx_429_412() {
        let api = |status| VaultAuthError::Api {
            operation: "POST x".into(),
            status,
            errors: String::new(),
        };
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(api(412).is_transient());
        assert!(!api(400).is_transient());
        assert!(!api(403).is_transient());
        assert_eq!(api(403).to_string(), "POST x: Vault answered HTTP 403");
    }

    #[test]
    fn wiped_json_zeroes_its_strings() {
        let mut value = json!({ "a": "secret", "b": ["x", { "c": "y" }], "n": 1 });
        wipe_json(&mut value);
        assert_eq!(value, json!({ "a": "", "b": ["", { "c": "" }], "n": 1 }));
    }
}
