//! Structural schemas of custom resources, as a real API server applies them on create and
//! update: unknown fields are pruned, then the object is validated, and an invalid one is
//! refused with `422 Invalid` naming each field path, e.g. `RotationPolicy.rotor.dev "x"
//! is invalid: spec.credential: Required value`.
//!
//! The subset modelled: `type` (`object`, `array`, `string`, `integer`, `number`,
//! `boolean`), `nullable`, `required`, `enum`, `properties`, `additionalProperties` (a
//! schema), `items`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`. Other keywords
//! (`pattern`, `format`, `oneOf`/`anyOf`/`allOf`, CEL `x-kubernetes-validations`,
//! defaults) are ignored. `metadata` is never pruned nor validated beyond what the
//! backend checks.

use serde_json::{Map, Value};

/// One field error, formatted like the real server's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    /// Dotted path, e.g. `spec.credential.type`.
    pub(super) field: String,
    /// `Required value`, `Invalid value: …`, `Unsupported value: …`.
    pub(super) detail: String,
    /// The `StatusCause` reason (`FieldValueRequired`, `FieldValueInvalid`, …).
    pub(super) reason: &'static str,
}

impl FieldError {
    fn required(field: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            detail: "Required value".to_owned(),
            reason: "FieldValueRequired",
        }
    }

    fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_owned(),
            detail: format!("Invalid value: {value}: {detail}"),
            reason: "FieldValueInvalid",
        }
    }

    /// `field: detail`.
    pub(super) fn line(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

/// The message of a `422 Invalid` for `kind` (`RotationPolicy.rotor.dev`) `name` with
/// `errors` (one: `…: a`, several: `…: [a, b]`), as the real server writes it.
pub(super) fn invalid_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(FieldError::line).collect();
    let joined = match lines.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    format!("{kind} {name:?} is invalid: {joined}")
}

/// The `422 Invalid` Status body for `errors`.
pub(super) fn invalid_status(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Value {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| serde_json::json!({"reason": e.reason, "message": e.detail, "field": e.field}))
        .collect();
    let mut body = super::status_body(422, "Invalid", &invalid_message(&qualified, name, errors));
    body["details"] = serde_json::json!({
        "name": name, "group": group, "kind": kind, "causes": causes
    });
    body
}

/// Removes the fields `schema` does not know from `object` (a whole custom resource:
/// `apiVersion`, `kind` and `metadata` are kept).
pub(super) fn prune_object(object: &mut Value, schema: &Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let preserve = preserves_unknown(schema);
    map.retain(|key, _| {
        matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
            || preserve
            || properties.is_some_and(|p| p.contains_key(key))
    });
    for (key, value) in map.iter_mut() {
        if key == "metadata" {
            continue;
        }
        if let Some(sub) = properties.and_then(|p| p.get(key)) {
            prune(value, sub);
        }
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Prunes one value against its schema.
fn prune(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if additional.is_none() && !preserves_unknown(schema) {
                map.retain(|key, _| properties.is_some_and(|p| p.contains_key(key)));
            }
            for (key, child) in map.iter_mut() {
                if let Some(sub) = properties.and_then(|p| p.get(key)).or(additional) {
                    prune(child, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    prune(item, sub);
                }
            }
        }
        _ => {}
    }
}

/// Validates a whole custom resource against its version's `openAPIV3Schema`
/// (`metadata` excepted).
pub(super) fn validate_object(object: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(map) = object.as_object() else {
        errors.push(FieldError::invalid("", "\"\"", "must be an object"));
        return errors;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in string_list(schema.get("required")) {
        if !matches!(required.as_str(), "apiVersion" | "kind" | "metadata")
            && map.get(&required).is_none_or(Value::is_null)
        {
            errors.push(FieldError::required(&required));
        }
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = properties.and_then(|p| p.get(key)) {
            validate(&map[key], sub, key, &mut errors);
        }
    }
    errors
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The JSON type name of a value as the real server's validator reports it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value of JSON type `actual` is of schema type `wanted`.
fn type_matches(wanted: &str, actual: &str) -> bool {
    wanted == actual || (wanted == "number" && actual == "integer")
}

/// Validates `value` at `path` against `schema`, adding to `errors`.
fn validate(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let actual = type_name(value);
    if value.is_null() {
        if schema["nullable"] == true {
            return;
        }
        if let Some(wanted) = schema.get("type").and_then(Value::as_str) {
            errors.push(FieldError::invalid(
                path,
                "\"null\"",
                &format!("{path} in body must be of type {wanted}: \"null\""),
            ));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !matches!(actual, "integer" | "string") {
            errors.push(FieldError::invalid(
                path,
                &format!("{actual:?}"),
                &format!("{path} in body must be of type integer,string: {actual:?}"),
            ));
        }
    } else if let Some(wanted) = schema.get("type").and_then(Value::as_str)
        && !type_matches(wanted, actual)
    {
        errors.push(FieldError::invalid(
            path,
            &format!("{actual:?}"),
            &format!("{path} in body must be of type {wanted}: {actual:?}"),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(FieldError {
            field: path.to_owned(),
            detail: format!(
                "Unsupported value: {value}: supported values: {}",
                listed.join(", ")
            ),
            reason: "FieldValueNotSupported",
        });
    }
    bounds(value, schema, path, errors);
    match value {
        Value::Object(map) => validate_map(map, schema, path, errors),
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate(item, sub, &format!("{path}[{index}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn validate_map(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for required in string_list(schema.get("required")) {
        if map.get(&required).is_none_or(Value::is_null) {
            errors.push(FieldError::required(&format!("{path}.{required}")));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if let Some(sub) = properties.and_then(|p| p.get(key)).or(additional) {
            validate(&map[key], sub, &format!("{path}.{key}"), errors);
        }
    }
}

/// `minimum`/`maximum`, `minLength`/`maxLength` and `minItems`/`maxItems`.
fn bounds(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
    let mut check = |size: f64, shown: String, key: &str, below: bool, what: &str| {
        if let Some(bound) = limit(key)
            && ((below && size < bound) || (!below && size > bound))
        {
            let relation = if below {
                "greater than or equal to"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::invalid(
                path,
                &shown,
                &format!("{path} in body should be {relation} {bound}{what}"),
            ));
        }
    };
    match value {
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            check(n, value.to_string(), "minimum", true, "");
            check(n, value.to_string(), "maximum", false, "");
        }
        Value::String(s) => {
            let len = s.chars().count() as f64;
            check(len, format!("{s:?}"), "minLength", true, " chars long");
            check(len, format!("{s:?}"), "maxLength", false, " chars long");
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            check(len, format!("{len}"), "minItems", true, " items");
            check(len, format!("{len}"), "maxItems", false, " items");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["credential", "vault"], "properties": {
                "credential": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["postgres", "mysql"]}}},
                "vault": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "every": {"type": "integer", "minimum": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "targets": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}}}}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }})
    }

    #[test]
    fn missing_required_fields_are_named_by_path() {
        let object = json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
                            "metadata": {"name": "x"}, "spec": {"vault": {}}});
        let errors = validate_object(&object, &schema());
        assert_eq!(errors, [FieldError::required("spec.credential")]);
        assert_eq!(
            invalid_message("RotationPolicy.rotor.dev", "x", &errors),
            "RotationPolicy.rotor.dev \"x\" is invalid: spec.credential: Required value"
        );
    }

    #[test]
    fn wrong_types_and_enum_values_are_refused() {
        let object = json!({"spec": {"credential": {"type": "redis"}, "vault": {},
                                     "every": "often", "labels": {"a": 1},
                                     "targets": [{"name": 3}]}});
        let lines: Vec<String> = validate_object(&object, &schema())
            .iter()
            .map(FieldError::line)
            .collect();
        assert_eq!(
            lines,
            [
                "spec.credential.type: Unsupported value: \"redis\": supported values: \"postgres\", \"mysql\"",
                "spec.every: Invalid value: \"string\": spec.every in body must be of type integer: \"string\"",
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.targets[0].name: Invalid value: \"integer\": spec.targets[0].name in body must be of type string: \"integer\"",
            ]
        );
        let zero = json!({"spec": {"credential": {"type": "mysql"}, "vault": {}, "every": 0}});
        assert_eq!(
            validate_object(&zero, &schema())[0].line(),
            "spec.every: Invalid value: 0: spec.every in body should be greater than or equal to 1"
        );
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved() {
        let mut object = json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "extra": 1,
            "spec": {"credential": {"type": "mysql", "typo": true}, "vault": {"any": {"thing": 1}},
                     "labels": {"k": "v"}, "targets": [{"name": "a", "junk": 1}]},
            "status": {"whatever": 1}});
        prune_object(&mut object, &schema());
        assert_eq!(
            object,
            json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
                "metadata": {"name": "x", "labels": {"a": "b"}},
                "spec": {"credential": {"type": "mysql"}, "vault": {"any": {"thing": 1}},
                         "labels": {"k": "v"}, "targets": [{"name": "a"}]},
                "status": {"whatever": 1}})
        );
    }
}
