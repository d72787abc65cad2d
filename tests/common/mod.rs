//! Shared fixture for black-box tests of the `rotor` binary against the real stack:
//! OpenBao and the project's PostgreSQL (from `dev/stack up`) and an in-process fake
//! Kubernetes API on loopback. Each fixture uses unique names, so tests share servers.
#![allow(dead_code)] // Each test binary uses a different part of the fixture.

pub mod agent;
pub mod fake_exec;
pub mod kinds;
pub mod kube_clients;

use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use rotor::credentials::AuthOutcome;
use rotor::credentials::postgres::PostgresTarget;
use rotor::credentials::target::TargetTls;
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{Vault, VaultConfig};
use rotor_testkit::{FakeKube, stack};

#[allow(unused_imports)] // Each test binary uses a different part of the fixture.
pub use kube_clients::{kube_client, rotor_kube_client};

/// One policy's world: a PostgreSQL role, its canonical copy in Vault, a namespace
/// with a Deployment, and a policy file.
pub struct Fixture {
    pub name: String,
    pub role: String,
    pub namespace: String,
    pub deployment: String,
    pub secret: String,
    pub canonical: String,
    pub admin_path: String,
    pub initial: String,
    pub kube: FakeKube,
    /// The test's own client of [`Fixture::kube`] ([`kube_client`]).
    pub kube_client: kube::Client,
    pub vault: Vault,
    pub admin: PostgresTarget,
    pub dir: tempfile::TempDir,
}

/// Extra policy lines under `spec.verify`.
#[derive(Default)]
pub struct Options {
    pub terminate_sessions: bool,
    /// Port rotor uses to reach PostgreSQL (e.g. a test proxy) instead of the stack's.
    pub pg_port: Option<u16>,
}

pub fn vault() -> Vault {
    rotor::install_crypto_provider();
    let s = stack();
    let config = VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..VaultConfig::from_env()
    };
    Vault::connect(&config).expect("Vault client")
}

/// An [`rotor_testkit::HttpRecorder`] in front of the stack's OpenBao: give its URL to
/// rotor as `VAULT_ADDR` to see what reached Vault.
pub fn vault_recorder() -> rotor_testkit::HttpRecorder {
    let addr = url::Url::parse(&stack().vault_addr)
        .expect("VAULT_ADDR is a URL")
        .socket_addrs(|| None)
        .expect("OpenBao's address")[0];
    rotor_testkit::HttpRecorder::start(addr)
}

/// The quarantine records rotor keeps in the stack's Vault (`secret/rotor/quarantine/`).
pub fn quarantine_store(vault: Vault) -> rotor::agent::quarantine::QuarantineStore {
    let store = rotor::state::VaultStore::new(vault, "secret", "rotor");
    rotor::agent::quarantine::QuarantineStore::with_store(std::sync::Arc::new(store))
}

pub fn admin_target() -> PostgresTarget {
    let s = stack();
    PostgresTarget::from_parts(
        &s.pg.host,
        s.pg.port,
        "postgres",
        TargetTls::Disable,
        &s.pg.admin_user,
        SecretString::from(s.pg.admin_password.clone()),
    )
    .expect("admin target")
}

fn secret_map(pairs: &[(&str, &str)]) -> SecretMap {
    let mut m = SecretMap::new();
    for (k, v) in pairs {
        m.insert(*k, SecretString::from(v.to_string()));
    }
    m
}

impl Fixture {
    pub async fn new(prefix: &str, options: Options) -> Fixture {
        let name = rotor_testkit::unique(prefix);
        let role = name.replace('-', "_");
        let s = stack();
        let vault = vault();
        let admin = admin_target();
        let initial = format!("init{}", rotor_testkit::canary());
        admin
            .ensure_role(&role, &SecretString::from(initial.clone()))
            .await
            .expect("create the test role");

        let canonical = format!("rotor-test/{name}/db");
        let admin_path = format!("rotor-test/{name}/pg-admin");
        vault
            .kv_write(
                "secret",
                &admin_path,
                &secret_map(&[
                    ("username", &s.pg.admin_user),
                    ("password", &s.pg.admin_password),
                ]),
                None,
            )
            .await
            .expect("seed admin credential");
        vault
            .kv_write(
                "secret",
                &canonical,
                &secret_map(&[("username", &role), ("password", &initial)]),
                None,
            )
            .await
            .expect("seed canonical credential");

        let kube = FakeKube::start().await;
        let namespace = name.clone();
        let deployment = "api".to_owned();
        kube.create_namespace(&namespace).await;
        kube.create_deployment(&namespace, &deployment).await;
        let kube_client = kube_client(&kube).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Fixture {
            secret: format!("{name}-db"),
            name,
            role,
            namespace,
            deployment,
            canonical,
            admin_path,
            initial,
            kube,
            kube_client,
            vault,
            admin,
            dir,
        };
        fixture.write_policy(&options);
        fixture
    }

    fn write_policy(&self, options: &Options) {
        let s = stack();
        let yaml = format!(
            r#"apiVersion: rotor/v1
kind: RotationPolicy
metadata:
  name: {name}
  labels: {{team: tests}}
spec:
  credential:
    type: postgres
    connection:
      host: {host}
      port: {port}
      database: postgres
      adminFrom: {{vault: {{path: {admin_path}}}}}
    username: {role}
    strategy: single
    password: {{length: 32, alphabet: alphanumeric}}
  vault:
    mount: secret
    path: {canonical}
  consumers:
    - type: kubernetes
      namespace: {namespace}
      secret: {secret}
      data:
        PGPASSWORD: "{{{{ password }}}}"
        DATABASE_URL: "postgres://{{{{ username }}}}:{{{{ password }}}}@db:5432/app"
      restart: [deployment/{deployment}]
  verify:
    oldRejected: true
    terminateSessions: {terminate}
"#,
            name = self.name,
            host = s.pg.host,
            port = options.pg_port.unwrap_or(s.pg.port),
            admin_path = self.admin_path,
            role = self.role,
            canonical = self.canonical,
            namespace = self.namespace,
            secret = self.secret,
            deployment = self.deployment,
            terminate = options.terminate_sessions,
        );
        std::fs::write(self.policy_dir().join("policy.yaml"), yaml).expect("write policy");
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A `rotor` command with the stack's Vault, this fixture's kubeconfig, and a
    /// clean environment otherwise.
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

    /// `rotor rotate` for this policy, at the most verbose log level.
    pub fn rotate_cmd(&self) -> Command {
        let mut cmd = self.rotor();
        cmd.arg("-vv")
            .arg("rotate")
            .arg("--policies")
            .arg(self.policy_dir())
            .arg(&self.name)
            .arg("--reason")
            .arg("scheduled test rotation")
            .arg("--ticket")
            .arg("TEST-1");
        cmd
    }

    pub fn rotate(&self) -> Output {
        self.rotate_cmd().output().expect("run rotor")
    }

    /// Vault's current canonical password and version.
    pub async fn current(&self) -> (String, u64) {
        let entry = self
            .vault
            .kv_read("secret", &self.canonical)
            .await
            .expect("read canonical")
            .expect("canonical exists");
        let password = entry
            .data
            .expose("password")
            .expect("password key")
            .to_owned();
        (password, entry.version)
    }

    /// The password stored at one canonical version.
    pub async fn version(&self, version: u64) -> String {
        self.vault
            .kv_read_version("secret", &self.canonical, version)
            .await
            .expect("read version")
            .expect("version exists")
            .data
            .expose("password")
            .expect("password key")
            .to_owned()
    }

    pub async fn login(&self, password: &str) -> AuthOutcome {
        self.admin
            .login(&self.role, &SecretString::from(password.to_owned()))
            .await
    }

    pub async fn secret_data(&self) -> Option<std::collections::BTreeMap<String, String>> {
        kube_clients::secret_data(&self.kube_client, &self.namespace, &self.secret).await
    }

    pub async fn restarted_at(&self) -> Option<String> {
        let api: Api<Deployment> = Api::namespaced(self.kube_client.clone(), &self.namespace);
        let d = api.get(&self.deployment).await.expect("get deployment");
        d.spec
            .template
            .metadata?
            .annotations?
            .get("kubectl.kubernetes.io/restartedAt")
            .cloned()
    }

    /// The pod-template annotation rotor sets to the data hash it restarted for.
    pub async fn restart_marker(&self) -> Option<String> {
        let api: Api<Deployment> = Api::namespaced(self.kube_client.clone(), &self.namespace);
        let d = api.get(&self.deployment).await.expect("get deployment");
        let key = rotor::consumers::kubernetes::restart_annotation_key(&self.secret);
        d.spec.template.metadata?.annotations?.get(&key).cloned()
    }

    /// Every password value this fixture has seen, for canary checks.
    pub async fn all_passwords(&self) -> Vec<String> {
        let (_, latest) = self.current().await;
        let mut all = vec![stack().pg.admin_password.clone()];
        for v in 1..=latest {
            all.push(self.version(v).await);
        }
        all
    }

    /// Asserts the invariant every crash test ends with: Vault's current value is the
    /// one PostgreSQL accepts, every earlier one is refused with 28P01, and the
    /// Secret holds the current value.
    pub async fn assert_consistent(&self) {
        let (current, latest) = self.current().await;
        assert!(
            matches!(self.login(&current).await, AuthOutcome::Accepted),
            "Vault's current password (version {latest}) must log in"
        );
        for v in 1..latest {
            let old = self.version(v).await;
            match self.login(&old).await {
                AuthOutcome::Rejected { code, .. } => assert_eq!(code, "28P01"),
                other => panic!("version {v} must be refused with 28P01, got {other:?}"),
            }
        }
        let data = self.secret_data().await.expect("the Secret exists");
        assert_eq!(
            data.get("PGPASSWORD").map(String::as_str),
            Some(current.as_str())
        );
        assert_eq!(
            data.get("DATABASE_URL").cloned(),
            Some(format!("postgres://{}:{}@db:5432/app", self.role, current))
        );
    }
}

/// Runs one statement as the stack's PostgreSQL admin.
pub async fn admin_sql(sql: &str) {
    let s = stack();
    let conn = format!(
        "host={} port={} user={} password={} dbname=postgres",
        s.pg.host, s.pg.port, s.pg.admin_user, s.pg.admin_password
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("admin connection to the stack's PostgreSQL (dev/stack up)");
    let task = tokio::spawn(connection);
    client.batch_execute(sql).await.expect("admin statement");
    drop(client);
    let _ = task.await;
}

/// stdout and stderr of a run as one string.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_no_leak(out: &Output, secrets: &[String]) {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&text(out), &refs);
}
