//! Errors of the GitLab consumer: which variable, which operation, what GitLab said
//! (scrubbed of the value and the token).

use std::fmt;

use crate::policy::{GitlabConsumer, GitlabTarget};

/// Which variable an error is about, as shown in messages:
/// `project acme/payments variable KEY (environment scope production) on gitlab.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableLocation {
    /// GitLab's host (and port, when not the scheme's default).
    pub host: String,
    /// `project` or `group`.
    pub owner_kind: &'static str,
    /// The project or group path (or numeric id) as the policy names it.
    pub owner: String,
    /// The variable key.
    pub key: String,
    /// The environment scope.
    pub scope: String,
}

impl VariableLocation {
    pub(super) fn of(spec: &GitlabConsumer) -> Self {
        let (owner_kind, owner) = match &spec.target {
            GitlabTarget::Project(p) => ("project", p.clone()),
            GitlabTarget::Group(g) => ("group", g.clone()),
        };
        let host = match (spec.url.host_str(), spec.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => "(no host)".to_owned(),
        };
        VariableLocation {
            host,
            owner_kind,
            owner,
            key: spec.key.clone(),
            scope: spec.environment_scope.clone(),
        }
    }
}

impl fmt::Display for VariableLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} variable {} (environment scope {}) on {}",
            self.owner_kind, self.owner, self.key, self.scope, self.host
        )
    }
}

/// The request a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitlabOperation {
    /// The first `GET` of the variable.
    Read,
    /// `POST` (create).
    Create,
    /// `PUT` (update).
    Update,
    /// The `GET` after the write.
    ReadBack,
    /// `DELETE` (retirement).
    Delete,
}

impl fmt::Display for GitlabOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GitlabOperation::Read => "reading",
            GitlabOperation::Create => "creating",
            GitlabOperation::Update => "updating",
            GitlabOperation::ReadBack => "reading back",
            GitlabOperation::Delete => "deleting",
        })
    }
}

/// Errors of the GitLab consumer. They name the host, project or group, key, scope and
/// HTTP status, and carry GitLab's own message scrubbed of the value and the token;
/// never a request body, the value or the token.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum GitlabError {
    /// The HTTP client could not be built (TLS back-end).
    #[error("building the HTTP client for GitLab failed")]
    #[strum(serialize = "client")]
    Client(#[source] reqwest::Error),
    /// The consumer's `url` cannot be used as a GitLab base URL.
    #[error("the GitLab URL {url} cannot be used: {reason}")]
    #[strum(serialize = "invalid_url")]
    InvalidUrl {
        /// The URL without user information.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token is empty or not a valid HTTP header value (a line break, say).
    #[error("the GitLab token for {variable} is empty or not a valid HTTP header value")]
    #[strum(serialize = "invalid_token")]
    InvalidToken {
        /// The variable the token was for.
        variable: Box<VariableLocation>,
    },
    /// GitLab refused the token (401) or its permissions (403).
    #[error("GitLab refused the token while {operation} {variable}: HTTP {status}: {message}")]
    #[strum(serialize = "auth")]
    Auth {
        /// The request that was refused.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// 401 or 403.
        status: u16,
        /// GitLab's message.
        message: String,
    },
    /// The project or group does not exist, or the token cannot see it (GitLab answers
    /// 404 for both).
    #[error(
        "GitLab on {} has no {} {} (or the token cannot see it) while {operation} variable {}: HTTP 404: {message}",
        variable.host, variable.owner_kind, variable.owner, variable.key
    )]
    #[strum(serialize = "not_found")]
    NotFound {
        /// The request answered 404.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// GitLab's message (`404 Project Not Found`).
        message: String,
    },
    /// GitLab refused the request as invalid (400, 409, 422): masking rules, key rules, …
    #[error("GitLab rejected {operation} {variable}: HTTP {status}: {message}")]
    #[strum(serialize = "rejected")]
    Rejected {
        /// The refused request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP status.
        status: u16,
        /// GitLab's message (`value is invalid`), scrubbed.
        message: String,
    },
    /// Any other HTTP error status (5xx and 429 are transient).
    #[error("GitLab answered HTTP {status} while {operation} {variable}: {message}")]
    #[strum(serialize = "http")]
    Http {
        /// The failed request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP status.
        status: u16,
        /// GitLab's message, scrubbed.
        message: String,
    },
    /// No usable answer: refused connection, TLS failure, timeout, broken body.
    #[error("no answer from GitLab while {operation} {variable}")]
    #[strum(serialize = "transport")]
    Transport {
        /// The failed request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The HTTP client's error (it names the URL, which holds no secret).
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON GitLab documents.
    #[error("unexpected answer from GitLab while {operation} {variable}: {detail}")]
    #[strum(serialize = "decode")]
    Decode {
        /// The request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// What was wrong, without any content of the answer.
        detail: String,
    },
    /// GitLab returned the variable of another environment scope than asked for.
    #[error(
        "GitLab answered {operation} {variable} with the variable of environment scope {returned:?}; it ignores filter[environment_scope] (group variables before GitLab 16.9), so rotor does not write"
    )]
    #[strum(serialize = "scope_mismatch")]
    ScopeMismatch {
        /// The request.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// The scope GitLab returned.
        returned: String,
    },
    /// Someone else changed the variable during the push (it vanished before the update).
    #[error("{variable} changed while rotor was {operation} it: {detail}")]
    #[strum(serialize = "concurrent_change")]
    Concurrent {
        /// The request that noticed.
        operation: GitlabOperation,
        /// The variable.
        variable: Box<VariableLocation>,
        /// What happened.
        detail: &'static str,
    },
    /// The variable read back after the write does not hold what was written.
    #[error("{variable} read back after the write differs in {fields:?}")]
    #[strum(serialize = "read_back_mismatch")]
    ReadBackMismatch {
        /// The variable.
        variable: Box<VariableLocation>,
        /// The differing fields (`value`, `masked`, …); never their values.
        fields: Vec<String>,
    },
}

impl GitlabError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transport { source, .. } if source.is_timeout() => "timeout",
            other => other.into(),
        }
    }

    /// Whether retrying the same push may succeed: connection failures, timeouts, 5xx,
    /// 429 and 408 are transient, and so are a concurrent change and a read-back
    /// mismatch (another writer may have won; the next push writes again). A refused
    /// token, a missing project and a rejected value need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !source.is_builder(),
            Self::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Concurrent { .. } | Self::ReadBackMismatch { .. } => true,
            Self::Client(_)
            | Self::InvalidUrl { .. }
            | Self::InvalidToken { .. }
            | Self::Auth { .. }
            | Self::NotFound { .. }
            | Self::Rejected { .. }
            | Self::Decode { .. }
            | Self::ScopeMismatch { .. } => false,
        }
    }

    /// The HTTP status GitLab answered, when the error comes from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Auth { status, .. }
            | Self::Rejected { status, .. }
            | Self::Http { status, .. } => Some(*status),
            Self::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}
