//! The opening every audited `/v1` handler shares: [`Call`] (the app, the authenticated
//! caller and the request's audit record, extracted before the route's own
//! arguments), the JSON body with its reason and ticket ([`Call::body`]), the grant
//! checks, and the ends of a request: refused ([`Call::answer`] of an `Err`), served
//! ([`Call::serve`]), authorized first ([`Call::authorize`], fail closed) and done
//! ([`Call::settle`]).
//!
//! A handler is `call.about(name)`, then an inner `async fn … -> Result<Response,
//! Denial>` whose every check is a `?`, then `call.answer(result)`: a refusal is
//! audited with everything the record learnt by then.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{App, Caller, Denial, MAX_REASON_LEN, MAX_TICKET_LEN, Outcome, RequestAudit};
use crate::agent::PolicyMeta;
use crate::api::{ApproveBody, BulkRotateBody, ReleaseBody, RetireBody, RotateBody};
use crate::engine::Trigger;

/// One audited `/v1` request: who asks, and its audit record so far.
pub(super) struct Call {
    /// The server's shared state: the agent's control, the authenticator, the audit sink.
    pub app: Arc<App>,
    /// The authenticated caller (see [`super::gate::gate`]).
    pub caller: Caller,
    /// What the audit record will say; handlers add the policy, rotation, trigger…
    pub record: RequestAudit,
}

impl FromRequestParts<Arc<App>> for Call {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let remote = super::peer(parts, app).await?;
        let Extension(caller) = Extension::<Caller>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let record = caller.record(&parts.method, &parts.uri, remote);
        Ok(Call {
            app: Arc::clone(app),
            caller,
            record,
        })
    }
}

/// A request body with a reason (and maybe a ticket), as [`Call::body`] reads it.
pub(super) trait Justified: DeserializeOwned + Default {
    /// The shape named in the 400 for a body that does not parse.
    const SHAPE: &'static str;

    /// The trigger the body asks for, noted on the record before the reason is checked.
    fn trigger(&self) -> Option<Trigger> {
        None
    }

    /// Takes the reason and ticket out as sent (`None` for a body without a ticket).
    fn justification(&mut self) -> (Option<String>, Option<String>);
}

/// `on_demand`, or `compromise` when asked for.
pub(super) fn trigger_of(compromise: Option<bool>) -> Trigger {
    if compromise.unwrap_or(false) {
        Trigger::Compromise
    } else {
        Trigger::OnDemand
    }
}

impl Justified for RotateBody {
    const SHAPE: &'static str = "{\"reason\": string?, \"ticket\": string?, \"compromise\": bool?}";

    fn trigger(&self) -> Option<Trigger> {
        Some(trigger_of(self.compromise))
    }

    fn justification(&mut self) -> (Option<String>, Option<String>) {
        (self.reason.take(), self.ticket.take())
    }
}

impl Justified for BulkRotateBody {
    const SHAPE: &'static str = "{\"selector\": {label: value}, \"reason\": string?, \"ticket\": string?, \"compromise\": bool?}";

    fn trigger(&self) -> Option<Trigger> {
        Some(trigger_of(self.compromise))
    }

    fn justification(&mut self) -> (Option<String>, Option<String>) {
        (self.reason.take(), self.ticket.take())
    }
}

impl Justified for ReleaseBody {
    const SHAPE: &'static str = "{\"reason\": string}";

    fn justification(&mut self) -> (Option<String>, Option<String>) {
        (self.reason.take(), None)
    }
}

impl Justified for RetireBody {
    const SHAPE: &'static str = "{\"reason\": string, \"ticket\": string?}";

    fn justification(&mut self) -> (Option<String>, Option<String>) {
        (self.reason.take(), self.ticket.take())
    }
}

impl Justified for ApproveBody {
    const SHAPE: &'static str = "{\"reason\": string?}";

    fn justification(&mut self) -> (Option<String>, Option<String>) {
        (self.reason.take(), None)
    }
}

/// A body read by [`read_body`]: the rest of the body, and its reason and ticket
/// trimmed (blank is none).
pub(super) struct Read<T> {
    /// The body, without its reason and ticket.
    pub body: T,
    /// The reason, trimmed; `None` when absent or blank.
    pub reason: Option<String>,
    /// The ticket, trimmed; `None` when absent or blank.
    pub ticket: Option<String>,
}

/// Reads `bytes` as the JSON body `T` (its default when empty), notes its trigger,
/// reason and ticket on `record`, and refuses a body that does not parse (400 naming
/// the expected shape) or a reason or ticket over its length limit (left out of the
/// record).
pub(super) fn read_body<T: Justified>(
    record: &mut RequestAudit,
    bytes: &Bytes,
) -> Result<Read<T>, Denial> {
    let mut body: T = json_body(bytes, T::SHAPE)?;
    if let Some(trigger) = body.trigger() {
        record.trigger = Some(trigger);
    }
    let (reason, ticket) = body.justification();
    let reason = given(reason);
    let ticket = given(ticket);
    let long_reason = too_long(reason.as_deref(), MAX_REASON_LEN, "reason");
    let long_ticket = too_long(ticket.as_deref(), MAX_TICKET_LEN, "ticket");
    record.reason = reason.clone().filter(|_| long_reason.is_none());
    record.ticket = ticket.clone().filter(|_| long_ticket.is_none());
    match long_reason.or(long_ticket) {
        Some(d) => Err(d),
        None => Ok(Read {
            body,
            reason,
            ticket,
        }),
    }
}

/// The JSON body of a request: its type's default when the body is empty, a 400
/// naming the expected `shape` when it does not parse.
fn json_body<T: DeserializeOwned + Default>(body: &Bytes, shape: &str) -> Result<T, Denial> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("the body must be JSON {shape}: {e}")))
}

/// `Some(trimmed)` unless absent or blank.
fn given(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A 400 when `text` is longer than `max` characters.
fn too_long(text: Option<&str>, max: usize, what: &str) -> Option<Denial> {
    text.filter(|t| t.chars().count() > max)
        .map(|_| invalid(format!("{what} is longer than {max} characters")))
}

/// A 400 for a request the caller must correct.
pub(super) fn invalid(message: String) -> Denial {
    Denial::new(StatusCode::BAD_REQUEST, Outcome::Invalid, message)
}

/// A 404 for a policy name the caller would be granted.
pub(super) fn no_policy(name: &str) -> Denial {
    Denial::not_found(format!("no policy named {name}"))
}

impl Call {
    /// Names the policy the request is about in its record.
    pub fn about(mut self, policy: &str) -> Call {
        self.record.policy = Some(policy.to_owned());
        self
    }

    /// The request's body (see [`read_body`]).
    pub fn body<T: Justified>(&mut self, bytes: &Bytes) -> Result<Read<T>, Denial> {
        read_body(&mut self.record, bytes)
    }

    /// The answer: the response, or the refusal, audited (unless the audit log itself
    /// failed; see [`super::audit_unavailable`]).
    pub async fn answer(self, result: Result<Response, Denial>) -> Response {
        match result {
            Ok(response) => response,
            Err(denial) if denial.unaudited => denial.response(),
            Err(denial) => self.app.refuse(self.record, denial).await,
        }
    }

    /// Audits a successful read; answers 503 instead when the record cannot be written.
    pub async fn serve(mut self, detail: impl Into<String>, response: Response) -> Response {
        self.record.status = response.status().as_u16();
        self.record.outcome = Outcome::Allowed;
        self.record.detail = detail.into();
        match self.app.audit(self.record).await {
            Ok(()) => response,
            Err(error) => {
                tracing::error!(error = %error, "Writing the audit record of an API request failed; answering 503.");
                super::audit_unavailable().response()
            }
        }
    }

    /// Fail closed: writes the `authorized` record of a request that passed every
    /// check (`status` is the answer if the agent agrees) before the agent is asked.
    /// When it cannot be written the request ends with 503 and `undone` is logged.
    pub async fn authorize(
        &self,
        status: StatusCode,
        detail: String,
        undone: &str,
    ) -> Result<(), Denial> {
        let mut authorized = self.record.clone();
        authorized.status = status.as_u16();
        authorized.outcome = Outcome::Authorized;
        authorized.detail = detail;
        self.app.audit(authorized).await.map_err(|error| {
            tracing::error!(
                path = %self.record.path, policy = self.record.policy.as_deref().unwrap_or("-"),
                error = %error, "Writing the audit record of an authorized API request failed; {undone}."
            );
            super::audit_unavailable()
        })
    }

    /// Records how a request the agent acted on ended (`outcome`, the response's
    /// status, `detail`) and answers `response`. A record that cannot be written is
    /// logged: what was done is done, and the caller is told.
    pub async fn settle(&self, outcome: Outcome, detail: String, response: Response) -> Response {
        let mut record = self.record.clone();
        record.status = response.status().as_u16();
        record.outcome = outcome;
        record.detail = detail;
        if let Err(error) = self.app.audit(record).await {
            tracing::error!(
                path = %self.record.path, policy = self.record.policy.as_deref().unwrap_or("-"),
                error = %error, "Writing the audit record of an API request the agent acted on failed."
            );
        }
        response
    }

    /// The named policy's facts, when the caller is granted it and it exists.
    pub fn granted_policy(&self, name: &str) -> Result<PolicyMeta, Denial> {
        let meta = self.app.control.policy_meta(name);
        self.grant_check(name, meta.as_ref().map(|m| &m.labels))?;
        meta.ok_or_else(|| no_policy(name))
    }

    /// 403 unless the caller is granted the policy `name` with `labels` (`None`: there
    /// is no such policy), then 404 when there is none. The grant is checked first, and
    /// a missing policy has no labels, so a caller gets the same answer for a policy it
    /// is not granted and for a name that does not exist (only the audit record tells
    /// them apart); 404 is for names the caller would be granted (by name or `*`).
    pub fn grant_check(
        &self,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), Denial> {
        let none = BTreeMap::new();
        if self
            .caller
            .identity
            .may_access(name, labels.unwrap_or(&none))
        {
            return Ok(());
        }
        let d = self.forbidden(format!("is not granted policy {name}"));
        Err(match labels {
            Some(_) => d,
            None => {
                let detail = format!("{} (there is no policy of that name)", d.message);
                d.detail(detail)
            }
        })
    }

    /// 403 unless the caller may see something of `policy` (`what`: `rotation ID`,
    /// `request ID`); the answer does not name the policy.
    pub fn may_see(&self, policy: &str, what: &str) -> Result<(), Denial> {
        let labels = self
            .app
            .control
            .policy_meta(policy)
            .map(|m| m.labels)
            .unwrap_or_default();
        if self.caller.identity.may_access(policy, &labels) {
            Ok(())
        } else {
            Err(self.forbidden(format!("may not see {what}")))
        }
    }

    /// 403 for a compromise rotation asked by an identity without `compromise: true`.
    pub fn may_compromise(&self, compromise: bool) -> Result<(), Denial> {
        if compromise && !self.caller.identity.compromise {
            return Err(self.forbidden("may not request compromise rotations".into()));
        }
        Ok(())
    }

    /// A 403 "identity NAME {what}".
    pub fn forbidden(&self, what: String) -> Denial {
        Denial::new(
            StatusCode::FORBIDDEN,
            Outcome::Forbidden,
            format!("identity {} {what}", self.caller.identity.name),
        )
    }
}
