//! The Kubernetes consumer against the testkit's fake API server
//! ([`rotor_testkit::FakeKube`]: `kube-fake-client`, an in-memory API server that tracks
//! server-side-apply field managers and answers 409 on apply conflicts and stale
//! resourceVersions, behind real HTTP on loopback), through rotor's whole kube client
//! stack. The two fault-injection tests ask the server to swallow or refuse Secret
//! applies ([`SecretPatches`]), as an admission webhook could.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rotor::consumers::kubernetes::{
    DATA_HASH_ANNOTATION, KubernetesConsumerClient, KubernetesError, MANAGED_BY_LABEL,
    RESTARTED_AT_ANNOTATION, restart_annotation_key,
};
use rotor::policy::{KubernetesConsumer, Template, WorkloadKind, WorkloadRef};
use rotor::secret::{Fingerprinter, SecretMap, SecretString};
use rotor_testkit::{FakeKube, FakeKubeOptions, SecretPatches, assert_no_secret, canary};
use serde_json::json;

const NS: &str = "payments";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn deploy(name: &str) -> WorkloadRef {
    WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: name.to_owned(),
    }
}

/// The consumer of the canonical example: PGPASSWORD and DATABASE_URL.
fn spec(secret: &str, restart: Vec<WorkloadRef>, force: bool) -> KubernetesConsumer {
    let data = BTreeMap::from([
        (
            "PGPASSWORD".to_owned(),
            Template::parse("{{ password }}").unwrap(),
        ),
        (
            "DATABASE_URL".to_owned(),
            Template::parse("postgres://{{ username }}:{{ password }}@db.payments:5432/payments")
                .unwrap(),
        ),
    ]);
    KubernetesConsumer {
        namespace: NS.to_owned(),
        secret: secret.to_owned(),
        data,
        secret_type: None,
        restart,
        force,
    }
}

/// Renders `spec.data` from a password the way the engine does, and its fingerprint.
fn render(spec: &KubernetesConsumer, password: &str) -> (SecretMap, String) {
    let mut vars = SecretMap::new();
    vars.insert("username", SecretString::from("payments_app"));
    vars.insert("password", SecretString::from(password.to_owned()));
    let rendered: SecretMap = spec
        .data
        .iter()
        .map(|(k, t)| (k.clone(), t.render(&vars).unwrap()))
        .collect();
    let hash = Fingerprinter::new(b"test-fingerprint-key-test-fingerprint".to_vec())
        .fingerprint_map(&rendered);
    (rendered, hash)
}

fn template() -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_owned(), "api".to_owned())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("registry.example/app:1".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NS.to_owned()),
        ..ObjectMeta::default()
    }
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_owned(), "api".to_owned())])),
        ..LabelSelector::default()
    }
}

fn deployment(name: &str) -> Deployment {
    Deployment {
        metadata: meta(name),
        spec: DeploymentSpec {
            selector: selector(),
            template: template(),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// A fake API server on loopback holding namespace [`NS`] and these Deployments, and a
/// client of it as rotor makes one. Keep the [`FakeKube`] alive for the test: dropping it
/// stops the server.
async fn fake_with_deployments(names: &[&str]) -> (FakeKube, kube::Client) {
    fake_with(FakeKubeOptions::default(), names).await
}

/// [`fake_with_deployments`] on a server started with `options` (fault injection).
async fn fake_with(options: FakeKubeOptions, names: &[&str]) -> (FakeKube, kube::Client) {
    logs();
    let kube = FakeKube::start_with(options).await;
    kube.create_namespace(NS).await;
    let client = common::rotor_kube_client(&kube).await;
    for name in names {
        create(&client, &deployment(name)).await;
    }
    (kube, client)
}

async fn create<K>(client: &kube::Client, object: &K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), object)
        .await
        .unwrap();
}

async fn secret_data(client: &kube::Client, name: &str) -> BTreeMap<String, String> {
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// The Deployment's pod-template annotations and its generation (bumped by every
/// spec change, i.e. every rollout).
async fn rollout_state(client: &kube::Client, name: &str) -> (BTreeMap<String, String>, i64) {
    let d = Api::<Deployment>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let annotations = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    (annotations, d.metadata.generation.unwrap_or_default())
}

/// Server-side apply of raw Secret JSON as another field manager (or as rotor, to
/// simulate a crash after rotor's own apply).
async fn raw_apply(client: &kube::Client, manager: &str, body: serde_json::Value) {
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(&name, &PatchParams::apply(manager), &Patch::Apply(&body))
        .await
        .unwrap();
}

/// Every log line rotor's consumers write in this test binary, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

/// Installs the capturing subscriber as the global default, once. Every test calls this
/// before it touches rotor, so no callsite is ever registered without it (a per-thread
/// default races with tests running on other threads and can miss events).
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        // kube-client's own debug lines print API error bodies verbatim; rotor does not
        // control them, so the check covers rotor's consumer module only.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("rotor::consumers=trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Display with the whole source chain, and Debug: everything a log line could show.
fn error_text(e: &KubernetesError) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn first_push_creates_and_restarts_repeat_is_a_noop_new_values_restart_again() {
    let (_kube, client) = fake_with_deployments(&["api"]).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("payments-db", vec![deploy("api")], false);
    let marker = restart_annotation_key("payments-db");

    // First push: the Secret is created with exactly the rendered keys.
    let (v1, h1) = render(&spec, "first-password");
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert!(report.changed);
    assert!(report.verified);
    assert_eq!(report.restarted, vec!["deployment/api".to_owned()]);

    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("payments-db")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()[DATA_HASH_ANNOTATION],
        h1
    );
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
        "rotor"
    );
    assert!(secret.string_data.is_none());
    let data = secret_data(&client, "payments-db").await;
    assert_eq!(
        data,
        BTreeMap::from([
            (
                "DATABASE_URL".to_owned(),
                "postgres://payments_app:first-password@db.payments:5432/payments".to_owned()
            ),
            ("PGPASSWORD".to_owned(), "first-password".to_owned()),
        ])
    );
    let (annotations, generation1) = rollout_state(&client, "api").await;
    assert_eq!(annotations[&marker], h1);
    let restarted_at = annotations[RESTARTED_AT_ANNOTATION].clone();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&restarted_at).is_ok(),
        "{restarted_at}"
    );
    assert!(consumer.matches(&spec, &v1).await.unwrap());

    // Same values again: nothing changes, nothing rolls.
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert!(!report.changed);
    assert!(report.verified);
    assert!(report.restarted.is_empty());
    let (annotations2, generation2) = rollout_state(&client, "api").await;
    assert_eq!(annotations2, annotations);
    assert_eq!(generation2, generation1);

    // New values: changed, rolled once more, marker follows the new hash.
    let (v2, h2) = render(&spec, "second-password");
    assert_ne!(h1, h2);
    assert!(!consumer.matches(&spec, &v2).await.unwrap());
    let report = consumer.push(&spec, &v2, &h2).await.unwrap();
    assert!(report.changed);
    assert!(report.verified);
    assert_eq!(report.restarted, vec!["deployment/api".to_owned()]);
    let (annotations3, generation3) = rollout_state(&client, "api").await;
    assert_eq!(annotations3[&marker], h2);
    assert_eq!(generation3, generation1 + 1);
    assert_eq!(
        secret_data(&client, "payments-db").await["PGPASSWORD"],
        "second-password"
    );
    assert!(consumer.matches(&spec, &v2).await.unwrap());
    assert!(!consumer.matches(&spec, &v1).await.unwrap());
}

#[tokio::test]
async fn statefulsets_and_daemonsets_are_restarted_too() {
    let sts = StatefulSet {
        metadata: meta("db-proxy"),
        spec: StatefulSetSpec {
            selector: selector(),
            template: template(),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    };
    let ds = DaemonSet {
        metadata: meta("agent"),
        spec: DaemonSetSpec {
            selector: selector(),
            template: template(),
            ..DaemonSetSpec::default()
        },
        ..DaemonSet::default()
    };
    let (_kube, client) = fake_with_deployments(&[]).await;
    create(&client, &sts).await;
    create(&client, &ds).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let restart = vec![
        WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: "db-proxy".to_owned(),
        },
        WorkloadRef {
            kind: WorkloadKind::DaemonSet,
            name: "agent".to_owned(),
        },
    ];
    let spec = spec("payments-db", restart, false);
    let (v1, h1) = render(&spec, "pw-one");
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert_eq!(
        report.restarted,
        vec![
            "statefulset/db-proxy".to_owned(),
            "daemonset/agent".to_owned()
        ]
    );
    let marker = restart_annotation_key("payments-db");
    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get("db-proxy")
        .await
        .unwrap();
    let ds = Api::<DaemonSet>::namespaced(client.clone(), NS)
        .get("agent")
        .await
        .unwrap();
    for annotations in [
        sts.spec.template.metadata.unwrap().annotations.unwrap(),
        ds.spec.template.metadata.unwrap().annotations.unwrap(),
    ] {
        assert_eq!(annotations[&marker], h1);
        assert!(annotations.contains_key(RESTARTED_AT_ANNOTATION));
    }
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert!(report.restarted.is_empty());
}

#[tokio::test]
async fn keys_of_other_field_managers_are_preserved() {
    let (_kube, client) = fake_with_deployments(&[]).await;
    raw_apply(
        &client,
        "someone-else",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "shared", "namespace": NS},
            "data": {"CA_BUNDLE": b64("ca-bundle-bytes")}
        }),
    )
    .await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("shared", vec![], false);
    let (v1, h1) = render(&spec, "pw-shared");
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert!(report.changed);
    assert!(report.verified);
    let data = secret_data(&client, "shared").await;
    assert_eq!(data["CA_BUNDLE"], "ca-bundle-bytes");
    assert_eq!(data["PGPASSWORD"], "pw-shared");
    assert_eq!(data.len(), 3);
    // The foreign key does not make rotor's keys differ.
    assert!(consumer.matches(&spec, &v1).await.unwrap());
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert!(!report.changed);
}

#[tokio::test]
async fn a_key_owned_by_another_manager_conflicts_unless_forced() {
    let (_kube, client) = fake_with_deployments(&["api"]).await;
    let pw = canary();
    raw_apply(
        &client,
        "someone-else",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "contested", "namespace": NS},
            "data": {"PGPASSWORD": b64("theirs"), "OTHER": b64("kept")}
        }),
    )
    .await;
    let consumer = KubernetesConsumerClient::new(client.clone());

    let polite = spec("contested", vec![deploy("api")], false);
    let (v1, h1) = render(&polite, &pw);
    let err = consumer.push(&polite, &v1, &h1).await.unwrap_err();
    assert!(
        matches!(err, KubernetesError::FieldConflict { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), "field_conflict");
    assert!(!err.is_transient());
    let text = error_text(&err);
    assert!(text.contains("someone-else"), "{text}");
    assert!(text.contains("force: true"), "{text}");
    assert!(text.contains("payments/contested"), "{text}");
    assert_no_secret(&text, &[&pw, &b64(&pw)]);
    // Nothing was written and nothing rolled.
    assert_eq!(
        secret_data(&client, "contested").await["PGPASSWORD"],
        "theirs"
    );
    let (annotations, _) = rollout_state(&client, "api").await;
    assert!(!annotations.contains_key(&restart_annotation_key("contested")));

    let forced = spec("contested", vec![deploy("api")], true);
    let report = consumer.push(&forced, &v1, &h1).await.unwrap();
    assert!(report.changed);
    assert!(report.verified);
    assert_eq!(report.restarted, vec!["deployment/api".to_owned()]);
    let data = secret_data(&client, "contested").await;
    assert_eq!(data["PGPASSWORD"], pw);
    assert_eq!(data["OTHER"], "kept");
}

#[tokio::test]
async fn a_key_another_manager_writes_through_string_data_is_a_conflict_not_taken() {
    let (_kube, client) = fake_with_deployments(&["api"]).await;
    let theirs = canary();
    // helm-like: a server-side apply of stringData. The API server records the key as
    // f:stringData.f:PGPASSWORD, so rotor's apply of data.PGPASSWORD would not conflict
    // and helm's next apply would silently put its value back.
    raw_apply(
        &client,
        "helm",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "from-chart", "namespace": NS},
            "stringData": {"PGPASSWORD": theirs}
        }),
    )
    .await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let pw = canary();
    for force in [false, true] {
        let spec = spec("from-chart", vec![deploy("api")], force);
        let (v1, h1) = render(&spec, &pw);
        let err = consumer.push(&spec, &v1, &h1).await.unwrap_err();
        assert!(
            matches!(err, KubernetesError::KeyConflict { .. }),
            "{err:?}"
        );
        assert_eq!(err.kind(), "key_conflict");
        assert!(!err.is_transient());
        let text = error_text(&err);
        for expected in [
            "payments/from-chart",
            "PGPASSWORD",
            "stringData",
            "\"helm\"",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert_no_secret(&text, &[&pw, &b64(&pw), &theirs, &b64(&theirs)]);
    }
    // Nothing was taken and nothing rolled.
    assert_eq!(
        secret_data(&client, "from-chart").await["PGPASSWORD"],
        theirs
    );
    let (annotations, _) = rollout_state(&client, "api").await;
    assert!(!annotations.contains_key(&restart_annotation_key("from-chart")));

    // An update (not an apply) through stringData is recorded the same way.
    let params = PatchParams {
        field_manager: Some("operator".into()),
        ..PatchParams::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            "from-chart",
            &params,
            &Patch::Merge(json!({"stringData": {"DATABASE_URL": "postgres://elsewhere"}})),
        )
        .await
        .unwrap();
    let spec = spec("from-chart", vec![], false);
    let (v1, h1) = render(&spec, &pw);
    let text = error_text(&consumer.push(&spec, &v1, &h1).await.unwrap_err());
    assert!(
        text.contains("DATABASE_URL") && text.contains("\"operator\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_workload_is_named() {
    let (_kube, client) = fake_with_deployments(&["api"]).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("payments-db", vec![deploy("ghost"), deploy("api")], false);
    let (v1, h1) = render(&spec, "pw-ghost");
    let err = consumer.push(&spec, &v1, &h1).await.unwrap_err();
    match &err {
        KubernetesError::WorkloadMissing {
            namespace,
            workload,
        } => {
            assert_eq!(namespace, NS);
            assert_eq!(workload, "deployment/ghost");
        }
        other => panic!("expected WorkloadMissing, got {other:?}"),
    }
    assert_eq!(err.kind(), "workload_missing");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("deployment/ghost"), "{err}");
    // The Secret is applied and the workload that exists was still rolled, once.
    assert_eq!(
        secret_data(&client, "payments-db").await["PGPASSWORD"],
        "pw-ghost"
    );
    let (annotations, generation) = rollout_state(&client, "api").await;
    assert_eq!(annotations[&restart_annotation_key("payments-db")], h1);
    // A retry after the ghost appears rolls the ghost only.
    create(&client, &deployment("ghost")).await;
    let report = consumer.push(&spec, &v1, &h1).await.unwrap();
    assert_eq!(report.restarted, vec!["deployment/ghost".to_owned()]);
    assert_eq!(rollout_state(&client, "api").await.1, generation);
}

#[tokio::test]
async fn a_push_resumed_after_a_crash_restarts_exactly_once() {
    let (_kube, client) = fake_with_deployments(&["api"]).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("payments-db", vec![deploy("api")], false);
    let marker = restart_annotation_key("payments-db");
    let (v1, h1) = render(&spec, "before-crash");
    consumer.push(&spec, &v1, &h1).await.unwrap();
    let (_, generation1) = rollout_state(&client, "api").await;

    // rotor applied the new data as itself and died before restarting anything.
    let (v2, h2) = render(&spec, "after-crash");
    let data: serde_json::Map<String, serde_json::Value> = v2
        .keys()
        .map(|k| (k.to_owned(), json!(b64(v2.expose(k).unwrap()))))
        .collect();
    raw_apply(
        &client,
        "rotor",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "payments-db", "namespace": NS,
                "labels": {MANAGED_BY_LABEL: "rotor"},
                "annotations": {DATA_HASH_ANNOTATION: h2},
            },
            "type": "Opaque",
            "data": data,
        }),
    )
    .await;
    assert_eq!(rollout_state(&client, "api").await.0[&marker], h1);

    // The resumed push sees no data change but rolls what was missed, once.
    let report = consumer.push(&spec, &v2, &h2).await.unwrap();
    assert!(!report.changed);
    assert!(report.verified);
    assert_eq!(report.restarted, vec!["deployment/api".to_owned()]);
    let (annotations, generation2) = rollout_state(&client, "api").await;
    assert_eq!(annotations[&marker], h2);
    assert_eq!(generation2, generation1 + 1);

    let report = consumer.push(&spec, &v2, &h2).await.unwrap();
    assert!(report.restarted.is_empty());
    assert_eq!(rollout_state(&client, "api").await.1, generation2);
}

#[tokio::test]
async fn an_existing_secret_keeps_its_type_and_a_contrary_policy_is_refused() {
    let (_kube, client) = fake_with_deployments(&[]).await;
    raw_apply(
        &client,
        "someone-else",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tls", "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64("cert"), "tls.key": b64("key")}
        }),
    )
    .await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let mut wrong = spec("tls", vec![], false);
    wrong.secret_type = Some("Opaque".to_owned());
    let (v1, h1) = render(&wrong, "pw-tls");
    let err = consumer.push(&wrong, &v1, &h1).await.unwrap_err();
    assert!(
        matches!(err, KubernetesError::TypeMismatch { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("kubernetes.io/tls") && text.contains("Opaque"),
        "{text}"
    );

    // Without an explicit type the existing one is kept.
    let unset = spec("tls", vec![], false);
    consumer.push(&unset, &v1, &h1).await.unwrap();
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("tls")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret_data(&client, "tls").await["tls.key"], "key");
}

#[tokio::test]
async fn a_write_the_server_swallowed_fails_read_back_and_rolls_nothing() {
    let old = Secret {
        metadata: meta("payments-db"),
        data: Some(BTreeMap::from([
            (
                "PGPASSWORD".to_owned(),
                k8s_openapi::ByteString(b"old".to_vec()),
            ),
            (
                "DATABASE_URL".to_owned(),
                k8s_openapi::ByteString(b"old".to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    // Answers every Secret apply with the unchanged object, like a webhook that
    // silently mutates the write away.
    let swallowing = FakeKubeOptions {
        secret_patches: SecretPatches::Unchanged,
    };
    let (_kube, client) = fake_with(swallowing, &["api"]).await;
    create(&client, &old).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("payments-db", vec![deploy("api")], false);
    let pw = canary();
    let (v1, h1) = render(&spec, &pw);
    let err = consumer.push(&spec, &v1, &h1).await.unwrap_err();
    match &err {
        KubernetesError::ReadBackMismatch { fields, .. } => {
            assert!(fields.contains(&"PGPASSWORD".to_owned()), "{fields:?}");
            assert!(fields.contains(&"DATABASE_URL".to_owned()), "{fields:?}");
        }
        other => panic!("expected ReadBackMismatch, got {other:?}"),
    }
    assert_no_secret(&error_text(&err), &[&pw, &b64(&pw), "old"]);
    let (annotations, _) = rollout_state(&client, "api").await;
    assert!(!annotations.contains_key(&restart_annotation_key("payments-db")));
}

#[tokio::test]
async fn values_never_reach_errors_or_logs_even_when_the_server_echoes_them() {
    let logs = logs();
    let pw = canary();
    // An admission webhook that quotes the whole request in its denial, the worst case.
    let denying = FakeKubeOptions {
        secret_patches: SecretPatches::Refuse(Arc::new(|patch| {
            let decoded: Vec<String> = patch["data"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_str())
                .filter_map(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            format!("denied by webhook: request {patch} decoded {decoded:?}")
        })),
    };
    let (_kube, client) = fake_with(denying, &["api"]).await;
    let consumer = KubernetesConsumerClient::new(client.clone());
    let spec = spec("payments-db", vec![deploy("api")], false);
    let (v1, h1) = render(&spec, &pw);
    let err = consumer.push(&spec, &v1, &h1).await.unwrap_err();
    assert!(matches!(err, KubernetesError::Apply { .. }), "{err:?}");
    assert_eq!(err.kind(), "apply");
    assert!(!err.is_transient());
    let text = error_text(&err);
    assert!(text.contains("denied by webhook"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
    let url = v1.expose("DATABASE_URL").unwrap().to_owned();
    let secrets = [pw.as_str(), &b64(&pw), &url, &b64(&url)];
    assert_no_secret(&text, &secrets);

    // A successful round on a clean server logs nothing secret either.
    let (_clean_kube, clean) = fake_with_deployments(&["api"]).await;
    let consumer = KubernetesConsumerClient::new(clean);
    let spec = self::spec("leak-check", vec![deploy("api")], false);
    let (v1, h1) = render(&spec, &pw);
    consumer.push(&spec, &v1, &h1).await.unwrap();
    let other = canary();
    let (v2, h2) = render(&spec, &other);
    let report = consumer.push(&spec, &v2, &h2).await.unwrap();
    assert_no_secret(
        &format!(
            "{report:?} {report} {}",
            serde_json::to_string(&report).unwrap()
        ),
        &[&pw, &other],
    );

    let logged = logs.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("Kubernetes Secret applied.")
                && l.contains("secret=leak-check")
                && l.contains("changed=true")),
        "{logged}"
    );
    assert!(
        logged
            .lines()
            .any(|l| l.contains("Workload restarted.") && l.contains("workload=deployment/api")),
        "{logged}"
    );
    assert_no_secret(&logged, &secrets);
    assert_no_secret(&logged, &[&other, &b64(&other)]);
}
