use super::*;
use std::path::Path;

use serde_json::Value;

use crate::policy::CredentialSpec;

/// Every node of `schema` with its JSON path, and whether it sits inside a junctor.
fn walk<'a>(
    schema: &'a Value,
    path: String,
    in_junctor: bool,
    out: &mut Vec<(String, &'a Value, bool)>,
) {
    out.push((path.clone(), schema, in_junctor));
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(Value::Object(props)) = map.get("properties") {
        for (k, v) in props {
            walk(v, format!("{path}.{k}"), in_junctor, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = map.get(key).filter(|v| v.is_object()) {
            walk(v, format!("{path}[{key}]"), in_junctor, out);
        }
    }
    for key in ["oneOf", "anyOf", "allOf", "not"] {
        match map.get(key) {
            Some(Value::Array(branches)) => {
                for (i, b) in branches.iter().enumerate() {
                    walk(b, format!("{path}<{key}{i}>"), true, out);
                }
            }
            Some(b @ Value::Object(_)) => walk(b, format!("{path}<{key}>"), true, out),
            _ => {}
        }
    }
}

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The rules of a structural schema the API server checks: a type on every node
/// outside junctors (or int-or-string / preserve-unknown-fields), nothing in
/// junctors but value rules, no `$ref`, no `additionalProperties: false`.
#[test]
fn the_schema_is_structural() {
    let schema = schema();
    let mut nodes = Vec::new();
    walk(&schema, "$".into(), false, &mut nodes);
    assert!(nodes.len() > 100, "{}", nodes.len());
    let text = schema.to_string();
    for banned in ["$ref", "$schema", "definitions", "\"const\"", "\"null\""] {
        assert!(!text.contains(banned), "{banned} in {text}");
    }
    for (path, node, in_junctor) in nodes {
        let map = node.as_object().unwrap_or_else(|| panic!("{path}: {node}"));
        if in_junctor {
            for key in [
                "type",
                "description",
                "default",
                "additionalProperties",
                "nullable",
            ] {
                assert!(
                    !map.contains_key(key),
                    "{path} sets {key} in a junctor: {node}"
                );
            }
            assert!(
                !map.keys().any(|k| k.starts_with("x-kubernetes")),
                "{path}: {node}"
            );
            continue;
        }
        let typed = map.contains_key("type")
            || map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        assert!(typed, "{path} has no type: {node}");
        assert_ne!(
            map.get("additionalProperties"),
            Some(&Value::Bool(false)),
            "{path}"
        );
        if map.contains_key("properties") {
            assert_eq!(map["type"], "object", "{path}");
        }
        // Every field a junctor names is also specified outside it.
        for key in ["oneOf", "anyOf"] {
            for branch in map.get(key).and_then(Value::as_array).into_iter().flatten() {
                for field in branch
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    assert!(
                        map["properties"].get(field.0).is_some(),
                        "{path}: {}",
                        field.0
                    );
                }
                for field in branch
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let field = field.as_str().unwrap();
                    assert!(map["properties"].get(field).is_some(), "{path}: {field}");
                }
            }
        }
    }
}

/// The rules the API server can enforce itself come from the model: required fields,
/// the closed sets, integer bounds; each credential kind requires its own fields.
#[test]
fn the_schema_carries_the_models_rules() {
    let spec = &schema()["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["credential", "vault"]));
    let credential = &spec["properties"]["credential"];
    let kinds: Vec<&str> = credential["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds, CredentialSpec::KINDS);
    assert_eq!(credential["required"], serde_json::json!(["type"]));
    let postgres = credential["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["properties"]["type"]["enum"] == serde_json::json!(["postgres"]))
        .expect("a postgres branch");
    let required = postgres["required"].as_array().unwrap();
    for field in ["type", "connection", "username"] {
        assert!(required.contains(&field.into()), "{postgres}");
    }
    let port = &credential["properties"]["connection"]["properties"]["port"];
    assert_eq!(port["type"], "integer");
    assert_eq!(port["minimum"].as_f64(), Some(1.0));
    assert_eq!(port["maximum"].as_f64(), Some(65535.0));
    let consumer = &spec["properties"]["consumers"]["items"];
    assert!(
        consumer["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"kubernetes".into())
    );
    let strategy = &credential["properties"]["strategy"];
    assert_eq!(
        strategy["enum"],
        serde_json::json!(["single", "alternating", "overlap"])
    );
    assert_eq!(
        spec["properties"]["schedule"]["properties"]["jitter"]["x-kubernetes-int-or-string"],
        true
    );
}

#[test]
fn the_crd_names_the_resource_and_its_columns() {
    let crd = serde_json::to_value(crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], CRD_NAME);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["rp"])
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Kind", "Status", "Last rotation", "Next rotation", "Age"]
    );
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(
        status["conditions"]["items"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        status["lastRotation"]["properties"]["time"]["format"],
        "date-time"
    );
    // The CRD serializes to YAML that reads back as the same object.
    let yaml = crd_yaml();
    let back: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), crd);
}

fn spec() -> Value {
    serde_json::json!({
        "credential": {
            "type": "postgres",
            "connection": {"host": "db.example", "adminFrom": {"vault": {"path": "admins/pg"}}},
            "username": "app",
        },
        "vault": {"path": "apps/app/db"},
        "consumers": [{
            "type": "kubernetes", "namespace": "apps", "secret": "app-db",
            "data": {"PGPASSWORD": "{{ password }}"},
        }],
    })
}

#[test]
fn a_good_resource_validates_to_the_policy_a_file_gives() {
    let r = RotationPolicy::new("apps", "app-db", spec());
    let policy = r.validate().unwrap();
    assert_eq!(policy.name, "app-db");
    assert_eq!(policy.file, PathBuf::from("apps/app-db"));
    assert_eq!(policy.spec.vault.path, "apps/app/db");
    // The object reads back from what the API server returns.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["apiVersion"], "rotor.dev/v1");
    assert_eq!(json["kind"], "RotationPolicy");
    let back: RotationPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back.spec, r.spec);
}

#[test]
fn a_bad_resource_names_its_source_and_the_field_path() {
    let mut spec = spec();
    spec["credential"]["connection"]["port"] = 70000.into();
    spec["consumers"][0]["secret"] = "Not_A_Name".into();
    let errors = RotationPolicy::new("apps", "app-db", spec.clone())
        .validate()
        .unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"spec.credential.connection.port"),
        "{shown:?}"
    );
    assert!(paths.contains(&"spec.consumers[0].secret"), "{shown:?}");
    assert!(
        errors
            .0
            .iter()
            .all(|e| e.line == 0 && e.file == Path::new("apps/app-db"))
    );
    spec.as_object_mut().unwrap().remove("vault");
    let errors = RotationPolicy::new("apps", "app-db", spec)
        .validate()
        .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "apps/app-db: spec.vault: found no `vault`, expected required field `vault`"
    );
}

#[test]
fn a_name_used_in_two_namespaces_is_an_error_naming_both() {
    let a = RotationPolicy::new("team-a", "db", spec());
    let mut other = spec();
    other["vault"]["path"] = "apps/other/db".into();
    let b = RotationPolicy::new("team-b", "db", other);
    let errors = crate::policy::load_all(&[], &[a, b]).unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown[0].starts_with(
            "team-a/db: metadata.name: found duplicate policy name `db` (also at team-b/db)"
        ),
        "{shown:?}"
    );
    assert!(
        shown[1].starts_with(
            "team-b/db: metadata.name: found duplicate policy name `db` (also at team-a/db)"
        ),
        "{shown:?}"
    );
}

#[test]
fn a_resource_without_a_namespace_is_refused() {
    let mut r = RotationPolicy::new("apps", "app-db", spec());
    r.metadata.namespace = None;
    let errors = r.validate().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "metadata");
    assert!(
        errors.0[0].message.contains("namespaced resource"),
        "{errors}"
    );
}

#[test]
fn any_spec_reads_so_one_bad_object_cannot_stop_a_watch() {
    let json = serde_json::json!({
        "apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
        "metadata": {"name": "x", "namespace": "y", "generation": 4},
        "spec": {"credential": 7},
        "status": {"observedGeneration": 3, "phase": "Ready"},
    });
    let r: RotationPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(r.status.as_ref().unwrap().observed_generation, Some(3));
    let errors = r.validate().unwrap_err();
    assert!(
        errors.0.iter().any(|e| e.path == "spec.credential"),
        "{errors}"
    );
}
/// The chart installs the CRD from `charts/rotor/crds/` (Helm's CRD directory): it
/// must be what `rotor crd` prints. `ROTOR_WRITE_CRD=1` rewrites it.
#[test]
fn the_charts_crd_is_the_generated_one() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/rotor/crds/rotationpolicies.rotor.dev.yaml");
    let generated = crd_yaml();
    if std::env::var_os("ROTOR_WRITE_CRD").is_some() {
        std::fs::write(&file, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from `rotor crd`: run `rotor crd > {}` (or this test with ROTOR_WRITE_CRD=1)",
        file.display(),
        file.display()
    );
}
