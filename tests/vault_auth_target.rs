//! The Vault auth kinds (userpass passwords, AppRole secret-ids, tokens) against the
//! OpenBao that `dev/stack up` starts. Tests share the auth mounts below and make their
//! own users, roles, policies and tokens with unique names.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use rotor::credentials::AuthOutcome;
use rotor::credentials::vault_approle::ApproleTarget;
use rotor::credentials::vault_token::TokenTarget;
use rotor::credentials::vault_userpass::{UserpassTarget, VaultAuthError};
use rotor::policy::{Strategy, VaultTokenCredential};
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, RawResponse, Vault, VaultConfig};
use rotor_testkit::{assert_no_secret, canary, stack, unique};
use serde_json::{Value, json};

const USERPASS: &str = "rotor-test-userpass";
const APPROLE: &str = "rotor-test-approle";

fn connect(addr: &str, token: &str) -> Vault {
    rotor::install_crypto_provider();
    let config = VaultConfig {
        addr: addr.to_owned(),
        token: Some(SecretString::from(token.to_owned())),
        auth: rotor::vault::VaultAuth::Token,
        namespace: None,
        ca_cert: None,
        timeout: Duration::from_secs(10),
    };
    Vault::connect(&config).expect("Vault client")
}

/// rotor's Vault, with the dev server's root token.
fn vault() -> Vault {
    let s = stack();
    connect(&s.vault_addr, &s.vault_token)
}

/// A Vault client with another token.
fn vault_as(token: &str) -> Vault {
    connect(&stack().vault_addr, token)
}

/// A Vault address where nothing listens.
fn dead_vault() -> Vault {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    connect(&format!("http://127.0.0.1:{port}"), &stack().vault_token)
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

/// A request with the root token; any status.
async fn raw(method: Method, path: &str, body: Option<Value>) -> RawResponse {
    vault()
        .request(method, path, body.as_ref(), AuthAs::Rotor)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A request with the root token that must succeed; the answer's JSON.
async fn ok(method: Method, path: &str, body: Option<Value>) -> Value {
    let resp = raw(method, path, body).await;
    assert!(
        resp.is_success(),
        "{path}: HTTP {}: {}",
        resp.status,
        resp.errors()
    );
    resp.json()
}

/// Enables an auth method at `mount` unless it is there already (tests run in parallel).
async fn enable_auth(kind: &str, mount: &str) {
    let resp = raw(
        Method::POST,
        &format!("sys/auth/{mount}"),
        Some(json!({ "type": kind })),
    )
    .await;
    assert!(
        resp.is_success() || resp.errors().contains("already in use"),
        "enabling {kind} at {mount}: HTTP {}: {}",
        resp.status,
        resp.errors()
    );
}

async fn create_user(mount: &str, user: &str, password: &str) {
    ok(
        Method::POST,
        &format!("auth/{mount}/users/{user}"),
        Some(json!({ "password": password, "token_policies": ["default"] })),
    )
    .await;
}

/// Status of `lookup-self` with `token`: 200 while it lives, 403 once revoked.
async fn lookup_self(token: &str) -> u16 {
    vault()
        .request(
            Method::GET,
            "auth/token/lookup-self",
            None,
            AuthAs::Token(&secret(token)),
        )
        .await
        .expect("lookup-self")
        .status
}

/// Logs in outside the code under test and returns the token.
async fn login_raw(path: &str, body: Value) -> String {
    let resp = vault()
        .request(Method::POST, path, Some(&body), AuthAs::Anonymous)
        .await
        .expect("login");
    assert_eq!(resp.status, 200, "login at {path}: {}", resp.errors());
    resp.json()["auth"]["client_token"]
        .as_str()
        .expect("client_token")
        .to_owned()
}

async fn revoke_raw(token: &str) {
    ok(
        Method::POST,
        "auth/token/revoke",
        Some(json!({ "token": token })),
    )
    .await;
}

/// How many live tokens were issued by a login at exactly `path` (and, when given, for
/// the AppRole role `role`).
async fn tokens_from(path: &str, role: Option<&str>) -> usize {
    let listed = ok(Method::GET, "auth/token/accessors?list=true", None).await;
    let mut count = 0;
    for accessor in listed["data"]["keys"].as_array().expect("keys") {
        let resp = raw(
            Method::POST,
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
        let data = &resp.json()["data"];
        if resp.is_success()
            && data["path"] == path
            && role.is_none_or(|r| data["meta"]["role_name"] == r)
        {
            count += 1;
        }
    }
    count
}

async fn write_policy(name: &str, hcl: &str) {
    ok(
        Method::PUT,
        &format!("sys/policies/acl/{name}"),
        Some(json!({ "policy": hcl })),
    )
    .await;
}

fn assert_rejected(outcome: &AuthOutcome, code: &str, secrets: &[&str]) {
    match outcome {
        AuthOutcome::Rejected { code: c, message } => {
            assert_eq!(c, code, "{message}");
            assert_no_secret(message, secrets);
        }
        other => panic!("expected rejected {code}, got {}", other.evidence()),
    }
}

fn assert_unreachable(outcome: &AuthOutcome, secrets: &[&str]) -> String {
    match outcome {
        AuthOutcome::Unreachable { reason } => {
            assert_no_secret(reason, secrets);
            reason.clone()
        }
        other => panic!("expected unreachable, got {}", other.evidence()),
    }
}

/// The error's full text and its `Debug`, checked for every secret.
fn assert_clean(err: &VaultAuthError, secrets: &[&str]) {
    assert_no_secret(&rotor::error_chain(err), secrets);
    assert_no_secret(&format!("{err:?}"), secrets);
}

fn expose<'a>(map: &'a SecretMap, key: &str) -> &'a str {
    map.expose(key)
        .unwrap_or_else(|| panic!("value has no {key}"))
}

// ---------------------------------------------------------------------------------------
// userpass
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn userpass_new_password_logs_in_and_the_old_one_is_refused() {
    enable_auth("userpass", USERPASS).await;
    let user = unique("up");
    let old = canary();
    let new = canary();
    create_user(USERPASS, &user, &old).await;
    let target = UserpassTarget::new(vault(), USERPASS, &user);
    assert!(target.user_exists().await.expect("user_exists"));
    assert!(matches!(
        target.login(&secret(&old)).await,
        AuthOutcome::Accepted
    ));

    target.set_password(&secret(&new)).await.expect("set");
    // Idempotent.
    target.set_password(&secret(&new)).await.expect("set again");

    assert!(matches!(
        target.login(&secret(&new)).await,
        AuthOutcome::Accepted
    ));
    let refused = target.login(&secret(&old)).await;
    assert_rejected(&refused, "400", &[&old, &new]);
    let AuthOutcome::Rejected { message, .. } = &refused else {
        unreachable!()
    };
    assert!(
        message.contains("invalid username or password"),
        "{message}"
    );
    let debug = format!("{target:?}");
    assert!(debug.contains(&user), "{debug}");
    assert_no_secret(&debug, &[&old, &new, &stack().vault_token]);
}

#[tokio::test]
async fn userpass_probe_logins_leave_no_tokens_behind() {
    enable_auth("userpass", USERPASS).await;
    let user = unique("up-probe");
    let password = canary();
    create_user(USERPASS, &user, &password).await;
    let login_path = format!("auth/{USERPASS}/login/{user}");
    let target = UserpassTarget::new(vault(), USERPASS, &user);

    for _ in 0..3 {
        assert!(matches!(
            target.login(&secret(&password)).await,
            AuthOutcome::Accepted
        ));
    }
    assert_rejected(&target.login(&secret(&canary())).await, "400", &[&password]);
    assert_eq!(
        tokens_from(&login_path, None).await,
        0,
        "probe tokens left behind"
    );

    // The counter does see a login's token.
    let token = login_raw(&login_path, json!({ "password": password })).await;
    assert_eq!(tokens_from(&login_path, None).await, 1);
    revoke_raw(&token).await;
}

#[tokio::test]
async fn userpass_terminate_sessions_revokes_tokens_from_before_the_cutoff() {
    enable_auth("userpass", USERPASS).await;
    let user = unique("up-term");
    let other = unique("up-other");
    let password = canary();
    create_user(USERPASS, &user, &password).await;
    create_user(USERPASS, &other, &password).await;
    let path = |u: &str| format!("auth/{USERPASS}/login/{u}");
    let body = json!({ "password": password });
    let target = UserpassTarget::new(vault(), USERPASS, &user);

    let before = login_raw(&path(&user), body.clone()).await;
    let cutoff = SystemTime::now();
    let after = login_raw(&path(&user), body.clone()).await;
    let bystander = login_raw(&path(&other), body.clone()).await;

    assert_eq!(
        target
            .terminate_sessions(Some(cutoff))
            .await
            .expect("terminate"),
        1
    );
    assert_eq!(
        lookup_self(&before).await,
        403,
        "token from before the cutoff lives"
    );
    assert_eq!(
        lookup_self(&after).await,
        200,
        "token from after the cutoff was revoked"
    );
    assert_eq!(
        lookup_self(&bystander).await,
        200,
        "another user's token was revoked"
    );

    assert_eq!(
        target
            .terminate_sessions(None)
            .await
            .expect("terminate all"),
        1
    );
    assert_eq!(lookup_self(&after).await, 403);
    assert_eq!(lookup_self(&bystander).await, 200);
    assert_eq!(
        target.terminate_sessions(None).await.expect("nothing left"),
        0
    );
    revoke_raw(&bystander).await;
}

#[tokio::test]
async fn userpass_failures_are_classified_and_never_carry_the_password() {
    enable_auth("userpass", USERPASS).await;
    let password = canary();
    let root = stack().vault_token.clone();
    let secrets = [password.as_str(), root.as_str()];

    let missing = UserpassTarget::new(vault(), USERPASS, &unique("up-missing"));
    assert!(!missing.user_exists().await.expect("user_exists"));
    let err = missing.set_password(&secret(&password)).await.unwrap_err();
    assert_eq!(err.kind(), "user_not_found", "{err}");
    assert!(!err.is_transient());
    assert_clean(&err, &secrets);

    let no_mount = UserpassTarget::new(vault(), &unique("no-such-mount"), "app");
    let err = no_mount.user_exists().await.unwrap_err();
    assert_eq!(err.kind(), "vault_api", "{err}");
    assert_clean(&err, &secrets);
    // A missing mount answers 403 to a login: that says nothing about the password.
    assert_unreachable(&no_mount.login(&secret(&password)).await, &secrets);

    let err = missing.set_password(&secret("")).await.unwrap_err();
    assert_eq!(err.kind(), "empty_password");
    let bad_name = UserpassTarget::new(vault(), USERPASS, "../sys/seal");
    assert_eq!(
        bad_name.user_exists().await.unwrap_err().kind(),
        "invalid_name"
    );
    assert_unreachable(&bad_name.login(&secret(&password)).await, &secrets);

    let down = UserpassTarget::new(dead_vault(), USERPASS, "app");
    let err = down.set_password(&secret(&password)).await.unwrap_err();
    assert_eq!(err.kind(), "vault_transport", "{err}");
    assert!(err.is_transient());
    assert_clean(&err, &secrets);
    assert_unreachable(&down.login(&secret(&password)).await, &secrets);
    let err = down.terminate_sessions(None).await.unwrap_err();
    assert!(err.is_transient());
    assert_clean(&err, &secrets);
}

// ---------------------------------------------------------------------------------------
// AppRole
// ---------------------------------------------------------------------------------------

async fn create_role(role: &str) {
    enable_auth("approle", APPROLE).await;
    ok(
        Method::POST,
        &format!("auth/{APPROLE}/role/{role}"),
        Some(json!({ "token_policies": ["default"] })),
    )
    .await;
}

fn approle(role: &str) -> ApproleTarget {
    let metadata = BTreeMap::from([("team".to_owned(), "payments".to_owned())]);
    ApproleTarget::new(vault(), APPROLE, role, &metadata)
}

fn login_body(value: &SecretMap) -> Value {
    json!({ "role_id": expose(value, "roleId"), "secret_id": expose(value, "secretId") })
}

#[tokio::test]
async fn approle_new_secret_id_overlaps_and_the_old_one_is_destroyed() {
    let role = unique("ar");
    create_role(&role).await;
    let target = approle(&role);

    let old = target.issue("rot-1").await.expect("issue old");
    let new = target.issue("rot-2").await.expect("issue new");
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        ["roleId", "secretId", "secretIdAccessor"]
    );
    assert_eq!(expose(&old, "roleId"), expose(&new, "roleId"));
    assert_ne!(expose(&old, "secretId"), expose(&new, "secretId"));
    let secrets = [
        expose(&old, "secretId"),
        expose(&new, "secretId"),
        stack().vault_token.as_str(),
    ];

    // Overlap: both log in.
    assert!(matches!(target.login(&old).await, AuthOutcome::Accepted));
    assert!(matches!(target.login(&new).await, AuthOutcome::Accepted));
    assert_eq!(
        tokens_from(&format!("auth/{APPROLE}/login"), Some(&role)).await,
        0
    );

    // The new secret-id carries the policy's metadata and the rotation id.
    let looked_up = ok(
        Method::POST,
        &format!("auth/{APPROLE}/role/{role}/secret-id-accessor/lookup"),
        Some(json!({ "secret_id_accessor": expose(&new, "secretIdAccessor") })),
    )
    .await;
    assert_eq!(
        looked_up["data"]["metadata"],
        json!({ "team": "payments", "rotor_rotation": "rot-2" })
    );

    target.destroy(&old).await.expect("destroy");
    assert_rejected(&target.login(&old).await, "400", &secrets);
    assert!(matches!(target.login(&new).await, AuthOutcome::Accepted));
    // Destroying again is fine (OpenBao answers 500 for an unknown accessor).
    target.destroy(&old).await.expect("destroy twice");

    // Without the accessor, by the secret-id itself.
    let mut by_secret = SecretMap::new();
    by_secret.insert("roleId", secret(expose(&new, "roleId")));
    by_secret.insert("secretId", secret(expose(&new, "secretId")));
    target
        .destroy(&by_secret)
        .await
        .expect("destroy by secret-id");
    target
        .destroy(&by_secret)
        .await
        .expect("destroy by secret-id twice");
    assert_rejected(&target.login(&new).await, "400", &secrets);

    let err = target.destroy(&SecretMap::new()).await.unwrap_err();
    assert_eq!(err.kind(), "missing_key");
    assert_no_secret(&format!("{target:?} {old:?} {new:?}"), &secrets);
}

#[tokio::test]
async fn approle_terminate_sessions_revokes_the_roles_tokens_from_before_the_cutoff() {
    let role = unique("ar-term");
    let other_role = unique("ar-other");
    create_role(&role).await;
    create_role(&other_role).await;
    let target = approle(&role);
    let value = target.issue("rot-1").await.expect("issue");
    let other_value = approle(&other_role)
        .issue("rot-1")
        .await
        .expect("issue other");
    let path = format!("auth/{APPROLE}/login");

    let before = login_raw(&path, login_body(&value)).await;
    let cutoff = SystemTime::now();
    let after = login_raw(&path, login_body(&value)).await;
    let bystander = login_raw(&path, login_body(&other_value)).await;

    assert_eq!(
        target
            .terminate_sessions(Some(cutoff))
            .await
            .expect("terminate"),
        1
    );
    assert_eq!(lookup_self(&before).await, 403);
    assert_eq!(lookup_self(&after).await, 200);
    assert_eq!(lookup_self(&bystander).await, 200);
    assert_eq!(
        target
            .terminate_sessions(None)
            .await
            .expect("terminate all"),
        1
    );
    assert_eq!(lookup_self(&after).await, 403);
    assert_eq!(lookup_self(&bystander).await, 200);
    revoke_raw(&bystander).await;
}

#[tokio::test]
async fn approle_missing_role_and_unreachable_vault() {
    let role = unique("ar-gone");
    create_role(&role).await;
    let target = approle(&role);
    let value = target.issue("rot-1").await.expect("issue");
    let secrets = [expose(&value, "secretId"), stack().vault_token.as_str()];

    // Deleting the role deletes its secret-ids: destroying one is then done already.
    ok(Method::DELETE, &format!("auth/{APPROLE}/role/{role}"), None).await;
    target
        .destroy(&value)
        .await
        .expect("destroy after role deletion");
    assert_rejected(&target.login(&value).await, "400", &secrets);
    let err = target.issue("rot-2").await.unwrap_err();
    assert_eq!(err.kind(), "role_not_found", "{err}");
    assert!(!err.is_transient());
    assert_clean(&err, &secrets);

    let down = ApproleTarget::new(dead_vault(), APPROLE, &role, &BTreeMap::new());
    let err = down.destroy(&value).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_clean(&err, &secrets);
    assert_unreachable(&down.login(&value).await, &secrets);
    let mut partial = SecretMap::new();
    partial.insert("roleId", secret(expose(&value, "roleId")));
    assert_unreachable(&target.login(&partial).await, &secrets);
}

// ---------------------------------------------------------------------------------------
// tokens
// ---------------------------------------------------------------------------------------

fn token_spec(policy: &str) -> VaultTokenCredential {
    VaultTokenCredential {
        policies: vec![policy.to_owned()],
        ttl: None,
        period: None,
        role: None,
        display_name: Some("rotor-test".into()),
        strategy: Strategy::Overlap,
        grace: Duration::ZERO,
    }
}

/// An application policy that may create child tokens (to show they die with their parent).
async fn app_policy() -> String {
    let name = unique("tok-app");
    write_policy(
        &name,
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    name
}

async fn token_info(accessor: &str) -> Value {
    ok(
        Method::POST,
        "auth/token/lookup-accessor",
        Some(json!({ "accessor": accessor })),
    )
    .await["data"]
        .clone()
}

fn token_map(token: &Value) -> SecretMap {
    let mut map = SecretMap::new();
    map.insert(
        "token",
        secret(token["client_token"].as_str().expect("token")),
    );
    map.insert(
        "accessor",
        secret(token["accessor"].as_str().expect("accessor")),
    );
    map
}

#[tokio::test]
async fn token_issue_overlaps_survives_its_creator_and_revoke_kills_the_old_one() {
    let app = app_policy().await;
    // A limited creator: may make orphans and look up/revoke tokens, nothing else.
    let creator_policy = unique("tok-creator");
    write_policy(
        &creator_policy,
        r#"
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/lookup" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"#,
    )
    .await;
    let creator = ok(
        Method::POST,
        "auth/token/create",
        Some(json!({ "policies": [creator_policy, app], "ttl": "1h" })),
    )
    .await["auth"]["client_token"]
        .as_str()
        .expect("creator token")
        .to_owned();
    let old = token_map(
        &ok(
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({ "policies": [app], "meta": { "team": "payments" }, "period": "1h" })),
        )
        .await["auth"],
    );

    let target = TokenTarget::new(vault_as(&creator), &token_spec(&app));
    let new = target.issue(Some(&old), "rot-1").await.expect("issue");
    assert_eq!(new.keys().collect::<Vec<_>>(), ["accessor", "token"]);
    let secrets = [
        expose(&old, "token"),
        expose(&new, "token"),
        creator.as_str(),
        stack().vault_token.as_str(),
    ];

    let info = token_info(expose(&new, "accessor")).await;
    assert!(
        info["policies"]
            .as_array()
            .expect("policies")
            .contains(&json!(app)),
        "{info}"
    );
    assert_eq!(
        info["meta"],
        json!({ "team": "payments", "rotor_rotation": "rot-1" })
    );
    assert_eq!(
        info["period"], 3600,
        "period carried over from the old token"
    );
    assert_eq!(info["orphan"], true);
    assert_eq!(info["path"], "auth/token/create-orphan");
    assert_eq!(info["display_name"], "token-rotor-test");

    // Overlap: both work.
    assert!(matches!(target.login(&old).await, AuthOutcome::Accepted));
    assert!(matches!(target.login(&new).await, AuthOutcome::Accepted));

    // The new token is an orphan: it outlives the token that created it.
    revoke_raw(&creator).await;
    assert_eq!(lookup_self(&creator).await, 403);
    assert!(matches!(target.login(&new).await, AuthOutcome::Accepted));

    // A child of the old token dies with it.
    let child = vault_as(expose(&old, "token"))
        .request_ok(
            Method::POST,
            "auth/token/create",
            Some(&json!({ "policies": [app], "ttl": "1h" })),
            AuthAs::Rotor,
        )
        .await
        .expect("child token")
        .json()["auth"]["client_token"]
        .as_str()
        .expect("child")
        .to_owned();
    assert_eq!(lookup_self(&child).await, 200);

    let admin = TokenTarget::new(vault(), &token_spec(&app));
    admin.revoke(&old).await.expect("revoke");
    assert_rejected(&admin.login(&old).await, "403", &secrets);
    assert_eq!(
        lookup_self(&child).await,
        403,
        "child of the revoked token lives"
    );
    assert!(matches!(admin.login(&new).await, AuthOutcome::Accepted));
    admin.revoke(&old).await.expect("revoke twice");
    let mut token_only = SecretMap::new();
    token_only.insert("token", secret(expose(&old, "token")));
    admin.revoke(&token_only).await.expect("revoke by token");

    let err = admin.revoke(&SecretMap::new()).await.unwrap_err();
    assert_eq!(err.kind(), "missing_key");
    assert_no_secret(&format!("{target:?} {admin:?} {old:?} {new:?}"), &secrets);
    admin.revoke(&new).await.expect("clean up");
    assert_rejected(&admin.login(&new).await, "403", &secrets);
}

#[tokio::test]
async fn token_issue_from_a_role_with_the_policy_ttl_and_a_dead_old_token() {
    let app = app_policy().await;
    let role = unique("tok-role");
    ok(
        Method::POST,
        &format!("auth/token/roles/{role}"),
        Some(json!({ "allowed_policies": [app], "orphan": true })),
    )
    .await;
    let old = token_map(
        &ok(
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({ "policies": [app], "meta": { "team": "gone" }, "ttl": "1h" })),
        )
        .await["auth"],
    );
    revoke_raw(expose(&old, "token")).await;

    let mut spec = token_spec(&app);
    spec.role = Some(role.clone());
    spec.ttl = Some(Duration::from_secs(600));
    spec.display_name = None;
    let target = TokenTarget::new(vault(), &spec);
    let new = target.issue(Some(&old), "rot-9").await.expect("issue");
    let info = token_info(expose(&new, "accessor")).await;
    assert_eq!(info["role"], role.as_str());
    assert_eq!(info["path"], format!("auth/token/create/{role}"));
    assert_eq!(info["creation_ttl"], 600);
    // A dead old token has nothing to carry over.
    assert_eq!(info["meta"], json!({ "rotor_rotation": "rot-9" }));
    assert!(matches!(target.login(&new).await, AuthOutcome::Accepted));

    // Without an old value and without a role: an orphan with just the rotation id.
    let fresh = TokenTarget::new(vault(), &token_spec(&app))
        .issue(None, "rot-10")
        .await
        .expect("issue fresh");
    let info = token_info(expose(&fresh, "accessor")).await;
    assert_eq!(info["meta"], json!({ "rotor_rotation": "rot-10" }));
    assert_eq!(info["orphan"], true);

    let err = TokenTarget::new(vault(), &{
        let mut s = token_spec(&app);
        s.role = Some(unique("no-such-role"));
        s
    })
    .issue(None, "rot-11")
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "vault_api", "{err}");
    assert!(!err.is_transient());

    target.revoke(&new).await.expect("clean up");
    target.revoke(&fresh).await.expect("clean up");
}

#[tokio::test]
async fn token_probe_never_calls_a_live_token_dead() {
    let app = app_policy().await;
    // A live token that may not look itself up (no default policy).
    let live = token_map(
        &ok(
            Method::POST,
            "auth/token/create-orphan",
            Some(json!({ "policies": [app], "no_default_policy": true, "ttl": "10m" })),
        )
        .await["auth"],
    );
    let bogus = canary();
    let root = stack().vault_token.clone();
    let secrets = [expose(&live, "token"), bogus.as_str(), root.as_str()];
    let target = TokenTarget::new(vault(), &token_spec(&app));

    assert_eq!(lookup_self(expose(&live, "token")).await, 403);
    let reason = assert_unreachable(&target.login(&live).await, &secrets);
    assert!(reason.contains("403"), "{reason}");

    let mut unknown = SecretMap::new();
    unknown.insert("token", secret(&bogus));
    assert_rejected(&target.login(&unknown).await, "403", &secrets);
    assert_unreachable(&target.login(&SecretMap::new()).await, &secrets);

    let down = TokenTarget::new(dead_vault(), &token_spec(&app));
    assert_unreachable(&down.login(&live).await, &secrets);
    let err = down.issue(Some(&live), "rot-1").await.unwrap_err();
    assert_eq!(err.kind(), "vault_transport");
    assert!(err.is_transient());
    assert_clean(&err, &secrets);
    let err = down.revoke(&unknown).await.unwrap_err();
    assert!(err.is_transient());
    assert_clean(&err, &secrets);

    target.revoke(&live).await.expect("clean up");
}
