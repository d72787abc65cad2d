//! The status subresource and `metadata.generation` as a real API server keeps them.
//!
//! For a resource with a status subresource (Deployments, StatefulSets, DaemonSets, and
//! custom resources whose CRD declares `subresources.status`): a create drops `.status`;
//! an update, patch or apply of the main resource leaves `.status` as it was; a write to
//! `/status` changes `.status` only (and its field ownership).
//!
//! `metadata.generation` is 1 at create and grows by one with each change of the spec
//! (for custom resources: anything but `metadata` and `status`; for Deployments also the
//! annotations, which the real server copies to ReplicaSets), never with a status or
//! metadata-only change. Kinds a real server gives no generation (Secrets, ConfigMaps,
//! Leases, Events, …) have none. The backend bumps its own generation on every write, so
//! the front keeps the true generation per object (by uid) and puts it into every object
//! it answers ([`Generations::present`]).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Built-in kinds whose objects carry `metadata.generation` on a real server.
const GENERATION_KINDS: [&str; 14] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Pod",
    "CustomResourceDefinition",
    "NetworkPolicy",
    "Ingress",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ValidatingAdmissionPolicy",
];

/// Built-in `(group, plural)`s with a status subresource the front models.
const STATUS_RESOURCES: [(&str, &str); 3] = [
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
];

/// Whether the built-in `group/plural` has a status subresource the front models.
pub(super) fn builtin_has_status(group: &str, plural: &str) -> bool {
    STATUS_RESOURCES.contains(&(group, plural))
}

/// How a write is sent: what the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// A whole object (POST, PUT).
    Object,
    /// A merge, strategic merge or apply patch (a partial object).
    MergeLike,
    /// An RFC 6902 JSON patch (a list of operations).
    JsonPatch,
}

/// The body a write of a resource with a status subresource really makes: `status_write`
/// is a write to `/status`; `create` a POST; `before` the object as it is.
pub(super) fn shape(
    body: Value,
    kind: BodyKind,
    status_write: bool,
    create: bool,
    before: Option<&Value>,
) -> Value {
    match (kind, status_write) {
        (BodyKind::JsonPatch, _) => {
            let keep = |op: &Value| {
                let path = op["path"].as_str().unwrap_or_default();
                let under_status = path == "/status" || path.starts_with("/status/");
                under_status == status_write
            };
            Value::Array(
                body.as_array()
                    .into_iter()
                    .flatten()
                    .filter(|op| keep(op))
                    .cloned()
                    .collect(),
            )
        }
        (BodyKind::Object, false) => {
            let mut body = body;
            if let Some(map) = body.as_object_mut() {
                match before.and_then(|b| b.get("status")).filter(|_| !create) {
                    Some(status) => {
                        map.insert("status".into(), status.clone());
                    }
                    None => {
                        map.remove("status");
                    }
                }
            }
            body
        }
        (BodyKind::MergeLike, false) => {
            let mut body = body;
            if let Some(map) = body.as_object_mut() {
                map.remove("status");
            }
            body
        }
        (BodyKind::Object, true) => {
            // Everything but the status (and the version the client read) as it is.
            let mut object = before.cloned().unwrap_or_else(|| json!({}));
            object["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            if object["status"].is_null()
                && let Some(map) = object.as_object_mut()
            {
                map.remove("status");
            }
            if let Some(rv) = body.pointer("/metadata/resourceVersion") {
                object["metadata"]["resourceVersion"] = rv.clone();
            }
            object
        }
        (BodyKind::MergeLike, true) => {
            let mut kept = json!({});
            for key in ["apiVersion", "kind", "status"] {
                if let Some(value) = body.get(key) {
                    kept[key] = value.clone();
                }
            }
            for key in ["name", "namespace", "resourceVersion"] {
                if let Some(value) = body.pointer(&format!("/metadata/{key}")) {
                    kept["metadata"][key] = value.clone();
                }
            }
            kept
        }
    }
}

/// Whether the change from `before` to `after` is a spec change of `kind` (one that
/// bumps the generation).
pub(super) fn spec_changed(kind: &str, custom: bool, before: &Value, after: &Value) -> bool {
    let content = |object: &Value| -> Value {
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
            if !custom {
                map.retain(|key, _| key == "spec");
            }
        }
        object
    };
    if content(before) != content(after) {
        return true;
    }
    kind == "Deployment"
        && before.pointer("/metadata/annotations") != after.pointer("/metadata/annotations")
}

/// Whether `kind` is a custom resource kind (one of [`super::crd::STORAGE`]).
fn is_custom(kind: &str) -> bool {
    super::crd::STORAGE.iter().any(|(_, _, k, _)| *k == kind)
}

/// Whether objects of `kind` carry a generation (custom resources do).
fn has_generation(kind: &str) -> bool {
    is_custom(kind) || GENERATION_KINDS.contains(&kind)
}

/// The true generation of each object written through the front, by uid.
#[derive(Debug, Default)]
pub(super) struct Generations {
    by_uid: Mutex<HashMap<String, i64>>,
}

impl Generations {
    /// Records the generation of an object written (`before`: as it was, presented;
    /// `None` for a create) and answers it.
    pub(super) fn record(&self, before: Option<&Value>, after: &Value) -> Option<i64> {
        let kind = after
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !has_generation(kind) {
            return None;
        }
        let uid = after.pointer("/metadata/uid")?.as_str()?.to_owned();
        let generation = match before {
            None => 1,
            Some(before) => {
                let previous = before
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                previous + i64::from(spec_changed(kind, is_custom(kind), before, after))
            }
        };
        self.lock().insert(uid, generation);
        Some(generation)
    }

    /// Forgets a deleted object.
    pub(super) fn forget(&self, object: &Value) {
        if let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str) {
            self.lock().remove(uid);
        }
    }

    /// `object` (or each item of a list) as a real server shows it: the true generation,
    /// or none for kinds that have none.
    pub(super) fn present(&self, object: &mut Value) {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                self.present_one(item);
            }
            return;
        }
        self.present_one(object);
    }

    fn present_one(&self, object: &mut Value) {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "Status" || kind.is_empty() {
            return;
        }
        let keep = has_generation(kind);
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if !keep {
            meta.remove("generation");
        } else if let Some(generation) = uid.and_then(|uid| self.lock().get(&uid).copied()) {
            meta.insert("generation".into(), json!(generation));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_writes_keep_the_status_and_status_writes_keep_the_rest() {
        let before = json!({"metadata": {"name": "x", "resourceVersion": "4"},
                            "spec": {"a": 1}, "status": {"ready": false}});
        let put = json!({"metadata": {"name": "x"}, "spec": {"a": 2}, "status": {"ready": true}});
        let shaped = shape(put.clone(), BodyKind::Object, false, false, Some(&before));
        assert_eq!(shaped["status"], json!({"ready": false}));
        assert_eq!(shaped["spec"], json!({"a": 2}));
        let created = shape(put.clone(), BodyKind::Object, false, true, None);
        assert!(created.get("status").is_none());
        let status_put = shape(put, BodyKind::Object, true, false, Some(&before));
        assert_eq!(status_put["spec"], json!({"a": 1}));
        assert_eq!(status_put["status"], json!({"ready": true}));
        let patch =
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"a": 3}, "status": {"x": 1}});
        assert_eq!(
            shape(
                patch.clone(),
                BodyKind::MergeLike,
                true,
                false,
                Some(&before)
            ),
            json!({"status": {"x": 1}})
        );
        assert!(
            shape(patch, BodyKind::MergeLike, false, false, Some(&before))
                .get("status")
                .is_none()
        );
        let ops = json!([{"op": "replace", "path": "/spec/a", "value": 1},
                         {"op": "add", "path": "/status/x", "value": 1}]);
        assert_eq!(
            shape(ops, BodyKind::JsonPatch, true, false, None),
            json!([{"op": "add", "path": "/status/x", "value": 1}])
        );
    }

    #[test]
    fn generation_follows_spec_changes_only() {
        let generations = Generations::default();
        let v1 = json!({"kind": "Deployment", "metadata": {"uid": "u", "labels": {}}, "spec": {"replicas": 1}});
        assert_eq!(generations.record(None, &v1), Some(1));
        let mut labelled = v1.clone();
        labelled["metadata"]["labels"]["a"] = json!("b");
        labelled["status"] = json!({"readyReplicas": 1});
        let mut before = v1.clone();
        before["metadata"]["generation"] = json!(1);
        assert_eq!(generations.record(Some(&before), &labelled), Some(1));
        let mut scaled = labelled.clone();
        scaled["spec"]["replicas"] = json!(2);
        assert_eq!(generations.record(Some(&before), &scaled), Some(2));
        let mut shown = json!({"kind": "Deployment", "metadata": {"uid": "u", "generation": 9}});
        generations.present(&mut shown);
        assert_eq!(shown["metadata"]["generation"], 2);
        let mut secret = json!({"kind": "Secret", "metadata": {"uid": "s", "generation": 3}});
        generations.present(&mut secret);
        assert!(secret["metadata"].get("generation").is_none());
        assert_eq!(generations.record(None, &secret), None);
    }
}
