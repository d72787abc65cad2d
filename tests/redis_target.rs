//! The Redis target against the project-owned redis-server that `dev/stack up` starts
//! (`default` user off, users in an ACL file), plus throwaway redis-servers started here
//! for the persistence fallbacks. Every test makes its own ACL users.

#[path = "common/logs.rs"]
mod logs;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logs::capture_logs;
use redis::AsyncCommands;
use rotor::credentials::AuthOutcome;
use rotor::credentials::redis::{self as target_mod, RedisError, RedisTarget};
use rotor::credentials::target::TargetTls;
use rotor::secret::SecretString;
use rotor_testkit::{ServiceInfo, assert_no_secret, canary, unique};
use sha2::{Digest, Sha256};

fn info() -> &'static ServiceInfo {
    rotor_testkit::redis()
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn target() -> RedisTarget {
    let info = info();
    RedisTarget::from_parts(
        &info.host,
        info.port,
        TargetTls::Disable,
        Some((info.admin_user.clone(), secret(&info.admin_password))),
    )
    .expect("target")
}

/// ACL user names: `unique` with `_` for `-`.
fn user_name() -> String {
    unique("rds").replace('-', "_")
}

fn hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

fn client(host: &str, port: u16, user: Option<&str>, password: Option<&str>) -> redis::Client {
    let auth = match (user, password) {
        (Some(u), Some(p)) => format!("{u}:{p}@"),
        _ => String::new(),
    };
    redis::Client::open(format!("redis://{auth}{host}:{port}/")).expect("redis client")
}

async fn connect(
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = info();
    client(&info.host, info.port, Some(user), Some(password))
        .get_multiplexed_async_connection()
        .await
}

/// A connection as the admin, outside the code under test.
async fn admin() -> redis::aio::MultiplexedConnection {
    let info = info();
    connect(&info.admin_user, &info.admin_password)
        .await
        .expect("admin connection to the test Redis")
}

/// Creates `user` with `password` (as cleartext: this is the fixture, not the code under
/// test) and saves the ACL file.
async fn create_user(user: &str, password: &str, enabled: bool) {
    let mut admin = admin().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(if enabled { "on" } else { "off" })
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .expect("ACL SETUSER");
    redis::cmd("ACL")
        .arg("SAVE")
        .query_async::<()>(&mut admin)
        .await
        .expect("ACL SAVE");
}

async fn drop_user(user: &str) {
    let mut admin = admin().await;
    let _: redis::RedisResult<u64> = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(user)
        .query_async(&mut admin)
        .await;
    let _: redis::RedisResult<()> = redis::cmd("ACL").arg("SAVE").query_async(&mut admin).await;
}

fn assert_rejected(outcome: &AuthOutcome) {
    match outcome {
        AuthOutcome::Rejected { code, message } => {
            assert_eq!(code, "WRONGPASS");
            assert!(
                message.contains("invalid username-password pair"),
                "{message}"
            );
        }
        other => panic!("expected WRONGPASS, got {other:?}"),
    }
}

fn assert_accepted(outcome: &AuthOutcome) {
    assert!(
        matches!(outcome, AuthOutcome::Accepted),
        "expected Accepted, got {outcome:?}"
    );
}

/// Everything an error shows: Display, Debug and the source chain.
fn error_text(error: &RedisError) -> String {
    format!("{error} | {error:?} | {}", rotor::error_chain(error))
}

#[tokio::test]
async fn overlap_keeps_both_passwords_until_the_old_one_is_removed() {
    let logs = capture_logs();
    let target = target();
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, &old, true).await;

    assert!(target.user_exists(&user).await.expect("user_exists"));
    assert_eq!(target.password_count(&user).await.expect("count"), 1);

    target
        .add_password(&user, &secret(&new))
        .await
        .expect("add new");
    assert_eq!(target.password_count(&user).await.expect("count"), 2);
    assert_accepted(&target.login(&user, &secret(&old)).await);
    assert_accepted(&target.login(&user, &secret(&new)).await);

    // Idempotent: the same password is not added twice.
    target
        .add_password(&user, &secret(&new))
        .await
        .expect("add new again");
    assert_eq!(target.password_count(&user).await.expect("count"), 2);

    target
        .remove_password(&user, &secret(&old))
        .await
        .expect("remove old");
    assert_eq!(target.password_count(&user).await.expect("count"), 1);
    assert_rejected(&target.login(&user, &secret(&old)).await);
    assert_accepted(&target.login(&user, &secret(&new)).await);
    // The standalone probe (vault-database) sees the same.
    let info = info();
    assert_rejected(
        &target_mod::login(
            &info.host,
            info.port,
            &TargetTls::Disable,
            &user,
            &secret(&old),
        )
        .await,
    );
    assert_accepted(
        &target_mod::login(
            &info.host,
            info.port,
            &TargetTls::Disable,
            &user,
            &secret(&new),
        )
        .await,
    );

    // Idempotent: removing an absent password is fine.
    target
        .remove_password(&user, &secret(&old))
        .await
        .expect("remove old again");

    // Removing the last password would lock every client out.
    let err = target
        .remove_password(&user, &secret(&new))
        .await
        .expect_err("last password");
    assert_eq!(err.kind(), "last_password");
    assert!(!err.is_transient());
    assert_no_secret(&error_text(&err), &[&old, &new]);
    assert_eq!(target.password_count(&user).await.expect("count"), 1);
    assert_accepted(&target.login(&user, &secret(&new)).await);

    assert_no_secret(&logs.text(), &[&old, &new, &info.admin_password]);
    assert!(
        logs.text().contains("Redis password added."),
        "{}",
        logs.text()
    );
    drop_user(&user).await;
}

/// A loopback relay to the test Redis that records every byte clients send through it.
struct WireTap {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WireTap {
    async fn start() -> WireTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let info = info();
                let mut server = tokio::net::TcpStream::connect((info.host.as_str(), info.port))
                    .await
                    .expect("connect to Redis");
                let record = record.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut client_read, mut client_write) = client.split();
                    let (mut server_read, mut server_write) = server.split();
                    let upstream = async {
                        let mut buf = [0u8; 4096];
                        loop {
                            match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    record.lock().expect("wire").extend_from_slice(&buf[..n]);
                                    if server_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        WireTap { port, sent, task }
    }

    fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().expect("wire")).into_owned()
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn the_cleartext_never_reaches_the_server_only_its_hash() {
    capture_logs();
    let user = user_name();
    let (old, new) = (canary(), canary());
    create_user(&user, &old, true).await;

    // Every byte the target sends goes through the tap. (Redis itself cannot show this:
    // MONITOR omits admin commands and the slow log redacts ACL SETUSER's arguments.)
    let tap = WireTap::start().await;
    let info = info();
    let tapped = RedisTarget::from_parts(
        "127.0.0.1",
        tap.port,
        TargetTls::Disable,
        Some((info.admin_user.clone(), secret(&info.admin_password))),
    )
    .expect("target");
    tapped
        .add_password(&user, &secret(&new))
        .await
        .expect("add");
    tapped
        .remove_password(&user, &secret(&old))
        .await
        .expect("remove");
    let wire = tap.sent();
    assert!(wire.contains("SETUSER"), "{wire}");
    assert!(wire.contains(&format!("#{}", hash(&new))), "{wire}");
    assert!(wire.contains(&format!("!{}", hash(&old))), "{wire}");
    assert_no_secret(&wire, &[&old, &new]);

    // The server keeps hashes only.
    let target = target();
    target
        .add_password(&user, &secret(&old))
        .await
        .expect("add old back");
    let mut admin = admin().await;
    let list: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .expect("ACL LIST");
    let line = list
        .iter()
        .find(|l| l.starts_with(&format!("user {user} ")))
        .expect("the user in ACL LIST");
    assert!(line.contains(&format!("#{}", hash(&new))), "{line}");
    assert!(line.contains(&format!("#{}", hash(&old))), "{line}");
    assert_no_secret(&list.join("\n"), &[&old, &new]);
    let getuser: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .expect("ACL GETUSER");
    let getuser = format!("{getuser:?}");
    assert!(getuser.contains(&hash(&new)), "{getuser}");
    assert_no_secret(&getuser, &[&old, &new]);
    drop_user(&user).await;
}

#[tokio::test]
async fn a_missing_user_is_an_error_and_is_never_created() {
    capture_logs();
    let target = target();
    let user = user_name();
    let password = canary();

    assert!(!target.user_exists(&user).await.expect("user_exists"));
    let err = target
        .add_password(&user, &secret(&password))
        .await
        .expect_err("missing user");
    assert_eq!(err.kind(), "user_not_found");
    assert!(!err.is_transient());
    assert!(err.to_string().contains(&user), "{err}");
    assert_no_secret(&error_text(&err), &[&password]);

    let err = target
        .remove_password(&user, &secret(&password))
        .await
        .expect_err("missing user");
    assert_eq!(err.kind(), "user_not_found");
    let err = target
        .password_count(&user)
        .await
        .expect_err("missing user");
    assert_eq!(err.kind(), "user_not_found");

    assert!(!target.user_exists(&user).await.expect("user_exists"));
    // Nobody can log in as it; there is nothing to terminate.
    assert_rejected(&target.login(&user, &secret(&password)).await);
    assert_eq!(target.terminate_sessions(&user).await.expect("kill"), 0);
}

#[tokio::test]
async fn terminate_sessions_closes_the_users_connections_and_not_the_admins() {
    capture_logs();
    let target = target();
    let user = user_name();
    let password = canary();
    create_user(&user, &password, true).await;

    let mut victim = connect(&user, &password).await.expect("user connection");
    let _: () = victim
        .set(format!("{user}:k"), "v")
        .await
        .expect("SET as user");
    let mut bystander = admin().await;

    let closed = target.terminate_sessions(&user).await.expect("terminate");
    assert!(closed >= 1, "closed {closed}");

    let after: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut victim).await;
    assert!(
        after.is_err(),
        "the user's connection still answers: {after:?}"
    );
    let pong: String = redis::cmd("PING")
        .query_async(&mut bystander)
        .await
        .expect("the admin's connection survives");
    assert_eq!(pong, "PONG");
    // The password itself still works: reconnecting is fine.
    assert_accepted(&target.login(&user, &secret(&password)).await);

    let _: redis::RedisResult<u64> = bystander.del(format!("{user}:k")).await;
    drop_user(&user).await;
}

#[tokio::test]
async fn a_disabled_user_is_inconclusive_not_rejected() {
    capture_logs();
    let target = target();
    let user = user_name();
    let password = canary();
    create_user(&user, &password, false).await;

    // Redis answers WRONGPASS even for the right password of a disabled user.
    match target.login(&user, &secret(&password)).await {
        AuthOutcome::Unreachable { reason } => {
            assert!(reason.contains("disabled"), "{reason}");
            assert_no_secret(&reason, &[&password]);
        }
        other => panic!("expected an inconclusive outcome, got {other:?}"),
    }
    drop_user(&user).await;
}

#[tokio::test]
async fn unreachable_servers_and_bad_admin_logins_are_reported_without_secrets() {
    capture_logs();
    let password = canary();
    let admin_password = canary();

    // Nothing listens: refused connection.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let closed = RedisTarget::from_parts(
        "127.0.0.1",
        port,
        TargetTls::Disable,
        Some(("admin".into(), secret(&admin_password))),
    )
    .expect("target");
    match closed.login("someone", &secret(&password)).await {
        AuthOutcome::Unreachable { reason } => {
            assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
            assert_no_secret(&reason, &[&password, &admin_password]);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let err = closed
        .add_password("someone", &secret(&password))
        .await
        .expect_err("no server");
    assert_eq!(err.kind(), "connect");
    assert!(err.is_transient());
    assert_no_secret(&error_text(&err), &[&password, &admin_password]);

    // A listener that accepts and never answers: bounded by the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let mute = RedisTarget::from_parts(
        "127.0.0.1",
        silent_port,
        TargetTls::Disable,
        Some(("admin".into(), secret(&admin_password))),
    )
    .expect("target")
    .with_connect_timeout(Duration::from_millis(300));
    let started = Instant::now();
    match mute.login("someone", &secret(&password)).await {
        AuthOutcome::Unreachable { reason } => assert!(reason.contains("no answer"), "{reason}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = mute.password_count("someone").await.expect_err("silent");
    assert_eq!(err.kind(), "timeout");
    assert!(err.is_transient());
    drop(silent);

    // The real server with a wrong admin password.
    let info = info();
    let wrong_admin = RedisTarget::from_parts(
        &info.host,
        info.port,
        TargetTls::Disable,
        Some((info.admin_user.clone(), secret(&admin_password))),
    )
    .expect("target");
    let err = wrong_admin
        .add_password("someone", &secret(&password))
        .await
        .expect_err("wrong admin password");
    assert_eq!(err.kind(), "admin_login");
    assert!(!err.is_transient());
    assert!(
        error_text(&err).contains("WRONGPASS"),
        "{}",
        error_text(&err)
    );
    assert_no_secret(&error_text(&err), &[&password, &admin_password]);

    // No admin at all on a server whose default user is off.
    let anonymous =
        RedisTarget::from_parts(&info.host, info.port, TargetTls::Disable, None).expect("target");
    let err = anonymous.user_exists("someone").await.expect_err("NOAUTH");
    assert_eq!(err.kind(), "lookup_user");
    assert!(error_text(&err).contains("NOAUTH"), "{}", error_text(&err));
}

#[test]
fn debug_redacts_the_admin_password_and_tls_is_refused_up_front() {
    capture_logs();
    let admin_password = canary();
    let target = RedisTarget::from_parts(
        "127.0.0.1",
        6379,
        TargetTls::Disable,
        Some(("rotor_admin".into(), secret(&admin_password))),
    )
    .expect("target");
    let text = format!("{target:?}");
    assert!(text.contains("rotor_admin"), "{text}");
    assert!(text.contains("REDACTED"), "{text}");
    assert_no_secret(&text, &[&admin_password]);

    let err = RedisTarget::from_parts(
        "127.0.0.1",
        6379,
        TargetTls::Require { ca_file: None },
        Some(("rotor_admin".into(), secret(&admin_password))),
    )
    .expect_err("TLS is not implemented");
    assert_eq!(err.kind(), "tls_unsupported");
    assert_no_secret(&error_text(&err), &[&admin_password]);
}

/// A redis-server started for one test on a free loopback port, killed when dropped.
struct TempRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// How a [`TempRedis`] can persist users.
#[derive(Clone, Copy, PartialEq)]
enum Persistence {
    /// Options on the command line only: nothing can be saved.
    Nothing,
    /// A config file without `aclfile`: `CONFIG REWRITE` writes the users into it.
    ConfigFile,
    /// A config file naming an ACL file: `ACL SAVE` writes the users there.
    AclFile,
}

impl TempRedis {
    /// Starts a server whose `default` user has no password (so the target runs without an
    /// admin credential) and waits until it answers.
    async fn start(persistence: Persistence) -> TempRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let mut options = vec![
            format!("port {port}"),
            "bind 127.0.0.1".into(),
            "save \"\"".into(),
            "appendonly no".into(),
            format!("dir {}", dir.path().display()),
        ];
        if persistence == Persistence::AclFile {
            let acl = dir.path().join("users.acl");
            std::fs::write(&acl, "user default on nopass ~* &* +@all\n").expect("write users.acl");
            options.push(format!("aclfile {}", acl.display()));
        }
        let mut command = Command::new("redis-server");
        if persistence == Persistence::Nothing {
            for option in &options {
                let (name, value) = option.split_once(' ').expect("option");
                command
                    .arg(format!("--{name}"))
                    .arg(value.trim_matches('"'));
            }
        } else {
            let conf = dir.path().join("redis.conf");
            std::fs::write(&conf, options.join("\n") + "\n").expect("write redis.conf");
            command.arg(&conf);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `dev/stack up`, which installs it");
        let server = TempRedis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = server.client().get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// Creates `user` with `password` (the fixture's cleartext `>`), saved if it can be.
    async fn create_user(&self, user: &str, password: &str) {
        let mut conn = self.connection().await;
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("+@all")
            .query_async::<()>(&mut conn)
            .await
            .expect("ACL SETUSER");
        let _: redis::RedisResult<()> = redis::cmd("ACL").arg("SAVE").query_async(&mut conn).await;
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    /// The target, without an admin credential (the `default` user needs no password).
    fn target(&self) -> RedisTarget {
        RedisTarget::from_parts("127.0.0.1", self.port, TargetTls::Disable, None).expect("target")
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self._dir.path().join(name)).expect("read the server's file")
    }

    fn client(&self) -> redis::Client {
        client("127.0.0.1", self.port, None, None)
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_an_acl_file_changes_are_saved_and_survive_acl_load() {
    capture_logs();
    let server = TempRedis::start(Persistence::AclFile).await;
    let target = server.target();
    let (old, new) = (canary(), canary());
    server.create_user("app", &old).await;

    // ACL LOAD re-reads the ACL file: only saved changes survive it. (On a server of its
    // own: ACL LOAD drops every client of every user.)
    let acl_load = || async {
        redis::cmd("ACL")
            .arg("LOAD")
            .query_async::<()>(&mut server.connection().await)
            .await
            .expect("ACL LOAD");
    };
    target
        .add_password("app", &secret(&new))
        .await
        .expect("add");
    acl_load().await;
    assert_eq!(target.password_count("app").await.expect("count"), 2);
    assert_accepted(&target.login("app", &secret(&new)).await);

    target
        .remove_password("app", &secret(&old))
        .await
        .expect("remove");
    acl_load().await;
    assert_eq!(target.password_count("app").await.expect("count"), 1);
    assert_rejected(&target.login("app", &secret(&old)).await);
    assert_accepted(&target.login("app", &secret(&new)).await);

    let acl = server.file("users.acl");
    assert!(acl.contains(&format!("#{}", hash(&new))), "{acl}");
    assert!(!acl.contains(&hash(&old)), "{acl}");
    assert_no_secret(&acl, &[&old, &new]);
}

#[tokio::test]
async fn without_an_acl_file_config_rewrite_saves_the_user() {
    capture_logs();
    let server = TempRedis::start(Persistence::ConfigFile).await;
    let target = server.target();
    let (old, new) = (canary(), canary());
    server.create_user("app", &old).await;

    target
        .add_password("app", &secret(&new))
        .await
        .expect("add");
    let conf = server.file("redis.conf");
    let line = conf
        .lines()
        .find(|l| l.starts_with("user app "))
        .unwrap_or_else(|| panic!("CONFIG REWRITE did not write the user:\n{conf}"));
    assert!(line.contains(&format!("#{}", hash(&new))), "{line}");
    assert_no_secret(&conf, &[&old, &new]);

    target
        .remove_password("app", &secret(&old))
        .await
        .expect("remove");
    let conf = server.file("redis.conf");
    assert!(!conf.contains(&hash(&old)), "{conf}");
    assert!(conf.contains(&hash(&new)), "{conf}");
}

#[tokio::test]
async fn without_a_config_file_the_change_is_made_and_a_warning_logged_once() {
    let logs = capture_logs();
    let server = TempRedis::start(Persistence::Nothing).await;
    let target = server.target();
    let (old, new, newer) = (canary(), canary(), canary());
    server.create_user("app", &old).await;

    target
        .add_password("app", &secret(&new))
        .await
        .expect("add without a config file");
    target
        .add_password("app", &secret(&newer))
        .await
        .expect("add again");
    assert_eq!(target.password_count("app").await.expect("count"), 3);
    assert_accepted(&target.login("app", &secret(&new)).await);

    let text = logs.text();
    assert_eq!(
        text.matches("ACL changes are lost when it restarts")
            .count(),
        1,
        "{text}"
    );
    assert_no_secret(&text, &[&old, &new, &newer]);
}
