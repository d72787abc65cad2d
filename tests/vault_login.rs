//! Vault login methods against the real OpenBao of `dev/stack up`: AppRole and
//! Kubernetes logins (`Vault::login`), the token keeper (`Vault::keep_alive`) outliving
//! a token's maximum TTL, clear configuration errors, and the `rotor` binary logging
//! in with AppRole (one-shot `status`, and `rotor run` past the maximum TTL).
//!
//! Kubernetes auth asks a TokenReview endpoint about the JWT; here that is a small
//! loopback server answering like an API server (OpenBao accepts a plain-http
//! `kubernetes_host`; it insists on a `kubernetes_ca_cert` when `disable_local_ca_jwt`
//! is set, so a throwaway CA certificate is passed and never used).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault, VaultAuth, VaultAuthSettings, VaultConfig, VaultError};
use rotor_testkit::{assert_no_secret, canary, stack, unique};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// Log capture: every event of this test binary, with the filter `rotor` uses in
// production (vaultrs/rustify off), rotor's own events at trace.

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,rotor=trace,rustify=off,vaultrs=off",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
        buf
    });
}

fn logs() -> String {
    let buf = LOGS.get().expect("capture_logs() first");
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The captured lines that mention `needle` (e.g. a test's unique mount).
fn log_lines(needle: &str) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------
// OpenBao set-up with the root token.

fn admin() -> Vault {
    rotor::install_crypto_provider();
    let s = stack();
    Vault::connect(&VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..VaultConfig::from_env()
    })
    .expect("admin client")
}

async fn call(admin: &Vault, method: reqwest::Method, path: &str, body: Value) -> Value {
    admin
        .request_ok(method, path, Some(&body), AuthAs::Rotor)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .json()
}

/// A KV secret the login under test may read, and the ACL policy granting it.
struct Readable {
    path: String,
    value: String,
    policy: String,
}

async fn readable(admin: &Vault, name: &str, extra_rules: &str) -> Readable {
    let path = format!("rotor-tests/{name}/app");
    let value = format!("v{}", canary());
    let mut data = SecretMap::new();
    data.insert("password", SecretString::from(value.clone()));
    admin
        .kv_write("secret", &path, &data, None)
        .await
        .expect("seed the secret");
    let policy = name.to_owned();
    let rules =
        format!("path \"secret/data/{path}\" {{ capabilities = [\"read\"] }}\n{extra_rules}");
    call(
        admin,
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{policy}"),
        json!({ "policy": rules }),
    )
    .await;
    Readable {
        path,
        value,
        policy,
    }
}

async fn read_value(vault: &Vault, path: &str) -> Result<String, VaultError> {
    let entry = vault
        .kv_read("secret", path)
        .await?
        .expect("the secret exists");
    Ok(entry
        .data
        .expose("password")
        .expect("password key")
        .to_owned())
}

/// An AppRole mount with one role, its role id and secret id in files.
struct AppRole {
    mount: String,
    role_id: String,
    secret_id: String,
    role_id_file: PathBuf,
    secret_id_file: PathBuf,
    secret: Readable,
    dir: tempfile::TempDir,
}

impl AppRole {
    async fn new(admin: &Vault, ttl: &str, max_ttl: &str, extra_rules: &str) -> AppRole {
        let mount = unique("approle");
        let secret = readable(admin, &mount, extra_rules).await;
        call(
            admin,
            reqwest::Method::POST,
            &format!("sys/auth/{mount}"),
            json!({"type": "approle"}),
        )
        .await;
        call(
            admin,
            reqwest::Method::POST,
            &format!("auth/{mount}/role/rotor"),
            json!({"token_policies": [secret.policy], "token_ttl": ttl, "token_max_ttl": max_ttl}),
        )
        .await;
        let role_id = call(
            admin,
            reqwest::Method::GET,
            &format!("auth/{mount}/role/rotor/role-id"),
            Value::Null,
        )
        .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
        let secret_id = call(
            admin,
            reqwest::Method::POST,
            &format!("auth/{mount}/role/rotor/secret-id"),
            json!({}),
        )
        .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let role_id_file = dir.path().join("role-id");
        let secret_id_file = dir.path().join("secret-id");
        std::fs::write(&role_id_file, format!("{role_id}\n")).expect("role id file");
        std::fs::write(&secret_id_file, format!("{secret_id}\n")).expect("secret id file");
        AppRole {
            mount,
            role_id,
            secret_id,
            role_id_file,
            secret_id_file,
            secret,
            dir,
        }
    }

    fn config(&self) -> VaultConfig {
        VaultConfig {
            addr: stack().vault_addr.clone(),
            token: None,
            auth: VaultAuth::AppRole {
                mount: self.mount.clone(),
                role_id_file: self.role_id_file.clone(),
                secret_id_file: self.secret_id_file.clone(),
            },
            ..VaultConfig::from_env()
        }
    }
}

/// The token a client uses right now (vaultrs keeps it in its settings).
fn token_of(vault: &Vault) -> String {
    vault.client().settings.token.clone()
}

/// Polls `check` every 100 ms until it yields, or panics after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// AppRole

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_reads_kv_and_the_keeper_outlives_the_max_ttl() {
    capture_logs();
    let admin = admin();
    // Tokens live 3 s and can be renewed up to 6 s after login.
    let role = AppRole::new(&admin, "3s", "6s", "").await;
    let vault = Vault::login(&role.config())
        .await
        .expect("AppRole login without VAULT_TOKEN");
    assert_eq!(
        read_value(&vault, &role.secret.path).await.expect("read"),
        role.secret.value
    );
    let first = token_of(&vault);
    assert!(!first.is_empty());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = vault.keep_alive(async move {
        let _ = stopped.await;
    });

    // Read continuously until OpenBao has expired the first token at its maximum TTL;
    // every read in between must work.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let mut tokens = BTreeSet::from([first.clone()]);
    let first_secret = SecretString::from(first.clone());
    let expired_after = loop {
        tokens.insert(token_of(&vault));
        let got = read_value(&vault, &role.secret.path)
            .await
            .unwrap_or_else(|e| panic!("read failed {:?} after login: {e}", started.elapsed()));
        assert_eq!(got, role.secret.value);
        let probe = vault
            .request(
                reqwest::Method::GET,
                "auth/token/lookup-self",
                None,
                AuthAs::Token(&first_secret),
            )
            .await
            .expect("lookup-self");
        if probe.status == 403 {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "the first token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        expired_after >= Duration::from_secs(5),
        "the first token expired after {expired_after:?}, before its maximum TTL"
    );
    // Past the maximum TTL, the keeper's new token still reads.
    assert_eq!(
        read_value(&vault, &role.secret.path)
            .await
            .expect("read after the max TTL"),
        role.secret.value
    );
    tokens.insert(token_of(&vault));
    assert!(tokens.len() >= 2, "the keeper never logged in again");
    assert_ne!(token_of(&vault), first);

    let lines = log_lines(&role.mount);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Logged in to Vault again.") && l.contains("max_ttl")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Renewed the Vault token.")),
        "{lines:#?}"
    );
    let _ = stop.send(());
    keeper.await.expect("keeper task");

    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.extend([role.role_id.as_str(), role.secret_id.as_str()]);
    assert_no_secret(&logs(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_is_renewed_when_renewable_and_left_alone_otherwise() {
    capture_logs();
    let admin = admin();
    let name = unique("static-token");
    let secret = readable(&admin, &name, "").await;
    let create = |renewable: bool| {
        let admin = admin.clone();
        let policy = secret.policy.clone();
        async move {
            call(
                &admin,
                reqwest::Method::POST,
                "auth/token/create-orphan",
                json!({"policies": [policy], "ttl": "3s", "renewable": renewable, "no_default_policy": false}),
            )
            .await["auth"]["client_token"]
                .as_str()
                .expect("client_token")
                .to_owned()
        }
    };
    let connect = |token: &str| {
        Vault::connect(&VaultConfig {
            addr: stack().vault_addr.clone(),
            token: Some(SecretString::from(token.to_owned())),
            ..VaultConfig::from_env()
        })
        .expect("client")
    };

    // Renewable: still good well past its 3 s TTL.
    let renewable = create(true).await;
    let vault = connect(&renewable);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = vault.keep_alive(async move {
        let _ = stopped.await;
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        let got = read_value(&vault, &secret.path)
            .await
            .unwrap_or_else(|e| panic!("read failed {:?} after start: {e}", started.elapsed()));
        assert_eq!(got, secret.value);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        token_of(&vault),
        renewable,
        "a given token is never replaced"
    );
    let _ = stop.send(());
    keeper.await.expect("keeper task");

    // Not renewable: the keeper says so and ends by itself.
    let fixed = create(false).await;
    let vault = connect(&fixed);
    let keeper = vault.keep_alive(std::future::pending());
    tokio::time::timeout(Duration::from_secs(10), keeper)
        .await
        .expect("the keeper ends for a token it cannot renew")
        .expect("keeper task");
    let warning = logs()
        .lines()
        .find(|l| l.contains("the token is not renewable"))
        .map(str::to_owned);
    assert!(
        warning.as_deref().is_some_and(|w| w.contains("WARN")),
        "{warning:?}"
    );
    assert_no_secret(&logs(), &[&renewable, &fixed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_is_logged_retried_and_reads_the_files_again() {
    capture_logs();
    let admin = admin();
    // Renewals cannot extend the token: the keeper must log in again within 2 s.
    let role = AppRole::new(&admin, "3s", "3s", "").await;
    let vault = Vault::login(&role.config()).await.expect("login");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = vault.keep_alive(async move {
        let _ = stopped.await;
    });
    // The secret id on disk goes bad (e.g. a half-updated Secret volume).
    let wrong = format!("wrong{}", canary());
    std::fs::write(&role.secret_id_file, &wrong).expect("overwrite the secret id");
    let failure = eventually(
        Duration::from_secs(15),
        "a logged login failure",
        || async {
            log_lines(&role.mount)
                .into_iter()
                .find(|l| l.contains("Logging in to Vault failed; retrying."))
        },
    )
    .await;
    assert!(failure.contains("ERROR"), "{failure}");
    assert!(failure.contains("retry_in_secs"), "{failure}");
    // The right secret id comes back: the next attempt reads it and succeeds.
    std::fs::write(&role.secret_id_file, &role.secret_id).expect("restore the secret id");
    eventually(Duration::from_secs(15), "a successful login", || async {
        log_lines(&role.mount)
            .into_iter()
            .find(|l| l.contains("Logged in to Vault again."))
    })
    .await;
    assert_eq!(
        read_value(&vault, &role.secret.path).await.expect("read"),
        role.secret.value
    );
    let _ = stop.send(());
    keeper.await.expect("keeper task");
    assert_no_secret(
        &logs(),
        &[&wrong, &role.secret_id, &role.role_id, &token_of(&vault)],
    );
}

#[tokio::test]
async fn login_errors_are_clear_and_carry_no_secret() {
    let admin = admin();
    let role = AppRole::new(&admin, "60s", "60s", "").await;

    // Missing pieces of the configuration name the variable to set.
    let e = VaultAuthSettings {
        method: Some("kubernetes".into()),
        ..Default::default()
    }
    .build()
    .expect_err("no role");
    assert!(e.to_string().contains("ROTOR_VAULT_ROLE"), "{e}");
    let e = VaultAuthSettings {
        method: Some("approle".into()),
        role_id_file: Some(role.role_id_file.clone()),
        ..Default::default()
    }
    .build()
    .expect_err("no secret id file");
    assert!(e.to_string().contains("ROTOR_VAULT_SECRET_ID_FILE"), "{e}");

    // A missing file: named with its variable, before anything is sent.
    let mut config = role.config();
    let missing = role.dir.path().join("absent");
    config.auth = VaultAuth::AppRole {
        mount: role.mount.clone(),
        role_id_file: missing.clone(),
        secret_id_file: role.secret_id_file.clone(),
    };
    let e = Vault::login(&config).await.expect_err("missing file");
    assert_eq!(e.kind(), "vault_credential_file");
    let text = e.to_string();
    assert!(
        text.contains("ROTOR_VAULT_ROLE_ID_FILE") && text.contains(&missing.display().to_string()),
        "{text}"
    );

    // An empty secret id file.
    let empty = role.dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("empty file");
    config.auth = VaultAuth::AppRole {
        mount: role.mount.clone(),
        role_id_file: role.role_id_file.clone(),
        secret_id_file: empty,
    };
    let e = Vault::login(&config).await.expect_err("empty file");
    assert!(e.to_string().contains("is empty"), "{e}");

    // A secret id Vault refuses: Vault's answer, never the credentials.
    let wrong = role.dir.path().join("wrong");
    let wrong_id = format!("wrong{}", canary());
    std::fs::write(&wrong, &wrong_id).expect("wrong secret id");
    config.auth = VaultAuth::AppRole {
        mount: role.mount.clone(),
        role_id_file: role.role_id_file.clone(),
        secret_id_file: wrong,
    };
    let e = Vault::login(&config).await.expect_err("refused");
    assert_eq!(e.kind(), "vault_login");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains(&format!("approle login at auth/{}", role.mount))
            && text.contains("HTTP 400"),
        "{text}"
    );
    assert_no_secret(&format!("{text} {e:?}"), &[&wrong_id, &role.role_id]);

    // A mount that does not exist.
    config.auth = VaultAuth::AppRole {
        mount: unique("no-such-mount"),
        role_id_file: role.role_id_file.clone(),
        secret_id_file: role.secret_id_file.clone(),
    };
    let e = Vault::login(&config).await.expect_err("no mount");
    assert_eq!(e.kind(), "vault_login");
    assert_no_secret(&e.to_string(), &[&role.secret_id, &role.role_id]);
}

// ---------------------------------------------------------------------------------
// Kubernetes

/// A throwaway self-signed CA certificate (its key was discarded): OpenBao requires
/// `kubernetes_ca_cert` with `disable_local_ca_jwt`, but does not use it for http.
const UNUSED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBqDCCAU2gAwIBAgIUUunQxQn5Ng7tRWuqVpkcsBWWAHYwCgYIKoZIzj0EAwIw
KDEmMCQGA1UEAwwdcm90b3ItdGVzdC1mYWtlLWt1YmVybmV0ZXMtY2EwIBcNMjYx
MTIyMDA1NjU4WhgPMjEyNjEwMjkwMDU2NThaMCgxJjAkBgNVBAMMHXJvdG9yLXRl
c3QtZmFrZS1rdWJlcm5ldGVzLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
hCrOkyv4zespBLiI8HplstEW3Hk2PUUGdFLW4zABa+lQ4DFxH6LvLV7ghsyGKMHW
QY0PgoLzAGlFjT5Z9U1EVKNTMFEwHQYDVR0OBBYEFP+oUT4RifAUoHtlYuHWt8/q
64YlMB8GA1UdIwQYMBaAFP+oUT4RifAUoHtlYuHWt8/q64YlMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAN7MRgBMMQv7WCc0bV+mBjlF6pIbmlWm
hTzTN1ZdgTj5AiEAlkTW58XFJX0TfyBZIXb9tDK6tiW7nfZS2e9mh7QH1po=
-----END CERTIFICATE-----
";

/// A ServiceAccount JWT as the kubelet mounts it (legacy claims); the signature is
/// not checked by OpenBao, which asks the TokenReview endpoint instead.
fn service_account_jwt(namespace: &str, name: &str, uid: &str) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "kid": "rotor-test"})),
        b64(&json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "jti": canary(),
        })),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(canary()),
    )
}

/// The TokenReview API of a Kubernetes API server on loopback: `POST
/// /apis/authentication.k8s.io/v1/tokenreviews` authenticates exactly one JWT as
/// `system:serviceaccount:NS:NAME` and refuses any other; requests without a bearer
/// token get 401, as from a real API server.
struct TokenReviewer {
    url: String,
    reviews: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl TokenReviewer {
    async fn start(jwt: &str, namespace: &str, name: &str, uid: &str) -> TokenReviewer {
        let reviews = Arc::new(AtomicUsize::new(0));
        let (jwt, user, uid) = (
            jwt.to_owned(),
            format!("system:serviceaccount:{namespace}:{name}"),
            uid.to_owned(),
        );
        let counter = Arc::clone(&reviews);
        let app = axum::Router::new().route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(review): axum::Json<Value>| {
                    let (jwt, user, uid, counter) =
                        (jwt.clone(), user.clone(), uid.clone(), Arc::clone(&counter));
                    async move {
                        use axum::http::StatusCode;
                        let bearer = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
                        if !bearer {
                            return (
                                StatusCode::UNAUTHORIZED,
                                axum::Json(json!({"kind": "Status", "code": 401})),
                            );
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let status = if review["spec"]["token"].as_str() == Some(jwt.as_str()) {
                            json!({"authenticated": true, "user": {
                                "username": user, "uid": uid,
                                "groups": ["system:serviceaccounts", "system:authenticated"]}})
                        } else {
                            json!({"authenticated": false, "error": "invalid bearer token"})
                        };
                        (
                            StatusCode::CREATED,
                            axum::Json(json!({
                                "apiVersion": "authentication.k8s.io/v1",
                                "kind": "TokenReview",
                                "metadata": {},
                                "spec": {},
                                "status": status,
                            })),
                        )
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenReviewer {
            url: format!("http://{addr}"),
            reviews,
            _task: task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_reads_kv() {
    capture_logs();
    let admin = admin();
    let mount = unique("kubernetes");
    let secret = readable(&admin, &mount, "").await;
    let (namespace, sa, uid) = (
        "rotor-system",
        "rotor",
        "0b9b6a43-5bd4-4b8e-9d3f-7a1c0c1e2f10",
    );
    let jwt = service_account_jwt(namespace, sa, uid);
    let reviewer = TokenReviewer::start(&jwt, namespace, sa, uid).await;
    call(
        &admin,
        reqwest::Method::POST,
        &format!("sys/auth/{mount}"),
        json!({"type": "kubernetes"}),
    )
    .await;
    call(
        &admin,
        reqwest::Method::POST,
        &format!("auth/{mount}/config"),
        json!({
            "kubernetes_host": reviewer.url,
            "kubernetes_ca_cert": UNUSED_CA,
            "disable_local_ca_jwt": true,
        }),
    )
    .await;
    call(
        &admin,
        reqwest::Method::POST,
        &format!("auth/{mount}/role/rotor"),
        json!({
            "bound_service_account_names": [sa],
            "bound_service_account_namespaces": [namespace],
            "token_policies": [secret.policy],
            "token_ttl": "60s",
        }),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let jwt_file = dir.path().join("token");
    std::fs::write(&jwt_file, &jwt).expect("jwt file");

    // As the agent reads it in a pod: method, role and mount from the environment.
    let auth = VaultAuthSettings::from_lookup(|k| match k {
        "ROTOR_VAULT_AUTH_METHOD" => Some("kubernetes".into()),
        "ROTOR_VAULT_ROLE" => Some("rotor".into()),
        "ROTOR_VAULT_AUTH_MOUNT" => Some(mount.clone()),
        "ROTOR_VAULT_JWT_FILE" => Some(jwt_file.display().to_string()),
        _ => None,
    })
    .build()
    .expect("settings");
    let config = VaultConfig {
        addr: stack().vault_addr.clone(),
        token: None,
        auth,
        ..VaultConfig::from_env()
    };
    let vault = Vault::login(&config).await.expect("Kubernetes login");
    assert_eq!(
        read_value(&vault, &secret.path).await.expect("read"),
        secret.value
    );
    assert!(reviewer.reviews.load(Ordering::SeqCst) >= 1);
    let token = token_of(&vault);

    // Another ServiceAccount's JWT: the API server does not authenticate it.
    let other = service_account_jwt(
        namespace,
        "intruder",
        "1f0e4e55-0000-4000-8000-000000000001",
    );
    std::fs::write(&jwt_file, &other).expect("jwt file");
    let e = Vault::login(&config).await.expect_err("refused");
    assert_eq!(e.kind(), "vault_login");
    let text = e.to_string();
    assert!(
        text.contains(&format!("kubernetes login at auth/{mount}")) && text.contains("HTTP 403"),
        "{text}"
    );
    assert_no_secret(&format!("{text} {e:?}"), &[&other]);
    assert_no_secret(&logs(), &[&jwt, &other, &token]);
}

// ---------------------------------------------------------------------------------
// The binary

/// A policy (Vault only, no consumers) whose canonical secret is `canonical`.
fn write_policy(dir: &Path, name: &str, canonical: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            r#"apiVersion: rotor/v1
kind: RotationPolicy
metadata:
  name: {name}
spec:
  credential:
    type: postgres
    connection:
      host: 127.0.0.1
      port: 5432
      database: postgres
      adminFrom: {{vault: {{path: rotor-tests/{name}/admin}}}}
    username: app
    strategy: single
    password: {{length: 32, alphabet: alphanumeric}}
  vault:
    mount: secret
    path: {canonical}
"#
        ),
    )
    .expect("write policy");
}

/// rotor's state paths (fingerprint key, journal) in the default `secret` mount.
const STATE_RULES: &str = r#"path "secret/data/rotor/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/rotor/*" { capabilities = ["read", "list"] }
"#;

/// `rotor` with AppRole login settings and no token anywhere.
fn rotor_approle(role: &AppRole, home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("VAULT_ADDR", &stack().vault_addr)
        .env("ROTOR_VAULT_AUTH_METHOD", "approle")
        .env("ROTOR_VAULT_AUTH_MOUNT", &role.mount)
        .env("ROTOR_VAULT_ROLE_ID_FILE", &role.role_id_file)
        .env("ROTOR_VAULT_SECRET_ID_FILE", &role.secret_id_file);
    cmd
}

#[tokio::test]
async fn rotor_status_logs_in_with_approle_and_no_token() {
    let admin = admin();
    let role = AppRole::new(&admin, "60s", "120s", STATE_RULES).await;
    let home = tempfile::tempdir().expect("home");
    let policies = tempfile::tempdir().expect("policies");
    let name = role.mount.clone();
    write_policy(policies.path(), &name, &role.secret.path);

    let out = rotor_approle(&role, home.path())
        .args(["-o", "json", "status", "--policies"])
        .arg(policies.path())
        .output()
        .expect("run rotor status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("JSON");
    let policy = &json["policies"][0];
    assert_eq!(policy["name"], name.as_str());
    // The canonical secret was read with the AppRole token.
    assert!(policy["secret_created_at"].is_string(), "{json}");
    assert!(stderr.contains("Logged in to Vault."), "{stderr}");
    assert_no_secret(
        &format!("{stdout}{stderr}"),
        &[&role.secret_id, &role.role_id],
    );

    // Without a role, Kubernetes auth stops with the variable to set.
    let out = rotor_approle(&role, home.path())
        .env("ROTOR_VAULT_AUTH_METHOD", "kubernetes")
        .args(["status", "--policies"])
        .arg(policies.path())
        .output()
        .expect("run rotor status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ROTOR_VAULT_ROLE (or --vault-role)"),
        "{stderr}"
    );

    // Flags override the environment: --vault-auth-method token needs a token.
    let out = rotor_approle(&role, home.path())
        .args(["status", "--vault-auth-method", "token", "--policies"])
        .arg(policies.path())
        .output()
        .expect("run rotor status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Vault token"), "{stderr}");
}

/// `rotor run`, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotor_run_keeps_its_approle_token_past_the_max_ttl() {
    let admin = admin();
    let role = AppRole::new(&admin, "3s", "6s", STATE_RULES).await;
    let home = tempfile::tempdir().expect("home");
    let policies = tempfile::tempdir().expect("policies");
    let state = tempfile::tempdir().expect("state");
    write_policy(policies.path(), &role.mount, &role.secret.path);
    let api_token = format!("tok{}", canary());
    let token_file = state.path().join("api-token");
    std::fs::write(&token_file, &api_token).expect("api token");
    let auth = state.path().join("auth.yaml");
    std::fs::write(
        &auth,
        format!(
            "identities:\n  - name: ops\n    tokenFrom: {{file: {}}}\n    policies: [\"*\"]\n",
            token_file.display()
        ),
    )
    .expect("auth config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = state.path().join("agent.log");
    let child = rotor_approle(&role, home.path())
        .args(["-vv", "run", "--policies"])
        .arg(policies.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--auth-config")
        .arg(&auth)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start rotor run");
    let agent = Running(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The first login is seen no earlier than it happened, so its token is expired
    // 6 s (the maximum TTL) after it is seen.
    let first_seen = eventually(Duration::from_secs(30), "rotor run's login", || async {
        log_text()
            .contains("Logged in to Vault.")
            .then(Instant::now)
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "a second login by rotor run",
        || async {
            log_text()
                .contains("Logged in to Vault again.")
                .then_some(())
        },
    )
    .await;
    // Wait out the first token's maximum TTL, then make the agent read Vault: a new
    // policy, picked up on SIGHUP, is synced and its secret read.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        first_seen + Duration::from_millis(6200),
    ))
    .await;
    let second = unique("second");
    let second_secret = readable(&admin, &second, "").await;
    // The role's policy must cover the second policy's secret too.
    let rules = format!(
        "path \"secret/data/{}\" {{ capabilities = [\"read\"] }}\npath \"secret/data/{}\" {{ capabilities = [\"read\"] }}\n{STATE_RULES}",
        role.secret.path, second_secret.path
    );
    call(
        &admin,
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{}", role.secret.policy),
        json!({ "policy": rules }),
    )
    .await;
    write_policy(policies.path(), &second, &second_secret.path);
    let status = Command::new("kill")
        .args(["-HUP", &agent.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let http = reqwest::Client::new();
    let view = eventually(Duration::from_secs(30), "the new policy's secret", || {
        let http = http.clone();
        let api_token = api_token.clone();
        let second = second.clone();
        async move {
            let list: Value = http
                .get(format!("http://127.0.0.1:{port}/v1/policies"))
                .bearer_auth(api_token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let list = list.get("policies").cloned().unwrap_or(list);
            list.as_array()?
                .iter()
                .find(|p| p["name"] == second.as_str() && p["secret_created_at"].is_string())
                .cloned()
        }
    })
    .await;
    assert!(view["error"].is_null(), "{view}");
    let text = log_text();
    assert!(!text.contains("Logging in to Vault failed"), "{text}");
    assert_no_secret(&text, &[&role.secret_id, &role.role_id, &api_token]);
    // No token-shaped string either (OpenBao tokens start with `s.`).
    let token_like = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .find(|w| w.starts_with("s.") && w.len() >= 26);
    assert!(
        token_like.is_none(),
        "a token-like string in the log: {token_like:?}"
    );
}
