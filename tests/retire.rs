//! `rotor retire` (offboarding) and `rotor enable` against the real services: the
//! credential is disabled on its target and its last value refused with the target's
//! own error, every consumer is emptied (read back from each store), Vault keeps every
//! version plus the retired marks, the evidence holds all of it, rotations are refused
//! until `enable` rotates to a working credential again. Also: a retirement killed
//! between steps is finished by the next run, and the agent's API route. Needs
//! `dev/stack up`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Duration;

use common::agent::{Agent, eventually, first};
use common::kinds::{self, KindFixture, KindOptions, report, seed, text};
use rotor::vault::{AuthAs, Vault};
use rotor_testkit::{FakeGithub, FakeGitlab};
use serde_json::Value;

const SIGABRT: i32 = 6;

/// The retirement record in Vault (`secret/rotor/retired/NAME`).
async fn record(vault: &Vault, name: &str) -> Value {
    let entry = vault
        .kv_read_value("secret", &format!("rotor/retired/{name}"))
        .await
        .expect("read the retirement record")
        .expect("the retirement record exists");
    entry.data["retirement"].clone()
}

/// The canonical path's KV metadata (`custom_metadata`, `versions`).
async fn metadata(vault: &Vault, path: &str) -> Value {
    vault
        .request_ok(
            reqwest::Method::GET,
            &format!("secret/metadata/{path}"),
            None,
            AuthAs::Rotor,
        )
        .await
        .expect("read metadata")
        .json()["data"]
        .clone()
}

fn assert_no_leak(fx_secrets: &[String], outs: &[&Output]) {
    let refs: Vec<&str> = fx_secrets.iter().map(String::as_str).collect();
    for out in outs {
        rotor_testkit::assert_no_secret(&text(out), &refs);
    }
}

/// Runs `rotor retire` and checks the report: retired, four steps ok in order with
/// timestamps, every consumer emptied, the target's refusal with `code`.
fn retire_ok(fx: &KindFixture) -> (Output, Value) {
    let out = fx.retire_cmd().output().expect("run rotor retire");
    assert!(out.status.success(), "rotor retire failed:\n{}", text(&out));
    let r = report(&out);
    assert_eq!(r["state"], "retired", "{r:#}");
    assert_eq!(r["reason"], "offboarding the service");
    assert_eq!(r["ticket"], "OFF-7");
    assert!(r["actor"].as_str().is_some_and(|a| a.starts_with("vault:")));
    assert!(
        r["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:")),
        "{r:#}"
    );
    let steps: Vec<(&str, &str)> = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("disabled", "ok"),
            ("consumers_removed", "ok"),
            ("marked", "ok"),
            ("verified", "ok")
        ],
        "{r:#}"
    );
    for s in r["steps"].as_array().unwrap() {
        assert!(
            s["started_at"].is_string() && s["finished_at"].is_string(),
            "{s}"
        );
    }
    for c in r["consumers"].as_array().expect("consumers") {
        assert_eq!(c["state"], "removed", "{r:#}");
    }
    let checks = r["verification"].as_array().expect("verification");
    assert!(!checks.is_empty());
    for v in checks {
        assert_eq!(v["passed"], true, "{r:#}");
        let evidence = v["evidence"].as_str().unwrap();
        assert!(
            evidence.starts_with("rejected: ") && evidence.contains(fx.rejected_code),
            "the target's own refusal ({}) is the evidence: {evidence}",
            fx.rejected_code
        );
    }
    // Step timings, visible with `--nocapture` (numbers, not assertions).
    let timing: Vec<String> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            Some(format!(
                "{} {:.1}",
                s["step"].as_str()?,
                s["duration_ms"].as_f64()?
            ))
        })
        .collect();
    eprintln!(
        "timing retire {} {}: {}",
        fx.kind,
        r["strategy"],
        timing.join(", ")
    );
    (out, r)
}

/// After a retirement: every canonical value is refused, the Secret is gone, Vault still
/// has every version and the retired marks, and a rotation is refused.
async fn assert_retired(fx: &KindFixture) -> Output {
    let (_, latest) = fx.current().await;
    for v in 1..=latest {
        let value = fx.version(v).await;
        fx.assert_rejected(&value, &format!("canonical version {v} after retire"))
            .await;
    }
    assert!(
        fx.secret_data().await.is_none(),
        "the Secret rotor created for this policy is deleted"
    );
    let meta = metadata(&fx.vault, &fx.canonical).await;
    let custom = &meta["custom_metadata"];
    assert_eq!(custom["rotor_retired_reason"], "offboarding the service");
    assert_eq!(custom["rotor_retired_ticket"], "OFF-7");
    assert_eq!(custom["rotor_retired_version"], latest.to_string());
    assert!(custom["rotor_retired_at"].is_string());
    let versions = meta["versions"].as_object().expect("versions");
    assert_eq!(versions.len() as u64, latest, "every version is kept");
    for (n, v) in versions {
        assert_eq!(v["destroyed"], false, "version {n}");
        assert_eq!(v["deletion_time"], "", "version {n}");
    }
    let stored = record(&fx.vault, &fx.name).await;
    assert_eq!(stored["state"], "retired");

    let out = fx.rotate_cmd().output().expect("run rotor rotate");
    assert!(!out.status.success(), "a retired policy must not rotate");
    assert!(
        text(&out).contains("is retired"),
        "the refusal says why:\n{}",
        text(&out)
    );
    assert_eq!(fx.current().await.1, latest, "nothing was written");
    out
}

/// `rotor enable`: the rotation it runs completes, the new value works and every
/// earlier one is refused, the Secret holds the new value, the marks are gone.
async fn enable_ok(fx: &KindFixture) -> Output {
    let (_, before) = fx.current().await;
    let out = fx.enable_cmd().output().expect("run rotor enable");
    assert!(out.status.success(), "rotor enable failed:\n{}", text(&out));
    let r = report(&out);
    assert_eq!(r["record"]["state"], "enabled", "{r:#}");
    assert_eq!(r["rotation"]["rotation"]["status"], "completed", "{r:#}");
    assert_eq!(fx.current().await.1, before + 1);
    fx.assert_consistent().await;
    let meta = metadata(&fx.vault, &fx.canonical).await;
    assert!(
        meta["custom_metadata"]
            .as_object()
            .is_none_or(|m| !m.keys().any(|k| k.starts_with("rotor_retired"))),
        "{meta:#}"
    );
    assert_eq!(record(&fx.vault, &fx.name).await["state"], "enabled");
    // Rotations work again.
    let again = fx.rotate_cmd().output().expect("run rotor rotate");
    assert!(again.status.success(), "{}", text(&again));
    fx.assert_consistent().await;
    out
}

/// One rotation first (so consumers hold rotor's value), then retire and enable.
async fn retire_and_enable(fx: &KindFixture) {
    let rotated = fx.rotate_cmd().output().expect("run rotor rotate");
    assert!(rotated.status.success(), "{}", text(&rotated));
    let (retired, _) = retire_ok(fx);
    let refused = assert_retired(fx).await;
    let enabled = enable_ok(fx).await;
    let secrets = fx.all_secrets().await;
    assert_no_leak(&secrets, &[&rotated, &retired, &refused, &enabled]);
}

struct World {
    fx: KindFixture,
    gitlab: FakeGitlab,
    github: FakeGithub,
    file: std::path::PathBuf,
    kv_path: String,
    _files: tempfile::TempDir,
}

/// PostgreSQL with all five consumer types.
async fn world(prefix: &str) -> World {
    let gitlab = FakeGitlab::start();
    gitlab.add_project("acme/payments");
    let github = FakeGithub::start();
    github.add_repository("acme/payments");
    let files = tempfile::tempdir().expect("tempdir");
    let file = files.path().join("db.env");
    let name = rotor_testkit::unique(prefix);
    let vault = common::vault();
    let gl_ref = seed(&vault, &name, "gitlab", &[("token", &gitlab.token)]).await;
    let gh_ref = seed(&vault, &name, "github", &[("token", &github.token)]).await;
    let kv_path = format!("copies/{name}");
    let extra = format!(
        r#"    - type: gitlab
      url: {gl}
      tokenFrom: {{vault: {{path: {gl_ref}, key: token}}}}
      project: acme/payments
      key: DB_PASSWORD
      value: "{{{{ password }}}}"
      masked: true
      environmentScope: production
    - type: github
      url: {gh}
      tokenFrom: {{vault: {{path: {gh_ref}, key: token}}}}
      repository: acme/payments
      name: DB_PASSWORD
      value: "{{{{ password }}}}"
    - type: vault-kv
      path: {kv_path}
      data:
        password: "{{{{ password }}}}"
    - type: file
      path: {file}
      content: "PGPASSWORD={{{{ password }}}}\n"
"#,
        gl = gitlab.base_url,
        gh = github.base_url,
        file = file.display(),
    );
    let fx = KindFixture::new(
        prefix,
        KindOptions {
            extra_consumers: extra,
            ..KindOptions::default()
        },
        |n, v| async move { kinds::postgres_single(&n, &v).await },
    )
    .await;
    World {
        fx,
        gitlab,
        github,
        file,
        kv_path,
        _files: files,
    }
}

impl World {
    async fn copy(&self) -> rotor::secret::SecretMap {
        self.fx
            .vault
            .kv_read("secret", &self.kv_path)
            .await
            .expect("read copy")
            .expect("copy exists")
            .data
    }

    async fn assert_everywhere(&self, password: &str) {
        let var = self
            .gitlab
            .variable("acme/payments", "DB_PASSWORD", "production")
            .expect("GitLab variable");
        assert_eq!(var.value, password);
        let secret = self
            .github
            .secret("acme/payments", "DB_PASSWORD")
            .expect("GitHub secret");
        assert_eq!(secret.plaintext, password);
        assert_eq!(self.copy().await.expose("password"), Some(password));
        assert_eq!(
            std::fs::read_to_string(&self.file).expect("file"),
            format!("PGPASSWORD={password}\n")
        );
        let data = self.fx.secret_data().await.expect("Kubernetes Secret");
        assert_eq!(data.get("password").map(String::as_str), Some(password));
    }

    async fn assert_nowhere(&self) {
        assert!(
            self.gitlab
                .variable("acme/payments", "DB_PASSWORD", "production")
                .is_none(),
            "GitLab variable deleted"
        );
        assert!(
            self.github.secret("acme/payments", "DB_PASSWORD").is_none(),
            "GitHub secret deleted"
        );
        let copy = self.copy().await;
        assert!(copy.get("password").is_none(), "vault-kv key removed");
        assert!(!self.file.exists(), "file removed");
        assert!(self.fx.secret_data().await.is_none(), "Secret deleted");
    }
}

#[tokio::test]
async fn postgres_with_all_five_consumers_retires_and_enables() {
    let w = world("ret-all").await;
    let fx = &w.fx;
    let rotated = fx.rotate_cmd().output().expect("run rotor rotate");
    assert!(rotated.status.success(), "{}", text(&rotated));
    let (current, v2) = fx.current().await;
    let password = current.expose("password").unwrap().to_owned();
    w.assert_everywhere(&password).await;
    let copy_versions = metadata(&fx.vault, &w.kv_path).await["current_version"]
        .as_u64()
        .unwrap();

    // A session opened with the password before the retirement is ended by it.
    let session = pg_session(
        current.expose("username").unwrap(),
        current.expose("password").unwrap(),
    )
    .await;
    session
        .simple_query("SELECT 1")
        .await
        .expect("the session works before");

    let (retired, r) = retire_ok(fx);
    assert_eq!(r["canonical_version"], v2);
    let disabled = r["steps"][0]["detail"].as_str().unwrap();
    assert!(disabled.contains("NOLOGIN"), "{disabled}");
    assert!(disabled.contains("1 session(s) ended"), "{disabled}");
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the session opened with the retired password is gone"
    );
    assert_eq!(r["kind"], "postgres");
    assert_eq!(r["consumers"].as_array().unwrap().len(), 5, "{r:#}");
    let evidence = r["verification"][0]["evidence"].as_str().unwrap();
    assert!(evidence.contains("28P01"), "{evidence}");
    // The last password is refused by PostgreSQL itself.
    match fx.probe(&current).await {
        rotor::credentials::AuthOutcome::Rejected { code, .. } => assert_eq!(code, "28P01"),
        other => panic!("the retired password must be refused with 28P01, got {other:?}"),
    }
    w.assert_nowhere().await;
    // The vault-kv copy got one new version; the earlier ones are still there.
    let copy_meta = metadata(&fx.vault, &w.kv_path).await;
    assert_eq!(copy_meta["current_version"], copy_versions + 1);
    assert_eq!(
        fx.vault
            .kv_read_version("secret", &w.kv_path, copy_versions)
            .await
            .unwrap()
            .expect("the previous copy version")
            .data
            .expose("password"),
        Some(password.as_str())
    );
    let refused = assert_retired(fx).await;
    // The record in Vault is the same evidence as the report.
    let stored = record(&fx.vault, &fx.name).await;
    assert_eq!(stored["steps"], r["steps"]);
    assert_eq!(stored["verification"], r["verification"]);
    assert_eq!(stored["fingerprint"], r["fingerprint"]);

    // Retiring again is a no-op that reports the same record.
    let again = fx.retire_cmd().output().expect("run rotor retire");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(report(&again)["started_at"], r["started_at"]);

    let enabled = enable_ok(fx).await;
    let (now, _) = fx.current().await;
    w.assert_everywhere(now.expose("password").unwrap()).await;

    let mut secrets = fx.all_secrets().await;
    secrets.push(w.gitlab.token.clone());
    secrets.push(w.github.token.clone());
    assert_no_leak(&secrets, &[&rotated, &retired, &refused, &again, &enabled]);
}

/// A retirement killed after its first step (and one killed between the disable and
/// its journal entry) is finished by the next run; nothing is done twice in a way
/// that matters and the result is the same as an uninterrupted one.
#[tokio::test]
async fn a_retirement_killed_between_steps_is_finished_by_the_next_run() {
    for point in [
        "retire_disabled:done",
        "retire_disabled:effect",
        "retire_consumers_removed:begun",
        "retire_marked:done",
    ] {
        let fx = KindFixture::new("ret-crash", KindOptions::default(), |n, v| async move {
            kinds::postgres_single(&n, &v).await
        })
        .await;
        let rotated = fx.rotate_cmd().output().expect("run rotor rotate");
        assert!(rotated.status.success(), "{}", text(&rotated));
        let (current, _) = fx.current().await;

        let out = fx
            .retire_cmd()
            .env("ROTOR_FAILPOINT", point)
            .output()
            .expect("run rotor retire");
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "rotor must die at {point}:\n{}",
            text(&out)
        );
        let half = record(&fx.vault, &fx.name).await;
        assert_eq!(half["state"], "retiring", "{point}: {half:#}");
        // The step's side effect is never ahead of the journal.
        let last = half["steps"].as_array().unwrap().last().cloned().unwrap();
        if point == "retire_disabled:effect" {
            assert_eq!(last["outcome"], "begun", "{point}: {half:#}");
        }
        // Already disabled at every one of these points.
        fx.assert_rejected(&current, &format!("{point}: the credential"))
            .await;
        // A rotation is refused while the retirement is half done.
        let rot = fx.rotate_cmd().output().expect("run rotor rotate");
        assert!(!rot.status.success(), "{point}");
        assert!(text(&rot).contains("retiring since"), "{}", text(&rot));

        let (again, r) = retire_ok(&fx);
        assert_eq!(r["runs"], 2, "{point}: {r:#}");
        assert_eq!(r["started_at"], half["started_at"], "the same retirement");
        let disabled = &r["steps"][0];
        let expect_attempts = if point == "retire_disabled:effect" {
            2
        } else {
            1
        };
        assert_eq!(disabled["attempts"], expect_attempts, "{point}: {r:#}");
        assert_retired(&fx).await;
        let secrets = fx.all_secrets().await;
        assert_no_leak(&secrets, &[&rotated, &out, &again]);
    }
}

/// An enable killed inside its rotation leaves the policy `enabling` (still no
/// rotation of its own); the next `rotor enable` finishes it.
#[tokio::test]
async fn an_enable_killed_mid_rotation_is_finished_by_the_next_run() {
    for point in ["enable:begun", "applied:done", "promoted:done"] {
        let fx = KindFixture::new("ret-encrash", KindOptions::default(), |n, v| async move {
            kinds::postgres_single(&n, &v).await
        })
        .await;
        let rotated = fx.rotate_cmd().output().expect("run rotor rotate");
        assert!(rotated.status.success(), "{}", text(&rotated));
        let (retired, _) = retire_ok(&fx);
        let out = fx
            .enable_cmd()
            .env("ROTOR_FAILPOINT", point)
            .output()
            .expect("run rotor enable");
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "rotor must die at {point}:\n{}",
            text(&out)
        );
        assert_eq!(
            record(&fx.vault, &fx.name).await["state"],
            "enabling",
            "{point}"
        );
        let rot = fx.rotate_cmd().output().expect("run rotor rotate");
        assert!(!rot.status.success(), "{point}: still refused");
        assert!(text(&rot).contains("enabling since"), "{}", text(&rot));
        let again = fx.enable_cmd().output().expect("run rotor enable");
        assert!(again.status.success(), "{point}:\n{}", text(&again));
        let r = report(&again);
        assert_eq!(r["record"]["state"], "enabled", "{point}: {r:#}");
        fx.assert_consistent().await;
        let secrets = fx.all_secrets().await;
        assert_no_leak(&secrets, &[&rotated, &retired, &out, &again]);
    }
}

#[tokio::test]
async fn postgres_alternating_retires_both_accounts() {
    let fx = KindFixture::new("ret-pgalt", KindOptions::default(), |n, v| async move {
        kinds::postgres_alternating(&n, &v).await
    })
    .await;
    // Two rotations: each account has had a password handed out.
    for _ in 0..2 {
        let out = fx.rotate_cmd().output().expect("run rotor rotate");
        assert!(out.status.success(), "{}", text(&out));
    }
    let (retired, r) = retire_ok(&fx);
    let accounts = r["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 2, "{r:#}");
    let checks: Vec<&str> = r["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["retired_credential_rejected", "other_account_rejected"],
        "both accounts proven dead: {r:#}"
    );
    let refused = assert_retired(&fx).await;
    // Both roles are NOLOGIN without a password.
    for account in accounts {
        let role = account.as_str().unwrap();
        let row = pg_role(role).await;
        assert_eq!(row, (false, false), "{role}: rolcanlogin, has password");
    }
    let enabled = enable_ok(&fx).await;
    let secrets = fx.all_secrets().await;
    assert_no_leak(&secrets, &[&retired, &refused, &enabled]);
}

/// `POST` to the agent's API with its token: status and JSON body.
async fn post(agent: &Agent, path: String, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", agent.base))
        .bearer_auth(&agent.token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or_default())
}

/// A session as `user` on the stack's PostgreSQL.
async fn pg_session(user: &str, password: &str) -> tokio_postgres::Client {
    let s = rotor_testkit::stack();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&s.pg.host)
        .port(s.pg.port)
        .user(user)
        .password(password)
        .dbname("postgres");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("a session with the current password (dev/stack up)");
    tokio::spawn(connection);
    client
}

/// `(rolcanlogin, has a password)` of a role.
async fn pg_role(role: &str) -> (bool, bool) {
    let s = rotor_testkit::stack();
    let conn = format!(
        "host={} port={} user={} password={} dbname=postgres",
        s.pg.host, s.pg.port, s.pg.admin_user, s.pg.admin_password
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("admin connection (dev/stack up)");
    let task = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("role row");
    drop(client);
    let _ = task.await;
    (row.get(0), row.get(1))
}

macro_rules! kind_tests {
    ($($name:ident => ($prefix:literal, $setup:path),)*) => {$(
        #[tokio::test]
        async fn $name() {
            let fx = KindFixture::new($prefix, KindOptions::default(), |n, v| async move {
                $setup(&n, &v).await
            })
            .await;
            retire_and_enable(&fx).await;
        }
    )*};
}

kind_tests! {
    postgres_single => ("ret-pg", kinds::postgres_single),
    mysql_single => ("ret-my", kinds::mysql_single),
    mysql_alternating => ("ret-myalt", kinds::mysql_alternating),
    redis => ("ret-redis", kinds::redis_user),
    rabbitmq => ("ret-rmq", kinds::rabbitmq_user),
    vault_userpass => ("ret-up", kinds::vault_userpass),
    vault_approle => ("ret-ar", kinds::vault_approle),
    vault_token => ("ret-tok", kinds::vault_token),
    vault_pki => ("ret-pki", kinds::vault_pki),
    http_api_key => ("ret-http", kinds::http_api_key),
}

/// Vault's static role owns a `vault-database` password: retiring it is refused with
/// a clear error before anything is changed or recorded.
#[tokio::test]
async fn vault_database_is_refused_with_a_clear_error() {
    let fx = KindFixture::new("ret-vdb", KindOptions::default(), |n, v| async move {
        kinds::vault_database(&n, &v).await
    })
    .await;
    let out = fx.retire_cmd().output().expect("run rotor retire");
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("static role") && t.contains("retire the static role in Vault"),
        "{t}"
    );
    assert!(
        fx.vault
            .kv_read_value("secret", &format!("rotor/retired/{}", fx.name))
            .await
            .unwrap()
            .is_none(),
        "nothing recorded"
    );
    let (current, _) = fx.current().await;
    fx.assert_accepted(&current, "the credential is untouched")
        .await;
    let secrets = fx.all_secrets().await;
    assert_no_leak(&secrets, &[&out]);
}

/// A Secret another manager also writes keeps its other keys and is not deleted.
#[tokio::test]
async fn a_shared_secret_keeps_the_other_keys() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let fx = KindFixture::new("ret-shared", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let rotated = fx.rotate_cmd().output().expect("run rotor rotate");
    assert!(rotated.status.success(), "{}", text(&rotated));
    let api: kube::Api<Secret> = kube::Api::namespaced(fx.kube_client.clone(), &fx.namespace);
    let foreign = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": fx.secret},
        "data": {"OTHER": "b3RoZXI="},
    });
    api.patch(
        &fx.secret,
        &PatchParams::apply("someone-else"),
        &Patch::Apply(&foreign),
    )
    .await
    .expect("another manager adds a key");
    let (out, r) = retire_ok(&fx);
    let detail = r["consumers"][0]["detail"].as_str().unwrap();
    assert!(!detail.contains("deleted"), "{detail}");
    let data = fx.secret_data().await.expect("the Secret stays");
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        ["OTHER"],
        "only the other manager's key is left"
    );
    let secrets = fx.all_secrets().await;
    assert_no_leak(&secrets, &[&rotated, &out]);
}

/// The agent's API: retire and enable through `POST /v1/policies/NAME/{retire,enable}`,
/// audited (`policy_retired` with the evidence), the policy shown `retired`, rotate
/// answered 409 meanwhile.
#[tokio::test]
async fn retire_and_enable_through_the_agent_api() {
    let fx = common::Fixture::new("ret-api", common::Options::default()).await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    // The agent resumes nothing and rotates once on demand, so consumers hold rotor's value.
    let (status, _) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(60), "the first rotation", || async {
        (fx.current().await.1 == 2 && first(&agent.policies().await)["state"] == "idle")
            .then_some(())
    })
    .await;
    let (old, _) = fx.current().await;

    // A reason is required.
    let (status, body) = post(
        &agent,
        format!("/v1/policies/{}/retire", fx.name),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = post(
        &agent,
        format!("/v1/policies/{}/retire", fx.name),
        serde_json::json!({"reason": "decommissioned", "ticket": "OFF-9"}),
    )
    .await;
    assert_eq!(status, 200, "{body:#}\n{}", agent.log_text());
    assert_eq!(body["state"], "retired", "{body:#}");
    assert_eq!(body["actor"], "api:ops", "{body:#}");
    match fx.login(&old).await {
        rotor::credentials::AuthOutcome::Rejected { code, .. } => assert_eq!(code, "28P01"),
        other => panic!("the retired password must be refused, got {other:?}"),
    }
    assert!(fx.secret_data().await.is_none(), "the Secret is deleted");
    let view = first(&agent.policies().await);
    assert_eq!(view["state"], "retired", "{view:#}");
    assert!(view["error"].as_str().unwrap().contains("decommissioned"));
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 409, "{body}");
    // A restarted agent reads the retirement from Vault.
    let audit_before_restart = std::fs::read_to_string(&agent.audit).expect("audit log");
    let log_before_restart = agent.log_text();
    drop(agent);
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let view = first(&agent.policies().await);
    assert_eq!(view["state"], "retired", "{view:#}");
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 409, "{body}");

    let retired: Vec<Value> = audit_before_restart
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "policy_retired")
        .collect();
    assert_eq!(retired.len(), 1, "{audit_before_restart}");
    let ev = &retired[0]["retirement"];
    assert_eq!(ev["state"], "retired");
    assert_eq!(ev["reason"], "decommissioned");
    assert_eq!(ev["ticket"], "OFF-9");
    assert_eq!(ev["steps"].as_array().unwrap().len(), 4);
    assert!(
        ev["verification"][0]["evidence"]
            .as_str()
            .unwrap()
            .contains("28P01")
    );
    assert!(
        ev["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );

    let (status, body) = post(
        &agent,
        format!("/v1/policies/{}/enable", fx.name),
        serde_json::json!({"reason": "back in service"}),
    )
    .await;
    assert_eq!(status, 200, "{body:#}\n{}", agent.log_text());
    assert_eq!(body["record"]["state"], "enabled", "{body:#}");
    fx.assert_consistent().await;
    let view = first(&agent.policies().await);
    assert_ne!(view["state"], "retired", "{view:#}");
    let (status, _) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202, "rotations are accepted again");
    eventually(
        Duration::from_secs(60),
        "the rotation after enable",
        || async {
            (fx.current().await.1 == 4 && first(&agent.policies().await)["state"] == "idle")
                .then_some(())
        },
    )
    .await;
    fx.assert_consistent().await;

    let audit = std::fs::read_to_string(&agent.audit).expect("audit log");
    assert!(audit.contains("\"event\":\"policy_enabled\""), "{audit}");
    let verify = fx
        .rotor()
        .args(["audit", "verify"])
        .arg(&agent.audit)
        .output()
        .expect("rotor audit verify");
    assert!(verify.status.success(), "{}", text(&verify));
    let mut secrets = fx.all_passwords().await;
    secrets.push(agent.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&log_before_restart, &refs);
    rotor_testkit::assert_no_secret(&audit_before_restart, &refs);
    rotor_testkit::assert_no_secret(&agent.log_text(), &refs);
    rotor_testkit::assert_no_secret(&audit, &refs);
}
