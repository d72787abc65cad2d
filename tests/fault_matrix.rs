//! Fault matrix (issue 14): every outside system rotor calls — Vault, each target kind
//! (PostgreSQL, MariaDB, Redis, RabbitMQ's management API), the Kubernetes API, GitLab,
//! GitHub — is reached through a TCP proxy this test owns ([`rotor_testkit::Proxy`];
//! the shared services are never stopped). For each row of [`TABLE`] a rotation is
//! paused at the row's step (`ROTOR_FAILPOINT=<step>:begun:pause=<file>`), the system
//! is cut (connections reset: fast failure) or frozen (accepted, nothing forwarded: a
//! hang, as under SIGSTOP), the rotation runs into the fault, the system comes back
//! (when the run has ended, or after a hold), and `rotor rotate` runs again. Each row
//! then checks:
//!
//! - no lockout: right after the faulted run, Vault's canonical value or the open
//!   rotation's staged value authenticates at the target; after recovery the
//!   canonical value does, every earlier one is refused, and every consumer holds it;
//! - the journal and the target agree: the last rotation is completed, its promoted
//!   version is the canonical version, its fingerprint is the canonical value's;
//! - no quarantine without refusal evidence: no rotation carries a reason to
//!   quarantine (the agent's own rule) and no quarantine record exists — every fault
//!   here is an outage, never a refusal;
//! - no regeneration loop: an interrupted rotation is resumed under the same id with
//!   the same staged value, each rotation promotes exactly once, and the reuse history
//!   holds exactly one fingerprint per value.
//!
//! Rows run concurrently (bounded), one test per system. Needs `dev/stack up`.

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::kinds::{self, KindFixture, KindOptions, Setup, report, seed, text};
use futures::StreamExt;
use rotor::agent::quarantine::immediate_reason;
use rotor::credentials::AuthOutcome;
use rotor::engine::{Journal, Rotation, Status};
use rotor::secret::{Fingerprinter, SecretMap};
use rotor::vault::Vault;
use rotor_testkit::{FakeGithub, FakeGitlab, Proxy};

/// An outside system behind a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Vault,
    Postgres,
    Mariadb,
    Redis,
    Rabbitmq,
    Kubernetes,
    Gitlab,
    Github,
}

/// What happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Connections reset, new ones refused.
    Cut,
    /// Connections accepted and held, nothing forwarded.
    Freeze,
}

/// The table: each system with the steps at which it is faulted, each under both
/// faults. `planned` means "faulted before the run starts"; the others pause the run
/// as the step begins. A step is listed where the system is called in it or right
/// after it (a target is not called while staging, promoting or propagating; the
/// consumers only while propagating). `rollback`: the fault makes the test login fail,
/// the target comes back for the rollback, and the fault hits again just before the
/// rollback's check that the old credential works (see [`script`]).
const TABLE: &[(System, &[&str])] = &[
    (
        System::Vault,
        &[
            "planned",
            "staged",
            "applied",
            "tested",
            "promoted",
            "propagated",
            "revoked",
            "verified",
            "completed",
        ],
    ),
    (
        System::Postgres,
        &["planned", "applied", "tested", "rollback", "verified"],
    ),
    (
        System::Mariadb,
        &["applied", "tested", "rollback", "verified"],
    ),
    // Redis keeps the old password next to the new one until revoked (overlap).
    (
        System::Redis,
        &["applied", "tested", "rollback", "revoked", "verified"],
    ),
    (
        System::Rabbitmq,
        &["applied", "tested", "rollback", "verified"],
    ),
    (System::Kubernetes, &["propagated"]),
    (System::Gitlab, &["propagated"]),
    (System::Github, &["propagated"]),
];

/// Rows of one system run this many at a time.
const PARALLEL: usize = 3;
/// How long a cut lasts at most: until the faulted run ends (a cut must fail fast).
const CUT_HOLD: Duration = Duration::from_secs(20);
/// How long a freeze lasts at most: longer than the targets' bounded connect and login
/// timeouts (5 s; MariaDB's connect: 10 s). RabbitMQ's management requests (30 s) and
/// the other systems' clients outlast it until the call-timeout work bounds them.
const FREEZE_HOLD: Duration = Duration::from_secs(12);
/// The bound on any one `rotor` process.
const RUN_LIMIT: Duration = Duration::from_secs(150);
/// The agent-wide bound on outside calls (Vault, Kubernetes, GitLab, GitHub), set for
/// freeze rows of those systems. It comes with the call-timeout work of issue 14; until
/// then those clients' own timeouts (30 s and more) apply and the freeze simply ends
/// after [`FREEZE_HOLD`].
const CALL_TIMEOUT: (&str, &str) = ("ROTOR_CALL_TIMEOUT", "3s");

#[derive(Debug, Clone, Copy)]
struct Row {
    system: System,
    step: &'static str,
    fault: Fault,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?} at {}", self.system, self.fault, self.step)
    }
}

fn rows(system: System) -> Vec<Row> {
    TABLE
        .iter()
        .filter(|(s, _)| *s == system)
        .flat_map(|(_, steps)| steps.iter())
        .flat_map(|step| {
            [Fault::Cut, Fault::Freeze].map(|fault| Row {
                system,
                step,
                fault,
            })
        })
        .collect()
}

/// `host:port` (or a URL's) as a socket address.
fn socket(host_port: &str) -> SocketAddr {
    let rest = host_port.split_once("://").map_or(host_port, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolving {authority}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{authority} resolves to nothing"))
}

/// One row's world: a policy of the system's kind whose every outside call goes
/// through a proxy, with a Kubernetes Secret, a GitLab variable and a GitHub secret
/// as consumers.
struct World {
    fx: KindFixture,
    vault: Proxy,
    target: Proxy,
    kube: Proxy,
    gitlab: Proxy,
    github: Proxy,
    fake_gitlab: FakeGitlab,
    fake_github: FakeGithub,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

/// The stack address of the target of `system`'s kind, and the kind's setup.
fn target_of(system: System) -> SocketAddr {
    match system {
        System::Mariadb => {
            let m = rotor_testkit::mysql();
            socket(&format!("{}:{}", m.host, m.port))
        }
        System::Redis => {
            let r = rotor_testkit::redis();
            socket(&format!("{}:{}", r.host, r.port))
        }
        System::Rabbitmq => socket(
            rotor_testkit::rabbitmq()
                .url
                .as_deref()
                .expect("management URL"),
        ),
        _ => {
            let s = rotor_testkit::stack();
            socket(&format!("{}:{}", s.pg.host, s.pg.port))
        }
    }
}

async fn setup(system: System, name: String, vault: Vault) -> Setup {
    match system {
        System::Mariadb => kinds::mysql_single(&name, &vault).await,
        System::Redis => kinds::redis_user(&name, &vault).await,
        System::Rabbitmq => kinds::rabbitmq_user(&name, &vault).await,
        _ => kinds::postgres_single(&name, &vault).await,
    }
}

/// The credential lines with the target's address replaced by the proxy's.
fn through(yaml: &str, upstream: SocketAddr, proxy: SocketAddr) -> String {
    let rewritten = yaml
        .replace(
            &format!("port: {}\n", upstream.port()),
            &format!("port: {}\n", proxy.port()),
        )
        .replace(
            &format!(":{}", upstream.port()),
            &format!(":{}", proxy.port()),
        );
    assert_ne!(
        rewritten, yaml,
        "the target's address must be in the policy"
    );
    rewritten
}

impl World {
    async fn new(row: Row) -> World {
        let vault = Proxy::start(socket(&rotor_testkit::stack().vault_addr));
        let upstream = target_of(row.system);
        let target = Proxy::start(upstream);
        let fake_gitlab = FakeGitlab::start();
        fake_gitlab.add_project("acme/payments");
        let fake_github = FakeGithub::start();
        fake_github.add_repository("acme/payments");
        let gitlab = Proxy::start(socket(&fake_gitlab.base_url));
        let github = Proxy::start(socket(&fake_github.base_url));

        // Where the consumers' tokens are kept in Vault.
        let name = rotor_testkit::unique("fault-tokens");
        let vault_client = common::vault();
        let gl_ref = seed(
            &vault_client,
            &name,
            "gitlab",
            &[("token", &fake_gitlab.token)],
        )
        .await;
        let gh_ref = seed(
            &vault_client,
            &name,
            "github",
            &[("token", &fake_github.token)],
        )
        .await;
        let extra = format!(
            r#"    - type: gitlab
      url: {gl_url}
      tokenFrom: {{vault: {{path: {gl_ref}, key: token}}}}
      project: acme/payments
      key: DB_PASSWORD
      value: "{{{{ password }}}}"
    - type: github
      url: {gh_url}
      tokenFrom: {{vault: {{path: {gh_ref}, key: token}}}}
      repository: acme/payments
      name: DB_PASSWORD
      value: "{{{{ password }}}}"
"#,
            gl_url = gitlab.url(),
            gh_url = github.url(),
        );
        let system = row.system;
        let proxy_addr = target.addr;
        let prefix = format!("f-{:?}", row.system).to_lowercase();
        let fx = KindFixture::new(
            &prefix,
            KindOptions {
                extra_consumers: extra,
                ..KindOptions::default()
            },
            move |n, v| async move {
                let mut s = setup(system, n, v).await;
                s.credential_yaml = through(&s.credential_yaml, upstream, proxy_addr);
                s
            },
        )
        .await;
        let kube = Proxy::start(fx.kube.addr);
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let config = std::fs::read_to_string(&fx.kube.kubeconfig)
            .expect("kubeconfig")
            .replace(&fx.kube.url(), &fx.kube.url_via(kube.addr));
        std::fs::write(&kubeconfig, config).expect("write kubeconfig");
        World {
            fx,
            vault,
            target,
            kube,
            gitlab,
            github,
            fake_gitlab,
            fake_github,
            kubeconfig,
            dir,
        }
    }

    fn proxy(&self, system: System) -> &Proxy {
        match system {
            System::Vault => &self.vault,
            System::Kubernetes => &self.kube,
            System::Gitlab => &self.gitlab,
            System::Github => &self.github,
            _ => &self.target,
        }
    }

    /// `rotor -o json rotate` with every outside system reached through its proxy.
    fn rotate(&self, row: Row) -> tokio::process::Command {
        let mut cmd = self.fx.rotate_cmd();
        cmd.env("VAULT_ADDR", self.vault.url())
            .env("KUBECONFIG", &self.kubeconfig);
        let bounded_today = matches!(
            row.system,
            System::Postgres | System::Mariadb | System::Redis | System::Rabbitmq
        );
        if row.fault == Fault::Freeze && !bounded_today {
            cmd.env(CALL_TIMEOUT.0, CALL_TIMEOUT.1);
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn journal(&self) -> Journal {
        Journal::new(self.fx.vault.clone(), "secret", "rotor")
    }

    async fn journal_record(&self) -> Option<Rotation> {
        self.journal().load(&self.fx.name).await.expect("journal").0
    }

    async fn fingerprinter(&self) -> Fingerprinter {
        let key = self
            .fx
            .vault
            .kv_read("secret", "rotor/config/fingerprint-key")
            .await
            .expect("read the fingerprint key")
            .expect("the fingerprint key exists");
        let hex_key = key.data.expose("key").expect("key").to_owned();
        Fingerprinter::new(hex::decode(hex_key).expect("hex key"))
    }

    async fn history(&self) -> Vec<String> {
        let entry = self
            .fx
            .vault
            .kv_read_value("secret", &format!("rotor/history/{}", self.fx.name))
            .await
            .expect("read the reuse history");
        entry
            .and_then(|e| e.data.get("fingerprints").cloned())
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default()
    }

    async fn accepted(&self, value: &SecretMap) -> bool {
        matches!(self.fx.probe(value).await, AuthOutcome::Accepted)
    }
}

/// What the faulted run did.
struct Faulted {
    out: Output,
    /// The run ended while the system was still faulted.
    ended_in_fault: bool,
    /// How long the fault lasted.
    lasted: Duration,
}

fn apply(proxy: &Proxy, fault: Fault) {
    match fault {
        Fault::Cut => proxy.cut(),
        Fault::Freeze => proxy.freeze(),
    }
}

/// What the test does when the run reaches a pause point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fault,
    Restore,
}

/// The pause points of a row, in the order the run reaches them, and what the test
/// does at each (none for `planned`: the fault is there from the start).
fn script(row: Row) -> Vec<(String, Action)> {
    match row.step {
        "planned" => Vec::new(),
        "rollback" => vec![
            ("tested:begun".into(), Action::Fault),
            ("tested:effect".into(), Action::Restore),
            ("rollback:effect".into(), Action::Fault),
        ],
        step => vec![(format!("{step}:begun"), Action::Fault)],
    }
}

/// Runs `rotor rotate` into the row's fault and restores the system.
async fn faulted_run(w: &World, row: Row) -> Faulted {
    let proxy = w.proxy(row.system);
    let script = script(row);
    let pauses: Vec<PathBuf> = (0..script.len())
        .map(|i| w.dir.path().join(format!("pause{i}")))
        .collect();
    let mut cmd = w.rotate(row);
    if script.is_empty() {
        apply(proxy, row.fault);
    } else {
        let points: Vec<String> = script
            .iter()
            .zip(&pauses)
            .map(|((point, _), file)| {
                std::fs::write(file, b"").expect("pause file");
                format!("{point}:pause={}", file.display())
            })
            .collect();
        cmd.env("ROTOR_FAILPOINT", points.join(","));
    }
    let child = cmd.spawn().expect("start rotor");
    let mut run =
        tokio::spawn(
            async move { tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await },
        );
    for ((point, action), pause) in script.iter().zip(&pauses) {
        let mut reached = pause.clone().into_os_string();
        reached.push(".reached");
        let deadline = Instant::now() + RUN_LIMIT;
        while !std::path::Path::new(&reached).exists() {
            if run.is_finished() {
                let out = run.await.expect("join").expect("bounded").expect("output");
                panic!("{row}: rotor ended before {point}:\n{}", text(&out));
            }
            assert!(Instant::now() < deadline, "{row}: {point} is never reached");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match action {
            Action::Fault => apply(proxy, row.fault),
            Action::Restore => proxy.restore(),
        }
        std::fs::remove_file(pause).expect("release the pause");
    }
    let start = Instant::now();
    let hold = match row.fault {
        Fault::Cut => CUT_HOLD,
        Fault::Freeze => FREEZE_HOLD,
    };
    let early = tokio::time::timeout(hold, &mut run).await.ok();
    let lasted = start.elapsed();
    proxy.restore();
    let ended_in_fault = early.is_some();
    let joined = match early {
        Some(joined) => joined,
        None => run.await,
    };
    let out = joined
        .expect("join")
        .unwrap_or_else(|_| panic!("{row}: rotor did not end within {RUN_LIMIT:?}"))
        .expect("rotor output");
    Faulted {
        out,
        ended_in_fault,
        lasted,
    }
}

/// One row's result line.
struct Outcome {
    row: Row,
    line: String,
}

async fn run_row(row: Row) -> Outcome {
    let w = World::new(row).await;
    let (_, v1) = w.fx.current().await;
    let faulted = faulted_run(&w, row).await;
    let interrupted = w.journal_record().await;

    // No lockout, right after the fault: some value rotor holds in Vault works.
    let (canonical, _) = w.fx.current().await;
    if !w.accepted(&canonical).await {
        let staged = match &interrupted {
            Some(r) if r.status.is_open() => {
                let (mount, path) = r.staging.split_once('/').expect("staging path");
                w.fx.vault.kv_read(mount, path).await.expect("read staging")
            }
            _ => None,
        };
        let staged_works = match &staged {
            Some(s) => w.accepted(&s.data).await,
            None => false,
        };
        assert!(
            staged_works,
            "{row}: lockout: neither the canonical nor a staged value authenticates; journal: {interrupted:#?}\n{}",
            text(&faulted.out)
        );
    }
    // The agent would quarantine on this record: checked last, so a row shows every
    // other check first.
    let quarantine_reason = interrupted.as_ref().and_then(immediate_reason);

    let again = tokio::time::timeout(RUN_LIMIT, w.rotate(row).output())
        .await
        .unwrap_or_else(|_| panic!("{row}: the recovery run did not end"))
        .expect("run rotor again");
    assert!(
        again.status.success(),
        "{row}: the run after the fault must finish:\n{}\nfaulted run:\n{}",
        text(&again),
        text(&faulted.out)
    );
    let r = report(&again);
    let resumed: Option<Rotation> = (!r["resumed"].is_null())
        .then(|| serde_json::from_value(r["resumed"].clone()).expect("resumed rotation"));
    let rotation: Rotation = serde_json::from_value(r["rotation"].clone()).expect("rotation");
    let promoted_before = check_resume(row, interrupted.as_ref(), resumed.as_ref());
    assert_eq!(rotation.status, Status::Completed, "{row}: {r:#}");
    for rot in resumed.iter().chain([&rotation]) {
        assert_eq!(immediate_reason(rot), None, "{row}: {rot:#?}");
    }
    let quarantine = common::quarantine_store(w.fx.vault.clone())
        .get(&w.fx.name)
        .await
        .expect("read quarantine");
    assert!(quarantine.is_none(), "{row}: quarantined: {quarantine:?}");

    check_recovered(&w, row, v1, promoted_before, &rotation).await;
    let secrets = w.fx.all_secrets().await;
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&text(&faulted.out), &refs);
    rotor_testkit::assert_no_secret(&text(&again), &refs);

    assert_eq!(
        quarantine_reason,
        None,
        "{row}: quarantine without refusal evidence (an outage is not a refusal): {:#?}",
        interrupted.as_ref().map(|r| &r.verification)
    );
    let state = |r: &Rotation| format!("{} at {:?}", r.status.as_str(), r.next_step());
    Outcome {
        row,
        line: format!(
            "exit {:?}, ended {} the fault ({:.1} s); journal then: {}; recovery resumed: {}",
            faulted.out.status.code(),
            if faulted.ended_in_fault {
                "during"
            } else {
                "after"
            },
            faulted.lasted.as_secs_f64(),
            interrupted.as_ref().map_or("none".into(), state),
            resumed.as_ref().map_or("-", |r| r.status.as_str()),
        ),
    }
}

/// The interrupted rotation is the one resumed, with the same staged value; returns
/// whether the interrupted rotation promoted (once resumed).
fn check_resume(row: Row, interrupted: Option<&Rotation>, resumed: Option<&Rotation>) -> bool {
    let Some(before) = interrupted else {
        assert!(resumed.is_none(), "{row}: nothing was open to resume");
        return false;
    };
    if !before.status.is_open() {
        assert!(resumed.is_none(), "{row}: a closed rotation is not resumed");
        // An outage during verification leaves the rotation failed, never completed
        // without proof.
        if before.status == Status::Failed {
            assert!(
                before
                    .verification
                    .iter()
                    .all(|v| v.evidence.starts_with("inconclusive")),
                "{row}: {before:#?}"
            );
        }
        return before.promoted_version.is_some();
    }
    let after = resumed.unwrap_or_else(|| panic!("{row}: the open rotation must be resumed"));
    assert_eq!(after.rotation_id, before.rotation_id, "{row}");
    if before.new_fingerprint.is_some() {
        assert_eq!(
            after.new_fingerprint, before.new_fingerprint,
            "{row}: a resumed rotation keeps its staged value (no regeneration)"
        );
    }
    assert!(
        matches!(after.status, Status::Completed | Status::RolledBack),
        "{row}: {after:#?}"
    );
    after.promoted_version.is_some()
}

/// After recovery: the journal and the target agree, nothing was promoted twice, the
/// history holds one fingerprint per value, and every consumer holds the value.
async fn check_recovered(w: &World, row: Row, v1: u64, promoted_before: bool, last: &Rotation) {
    let (current, latest) = w.fx.current().await;
    let promotions = 1 + u64::from(promoted_before);
    assert_eq!(latest, v1 + promotions, "{row}: one promotion per rotation");
    let journal = w.journal_record().await.expect("journal record");
    assert_eq!(journal.rotation_id, last.rotation_id, "{row}");
    assert_eq!(journal.status, Status::Completed, "{row}");
    assert_eq!(journal.promoted_version, Some(latest), "{row}");
    let fp = w.fingerprinter().await;
    assert_eq!(
        journal.new_fingerprint.as_deref(),
        Some(fp.fingerprint_map(&current).as_str()),
        "{row}: the journal's value is the canonical one"
    );
    let history = w.history().await;
    let mut unique = history.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), history.len(), "{row}: {history:?}");
    assert_eq!(
        history.len() as u64,
        promotions + 1,
        "{row}: one fingerprint per value (initial + each promoted one)"
    );
    w.fx.assert_consistent().await;
    let password = current.expose("password").expect("password");
    let gl = w
        .fake_gitlab
        .variable("acme/payments", "DB_PASSWORD", "*")
        .expect("GitLab variable");
    assert_eq!(gl.value, password, "{row}: GitLab");
    let gh = w
        .fake_github
        .secret("acme/payments", "DB_PASSWORD")
        .expect("GitHub secret");
    assert_eq!(gh.plaintext, password, "{row}: GitHub");
}

/// Runs every row of `system`, a few at a time, and fails with every failed row.
async fn matrix(system: System) {
    let started = Instant::now();
    let results: Vec<(Row, Result<Outcome, String>)> = futures::stream::iter(rows(system))
        .map(|row| async move {
            let result = tokio::spawn(run_row(row)).await.map_err(|e| {
                let panic = e.into_panic();
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".into())
            });
            (row, result)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (row, result) in &results {
        match result {
            Ok(o) => println!("PASS {}: {}", o.row, o.line),
            Err(e) => {
                println!("FAIL {row}: {e}");
                failed.push(format!("{row}: {e}"));
            }
        }
    }
    println!(
        "{system:?}: {} rows in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} rows failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n\n")
    );
}

macro_rules! systems {
    ($($name:ident => $system:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            matrix($system).await;
        }
    )*};
}

systems! {
    vault => System::Vault,
    postgres => System::Postgres,
    mariadb => System::Mariadb,
    redis => System::Redis,
    rabbitmq => System::Rabbitmq,
    kubernetes => System::Kubernetes,
    gitlab => System::Gitlab,
    github => System::Github,
}
