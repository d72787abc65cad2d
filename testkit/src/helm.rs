//! The real Helm engine for tests: helm-python-sdk, installed into `.tools/venv` by
//! `dev/stack up`, driven through one Python process per batch of operations (lint,
//! render, schema validation).
//!
//! Used by the chart's own tests (`tests/helm_chart.rs`) and by [`crate::chart`], which
//! installs the chart's rendered RBAC into a [`crate::FakeKube`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::stack::workspace_root;

/// Reads `{"ops": [{op, chart, values, name?, namespace?}]}` on stdin and prints
/// `{"results": [{"ok": …} | {"error": "…"}]}`: one Helm SDK call per op. Helm's own
/// failures (lint findings aside) come back as `error`, so tests can assert on them.
const DRIVER: &str = r#"
import json, sys
try:
    import helm_python as helm
except ImportError:
    print(json.dumps({"missing": True}))
    sys.exit(0)

def run(op):
    try:
        if op["op"] == "lint":
            return {"ok": helm.lint(op["chart"], op["values"], strict=True,
                                    namespace=op["namespace"])}
        chart = helm.Chart.load(op["chart"])
        if op["op"] == "render":
            return {"ok": chart.render(op["values"], name=op["name"],
                                       namespace=op["namespace"], is_install=True)}
        if op["op"] == "validate":
            chart.validate_schema(op["values"])
            return {"ok": None}
    except helm.HelmError as e:
        return {"error": type(e).__name__ + ": " + str(e)}
    raise SystemExit("unknown op " + op["op"])

request = json.load(sys.stdin)
print(json.dumps({"results": [run(op) for op in request["ops"]]}))
"#;

/// The repository's chart, `charts/rotor`.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts").join("rotor")
}

/// One operation for [`run`]: `kind` is `lint`, `render` or `validate`; `name` and
/// `namespace` are the release's.
pub fn op(kind: &str, chart: &Path, values: &Value, name: &str, namespace: &str) -> Value {
    json!({
        "op": kind,
        "chart": chart.to_string_lossy(),
        "values": values,
        "name": name,
        "namespace": namespace,
    })
}

/// Runs the driver once for all `ops`; one `Ok(result)` or `Err(helm error)` each.
///
/// # Panics
///
/// When helm-python-sdk is not installed (the message says to run `dev/stack up`) or the
/// driver fails.
pub fn run(ops: Vec<Value>) -> Vec<Result<Value, String>> {
    let python = workspace_root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "helm-python-sdk not found: run dev/stack up ({} is missing)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(DRIVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} could not start: {e}", python.display()));
    let request = json!({ "ops": ops }).to_string();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(request.as_bytes())
        .expect("the driver reads its request");
    drop(stdin);
    let output = child.wait_with_output().expect("the driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Helm driver failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let answer: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the Helm driver printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(
        answer.get("missing").is_none(),
        "helm-python-sdk not found: run dev/stack up (the venv has no helm_python)"
    );
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| match r.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(r["ok"].clone()),
        })
        .collect()
}

/// Renders `chart` as an install of release `name` in `namespace`: template path →
/// rendered text (NOTES.txt included).
///
/// # Panics
///
/// When Helm refuses the values or the chart (its message is in the panic).
pub fn render(
    chart: &Path,
    values: &Value,
    name: &str,
    namespace: &str,
) -> BTreeMap<String, String> {
    let manifests = run(vec![op("render", chart, values, name, namespace)])
        .remove(0)
        .unwrap_or_else(|e| panic!("rendering {} with {values} failed: {e}", chart.display()));
    serde_json::from_value(manifests).expect("template path → text")
}

/// Renders like [`render`] and parses every manifest: `(template path, object)` in
/// template order, without NOTES.txt and empty documents.
///
/// # Panics
///
/// As [`render`], and when a template renders invalid YAML.
pub fn render_objects(
    chart: &Path,
    values: &Value,
    name: &str,
    namespace: &str,
) -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for (template, text) in render(chart, values, name, namespace) {
        if template.ends_with("NOTES.txt") {
            continue;
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{template} is not valid YAML: {e}\n{text}"));
        objects.extend(
            docs.into_iter()
                .filter(|d| !d.is_null())
                .map(|d| (template.clone(), d)),
        );
    }
    objects
}
