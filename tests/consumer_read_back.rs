//! [`Consumers::read_back`] on every consumer type, through the policy's
//! `ConsumerSpec` (the dispatch the engine uses): after a push it matches, after a
//! change made behind rotor's back it differs (naming fields, never values), after a
//! removal it is missing; a GitHub secret exists but cannot be read. Needs Vault from
//! `dev/stack up`; GitLab, GitHub and Kubernetes are the testkit's fakes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use common::kinds::secret_map;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rotor::consumers::{Consumers, ReadBack};
use rotor::policy::{self, ConsumerSpec};
use rotor::secret::{Fingerprinter, SecretMap};
use rotor::vault::AuthAs;
use rotor_testkit::{FakeGithub, FakeGitlab, FakeKube, assert_no_secret, canary, unique};
use serde_json::json;

/// The only consumer of a policy whose credential is a postgres password.
fn consumer(name: &str, consumer_yaml: &str) -> ConsumerSpec {
    let yaml = format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: 127.0.0.1, port: 5432, database: app, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  consumers:\n{consumer_yaml}"
    );
    let set = policy::load_str(Path::new("test.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("policy must load:\n{e}\n{yaml}"));
    set.get(name).expect("policy").spec.consumers[0].clone()
}

fn vars(password: &str) -> SecretMap {
    secret_map(&[("username", "app"), ("password", password)])
}

/// Pushes, reads back, removes and reads back `spec` with `clients`; `tamper` changes
/// the pushed value behind rotor's back in between and returns the fields it expects
/// named (`None`: the type cannot be read, so only existence is checked).
async fn check(
    clients: &Consumers,
    spec: &ConsumerSpec,
    tamper: impl AsyncFnOnce() -> Option<Vec<&'static str>>,
) {
    let vault = common::vault();
    let fingerprints = Fingerprinter::new(vec![7; 32]);
    let secret = canary();
    let vars = vars(&secret);
    let read_back = async || {
        let found = clients
            .read_back(spec, &vars, &fingerprints, &vault)
            .await
            .expect("read back");
        assert_no_secret(&format!("{found:?}"), &[&secret]);
        found
    };
    assert_eq!(read_back().await, ReadBack::Missing, "nothing pushed yet");
    let pushed = clients
        .push(spec, &vars, &fingerprints, &vault)
        .await
        .expect("push");
    match tamper().await {
        Some(fields) => {
            assert!(pushed.verified);
            let differs = read_back().await;
            assert_eq!(
                differs,
                ReadBack::Differs {
                    fields: fields.into_iter().map(str::to_owned).collect()
                }
            );
            clients
                .push(spec, &vars, &fingerprints, &vault)
                .await
                .expect("push again");
            assert_eq!(read_back().await, ReadBack::Matches, "put right");
        }
        None => assert_eq!(read_back().await, ReadBack::NotReadable),
    }
    clients.remove(spec, &vault).await.expect("remove");
    assert_eq!(read_back().await, ReadBack::Missing, "removed");
}

#[tokio::test]
async fn vault_kv_copy_reads_back() {
    let name = unique("rb-kv");
    let spec = consumer(
        &name,
        &format!(
            "    - type: vault-kv\n      path: copies/{name}\n      data:\n        db-password: \"{{{{ password }}}}\"\n        user: \"{{{{ username }}}}\"\n"
        ),
    );
    check(&Consumers::new(), &spec, async || {
        let vault = common::vault();
        let body = json!({"data": {"db-password": canary(), "user": "app"}});
        let resp = vault
            .request_in(
                None,
                reqwest::Method::POST,
                &format!("secret/data/copies/{name}"),
                Some(&body),
                AuthAs::Rotor,
            )
            .await
            .expect("write behind rotor's back");
        assert!(resp.is_success());
        Some(vec!["db-password"])
    })
    .await;
}

#[tokio::test]
async fn file_reads_back_content_and_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.env");
    let name = unique("rb-file");
    let spec = consumer(
        &name,
        &format!(
            "    - type: file\n      path: {}\n      content: \"PGPASSWORD={{{{ password }}}}\\n\"\n",
            path.display()
        ),
    );
    check(&Consumers::new(), &spec, async || {
        std::fs::write(&path, format!("PGPASSWORD={}\n", canary())).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Some(vec!["mode", "content"])
    })
    .await;
}

#[tokio::test]
async fn gitlab_variable_reads_back() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project("acme/payments");
    let tokens = tempfile::tempdir().expect("tempdir");
    let token = tokens.path().join("token");
    std::fs::write(&token, &gitlab.token).expect("token file");
    let name = unique("rb-gitlab");
    let spec = consumer(
        &name,
        &format!(
            "    - type: gitlab\n      url: {}\n      tokenFrom: {{file: {}}}\n      project: acme/payments\n      key: DB_PASSWORD\n      value: \"{{{{ password }}}}\"\n      protected: true\n",
            gitlab.base_url,
            token.display()
        ),
    );
    check(&Consumers::new(), &spec, async || {
        let mut var = gitlab
            .variable("acme/payments", "DB_PASSWORD", "*")
            .expect("pushed");
        var.value = canary();
        var.protected = false;
        gitlab.set_variable("acme/payments", "DB_PASSWORD", var);
        Some(vec!["value", "protected"])
    })
    .await;
}

#[tokio::test]
async fn github_secret_exists_but_cannot_be_read() {
    let github = FakeGithub::start();
    github.add_repository("acme/payments");
    let tokens = tempfile::tempdir().expect("tempdir");
    let token = tokens.path().join("token");
    std::fs::write(&token, &github.token).expect("token file");
    let name = unique("rb-github");
    let spec = consumer(
        &name,
        &format!(
            "    - type: github\n      url: {}\n      tokenFrom: {{file: {}}}\n      repository: acme/payments\n      name: DB_PASSWORD\n      value: \"{{{{ password }}}}\"\n",
            github.base_url,
            token.display()
        ),
    );
    check(&Consumers::new(), &spec, async || None).await;
}

#[tokio::test]
async fn kubernetes_secret_reads_back() {
    rotor::install_crypto_provider();
    let kube = FakeKube::start().await;
    kube.create_namespace("payments").await;
    let client = common::kube_client(&kube).await;
    let name = unique("rb-kube");
    let spec = consumer(
        &name,
        &format!(
            "    - type: kubernetes\n      namespace: payments\n      secret: {name}\n      data:\n        PGPASSWORD: \"{{{{ password }}}}\"\n        PGUSER: \"{{{{ username }}}}\"\n"
        ),
    );
    let clients = Consumers::with_kube_client(common::rotor_kube_client(&kube).await);
    check(&clients, &spec, async || {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "payments");
        let other = base64::engine::general_purpose::STANDARD.encode(canary());
        let patch = json!({"data": {"PGPASSWORD": other}});
        secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("change behind rotor's back");
        Some(vec!["PGPASSWORD"])
    })
    .await;
}
