//! `Table` responses for custom resources, as a real API server gives `kubectl get`
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): a `Name` column, then the
//! CRD version's `additionalPrinterColumns` (or `Age` when it declares none), each cell
//! evaluated from its `jsonPath`. Supported paths: dotted fields (`.spec.credential.type`),
//! indexes (`.items[0]`) and filters (`.status.conditions[?(@.type=="Ready")].reason`);
//! the first match is shown. `date` cells are ages as the real server writes them (`5m`,
//! `3h2m`, `<invalid>` for a time more than a second ahead); `string` cells show other
//! values as JSON. Rows carry the object's metadata (`includeObject=Metadata`, the
//! default), the whole object (`Object`) or nothing (`None`).
//!
//! Limit: lists and gets only; a watch asking for Tables gets plain objects.

use serde_json::{Value, json};

use super::crd::Served;

/// Whether an `Accept` header asks for a `Table` (`as=Table`).
pub(super) fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
}

/// The `Table` of a custom resource object or list, `now` in seconds since the epoch,
/// `include` the `includeObject` parameter.
pub(super) fn render(served: &Served, object: &Value, include: &str, now: i64) -> Value {
    let default_age =
        [json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})];
    let columns: &[Value] = if served.columns.is_empty() {
        &default_age
    } else {
        &served.columns
    };
    let mut definitions = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for column in columns {
        definitions.push(json!({
            "name": column["name"],
            "type": column["type"],
            "format": column.get("format").cloned().unwrap_or(json!("")),
            "description": column.get("description").cloned().unwrap_or(json!("")),
            "priority": column.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let items: Vec<&Value> = match object.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![object],
    };
    let rows: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let mut cells = vec![
                item.pointer("/metadata/name")
                    .cloned()
                    .unwrap_or(Value::Null),
            ];
            for column in columns {
                let path = column["jsonPath"].as_str().unwrap_or_default();
                let kind = column["type"].as_str().unwrap_or("string");
                cells.push(cell(kind, first_match(item, path), now));
            }
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = item.clone(),
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]});
                }
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = object.pointer("/metadata/resourceVersion") {
        metadata["resourceVersion"] = rv.clone();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": definitions, "rows": rows})
}

/// A cell of column type `kind` for a JSONPath result.
fn cell(kind: &str, value: Option<&Value>, now: i64) -> Value {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    match kind {
        "integer" => value.as_f64().map_or(Value::Null, |n| json!(n as i64)),
        "number" => value.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => value.as_bool().map_or(Value::Null, Value::Bool),
        "date" => match value.as_str() {
            Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(time) => json!(human_duration(now - time.timestamp())),
                Err(_) => json!("<invalid>"),
            },
            None => Value::Null,
        },
        _ => match value {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
    }
}

/// An age as the real server's `duration.HumanDuration` writes it.
pub(super) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One step of a JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.a.b=="x")]`: the items whose field path equals the text.
    Filter(Vec<String>, String),
}

/// Parses `.a.b[0][?(@.type=="X")].c`; `None` when it is not in the supported subset.
fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end > 0 {
                steps.push(Step::Field(after[..end].to_owned()));
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[?(@") {
            let close = after.find(")]")?;
            let (lhs, rhs) = after[..close].split_once("==")?;
            let fields = lhs
                .trim()
                .trim_start_matches('.')
                .split('.')
                .map(str::to_owned)
                .collect();
            let value = rhs
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned();
            steps.push(Step::Filter(fields, value));
            rest = &after[close + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            let inner = after[..close].trim_matches(|c| c == '"' || c == '\'');
            match inner.parse() {
                Ok(index) => steps.push(Step::Index(index)),
                Err(_) => steps.push(Step::Field(inner.to_owned())),
            }
            rest = &after[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The first value `path` finds in `object`.
fn first_match<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let steps = parse(path)?;
    let mut current = vec![object];
    for step in &steps {
        current = current
            .into_iter()
            .flat_map(|value| -> Vec<&Value> {
                match step {
                    Step::Field(name) => value.get(name).into_iter().collect(),
                    Step::Index(index) => value.get(index).into_iter().collect(),
                    Step::Filter(fields, wanted) => value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|item| {
                            let found = fields.iter().try_fold(*item, |v, f| v.get(f));
                            found.is_some_and(|v| match v {
                                Value::String(s) => s == wanted,
                                other => {
                                    serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == *other)
                                }
                            })
                        })
                        .collect(),
                }
            })
            .collect();
    }
    current.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_of_printer_columns_are_evaluated() {
        let object = json!({"spec": {"credential": {"type": "postgres"}},
            "status": {"conditions": [{"type": "Valid", "reason": "Ok"},
                                      {"type": "Ready", "reason": "Rotated"}]}});
        assert_eq!(
            first_match(&object, ".spec.credential.type"),
            Some(&json!("postgres"))
        );
        assert_eq!(
            first_match(&object, ".status.conditions[?(@.type==\"Ready\")].reason"),
            Some(&json!("Rotated"))
        );
        assert_eq!(
            first_match(&object, ".status.conditions[0].type"),
            Some(&json!("Valid"))
        );
        assert_eq!(first_match(&object, ".status.lastRotation.time"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(-60), "<invalid>");
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
