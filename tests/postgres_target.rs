//! The PostgreSQL target against the project-owned cluster that `dev/stack up` starts
//! (SCRAM only, no `trust`, TLS with a test CA). Every test makes its own roles.

#[path = "common/logs.rs"]
mod logs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use logs::capture_logs;
use rotor::credentials::AuthOutcome;
use rotor::credentials::postgres::PostgresTarget;
use rotor::credentials::target::TargetTls;
use rotor::secret::SecretString;
use rotor_testkit::{PgInfo, assert_no_secret, canary, stack, unique};
use tokio_postgres::NoTls;

/// The variable `dev/lib/postgres.sh` exports with the cluster's CA certificate.
const PG_CA_FILE: &str = "ROTOR_TEST_PG_CA_FILE";

fn pg() -> &'static PgInfo {
    &stack().pg
}

fn target(tls: TargetTls) -> PostgresTarget {
    let pg = pg();
    PostgresTarget::from_parts(
        &pg.host,
        pg.port,
        "postgres",
        tls,
        &pg.admin_user,
        SecretString::from(pg.admin_password.clone()),
    )
    .expect("target")
}

fn plain() -> PostgresTarget {
    target(TargetTls::Disable)
}

fn ca_file() -> PathBuf {
    let from_env = std::env::var(PG_CA_FILE).ok().filter(|v| !v.is_empty());
    let value = from_env.or_else(|| {
        let text = std::fs::read_to_string(rotor_testkit::stack::env_file_path()).ok()?;
        rotor_testkit::stack::parse_env_file(&text).remove(PG_CA_FILE)
    });
    PathBuf::from(value.unwrap_or_else(|| {
        panic!("{PG_CA_FILE} is not set: start the services with `dev/stack up`")
    }))
}

fn role_name() -> String {
    unique("pgt")
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

/// A session as the admin, outside the code under test.
async fn admin() -> tokio_postgres::Client {
    let pg = pg();
    connect_as(&pg.admin_user, &pg.admin_password)
        .await
        .expect("admin connection to the test cluster")
}

async fn connect_as(
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let pg = pg();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&pg.host)
        .port(pg.port)
        .dbname("postgres")
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn drop_role(role: &str) {
    let sql = format!("DROP ROLE IF EXISTS \"{}\"", role.replace('"', "\"\""));
    admin().await.batch_execute(&sql).await.expect("drop role");
}

fn rejected_28p01(outcome: &AuthOutcome) -> bool {
    matches!(outcome, AuthOutcome::Rejected { code, .. } if code == "28P01")
}

#[tokio::test]
async fn set_password_stores_a_scram_verifier_and_the_old_password_is_rejected() {
    let logs = capture_logs();

    let target = plain();
    let role = role_name();
    let (old, new) = (canary(), canary());

    target
        .ensure_role(&role, &secret(&old))
        .await
        .expect("ensure role");
    // Idempotent, and it leaves an existing role's password alone.
    target
        .ensure_role(&role, &secret(&new))
        .await
        .expect("ensure role again");
    assert_eq!(
        target.login(&role, &secret(&old)).await,
        AuthOutcome::Accepted
    );

    target
        .set_password(&role, &secret(&new))
        .await
        .expect("set password");
    assert_eq!(
        target.login(&role, &secret(&new)).await,
        AuthOutcome::Accepted
    );
    let outcome = target.login(&role, &secret(&old)).await;
    assert!(rejected_28p01(&outcome), "old password: {outcome:?}");
    if let AuthOutcome::Rejected { message, .. } = &outcome {
        assert!(
            message.contains("password authentication failed"),
            "{message}"
        );
    }

    // The server holds a verifier, never the cleartext.
    let row = admin()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("read pg_authid");
    let stored: String = row.get(0);
    assert!(
        stored.starts_with("SCRAM-SHA-256$4096:"),
        "stored: {stored}"
    );
    assert_no_secret(&stored, &[old.as_str(), new.as_str()]);

    // Setting the same password again is harmless (the engine may apply twice).
    target
        .set_password(&role, &secret(&new))
        .await
        .expect("set password twice");
    assert_eq!(
        target.login(&role, &secret(&new)).await,
        AuthOutcome::Accepted
    );

    let text = logs.text();
    assert!(text.contains("Role password set."), "logs: {text}");
    assert_no_secret(
        &text,
        &[old.as_str(), new.as_str(), pg().admin_password.as_str()],
    );
    assert_no_secret(
        &format!("{target:?} {outcome:?}"),
        &[&old, &new, &pg().admin_password],
    );
    drop_role(&role).await;
}

#[tokio::test]
async fn login_against_a_closed_port_is_unreachable_not_rejected() {
    capture_logs();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let target = PostgresTarget::from_parts(
        "127.0.0.1",
        port,
        "postgres",
        TargetTls::Disable,
        "nobody",
        secret("unused"),
    )
    .expect("target");
    let outcome = target.login("nobody", &secret("whatever")).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("refused")),
        "{outcome:?}"
    );
    let err = target.terminate_sessions("nobody", None).await.unwrap_err();
    assert_eq!(err.kind(), "connect");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn login_against_a_silent_server_times_out_as_unreachable() {
    capture_logs();
    // Accepts TCP connections and never answers the startup message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let target = PostgresTarget::from_parts(
        "127.0.0.1",
        port,
        "postgres",
        TargetTls::Disable,
        "nobody",
        secret("unused"),
    )
    .expect("target")
    .with_connect_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = target.login("nobody", &secret("whatever")).await;
    assert!(
        matches!(outcome, AuthOutcome::Unreachable { .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let err = target
        .set_password("nobody", &secret("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    server.abort();
}

#[tokio::test]
async fn terminate_sessions_ends_the_roles_open_sessions() {
    capture_logs();
    let target = plain();
    let role = role_name();
    let password = canary();
    target
        .ensure_role(&role, &secret(&password))
        .await
        .expect("ensure role");

    let first = connect_as(&role, &password).await.expect("role session 1");
    let second = connect_as(&role, &password).await.expect("role session 2");
    first
        .simple_query("SELECT 1")
        .await
        .expect("session works before");
    let bystander = admin().await;

    let ended = target
        .terminate_sessions(&role, None)
        .await
        .expect("terminate");
    assert_eq!(ended, 2);

    // pg_terminate_backend waited for the sessions to be gone: the next query fails.
    for (name, client) in [("first", &first), ("second", &second)] {
        let result = client.simple_query("SELECT 1").await;
        assert!(
            result.is_err(),
            "{name} session still answers after termination"
        );
    }
    // Other roles' sessions are untouched.
    bystander
        .simple_query("SELECT 1")
        .await
        .expect("admin session survives");
    assert_eq!(
        target.terminate_sessions(&role, None).await.expect("again"),
        0
    );
    drop_role(&role).await;
}

#[tokio::test]
async fn set_password_on_a_missing_role_fails_clearly() {
    capture_logs();
    let target = plain();
    let role = role_name();
    let password = canary();
    let err = target
        .set_password(&role, &secret(&password))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "role_not_found");
    assert!(err.to_string().contains(&role), "{err}");
    assert!(!err.is_transient());
    assert_no_secret(&format!("{err} {err:?}"), &[password.as_str()]);
    // A role that does not exist is still "rejected" at login: the server says 28P01.
    let outcome = target.login(&role, &secret(&password)).await;
    assert!(rejected_28p01(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn a_wrong_admin_password_is_a_connect_error_without_the_password() {
    capture_logs();
    let pg = pg();
    let wrong = canary();
    let target = PostgresTarget::from_parts(
        &pg.host,
        pg.port,
        "postgres",
        TargetTls::Disable,
        &pg.admin_user,
        secret(&wrong),
    )
    .expect("target");
    let err = target
        .ensure_role(&role_name(), &secret("pw-123456"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "connect");
    assert!(
        !err.is_transient(),
        "a refused admin password is not transient"
    );
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(" / {s}"));
        source = s.source();
    }
    assert!(
        chain.contains("28P01") || chain.contains("password authentication failed"),
        "{chain}"
    );
    assert_no_secret(&chain, &[wrong.as_str(), "pw-123456"]);
}

#[tokio::test]
async fn nologin_with_the_right_password_is_not_a_rejection() {
    capture_logs();
    let target = plain();
    let role = role_name();
    let password = canary();
    target
        .ensure_role(&role, &secret(&password))
        .await
        .expect("ensure role");
    admin()
        .await
        .batch_execute(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
        .await
        .expect("nologin");
    // 28000 comes after the password was accepted: it proves nothing about revocation.
    let outcome = target.login(&role, &secret(&password)).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("28000")),
        "{outcome:?}"
    );
    let outcome = target.login(&role, &secret(&canary())).await;
    assert!(rejected_28p01(&outcome), "{outcome:?}");
    drop_role(&role).await;
}

#[tokio::test]
async fn tls_modes_against_the_test_ca() {
    capture_logs();
    let role = role_name();
    let password = canary();
    let verify_full = target(TargetTls::VerifyFull {
        ca_file: Some(ca_file()),
    });
    // Admin calls and logins both go through TLS (SCRAM-SHA-256-PLUS: the test
    // certificate is ECDSA/SHA-256, so the login is bound to it).
    verify_full
        .ensure_role(&role, &secret(&password))
        .await
        .expect("ensure role over TLS");
    assert_eq!(
        verify_full.login(&role, &secret(&password)).await,
        AuthOutcome::Accepted
    );
    let wrong = verify_full.login(&role, &secret(&canary())).await;
    assert!(rejected_28p01(&wrong), "{wrong:?}");
    assert_eq!(
        verify_full
            .terminate_sessions(&role, None)
            .await
            .expect("terminate over TLS"),
        0
    );

    let require = target(TargetTls::Require { ca_file: None });
    assert_eq!(
        require.login(&role, &secret(&password)).await,
        AuthOutcome::Accepted
    );
    let verify_ca = target(TargetTls::Require {
        ca_file: Some(ca_file()),
    });
    assert_eq!(
        verify_ca.login(&role, &secret(&password)).await,
        AuthOutcome::Accepted
    );

    // The test CA is not in the system trust store: verification must fail, and a
    // failed verification is never a rejection.
    let system_roots = target(TargetTls::VerifyFull { ca_file: None });
    let outcome = system_roots.login(&role, &secret(&password)).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.to_lowercase().contains("certificate")),
        "{outcome:?}"
    );

    // An unrelated CA fails the same way, under `require` with a CA file too.
    let other_ca = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(other_ca.path(), UNRELATED_CA).expect("write CA");
    for tls in [
        TargetTls::VerifyFull {
            ca_file: Some(other_ca.path().to_owned()),
        },
        TargetTls::Require {
            ca_file: Some(other_ca.path().to_owned()),
        },
    ] {
        let outcome = target(tls.clone()).login(&role, &secret(&password)).await;
        assert!(
            matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.to_lowercase().contains("certificate")),
            "{tls:?}: {outcome:?}"
        );
    }
    drop_role(&role).await;
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_unreachable() {
    capture_logs();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers the SSLRequest with 'N' (no TLS here), as a server with ssl=off does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    let target = PostgresTarget::from_parts(
        "127.0.0.1",
        port,
        "postgres",
        TargetTls::Require { ca_file: None },
        "nobody",
        secret("unused"),
    )
    .expect("target");
    let outcome = target.login("nobody", &secret("whatever")).await;
    assert!(
        matches!(&outcome, AuthOutcome::Unreachable { reason } if reason.contains("TLS")),
        "{outcome:?}"
    );
    server.abort();
}

/// A self-signed CA that signed nothing on the test server.
const UNRELATED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUT1P/Fh+2nN1QJW7pbbzz4Z+X5ZkwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXcm90b3IgdW5yZWxhdGVkIHRlc3QgQ0EwIBcNMjYxMTIxMjIz
ODUxWhgPMjEyNjEwMjgyMjM4NTFaMCIxIDAeBgNVBAMMF3JvdG9yIHVucmVsYXRl
ZCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBBX6QmTeTlzt2cyL
AC9Zh72NQ5ndPCdmiEZcK/Z/X7gxfP+CmdinSALNJJkiv1D8+Gg2Y5dQvA1ilg+i
drX0aaNTMFEwHQYDVR0OBBYEFPVHRRRZIAf9nH6FKDrWpmtiGYqyMB8GA1UdIwQY
MBaAFPVHRRRZIAf9nH6FKDrWpmtiGYqyMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIgbMCweHEO99pkQhGIDRmbgxQxGrAxF1cG0WRP9lVbeOgCIQCp
81aOaZRFbJMQ2RdQBrQ+eLx31H9EKGzPvyA+x9UDYw==
-----END CERTIFICATE-----
";
