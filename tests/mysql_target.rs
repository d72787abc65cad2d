//! The MariaDB/MySQL target against the project-owned MariaDB that `dev/stack up` starts
//! (passwords enforced, TLS with a test CA). Every test makes its own accounts.

#[path = "common/logs.rs"]
mod logs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logs::capture_logs;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use rotor::credentials::AuthOutcome;
use rotor::credentials::mysql::{self, MysqlError, MysqlTarget};
use rotor::credentials::target::TargetTls;
use rotor::policy::{MysqlConnection, Reference, TlsMode, TlsSpec};
use rotor::secret::{SecretMap, SecretString};
use rotor_testkit::{ServiceInfo, assert_no_secret, canary, unique};

/// The variable `dev/lib/mariadb.sh` records with the instance's CA certificate.
const MYSQL_CA_FILE: &str = "ROTOR_TEST_MYSQL_CA_FILE";

fn db() -> &'static ServiceInfo {
    rotor_testkit::install_crypto_provider();
    rotor_testkit::mysql()
}

fn target(tls: TargetTls) -> MysqlTarget {
    let db = db();
    MysqlTarget::from_parts(
        &db.host,
        db.port,
        tls,
        &db.admin_user,
        secret(&db.admin_password),
    )
    .expect("target")
}

fn plain() -> MysqlTarget {
    target(TargetTls::Disable)
}

fn ca_file() -> PathBuf {
    let from_env = std::env::var(MYSQL_CA_FILE).ok().filter(|v| !v.is_empty());
    let value = from_env.or_else(|| {
        let text = std::fs::read_to_string(rotor_testkit::stack::env_file_path()).ok()?;
        rotor_testkit::stack::parse_env_file(&text).remove(MYSQL_CA_FILE)
    });
    PathBuf::from(value.unwrap_or_else(|| {
        panic!("{MYSQL_CA_FILE} is not set: start the services with `dev/stack up`")
    }))
}

/// A user name unique to this run (`unique` uses '-', which SQL names would need quoted).
fn user_name() -> String {
    unique("rt").replace('-', "_")
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote_ident(user), quote_ident(host))
}

async fn connect_as(user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
    connect_with(user, password, None).await
}

async fn connect_with(
    user: &str,
    password: &str,
    ssl: Option<SslOpts>,
) -> Result<Conn, mysql_async::Error> {
    let db = db();
    let opts = OptsBuilder::default()
        .ip_or_hostname(db.host.as_str())
        .tcp_port(db.port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .ssl_opts(ssl);
    tokio::time::timeout(Duration::from_secs(10), Conn::new(opts))
        .await
        .expect("connecting to the test MariaDB timed out")
}

/// A session as the admin, outside the code under test.
async fn admin() -> Conn {
    let db = db();
    connect_as(&db.admin_user, &db.admin_password)
        .await
        .expect("admin connection to the test MariaDB")
}

/// Creates `'user'@'host'` with `password` (a canary: letters, digits and '-').
async fn create_user(user: &str, host: &str, password: &str) {
    let mut conn = admin().await;
    conn.query_drop(format!(
        "CREATE USER {} IDENTIFIED BY '{password}'",
        account(user, host)
    ))
    .await
    .expect("create user");
    conn.disconnect().await.expect("disconnect");
}

async fn drop_user(user: &str, host: &str) {
    let mut conn = admin().await;
    conn.query_drop(format!("DROP USER IF EXISTS {}", account(user, host)))
        .await
        .expect("drop user");
    conn.disconnect().await.expect("disconnect");
}

async fn stored_hash(user: &str, host: &str) -> String {
    let mut conn = admin().await;
    let hash: Option<String> = conn
        .exec_first(
            "SELECT authentication_string FROM mysql.user WHERE User = ? AND Host = ?",
            (user, host),
        )
        .await
        .expect("read mysql.user");
    conn.disconnect().await.expect("disconnect");
    hash.expect("account row")
}

fn rejected_1045(outcome: &AuthOutcome) -> bool {
    matches!(outcome, AuthOutcome::Rejected { code, .. } if code == "1045")
}

fn accepted(outcome: &AuthOutcome) -> bool {
    matches!(outcome, AuthOutcome::Accepted)
}

/// Everything an error shows: Display, the cause chain and Debug.
fn error_text(err: &MysqlError) -> String {
    format!("{err} | {} | {err:?}", rotor::error_chain(err))
}

#[tokio::test]
async fn set_password_switches_the_login_and_the_old_password_is_rejected_with_1045() {
    let logs = capture_logs();

    let target = plain();
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, "%", &old).await;
    assert!(accepted(&target.login(&user, &secret(&old)).await));

    target
        .set_password(&user, "%", &secret(&new))
        .await
        .expect("set password");
    assert!(accepted(&target.login(&user, &secret(&new)).await));
    let outcome = target.login(&user, &secret(&old)).await;
    assert!(rejected_1045(&outcome), "old password: {outcome:?}");
    if let AuthOutcome::Rejected { message, .. } = &outcome {
        assert!(message.contains("Access denied"), "{message}");
        assert!(message.contains(&user), "{message}");
    }

    // The server holds the native hash, computed by rotor (it matches the server's own).
    let stored = stored_hash(&user, "%").await;
    assert_eq!(stored.len(), 41, "stored: {stored}");
    assert!(stored.starts_with('*'));
    assert_no_secret(&stored, &[&old, &new]);
    let mut conn = admin().await;
    let server_hash: Option<String> = conn
        .exec_first("SELECT PASSWORD(?)", (new.as_str(),))
        .await
        .expect("PASSWORD()");
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_hash.as_deref(), Some(stored.as_str()));

    // Idempotent: the engine may apply the same value twice.
    target
        .set_password(&user, "%", &secret(&new))
        .await
        .expect("set password twice");
    assert!(accepted(&target.login(&user, &secret(&new)).await));
    assert_eq!(stored_hash(&user, "%").await, stored);

    let text = logs.text();
    assert!(text.contains("Account password set."), "logs: {text}");
    assert_no_secret(&text, &[&old, &new, &db().admin_password]);
    assert_no_secret(
        &format!("{target:?} {outcome:?}"),
        &[&old, &new, &db().admin_password],
    );
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn the_cleartext_never_reaches_the_servers_general_log() {
    capture_logs();
    let target = plain();
    let user = user_name();
    let new = canary();
    create_user(&user, "%", &canary()).await;

    let mut conn = admin().await;
    let (output, enabled): (String, i64) = conn
        .query_first("SELECT @@global.log_output, @@global.general_log")
        .await
        .expect("read log settings")
        .expect("one row");
    conn.query_drop("SET GLOBAL log_output = 'TABLE'")
        .await
        .expect("log to table");
    conn.query_drop("SET GLOBAL general_log = 1")
        .await
        .expect("general log on");
    let result = target.set_password(&user, "%", &secret(&new)).await;
    conn.exec_drop("SET GLOBAL general_log = ?", (enabled,))
        .await
        .expect("restore general_log");
    conn.exec_drop("SET GLOBAL log_output = ?", (output.as_str(),))
        .await
        .expect("restore log_output");
    result.expect("set password");

    let statements: Vec<String> = conn
        .exec(
            "SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log \
             WHERE argument LIKE CONCAT('%', ?, '%')",
            (user.as_str(),),
        )
        .await
        .expect("read the general log");
    let stored = stored_hash(&user, "%").await;
    // The log did capture rotor's statement, in its hash form…
    assert!(
        statements.iter().any(|s| s.starts_with("ALTER USER")
            && s.contains("IDENTIFIED VIA mysql_native_password USING")
            && s.contains(&stored)),
        "statements for {user}: {statements:?}"
    );
    // …and nowhere holds the cleartext.
    let leaks: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM mysql.general_log WHERE argument LIKE CONCAT('%', ?, '%')",
            (new.as_str(),),
        )
        .await
        .expect("search the general log");
    assert_eq!(leaks, Some(0), "the new password is in the general log");
    for statement in &statements {
        assert_no_secret(statement, &[&new]);
    }
    conn.disconnect().await.expect("disconnect");
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn names_with_quotes_and_backslashes_are_quoted_safely() {
    capture_logs();
    let target = plain();
    // Everything that could end a string or identifier early, or escape a quote.
    let user = format!("{}_q'`\"\\x", user_name());
    let (old, new) = (canary(), canary());
    create_user(&user, "%", &old).await;

    assert!(target.user_exists(&user, "%").await.expect("exists"));
    target
        .set_password(&user, "%", &secret(&new))
        .await
        .expect("set password");
    assert!(accepted(&target.login(&user, &secret(&new)).await));
    assert!(rejected_1045(&target.login(&user, &secret(&old)).await));
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn the_account_host_part_is_respected() {
    capture_logs();
    let target = plain();
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, "127.0.0.1", &old).await;

    assert!(
        target
            .user_exists(&user, "127.0.0.1")
            .await
            .expect("exists")
    );
    assert!(!target.user_exists(&user, "%").await.expect("exists"));
    let err = target
        .set_password(&user, "%", &secret(&new))
        .await
        .expect_err("no such account");
    assert_eq!(err.kind(), "user_not_found");
    target
        .set_password(&user, "127.0.0.1", &secret(&new))
        .await
        .expect("set password");
    assert!(accepted(&target.login(&user, &secret(&new)).await));
    assert!(rejected_1045(&target.login(&user, &secret(&old)).await));
    drop_user(&user, "127.0.0.1").await;
}

#[tokio::test]
async fn user_exists_and_a_missing_user_is_reported_as_such() {
    capture_logs();
    let target = plain();
    let user = user_name();
    create_user(&user, "%", &canary()).await;
    assert!(target.user_exists(&user, "%").await.expect("exists"));

    let missing = user_name();
    assert!(!target.user_exists(&missing, "%").await.expect("exists"));
    let new = canary();
    let err = target
        .set_password(&missing, "%", &secret(&new))
        .await
        .expect_err("missing user");
    assert_eq!(err.kind(), "user_not_found");
    assert!(!err.is_transient());
    let text = error_text(&err);
    assert!(text.contains(&missing), "{text}");
    assert_no_secret(&text, &[&new, &db().admin_password]);
    // Nothing was created on the way.
    assert!(!target.user_exists(&missing, "%").await.expect("exists"));

    // An empty password is refused before any I/O.
    let err = target
        .set_password(&user, "%", &secret(""))
        .await
        .expect_err("empty password");
    assert_eq!(err.kind(), "empty_password");
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn terminate_sessions_ends_the_users_sessions_and_not_the_admins() {
    capture_logs();
    let target = plain();
    let user = user_name();
    let password = canary();
    create_user(&user, "%", &password).await;

    let mut first = connect_as(&user, &password).await.expect("first session");
    let mut second = connect_as(&user, &password).await.expect("second session");
    first.query_drop("SELECT 1").await.expect("first is alive");
    second
        .query_drop("SELECT 1")
        .await
        .expect("second is alive");
    let mut bystander = admin().await;

    let killed = target
        .terminate_sessions(&user)
        .await
        .expect("terminate sessions");
    assert_eq!(killed, 2);
    assert!(
        first.query_drop("SELECT 1").await.is_err(),
        "first session survived"
    );
    assert!(
        second.query_drop("SELECT 1").await.is_err(),
        "second session survived"
    );
    bystander
        .query_drop("SELECT 1")
        .await
        .expect("another user's session is untouched");
    let left: Option<i64> = bystander
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?",
            (user.as_str(),),
        )
        .await
        .expect("processlist");
    assert_eq!(left, Some(0));
    bystander.disconnect().await.expect("disconnect");

    // Nothing left: zero, and no error.
    assert_eq!(target.terminate_sessions(&user).await.expect("again"), 0);
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn terminate_sessions_spares_the_admins_own_connection() {
    capture_logs();
    // A separate admin account, so that ending "its" sessions touches no other test.
    let admin_user = user_name();
    let admin_password = canary();
    create_user(&admin_user, "%", &admin_password).await;
    let mut conn = admin().await;
    conn.query_drop(format!(
        "GRANT PROCESS, CONNECTION ADMIN ON *.* TO {}",
        account(&admin_user, "%")
    ))
    .await
    .expect("grant");
    conn.disconnect().await.expect("disconnect");

    let db = db();
    let target = MysqlTarget::from_parts(
        &db.host,
        db.port,
        TargetTls::Disable,
        &admin_user,
        secret(&admin_password),
    )
    .expect("target");
    let mut other = connect_as(&admin_user, &admin_password)
        .await
        .expect("other session");
    // Only the other session goes; the call's own connection lives to wait and say goodbye.
    assert_eq!(
        target
            .terminate_sessions(&admin_user)
            .await
            .expect("terminate"),
        1
    );
    assert!(other.query_drop("SELECT 1").await.is_err());
    drop_user(&admin_user, "%").await;
}

#[tokio::test]
async fn a_locked_account_with_the_right_password_is_not_a_rejection() {
    capture_logs();
    let target = plain();
    let user = user_name();
    let password = canary();
    create_user(&user, "%", &password).await;
    let mut conn = admin().await;
    conn.query_drop(format!("ALTER USER {} ACCOUNT LOCK", account(&user, "%")))
        .await
        .expect("lock");
    conn.disconnect().await.expect("disconnect");

    // The password was right; the refusal says nothing about it.
    let outcome = target.login(&user, &secret(&password)).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("4151")),
        "{outcome:?}"
    );
    assert_no_secret(&format!("{outcome:?}"), &[&password]);
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn login_to_a_closed_port_is_unreachable() {
    capture_logs();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let password = canary();
    let outcome = mysql::login(
        "127.0.0.1",
        port,
        &TargetTls::Disable,
        "nobody",
        &secret(&password),
    )
    .await;
    match &outcome {
        AuthOutcome::Unreachable { reason } => {
            assert!(!reason.is_empty());
            assert_no_secret(reason, &[&password]);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn login_to_a_server_that_never_answers_times_out_as_unreachable() {
    capture_logs();
    // Accepts TCP (the kernel's backlog) and never sends the MySQL greeting.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let db = db();
    let target = MysqlTarget::from_parts(
        "127.0.0.1",
        port,
        TargetTls::Disable,
        &db.admin_user,
        secret(&db.admin_password),
    )
    .expect("target")
    .with_connect_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let outcome = target.login("nobody", &secret(&canary())).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("300 ms")),
        "{outcome:?}"
    );
    let err = target
        .user_exists("nobody", "%")
        .await
        .expect_err("no answer");
    assert_eq!(err.kind(), "timeout");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
}

#[tokio::test]
async fn a_wrong_admin_password_is_a_clear_error_without_the_secret() {
    capture_logs();
    let db = db();
    let wrong = canary();
    let target = MysqlTarget::from_parts(
        &db.host,
        db.port,
        TargetTls::Disable,
        &db.admin_user,
        secret(&wrong),
    )
    .expect("target");
    let new = canary();
    for err in [
        target
            .user_exists("someone", "%")
            .await
            .expect_err("admin refused"),
        target
            .set_password("someone", "%", &secret(&new))
            .await
            .expect_err("admin refused"),
        target
            .terminate_sessions("someone")
            .await
            .expect_err("admin refused"),
    ] {
        assert_eq!(err.kind(), "connect");
        assert!(
            !err.is_transient(),
            "a wrong admin password is not transient"
        );
        let text = error_text(&err);
        assert!(text.contains(&target.address()), "{text}");
        assert!(text.contains(&db.admin_user), "{text}");
        assert!(text.contains("1045"), "{text}");
        assert_no_secret(&text, &[&wrong, &new, &db.admin_password]);
    }
}

#[tokio::test]
async fn admin_credentials_come_from_the_policy_reference() {
    capture_logs();
    let db = db();
    let connection = MysqlConnection {
        host: db.host.clone(),
        port: db.port,
        tls: Some(TlsSpec {
            mode: TlsMode::VerifyFull,
            ca_file: Some(ca_file()),
        }),
        admin_from: Reference::Env("UNUSED_HERE".into()),
    };
    let mut admin = SecretMap::new();
    admin.insert("username", secret(&db.admin_user));
    let err = MysqlTarget::new(&connection, &admin).expect_err("no password key");
    assert_eq!(err.kind(), "admin_key_missing");

    admin.insert("password", secret(&db.admin_password));
    let target = MysqlTarget::new(&connection, &admin).expect("target");
    assert_eq!(target.address(), format!("{}:{}", db.host, db.port));
    let user = user_name();
    create_user(&user, "%", &canary()).await;
    assert!(
        target
            .user_exists(&user, "%")
            .await
            .expect("exists over TLS")
    );
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn tls_verify_full_with_the_test_ca_works_for_every_call() {
    capture_logs();
    let ca = ca_file();
    let tls = TargetTls::VerifyFull {
        ca_file: Some(ca.clone()),
    };
    let target = target(tls.clone());
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, "%", &old).await;

    assert!(target.user_exists(&user, "%").await.expect("exists"));
    target
        .set_password(&user, "%", &secret(&new))
        .await
        .expect("set password over TLS");
    assert!(accepted(&target.login(&user, &secret(&new)).await));
    assert!(rejected_1045(&target.login(&user, &secret(&old)).await));
    let db = db();
    assert!(accepted(
        &mysql::login(&db.host, db.port, &tls, &user, &secret(&new)).await
    ));

    // The certificate names localhost too.
    let by_name = MysqlTarget::from_parts(
        "localhost",
        db.port,
        tls.clone(),
        &db.admin_user,
        secret(&db.admin_password),
    )
    .expect("target");
    assert!(accepted(&by_name.login(&user, &secret(&new)).await));

    // The probe's session really is encrypted (checked from inside the server).
    let ssl = SslOpts::default()
        .with_root_certs(vec![ca.clone().into()])
        .with_disable_built_in_roots(true);
    let mut conn = connect_with(&user, &new, Some(ssl))
        .await
        .expect("TLS session");
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .expect("status");
    assert!(
        cipher.is_some_and(|(_, v)| v.starts_with("TLS")),
        "session not encrypted"
    );
    conn.disconnect().await.expect("disconnect");
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn tls_require_encrypts_with_or_without_a_ca() {
    capture_logs();
    let user = user_name();
    let password = canary();
    create_user(&user, "%", &password).await;
    for tls in [
        TargetTls::Require { ca_file: None },
        TargetTls::Require {
            ca_file: Some(ca_file()),
        },
    ] {
        let target = target(tls.clone());
        assert!(
            accepted(&target.login(&user, &secret(&password)).await),
            "{tls:?}"
        );
        assert!(target.user_exists(&user, "%").await.expect("exists"));
    }
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn tls_with_a_wrong_ca_is_refused() {
    capture_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong_ca = other_ca(dir.path());
    let user = user_name();
    let password = canary();
    create_user(&user, "%", &password).await;
    let db = db();

    for tls in [
        TargetTls::VerifyFull {
            ca_file: Some(wrong_ca.clone()),
        },
        TargetTls::Require {
            ca_file: Some(wrong_ca.clone()),
        },
    ] {
        let target = target(tls.clone());
        let outcome = target.login(&user, &secret(&password)).await;
        match &outcome {
            AuthOutcome::Unreachable { reason } => {
                assert!(reason.contains("certificate"), "{tls:?}: {reason}");
                assert_no_secret(reason, &[&password, &db.admin_password]);
            }
            other => panic!("{tls:?}: expected Unreachable, got {other:?}"),
        }
        let err = target
            .user_exists(&user, "%")
            .await
            .expect_err("admin over an untrusted certificate");
        assert_eq!(err.kind(), "connect");
        assert!(!err.is_transient());
        let text = error_text(&err);
        assert!(text.contains("certificate"), "{text}");
        assert_no_secret(&text, &[&password, &db.admin_password]);
    }
    drop_user(&user, "%").await;
}

#[tokio::test]
async fn tls_setup_errors_are_reported_before_connecting() {
    capture_logs();
    let db = db();
    let missing = PathBuf::from("/nonexistent/rotor-mysql-ca.pem");
    let tls = TargetTls::VerifyFull {
        ca_file: Some(missing.clone()),
    };
    let err = MysqlTarget::from_parts(
        &db.host,
        db.port,
        tls.clone(),
        &db.admin_user,
        secret(&db.admin_password),
    )
    .expect_err("missing CA file");
    assert_eq!(err.kind(), "read_ca_file");
    assert!(err.to_string().contains(missing.to_str().expect("utf-8")));
    assert_no_secret(&error_text(&err), &[&db.admin_password]);

    // The standalone probe cannot fail, so it says why it could not ask.
    let outcome = mysql::login(&db.host, db.port, &tls, "nobody", &secret(&canary())).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("rotor-mysql-ca.pem")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn debug_of_a_target_redacts_the_admin_password() {
    capture_logs();
    let db = db();
    let target = target(TargetTls::VerifyFull {
        ca_file: Some(ca_file()),
    });
    let text = format!("{target:?}");
    assert!(text.contains(&db.admin_user), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
    assert_no_secret(&text, &[&db.admin_password]);
}

/// A self-signed CA that did not sign the server's certificate.
fn other_ca(dir: &Path) -> PathBuf {
    let cert = dir.join("other-ca.crt");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "1", "-subj", "/CN=not the rotor test CA"])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    cert
}
