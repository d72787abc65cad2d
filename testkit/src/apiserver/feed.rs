//! The change feed behind watches: every successful write that passes through the HTTP
//! front is recorded, with the `resourceVersion` it produced, in a bounded in-memory log,
//! and watchers are woken through a `tokio::sync::watch` channel (no polling).
//!
//! The backend (`kube-fake-client`) has no change feed of its own, so the front
//! serialises writes behind a gate: a write holds it exclusively from its first backend
//! call until its change is logged, and a list holds it shared, so a list's
//! `resourceVersion` is exactly the last change it reflects. Resource versions come from
//! the backend's single counter; a deletion does not advance it there, so the front
//! advances it by touching a hidden clock object and gives the `DELETED` event that
//! version, as a real API server does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use kube_fake_client::discovery as known;
use serde_json::{Value, json};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, watch};

use super::{NAMESPACES_ALIAS, backend_path};

/// How many changes the log keeps; a watch from an older `resourceVersion` gets
/// `410 Gone` (reason `Expired`), as from a real API server whose history was compacted.
pub(super) const LOG_CAPACITY: usize = 10_000;

/// Plural of the hidden clock resource (see [`Clock`]).
const CLOCK_PLURAL: &str = "zz-fake-clocks";
/// Where the clock object lives.
const CLOCK_PATH: &str = "/api/v1/namespaces/kube-system/zz-fake-clocks/clock";

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeType {
    /// Created.
    Added,
    /// Updated or patched.
    Modified,
    /// Deleted.
    Deleted,
}

/// A collection as clients name it: group, version and plural (`namespaces`, never the
/// backend's alias).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
}

impl Resource {
    /// The object kind served under this collection, if the fake knows it.
    pub(super) fn kind(&self) -> Option<&'static str> {
        known::plural_to_kind(&self.group, &self.version, &self.plural)
            .or_else(|| super::crd::storage_kind(&self.group, &self.version, &self.plural))
    }

    /// Whether this is a built-in resource (not one a CRD defines).
    pub(super) fn is_builtin(&self) -> bool {
        known::plural_to_kind(&self.group, &self.version, &self.plural).is_some()
    }

    /// `v1` or `GROUP/VERSION`.
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The backend path of the collection, in `namespace` when given.
    pub(super) fn backend_collection(&self, namespace: Option<&str>) -> String {
        let mut path = if self.group.is_empty() {
            format!("/api/{}/", self.version)
        } else {
            format!("/apis/{}/{}/", self.group, self.version)
        };
        if let Some(ns) = namespace {
            path.push_str(&format!("namespaces/{ns}/"));
        }
        path.push_str(&self.plural);
        backend_path(&path)
    }
}

/// A resource request path taken apart: `/api/v1/namespaces/NS/secrets/NAME/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ResourcePath {
    pub(super) resource: Resource,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
    /// Whether the path had the legacy `/watch/` segment after the version.
    pub(super) legacy_watch: bool,
}

impl ResourcePath {
    /// Parses a client path (`namespaces`, not the alias); `None` for anything that is not
    /// a resource path.
    pub(super) fn parse(path: &str) -> Option<ResourcePath> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, mut rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let legacy_watch = rest.first() == Some(&"watch");
        if legacy_watch {
            rest = &rest[1..];
        }
        let core = group.is_empty();
        let (namespace, plural, name, subresource) = match rest {
            ["namespaces"] => (None, "namespaces", None, None),
            ["namespaces", name] => (None, "namespaces", Some(*name), None),
            ["namespaces", name, sub] if core && matches!(*sub, "status" | "finalize") => {
                (None, "namespaces", Some(*name), Some(*sub))
            }
            ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (
                Some(*ns),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            ),
            [plural, tail @ ..] if tail.len() <= 2 && *plural != "namespaces" => {
                (None, *plural, tail.first().copied(), tail.get(1).copied())
            }
            _ => return None,
        };
        Some(ResourcePath {
            resource: Resource {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
            },
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
            legacy_watch,
        })
    }
}

/// One logged change.
#[derive(Debug)]
pub(super) struct Change {
    /// The `resourceVersion` the change produced.
    pub(super) rv: u64,
    pub(super) change: ChangeType,
    pub(super) resource: Resource,
    /// The object after the change (for a deletion: as it was, with the deletion's
    /// `resourceVersion`).
    pub(super) object: Value,
    /// The object before a modification, so selector watches can tell an object that
    /// starts or stops matching.
    pub(super) previous: Option<Value>,
}

/// A watch asked for changes the log no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expired {
    /// The oldest `resourceVersion` a watch can still start from.
    pub(super) oldest: u64,
}

struct Log {
    changes: VecDeque<Arc<Change>>,
    /// Every change with a `resourceVersion` above this is in `changes`.
    floor: u64,
    capacity: usize,
}

/// The change log of one server, its write gate and its wake-up channel.
pub(super) struct Feed {
    gate: RwLock<()>,
    log: Mutex<Log>,
    head: watch::Sender<u64>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed starting at the backend's current `resourceVersion` (read by creating or
    /// touching the clock object), keeping `capacity` changes.
    pub(super) async fn start(backend: &kube::Client, capacity: usize) -> Result<Feed, String> {
        let clock = json!({
            "apiVersion": "v1",
            "kind": Clock::KIND,
            "metadata": {"name": "clock", "namespace": "kube-system"}
        });
        let created = call(
            backend,
            Method::POST,
            CLOCK_PATH.trim_end_matches("/clock"),
            "application/json",
            clock.to_string(),
        )
        .await?;
        let head = match created {
            (code, object) if code.is_success() => resource_version(&object),
            _ => tick(backend).await,
        }
        .ok_or("the backend gave the clock object no resourceVersion")?;
        let (sender, _) = watch::channel(head);
        Ok(Feed {
            gate: RwLock::new(()),
            log: Mutex::new(Log {
                changes: VecDeque::new(),
                floor: head,
                capacity: capacity.max(1),
            }),
            head: sender,
        })
    }

    /// Held by a write from its first backend call until its change is recorded.
    pub(super) async fn write(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Held by a list (or the start of a watch) so no write is half-recorded meanwhile.
    pub(super) async fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// The `resourceVersion` of the last recorded change (or of the start).
    pub(super) fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that is woken whenever a change is recorded.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Logs a change (call with the write gate held) and wakes every watcher.
    pub(super) fn record(&self, change: Change) {
        let rv = change.rv;
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.changes.push_back(Arc::new(change));
            while log.changes.len() > log.capacity {
                if let Some(old) = log.changes.pop_front() {
                    log.floor = old.rv;
                }
            }
        }
        self.head.send_modify(|head| *head = (*head).max(rv));
    }

    /// The changes after `rv` and the head they reach, or [`Expired`] when changes after
    /// `rv` were dropped from the log already.
    pub(super) fn since(&self, rv: u64) -> Result<(Vec<Arc<Change>>, u64), Expired> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if rv < log.floor {
            return Err(Expired { oldest: log.floor });
        }
        let start = log.changes.partition_point(|c| c.rv <= rv);
        let changes: Vec<Arc<Change>> = log.changes.range(start..).cloned().collect();
        let head = changes.last().map_or(rv.max(log.floor), |c| c.rv.max(rv));
        Ok((changes, head))
    }
}

/// Advances the backend's `resourceVersion` counter by touching the clock object and
/// answers the version it reached.
pub(super) async fn tick(backend: &kube::Client) -> Option<u64> {
    let (code, object) = call(
        backend,
        Method::PATCH,
        CLOCK_PATH,
        "application/merge-patch+json",
        "{}".to_owned(),
    )
    .await
    .ok()?;
    code.is_success()
        .then(|| resource_version(&object))
        .flatten()
}

/// An object's `metadata.resourceVersion` as a number.
pub(super) fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
}

/// The object or list at `path` in the backend; `None` when it is not there.
pub(super) async fn get(backend: &kube::Client, path: &str) -> Option<Value> {
    match call(
        backend,
        Method::GET,
        path,
        "application/json",
        String::new(),
    )
    .await
    {
        Ok((code, object)) if code.is_success() => Some(object),
        _ => None,
    }
}

/// One JSON request to the backend; the status and the parsed body (`Null` when the body
/// is not JSON). `Err` when the backend refused the request outright.
pub(super) async fn call(
    backend: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: String,
) -> Result<(StatusCode, Value), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(kube::client::Body::from(body.into_bytes()))
        .map_err(|e| format!("bad request to the backend: {e}"))?;
    let response = backend.send(request).await.map_err(|e| e.to_string())?;
    let code = response.status();
    let bytes: Bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// The hidden resource whose one object advances the backend's `resourceVersion` when a
/// deletion needs a version of its own (kind `FakeClock`, plural [`CLOCK_PLURAL`]; not in
/// discovery, never logged).
pub(super) struct Clock {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

impl Clock {
    const KIND: &'static str = "FakeClock";
}

impl kube::Resource for Clock {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        Clock::KIND.into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        CLOCK_PLURAL.into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// Whether a client path names the backend's private aliases (never served to clients).
pub(super) fn is_private(path: &str) -> bool {
    path.contains(CLOCK_PLURAL) || path.contains(NAMESPACES_ALIAS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rv: u64) -> Change {
        Change {
            rv,
            change: ChangeType::Added,
            resource: Resource {
                group: String::new(),
                version: "v1".into(),
                plural: "secrets".into(),
            },
            object: json!({}),
            previous: None,
        }
    }

    fn feed(head: u64, capacity: usize) -> Feed {
        let (sender, _) = watch::channel(head);
        Feed {
            gate: RwLock::new(()),
            log: Mutex::new(Log {
                changes: VecDeque::new(),
                floor: head,
                capacity,
            }),
            head: sender,
        }
    }

    #[test]
    fn changes_after_a_version_and_expiry_of_dropped_ones() {
        let feed = feed(10, 3);
        let (none, head) = feed.since(10).unwrap();
        assert!(none.is_empty());
        assert_eq!(head, 10);
        for rv in [11, 13, 14, 17] {
            feed.record(change(rv));
        }
        assert_eq!(feed.head(), 17);
        // 11 was dropped: a watch from 10 missed it, one from 11 did not.
        assert_eq!(feed.since(10).unwrap_err(), Expired { oldest: 11 });
        let (after, head) = feed.since(11).unwrap();
        assert_eq!(after.iter().map(|c| c.rv).collect::<Vec<_>>(), [13, 14, 17]);
        assert_eq!(head, 17);
        let (after, _) = feed.since(14).unwrap();
        assert_eq!(after.iter().map(|c| c.rv).collect::<Vec<_>>(), [17]);
        assert!(feed.since(99).unwrap().0.is_empty());
    }

    #[test]
    fn resource_paths_are_taken_apart() {
        let p = ResourcePath::parse("/api/v1/namespaces/ns/secrets/s").unwrap();
        assert_eq!(
            (
                p.resource.plural.as_str(),
                p.namespace.as_deref(),
                p.name.as_deref()
            ),
            ("secrets", Some("ns"), Some("s"))
        );
        let p = ResourcePath::parse("/apis/apps/v1/namespaces/ns/deployments/d/status").unwrap();
        assert_eq!(p.resource.api_version(), "apps/v1");
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = ResourcePath::parse("/api/v1/namespaces/x").unwrap();
        assert_eq!(
            (p.resource.plural.as_str(), p.name.as_deref(), p.namespace),
            ("namespaces", Some("x"), None)
        );
        let p = ResourcePath::parse("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = ResourcePath::parse("/api/v1/watch/namespaces/ns/secrets").unwrap();
        assert!(p.legacy_watch && p.name.is_none());
        let p = ResourcePath::parse("/apis/coordination.k8s.io/v1/leases").unwrap();
        assert_eq!((p.namespace, p.name), (None, None));
        assert!(ResourcePath::parse("/version").is_none());
        assert!(ResourcePath::parse("/api/v1").is_none());
    }
}
