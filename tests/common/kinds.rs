//! One fixture for every credential kind: the kind's real target prepared with a
//! working credential, that credential seeded as Vault's canonical copy, a Kubernetes
//! Secret consumer holding every key the kind writes, and a policy file. Probes use
//! rotor's own target adapters (each adapter is tested against its server's own
//! client in `tests/<kind>_target.rs`).
#![allow(dead_code)] // Each test binary uses a different part of the fixture.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use rotor::credentials::{AuthOutcome, Credential};
use rotor::policy::{self, ValidatedPolicy};
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault};
use rotor_testkit::{FakeKube, stack};
use serde_json::json;

use super::{admin_target, vault};

/// A kind's prepared target.
pub struct Setup {
    /// The lines under `spec.credential:` (without the `type:` line), indented 4.
    pub credential_yaml: String,
    /// The `type`.
    pub kind: &'static str,
    /// The credential that works today (seeded as the canonical copy).
    pub initial: SecretMap,
    /// The code the target answers an old credential with.
    pub rejected_code: &'static str,
    /// Secrets of the fixture itself (admin passwords…) for leak checks.
    pub secrets: Vec<String>,
    /// Keeps in-process servers (e.g. the fake key API) alive.
    pub keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Policy knobs.
#[derive(Clone, Default)]
pub struct KindOptions {
    /// `grace` (e.g. `3s`); none = the default (0s).
    pub grace: Option<&'static str>,
    /// `verify.terminateSessions`.
    pub terminate_sessions: bool,
    /// More `spec.consumers` entries (YAML lines, indented 4), after the Secret;
    /// `%NAMESPACE%` stands for the fixture's namespace.
    pub extra_consumers: String,
}

/// A policy for one kind with its world.
pub struct KindFixture {
    pub name: String,
    pub kind: &'static str,
    pub canonical: String,
    pub namespace: String,
    pub secret: String,
    pub rejected_code: &'static str,
    pub kube: FakeKube,
    /// The test's own client of [`KindFixture::kube`].
    pub kube_client: kube::Client,
    pub vault: Vault,
    pub dir: tempfile::TempDir,
    pub policy: ValidatedPolicy,
    pub credential: Credential,
    pub secrets: Vec<String>,
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

pub fn secret_map(pairs: &[(&str, &str)]) -> SecretMap {
    let mut m = SecretMap::new();
    for (k, v) in pairs {
        m.insert(*k, SecretString::from(v.to_string()));
    }
    m
}

/// Writes the stack's PostgreSQL admin login to Vault and returns its path.
pub async fn seed_pg_admin(vault: &Vault, name: &str) -> String {
    let s = stack();
    let path = format!("rotor-test/{name}/pg-admin");
    vault
        .kv_write(
            "secret",
            &path,
            &secret_map(&[
                ("username", &s.pg.admin_user),
                ("password", &s.pg.admin_password),
            ]),
            None,
        )
        .await
        .expect("seed admin credential");
    path
}

/// `postgres`, strategy single.
pub async fn postgres_single(name: &str, vault: &Vault) -> Setup {
    let s = stack();
    let role = name.replace('-', "_");
    let initial = format!("init{}", rotor_testkit::canary());
    admin_target()
        .ensure_role(&role, &SecretString::from(initial.clone()))
        .await
        .expect("create the test role");
    let admin_path = seed_pg_admin(vault, name).await;
    Setup {
        credential_yaml: format!(
            "    connection:\n      host: {}\n      port: {}\n      database: postgres\n      adminFrom: {{vault: {{path: {admin_path}}}}}\n    username: {role}\n    strategy: single\n",
            s.pg.host, s.pg.port
        ),
        kind: "postgres",
        initial: secret_map(&[("username", &role), ("password", &initial)]),
        rejected_code: "28P01",
        secrets: vec![s.pg.admin_password.clone()],
        keep: Vec::new(),
    }
}

/// `postgres`, strategy alternating: roles `NAME_a` (current) and `NAME_b`.
pub async fn postgres_alternating(name: &str, vault: &Vault) -> Setup {
    let s = stack();
    let base = name.replace('-', "_");
    let admin = admin_target();
    let initial = format!("init{}", rotor_testkit::canary());
    admin
        .ensure_role(&format!("{base}_a"), &SecretString::from(initial.clone()))
        .await
        .expect("create role a");
    admin
        .ensure_role(
            &format!("{base}_b"),
            &SecretString::from(format!("idle{}", rotor_testkit::canary())),
        )
        .await
        .expect("create role b");
    let admin_path = seed_pg_admin(vault, name).await;
    Setup {
        credential_yaml: format!(
            "    connection:\n      host: {}\n      port: {}\n      database: postgres\n      adminFrom: {{vault: {{path: {admin_path}}}}}\n    username: {base}\n    strategy: alternating\n",
            s.pg.host, s.pg.port
        ),
        kind: "postgres",
        initial: secret_map(&[("username", &format!("{base}_a")), ("password", &initial)]),
        rejected_code: "28P01",
        secrets: vec![s.pg.admin_password.clone()],
        keep: Vec::new(),
    }
}

/// `vault-database`: an OpenBao database-engine static role over the stack's
/// PostgreSQL (one connection config per test, on a shared `rotor-test-database` mount).
pub async fn vault_database(name: &str, vault: &Vault) -> Setup {
    let s = stack();
    let role = name.replace('-', "_");
    let mount = "rotor-test-database";
    enable_engine(vault, mount, "database").await;
    admin_target()
        .ensure_role(
            &role,
            &SecretString::from(format!("init{}", rotor_testkit::canary())),
        )
        .await
        .expect("create the test role");
    let conn = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/postgres?sslmode=disable",
        s.pg.host, s.pg.port
    );
    vault
        .request_ok(
            reqwest::Method::POST,
            &format!("{mount}/config/{name}"),
            Some(&json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": conn,
                "username": s.pg.admin_user,
                "password": s.pg.admin_password,
                "allowed_roles": [name],
                "password_authentication": "scram-sha-256",
            })),
            AuthAs::Rotor,
        )
        .await
        .expect("database connection config");
    vault
        .request_ok(
            reqwest::Method::POST,
            &format!("{mount}/static-roles/{name}"),
            Some(&json!({
                "db_name": name,
                "username": role,
                "rotation_period": "720h",
            })),
            AuthAs::Rotor,
        )
        .await
        .expect("static role");
    let creds = vault
        .request_ok(
            reqwest::Method::GET,
            &format!("{mount}/static-creds/{name}"),
            None,
            AuthAs::Rotor,
        )
        .await
        .expect("static creds")
        .json();
    let password = creds["data"]["password"]
        .as_str()
        .expect("password")
        .to_owned();
    Setup {
        credential_yaml: format!(
            "    mount: {mount}\n    role: {name}\n    probe: {{type: postgres, host: {}, port: {}, database: postgres}}\n",
            s.pg.host, s.pg.port
        ),
        kind: "vault-database",
        initial: secret_map(&[("username", &role), ("password", &password)]),
        rejected_code: "28P01",
        secrets: vec![s.pg.admin_password.clone()],
        keep: Vec::new(),
    }
}

/// Mounts a secrets engine once (a second test finds it mounted).
pub async fn enable_engine(vault: &Vault, mount: &str, kind: &str) {
    let resp = vault
        .request(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(&json!({"type": kind})),
            AuthAs::Rotor,
        )
        .await
        .expect("mount request");
    assert!(
        resp.is_success() || resp.errors().contains("path is already in use"),
        "mounting {kind} at {mount}: HTTP {} {}",
        resp.status,
        resp.errors()
    );
}

/// Enables an auth method once.
pub async fn enable_auth(vault: &Vault, mount: &str, kind: &str) {
    let resp = vault
        .request(
            reqwest::Method::POST,
            &format!("sys/auth/{mount}"),
            Some(&json!({"type": kind})),
            AuthAs::Rotor,
        )
        .await
        .expect("auth mount request");
    assert!(
        resp.is_success() || resp.errors().contains("path is already in use"),
        "enabling {kind} at {mount}: HTTP {} {}",
        resp.status,
        resp.errors()
    );
}

impl KindFixture {
    /// Prepares the world with `setup` and writes the policy.
    pub async fn new<F, Fut>(prefix: &str, options: KindOptions, setup: F) -> KindFixture
    where
        F: FnOnce(String, Vault) -> Fut,
        Fut: std::future::Future<Output = Setup>,
    {
        let name = rotor_testkit::unique(prefix);
        let vault = vault();
        let setup = setup(name.clone(), vault.clone()).await;
        let canonical = format!("rotor-test/{name}/credential");
        vault
            .kv_write("secret", &canonical, &setup.initial, None)
            .await
            .expect("seed canonical credential");
        let kube = FakeKube::start().await;
        let namespace = name.clone();
        kube.create_namespace(&namespace).await;
        let kube_client = super::kube_client(&kube).await;

        let keys = policy::CredentialKind::from_name(setup.kind)
            .expect("a credential kind")
            .output_keys();
        let data: String = keys
            .iter()
            .map(|k| format!("        {k}: \"{{{{ {k} }}}}\"\n"))
            .collect();
        let mut credential_yaml = setup.credential_yaml.clone();
        if let Some(grace) = options.grace {
            credential_yaml.push_str(&format!("    grace: {grace}\n"));
        }
        let secret = format!("{name}-credential");
        let yaml = format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: {kind}\n{credential_yaml}  vault:\n    mount: secret\n    path: {canonical}\n  consumers:\n    - type: kubernetes\n      namespace: {namespace}\n      secret: {secret}\n      data:\n{data}{extra}  verify:\n    oldRejected: true\n    terminateSessions: {terminate}\n",
            kind = setup.kind,
            terminate = options.terminate_sessions,
            extra = options.extra_consumers.replace("%NAMESPACE%", &namespace),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, &yaml).expect("write policy");
        let set = policy::load_paths(&[file])
            .unwrap_or_else(|e| panic!("the test policy must be valid:\n{e}\n{yaml}"));
        let policy = set.get(&name).expect("the policy").clone();
        let credential = Credential::prepare(&policy.spec.credential, &vault)
            .await
            .expect("prepare the credential for probes");
        KindFixture {
            kind: setup.kind,
            rejected_code: setup.rejected_code,
            secrets: setup.secrets,
            _keep: setup.keep,
            name,
            canonical,
            namespace,
            secret,
            kube,
            kube_client,
            vault,
            dir,
            policy,
            credential,
        }
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Something the setup keeps alive (e.g. the fake key API).
    pub fn kept<T: 'static>(&self) -> &T {
        self._keep
            .iter()
            .find_map(|k| k.downcast_ref::<T>())
            .expect("the setup keeps one of these")
    }

    /// A `rotor` command with the stack's Vault and this fixture's kubeconfig.
    pub fn rotor(&self) -> Command {
        let s = stack();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("VAULT_ADDR", &s.vault_addr)
            .env("VAULT_TOKEN", &s.vault_token)
            .env("KUBECONFIG", &self.kube.kubeconfig)
            .env("RUST_LOG", "trace");
        cmd
    }

    /// `rotor -vv rotate NAME --reason … -o json`.
    pub fn rotate_cmd(&self) -> Command {
        self.policy_cmd("rotate", &["--reason", "test rotation"])
    }

    /// `rotor -vv resume NAME -o json`.
    pub fn resume_cmd(&self) -> Command {
        self.policy_cmd("resume", &[])
    }

    /// `rotor -vv -o json retire NAME --reason "offboarding the service" --ticket OFF-7`.
    pub fn retire_cmd(&self) -> Command {
        let reason = ["--reason", "offboarding the service", "--ticket", "OFF-7"];
        self.policy_cmd("retire", &reason)
    }

    /// `rotor -vv -o json enable NAME --reason "service is back"`.
    pub fn enable_cmd(&self) -> Command {
        self.policy_cmd("enable", &["--reason", "service is back"])
    }

    /// `rotor -vv -o json COMMAND --policies DIR NAME ARGS…`.
    fn policy_cmd(&self, command: &str, args: &[&str]) -> Command {
        let mut cmd = self.rotor();
        cmd.args(["-vv", "-o", "json", command, "--policies"])
            .arg(self.policy_dir())
            .arg(&self.name)
            .args(args);
        cmd
    }

    /// The canonical value and its version.
    pub async fn current(&self) -> (SecretMap, u64) {
        let e = self
            .vault
            .kv_read("secret", &self.canonical)
            .await
            .expect("read canonical")
            .expect("canonical exists");
        (e.data, e.version)
    }

    /// One canonical version.
    pub async fn version(&self, v: u64) -> SecretMap {
        self.vault
            .kv_read_version("secret", &self.canonical, v)
            .await
            .expect("read version")
            .expect("version exists")
            .data
    }

    /// What the target says to `value`.
    pub async fn probe(&self, value: &SecretMap) -> AuthOutcome {
        self.credential.login(value).await.expect("probe")
    }

    /// Asserts `value` is refused with the kind's own code.
    pub async fn assert_rejected(&self, value: &SecretMap, what: &str) {
        match self.probe(value).await {
            AuthOutcome::Rejected { code, .. } => assert_eq!(code, self.rejected_code, "{what}"),
            other => panic!(
                "{what}: must be refused with {}, got {other:?}",
                self.rejected_code
            ),
        }
    }

    /// Asserts `value` works.
    pub async fn assert_accepted(&self, value: &SecretMap, what: &str) {
        match self.probe(value).await {
            AuthOutcome::Accepted => {}
            other => panic!("{what}: must be accepted, got {other:?}"),
        }
    }

    /// The consumer Secret's data.
    pub async fn secret_data(&self) -> Option<BTreeMap<String, String>> {
        super::kube_clients::secret_data(&self.kube_client, &self.namespace, &self.secret).await
    }

    /// Vault's current value works, holds every documented key, and is what the
    /// Secret holds; every earlier version is refused with the kind's code.
    pub async fn assert_consistent(&self) {
        let (current, latest) = self.current().await;
        for key in policy::CredentialKind::from_name(self.kind)
            .expect("a credential kind")
            .output_keys()
        {
            assert!(
                current.get(key).is_some(),
                "canonical version {latest} lacks key {key}"
            );
        }
        self.assert_accepted(&current, &format!("canonical version {latest}"))
            .await;
        for v in 1..latest {
            let old = self.version(v).await;
            self.assert_rejected(&old, &format!("canonical version {v}"))
                .await;
        }
        let data = self.secret_data().await.expect("the Secret exists");
        for (k, v) in current.iter() {
            assert_eq!(
                data.get(k).map(String::as_str),
                Some(v.expose_secret_str()),
                "Secret key {k}"
            );
        }
    }

    /// Every secret value seen (all canonical versions plus fixture secrets).
    pub async fn all_secrets(&self) -> Vec<String> {
        let (_, latest) = self.current().await;
        let mut all = self.secrets.clone();
        for v in 1..=latest {
            for (k, value) in self.version(v).await.iter() {
                // Public parts of a certificate are not secrets.
                if !matches!(
                    k,
                    "certificate"
                        | "caChain"
                        | "serial"
                        | "expiration"
                        | "username"
                        | "id"
                        | "roleId"
                        | "secretIdAccessor"
                        | "accessor"
                ) {
                    all.push(value.expose_secret_str().to_owned());
                }
            }
        }
        all
    }
}

/// Extension to read a `SecretString` in tests.
pub trait ExposeStr {
    fn expose_secret_str(&self) -> &str;
}

impl ExposeStr for SecretString {
    fn expose_secret_str(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(self)
    }
}

/// stdout and stderr of a run as one string.
pub fn text(out: &Output) -> String {
    super::text(out)
}

/// The JSON report of a `-o json` run.
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON report ({e}):\n{}", text(out)))
}

/// Writes `pairs` to a Vault KV path under the fixture's prefix and returns the path.
pub async fn seed(vault: &Vault, name: &str, what: &str, pairs: &[(&str, &str)]) -> String {
    let path = format!("rotor-test/{name}/{what}");
    vault
        .kv_write("secret", &path, &secret_map(pairs), None)
        .await
        .expect("seed a Vault value");
    path
}

/// Runs statements as the stack's MariaDB admin.
pub async fn mysql_admin(statements: &[String]) {
    use mysql_async::prelude::Queryable;
    let m = rotor_testkit::mysql();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(m.host.clone())
        .tcp_port(m.port)
        .user(Some(m.admin_user.clone()))
        .pass(Some(m.admin_password.clone()));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("admin connection to the stack's MariaDB (dev/stack up)");
    for s in statements {
        conn.query_drop(s).await.expect("admin statement");
    }
    let _ = conn.disconnect().await;
}

fn mysql_yaml(admin_path: &str, username: &str, strategy: &str) -> String {
    let m = rotor_testkit::mysql();
    format!(
        "    connection:\n      host: {}\n      port: {}\n      adminFrom: {{vault: {{path: {admin_path}}}}}\n    username: {username}\n    strategy: {strategy}\n",
        m.host, m.port
    )
}

/// `mysql`, strategy single: user `NAME`@`%`.
pub async fn mysql_single(name: &str, vault: &Vault) -> Setup {
    let m = rotor_testkit::mysql();
    let user = name.replace('-', "_");
    let initial = format!("init{}", rotor_testkit::canary());
    mysql_admin(&[format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{initial}'"
    )])
    .await;
    let admin = seed(
        vault,
        name,
        "mysql-admin",
        &[("username", &m.admin_user), ("password", &m.admin_password)],
    )
    .await;
    Setup {
        credential_yaml: mysql_yaml(&admin, &user, "single"),
        kind: "mysql",
        initial: secret_map(&[("username", &user), ("password", &initial)]),
        rejected_code: "1045",
        secrets: vec![m.admin_password.clone()],
        keep: Vec::new(),
    }
}

/// `mysql`, strategy alternating: users `NAME_a` (current) and `NAME_b`.
pub async fn mysql_alternating(name: &str, vault: &Vault) -> Setup {
    let m = rotor_testkit::mysql();
    let base = name.replace('-', "_");
    let initial = format!("init{}", rotor_testkit::canary());
    let idle = format!("idle{}", rotor_testkit::canary());
    mysql_admin(&[
        format!("CREATE USER '{base}_a'@'%' IDENTIFIED BY '{initial}'"),
        format!("CREATE USER '{base}_b'@'%' IDENTIFIED BY '{idle}'"),
    ])
    .await;
    let admin = seed(
        vault,
        name,
        "mysql-admin",
        &[("username", &m.admin_user), ("password", &m.admin_password)],
    )
    .await;
    Setup {
        credential_yaml: mysql_yaml(&admin, &base, "alternating"),
        kind: "mysql",
        initial: secret_map(&[("username", &format!("{base}_a")), ("password", &initial)]),
        rejected_code: "1045",
        secrets: vec![m.admin_password.clone()],
        keep: Vec::new(),
    }
}

/// `redis` (overlap): an ACL user with one password.
pub async fn redis_user(name: &str, vault: &Vault) -> Setup {
    let r = rotor_testkit::redis();
    let user = name.replace('-', "_");
    let initial = format!("init{}", rotor_testkit::canary());
    let client = redis::Client::open(format!("redis://{}:{}/", r.host, r.port)).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the stack's Redis (dev/stack up)");
    let _: () = redis::cmd("AUTH")
        .arg(&r.admin_user)
        .arg(&r.admin_password)
        .query_async(&mut conn)
        .await
        .expect("admin AUTH");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{initial}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await
        .expect("ACL SETUSER");
    let admin = seed(
        vault,
        name,
        "redis-admin",
        &[("username", &r.admin_user), ("password", &r.admin_password)],
    )
    .await;
    Setup {
        credential_yaml: format!(
            "    connection:\n      host: {}\n      port: {}\n      adminFrom: {{vault: {{path: {admin}}}}}\n    username: {user}\n",
            r.host, r.port
        ),
        kind: "redis",
        initial: secret_map(&[("username", &user), ("password", &initial)]),
        rejected_code: "WRONGPASS",
        secrets: vec![r.admin_password.clone()],
        keep: Vec::new(),
    }
}

async fn vault_post(vault: &Vault, path: &str, body: serde_json::Value) -> serde_json::Value {
    vault
        .request_ok(reqwest::Method::POST, path, Some(&body), AuthAs::Rotor)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .json()
}

/// `vault-userpass`: a user on a shared `rotor-test-userpass` mount.
pub async fn vault_userpass(name: &str, vault: &Vault) -> Setup {
    let mount = "rotor-test-userpass";
    enable_auth(vault, mount, "userpass").await;
    let user = name.to_owned();
    let initial = format!("init{}", rotor_testkit::canary());
    vault_post(
        vault,
        &format!("auth/{mount}/users/{user}"),
        json!({"password": initial, "token_policies": ["default"]}),
    )
    .await;
    Setup {
        credential_yaml: format!("    mount: {mount}\n    username: {user}\n"),
        kind: "vault-userpass",
        initial: secret_map(&[("username", &user), ("password", &initial)]),
        rejected_code: "400",
        secrets: Vec::new(),
        keep: Vec::new(),
    }
}

/// `vault-approle`: a role on a shared `rotor-test-approle` mount with one secret-id.
pub async fn vault_approle(name: &str, vault: &Vault) -> Setup {
    let mount = "rotor-test-approle";
    enable_auth(vault, mount, "approle").await;
    vault_post(
        vault,
        &format!("auth/{mount}/role/{name}"),
        json!({"token_policies": ["default"], "token_ttl": "10m"}),
    )
    .await;
    let role_id = vault
        .request_ok(
            reqwest::Method::GET,
            &format!("auth/{mount}/role/{name}/role-id"),
            None,
            AuthAs::Rotor,
        )
        .await
        .expect("role-id")
        .json()["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let sid = vault_post(
        vault,
        &format!("auth/{mount}/role/{name}/secret-id"),
        json!({}),
    )
    .await;
    let secret_id = sid["data"]["secret_id"].as_str().expect("secret_id");
    let accessor = sid["data"]["secret_id_accessor"]
        .as_str()
        .expect("accessor");
    Setup {
        credential_yaml: format!("    mount: {mount}\n    role: {name}\n"),
        kind: "vault-approle",
        initial: secret_map(&[
            ("roleId", &role_id),
            ("secretId", secret_id),
            ("secretIdAccessor", accessor),
        ]),
        rejected_code: "400",
        secrets: Vec::new(),
        keep: Vec::new(),
    }
}

/// `vault-token`: an orphan token with the `default` policy.
pub async fn vault_token(name: &str, vault: &Vault) -> Setup {
    let t = vault_post(
        vault,
        "auth/token/create-orphan",
        json!({"policies": ["default"], "ttl": "1h", "display_name": name, "meta": {"test": name}}),
    )
    .await;
    let token = t["auth"]["client_token"].as_str().expect("token");
    let accessor = t["auth"]["accessor"].as_str().expect("accessor");
    Setup {
        credential_yaml: "    policies: [default]\n    ttl: 1h\n".into(),
        kind: "vault-token",
        initial: secret_map(&[("token", token), ("accessor", accessor)]),
        rejected_code: "403",
        secrets: Vec::new(),
        keep: Vec::new(),
    }
}

/// Mounts a PKI engine for one test with a root CA and a role `test`; returns the mount.
pub async fn pki_mount(vault: &Vault, name: &str) -> String {
    let mount = format!("pki-{name}");
    let resp = vault
        .request(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(&json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
            AuthAs::Rotor,
        )
        .await
        .expect("mount pki");
    assert!(resp.is_success(), "mount pki: {}", resp.errors());
    vault_post(
        vault,
        &format!("{mount}/root/generate/internal"),
        json!({"common_name": format!("{name} test root"), "ttl": "87600h"}),
    )
    .await;
    vault_post(
        vault,
        &format!("{mount}/roles/test"),
        json!({"allowed_domains": ["example.test"], "allow_subdomains": true, "allow_ip_sans": true, "max_ttl": "8760h"}),
    )
    .await;
    mount
}

/// `vault-pki`: a certificate for `NAME.example.test` from a per-test CA.
pub async fn vault_pki_with(name: &str, vault: &Vault, ttl: &str, extra: &str) -> Setup {
    let mount = pki_mount(vault, name).await;
    let cn = format!("{name}.example.test");
    let c = vault_post(
        vault,
        &format!("{mount}/issue/test"),
        json!({"common_name": cn, "ttl": ttl}),
    )
    .await;
    let d = &c["data"];
    let chain: Vec<&str> = match d["ca_chain"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![d["issuing_ca"].as_str().expect("issuing_ca")],
    };
    let expiration =
        chrono::DateTime::from_timestamp(d["expiration"].as_i64().expect("expiration"), 0)
            .expect("timestamp")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Setup {
        credential_yaml: format!(
            "    mount: {mount}\n    role: test\n    commonName: {cn}\n    ttl: 24h\n{extra}"
        ),
        kind: "vault-pki",
        initial: secret_map(&[
            (
                "certificate",
                d["certificate"].as_str().expect("certificate"),
            ),
            (
                "privateKey",
                d["private_key"].as_str().expect("private_key"),
            ),
            ("caChain", &chain.join("\n")),
            ("serial", d["serial_number"].as_str().expect("serial")),
            ("expiration", &expiration),
        ]),
        rejected_code: "crl",
        secrets: Vec::new(),
        keep: Vec::new(),
    }
}

/// `vault-pki` with a day-long certificate.
pub async fn vault_pki(name: &str, vault: &Vault) -> Setup {
    vault_pki_with(name, vault, "24h", "").await
}

/// `http-api-key` against an in-process key API that issues, lists and revokes keys.
pub async fn http_api_key(name: &str, vault: &Vault) -> Setup {
    http_api_key_probing(name, vault, "/v1/whoami").await
}

/// `http-api-key` whose probe requests `probe_path`.
pub async fn http_api_key_probing(name: &str, vault: &Vault, probe_path: &str) -> Setup {
    let api = rotor_testkit::FakeKeyApi::start();
    let base = api.base_url.clone();
    let admin = seed(vault, name, "key-admin", &[("token", &api.admin_token)]).await;
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/keys"))
        .bearer_auth(&api.admin_token)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create the initial key")
        .json()
        .await
        .expect("key JSON");
    let yaml = format!(
        r#"    adminFrom: {{vault: {{path: {admin}, key: token}}}}
    create:
      method: POST
      url: {base}/v1/keys
      headers:
        Authorization: "Bearer {{{{ admin }}}}"
        Content-Type: application/json
      body: '{{"name": "{name}"}}'
      keyField: key
      idField: id
    revoke:
      method: DELETE
      url: "{base}/v1/keys/{{{{ id }}}}"
    probe:
      method: GET
      url: {base}{probe_path}
      headers: {{Authorization: "Bearer {{{{ key }}}}"}}
"#
    );
    Setup {
        credential_yaml: yaml,
        kind: "http-api-key",
        initial: secret_map(&[
            ("key", created["key"].as_str().expect("key")),
            ("id", created["id"].as_str().expect("id")),
        ]),
        rejected_code: "401",
        secrets: vec![api.admin_token.clone()],
        keep: vec![Box::new(api)],
    }
}

/// `rabbitmq`: a broker user (no tags) with permissions on `/`.
pub async fn rabbitmq_user(name: &str, vault: &Vault) -> Setup {
    let r = rotor_testkit::rabbitmq();
    let url = r.url.clone().expect("management URL");
    let user = name.to_owned();
    let initial = format!("init{}", rotor_testkit::canary());
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            format!("api/users/{user}"),
            json!({"password": initial, "tags": ""}),
        ),
        (
            format!("api/permissions/%2F/{user}"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        ),
    ] {
        let resp = http
            .put(format!("{url}/{path}"))
            .basic_auth(&r.admin_user, Some(&r.admin_password))
            .json(&body)
            .send()
            .await
            .expect("RabbitMQ management API (dev/stack up)");
        assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
    }
    let admin = seed(
        vault,
        name,
        "rabbitmq-admin",
        &[("username", &r.admin_user), ("password", &r.admin_password)],
    )
    .await;
    Setup {
        credential_yaml: format!(
            "    managementUrl: {url}\n    adminFrom: {{vault: {{path: {admin}}}}}\n    username: {user}\n"
        ),
        kind: "rabbitmq",
        initial: secret_map(&[("username", &user), ("password", &initial)]),
        rejected_code: "401",
        secrets: vec![r.admin_password.clone()],
        keep: Vec::new(),
    }
}
