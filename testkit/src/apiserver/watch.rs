//! Watch streams, served from the [`Feed`] as a real API server serves them: a chunked
//! response of JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`.
//!
//! Supported: `?watch=true` and the legacy `/watch/` paths, a collection in one namespace
//! or in all of them, `resourceVersion` to start after (unset or `0`: the current objects
//! as `ADDED` first), `timeoutSeconds`, `allowWatchBookmarks` (a `BOOKMARK` every few
//! seconds), `sendInitialEvents` (the initial `ADDED` events end with a bookmark annotated
//! `k8s.io/initial-events-end`), `labelSelector` and `fieldSelector` (an object that
//! starts or stops matching arrives as `ADDED` or `DELETED`). A `resourceVersion` older
//! than the log is answered with an `ERROR` event holding a `410 Expired` Status, which
//! makes kube's watcher and client-go's reflector list again.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use kube_fake_client::label_selector;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::feed::{self, Change, ChangeType, Feed, Resource, ResourcePath};
use super::status::Generations;
use super::{ReplyBody, status_body};

/// How long a watch lasts when the client sets no `timeoutSeconds` (a real server picks
/// 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(3);

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The current objects as `ADDED`, then what follows.
    Now,
    /// The changes after this `resourceVersion`.
    After(u64),
}

/// One field-selector requirement: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldRequirement {
    field: String,
    equal: bool,
    value: String,
}

/// A parsed watch request.
#[derive(Debug, Clone)]
pub(super) struct WatchRequest {
    resource: Resource,
    kind: &'static str,
    namespace: Option<String>,
    labels: Option<String>,
    fields: Vec<FieldRequirement>,
    start: Start,
    timeout: Duration,
    bookmarks: bool,
    initial_events: bool,
}

/// Why a watch request is refused: the status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl WatchRequest {
    /// Parses the path and query of a watch; `Err` is a 400 or a 404.
    pub(super) fn parse(path: &str, query: Option<&str>) -> Result<WatchRequest, Refusal> {
        let bad = |message: String| Refusal {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message,
        };
        let not_found = |what: &str| Refusal {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({what})"),
        };
        let parsed = ResourcePath::parse(path).filter(|p| p.subresource.is_none());
        let Some(parsed) = parsed else {
            return Err(not_found(path));
        };
        let Some(kind) = parsed.resource.kind() else {
            return Err(not_found(&parsed.resource.plural));
        };
        let mut request = WatchRequest {
            resource: parsed.resource,
            kind,
            namespace: parsed.namespace,
            labels: None,
            fields: Vec::new(),
            start: Start::Now,
            timeout: DEFAULT_TIMEOUT,
            bookmarks: false,
            initial_events: false,
        };
        if let Some(name) = parsed.name {
            // The legacy `/watch/…/NAME` path: one object.
            request.fields.push(FieldRequirement {
                field: "metadata.name".into(),
                equal: true,
                value: name,
            });
        }
        for (key, value) in url_pairs(query.unwrap_or_default()) {
            match key.as_str() {
                "resourceVersion" => {
                    request.start = match value.as_str() {
                        "" | "0" => Start::Now,
                        rv => Start::After(rv.parse().map_err(|_| {
                            bad(format!("invalid resourceVersion {rv:?}: not a number"))
                        })?),
                    }
                }
                "timeoutSeconds" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| bad(format!("invalid timeoutSeconds {value:?}")))?;
                    request.timeout = Duration::from_secs(secs);
                }
                "allowWatchBookmarks" => request.bookmarks = value == "true",
                "sendInitialEvents" => request.initial_events = value == "true",
                "labelSelector" if !value.is_empty() => {
                    label_selector::parse_label_selector(&value)
                        .map_err(|e| bad(format!("invalid labelSelector {value:?}: {e}")))?;
                    request.labels = Some(value);
                }
                "fieldSelector" if !value.is_empty() => {
                    request.fields.extend(
                        parse_field_selector(&value)
                            .ok_or_else(|| bad(format!("invalid fieldSelector {value:?}")))?,
                    );
                }
                _ => {}
            }
        }
        if request.initial_events {
            // As a real server: initial events only for "any version" (unset or 0).
            request.start = Start::Now;
        }
        Ok(request)
    }

    /// Whether `object` is in this watch's namespace and matches its selectors.
    fn selects(&self, object: &Value) -> bool {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        if let Some(selector) = &self.labels {
            let labels: BTreeMap<String, String> = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            if !label_selector::matches_label_selector(&labels, selector).unwrap_or(false) {
                return false;
            }
        }
        fields_match(&self.fields, object)
    }

    /// The event a watcher of this request sees for `change`, if any.
    fn event_for<'c>(&self, change: &'c Change) -> Option<(&'static str, &'c Value)> {
        if change.resource != self.resource {
            return None;
        }
        let now = self.selects(&change.object);
        let kind = match change.change {
            ChangeType::Added if now => "ADDED",
            ChangeType::Deleted if now => "DELETED",
            ChangeType::Modified => {
                let before = change.previous.as_ref().is_none_or(|p| self.selects(p));
                match (before, now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            _ => return None,
        };
        Some((kind, &change.object))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": self.kind, "apiVersion": self.resource.api_version(), "metadata": metadata}),
        )
    }
}

/// Serves a parsed watch: a 200 whose body the returned task fills until the timeout,
/// the client leaving, or an `ERROR` event.
pub(super) fn respond(
    feed: Arc<Feed>,
    backend: kube::Client,
    generations: Arc<Generations>,
    request: WatchRequest,
) -> Response<ReplyBody> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(run(feed, backend, generations, request, sender));
    let mut response = Response::new(LineBody { receiver }.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Fills one watch stream.
async fn run(
    feed: Arc<Feed>,
    backend: kube::Client,
    generations: Arc<Generations>,
    request: WatchRequest,
    out: mpsc::Sender<Bytes>,
) {
    let deadline = tokio::time::sleep(request.timeout);
    tokio::pin!(deadline);
    let mut wake = feed.subscribe();
    let mut position = match request.start {
        Start::After(rv) => rv,
        Start::Now => {
            let (head, objects) = {
                let _shared = feed.read().await;
                let head = feed.head();
                let path = request
                    .resource
                    .backend_collection(request.namespace.as_deref());
                let listed = feed::call(
                    &backend,
                    http::Method::GET,
                    &path,
                    "application/json",
                    String::new(),
                )
                .await;
                (head, listed)
            };
            let items = match objects {
                Ok((code, mut list)) if code.is_success() => {
                    generations.present(&mut list);
                    list.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                }
                Ok((code, body)) => {
                    let _ = out.send(line("ERROR", &body_or_status(code, body))).await;
                    return;
                }
                Err(message) => {
                    let _ = out
                        .send(line("ERROR", &status_body(500, "InternalError", &message)))
                        .await;
                    return;
                }
            };
            for object in items.iter().filter(|o| request.selects(o)) {
                if out.send(line("ADDED", object)).await.is_err() {
                    return;
                }
            }
            if request.initial_events && out.send(request.bookmark(head, true)).await.is_err() {
                return;
            }
            head
        }
    };
    let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
    bookmarks.reset();
    loop {
        wake.borrow_and_update();
        let (changes, head) = match feed.since(position) {
            Ok(found) => found,
            Err(expired) => {
                let message = format!("too old resource version: {position} ({})", expired.oldest);
                let _ = out
                    .send(line("ERROR", &status_body(410, "Expired", &message)))
                    .await;
                return;
            }
        };
        for change in &changes {
            if let Some((kind, object)) = request.event_for(change)
                && out.send(line(kind, object)).await.is_err()
            {
                return;
            }
        }
        position = head;
        tokio::select! {
            () = out.closed() => return,
            () = &mut deadline => return,
            changed = wake.changed() => if changed.is_err() { return },
            _ = bookmarks.tick(), if request.bookmarks => {
                if out.send(request.bookmark(position, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One watch event as a JSON line.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn body_or_status(code: StatusCode, body: Value) -> Value {
    if body.get("kind").and_then(Value::as_str) == Some("Status") {
        body
    } else {
        status_body(code.as_u16(), "InternalError", "listing the objects failed")
    }
}

/// The body of a watch response: the lines the task sends, until it stops.
struct LineBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for LineBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|line| line.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Whether `object` meets every field-selector requirement.
pub(super) fn fields_match(fields: &[FieldRequirement], object: &Value) -> bool {
    fields.iter().all(|r| {
        let found = field_value(object, &r.field).unwrap_or_default();
        (found == r.value) == r.equal
    })
}

/// `field=value`, `field==value` and `field!=value` requirements, comma-separated.
pub(super) fn parse_field_selector(selector: &str) -> Option<Vec<FieldRequirement>> {
    selector
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|requirement| {
            let (field, equal, value) = if let Some((f, v)) = requirement.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = requirement.split_once("==") {
                (f, true, v)
            } else {
                let (f, v) = requirement.split_once('=')?;
                (f, true, v)
            };
            let field = field.trim();
            (!field.is_empty()).then(|| FieldRequirement {
                field: field.to_owned(),
                equal,
                value: value.trim().to_owned(),
            })
        })
        .collect()
}

/// The value at a dotted field path (`metadata.name`, `type`, `status.phase`) as text.
fn field_value(object: &Value, field: &str) -> Option<String> {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decoded `key=value` pairs of a query string.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
