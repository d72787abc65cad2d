//! Secrets' `stringData` on the fake API server, as a real kube-apiserver handles it:
//! folded into `data`, never stored or returned, and owned as `f:stringData.f:KEY`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use rotor_testkit::apiserver::client_from_kubeconfig;
use rotor_testkit::{FakeKube, unique};
use serde_json::{Value, json};

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// `(manager, operation, fieldsV1)` of each managedFields entry.
fn owners(secret: &Secret) -> Vec<(String, String, Value)> {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
                e.fields_v1
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn owner_of<'a>(owners: &'a [(String, String, Value)], manager: &str) -> &'a Value {
    &owners
        .iter()
        .find(|(m, _, _)| m == manager)
        .unwrap_or_else(|| panic!("no entry of {manager} in {owners:?}"))
        .2
}

async fn fixture(prefix: &str) -> (FakeKube, Api<Secret>) {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let ns = unique(prefix);
    kube.create_namespace(&ns).await;
    let secrets = Api::namespaced(client.clone(), &ns);
    (kube, secrets)
}

#[tokio::test]
async fn a_create_with_string_data_is_stored_in_data_and_owned_as_string_data() {
    let (_kube, secrets) = fixture("sd-create").await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                "A".to_owned(),
                k8s_openapi::ByteString(b"from-data".to_vec()),
            ),
            ("B".to_owned(), k8s_openapi::ByteString(b"kept".to_vec())),
        ])),
        string_data: Some(BTreeMap::from([
            ("A".to_owned(), "from-string-data".to_owned()),
            ("C".to_owned(), "added".to_owned()),
        ])),
        ..Secret::default()
    };
    let params = PostParams {
        field_manager: Some("ops".into()),
        ..PostParams::default()
    };
    let created = secrets.create(&params, &secret).await.unwrap();
    for answer in [created, secrets.get("s").await.unwrap()] {
        assert!(answer.string_data.is_none(), "stringData is write-only");
        assert_eq!(
            data(&answer),
            BTreeMap::from([
                ("A".into(), "from-string-data".into()),
                ("B".into(), "kept".into()),
                ("C".into(), "added".into()),
            ]),
            "stringData wins over data"
        );
        let owners = owners(&answer);
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].1, "Update");
        assert_eq!(
            owner_of(&owners, "ops"),
            &json!({"f:stringData": {"f:A": {}, "f:C": {}}})
        );
    }
}

#[tokio::test]
async fn an_apply_of_data_does_not_conflict_with_string_data_and_the_first_writer_wins_back() {
    let (_kube, secrets) = fixture("sd-apply").await;
    let helm = |value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
               "stringData": {"PGPASSWORD": value}})
    };
    let apply_helm = async || {
        secrets
            .patch(
                "db",
                &PatchParams::apply("helm"),
                &Patch::Apply(helm("helm-value")),
            )
            .await
            .unwrap()
    };
    let applied = apply_helm().await;
    assert!(applied.string_data.is_none());
    assert_eq!(data(&applied)["PGPASSWORD"], "helm-value");
    assert_eq!(
        owner_of(&owners(&applied), "helm"),
        &json!({"f:stringData": {"f:PGPASSWORD": {}}}),
        "owned through stringData, not data"
    );

    // Another manager applies data.PGPASSWORD: no conflict, as on a real server.
    let rotor = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                       "data": {"PGPASSWORD": b64("rotor-value")}});
    let taken = secrets
        .patch("db", &PatchParams::apply("rotor"), &Patch::Apply(&rotor))
        .await
        .expect("no conflict with an owner of stringData");
    assert_eq!(data(&taken)["PGPASSWORD"], "rotor-value");
    let owners_now = owners(&taken);
    assert_eq!(
        owner_of(&owners_now, "helm"),
        &json!({"f:stringData": {"f:PGPASSWORD": {}}})
    );
    assert_eq!(
        owner_of(&owners_now, "rotor"),
        &json!({"f:data": {"f:PGPASSWORD": {}}})
    );

    // The first manager's next apply puts its value back, again without a conflict.
    let back = apply_helm().await;
    assert_eq!(data(&back)["PGPASSWORD"], "helm-value");
    assert_eq!(
        data(&secrets.get("db").await.unwrap())["PGPASSWORD"],
        "helm-value"
    );
}

#[tokio::test]
async fn patches_and_updates_with_string_data_are_folded_too() {
    let (kube, secrets) = fixture("sd-patch").await;
    secrets
        .patch(
            "p",
            &PatchParams::apply("rotor"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p"},
                                 "data": {"K": b64("rotor")}}),
            ),
        )
        .await
        .unwrap();

    // A merge patch without fieldManager: the manager is the User-Agent's first word
    // (kube 4 sends none: the empty name, as a real server records it).
    let patched = secrets
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"K": "merged"}})),
        )
        .await
        .unwrap();
    assert!(patched.string_data.is_none());
    assert_eq!(data(&patched)["K"], "merged");
    let owners_now = owners(&patched);
    let (agent, operation, fields) = owners_now
        .iter()
        .find(|(m, _, _)| m != "rotor")
        .expect("an entry for the patcher");
    assert!(!agent.contains('/'), "{agent}");
    assert_eq!(operation, "Update");
    assert_eq!(fields, &json!({"f:stringData": {"f:K": {}}}));
    // rotor still owns data.K: it never sees a conflict.
    assert_eq!(
        owner_of(&owners_now, "rotor"),
        &json!({"f:data": {"f:K": {}}})
    );

    // A replace (PUT) with stringData and a named manager.
    let mut current = secrets.get("p").await.unwrap();
    current.string_data = Some(BTreeMap::from([("K".into(), "replaced".into())]));
    let params = PostParams {
        field_manager: Some("operator".into()),
        ..PostParams::default()
    };
    let replaced = secrets.replace("p", &params, &current).await.unwrap();
    assert!(replaced.string_data.is_none());
    assert_eq!(data(&replaced)["K"], "replaced");
    let owners_now = owners(&replaced);
    assert_eq!(
        owner_of(&owners_now, "operator"),
        &json!({"f:stringData": {"f:K": {}}})
    );
    assert!(
        !owners_now.iter().any(|(m, _, _)| m == agent),
        "the operator took K from the earlier patcher: {owners_now:?}"
    );
    drop(kube);
}
