//! RBAC in the fake API server, over HTTP: ServiceAccount tokens from TokenRequests,
//! Roles, ClusterRoles and bindings created through the API, and the real server's
//! `401`/`403` answers. The admin (the kubeconfig's token) stays unrestricted.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use rotor_testkit::apiserver::client_from_kubeconfig;
use rotor_testkit::{FakeKube, unique};
use serde_json::{Value, json};

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The API's refusal: (code, reason, message).
/// The admin's client (the kubeconfig's token).
async fn admin(kube: &FakeKube) -> kube::Client {
    client_from_kubeconfig(&kube.kubeconfig).await.unwrap()
}

fn refusal(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason, status.message),
        other => panic!("expected an API error, got {other}"),
    }
}

/// A namespace `ns` with ServiceAccount `app` that may `verbs` the Secrets `names`
/// there (a Role and a RoleBinding), and the Secrets `existing` (created by the admin);
/// answers the admin's view of the namespace's Secrets.
async fn world(
    kube: &FakeKube,
    ns: &str,
    names: &[&str],
    verbs: &[&str],
    existing: &[&str],
) -> Api<Secret> {
    kube.create_namespace(ns).await;
    kube.create_objects(&[
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "app", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "secrets", "namespace": ns},
               "rules": [{"apiGroups": [""], "resources": ["secrets"],
                          "resourceNames": names, "verbs": verbs}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "app-secrets", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"},
               "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]}),
    ])
    .await;
    let admin: Api<Secret> = Api::namespaced(admin(kube).await, ns);
    for name in existing {
        admin
            .create(&PostParams::default(), &secret(name, "one"))
            .await
            .expect("the admin is unrestricted");
    }
    admin
}

#[tokio::test]
async fn a_service_account_may_do_what_its_role_grants_and_nothing_else() {
    let kube = FakeKube::start().await;
    let ns = unique("rbac");
    let verbs = ["get", "patch", "create"];
    let admin = world(&kube, &ns, &["db"], &verbs, &["db", "other"]).await;

    let login = kube.service_account_kubeconfig(&ns, "app").await;
    assert_eq!(login.user, format!("system:serviceaccount:{ns}:app"));
    let client = client_from_kubeconfig(&login.path).await.expect("client");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets.get("db").await.expect("get of the named Secret");
    secrets
        .patch(
            "db",
            &PatchParams::apply("rotor"),
            &Patch::Apply(secret("db", "three")),
        )
        .await
        .expect("apply to the named Secret");

    let user = format!("system:serviceaccount:{ns}:app");
    let (code, reason, message) = refusal(
        secrets
            .delete("db", &DeleteParams::default())
            .await
            .expect_err("delete is not granted"),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        format!(
            "secrets \"db\" is forbidden: User \"{user}\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    let (code, _, message) = refusal(secrets.get("other").await.expect_err("another name"));
    assert_eq!(code, 403);
    assert!(
        message.starts_with("secrets \"other\" is forbidden: "),
        "{message}"
    );
    let (_, _, message) = refusal(
        secrets
            .list(&ListParams::default())
            .await
            .expect_err("no list"),
    );
    assert_eq!(
        message,
        format!(
            "secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    // A POST carries no name: a resourceNames rule cannot grant it.
    let (code, _, message) = refusal(
        secrets
            .create(&PostParams::default(), &secret("db2", "x"))
            .await
            .expect_err("no create by POST"),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot create resource \"secrets\""),
        "{message}"
    );
    // The same Secret elsewhere is not granted.
    let default: Api<Secret> = Api::namespaced(client.clone(), "default");
    let (code, _, _) = refusal(default.get("db").await.expect_err("another namespace"));
    assert_eq!(code, 403);
    // The admin's view: nothing the refused requests asked for happened.
    assert!(admin.get_opt("db2").await.expect("get").is_none());
    assert!(admin.get_opt("db").await.expect("get").is_some());

    // Discovery and /version are open to every authenticated user.
    client.apiserver_version().await.expect("/version");
    let discovery = kube::Discovery::new(client.clone())
        .filter(&[""])
        .run()
        .await
        .expect("discovery as the ServiceAccount");
    assert!(
        discovery
            .get("")
            .is_some_and(|g| g.recommended_kind("Secret").is_some())
    );
}

#[tokio::test]
async fn a_server_side_apply_that_creates_is_authorised_as_create_of_that_name() {
    let kube = FakeKube::start().await;
    let ns = unique("rbac-ssa");
    // patch only: applying to an existing Secret works, creating one does not.
    let admin = world(&kube, &ns, &["db", "new"], &["get", "patch"], &["db"]).await;
    let login = kube.service_account_kubeconfig(&ns, "app").await;
    let client = client_from_kubeconfig(&login.path).await.expect("client");
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let apply = PatchParams::apply("rotor");
    secrets
        .patch("db", &apply, &Patch::Apply(secret("db", "two")))
        .await
        .expect("apply to an existing Secret is a patch");
    let (code, reason, message) = refusal(
        secrets
            .patch("new", &apply, &Patch::Apply(secret("new", "x")))
            .await
            .expect_err("an apply that creates needs create"),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    // The real server's message for this check carries only RBAC's (empty) reason.
    assert_eq!(message, "secrets \"new\" is forbidden: ");
    assert!(admin.get_opt("new").await.expect("get").is_none());

    // With create on that name, the same apply creates it.
    kube.create_objects(&[
        json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "create-new", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["secrets"],
                   "resourceNames": ["new"], "verbs": ["create"]}]}),
        json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "create-new", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "create-new"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]}),
    ])
    .await;
    secrets
        .patch("new", &apply, &Patch::Apply(secret("new", "x")))
        .await
        .expect("apply creates the named Secret");
    assert!(admin.get_opt("new").await.expect("get").is_some());
}

#[tokio::test]
async fn tokens_are_minted_for_existing_service_accounts_and_end_with_them() {
    let kube = FakeKube::start().await;
    let ns = unique("rbac-token");
    world(&kube, &ns, &["db"], &["get"], &[]).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin(&kube).await, &ns);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"audiences": [], "expirationSeconds": 60}});
    let (code, reason, message) = refusal(
        accounts
            .create_token_request(
                "app",
                &PostParams::default(),
                &serde_json::from_value(request).unwrap(),
            )
            .await
            .expect_err("too short a lifetime"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"audiences": []}});
    let (code, _, message) = refusal(
        accounts
            .create_token_request(
                "nobody",
                &PostParams::default(),
                &serde_json::from_value(request.clone()).unwrap(),
            )
            .await
            .expect_err("no such ServiceAccount"),
    );
    assert_eq!(code, 404);
    assert_eq!(message, "serviceaccounts \"nobody\" not found");
    let minted = accounts
        .create_token_request(
            "app",
            &PostParams::default(),
            &serde_json::from_value(request).unwrap(),
        )
        .await
        .expect("a token for app");
    let status = minted.status.expect("status");
    assert!(status.token.is_some_and(|t| !t.is_empty()));
    assert_eq!(minted.spec.and_then(|s| s.expiration_seconds), Some(3600));

    // The token is the ServiceAccount: it may not mint tokens itself.
    let login = kube.service_account_kubeconfig(&ns, "app").await;
    let client = client_from_kubeconfig(&login.path).await.expect("client");
    let own: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let (code, _, message) = refusal(
        own.create_token_request("app", &PostParams::default(), &Default::default())
            .await
            .expect_err("no serviceaccounts/token grant"),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot create resource \"serviceaccounts/token\""),
        "{message}"
    );

    // Deleting the ServiceAccount ends its tokens.
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let (code, _, _) = refusal(secrets.get("db").await.expect_err("no Secret db yet"));
    assert_eq!(code, 404, "authorised, then not found");
    accounts
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete the ServiceAccount");
    let (code, reason, _) = refusal(secrets.get("db").await.expect_err("a dead token"));
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    // A new ServiceAccount of the same name is another object: the old token stays dead.
    kube.create_objects(&[json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": "app", "namespace": ns}})])
        .await;
    let (code, _, _) = refusal(secrets.get("db").await.expect_err("still dead"));
    assert_eq!(code, 401);
}

#[tokio::test]
async fn a_new_server_has_the_bootstrap_roles_and_refuses_unknown_paths() {
    let kube = FakeKube::start().await;
    let roles: Api<ClusterRole> = Api::all(admin(&kube).await);
    for name in [
        "cluster-admin",
        "system:discovery",
        "system:public-info-viewer",
        "system:basic-user",
        "system:auth-delegator",
    ] {
        roles.get(name).await.expect(name);
    }
    let ns = unique("rbac-paths");
    world(&kube, &ns, &["db"], &["get"], &[]).await;
    let login = kube.service_account_kubeconfig(&ns, "app").await;
    let client = client_from_kubeconfig(&login.path).await.expect("client");
    let get = |client: kube::Client, path: &str| {
        let request = http::Request::get(path).body(Vec::new()).unwrap();
        async move { client.request::<Value>(request).await }
    };
    let (code, _, message) = refusal(get(client.clone(), "/metrics").await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        message,
        format!(
            "forbidden: User \"{}\" cannot get path \"/metrics\"",
            login.user
        )
    );
    // The admin may ask; the path does not exist.
    let (code, _, _) = refusal(get(admin(&kube).await, "/metrics").await.unwrap_err());
    assert_eq!(code, 404);
    // Cluster-scoped resources are refused at the cluster scope.
    let (code, _, message) = refusal(
        roles_as(&client)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.ends_with(
            "cannot list resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        ),
        "{message}"
    );
}

fn roles_as(client: &kube::Client) -> Api<ClusterRole> {
    Api::all(client.clone())
}

/// Real `kubectl` (client-go) as the ServiceAccount sees the same grants and the same
/// refusal text (`KUBECTL` names another binary).
#[tokio::test]
async fn kubectl_as_the_service_account_is_refused_with_the_real_message() {
    let kube = FakeKube::start().await;
    let ns = unique("rbac-kubectl");
    let admin = world(&kube, &ns, &["db"], &["get"], &["db"]).await;
    let login = kube.service_account_kubeconfig(&ns, "app").await;
    let home = tempfile::tempdir().expect("kubectl home");
    let kubectl = |args: &[&str]| {
        let program = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
        std::process::Command::new(&program)
            .args(args)
            .args(["--namespace", &ns])
            .env("KUBECONFIG", &login.path)
            .env("HOME", home.path())
            .output()
            .unwrap_or_else(|e| panic!("running {program:?} failed ({e}): install kubectl"))
    };
    let got = kubectl(&["get", "secret", "db", "-o", "json"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let object: Value = serde_json::from_slice(&got.stdout).expect("JSON");
    assert_eq!(object["metadata"]["name"], "db");

    let deleted = kubectl(&["delete", "secret", "db"]);
    assert!(!deleted.status.success());
    assert_eq!(
        String::from_utf8_lossy(&deleted.stderr).trim(),
        format!(
            "Error from server (Forbidden): secrets \"db\" is forbidden: User \"{}\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"{ns}\"",
            login.user
        )
    );
    let listed = kubectl(&["get", "secrets"]);
    assert!(!listed.status.success());
    assert!(
        String::from_utf8_lossy(&listed.stderr)
            .contains("cannot list resource \"secrets\" in API group \"\""),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(admin.get_opt("db").await.expect("get").is_some());
}
