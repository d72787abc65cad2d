//! The wire side of the GitLab consumer: one variable call (URL, body, scope check),
//! what GitLab answered and how it is read, and the scrubbing that keeps the value and
//! the token out of every message.

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::{Zeroize, Zeroizing};

use super::{GitlabError, GitlabOperation, MAX_MESSAGE_CHARS, SCOPE_FILTER, VariableLocation};
use crate::consumers::ReadBack;
use crate::consumers::scrub::Scrubber;
use crate::policy::{GitlabConsumer, GitlabTarget};
use crate::secret::{SecretString, constant_time_eq};

/// What a POST did.
pub(super) enum Created {
    Yes,
    /// 400 "has already been taken": another writer created it since the read.
    AlreadyTaken,
}

/// Everything one push needs, computed once.
pub(super) struct Call<'a> {
    pub(super) spec: &'a GitlabConsumer,
    pub(super) value: &'a SecretString,
    pub(super) location: VariableLocation,
    pub(super) token: HeaderValue,
    pub(super) collection_url: Url,
    pub(super) item_url: Url,
    pub(super) scrubber: Scrubber,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        spec: &'a GitlabConsumer,
        token: &SecretString,
        value: &'a SecretString,
    ) -> Result<Self, GitlabError> {
        let location = VariableLocation::of(spec);
        let (collection_url, item_url) = urls(spec)?;
        let exposed = token.expose_secret();
        let mut header = HeaderValue::from_str(exposed)
            .ok()
            .filter(|_| !exposed.trim().is_empty())
            .ok_or_else(|| GitlabError::InvalidToken {
                variable: Box::new(location.clone()),
            })?;
        header.set_sensitive(true);
        Ok(Call {
            spec,
            value,
            location,
            token: header,
            collection_url,
            item_url,
            scrubber: Scrubber::new([value.expose_secret(), exposed]),
        })
    }

    /// The variable, for an error.
    pub(super) fn location(&self) -> Box<VariableLocation> {
        Box::new(self.location.clone())
    }

    /// The JSON body of a POST (`with_key`) or PUT, in a buffer wiped when dropped.
    pub(super) fn body(&self, with_key: bool) -> Result<Bytes, GitlabError> {
        let spec = self.spec;
        let value = self.value.expose_secret();
        let body = WriteBody {
            key: with_key.then_some(spec.key.as_str()),
            value,
            variable_type: spec.variable_type.as_str(),
            protected: spec.protected,
            masked: spec.masked,
            raw: spec.raw,
            environment_scope: &spec.environment_scope,
        };
        // JSON escapes at most six bytes per input byte (`\u00XX`): with room for that,
        // the buffer never reallocates and leaves no unwiped copy behind.
        let capacity = 6 * (value.len() + spec.key.len() + spec.environment_scope.len()) + 256;
        let mut buf = WipedBuf(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut buf.0, &body).map_err(|e| GitlabError::Decode {
            operation: if with_key {
                GitlabOperation::Create
            } else {
                GitlabOperation::Update
            },
            variable: self.location(),
            detail: format!("could not encode the request ({:?})", e.classify()),
        })?;
        Ok(Bytes::from_owner(buf))
    }

    /// Fails when GitLab answered with a variable of another scope (filter ignored).
    pub(super) fn check_scope(
        &self,
        remote: &RemoteVariable,
        operation: GitlabOperation,
    ) -> Result<(), GitlabError> {
        match &remote.environment_scope {
            Some(scope) if *scope != self.spec.environment_scope => {
                Err(GitlabError::ScopeMismatch {
                    operation,
                    variable: self.location(),
                    returned: scope.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// How `remote` differs from what the push wants.
    pub(super) fn differences(&self, remote: &RemoteVariable) -> Difference {
        let spec = self.spec;
        let value = match &remote.value {
            Some(v) if constant_time_eq(v, self.value.expose_secret()) => ValueState::Same,
            Some(_) => ValueState::Differs,
            None => ValueState::Unreadable,
        };
        let mut attributes = Vec::new();
        let checks: [(&'static str, Option<bool>); 4] = [
            ("masked", remote.masked.map(|m| m == spec.masked)),
            ("protected", remote.protected.map(|p| p == spec.protected)),
            ("raw", remote.raw.map(|r| r == spec.raw)),
            (
                "variable_type",
                remote
                    .variable_type
                    .as_deref()
                    .map(|t| t == spec.variable_type.as_str()),
            ),
        ];
        for (name, same) in checks {
            // An attribute GitLab does not return cannot be compared.
            if same == Some(false) {
                attributes.push(name);
            }
        }
        Difference { value, attributes }
    }
}

/// Where the remote variable's value stands against the wanted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValueState {
    Same,
    Differs,
    /// Hidden variable: GitLab returns no value.
    Unreadable,
}

#[derive(Debug)]
pub(super) struct Difference {
    pub(super) value: ValueState,
    pub(super) attributes: Vec<&'static str>,
}

impl Difference {
    /// What the difference means for a read-back: a hidden value with every attribute
    /// as wanted cannot be proven, anything else that differs is named.
    pub(super) fn read_back(&self) -> ReadBack {
        if self.value == ValueState::Unreadable && self.attributes.is_empty() {
            return ReadBack::NotReadable;
        }
        let mut fields = Vec::new();
        match self.value {
            ValueState::Same => {}
            ValueState::Differs => fields.push("value"),
            ValueState::Unreadable => fields.push("value (hidden)"),
        }
        fields.extend(&self.attributes);
        ReadBack::of_differences(fields.into_iter().map(str::to_owned).collect())
    }
}

/// The collection URL (`…/variables`) and the item URL (`…/variables/KEY?filter…`).
pub(super) fn urls(spec: &GitlabConsumer) -> Result<(Url, Url), GitlabError> {
    let base = &spec.url;
    let invalid = |reason| {
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        GitlabError::InvalidUrl {
            url: shown.to_string(),
            reason,
        }
    };
    if !matches!(base.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be https or http"));
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(invalid(
            "it must not hold credentials (the token comes from tokenFrom)",
        ));
    }
    let (kind, owner) = match &spec.target {
        GitlabTarget::Project(p) => ("projects", p),
        GitlabTarget::Group(g) => ("groups", g),
    };
    let prefix = base.path().trim_end_matches('/');
    let mut collection = base.clone();
    collection.set_query(None);
    collection.set_fragment(None);
    collection.set_path(&format!(
        "{prefix}/api/v4/{kind}/{}/variables",
        encode_component(owner)
    ));
    let mut item = collection.clone();
    item.set_path(&format!(
        "{}/{}",
        collection.path(),
        encode_component(&spec.key)
    ));
    item.query_pairs_mut()
        .append_pair(SCOPE_FILTER, &spec.environment_scope);
    Ok((collection, item))
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ~`, so a path becomes one segment
/// (`acme/payments` → `acme%2Fpayments`), as GitLab's API wants for `:id`.
pub(super) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Serialize)]
pub(super) struct WriteBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<&'a str>,
    pub(super) value: &'a str,
    pub(super) variable_type: &'static str,
    pub(super) protected: bool,
    pub(super) masked: bool,
    pub(super) raw: bool,
    pub(super) environment_scope: &'a str,
}

/// A byte buffer wiped when the last reference to it (inside `Bytes`) is dropped.
pub(super) struct WipedBuf(Vec<u8>);

impl AsRef<[u8]> for WipedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A variable as GitLab returns it; the value is wiped on drop. Never `Debug`-printed.
/// A field GitLab leaves out (older versions, a hidden value) is `None`, as serde reads
/// a missing `Option`.
#[derive(Deserialize)]
pub(super) struct RemoteVariable {
    pub(super) value: Option<String>,
    pub(super) variable_type: Option<String>,
    pub(super) protected: Option<bool>,
    pub(super) masked: Option<bool>,
    pub(super) raw: Option<bool>,
    pub(super) environment_scope: Option<String>,
}

impl Drop for RemoteVariable {
    fn drop(&mut self) {
        if let Some(v) = self.value.as_mut() {
            v.zeroize();
        }
    }
}

/// A response: status and whole body.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Zeroizing<Vec<u8>>,
}

impl Answer {
    pub(super) fn variable(
        &self,
        call: &Call<'_>,
        operation: GitlabOperation,
    ) -> Result<RemoteVariable, GitlabError> {
        serde_json::from_slice(&self.body).map_err(|e| GitlabError::Decode {
            operation,
            variable: call.location(),
            // serde_json's Display can quote the offending value: keep the shape only.
            detail: format!(
                "the variable is not the documented JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    /// GitLab's message (`message`, else `error_description`, else `error`), rendered
    /// as text, scrubbed and shortened; a placeholder when the body has none.
    pub(super) fn message(&self, call: &Call<'_>) -> String {
        let mut raw = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| render_message(&v))
            .unwrap_or_else(|| "(no GitLab message)".to_owned());
        let mut text = call.scrubber.scrub(&raw);
        raw.zeroize();
        if text.chars().count() > MAX_MESSAGE_CHARS {
            text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        text
    }

    /// Whether a 404 says the variable (not the project or group) is missing.
    pub(super) fn is_missing_variable(&self, call: &Call<'_>) -> bool {
        self.message(call).contains("Variable Not Found")
    }

    /// The error for an unexpected status.
    pub(super) fn failure(&self, call: &Call<'_>, operation: GitlabOperation) -> GitlabError {
        let variable = call.location();
        let message = self.message(call);
        let status = self.status.as_u16();
        match status {
            401 | 403 => GitlabError::Auth {
                operation,
                variable,
                status,
                message,
            },
            404 => GitlabError::NotFound {
                operation,
                variable,
                message,
            },
            400 | 409 | 422 => GitlabError::Rejected {
                operation,
                variable,
                status,
                message,
            },
            _ => GitlabError::Http {
                operation,
                variable,
                status,
                message,
            },
        }
    }
}

/// Text of GitLab's error body: `{"message": "…"}`, `{"message": {"field": ["…"]}}`
/// (rendered `field …; other …`), `{"error": "…", "error_description": "…"}`.
pub(super) fn render_message(body: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let found = ["message", "error_description", "error"]
        .iter()
        .find_map(|name| body.get(*name).filter(|v| !v.is_null()))?;
    let text = match found {
        Value::Object(fields) => fields
            .iter()
            .flat_map(|(field, messages)| {
                strings(messages)
                    .into_iter()
                    .map(move |m| format!("{field} {m}"))
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => strings(other).join("; "),
    };
    (!text.is_empty()).then_some(text)
}
