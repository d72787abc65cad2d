//! The fake API server over real HTTPS, driven through kube clients built from its kubeconfig.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use rotor_testkit::apiserver::{TESTKIT_USER_AGENT, client_from_kubeconfig};
use rotor_testkit::{FakeKube, FakeKubeOptions, SecretPatches, unique};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Secret as rotor writes it: `data` (base64 on the wire), never `stringData`.
fn secret(ns: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn value_of(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().expect("secret has data")[key].0;
    String::from_utf8(bytes.clone()).expect("utf-8 value")
}

/// A server-side apply of `secret` by field manager `rotor`.
async fn rotor_apply(secrets: &Api<Secret>, secret: &Secret) -> kube::Result<Secret> {
    let name = secret.metadata.name.as_deref().expect("a named Secret");
    secrets
        .patch(name, &PatchParams::apply("rotor"), &Patch::Apply(secret))
        .await
}

/// A client of the server, built from its kubeconfig as any client would be.
async fn client(kube: &FakeKube) -> kube::Client {
    client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client from the kubeconfig")
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A TLS client configuration that trusts only the server's CA.
fn trusting(kube: &FakeKube) -> Arc<rustls::ClientConfig> {
    rotor_testkit::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(kube.ca_pem().as_bytes()).expect("CA PEM"))
        .expect("CA certificate");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One raw HTTP/1.1 request over TLS; returns the status code and the body.
async fn raw_request(kube: &FakeKube, request: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(kube.addr)
        .await
        .expect("connect");
    let mut stream = tokio_rustls::TlsConnector::from(trusting(kube))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server's CA");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    // The server closes after `Connection: close`; what arrived before counts.
    let _ = stream.read_to_end(&mut bytes).await;
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn server_side_apply_creates_a_secret_that_reads_back() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("ssa");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    let applied = secrets
        .patch(
            "db-creds",
            &PatchParams::apply("rotor"),
            &Patch::Apply(secret(&ns, "db-creds", "password", "first-value")),
        )
        .await
        .expect("apply creates the secret");
    assert_eq!(value_of(&applied, "password"), "first-value");

    let read = secrets.get("db-creds").await.expect("read back");
    assert_eq!(value_of(&read, "password"), "first-value");
    assert_eq!(read.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert!(read.metadata.resource_version.is_some());

    // Re-applying by the same manager updates in place.
    secrets
        .patch(
            "db-creds",
            &PatchParams::apply("rotor"),
            &Patch::Apply(secret(&ns, "db-creds", "password", "second-value")),
        )
        .await
        .expect("same manager re-applies");
    let read = secrets.get("db-creds").await.expect("read back");
    assert_eq!(value_of(&read, "password"), "second-value");

    // Nothing leaks across namespaces.
    let other: Api<Secret> = Api::namespaced(client.clone(), "default");
    let err = other.get("db-creds").await.unwrap_err();
    assert_eq!(api_code(&err), Some(404), "{err}");
}

#[tokio::test]
async fn conflicting_apply_by_another_manager_is_409_unless_forced() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("conflict");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "token",
            &PatchParams::apply("rotor"),
            &Patch::Apply(secret(&ns, "token", "value", "rotor-owned")),
        )
        .await
        .expect("rotor applies");

    let err = secrets
        .patch(
            "token",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(secret(&ns, "token", "value", "intruder")),
        )
        .await
        .expect_err("a second manager must conflict");
    assert_eq!(api_code(&err), Some(409), "{err}");
    let read = secrets.get("token").await.expect("read back");
    assert_eq!(value_of(&read, "value"), "rotor-owned");

    secrets
        .patch(
            "token",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(secret(&ns, "token", "value", "forced")),
        )
        .await
        .expect("a forced apply takes ownership");
    let read = secrets.get("token").await.expect("read back");
    assert_eq!(value_of(&read, "value"), "forced");

    // Now rotor is the one that conflicts, until it forces.
    let err = secrets
        .patch(
            "token",
            &PatchParams::apply("rotor"),
            &Patch::Apply(secret(&ns, "token", "value", "rotor-again")),
        )
        .await
        .expect_err("ownership moved");
    assert_eq!(api_code(&err), Some(409), "{err}");
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_409() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("stale");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret(&ns, "s", "k", "v1"))
        .await
        .expect("create");
    let original = secrets.get("s").await.expect("get");

    let mut first = original.clone();
    first.data = secret(&ns, "s", "k", "v2").data;
    secrets
        .replace("s", &PostParams::default(), &first)
        .await
        .expect("replace with the current resourceVersion");

    let mut stale = original;
    stale.data = secret(&ns, "s", "k", "v3").data;
    let err = secrets
        .replace("s", &PostParams::default(), &stale)
        .await
        .expect_err("stale resourceVersion");
    assert_eq!(api_code(&err), Some(409), "{err}");
    assert_eq!(value_of(&secrets.get("s").await.expect("get"), "k"), "v2");
}

#[tokio::test]
async fn restarting_a_deployment_sets_restarted_at() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("restart");
    kube.create_namespace(&ns).await;
    kube.create_deployment(&ns, "web").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    let before = deployments.get("web").await.expect("get");
    let template_annotations = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    };
    assert!(!template_annotations(&before).contains_key("kube.kubernetes.io/restartedAt"));

    deployments.restart("web").await.expect("restart");
    let after = deployments.get("web").await.expect("get");
    let stamp = template_annotations(&after)
        .get("kube.kubernetes.io/restartedAt")
        .cloned()
        .expect("restartedAt annotation");
    assert!(!stamp.is_empty());
    assert_ne!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    // The rest of the pod template is untouched.
    let image = after.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.k8s.io/pause:3.10"));
}

/// A workload of `kind` with one `pause` container, as JSON.
fn workload(kind: &str, ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "pause"}]}
            }
        }
    })
}

#[tokio::test]
async fn statefulsets_and_daemonsets_restart_too() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("workloads");
    kube.create_namespace(&ns).await;

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let obj: StatefulSet = serde_json::from_value(workload("StatefulSet", &ns, "db")).unwrap();
    sts.create(&PostParams::default(), &obj)
        .await
        .expect("create sts");
    sts.restart("db").await.expect("restart sts");
    let annotations = sts
        .get("db")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations;
    assert!(
        annotations
            .unwrap()
            .contains_key("kube.kubernetes.io/restartedAt")
    );

    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let obj: DaemonSet = serde_json::from_value(workload("DaemonSet", &ns, "agent")).unwrap();
    ds.create(&PostParams::default(), &obj)
        .await
        .expect("create ds");
    ds.restart("agent").await.expect("restart ds");
    let annotations = ds
        .get("agent")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations;
    assert!(
        annotations
            .unwrap()
            .contains_key("kube.kubernetes.io/restartedAt")
    );

    let err = sts
        .restart("missing")
        .await
        .expect_err("no such statefulset");
    assert_eq!(api_code(&err), Some(404), "{err}");
}

#[tokio::test]
async fn leases_support_optimistic_locking_for_leader_election() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("lease");
    kube.create_namespace(&ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "rotor-leader", "namespace": ns},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let current = leases.get("rotor-leader").await.expect("get lease");

    let mut take = current.clone();
    take.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    leases
        .replace("rotor-leader", &PostParams::default(), &take)
        .await
        .expect("replica-b takes the lease");

    let mut late = current;
    late.spec.as_mut().unwrap().holder_identity = Some("replica-c".into());
    let err = leases
        .replace("rotor-leader", &PostParams::default(), &late)
        .await
        .expect_err("replica-c raced with a stale resourceVersion");
    assert_eq!(api_code(&err), Some(409), "{err}");
    let holder = leases
        .get("rotor-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-b"));
}

#[tokio::test]
async fn helpers_create_listable_objects_and_refuse_duplicates() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let ns = unique("helpers");
    kube.create_namespace(&ns).await;
    kube.create_deployment(&ns, "a").await;
    kube.create_deployment(&ns, "b").await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", ns.as_str()] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let listed = deployments
        .list(&ListParams::default().labels("app=b"))
        .await
        .expect("list by label");
    assert_eq!(listed.items.len(), 1);

    let err = namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect_err("duplicate namespace");
    assert_eq!(api_code(&err), Some(409), "{err}");
}

#[tokio::test]
async fn requests_need_the_kubeconfig_token_but_version_and_health_do_not() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let (code, body) = raw_request(
        &kube,
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");

    let (code, body) = raw_request(
        &kube,
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 401, "{body}");

    let (code, body) = raw_request(
        &kube,
        "GET /healthz HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
    assert!(kube.url().starts_with("https://127.0.0.1:"));
}

#[tokio::test]
async fn discovery_finds_the_resource_types_rotor_uses() {
    let kube = FakeKube::start().await;
    let client = client(&kube).await;
    let discovery = kube::Discovery::new(client.clone())
        .filter(&["", "apps", "coordination.k8s.io"])
        .run()
        .await
        .expect("discovery");
    for (group, kind) in [
        ("", "Secret"),
        ("", "Namespace"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("coordination.k8s.io", "Lease"),
    ] {
        let found = discovery
            .get(group)
            .is_some_and(|g| g.recommended_kind(kind).is_some());
        assert!(found, "{group}/{kind} not discovered");
    }
}

#[tokio::test]
async fn plain_http_and_unknown_cas_are_refused() {
    let kube = FakeKube::start().await;
    // Plain HTTP to the TLS port: no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(kube.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes).await;
    assert!(!String::from_utf8_lossy(&bytes).contains("200 OK"));
    // Another server's CA does not verify this server.
    let other = FakeKube::start().await;
    let tcp = tokio::net::TcpStream::connect(kube.addr)
        .await
        .expect("connect");
    let refused = tokio_rustls::TlsConnector::from(trusting(&other))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "a certificate from another run's CA");
}

#[tokio::test]
async fn protobuf_bodies_are_unsupported_media() {
    let kube = FakeKube::start().await;
    let token = kube.admin_token();
    let (code, body) = raw_request(
        &kube,
        &format!(
            "POST /api/v1/namespaces HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/vnd.kubernetes.protobuf\r\nContent-Length: 4\r\nConnection: close\r\n\r\nk8s\0"
        ),
    )
    .await;
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("UnsupportedMediaType"), "{body}");
}

#[test]
fn the_server_outlives_a_blocked_test_thread() {
    // A test that blocks its own thread (e.g. waiting for a child process) must not stall
    // the server: it runs on its own thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kube = runtime.block_on(FakeKube::start());
    let addr = kube.addr;
    let config = trusting(&kube);
    let status = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let tls = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
    .join()
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    drop(kube);
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let kube = FakeKube::start().await;
    let addr = kube.addr;
    drop(kube);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server still accepts connections after drop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_request_is_recorded_with_its_user_agent() {
    let kube = FakeKube::start().await;
    let ns = unique("agents");
    kube.create_namespace(&ns).await;
    let (code, _) = raw_request(
        &kube,
        "GET /healthz HTTP/1.1\r\nHost: fake\r\nUser-Agent: probe/1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    let seen = kube.user_agents().seen();
    let create = seen
        .iter()
        .find(|s| s.request == "POST /api/v1/namespaces")
        .expect("the namespace create was recorded");
    assert_eq!(create.user_agent.as_deref(), Some(TESTKIT_USER_AGENT));
    let probe = seen.last().expect("the probe was recorded");
    assert_eq!(probe.request, "GET /healthz");
    assert_eq!(probe.user_agent.as_deref(), Some("probe/1"));
}

#[tokio::test]
async fn secret_applies_can_be_swallowed_or_refused() {
    let swallowing = FakeKube::start_with(FakeKubeOptions {
        secret_patches: SecretPatches::Unchanged,
    })
    .await;
    let ns = unique("swallow");
    swallowing.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client(&swallowing).await, &ns);
    secrets
        .create(&PostParams::default(), &secret(&ns, "db", "k", "old"))
        .await
        .expect("a create is not a patch");
    let new = secret(&ns, "db", "k", "new");
    let answered = rotor_apply(&secrets, &new)
        .await
        .expect("the apply is answered 200");
    assert_eq!(value_of(&answered, "k"), "old");
    assert_eq!(value_of(&secrets.get("db").await.unwrap(), "k"), "old");

    let refusing = FakeKube::start_with(FakeKubeOptions {
        secret_patches: SecretPatches::Refuse(std::sync::Arc::new(|patch| {
            format!("denied: {}", patch["metadata"]["name"])
        })),
    })
    .await;
    refusing.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client(&refusing).await, &ns);
    let err = rotor_apply(&secrets, &new)
        .await
        .expect_err("the apply is refused");
    assert_eq!(api_code(&err), Some(422), "{err}");
    assert!(err.to_string().contains("denied: \"db\""), "{err}");
    assert_eq!(secrets.get_opt("db").await.unwrap(), None);
    // Other writes are served as usual.
    refusing.create_deployment(&ns, "web").await;
}
