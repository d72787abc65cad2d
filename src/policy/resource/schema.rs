//! The RotationPolicy CRD's OpenAPI v3 schema, generated from the raw policy model (the
//! serde structs `rotor validate` reads) and rewritten into the structural form the
//! API server requires: no `$ref`, a `type` on every node (or
//! `x-kubernetes-int-or-string`), no `additionalProperties: false` (the server prunes
//! unknown fields), and tagged unions (`credential`, `consumers[]`) as one object
//! holding every variant's fields plus a `oneOf` that only names, per `type`, the
//! fields that variant requires.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::policy::yaml::{Checked, Located, ScalarText};

/// `JsonSchema` for a `raw_int!` type: an integer within the bounds validation
/// enforces.
macro_rules! int_schema {
    ($name:ident, $min:literal, $max:expr) => {
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let max: Option<i64> = $max;
                let mut schema = schemars::json_schema!({"type": "integer", "minimum": $min});
                if let Some(max) = max {
                    schema.insert("maximum".into(), max.into());
                }
                schema
            }
        }
    };
}
pub(crate) use int_schema;

/// `JsonSchema` for a wrapper that only adds positions or an error barrier: the
/// wrapped type's schema.
macro_rules! transparent_schema {
    ($($wrapper:ident),*) => {$(
        impl<T: JsonSchema> JsonSchema for $wrapper<T> {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                T::schema_name()
            }

            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                T::json_schema(generator)
            }
        }
    )*};
}

transparent_schema!(Located, Checked);

impl JsonSchema for ScalarText {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScalarText".into()
    }

    /// A scalar taken as written: durations (`30d`, `3600`), file modes, ids.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-int-or-string": true})
    }
}

/// The structural schema of `T`, a raw model type.
pub(crate) fn structural_schema<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let schema = SchemaGenerator::new(settings).into_root_schema_for::<T>();
    let mut value = schema.to_value();
    structural(&mut value);
    value
}

/// The `format`s the API server knows; schemars' others (`uint16`, …) are dropped.
const KNOWN_FORMATS: &[&str] = &["int32", "int64", "float", "double", "date-time", "byte"];

/// Keys that have no place in a CRD schema.
const DROPPED: &[&str] = &[
    "$schema",
    "title",
    "definitions",
    "$defs",
    "examples",
    "default",
];

/// Rewrites a schemars schema in place into a structural one.
fn structural(value: &mut Value) {
    let Some(s) = value.as_object_mut() else {
        // `true`/`false` schemas: anything.
        *value = serde_json::json!({"x-kubernetes-preserve-unknown-fields": true});
        return;
    };
    for key in DROPPED {
        s.remove(*key);
    }
    if s.get("additionalProperties") == Some(&Value::Bool(false)) {
        s.remove("additionalProperties");
    }
    if let Some(c) = s.remove("const") {
        s.insert("enum".into(), Value::Array(vec![c]));
    }
    if let Some(Value::Array(types)) = s.get("type") {
        let types: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if let [one] = types.as_slice() {
            s.insert("type".into(), one.clone());
        }
    }
    if let Some(f) = s.get("format").and_then(Value::as_str)
        && !KNOWN_FORMATS.contains(&f)
    {
        s.remove("format");
    }
    if let Some(Value::Array(e)) = s.get_mut("enum") {
        e.retain(|v| !v.is_null());
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = s.get_mut(key).filter(|v| v.is_object()) {
            structural(sub);
        }
    }
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        props.values_mut().for_each(structural);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = s.remove(key) {
            union(s, branches);
        }
    }
    if !s.contains_key("type")
        && !s.contains_key("x-kubernetes-int-or-string")
        && !s.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        if s.contains_key("properties") {
            s.insert("type".into(), "object".into());
        } else if let Some(kind) = enum_type(s) {
            s.insert("type".into(), kind.into());
        }
    }
}

/// The JSON type of an `enum`'s values, when they share one.
fn enum_type(s: &Map<String, Value>) -> Option<&'static str> {
    let values = s.get("enum")?.as_array()?;
    let kind = |v: &Value| match v {
        Value::String(_) => Some("string"),
        Value::Bool(_) => Some("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some("integer"),
        Value::Number(_) => Some("number"),
        _ => None,
    };
    let first = kind(values.first()?)?;
    values
        .iter()
        .all(|v| kind(v) == Some(first))
        .then_some(first)
}

/// Folds `oneOf`/`anyOf` `branches` (made structural first) into `s`: `null` branches
/// go (optional fields are simply left out), one branch is merged in, enums of
/// scalars become one enum, and objects become a tagged union.
fn union(s: &mut Map<String, Value>, mut branches: Vec<Value>) {
    branches.iter_mut().for_each(structural);
    let branches: Vec<Map<String, Value>> = branches
        .into_iter()
        .filter_map(|b| match b {
            Value::Object(o) if o.get("type").and_then(Value::as_str) != Some("null") => Some(o),
            _ => None,
        })
        .collect();
    if let [one] = branches.as_slice() {
        for (k, v) in one {
            s.entry(k.clone()).or_insert_with(|| v.clone());
        }
        return;
    }
    if branches
        .iter()
        .all(|b| b.contains_key("enum") && !b.contains_key("properties"))
    {
        let values: Vec<Value> = branches
            .iter()
            .flat_map(|b| b["enum"].as_array().cloned().unwrap_or_default())
            .collect();
        s.insert("enum".into(), Value::Array(values));
        if let Some(kind) = enum_type(s) {
            s.insert("type".into(), kind.into());
        }
        return;
    }
    let mut merged = Map::new();
    merged.insert("type".into(), "object".into());
    let mut picks = Vec::new();
    for branch in &branches {
        merge_object(&mut merged, branch);
        let mut pick = Map::new();
        if let Some(required) = branch.get("required") {
            pick.insert("required".into(), required.clone());
        }
        // The tag: a property this branch fixes to one value.
        let tags: Map<String, Value> = branch
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, p)| {
                p.get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|e| e.len() == 1)
            })
            .map(|(k, p)| (k.clone(), serde_json::json!({"enum": p["enum"]})))
            .collect();
        if !tags.is_empty() {
            pick.insert("properties".into(), Value::Object(tags));
        }
        picks.push(Value::Object(pick));
    }
    merged.insert("oneOf".into(), Value::Array(picks));
    for (k, v) in merged {
        s.insert(k, v);
    }
}

/// Merges object schema `b` into `a`: every property of either (the same property in
/// both merged in turn), required only what both require.
fn merge_object(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    let first = !a.contains_key("properties");
    let props_b = b
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let props_a = a
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("properties is an object");
    for (name, pb) in props_b {
        match props_a.get_mut(&name) {
            None => {
                props_a.insert(name, pb);
            }
            Some(pa) => merge_property(pa, &pb),
        }
    }
    let required_b: Vec<Value> = b
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let required = if first {
        required_b
    } else {
        a.get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| required_b.contains(r))
            .cloned()
            .collect()
    };
    if required.is_empty() {
        a.remove("required");
    } else {
        a.insert("required".into(), Value::Array(required));
    }
}

/// Merges the schemas two union variants give one property.
fn merge_property(a: &mut Value, b: &Value) {
    if a == b {
        return;
    }
    let (Some(ma), Some(mb)) = (a.as_object_mut(), b.as_object()) else {
        return;
    };
    let type_a = ma.get("type").cloned();
    if type_a != mb.get("type").cloned() {
        // Different shapes under one name: the server keeps whatever is written and
        // `rotor validate`'s checks decide.
        *a = serde_json::json!({"x-kubernetes-preserve-unknown-fields": true});
        return;
    }
    if type_a.as_ref().and_then(Value::as_str) == Some("object") && ma.contains_key("properties") {
        merge_object(ma, mb);
        ma.remove("oneOf");
        if ma.get("description") != mb.get("description") {
            ma.remove("description");
        }
        return;
    }
    if let (Some(Value::Array(ea)), Some(Value::Array(eb))) =
        (ma.get("enum").cloned(), mb.get("enum"))
    {
        let mut values = ea;
        values.extend(
            eb.iter()
                .filter(|v| !values.contains(v))
                .cloned()
                .collect::<Vec<_>>(),
        );
        ma.insert("enum".into(), Value::Array(values));
    }
    // Keep only the constraints both variants share.
    ma.retain(|k, v| k == "type" || k == "enum" || mb.get(k) == Some(v));
}
