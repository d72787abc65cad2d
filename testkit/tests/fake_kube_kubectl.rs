//! Real `kubectl` (client-go) as an independent client of the fake API server: what kube
//! clients write, kubectl reads, and the other way round, over HTTPS with the CA and
//! token of the server's kubeconfig.
//!
//! kubectl must be installed (`KUBECTL` names another binary); without it these tests
//! fail with a message that says so. Its typed commands (`create namespace`, `create
//! secret`) send protobuf, which the fake answers with 415 and client-go does not retry as
//! JSON, so objects are created from manifests (`create -f`, `apply --server-side`).
//! `--validate=false` because the fake serves no OpenAPI documents.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rotor_testkit::apiserver::client_from_kubeconfig;
use rotor_testkit::{FakeKube, unique};
use serde_json::{Value, json};

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs kubectl against `kube` (its kubeconfig, a private HOME for kubectl's cache) and
/// asserts it succeeded; answers stdout.
fn kubectl(kube: &FakeKube, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(kube, home, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Starts kubectl with `args` against `kube`, stdout piped, or panics naming kubectl.
fn spawn_kubectl(kube: &FakeKube, home: &Path, args: &[&str], stderr: Stdio) -> Child {
    let program = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    Command::new(&program)
        .args(args)
        .env("KUBECONFIG", &kube.kubeconfig)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running {program:?} failed ({e}): these tests need real kubectl as an \
                 independent client of the fake API server; install kubectl on PATH or set \
                 KUBECTL to its path"
            )
        })
}

fn kubectl_output(kube: &FakeKube, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = spawn_kubectl(kube, home, args, Stdio::piped());
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("write kubectl stdin");
    }
    drop(input);
    child.wait_with_output().expect("kubectl output")
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("kubectl printed no JSON ({e}): {text}"))
}

/// A server with a fresh namespace, a (kube) client of it and a home for kubectl.
async fn fixture(prefix: &str) -> (FakeKube, kube::Client, String, tempfile::TempDir) {
    let kube = FakeKube::start().await;
    let ns = unique(prefix);
    kube.create_namespace(&ns).await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    (kube, client, ns, tempfile::tempdir().expect("kubectl home"))
}

#[tokio::test]
async fn kubectl_gets_what_a_kube_client_applied() {
    let (kube, client, ns, home) = fixture("kubectl-get").await;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            "db",
            &PatchParams::apply("rotor"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "db", "namespace": ns},
                                 "data": {"PGPASSWORD": b64("from-rotor")}})),
        )
        .await
        .unwrap();
    let secret = json_of(&kubectl(
        &kube,
        home.path(),
        &[
            "get",
            "secret",
            "db",
            "-n",
            &ns,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    ));
    assert_eq!(secret["data"]["PGPASSWORD"], b64("from-rotor"));
    assert_eq!(secret["metadata"]["managedFields"][0]["manager"], "rotor");
    assert_eq!(secret["metadata"]["managedFields"][0]["operation"], "Apply");
}

#[tokio::test]
async fn kubectl_create_and_server_side_apply_write_string_data_as_a_real_server_keeps_it() {
    let (kube, client, ns, home) = fixture("kubectl-write").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: created\n  namespace: {ns}\n\
         stringData:\n  TOKEN: from-kubectl\n"
    );
    kubectl(
        &kube,
        home.path(),
        &["create", "--validate=false", "-f", "-"],
        Some(&manifest),
    );
    let created = secrets.get("created").await.unwrap();
    assert!(created.string_data.is_none());
    assert_eq!(created.data.unwrap()["TOKEN"].0, b"from-kubectl");
    let entry = &created.metadata.managed_fields.unwrap()[0];
    assert_eq!(entry.manager.as_deref(), Some("kubectl-create"));
    assert_eq!(
        entry.fields_v1.as_ref().unwrap().0,
        json!({"f:stringData": {"f:TOKEN": {}}})
    );

    // helm-like: server-side apply of stringData by kubectl, then rotor applies data.
    let applied = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: shared\n  namespace: {ns}\n\
             stringData:\n  PGPASSWORD: {value}\n"
        )
    };
    let apply = [
        "apply",
        "--server-side",
        "--validate=false",
        "--field-manager=helm",
        "-f",
        "-",
    ];
    kubectl(&kube, home.path(), &apply, Some(&applied("helm-value")));
    secrets
        .patch(
            "shared",
            &PatchParams::apply("rotor"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "shared", "namespace": ns},
                                 "data": {"PGPASSWORD": b64("rotor-value")}})),
        )
        .await
        .expect("no conflict: helm owns stringData, not data");
    let read = |text: String| json_of(&text)["data"]["PGPASSWORD"].clone();
    let get = ["get", "secret", "shared", "-n", &ns, "-o", "json"];
    assert_eq!(
        read(kubectl(&kube, home.path(), &get, None)),
        b64("rotor-value")
    );
    // helm's next apply silently puts its value back.
    kubectl(&kube, home.path(), &apply, Some(&applied("helm-value")));
    assert_eq!(
        read(kubectl(&kube, home.path(), &get, None)),
        b64("helm-value")
    );
}

#[tokio::test]
async fn kubectl_patch_and_rollout_restart_reach_kube_clients() {
    let (kube, client, ns, home) = fixture("kubectl-patch").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"A": b64("a")}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let patch = json!({"data": {"B": b64("b")}}).to_string();
    kubectl(
        &kube,
        home.path(),
        &["patch", "secret", "s", "-n", &ns, "-p", &patch],
        None,
    );
    let data = secrets.get("s").await.unwrap().data.unwrap();
    assert_eq!(
        (data["A"].0.as_slice(), data["B"].0.as_slice()),
        (&b"a"[..], &b"b"[..])
    );

    kube.create_deployment(&ns, "web").await;
    let out = kubectl(
        &kube,
        home.path(),
        &["rollout", "restart", "deployment", "web", "-n", &ns],
        None,
    );
    assert!(out.contains("restarted"), "{out}");
    let template = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;
    let annotations = template.metadata.unwrap().annotations.unwrap_or_default();
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );
}

#[tokio::test]
async fn kubectl_watches_what_kube_clients_change_and_typed_creates_are_refused() {
    let (kube, client, ns, home) = fixture("kubectl-watch").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let create =
        |name: &str| serde_json::from_value::<Secret>(json!({"metadata": {"name": name}})).unwrap();
    secrets
        .create(&PostParams::default(), &create("listed"))
        .await
        .unwrap();
    // kubectl lists, then watches from the list's resourceVersion until its timeout.
    // --request-timeout ends kubectl by itself should the test stop early.
    let watch = [
        "get",
        "secrets",
        "-n",
        &ns,
        "-w",
        "--output-watch-events",
        "--request-timeout=10s",
    ];
    let mut child = spawn_kubectl(&kube, home.path(), &watch, Stdio::null());
    let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = async |seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str| {
        let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(line) = seen.recv().await {
                if line.starts_with("ADDED") && line.split_whitespace().nth(1) == Some(name) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "kubectl printed no ADDED event for {name}");
    };
    wait_for(&mut seen, "listed").await;
    // Listed: whenever its watch opens, it starts after the list and misses nothing.
    secrets
        .create(&PostParams::default(), &create("watched"))
        .await
        .unwrap();
    wait_for(&mut seen, "watched").await;
    let _ = child.kill();
    let _ = child.wait();

    // Typed commands send protobuf: 415, which client-go does not retry as JSON.
    let out = kubectl_output(
        &kube,
        home.path(),
        &[
            "create",
            "secret",
            "generic",
            "typed",
            "-n",
            &ns,
            "--from-literal=a=b",
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown format"), "{stderr}");
}

#[tokio::test]
async fn kubectl_gets_custom_resources_with_their_printer_columns() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let (kube, client, ns, home) = fixture("kubectl-crd").await;
    kubectl(
        &kube,
        home.path(),
        &["create", "--validate=false", "-f", "-"],
        Some(&rotor_testkit::apiserver::crd::example_crd().to_string()),
    );
    let manifest = |spec: &str| {
        format!(
            "apiVersion: rotor.dev/v1\nkind: RotationPolicy\nmetadata:\n  name: db\n  namespace: {ns}\n\
             spec:\n{spec}"
        )
    };
    let apply = ["apply", "--server-side", "--validate=false", "-f", "-"];
    let refused = kubectl_output(
        &kube,
        home.path(),
        &apply,
        Some(&manifest("  credential:\n    type: postgres\n")),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // kubectl words the 422's details as it does a real server's.
    assert!(
        stderr.contains("The RotationPolicy \"db\" is invalid: spec.vault: Required value"),
        "{stderr}"
    );
    kubectl(
        &kube,
        home.path(),
        &apply,
        Some(&manifest(
            "  credential:\n    type: postgres\n  vault:\n    mount: database\n",
        )),
    );
    let five_minutes_ago = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client,
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rotor.dev", "v1", "RotationPolicy"),
            "rotationpolicies",
        ),
    );
    policies
        .patch_status(
            "db",
            &PatchParams::apply("rotor"),
            &Patch::Apply(
                json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
                "metadata": {"name": "db"},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Rotated"}],
                           "lastRotation": {"time": five_minutes_ago},
                           "nextRotation": "2099-01-01T00:00:00Z"}}),
            ),
        )
        .await
        .unwrap();
    let out = kubectl(&kube, home.path(), &["get", "rp", "-n", &ns], None);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "KIND",
            "STATUS",
            "LAST ROTATION",
            "NEXT ROTATION",
            "AGE"
        ],
        "{out}"
    );
    // A future `date` reads `<invalid>` on a real server too.
    assert_eq!(
        lines[1][..5],
        ["db", "postgres", "Rotated", "5m", "<invalid>"],
        "{out}"
    );
    let listed = json_of(&kubectl(
        &kube,
        home.path(),
        &["get", "rotationpolicies", "-n", &ns, "-o", "json"],
        None,
    ));
    assert_eq!(
        listed["items"][0]["status"]["conditions"][0]["reason"],
        "Rotated"
    );

    // An events.k8s.io/v1 Event about it (a series of 3) shows in kubectl describe, which
    // reads the core API's Events by involvedObject name, namespace, kind and uid.
    let uid = listed["items"][0]["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let events: Api<DynamicObject> = Api::namespaced_with(
        client_from_kubeconfig(&kube.kubeconfig).await.unwrap(),
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "db.rotated", "namespace": ns},
        "regarding": {"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy", "name": "db",
                      "namespace": ns, "uid": uid},
        "eventTime": now, "series": {"count": 3, "lastObservedTime": now},
        "reportingController": "rotor", "reportingInstance": "rotor-0",
        "action": "Rotate", "reason": "Rotated", "type": "Normal",
        "note": "rotated the database credential"});
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(event).unwrap(),
        )
        .await
        .unwrap();
    let described = kubectl(
        &kube,
        home.path(),
        &["describe", "rp", "db", "-n", &ns],
        None,
    );
    let line = described
        .lines()
        .find(|l| l.contains("Rotated") && l.contains("rotor"))
        .unwrap_or_else(|| panic!("no event line in:\n{described}"));
    assert!(line.contains("rotated the database credential"), "{line}");
    assert!(line.contains("(x3 over"), "{line}");
}
