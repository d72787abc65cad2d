//! rotor's benchmarks against the real local stack (`dev/stack up`): OpenBao, the
//! project's PostgreSQL (scram-sha-256), the fake Kubernetes API on loopback and the
//! fake GitLab/GitHub APIs of `rotor-testkit`. Run through `dev/bench`, which builds
//! everything in release mode. It prints one table and asserts nothing: each line
//! compared with a target says PASS or MISS.
//!
//! 1. **latency** — one full rotation of a PostgreSQL role through the real engine
//!    (the rotor library, release build: `Engine::rotate`, the same call `rotor rotate`
//!    makes) with one Kubernetes Secret consumer, paired with OpenBao's
//!    `POST database/rotate-role/<role>` on another role of the same server; the pairs
//!    alternate which goes first. Also rotor's per-step times (from the journal) and
//!    the same round trips made directly with the same client libraries.
//! 2. **throughput** — `rotor rotate --selector … --concurrency 8` (release binary)
//!    over N roles (one Kubernetes Secret each) against OpenBao `rotate-role` over the
//!    same N roles (static roles) at concurrency 8.
//! 3. **scale** — `rotor validate` and `rotor plan` over generated policies, and an
//!    idle `rotor run` over them: start-up time, RSS, CPU and scheduler wake-ups.
//! 4. **compromise** — `POST /v1/policies/NAME/rotate` with `compromise` to a running
//!    `rotor run` until the old password is refused everywhere (PostgreSQL, three
//!    Kubernetes Secrets, a GitLab variable and a GitHub secret), against the sum of
//!    the round trips involved measured directly.
//!
//! Options (after `--` with `cargo bench`, or given to `dev/bench`): `--quick`,
//! `--pairs N`, `--roles N`, `--policies N`, `--idle SECONDS`, `--trials N`,
//! `--only latency,throughput,scale,compromise`. Environment: `ROTOR_BENCH_BIN` (another
//! `rotor` binary for the throughput, scale and compromise runs), `ROTOR_BENCH_KEEP`
//! (keep the work directories), `ROTOR_BENCH_RUST_LOG` (rotor's log level there).
//!
//! Never prints a secret: every value is generated here and only timings are shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rotor::consumers::Consumers;
use rotor::credentials::AuthOutcome;
use rotor::credentials::postgres::PostgresTarget;
use rotor::credentials::target::TargetTls;
use rotor::engine::{Asker, Engine, EngineConfig, RotationRequest, Trigger};
use rotor::policy::ValidatedPolicy;
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault, VaultConfig};
use rotor_testkit::{FakeGithub, FakeGitlab, FakeKube, Stack, stack};
use serde_json::{Value, json};

// The kube clients the tests make from a fake API server's kubeconfig (rotor's kube
// crates; the testkit keeps its own).
#[allow(dead_code)]
#[path = "../tests/common/kube_clients.rs"]
mod kube_clients;

/// The rotor release binary cargo built next to this benchmark.
const ROTOR: &str = env!("CARGO_BIN_EXE_rotor");
/// The OpenBao database secrets engine mount the benchmarks use.
const DB_MOUNT: &str = "rotor-bench-database";
/// Concurrency of the throughput benchmark (both sides).
const CONCURRENCY: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

fn fail<T>(message: impl Into<String>) -> Res<T> {
    Err(message.into().into())
}

// ---------------------------------------------------------------------------------
// Options and the result table.

#[derive(Debug, Clone)]
struct Options {
    pairs: usize,
    roles: usize,
    policies: usize,
    idle: Duration,
    trials: usize,
    only: Vec<String>,
}

impl Options {
    fn parse() -> Res<Options> {
        let mut o = Options {
            pairs: 30,
            roles: 1000,
            policies: 10_000,
            idle: Duration::from_secs(60),
            trials: 10,
            only: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        let number = |name: &str, v: Option<String>| -> Res<usize> {
            v.as_deref()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} needs a positive number").into())
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                // cargo passes `--bench` to harness-less benchmarks.
                "--bench" => {}
                "--quick" => {
                    o.pairs = 10;
                    o.roles = 100;
                    o.policies = 2_000;
                    o.idle = Duration::from_secs(15);
                    o.trials = 3;
                }
                "--pairs" => o.pairs = number(&a, args.next())?,
                "--roles" => o.roles = number(&a, args.next())?,
                "--policies" => o.policies = number(&a, args.next())?,
                "--idle" => o.idle = Duration::from_secs(number(&a, args.next())? as u64),
                "--trials" => o.trials = number(&a, args.next())?,
                "--only" => {
                    o.only = args
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned)
                        .collect()
                }
                other => {
                    return fail(format!(
                        "unknown option {other:?}; options: --quick --pairs N --roles N --policies N --idle SECONDS --trials N --only latency,throughput,scale,compromise"
                    ));
                }
            }
        }
        Ok(o)
    }

    fn wants(&self, bench: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|b| b == bench)
    }
}

/// One line of the table.
struct Row {
    bench: &'static str,
    measure: String,
    value: String,
    target: String,
    verdict: Option<bool>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn info(&mut self, bench: &'static str, measure: impl Into<String>, value: impl Into<String>) {
        self.push(bench, measure, value, String::new(), None);
    }

    fn check(
        &mut self,
        bench: &'static str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: bool,
    ) {
        self.push(bench, measure, value, target.into(), Some(pass));
    }

    fn push(
        &mut self,
        bench: &'static str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: String,
        verdict: Option<bool>,
    ) {
        let row = Row {
            bench,
            measure: measure.into(),
            value: value.into(),
            target,
            verdict,
        };
        eprintln!(
            "[bench] {:<11} {:<52} {:>16} {}",
            row.bench,
            row.measure,
            row.value,
            verdict_text(&row)
        );
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.bench.len())
            .max()
            .unwrap_or(5)
            .max(9);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.measure.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let w2 = self
            .rows
            .iter()
            .map(|r| r.value.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let w3 = self
            .rows
            .iter()
            .map(|r| r.target.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {:<w0$} | {:<w1$} | {:>w2$} | {:<w3$} | verdict |",
            "benchmark", "measure", "value", "target"
        );
        let _ = writeln!(
            out,
            "|{}|{}|{}|{}|---------|",
            "-".repeat(w0 + 2),
            "-".repeat(w1 + 2),
            "-".repeat(w2 + 2),
            "-".repeat(w3 + 2)
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {:<w0$} | {:<w1$} | {:>w2$} | {:<w3$} | {:<7} |",
                r.bench,
                r.measure,
                r.value,
                r.target,
                verdict_text(r)
            );
        }
        out
    }
}

fn verdict_text(r: &Row) -> &'static str {
    match r.verdict {
        None => "",
        Some(true) => "PASS",
        Some(false) => "MISS",
    }
}

/// Median and 90th percentile (nearest rank) of `samples`, in the samples' unit.
fn stats(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    let rank = ((0.9 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    (median, s[rank - 1])
}

fn median(samples: &[f64]) -> f64 {
    stats(samples).0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `f` in milliseconds.
async fn timed<T, F: Future<Output = Res<T>>>(f: F) -> Res<(f64, T)> {
    let start = Instant::now();
    let v = f.await?;
    Ok((ms(start.elapsed()), v))
}

// ---------------------------------------------------------------------------------
// The machine.

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {kernel}")
}

/// A temporary directory for one benchmark's files, kept (and named on stderr) when
/// `ROTOR_BENCH_KEEP` is set, e.g. to read an agent's log (`ROTOR_BENCH_RUST_LOG`
/// sets rotor's log level, default `warn`).
fn work_dir() -> Res<WorkDir> {
    let dir = tempfile::Builder::new().prefix("rotor-bench-").tempdir()?;
    if std::env::var_os("ROTOR_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("[bench] keeping {}", kept.display());
        return Ok(WorkDir(kept, None));
    }
    Ok(WorkDir(dir.path().to_path_buf(), Some(dir)))
}

/// See [`work_dir`]: removed when dropped unless kept (the guard does it).
struct WorkDir(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// The 1-minute load average: other work on the machine skews every number.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------
// Shared set-up helpers.

struct Ctx {
    stack: Stack,
    vault: Vault,
    admin: PostgresTarget,
    /// What the benchmarks created, removed by [`Ctx::clean_up`] whatever happened.
    created: std::sync::Mutex<Created>,
}

/// PostgreSQL roles, OpenBao static roles and database connections to remove.
#[derive(Default)]
struct Created {
    roles: Vec<String>,
    static_roles: Vec<String>,
    connections: Vec<String>,
}

impl Ctx {
    fn new() -> Res<Ctx> {
        let stack = stack().clone();
        let vault = Vault::connect(&VaultConfig {
            addr: stack.vault_addr.clone(),
            token: Some(SecretString::from(stack.vault_token.clone())),
            ..VaultConfig::from_env()
        })?;
        let admin = PostgresTarget::from_parts(
            &stack.pg.host,
            stack.pg.port,
            "postgres",
            TargetTls::Disable,
            &stack.pg.admin_user,
            SecretString::from(stack.pg.admin_password.clone()),
        )?;
        Ok(Ctx {
            stack,
            vault,
            admin,
            created: std::sync::Mutex::default(),
        })
    }

    /// A `rotor` command with the stack's Vault and a clean environment.
    fn rotor(&self, home: &Path, kubeconfig: &Path) -> Command {
        // `ROTOR_BENCH_BIN` runs another build (e.g. an older one, for a before/after).
        let bin = std::env::var_os("ROTOR_BENCH_BIN").unwrap_or_else(|| ROTOR.into());
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("VAULT_ADDR", &self.stack.vault_addr)
            .env("VAULT_TOKEN", &self.stack.vault_token)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("ROTOR_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        cmd
    }

    async fn seed(&self, path: &str, pairs: &[(&str, &str)]) -> Res<()> {
        self.vault
            .kv_write("secret", path, &secret_map(pairs), None)
            .await?;
        Ok(())
    }

    /// The stack's PostgreSQL admin login, stored once per benchmark in Vault.
    async fn seed_admin(&self, path: &str) -> Res<()> {
        let (u, p) = (&self.stack.pg.admin_user, &self.stack.pg.admin_password);
        self.seed(path, &[("username", u), ("password", p)]).await
    }

    async fn password(&self, path: &str) -> Res<String> {
        let entry = self
            .vault
            .kv_read("secret", path)
            .await?
            .ok_or_else(|| format!("secret/{path} is missing"))?;
        Ok(entry.data.expose("password").unwrap_or_default().to_owned())
    }

    /// Mounts the database secrets engine once and configures one connection to
    /// the stack's PostgreSQL that may manage any role.
    async fn database_connection(&self, name: &str) -> Res<()> {
        self.created().connections.push(name.to_owned());
        let resp = self
            .vault
            .request(
                reqwest::Method::POST,
                &format!("sys/mounts/{DB_MOUNT}"),
                Some(&json!({"type": "database"})),
                AuthAs::Rotor,
            )
            .await?;
        if !resp.is_success() && !resp.errors().contains("path is already in use") {
            return fail(format!("mounting the database engine: {}", resp.errors()));
        }
        let s = &self.stack.pg;
        self.vault
            .request_ok(
                reqwest::Method::POST,
                &format!("{DB_MOUNT}/config/{name}"),
                Some(&json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": format!(
                        "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/postgres?sslmode=disable",
                        s.host, s.port
                    ),
                    "username": s.admin_user,
                    "password": s.admin_password,
                    "allowed_roles": ["*"],
                    "password_authentication": "scram-sha-256",
                })),
                AuthAs::Rotor,
            )
            .await?;
        Ok(())
    }

    /// An OpenBao static role over the PostgreSQL role `role` (OpenBao rotates it once
    /// when the static role is created).
    async fn static_role(&self, connection: &str, name: &str, role: &str) -> Res<()> {
        self.created().static_roles.push(name.to_owned());
        self.vault
            .request_ok(
                reqwest::Method::POST,
                &format!("{DB_MOUNT}/static-roles/{name}"),
                Some(&json!({
                    "db_name": connection,
                    "username": role,
                    "rotation_period": "720h",
                })),
                AuthAs::Rotor,
            )
            .await?;
        Ok(())
    }

    /// OpenBao's own count of the requests it handled and their total time (ms),
    /// from `sys/metrics` (`vault_core_handle_request`).
    async fn bao_requests(&self) -> Res<(f64, f64)> {
        let resp = self
            .vault
            .request_ok(
                reqwest::Method::GET,
                "sys/metrics?format=prometheus",
                None,
                AuthAs::Rotor,
            )
            .await?;
        let text = String::from_utf8_lossy(&resp.body);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("OpenBao's sys/metrics has no {name}"))
        };
        Ok((
            value("vault_core_handle_request_count ")?,
            value("vault_core_handle_request_sum ")?,
        ))
    }

    async fn rotate_role(&self, name: &str) -> Res<()> {
        self.vault
            .request_ok(
                reqwest::Method::POST,
                &format!("{DB_MOUNT}/rotate-role/{name}"),
                None,
                AuthAs::Rotor,
            )
            .await?;
        Ok(())
    }

    async fn delete_static_role(&self, name: &str) {
        let _ = self
            .vault
            .request(
                reqwest::Method::DELETE,
                &format!("{DB_MOUNT}/static-roles/{name}"),
                None,
                AuthAs::Rotor,
            )
            .await;
    }

    async fn delete_connection(&self, name: &str) {
        let _ = self
            .vault
            .request(
                reqwest::Method::DELETE,
                &format!("{DB_MOUNT}/config/{name}"),
                None,
                AuthAs::Rotor,
            )
            .await;
    }

    fn pg_config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.stack.pg.host)
            .port(self.stack.pg.port)
            .dbname("postgres")
            .user(user)
            .password(password)
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// Runs `sql` on one admin connection (tokio-postgres).
    async fn admin_sql(&self, sql: &str) -> Res<()> {
        let (client, task) = self
            .pg_open(&self.stack.pg.admin_user, &self.stack.pg.admin_password)
            .await?;
        let r = client.batch_execute(sql).await;
        drop(client);
        let _ = task.await;
        Ok(r?)
    }

    async fn pg_open(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, conn) = self
            .pg_config(user, password)
            .connect(tokio_postgres::NoTls)
            .await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((client, task))
    }

    /// `CREATE ROLE` for every role with its password (SCRAM verifiers computed here),
    /// in one batch on one admin connection.
    async fn create_roles(&self, roles: &[(String, String)]) -> Res<()> {
        self.created()
            .roles
            .extend(roles.iter().map(|(r, _)| r.clone()));
        let mut sql = String::new();
        for (role, password) in roles {
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let _ = writeln!(
                sql,
                "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN PASSWORD '{verifier}';"
            );
        }
        self.admin_sql(&sql).await
    }

    fn created(&self) -> std::sync::MutexGuard<'_, Created> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes every static role, database connection and role the benchmarks made.
    async fn clean_up(&self) {
        let created = std::mem::take(&mut *self.created());
        for name in &created.static_roles {
            self.delete_static_role(name).await;
        }
        for name in &created.connections {
            self.delete_connection(name).await;
        }
        self.drop_roles(created.roles).await;
    }

    async fn drop_roles(&self, roles: impl IntoIterator<Item = String>) {
        let sql: String = roles
            .into_iter()
            .map(|r| format!("DROP ROLE IF EXISTS \"{r}\";\n"))
            .collect();
        if let Err(e) = self.admin_sql(&sql).await {
            eprintln!("[bench] cleanup: dropping roles failed: {e}");
        }
    }

    // Direct round trips, each with the client library rotor uses for it.

    /// `ALTER ROLE … PASSWORD '<SCRAM verifier>'` on a fresh admin connection.
    async fn direct_alter(&self, role: &str, password: &str) -> Res<()> {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        self.admin_sql(&format!("ALTER ROLE \"{role}\" PASSWORD '{verifier}'"))
            .await
    }

    /// An admin connection kept open, as rotor keeps one.
    async fn kept_admin(&self) -> Res<tokio_postgres::Client> {
        let (client, _task) = self
            .pg_open(&self.stack.pg.admin_user, &self.stack.pg.admin_password)
            .await?;
        Ok(client)
    }

    /// What rotor's apply does on a kept admin connection: a liveness check, the role
    /// lookup and `ALTER ROLE` with a SCRAM verifier computed here.
    async fn kept_alter(
        &self,
        client: &tokio_postgres::Client,
        role: &str,
        password: &str,
    ) -> Res<()> {
        client.check_connection().await?;
        client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await?
            .ok_or("role missing")?;
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        client
            .batch_execute(&format!("ALTER ROLE \"{role}\" PASSWORD '{verifier}'"))
            .await?;
        Ok(())
    }

    /// Logs in as `role` and runs `SELECT 1`.
    async fn direct_login(&self, role: &str, password: &str) -> Res<()> {
        let (client, task) = self.pg_open(role, password).await?;
        let r = client.query_one("SELECT 1", &[]).await;
        drop(client);
        let _ = task.await;
        r?;
        Ok(())
    }

    /// Tries `password` for `role`; Ok when the server refuses it with 28P01.
    async fn direct_refused(&self, role: &str, password: &str) -> Res<()> {
        match self.pg_open(role, password).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) => {
                Ok(())
            }
            Err(e) => fail(format!("old-password probe: {e}")),
            Ok(_) => fail("the old password was accepted"),
        }
    }

    /// The sessions of `role` started before now (what a compromise ends), on a fresh
    /// admin connection.
    async fn direct_sessions(&self, role: &str) -> Res<()> {
        let (client, task) = self
            .pg_open(&self.stack.pg.admin_user, &self.stack.pg.admin_password)
            .await?;
        let r = client
            .query(
                "SELECT pid FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&role],
            )
            .await;
        drop(client);
        let _ = task.await;
        r?;
        Ok(())
    }
}

fn secret_map(pairs: &[(&str, &str)]) -> SecretMap {
    let mut m = SecretMap::new();
    for (k, v) in pairs {
        m.insert(*k, SecretString::from((*v).to_owned()));
    }
    m
}

/// A fresh password of letters and digits.
fn password() -> String {
    rotor_testkit::canary().replace('-', "")
}

/// Server-side apply of one Secret with `PGPASSWORD` (kube).
async fn direct_apply(client: &kube::Client, ns: &str, name: &str, password: &str) -> Res<()> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {"PGPASSWORD": b64},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("rotor-bench").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn secret_value(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let v = s.data?.get("PGPASSWORD")?.0.clone();
    String::from_utf8(v).ok()
}

/// What varies between the generated postgres policies (strategy single).
struct PolicyFile<'a> {
    name: &'a str,
    labels: &'a str,
    admin_path: &'a str,
    role: &'a str,
    canonical: &'a str,
    /// `spec.schedule` lines (indented 2), or empty.
    schedule: &'a str,
    /// `spec.consumers` entries (indented 4).
    consumers: &'a str,
}

impl PolicyFile<'_> {
    /// Writes `dir/<name>.yaml` for the stack's PostgreSQL.
    fn write(&self, dir: &Path, pg: &rotor_testkit::PgInfo) -> Res<PathBuf> {
        let yaml = format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  credential:\n    type: postgres\n    connection:\n      host: {host}\n      port: {port}\n      database: postgres\n      adminFrom: {{vault: {{path: {admin_path}}}}}\n    username: {role}\n    strategy: single\n    password: {{length: 32, alphabet: alphanumeric}}\n  vault:\n    mount: secret\n    path: {canonical}\n{schedule}  consumers:\n{consumers}  verify:\n    oldRejected: true\n",
            name = self.name,
            labels = self.labels,
            admin_path = self.admin_path,
            role = self.role,
            canonical = self.canonical,
            schedule = self.schedule,
            consumers = self.consumers,
            host = pg.host,
            port = pg.port,
        );
        let file = dir.join(format!("{}.yaml", self.name));
        std::fs::write(&file, yaml)?;
        Ok(file)
    }
}

fn kube_consumer(ns: &str, secret: &str) -> String {
    format!(
        "    - type: kubernetes\n      namespace: {ns}\n      secret: {secret}\n      data:\n        PGPASSWORD: \"{{{{ password }}}}\"\n        DATABASE_URL: \"postgres://{{{{ username }}}}:{{{{ password }}}}@db:5432/app\"\n"
    )
}

fn load_policy(file: &Path, name: &str) -> Res<ValidatedPolicy> {
    let set = rotor::policy::load_paths(&[file.to_path_buf()])
        .map_err(|e| format!("the generated policy is invalid: {e}"))?;
    Ok(set.get(name).ok_or("policy missing")?.clone())
}

// ---------------------------------------------------------------------------------
// 1. Latency.

async fn latency(ctx: &Ctx, pairs: usize, table: &mut Table) -> Res<()> {
    const B: &str = "latency";
    let name = rotor_testkit::unique("bench-lat");
    let role = name.replace('-', "_");
    let bao_role = format!("{role}_bao");
    let direct_role = format!("{role}_direct");
    let initial = password();
    ctx.create_roles(&[
        (role.clone(), initial.clone()),
        (bao_role.clone(), password()),
        (direct_role.clone(), password()),
    ])
    .await?;
    let admin_path = format!("rotor-bench/{name}/pg-admin");
    let canonical = format!("rotor-bench/{name}/db");
    ctx.seed_admin(&admin_path).await?;
    ctx.seed(&canonical, &[("username", &role), ("password", &initial)])
        .await?;

    let kube = FakeKube::start().await;
    kube.create_namespace(&name).await;
    let client = kube_clients::rotor_kube_client(&kube).await;
    let dir = work_dir()?;
    let file = PolicyFile {
        name: &name,
        labels: "{bench: latency}",
        admin_path: &admin_path,
        role: &role,
        canonical: &canonical,
        schedule: "",
        consumers: &kube_consumer(&name, "db"),
    }
    .write(dir.path(), &ctx.stack.pg)?;
    let policy = load_policy(&file, &name)?;
    let engine = Engine::new(
        ctx.vault.clone(),
        EngineConfig::default(),
        Consumers::with_kube_client(client.clone()),
    )
    .await?;

    ctx.database_connection(&name).await?;
    ctx.static_role(&name, &name, &bao_role).await?;

    let request = || RotationRequest {
        trigger: Trigger::OnDemand,
        asker: Asker::named("bench"),
        reason: Some("benchmark".into()),
        ticket: None,
        ..Default::default()
    };
    let rotor_once = || async {
        let outcome = engine.rotate(&policy, request()).await?;
        if !outcome.succeeded() {
            let why = outcome
                .rotation
                .as_ref()
                .and_then(|r| r.error.clone())
                .unwrap_or_default();
            return fail(format!("rotor's rotation did not complete: {why}"));
        }
        Ok(outcome.rotation.ok_or("no rotation")?)
    };

    // Warm-up: connections, clients, the first Secret apply.
    for _ in 0..2 {
        rotor_once().await?;
        ctx.rotate_role(&name).await?;
    }

    let mut rotor_ms = Vec::new();
    let mut bao_ms = Vec::new();
    let mut steps: BTreeMap<usize, (String, Vec<f64>)> = BTreeMap::new();
    let mut bookkeeping = Vec::new();
    let mut last = None;
    // OpenBao counts the requests it handles; what a count sample itself adds.
    let sample_cost = {
        let a = ctx.bao_requests().await?;
        let b = ctx.bao_requests().await?;
        b.0 - a.0
    };
    let mut bao_requests = Vec::new();
    let mut bao_server_ms = Vec::new();
    for i in 0..pairs {
        // Alternate which of the pair goes first.
        let rotor_first = i % 2 == 0;
        if !rotor_first {
            bao_ms.push(timed(ctx.rotate_role(&name)).await?.0);
        }
        let before = ctx.bao_requests().await?;
        let (t, rotation) = timed(rotor_once()).await?;
        let after = ctx.bao_requests().await?;
        bao_requests.push(after.0 - before.0 - sample_cost);
        bao_server_ms.push(after.1 - before.1);
        rotor_ms.push(t);
        let mut in_steps = 0.0;
        for (k, s) in rotation.steps.iter().enumerate() {
            if let Some(d) = s.duration_ms {
                steps
                    .entry(k)
                    .or_insert_with(|| (s.step.as_str().to_owned(), Vec::new()))
                    .1
                    .push(d);
                in_steps += d;
            }
        }
        bookkeeping.push(t - in_steps);
        last = Some(rotation);
        if rotor_first {
            bao_ms.push(timed(ctx.rotate_role(&name)).await?.0);
        }
    }

    // The same round trips, made directly: every request rotor's rotation makes, in
    // the same order and with the same overlap (see `Engine::rotate`), with the same
    // client libraries, without rotor's own work between them. The journal record
    // written is the last one rotor wrote, so the sizes match too.
    let journal_value = {
        let mut data = serde_json::Map::new();
        data.insert(
            "rotation".into(),
            serde_json::to_value(last.as_ref().ok_or("no rotor rotation ran")?)?,
        );
        data.insert("status".into(), json!("completed"));
        data
    };
    let direct_path = format!("rotor-bench/{name}/direct");
    let journal_path = format!("rotor-bench/{name}/direct-journal");
    let history_path = format!("rotor-bench/{name}/direct-history");
    let retired_path = format!("rotor-bench/{name}/direct-retired");
    let history_value = {
        let mut data = serde_json::Map::new();
        data.insert("policy".into(), json!(name));
        data.insert(
            "fingerprints".into(),
            json!(
                (0..24)
                    .map(|i| format!("hmac-sha256:{i:064x}"))
                    .collect::<Vec<_>>()
            ),
        );
        data
    };
    let direct_ns = &name;
    let mut old = password();
    ctx.direct_alter(&direct_role, &old).await?;
    let admin = ctx.kept_admin().await?;
    let v = &ctx.vault;
    let mut direct: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut sums = Vec::new();
    for i in 0..pairs {
        let new = password();
        let data = secret_map(&[("username", &direct_role), ("password", &new)]);
        let staging = format!("rotor-bench/{name}/direct-staging-{i}");
        let mut parts: Vec<(&str, f64)> = Vec::new();
        let journal_write = || v.kv_write_value("secret", &journal_path, &journal_value, None);
        parts.push((
            "Vault: retired mark, journal, canonical reads (parallel)",
            timed(async {
                tokio::try_join!(
                    v.kv_read("secret", &retired_path),
                    v.kv_read_value("secret", &journal_path),
                    v.kv_read("secret", &direct_path),
                )?;
                Ok(())
            })
            .await?
            .0,
        ));
        parts.push((
            "Vault: plan write, admin and history reads (parallel)",
            timed(async {
                tokio::try_join!(
                    journal_write(),
                    v.kv_read("secret", &admin_path),
                    v.kv_read_value("secret", &history_path),
                )?;
                Ok(())
            })
            .await?
            .0,
        ));
        parts.push((
            "Vault: staging write (check-and-set 0)",
            timed(async { Ok(v.kv_write("secret", &staging, &data, Some(0)).await?) })
                .await?
                .0,
        ));
        let mut journal_ms = timed(async { Ok(journal_write().await?) }).await?.0;
        parts.push((
            "PostgreSQL: ALTER ROLE on a kept connection (check, role lookup, SCRAM verifier)",
            timed(ctx.kept_alter(&admin, &direct_role, &new)).await?.0,
        ));
        parts.push((
            "PostgreSQL: login with the new password",
            timed(ctx.direct_login(&direct_role, &new)).await?.0,
        ));
        journal_ms += timed(async { Ok(journal_write().await?) }).await?.0;
        parts.push((
            "Vault: canonical and history writes (parallel)",
            timed(async {
                tokio::try_join!(
                    v.kv_write("secret", &direct_path, &data, None),
                    v.kv_write_value("secret", &history_path, &history_value, None),
                )?;
                Ok(())
            })
            .await?
            .0,
        ));
        journal_ms += timed(async { Ok(journal_write().await?) }).await?.0;
        parts.push((
            "Kubernetes: Secret apply and read back",
            timed(async {
                direct_apply(&client, direct_ns, "direct", &new).await?;
                secret_value(&client, direct_ns, "direct").await;
                Ok(())
            })
            .await?
            .0,
        ));
        parts.push((
            "PostgreSQL: login with the old password (refused)",
            timed(ctx.direct_refused(&direct_role, &old)).await?.0,
        ));
        parts.push((
            "Vault: staging destroy",
            timed(async { Ok(v.kv_destroy_all("secret", &staging).await?) })
                .await?
                .0,
        ));
        journal_ms += timed(async { Ok(journal_write().await?) }).await?.0;
        parts.push(("Vault: journal writes (4)", journal_ms));
        sums.push(parts.iter().map(|(_, t)| t).sum::<f64>());
        for (k, t) in parts {
            direct.entry(k).or_default().push(t);
        }
        old = new;
    }
    drop(admin);

    let (r_med, r_p90) = stats(&rotor_ms);
    let (b_med, b_p90) = stats(&bao_ms);
    let ratio = r_med / b_med;
    table.info(
        B,
        format!("rotor rotation, {pairs} runs: median / p90 (ms)"),
        format!("{r_med:.1} / {r_p90:.1}"),
    );
    table.info(
        B,
        format!("OpenBao rotate-role, {pairs} runs: median / p90 (ms)"),
        format!("{b_med:.1} / {b_p90:.1}"),
    );
    table.check(
        B,
        "rotor / OpenBao (medians)",
        format!("{ratio:.2}x"),
        "<= 1.5x",
        ratio <= 1.5,
    );
    for (step, samples) in steps.values() {
        table.info(
            B,
            format!("  rotor step {step} (median ms)"),
            format!("{:.2}", median(samples)),
        );
    }
    table.info(
        B,
        "  rotor journal + set-up outside steps (median ms)",
        format!("{:.2}", median(&bookkeeping)),
    );
    table.info(
        B,
        "  OpenBao requests per rotor rotation / OpenBao-side time (median ms)",
        format!(
            "{:.0} / {:.1}",
            median(&bao_requests),
            median(&bao_server_ms)
        ),
    );
    for (k, samples) in &direct {
        table.info(
            B,
            format!("  direct: {k} (median ms)"),
            format!("{:.2}", median(samples)),
        );
    }
    let d_med = median(&sums);
    table.info(
        B,
        "direct round trips, sum (median ms)",
        format!("{d_med:.1}"),
    );
    let overhead = (r_med - d_med) / d_med * 100.0;
    table.check(
        B,
        "rotor overhead over direct round trips",
        format!("{:.1} ms ({overhead:.0}%)", r_med - d_med),
        "<= 10%",
        overhead <= 10.0,
    );

    Ok(())
}

// ---------------------------------------------------------------------------------
// 2. Throughput.

async fn throughput(ctx: &Ctx, roles: usize, table: &mut Table) -> Res<()> {
    const B: &str = "throughput";
    let tag = rotor_testkit::unique("btp");
    let label = tag.clone();
    let names: Vec<String> = (0..roles).map(|i| format!("{tag}-{i:05}")).collect();
    let role_of = |n: &str| n.replace('-', "_");
    let initial: Vec<(String, String)> = names.iter().map(|n| (role_of(n), password())).collect();
    eprintln!("[bench] throughput: creating {roles} roles, canonical copies and policies");
    ctx.create_roles(&initial).await?;
    let admin_path = format!("rotor-bench/{tag}/pg-admin");
    ctx.seed_admin(&admin_path).await?;
    let seeds = futures::stream::iter(names.iter().zip(&initial))
        .map(|(n, (role, pw))| async move {
            ctx.seed(
                &format!("rotor-bench/{n}/db"),
                &[("username", role), ("password", pw)],
            )
            .await
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    seeds.into_iter().collect::<Res<Vec<()>>>()?;

    let kube = FakeKube::start().await;
    kube.create_namespace(&tag).await;
    let dir = work_dir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    for n in &names {
        PolicyFile {
            name: n,
            labels: &format!("{{bench: {label}}}"),
            admin_path: &admin_path,
            role: &role_of(n),
            canonical: &format!("rotor-bench/{n}/db"),
            schedule: "",
            consumers: &kube_consumer(&tag, n),
        }
        .write(&policies, &ctx.stack.pg)?;
    }

    // rotor: the release binary, as an operator would run it.
    let start = Instant::now();
    let out = ctx
        .rotor(dir.path(), &kube.kubeconfig)
        .args(["-o", "json", "rotate", "--policies"])
        .arg(&policies)
        .args(["--selector", &format!("bench={label}")])
        .args(["--reason", "throughput benchmark"])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .stdin(Stdio::null())
        .output()?;
    let rotor_secs = start.elapsed().as_secs_f64();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let ok = report["rotations"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["succeeded"] == true).count());
    if ok != roles {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first_error = report["rotations"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["succeeded"] != true))
            .map(|r| r.to_string())
            .unwrap_or_default();
        return fail(format!(
            "rotor rotated {ok} of {roles} roles (exit {:?}); first failure: {first_error}; stderr tail: {}",
            out.status.code(),
            stderr
                .chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        ));
    }

    // OpenBao: static roles over the same PostgreSQL roles (creating one rotates it).
    eprintln!("[bench] throughput: creating {roles} OpenBao static roles");
    ctx.database_connection(&tag).await?;
    let tag_ref = &tag;
    let created = futures::stream::iter(&names)
        .map(|n| async move { ctx.static_role(tag_ref, n, &role_of(n)).await })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    created.into_iter().collect::<Res<Vec<()>>>()?;
    let start = Instant::now();
    let rotated = futures::stream::iter(&names)
        .map(|n| ctx.rotate_role(n))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let bao_secs = start.elapsed().as_secs_f64();
    rotated.into_iter().collect::<Res<Vec<()>>>()?;

    let (r_rate, b_rate) = (roles as f64 / rotor_secs, roles as f64 / bao_secs);
    table.info(
        B,
        format!("rotor rotate --selector, {roles} roles, concurrency {CONCURRENCY} (s)"),
        format!("{rotor_secs:.2}"),
    );
    table.info(
        B,
        format!("OpenBao rotate-role, {roles} roles, concurrency {CONCURRENCY} (s)"),
        format!("{bao_secs:.2}"),
    );
    table.info(B, "rotor rotations/s", format!("{r_rate:.1}"));
    table.info(B, "OpenBao rotations/s", format!("{b_rate:.1}"));
    let ratio = r_rate / b_rate;
    table.check(
        B,
        "rotor / OpenBao (rotations/s)",
        format!("{ratio:.2}x"),
        ">= 1.0x",
        ratio >= 1.0,
    );

    Ok(())
}

// ---------------------------------------------------------------------------------
// 3. Scale.

/// Process statistics from /proc: (utime + stime in clock ticks, VmRSS KiB, VmHWM KiB).
fn proc_stats(pid: u32) -> Res<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').ok_or("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((utime + stime, kib("VmRSS:"), kib("VmHWM:")))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A child process killed (and reaped) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(base: &str, child: &mut Reaped, log: &Path, limit: Duration) -> Res<()> {
    let deadline = Instant::now() + limit;
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = child.0.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return fail(format!(
                "rotor run exited ({status}) before it was ready:\n{text}"
            ));
        }
        if Instant::now() > deadline {
            return fail(format!("rotor run was not ready within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(base: &str, name: &str) -> Res<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/metrics has no {name}").into())
}

async fn scale(ctx: &Ctx, count: usize, idle: Duration, table: &mut Table) -> Res<()> {
    const B: &str = "scale";
    let tag = rotor_testkit::unique("bsc");
    let dir = work_dir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];
    let today = chrono::Utc::now()
        .format("%d")
        .to_string()
        .parse::<u32>()
        .unwrap_or(1);
    eprintln!("[bench] scale: writing {count} policies");
    for i in 0..count {
        let name = format!("{tag}-{i:05}");
        // Monthly on a day other than today (plus jitter): nothing is due while idle.
        let mut day = (i % 28) as u32 + 1;
        if day.abs_diff(today) <= 1 {
            day = (today + 14) % 28 + 1;
        }
        let schedule = format!(
            "  schedule:\n    cron: \"{} {} {day} * *\"\n    timezone: {}\n    jitter: 10m\n",
            i % 60,
            i % 24,
            zones[i % zones.len()]
        );
        PolicyFile {
            name: &name,
            labels: &format!("{{team: t{}, bench: scale}}", i % 50),
            admin_path: &format!("rotor-bench/{tag}/pg-admin"),
            role: &format!("app_{i}"),
            canonical: &format!("rotor-bench/{tag}/{i}"),
            schedule: &schedule,
            consumers: &kube_consumer(&format!("ns-{}", i % 100), &format!("db-{i}")),
        }
        .write(&policies, &ctx.stack.pg)?;
    }
    let kube = FakeKube::start().await;

    // validate and plan, three runs each.
    let run_timed = |args: &[&str]| -> Res<f64> {
        let mut cmd = ctx.rotor(dir.path(), &kube.kubeconfig);
        cmd.args(args)
            .arg(&policies)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output()?;
        let t = ms(start.elapsed());
        if !out.status.success() {
            return fail(format!(
                "rotor {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(t)
    };
    let mut validate = Vec::new();
    let mut plan = Vec::new();
    for _ in 0..3 {
        validate.push(run_timed(&["validate"])?);
        plan.push(run_timed(&["-o", "json", "plan", "--policies"])?);
    }
    let (v, p) = (median(&validate), median(&plan));
    table.check(
        B,
        format!("rotor validate, {count} policies (median of 3, ms)"),
        format!("{v:.0}"),
        "<= 1000 ms",
        v <= 1000.0,
    );
    table.check(
        B,
        format!("rotor plan -o json, {count} policies (median of 3, ms)"),
        format!("{p:.0}"),
        "<= 1000 ms",
        p <= 1000.0,
    );

    // An idle agent.
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("agent.log");
    let start = Instant::now();
    let child = ctx
        .rotor(dir.path(), &kube.kubeconfig)
        .args(["run", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut child = Reaped(child);
    let pid = child.0.id();
    wait_ready(&base, &mut child, &log, Duration::from_secs(900)).await?;
    let ready = start.elapsed().as_secs_f64();
    let tck = clock_ticks();
    let (ticks_ready, rss_ready, _) = proc_stats(pid)?;
    table.info(
        B,
        format!("rotor run start-up until ready, {count} policies (s)"),
        format!("{ready:.2}"),
    );
    table.info(
        B,
        "rotor run start-up CPU (s)",
        format!("{:.2}", ticks_ready as f64 / tck),
    );
    table.info(
        B,
        "rotor run RSS when ready (MiB)",
        format!("{:.1}", rss_ready as f64 / 1024.0),
    );

    let w0 = metric(&base, "rotor_scheduler_wakeups_total").await?;
    let (t0, _, _) = proc_stats(pid)?;
    let begin = Instant::now();
    tokio::time::sleep(idle).await;
    let (t1, rss, hwm) = proc_stats(pid)?;
    let elapsed = begin.elapsed().as_secs_f64();
    let w1 = metric(&base, "rotor_scheduler_wakeups_total").await?;
    let cpu = (t1 - t0) as f64 / tck / elapsed * 100.0;
    let rss_mib = rss as f64 / 1024.0;
    let wakeups = (w1 - w0) / elapsed * 60.0;
    table.check(
        B,
        format!("idle rotor run over {:.0} s: VmRSS (MiB)", elapsed),
        format!("{rss_mib:.1}"),
        "<= 64 MiB",
        rss_mib <= 64.0,
    );
    table.info(
        B,
        "idle rotor run: VmHWM, peak since start (MiB)",
        format!("{:.1}", hwm as f64 / 1024.0),
    );
    table.check(
        B,
        "idle rotor run: CPU (% of one core)",
        format!("{cpu:.2}"),
        "<= 0.5%",
        cpu <= 0.5,
    );
    table.info(
        B,
        "idle rotor run: scheduler wake-ups per minute",
        format!("{wakeups:.1}"),
    );
    drop(child);
    Ok(())
}

// ---------------------------------------------------------------------------------
// 4. Compromise.

async fn compromise(ctx: &Ctx, trials: usize, table: &mut Table) -> Res<()> {
    const B: &str = "compromise";
    let name = rotor_testkit::unique("bench-cmp");
    let role = name.replace('-', "_");
    let direct_role = format!("{role}_direct");
    let initial = password();
    ctx.create_roles(&[
        (role.clone(), initial.clone()),
        (direct_role.clone(), password()),
    ])
    .await?;
    let admin_path = format!("rotor-bench/{name}/pg-admin");
    let canonical = format!("rotor-bench/{name}/db");
    ctx.seed_admin(&admin_path).await?;
    ctx.seed(&canonical, &[("username", &role), ("password", &initial)])
        .await?;

    let kube = FakeKube::start().await;
    kube.create_namespace(&name).await;
    let client = kube_clients::rotor_kube_client(&kube).await;
    let gitlab = FakeGitlab::start();
    gitlab.add_project("acme/bench");
    let github = FakeGithub::start();
    github.add_repository("acme/bench");
    let gl_ref = format!("rotor-bench/{name}/gitlab");
    let gh_ref = format!("rotor-bench/{name}/github");
    ctx.seed(&gl_ref, &[("token", &gitlab.token)]).await?;
    ctx.seed(&gh_ref, &[("token", &github.token)]).await?;

    let secrets = ["db-a", "db-b", "db-c"];
    let mut consumers: String = secrets.iter().map(|s| kube_consumer(&name, s)).collect();
    let _ = write!(
        consumers,
        "    - type: gitlab\n      url: {}\n      tokenFrom: {{vault: {{path: {gl_ref}, key: token}}}}\n      project: acme/bench\n      key: DB_PASSWORD\n      value: \"{{{{ password }}}}\"\n      masked: true\n    - type: github\n      url: {}\n      tokenFrom: {{vault: {{path: {gh_ref}, key: token}}}}\n      repository: acme/bench\n      name: DB_PASSWORD\n      value: \"{{{{ password }}}}\"\n",
        gitlab.base_url, github.base_url
    );
    let dir = work_dir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    PolicyFile {
        name: &name,
        labels: "{bench: compromise}",
        admin_path: &admin_path,
        role: &role,
        canonical: &canonical,
        schedule: "",
        consumers: &consumers,
    }
    .write(&policies, &ctx.stack.pg)?;
    let token = password();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, &token)?;
    let auth = dir.path().join("auth.yaml");
    std::fs::write(
        &auth,
        format!(
            "identities:\n  - name: bench\n    tokenFrom: {{file: {}}}\n    policies: [\"*\"]\n    compromise: true\n    rateLimit: {{requests: 100000, per: 1s}}\n",
            token_file.display()
        ),
    )?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("agent.log");
    let child = ctx
        .rotor(dir.path(), &kube.kubeconfig)
        .args(["run", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--auth-config")
        .arg(&auth)
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut child = Reaped(child);
    wait_ready(&base, &mut child, &log, Duration::from_secs(120)).await?;
    let http = reqwest::Client::new();

    let one = async |http: &reqwest::Client| -> Res<(f64, BTreeMap<&'static str, f64>)> {
        let old = ctx.password(&canonical).await?;
        let start = Instant::now();
        let resp = http
            .post(format!("{base}/v1/policies/{name}/rotate"))
            .bearer_auth(&token)
            .json(&json!({"reason": "benchmark: leaked", "compromise": true}))
            .send()
            .await?;
        if resp.status().as_u16() != 202 {
            return fail(format!("rotate request answered {}", resp.status()));
        }
        let mut seen: BTreeMap<&'static str, f64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < 6 {
            if !seen.contains_key("postgres")
                && matches!(
                    ctx.admin
                        .login(&role, &SecretString::from(old.clone()))
                        .await,
                    AuthOutcome::Rejected { .. }
                )
            {
                seen.insert("postgres", ms(start.elapsed()));
            }
            for (k, s) in [
                ("secret db-a", secrets[0]),
                ("secret db-b", secrets[1]),
                ("secret db-c", secrets[2]),
            ] {
                if !seen.contains_key(k)
                    && secret_value(&client, &name, s)
                        .await
                        .is_some_and(|v| v != old)
                {
                    seen.insert(k, ms(start.elapsed()));
                }
            }
            if !seen.contains_key("gitlab")
                && gitlab
                    .variable("acme/bench", "DB_PASSWORD", "*")
                    .is_some_and(|v| v.value != old)
            {
                seen.insert("gitlab", ms(start.elapsed()));
            }
            if !seen.contains_key("github")
                && github
                    .secret("acme/bench", "DB_PASSWORD")
                    .is_some_and(|v| v.plaintext != old)
            {
                seen.insert("github", ms(start.elapsed()));
            }
            if Instant::now() > deadline {
                return fail(format!(
                    "the old credential was still in use after 60 s (refused/replaced at: {seen:?}); agent log: {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let total = seen.values().copied().fold(0.0, f64::max);
        // Wait for the agent to close the rotation before the next one.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: Value = http
                .get(format!("{base}/v1/policies/{name}"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            let v = if v.get("policy").is_some() {
                v["policy"].clone()
            } else {
                v
            };
            if v["state"] == "idle" && v["last_rotation"]["status"] == "completed" {
                break;
            }
            if v["state"] == "failed" || v["state"] == "quarantined" {
                return fail(format!("the compromise rotation failed: {}", v["error"]));
            }
            if Instant::now() > deadline {
                return fail("the agent did not finish the rotation within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((total, seen))
    };

    one(&http).await?; // warm-up: clients, and every consumer holds the current value
    let mut totals = Vec::new();
    let mut parts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..trials {
        let (t, seen) = one(&http).await?;
        totals.push(t);
        for (k, v) in seen {
            parts.entry(k).or_default().push(v);
        }
    }
    drop(child);

    // The round trips involved, made directly.
    let direct_path = format!("rotor-bench/{name}/direct");
    for s in ["direct-a", "direct-b", "direct-c"] {
        direct_apply(&client, &name, s, "x").await?;
    }
    let gl_url = format!("{}/api/v4/projects/acme%2Fbench/variables", gitlab.base_url);
    let created = http
        .post(&gl_url)
        .header("PRIVATE-TOKEN", &gitlab.token)
        .json(&json!({"key": "DIRECT_PASSWORD", "value": password(), "masked": true, "raw": true}))
        .send()
        .await?;
    if !created.status().is_success() {
        return fail(format!(
            "creating the GitLab variable: {}",
            created.status()
        ));
    }
    let mut old = password();
    ctx.direct_alter(&direct_role, &old).await?;
    let mut sums = Vec::new();
    let mut direct: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..trials.max(5) {
        let new = password();
        let data = secret_map(&[("username", &direct_role), ("password", &new)]);
        let gl_put = async {
            let r = http
                .put(format!(
                    "{gl_url}/DIRECT_PASSWORD?filter[environment_scope]=*"
                ))
                .header("PRIVATE-TOKEN", &gitlab.token)
                .json(&json!({"value": new, "masked": true, "raw": true}))
                .send()
                .await?;
            if !r.status().is_success() {
                return fail(format!("GitLab PUT answered {}", r.status()));
            }
            Ok(())
        };
        let gh_put = async {
            let key: Value = http
                .get(format!(
                    "{}/repos/acme/bench/actions/secrets/public-key",
                    github.base_url
                ))
                .bearer_auth(&github.token)
                .header("User-Agent", "rotor-bench")
                .send()
                .await?
                .json()
                .await?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(key["key"].as_str().ok_or("no key")?)?;
            let pk = crypto_box::PublicKey::try_from(raw.as_slice()).map_err(|_| "bad key")?;
            let sealed = pk
                .seal(&mut crypto_box::aead::OsRng, new.as_bytes())
                .map_err(|_| "seal failed")?;
            let r = http
                .put(format!(
                    "{}/repos/acme/bench/actions/secrets/DIRECT_PASSWORD",
                    github.base_url
                ))
                .bearer_auth(&github.token)
                .header("User-Agent", "rotor-bench")
                .json(&json!({
                    "encrypted_value": base64::engine::general_purpose::STANDARD.encode(sealed),
                    "key_id": key["key_id"],
                }))
                .send()
                .await?;
            if !r.status().is_success() {
                return fail(format!("GitHub PUT answered {}", r.status()));
            }
            Ok(())
        };
        let parts_now = [
            (
                "Vault KV write",
                timed(async {
                    Ok(ctx
                        .vault
                        .kv_write("secret", &direct_path, &data, None)
                        .await?)
                })
                .await?
                .0,
            ),
            (
                "Vault KV read",
                timed(async { Ok(ctx.vault.kv_read("secret", &direct_path).await?) })
                    .await?
                    .0,
            ),
            (
                "ALTER ROLE (admin connect + SCRAM verifier)",
                timed(ctx.direct_alter(&direct_role, &new)).await?.0,
            ),
            (
                "login with the new password",
                timed(ctx.direct_login(&direct_role, &new)).await?.0,
            ),
            (
                "list the role's sessions (admin connect)",
                timed(ctx.direct_sessions(&direct_role)).await?.0,
            ),
            (
                "3 Kubernetes Secret applies",
                timed(async {
                    for s in ["direct-a", "direct-b", "direct-c"] {
                        direct_apply(&client, &name, s, &new).await?;
                    }
                    Ok(())
                })
                .await?
                .0,
            ),
            ("GitLab variable PUT", timed(gl_put).await?.0),
            ("GitHub public key GET + seal + PUT", timed(gh_put).await?.0),
            (
                "login with the old password (refused)",
                timed(ctx.direct_refused(&direct_role, &old)).await?.0,
            ),
        ];
        sums.push(parts_now.iter().map(|(_, t)| t).sum::<f64>());
        for (k, t) in parts_now {
            direct.entry(k).or_default().push(t);
        }
        old = new;
    }

    let (c_med, c_p90) = stats(&totals);
    table.info(
        B,
        format!("API call -> old refused everywhere, {trials} runs: median / p90 (ms)"),
        format!("{c_med:.1} / {c_p90:.1}"),
    );
    for (k, v) in &parts {
        table.info(
            B,
            format!("  {k} no longer takes the old value (median ms)"),
            format!("{:.1}", median(v)),
        );
    }
    for (k, v) in &direct {
        table.info(
            B,
            format!("  direct: {k} (median ms)"),
            format!("{:.2}", median(v)),
        );
    }
    let d_med = median(&sums);
    table.info(
        B,
        "direct round trips, sum (median ms)",
        format!("{d_med:.1}"),
    );
    let ratio = c_med / d_med;
    table.check(
        B,
        "compromise / direct round trips",
        format!("{ratio:.2}x"),
        "<= 2.0x",
        ratio <= 2.0,
    );

    Ok(())
}

// ---------------------------------------------------------------------------------

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (dev/test) runs this
    // binary without it, and must not start a quarter-hour benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "rotor bench: run it with dev/bench (cargo bench --bench rotation); nothing to do here"
        );
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rotor bench: {e}");
            return ExitCode::from(2);
        }
    };
    rotor::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let ctx = match Ctx::new() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rotor bench: cannot reach the stack: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut table = Table::default();
        let machine = machine();
        let load_before = load_average();
        eprintln!("[bench] machine: {machine}; load average {load_before}");
        let mut failed = Vec::new();
        if options.wants("latency")
            && let Err(e) = latency(&ctx, options.pairs, &mut table).await
        {
            failed.push(format!("latency: {e}"));
        }
        if options.wants("throughput")
            && let Err(e) = throughput(&ctx, options.roles, &mut table).await
        {
            failed.push(format!("throughput: {e}"));
        }
        if options.wants("scale")
            && let Err(e) = scale(&ctx, options.policies, options.idle, &mut table).await
        {
            failed.push(format!("scale: {e}"));
        }
        if options.wants("compromise")
            && let Err(e) = compromise(&ctx, options.trials, &mut table).await
        {
            failed.push(format!("compromise: {e}"));
        }
        ctx.clean_up().await;
        println!();
        println!("rotor benchmarks — {machine}");
        println!(
            "rotor {} (release build); OpenBao, PostgreSQL, fake Kubernetes/GitLab/GitHub on loopback",
            env!("CARGO_PKG_VERSION")
        );
        println!(
            "load average before / after: {load_before} / {}",
            load_average()
        );
        println!();
        print!("{}", table.render());
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            for f in &failed {
                eprintln!("rotor bench: {f}");
            }
            ExitCode::FAILURE
        }
    })
}
