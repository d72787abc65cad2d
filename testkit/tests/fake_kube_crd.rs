//! Custom resources, the status subresource, generations, structural schemas and Events
//! in the fake API server, over HTTPS with kube clients, as rotor's agent will use them:
//! a `RotationPolicy` CRD like rotor's, its objects, their `/status`, and
//! `events.k8s.io/v1` Events about them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use rotor_testkit::apiserver::client_from_kubeconfig;
use rotor_testkit::apiserver::crd::example_crd;
use rotor_testkit::{FakeKube, unique};
use serde_json::{Value, json};

fn policy(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"credential": {"type": "postgres", "role": "app"},
                    "vault": {"mount": "database"}}})
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rotor.dev", "v1", "RotationPolicy"),
        "rotationpolicies",
    )
}

fn refusal(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason, status.message),
        other => panic!("expected an API error, got {other}"),
    }
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("an object")
}

/// A server with the CRD installed and a namespace; the admin's policies API there.
async fn fixture(prefix: &str) -> (FakeKube, kube::Client, String, Api<DynamicObject>) {
    let kube = FakeKube::start().await;
    let ns = unique(prefix);
    kube.create_namespace(&ns).await;
    kube.install_crd(&example_crd()).await;
    let client = client_from_kubeconfig(&kube.kubeconfig).await.unwrap();
    let api = Api::namespaced_with(client.clone(), &ns, &resource());
    (kube, client, ns, api)
}

#[tokio::test]
async fn a_crd_makes_its_resource_served_and_discoverable() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig).await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource());
    let (code, _, _) = refusal(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 404, "no CRD, no resource");
    let groups = client.list_api_groups().await.unwrap();
    assert!(!groups.groups.iter().any(|g| g.name == "rotor.dev"));

    kube.install_crd(&example_crd()).await;
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let stored = crds.get("rotationpolicies.rotor.dev").await.unwrap();
    let conditions = stored.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{conditions:?}"
    );
    let groups = client.list_api_groups().await.unwrap();
    let group = groups
        .groups
        .iter()
        .find(|g| g.name == "rotor.dev")
        .expect("rotor.dev served");
    assert_eq!(
        group.preferred_version.as_ref().unwrap().group_version,
        "rotor.dev/v1"
    );
    let resources = client
        .list_api_group_resources("rotor.dev/v1")
        .await
        .unwrap();
    let main = resources
        .resources
        .iter()
        .find(|r| r.name == "rotationpolicies")
        .unwrap();
    assert!(main.namespaced);
    assert_eq!(main.kind, "RotationPolicy");
    assert_eq!(main.short_names.as_deref(), Some(&["rp".to_string()][..]));
    assert!(main.verbs.iter().any(|v| v == "watch"));
    let status = resources
        .resources
        .iter()
        .find(|r| r.name == "rotationpolicies/status")
        .unwrap();
    assert_eq!(status.verbs, ["get", "patch", "update"]);

    // CRUD and list.
    let created = api
        .create(&PostParams::default(), &dynamic(policy("default", "db")))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    api.delete("db", &Default::default()).await.unwrap();
    let (code, _, _) = refusal(api.get("db").await.unwrap_err());
    assert_eq!(code, 404);
}

#[tokio::test]
async fn status_and_spec_are_written_apart_and_generation_counts_spec_changes() {
    let (_kube, _client, ns, api) = fixture("crd-status").await;
    let mut with_status = policy(&ns, "db");
    with_status["status"] = json!({"nextRotation": "2030-01-01T00:00:00Z"});
    let created = api
        .create(&PostParams::default(), &dynamic(with_status))
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "a create drops the status"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // Status through /status: apply with rotor's field manager, then a merge patch.
    let applied = api
        .patch_status(
            "db",
            &PatchParams::apply("rotor"),
            &Patch::Apply(json!({"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
                "metadata": {"name": "db"},
                "spec": {"credential": {"type": "mysql"}},
                "status": {"observedGeneration": 1,
                           "conditions": [{"type": "Ready", "status": "True", "reason": "Rotated"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["conditions"][0]["reason"], "Rotated");
    assert_eq!(
        applied.data["spec"]["credential"]["type"], "postgres",
        "/status leaves the spec"
    );
    assert_eq!(applied.metadata.generation, Some(1));
    let entry = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("rotor"))
        .expect("rotor owns the status");
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    let merged = api
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nextRotation": "2030-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data["status"]["nextRotation"],
        "2030-01-01T00:00:00Z"
    );
    assert_eq!(merged.data["status"]["observedGeneration"], 1);

    // The main resource: metadata changes keep the generation, spec changes bump it, a
    // status in the write is ignored.
    let labelled = api
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let changed = api
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"schedule": "@daily"}, "status": {"observedGeneration": 7}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.data["status"]["observedGeneration"], 1);
    let mut replaced = changed.clone();
    replaced.data["spec"]["schedule"] = json!("@weekly");
    replaced.data["status"] = json!({});
    let replaced = api
        .replace("db", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(3));
    assert_eq!(replaced.data["status"]["observedGeneration"], 1);
    assert_eq!(api.get("db").await.unwrap().metadata.generation, Some(3));
}

#[tokio::test]
async fn invalid_custom_resources_are_refused_and_unknown_fields_pruned() {
    let (_kube, _client, ns, api) = fixture("crd-schema").await;
    let mut missing = policy(&ns, "missing");
    missing["spec"]
        .as_object_mut()
        .unwrap()
        .remove("credential");
    let (code, reason, message) = refusal(
        api.create(&PostParams::default(), &dynamic(missing))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "RotationPolicy.rotor.dev \"missing\" is invalid: spec.credential: Required value"
    );
    let mut wrong = policy(&ns, "wrong");
    wrong["spec"]["credential"]["type"] = json!("oracle");
    wrong["spec"]["schedule"] = json!(5);
    let (_, _, message) = refusal(
        api.create(&PostParams::default(), &dynamic(wrong))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        message,
        "RotationPolicy.rotor.dev \"wrong\" is invalid: [spec.credential.type: Unsupported value: \"oracle\": supported values: \"postgres\", \"mysql\", \"redis\", spec.schedule: Invalid value: \"integer\": spec.schedule in body must be of type string: \"integer\"]"
    );

    let mut extra = policy(&ns, "extra");
    extra["spec"]["typo"] = json!(true);
    extra["spec"]["vault"]["anything"] = json!({"kept": 1});
    let created = api
        .create(&PostParams::default(), &dynamic(extra))
        .await
        .unwrap();
    assert!(
        created.data["spec"].get("typo").is_none(),
        "unknown fields are pruned"
    );
    assert_eq!(created.data["spec"]["vault"]["anything"]["kept"], 1);
    // A patch whose result is invalid is refused too, and changes nothing.
    let (code, _, message) = refusal(
        api.patch(
            "extra",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"vault": null}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(message.ends_with("spec.vault: Required value"), "{message}");
    assert!(
        api.get("extra").await.unwrap().data["spec"]
            .get("vault")
            .is_some()
    );
}

#[tokio::test]
async fn custom_resources_are_watched_from_the_change_feed() {
    use futures::{StreamExt, TryStreamExt};
    let (_kube, _client, ns, api) = fixture("crd-watch").await;
    let list = api.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let stream = api
        .watch(&kube::api::WatchParams::default().timeout(10), &version)
        .await
        .unwrap();
    api.create(&PostParams::default(), &dynamic(policy(&ns, "watched")))
        .await
        .unwrap();
    api.patch_status(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
    )
    .await
    .unwrap();
    let events: Vec<_> = stream.take(2).try_collect().await.unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            kube::api::WatchEvent::Added(o) => {
                format!("ADDED {}", o.metadata.name.clone().unwrap())
            }
            kube::api::WatchEvent::Modified(o) => format!(
                "MODIFIED {} {}",
                o.metadata.name.clone().unwrap(),
                o.data["status"]["observedGeneration"]
            ),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["ADDED watched", "MODIFIED watched 1"]);
}

#[tokio::test]
async fn a_test_plays_the_deployment_controller_through_status() {
    let kube = FakeKube::start().await;
    let ns = unique("workload-status");
    kube.create_namespace(&ns).await;
    kube.create_deployment(&ns, "web").await;
    let client = client_from_kubeconfig(&kube.kubeconfig).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let after = kube
        .set_workload_status(
            "Deployment",
            &ns,
            "web",
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "readyReplicas": 1, "availableReplicas": 1}),
        )
        .await;
    assert_eq!(after["status"]["readyReplicas"], 1);
    assert_eq!(
        after["metadata"]["generation"], 1,
        "a status write is no spec change"
    );
    // A main-resource write cannot touch the status; a restart bumps the generation.
    let restarted = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}},
                "status": {"readyReplicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(restarted.metadata.generation, Some(2));
    assert_eq!(restarted.status.unwrap().ready_replicas, Some(1));
    // Secrets have no generation on a real server.
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(secret.metadata.generation, None);
    assert_eq!(secrets.get("s").await.unwrap().metadata.generation, None);
}

/// The `events.k8s.io/v1` Events of `ns` for `client`.
fn events_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    )
}

fn event(ns: &str, name: &str, regarding: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
           "metadata": {"name": name, "namespace": ns},
           "regarding": {"apiVersion": "rotor.dev/v1", "kind": "RotationPolicy",
                         "name": regarding, "namespace": ns},
           "eventTime": "2026-12-08T00:00:00.000000Z",
           "reportingController": "rotor", "reportingInstance": "rotor-0",
           "action": "Rotate", "reason": "Rotated", "type": "Normal",
           "note": "rotated the credential"})
}

#[tokio::test]
async fn events_are_created_patched_into_a_series_and_listed_by_what_they_regard() {
    let (kube, client, ns, _) = fixture("events").await;
    let events = events_api(client, &ns);
    events
        .create(&PostParams::default(), &dynamic(event(&ns, "db.1", "db")))
        .await
        .unwrap();
    events
        .create(
            &PostParams::default(),
            &dynamic(event(&ns, "other.1", "other")),
        )
        .await
        .unwrap();
    events
        .patch(
            "db.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-12-08T00:01:00.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    let about_db = kube.events_for("RotationPolicy", &ns, "db").await;
    assert_eq!(about_db.len(), 1, "{about_db:?}");
    assert_eq!(about_db[0]["series"]["count"], 2);
    assert_eq!(about_db[0]["reportingController"], "rotor");
    assert!(about_db[0]["metadata"].get("generation").is_none());

    let mut bad = event(&ns, "bad", "db");
    bad.as_object_mut().unwrap().remove("reportingController");
    bad["type"] = json!("Info");
    let (code, _, message) = refusal(
        events
            .create(&PostParams::default(), &dynamic(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Event.events.k8s.io \"bad\" is invalid: [reportingController: Required value, type: Invalid value: \"\": has invalid value: Info]"
    );
}

#[tokio::test]
async fn rbac_tells_the_status_subresource_from_the_resource() {
    let (kube, _client, ns, admin) = fixture("crd-rbac").await;
    admin
        .create(&PostParams::default(), &dynamic(policy(&ns, "db")))
        .await
        .unwrap();
    kube.create_objects(&[
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "rotor", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "rotor", "namespace": ns},
               "rules": [
                   {"apiGroups": ["rotor.dev"], "resources": ["rotationpolicies"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["rotor.dev"], "resources": ["rotationpolicies/status"], "verbs": ["update", "patch"]},
                   {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "rotor", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotor"},
               "subjects": [{"kind": "ServiceAccount", "name": "rotor", "namespace": ns}]}),
    ])
    .await;
    let sa = kube.service_account_kubeconfig(&ns, "rotor").await;
    let client = client_from_kubeconfig(&sa.path).await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    api.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
    )
    .await
    .expect("the Role grants rotationpolicies/status");
    let (code, _, message) = refusal(
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "x"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot patch resource \"rotationpolicies\" in API group \"rotor.dev\""),
        "{message}"
    );
    let events = events_api(client, &ns);
    events
        .create(&PostParams::default(), &dynamic(event(&ns, "db.1", "db")))
        .await
        .unwrap();
    let (code, _, _) = refusal(events.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403, "the Role grants no list of events");
}
