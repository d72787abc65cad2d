//! The `http-api-key` target against [`FakeKeyApi`], a key-issuing HTTP service on
//! loopback: keys are really created, probed and revoked over HTTP.

use std::path::Path;

use rotor::credentials::AuthOutcome;
use rotor::credentials::http_api_key::HttpApiKeyTarget;
use rotor::policy::{CredentialSpec, HttpApiKeyCredential};
use rotor::secret::{SecretMap, SecretString};
use rotor_testkit::{FakeKeyApi, assert_no_secret, canary};

/// How the policy's `create` request and `adminFrom` look.
struct Shape<'a> {
    create_path: &'a str,
    key_field: &'a str,
    id_field: &'a str,
    admin_from: &'a str,
    admin_header: &'a str,
}

const PLAIN: Shape<'static> = Shape {
    create_path: "/v1/keys",
    key_field: "key",
    id_field: "id",
    admin_from: "{env: FAKE_KEY_API_ADMIN}",
    admin_header: "Bearer {{ admin }}",
};

/// The credential as a user writes it, through the real policy loader.
fn spec(base_url: &str, shape: &Shape<'_>) -> HttpApiKeyCredential {
    let Shape {
        create_path,
        key_field,
        id_field,
        admin_from,
        admin_header,
    } = shape;
    let yaml = format!(
        r#"apiVersion: rotor/v1
kind: RotationPolicy
metadata: {{name: ci-key}}
spec:
  credential:
    type: http-api-key
    adminFrom: {admin_from}
    create:
      method: POST
      url: "{base_url}{create_path}"
      headers: {{Authorization: "{admin_header}"}}
      body: '{{"name": "rotor-ci"}}'
      keyField: {key_field}
      idField: {id_field}
    revoke: {{method: DELETE, url: "{base_url}/v1/keys/{{{{ id }}}}"}}
    probe:
      method: GET
      url: "{base_url}/v1/whoami"
      headers: {{Authorization: "Bearer {{{{ key }}}}"}}
    grace: 10m
  vault: {{path: apps/ci/key}}
"#
    );
    let set =
        rotor::policy::load_str(Path::new("ci-key.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}"));
    match &set.get("ci-key").expect("policy").spec.credential {
        CredentialSpec::HttpApiKey(c) => c.clone(),
        other => panic!("unexpected credential {}", other.kind()),
    }
}

/// The admin secret as `Vault::resolve` returns a single-value reference.
fn single(value: &str) -> SecretMap {
    let mut m = SecretMap::new();
    m.insert("value", SecretString::from(value.to_owned()));
    m
}

fn target(api: &FakeKeyApi) -> HttpApiKeyTarget {
    rotor::install_crypto_provider();
    HttpApiKeyTarget::new(&spec(&api.base_url, &PLAIN), &single(&api.admin_token)).expect("target")
}

fn expose<'a>(value: &'a SecretMap, key: &str) -> &'a str {
    value
        .expose(key)
        .unwrap_or_else(|| panic!("value has no {key}"))
}

fn assert_accepted(outcome: &AuthOutcome, what: &str) {
    assert!(
        matches!(outcome, AuthOutcome::Accepted),
        "{what}: {}",
        outcome.evidence()
    );
}

#[tokio::test]
async fn overlap_then_revoke_rejects_only_the_old_key() {
    let api = FakeKeyApi::start();
    let target = target(&api);
    let old = target.issue().await.expect("issue old");
    let new = target.issue().await.expect("issue new");
    assert_eq!(old.keys().collect::<Vec<_>>(), ["id", "key"]);
    assert_ne!(expose(&old, "key"), expose(&new, "key"));
    let (old_id, new_id) = (expose(&old, "id").to_owned(), expose(&new, "id").to_owned());
    let mut both = vec![old_id.clone(), new_id.clone()];
    both.sort();
    assert_eq!(api.live_keys(), both);

    // Overlap: both keys work.
    assert_accepted(&target.login(&old).await, "old during overlap");
    assert_accepted(&target.login(&new).await, "new during overlap");

    target.revoke(&old).await.expect("revoke old");
    assert_eq!(api.revoked_ids(), std::slice::from_ref(&old_id));
    assert_eq!(api.live_keys(), std::slice::from_ref(&new_id));
    match target.login(&old).await {
        AuthOutcome::Rejected { code, message } => {
            assert_eq!(code, "401");
            assert_eq!(message, "HTTP 401 Unauthorized");
        }
        other => panic!("old after revoke: {}", other.evidence()),
    }
    assert_accepted(&target.login(&new).await, "new after revoking old");

    // The API answers 404 now; revoking twice is still fine.
    target.revoke(&old).await.expect("revoke old twice");
    assert_eq!(api.revoked_ids(), [old_id]);
    assert_accepted(&target.login(&new).await, "new after second revoke");
    api.user_agents().assert_all(rotor::outside::USER_AGENT);
}

#[tokio::test]
async fn nested_response_fields_are_found_by_dotted_path_and_pointer() {
    let api = FakeKeyApi::start();
    rotor::install_crypto_provider();
    for (key_field, id_field) in [("data.token", "data.id"), ("/data/token", "/data/id")] {
        let shape = Shape {
            create_path: "/v2/keys",
            key_field,
            id_field,
            ..PLAIN
        };
        let target = HttpApiKeyTarget::new(&spec(&api.base_url, &shape), &single(&api.admin_token))
            .expect("target");
        let value = target.issue().await.expect("issue");
        assert!(api.live_keys().contains(&expose(&value, "id").to_owned()));
        assert!(expose(&value, "key").starts_with("fk_"));
        assert_accepted(&target.login(&value).await, key_field);
    }

    // A field the response lacks: the error names the field and status, never the body.
    let shape = Shape {
        create_path: "/v2/keys",
        key_field: "data.secret",
        id_field: "data.id",
        ..PLAIN
    };
    let target = HttpApiKeyTarget::new(&spec(&api.base_url, &shape), &single(&api.admin_token))
        .expect("target");
    let err = target.issue().await.expect_err("no such field");
    let text = format!("{err:?}\n{}", rotor::error_chain(&err));
    assert_eq!(err.kind(), "response_missing_field");
    assert!(
        text.contains("\"data.secret\"") && text.contains("201"),
        "{text}"
    );
    assert!(!text.contains("fk_"), "the created key leaked: {text}");
}

#[tokio::test]
async fn admin_credential_from_vault_reference_without_key() {
    let api = FakeKeyApi::start();
    rotor::install_crypto_provider();
    let shape = Shape {
        admin_from: "{vault: {path: admins/key-api}}",
        admin_header: "Bearer {{ password }}",
        ..PLAIN
    };
    let spec = spec(&api.base_url, &shape);
    let mut admin = SecretMap::new();
    admin.insert("username", SecretString::from("ops"));
    admin.insert("password", SecretString::from(api.admin_token.clone()));
    let target = HttpApiKeyTarget::new(&spec, &admin).expect("target");
    let value = target.issue().await.expect("issue");
    assert_accepted(&target.login(&value).await, "new key");

    // Without the password the target refuses to be built, naming the variable.
    let mut partial = SecretMap::new();
    partial.insert("username", SecretString::from("ops"));
    let err = HttpApiKeyTarget::new(&spec, &partial).expect_err("no password");
    assert_eq!(err.kind(), "admin_key_missing");
    assert!(err.to_string().contains("\"password\""), "{err}");
}

#[tokio::test]
async fn wrong_admin_token_is_a_clear_error_without_secrets() {
    let api = FakeKeyApi::start();
    rotor::install_crypto_provider();
    let wrong = canary();
    let target =
        HttpApiKeyTarget::new(&spec(&api.base_url, &PLAIN), &single(&wrong)).expect("target");
    let err = target.issue().await.expect_err("wrong admin token");
    assert_eq!(err.kind(), "http_status");
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(message.contains("create"), "{message}");
    assert!(message.contains("HTTP 401 Unauthorized"), "{message}");
    assert!(message.contains("/v1/keys"), "{message}");
    assert!(api.live_keys().is_empty());

    // Revoking a real key with the wrong admin token fails the same way.
    let good = self::target(&api);
    let value = good.issue().await.expect("issue");
    let revoke_err = target.revoke(&value).await.expect_err("wrong admin token");
    assert_eq!(revoke_err.kind(), "http_status");
    assert!(api.revoked_ids().is_empty());

    let text = format!(
        "{err:?}\n{}\n{revoke_err:?}\n{}\n{target:?}\n{good:?}\n{value:?}",
        rotor::error_chain(&err),
        rotor::error_chain(&revoke_err)
    );
    assert_no_secret(&text, &[&wrong, &api.admin_token, expose(&value, "key")]);
}

#[tokio::test]
async fn service_down_is_transient_and_inconclusive() {
    let api = FakeKeyApi::start();
    let target = target(&api);
    let value = target.issue().await.expect("issue");

    api.set_down(true);
    let err = target.issue().await.expect_err("503");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    let reason = match target.login(&value).await {
        AuthOutcome::Unreachable { reason } => reason,
        other => panic!("probe while down: {}", other.evidence()),
    };
    assert!(reason.contains("503"), "{reason}");
    let revoke_err = target.revoke(&value).await.expect_err("503");
    assert!(revoke_err.is_transient());
    assert_eq!(api.live_keys(), [expose(&value, "id").to_owned()]);

    api.set_down(false);
    assert_accepted(&target.login(&value).await, "after recovery");
    let text = format!("{err:?}\n{reason}\n{revoke_err:?}");
    assert_no_secret(&text, &[&api.admin_token, expose(&value, "key")]);
}

#[tokio::test]
async fn no_server_is_transient_and_inconclusive() {
    let api = FakeKeyApi::start();
    let value = target(&api).issue().await.expect("issue");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let target = HttpApiKeyTarget::new(
        &spec(&format!("http://127.0.0.1:{port}"), &PLAIN),
        &single(&api.admin_token),
    )
    .expect("target");
    let err = target.issue().await.expect_err("connection refused");
    assert_eq!(err.kind(), "http_transport");
    assert!(err.is_transient());
    let outcome = target.login(&value).await;
    assert!(
        matches!(outcome, AuthOutcome::Unreachable { .. }),
        "{}",
        outcome.evidence()
    );
    let text = format!(
        "{err:?}\n{}\n{}",
        rotor::error_chain(&err),
        outcome.evidence()
    );
    assert_no_secret(&text, &[&api.admin_token, expose(&value, "key")]);
}
