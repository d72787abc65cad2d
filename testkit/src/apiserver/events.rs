//! Events as a real API server serves them.
//!
//! `events.k8s.io/v1` Events are created, read, listed, patched (a series update) and
//! watched like any object; a create is validated as the real server validates the new
//! API's Events (`eventTime`, `reportingController`, `reportingInstance`, `action`,
//! `reason` required, `type` `Normal` or `Warning`, the deprecated fields unset, a series
//! counting at least 2), with the real messages. Lists of Events (both APIs) are filtered
//! by any field selector on dotted paths (`regarding.name`, `regarding.kind`,
//! `involvedObject.name`, `reason`, `type`, …) in the front, since the backend knows only
//! the core API's `involvedObject.*` fields.
//!
//! A real server stores one Event and serves it through both APIs, converted. Here the
//! two APIs keep separate objects, and lists of the core API (`/api/v1/events`, what
//! `kubectl describe` and `kubectl get events` read) also hold the `events.k8s.io/v1`
//! Events, converted as the real server converts them (`regarding` → `involvedObject`,
//! `note` → `message`, `reportingController` → `reportingComponent`, `deprecated*` →
//! `source`, `firstTimestamp`, `lastTimestamp`, `count`).
//!
//! Limits: the conversion is for core lists only (a get or watch of `/api/v1/events`
//! sees only core Events, and `events.k8s.io/v1` shows no core Events).

use serde_json::Value;

use super::feed;
use super::schema::FieldError;

/// Field renames from `events.k8s.io/v1` to the core API.
const TO_CORE: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// An `events.k8s.io/v1` Event as the core API shows it.
pub(super) fn to_core(event: &Value) -> Value {
    let mut core = event.clone();
    if let Some(map) = core.as_object_mut() {
        map.insert("apiVersion".into(), Value::String("v1".into()));
        for (from, to) in TO_CORE {
            if let Some(value) = map.remove(from) {
                map.insert(to.into(), value);
            }
        }
    }
    core
}

/// A core Event list (`bytes`, from the backend path `path`) with the `events.k8s.io/v1`
/// Events of the same namespace (or all) added, converted.
pub(super) async fn with_new_api(
    backend: &kube::Client,
    path: &str,
    bytes: bytes::Bytes,
) -> bytes::Bytes {
    let Ok(mut list) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let path = path.split('?').next().unwrap_or(path);
    let Some(rest) = path.strip_prefix("/api/v1") else {
        return bytes;
    };
    let new_api = format!("/apis/events.k8s.io/v1{rest}");
    let added: Vec<Value> = feed::get(backend, &new_api)
        .await
        .and_then(|l| l.get("items").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .map(to_core)
        .collect();
    if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
        items.extend(added);
    }
    bytes::Bytes::from(list.to_string())
}

/// Longest `reason`, `action` and `reportingInstance` the real server accepts.
const SHORT_LIMIT: usize = 128;
/// Longest `note` the real server accepts (the internal field is `message`).
const NOTE_LIMIT: usize = 1024;

/// Whether `group/plural` is one of the two Event APIs.
pub(super) fn is_events(group: &str, plural: &str) -> bool {
    plural == "events" && (group.is_empty() || group == "events.k8s.io")
}

/// The field errors of an `events.k8s.io/v1` create in `namespace`, named as the real
/// server names them (it validates the internal, core-shaped Event).
pub(super) fn validate_create(event: &Value, namespace: Option<&str>) -> Vec<FieldError> {
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut errors = Vec::new();
    let required = |field: &str| FieldError {
        field: field.to_owned(),
        detail: "Required value".to_owned(),
        reason: "FieldValueRequired",
    };
    let invalid = |field: &str, detail: String| FieldError {
        field: field.to_owned(),
        detail: format!("Invalid value: \"\": {detail}"),
        reason: "FieldValueInvalid",
    };
    let namespace = namespace
        .or_else(|| event.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or_default();
    let regarding_ns = event
        .pointer("/regarding/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if regarding_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        errors.push(FieldError {
            field: "involvedObject.namespace".to_owned(),
            detail: "Invalid value: \"\": does not match event.namespace".to_owned(),
            reason: "FieldValueInvalid",
        });
    }
    for (key, field, limit) in [
        ("reportingController", "reportingController", usize::MAX),
        ("reportingInstance", "reportingInstance", SHORT_LIMIT),
        ("action", "action", SHORT_LIMIT),
        ("reason", "reason", SHORT_LIMIT),
    ] {
        let value = text(key);
        if value.is_empty() {
            errors.push(required(field));
        } else if value.len() > limit {
            errors.push(invalid(
                field,
                format!("can have at most {limit} characters"),
            ));
        }
    }
    if text("note").len() > NOTE_LIMIT {
        errors.push(invalid(
            "message",
            format!("can have at most {NOTE_LIMIT} characters"),
        ));
    }
    if let Some(series) = event.get("series").filter(|s| !s.is_null()) {
        let count = series
            .get("count")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        if count < 2 {
            errors.push(FieldError {
                field: "series.count".to_owned(),
                detail: format!("Invalid value: {count}: should be at least 2"),
                reason: "FieldValueInvalid",
            });
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errors.push(required("series.lastObservedTime"));
        }
    }
    if event.get("eventTime").is_none_or(Value::is_null) {
        errors.push(required("eventTime"));
    }
    let kind = text("type");
    if kind != "Normal" && kind != "Warning" {
        errors.push(invalid("type", format!("has invalid value: {kind}")));
    }
    for (key, field) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
    ] {
        let set = event.get(key).is_some_and(|v| {
            !(v.is_null() || v == 0 || v.as_object().is_some_and(serde_json::Map::is_empty))
        });
        if set {
            errors.push(invalid(field, "needs to be unset".to_owned()));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_api_events_convert_to_the_core_shape() {
        let core = to_core(&json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "regarding": {"kind": "Secret"}, "note": "n", "reportingController": "rotor",
            "series": {"count": 2}}));
        assert_eq!(
            core,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"kind": "Secret"},
                   "message": "n", "reportingComponent": "rotor", "series": {"count": 2}})
        );
    }

    #[test]
    fn a_new_api_event_needs_its_fields() {
        let event = json!({"metadata": {"name": "e", "namespace": "ns"},
                           "regarding": {"kind": "RotationPolicy", "name": "p", "namespace": "ns"},
                           "type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z",
                           "reportingController": "rotor", "reportingInstance": "rotor-0",
                           "action": "Rotate", "reason": "Rotated", "note": "ok"});
        assert!(validate_create(&event, Some("ns")).is_empty());
        let mut bad = event.clone();
        bad.as_object_mut().unwrap().remove("eventTime");
        bad["type"] = json!("Info");
        bad["series"] = json!({"count": 1});
        let lines: Vec<String> = validate_create(&bad, Some("ns"))
            .iter()
            .map(FieldError::line)
            .collect();
        assert_eq!(
            lines,
            [
                "series.count: Invalid value: 1: should be at least 2",
                "series.lastObservedTime: Required value",
                "eventTime: Required value",
                "type: Invalid value: \"\": has invalid value: Info",
            ]
        );
    }
}
