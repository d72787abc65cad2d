//! Secrets as a real API server stores them: `stringData` is write-only. A Secret written
//! with `stringData` (create, update, any patch or server-side apply) is stored with
//! those keys base64-encoded in `data` (a `stringData` key wins over the same `data`
//! key), and no `stringData` is stored or returned.
//!
//! Field ownership follows the versioned object the client sent, before the fold, as on a
//! real server: the writer owns `f:stringData.f:KEY`, not `f:data.f:KEY`. For a
//! server-side apply the backend records that already; for the other writes (operation
//! `Update`, manager from `fieldManager` or the User-Agent's first word) this module
//! records it, taking those paths from every other manager. The entry outlives the fold
//! (the stored object never has `stringData`, so nothing ever prunes it), which is why a
//! later apply of `data.KEY` by another manager does not conflict, and why the first
//! manager's next `stringData` write puts its own value back.
//!
//! Limit: other fields written by an `Update` are not recorded as owned (the backend
//! records ownership for server-side apply only).

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The merge patch that turns a just-written Secret into what a real server stores, or
/// `None` when it has no `stringData`. `update_manager` is the writer of a non-apply
/// write (whose ownership this records); `None` for a server-side apply; `now` is the
/// entry's time (`%Y-%m-%dT%H:%M:%SZ`).
pub(super) fn fold(object: &Value, update_manager: Option<&str>, now: &str) -> Option<Value> {
    let string_data = object.get("stringData")?;
    let mut data = object
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut keys = Vec::new();
    for (key, value) in string_data.as_object().into_iter().flatten() {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        data.insert(
            key.clone(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
        keys.push(key.clone());
    }
    let mut patch = json!({
        "stringData": null,
        "data": if data.is_empty() { Value::Null } else { Value::Object(data) },
        "metadata": {"resourceVersion": object.pointer("/metadata/resourceVersion").cloned()},
    });
    if let Some(manager) = update_manager.filter(|_| !keys.is_empty()) {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        patch["metadata"]["managedFields"] =
            Value::Array(record_update(entries, manager, &keys, now));
    }
    Some(patch)
}

/// `managedFields` after `manager` wrote `stringData` `keys` with an `Update`: its Update
/// entry owns them (added to what it owned), every other entry of the main resource
/// loses them (and goes when it owns nothing any more).
fn record_update(entries: Vec<Value>, manager: &str, keys: &[String], now: &str) -> Vec<Value> {
    let owned: Map<String, Value> = keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
    let mut result = Vec::with_capacity(entries.len() + 1);
    let mut recorded = false;
    for mut entry in entries {
        let main = entry
            .get("subresource")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty();
        if !main {
            result.push(entry);
            continue;
        }
        let mine = entry.get("manager").and_then(Value::as_str) == Some(manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Update");
        let Some(fields) = entry.get_mut("fieldsV1").and_then(Value::as_object_mut) else {
            result.push(entry);
            continue;
        };
        let string_data = fields
            .entry("f:stringData")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(string_data) = string_data {
            for (key, leaf) in &owned {
                if mine {
                    string_data.insert(key.clone(), leaf.clone());
                } else {
                    string_data.remove(key);
                }
            }
        }
        if fields
            .get("f:stringData")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            fields.remove("f:stringData");
        }
        if mine {
            recorded = true;
            entry["time"] = json!(now);
        } else if fields.is_empty() {
            continue;
        }
        result.push(entry);
    }
    if !recorded {
        result.push(json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": "v1",
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:stringData": owned},
        }));
    }
    result
}

/// `pruned` with `original`'s `f:stringData` put back: ownership of `stringData` keys
/// stays although the stored object never has `stringData`.
pub(super) fn keep_string_data(
    original: &Map<String, Value>,
    mut pruned: Map<String, Value>,
) -> Map<String, Value> {
    if let Some(owned) = original.get("f:stringData") {
        pruned.insert("f:stringData".to_owned(), owned.clone());
    }
    pruned
}

/// The manager of a non-apply write, as a real server names it: the `fieldManager`
/// parameter, else the User-Agent up to its first `/` (printable characters, at most 128).
pub(super) fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(manager) = field_manager.filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    user_agent
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn string_data_wins_and_is_dropped() {
        let object = json!({
            "metadata": {"resourceVersion": "7"},
            "data": {"a": b64("old"), "b": b64("kept")},
            "stringData": {"a": "new", "c": "added"}
        });
        let patch = fold(&object, None, "t").unwrap();
        assert_eq!(patch["stringData"], Value::Null);
        assert_eq!(
            patch["data"],
            json!({"a": b64("new"), "b": b64("kept"), "c": b64("added")})
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert!(patch["metadata"].get("managedFields").is_none());
        assert!(fold(&json!({"data": {}}), Some("x"), "t").is_none());
    }

    #[test]
    fn an_update_owns_its_string_data_keys_and_takes_them_from_others() {
        let object = json!({
            "metadata": {"resourceVersion": "3", "managedFields": [
                {"manager": "rotor", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}},
                {"manager": "old", "operation": "Update", "fieldsV1": {"f:stringData": {"f:k": {}}}},
                {"manager": "ops", "operation": "Update", "fieldsV1": {"f:stringData": {"f:j": {}}}}
            ]},
            "stringData": {"k": "v"}
        });
        let patch = fold(&object, Some("ops"), "now").unwrap();
        let entries = patch["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0]["fieldsV1"], json!({"f:data": {"f:k": {}}}));
        assert_eq!(entries[1]["manager"], "ops");
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:stringData": {"f:j": {}, "f:k": {}}})
        );
        assert_eq!(entries[1]["time"], "now");

        let fresh = fold(
            &json!({"metadata": {}, "stringData": {"k": "v"}}),
            Some("kubectl-create"),
            "t",
        )
        .unwrap();
        assert_eq!(
            fresh["metadata"]["managedFields"][0],
            json!({"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                   "time": "t", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:stringData": {"f:k": {}}}})
        );
    }

    #[test]
    fn managers_are_named_like_a_real_server_names_them() {
        assert_eq!(
            manager_name(Some("kubectl-patch"), Some("kubectl/v1")),
            "kubectl-patch"
        );
        assert_eq!(
            manager_name(None, Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc")),
            "kubectl"
        );
        assert_eq!(manager_name(Some(""), None), "");
    }
}
