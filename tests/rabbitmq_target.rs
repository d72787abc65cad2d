//! The RabbitMQ target against the broker `dev/stack up` prepares (management API on
//! 127.0.0.1:15672, AMQP on 5672). Every test makes its own users. AMQP clients are the
//! `amqp-tools` programs (`amqp-publish`, `amqp-consume`), which `dev/stack up` installs:
//! they prove what a real AMQP client sees, and hold real connections open.

#[path = "common/logs.rs"]
mod logs;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use logs::capture_logs;
use rotor::credentials::AuthOutcome;
use rotor::credentials::rabbitmq::{RabbitmqError, RabbitmqTarget};
use rotor::policy::{PasswordGenerator, RabbitmqCredential, Reference, Strategy};
use rotor::secret::{SecretMap, SecretString};
use rotor_testkit::{ServiceInfo, assert_no_secret, canary, unique};
use serde_json::{Value, json};
use url::Url;

fn info() -> &'static ServiceInfo {
    rotor_testkit::rabbitmq()
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn management_url() -> Url {
    Url::parse(info().url.as_deref().expect("management URL")).expect("URL")
}

fn amqp_url() -> Url {
    Url::parse(&format!("amqp://{}:{}", info().host, info().port)).expect("URL")
}

/// The target as the engine builds it: from a policy credential and the resolved admin.
fn target() -> RabbitmqTarget {
    let info = info();
    let spec = RabbitmqCredential {
        management_url: management_url(),
        admin_from: Reference::Env("UNUSED".into()),
        username: "unused".into(),
        amqp_url: Some(amqp_url()),
        strategy: Strategy::Single,
        password: PasswordGenerator::default(),
        grace: Duration::ZERO,
    };
    let mut admin = SecretMap::new();
    admin.insert("username", secret(&info.admin_user));
    admin.insert("password", secret(&info.admin_password));
    RabbitmqTarget::new(&spec, &admin).expect("target")
}

fn user_name() -> String {
    unique("rmq")
}

/// The admin's HTTP calls outside the code under test.
async fn admin_request(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let info = info();
    let url = format!(
        "{}/api/{path}",
        management_url().as_str().trim_end_matches('/')
    );
    let mut request = reqwest::Client::new()
        .request(method, url)
        .basic_auth(&info.admin_user, Some(&info.admin_password));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("management API");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}

/// Creates `user` with `password` (cleartext: the fixture, not the code under test),
/// `tags`, and full permissions on `/` so it can open AMQP connections.
async fn create_user(user: &str, password: &str, tags: &str) {
    let (status, body) = admin_request(
        reqwest::Method::PUT,
        &format!("users/{user}"),
        Some(json!({"password": password, "tags": tags})),
    )
    .await;
    assert!(
        status == 201 || status == 204,
        "create user: {status} {body}"
    );
    let (status, body) = admin_request(
        reqwest::Method::PUT,
        &format!("permissions/%2F/{user}"),
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    assert!(
        status == 201 || status == 204,
        "permissions: {status} {body}"
    );
}

async fn drop_user(user: &str) {
    admin_request(reqwest::Method::DELETE, &format!("users/{user}"), None).await;
}

async fn user_record(user: &str) -> Value {
    let (status, body) = admin_request(reqwest::Method::GET, &format!("users/{user}"), None).await;
    assert_eq!(status, 200, "GET user: {body}");
    body
}

fn tags_of(record: &Value) -> Vec<String> {
    let mut tags: Vec<String> = match &record["tags"] {
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => s
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        other => panic!("tags: {other}"),
    };
    tags.sort();
    tags
}

fn amqp_user_url(user: &str, password: &str) -> String {
    format!(
        "amqp://{user}:{password}@{}:{}/%2F",
        info().host,
        info().port
    )
}

/// Publishes one message with `amqp-publish`: what a real AMQP client makes of the
/// password. `Err` holds the client's error output.
fn amqp_login(user: &str, password: &str) -> Result<(), String> {
    let output = Command::new("amqp-publish")
        .args(["--url", &amqp_user_url(user, password)])
        .args(["-r", "rotor-test-nowhere", "-b", "x"])
        .output()
        .expect("amqp-publish is not installed: run `dev/stack up`, which installs amqp-tools");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// An `amqp-consume` process holding one AMQP connection open as `user`.
struct AmqpClient(Child);

impl AmqpClient {
    fn open(user: &str, password: &str) -> AmqpClient {
        let child = Command::new("amqp-consume")
            .args(["--url", &amqp_user_url(user, password), "cat"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("amqp-consume is not installed: run `dev/stack up`, which installs amqp-tools");
        AmqpClient(child)
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for AmqpClient {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names of `user`'s connections from connection tracking.
async fn tracked_connections(user: &str) -> Vec<String> {
    let (status, body) = admin_request(
        reqwest::Method::GET,
        &format!("connections/username/{user}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Polls until `check` holds, or panics with `what` after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_accepted(outcome: &AuthOutcome) {
    assert!(
        matches!(outcome, AuthOutcome::Accepted),
        "expected Accepted, got {outcome:?}"
    );
}

fn assert_rejected(outcome: &AuthOutcome) {
    match outcome {
        AuthOutcome::Rejected { code, message } => {
            assert_eq!(code, "401");
            assert_eq!(message, "Login failed");
        }
        other => panic!("expected Rejected 401, got {other:?}"),
    }
}

fn error_text(error: &RabbitmqError) -> String {
    format!("{error} | {error:?} | {}", rotor::error_chain(error))
}

/// The whole change for one kind of user: the new password works and the old one is
/// refused, through the probe and through AMQP, and the user keeps its tags and permissions.
async fn rotate_and_check(tags: &str) {
    let logs = capture_logs();
    let target = target();
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, &old, tags).await;
    let tags_before = tags_of(&user_record(&user).await);

    // Before: the probe accepts the current password, whatever the user's tags.
    assert_accepted(&target.login(&user, &secret(&old)).await);
    assert_rejected(&target.login(&user, &secret(&new)).await);
    assert!(target.user_exists(&user).await.expect("user_exists"));

    target
        .set_password(&user, &secret(&new))
        .await
        .expect("set_password");
    assert_accepted(&target.login(&user, &secret(&new)).await);
    assert_rejected(&target.login(&user, &secret(&old)).await);
    // A real AMQP client agrees.
    amqp_login(&user, &new).expect("AMQP login with the new password");
    let refused = amqp_login(&user, &old).expect_err("AMQP login with the old password");
    assert!(refused.contains("ACCESS_REFUSED"), "{refused}");

    // Idempotent.
    target
        .set_password(&user, &secret(&new))
        .await
        .expect("set_password again");
    assert_accepted(&target.login(&user, &secret(&new)).await);

    let record = user_record(&user).await;
    assert_eq!(tags_of(&record), tags_before, "tags changed");
    assert_eq!(
        record["hashing_algorithm"],
        "rabbit_password_hashing_sha256"
    );
    assert_no_secret(&record.to_string(), &[&old, &new]);
    let (status, _) = admin_request(
        reqwest::Method::GET,
        &format!("permissions/%2F/{user}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "permissions on / are gone");

    let text = logs.text();
    assert!(text.contains("RabbitMQ password set."), "{text}");
    assert_no_secret(&text, &[&old, &new, &info().admin_password]);
    drop_user(&user).await;
}

#[tokio::test]
async fn a_user_without_tags_gets_the_new_password_and_the_old_one_is_refused() {
    capture_logs();
    // Such a user cannot use the management API at all: its right password gets a 401
    // that says "Not management user", which must not pass for a refusal.
    rotate_and_check("").await;
}

#[tokio::test]
async fn a_management_user_gets_the_new_password_and_keeps_its_tags() {
    capture_logs();
    rotate_and_check("management,monitoring").await;
}

#[tokio::test]
async fn a_missing_user_is_an_error_and_is_never_created() {
    capture_logs();
    // Through a recorder: every call carries rotor's User-Agent, the crate's client's too.
    let direct = management_url();
    let upstream = direct
        .socket_addrs(|| None)
        .expect("the management API's address")[0];
    let recorder = rotor_testkit::HttpRecorder::start(upstream);
    let mut recorded = Url::parse(&recorder.url()).expect("URL");
    recorded.set_path(direct.path());
    let target = RabbitmqTarget::from_parts(
        recorded,
        Some(amqp_url()),
        &info().admin_user,
        secret(&info().admin_password),
    )
    .expect("target");
    let user = user_name();
    let password = canary();

    assert!(!target.user_exists(&user).await.expect("user_exists"));
    let err = target
        .set_password(&user, &secret(&password))
        .await
        .expect_err("missing user");
    assert_eq!(err.kind(), "user_not_found");
    assert!(!err.is_transient());
    assert!(err.to_string().contains(&user), "{err}");
    assert_no_secret(&error_text(&err), &[&password, &info().admin_password]);
    assert!(!target.user_exists(&user).await.expect("user_exists"));
    // An unknown user is refused like a wrong password.
    assert_rejected(&target.login(&user, &secret(&password)).await);
    assert_eq!(
        target.terminate_sessions(&user, None).await.expect("none"),
        0
    );
    recorder
        .user_agents()
        .assert_all(rotor::outside::USER_AGENT);
}

/// How long a closed connection's client may take to be gone: the broker drops the socket
/// when the client acknowledges the close or after 30 s, and `amqp-consume` never
/// acknowledges it.
const CLIENT_GONE_WITHIN: Duration = Duration::from_secs(45);

/// Waits until the statistics database knows the connection (it lags connection
/// tracking by the statistics interval), so its opening time is known.
async fn wait_for_statistics(name: &str) {
    let path = format!(
        "connections/{}",
        url::form_urlencoded::byte_serialize(name.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    );
    eventually(
        "the connection's statistics",
        Duration::from_secs(30),
        || async { admin_request(reqwest::Method::GET, &path, None).await.0 == 200 },
    )
    .await;
}

/// Opens an AMQP connection as `user` and waits until connection tracking lists it;
/// returns the client and the connection's name.
async fn open_tracked(user: &str, password: &str) -> (AmqpClient, String) {
    let before = tracked_connections(user).await;
    let client = AmqpClient::open(user, password);
    let mut name = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while name.is_none() {
        assert!(
            Instant::now() < deadline,
            "the AMQP connection of {user} never showed up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        name = tracked_connections(user)
            .await
            .into_iter()
            .find(|n| !before.contains(n));
    }
    (client, name.expect("name"))
}

#[tokio::test]
async fn terminate_sessions_closes_connections_opened_before_the_cutoff_only() {
    capture_logs();
    let target = target();
    let (user, bystander) = (user_name(), user_name());
    let (password, other_password) = (canary(), canary());
    create_user(&user, &password, "").await;
    create_user(&bystander, &other_password, "").await;

    let (mut old_client, old_name) = open_tracked(&user, &password).await;
    wait_for_statistics(&old_name).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut new_client, new_name) = open_tracked(&user, &password).await;
    let (mut other, _) = open_tracked(&bystander, &other_password).await;
    wait_for_statistics(&new_name).await;

    let closed = target
        .terminate_sessions(&user, Some(cutoff))
        .await
        .expect("terminate");
    assert_eq!(closed, 1);

    assert!(
        old_client.wait_exit(CLIENT_GONE_WITHIN).await,
        "the connection opened before the cutoff is still open"
    );
    // The broker's own connection tracking is the authority on what was closed (the
    // closing was one request; the old connection is gone, so it has been served).
    // Tracking may trail the close by a moment: wait for the old one to leave it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut tracked = tracked_connections(&user).await;
    while tracked.len() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tracked = tracked_connections(&user).await;
    }
    assert_eq!(tracked, [new_name]);
    assert_eq!(tracked_connections(&bystander).await.len(), 1);
    assert!(
        new_client.running(),
        "a connection opened after the cutoff was closed"
    );
    assert!(other.running(), "another user's connection was closed");

    drop((new_client, other));
    drop_user(&user).await;
    drop_user(&bystander).await;
}

#[tokio::test]
async fn terminate_sessions_closes_connections_too_new_for_the_statistics() {
    capture_logs();
    let target = target();
    let (user, other_user) = (user_name(), user_name());
    let (password, other_password) = (canary(), canary());
    create_user(&user, &password, "").await;
    create_user(&other_user, &other_password, "").await;

    // Fresh connections: tracked at once, unknown to the statistics database for a while.
    let (mut first, _) = open_tracked(&user, &password).await;
    let (mut second, _) = open_tracked(&user, &password).await;
    let closed = target
        .terminate_sessions(&user, Some(SystemTime::now()))
        .await
        .expect("terminate with a cutoff");
    assert_eq!(closed, 2);

    // Without a cutoff.
    let (mut third, _) = open_tracked(&other_user, &other_password).await;
    let closed = target
        .terminate_sessions(&other_user, None)
        .await
        .expect("terminate without a cutoff");
    assert_eq!(closed, 1);

    let deadline = Instant::now() + CLIENT_GONE_WITHIN;
    while first.running() || second.running() || third.running() {
        assert!(
            Instant::now() < deadline,
            "a closed connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tracked_connections(&user).await.is_empty());
    assert!(tracked_connections(&other_user).await.is_empty());
    drop_user(&user).await;
    drop_user(&other_user).await;
}

#[tokio::test]
async fn an_unreachable_api_is_unreachable_and_transient() {
    capture_logs();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let admin_password = canary();
    let password = canary();
    let target = RabbitmqTarget::from_parts(
        Url::parse(&format!("http://127.0.0.1:{port}")).expect("URL"),
        None,
        "admin",
        secret(&admin_password),
    )
    .expect("target");
    match target.login("someone", &secret(&password)).await {
        AuthOutcome::Unreachable { reason } => {
            assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
            assert_no_secret(&reason, &[&password, &admin_password]);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let err = target
        .set_password("someone", &secret(&password))
        .await
        .expect_err("no API");
    assert_eq!(err.kind(), "lookup_user");
    assert!(err.is_transient());
    assert_no_secret(&error_text(&err), &[&password, &admin_password]);
    let err = target
        .terminate_sessions("someone", None)
        .await
        .expect_err("no API");
    assert!(err.is_transient());
    assert_no_secret(&error_text(&err), &[&admin_password]);
}

#[tokio::test]
async fn a_wrong_admin_password_is_reported_without_secrets() {
    capture_logs();
    let admin_password = canary();
    let password = canary();
    let user = user_name();
    create_user(&user, &canary(), "").await;
    let target = RabbitmqTarget::from_parts(
        management_url(),
        Some(amqp_url()),
        &info().admin_user,
        secret(&admin_password),
    )
    .expect("target");
    let err = target
        .set_password(&user, &secret(&password))
        .await
        .expect_err("wrong admin password");
    assert_eq!(err.kind(), "admin_unauthorized");
    assert!(!err.is_transient());
    assert!(error_text(&err).contains("401"), "{}", error_text(&err));
    assert_no_secret(&error_text(&err), &[&password, &admin_password]);
    let err = target
        .user_exists(&user)
        .await
        .expect_err("wrong admin password");
    assert_eq!(err.kind(), "admin_unauthorized");
    drop_user(&user).await;
}

#[test]
fn debug_redacts_the_admin_password() {
    capture_logs();
    let admin_password = canary();
    let target = RabbitmqTarget::from_parts(
        Url::parse("http://127.0.0.1:15672").expect("URL"),
        Some(Url::parse("amqp://127.0.0.1:5672").expect("URL")),
        "rotor_admin",
        secret(&admin_password),
    )
    .expect("target");
    let text = format!("{target:?}");
    assert!(text.contains("rotor_admin"), "{text}");
    assert!(text.contains("REDACTED"), "{text}");
    assert_no_secret(&text, &[&admin_password]);

    let spec = RabbitmqCredential {
        management_url: Url::parse("http://127.0.0.1:15672").expect("URL"),
        admin_from: Reference::Env("UNUSED".into()),
        username: "app".into(),
        amqp_url: None,
        strategy: Strategy::Single,
        password: PasswordGenerator::default(),
        grace: Duration::ZERO,
    };
    let mut admin = SecretMap::new();
    admin.insert("username", secret("rotor_admin"));
    let err = RabbitmqTarget::new(&spec, &admin).expect_err("no password");
    assert_eq!(err.kind(), "admin_key_missing");
}
