//! A local `rotor rotate`, `retire`, `enable` and `release` leaves the same evidence
//! as the agent (issue 15): hash-chained audit records that `rotor audit verify`
//! accepts, naming the operator as Vault answers `auth/token/lookup-self` (display
//! name, entity id, policies) and how they were authenticated. The operator is a
//! userpass login of its own, not the root token. Needs the stack (`dev/stack up`).

mod common;

use std::path::Path;
use std::process::Output;

use common::kinds::{self, KindFixture, KindOptions, report, text};
use reqwest::Method;
use rotor::vault::AuthAs;
use serde_json::{Value, json};

/// An operator logged in through userpass: its token and the entity Vault made for it.
struct Operator {
    token: String,
    entity_id: String,
    policy: String,
}

/// Creates a userpass user whose policy lets it do what the local commands do, and
/// logs it in.
async fn operator(fx: &KindFixture) -> Operator {
    let vault = common::vault();
    let mount = "userpass-evidence";
    kinds::enable_auth(&vault, mount, "userpass").await;
    let policy = format!("ops-{}", fx.name);
    let hcl = "path \"*\" { capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"] }";
    let put = |path: String, body: Value| {
        let vault = vault.clone();
        async move {
            let resp = vault
                .request(Method::POST, &path, Some(&body), AuthAs::Rotor)
                .await
                .expect("Vault request");
            assert!(
                resp.is_success(),
                "{path}: HTTP {} {}",
                resp.status,
                resp.errors()
            );
            resp.json()
        }
    };
    put(
        format!("sys/policies/acl/{policy}"),
        json!({ "policy": hcl }),
    )
    .await;
    let user = fx.name.replace('-', "_");
    let password = format!("pw{}", rotor_testkit::canary());
    put(
        format!("auth/{mount}/users/{user}"),
        json!({ "password": password, "token_policies": [policy] }),
    )
    .await;
    let login = put(
        format!("auth/{mount}/login/{user}"),
        json!({ "password": password }),
    )
    .await;
    Operator {
        token: login["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_owned(),
        entity_id: login["auth"]["entity_id"]
            .as_str()
            .expect("entity")
            .to_owned(),
        policy,
    }
}

/// `rotor …` as the operator, recording to `log` (none: the default place).
fn as_operator(fx: &KindFixture, op: &Operator, log: Option<&Path>) -> std::process::Command {
    let mut cmd = fx.rotor();
    cmd.env("VAULT_TOKEN", &op.token).args(["-o", "json"]);
    if let Some(log) = log {
        cmd.env("ROTOR_AUDIT_LOG", log);
    }
    cmd
}

fn run(mut cmd: std::process::Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output().expect("run rotor");
    assert!(out.status.success(), "rotor {args:?}:\n{}", text(&out));
    out
}

/// Every record of the log, after `rotor audit verify` accepted it.
fn records(fx: &KindFixture, log: &Path) -> Vec<Value> {
    let out = fx
        .rotor()
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .expect("run rotor audit verify");
    assert!(out.status.success(), "audit verify:\n{}", text(&out));
    std::fs::read_to_string(log)
        .expect("read the audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Asserts `record` names the operator as Vault does.
fn names_operator(record: &Value, op: &Operator) {
    let id = &record["vault_identity"];
    assert_eq!(record["authenticated_by"], "vault_token", "{record:#}");
    assert_eq!(id["entity_id"], op.entity_id.as_str(), "{record:#}");
    let display = id["display_name"].as_str().expect("display name");
    assert!(!display.is_empty(), "{record:#}");
    assert!(
        id["policies"]
            .as_array()
            .expect("policies")
            .contains(&json!(op.policy)),
        "{record:#}"
    );
    let actor = record["actor"]
        .as_str()
        .or(record["retirement"]["actor"].as_str())
        .expect("actor");
    assert_eq!(actor, format!("vault:{display}"), "{record:#}");
}

fn events(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn local_rotate_retire_and_enable_leave_verified_records_naming_the_vault_identity() {
    let fx = KindFixture::new("ev-pg", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let op = operator(&fx).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let policies = fx.policy_dir();
    let policies = policies.to_str().unwrap();

    let rotated = run(
        as_operator(&fx, &op, Some(&log)),
        &[
            "rotate",
            "--policies",
            policies,
            &fx.name,
            "--reason",
            "quarterly",
            "--ticket",
            "OPS-1",
        ],
    );
    let rotation_id = report(&rotated)["rotation"]["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_owned();
    let r = records(&fx, &log);
    assert_eq!(
        events(&r),
        ["rotation_requested", "rotation_ended"],
        "{r:#?}"
    );
    names_operator(&r[0], &op);
    assert_eq!(r[0]["policy"], fx.name.as_str());
    assert_eq!(r[0]["trigger"], "on_demand");
    assert_eq!(r[0]["reason"], "quarterly");
    assert_eq!(r[0]["ticket"], "OPS-1");
    assert_eq!(r[1]["rotation"]["rotation_id"], rotation_id.as_str());
    assert_eq!(r[1]["rotation"]["status"], "completed");
    assert_eq!(r[1]["rotation"]["actor"], r[0]["actor"]);

    let retired = run(
        as_operator(&fx, &op, Some(&log)),
        &[
            "retire",
            "--policies",
            policies,
            &fx.name,
            "--reason",
            "offboarding",
        ],
    );
    let enabled = run(
        as_operator(&fx, &op, Some(&log)),
        &[
            "enable",
            "--policies",
            policies,
            &fx.name,
            "--reason",
            "back in service",
        ],
    );
    let r = records(&fx, &log);
    assert_eq!(
        events(&r),
        [
            "rotation_requested",
            "rotation_ended",
            "policy_retired",
            "rotation_requested",
            "rotation_ended",
            "policy_enabled",
        ],
        "{r:#?}"
    );
    names_operator(&r[2], &op);
    assert_eq!(r[2]["retirement"]["state"], "retired");
    names_operator(&r[3], &op);
    assert_eq!(r[3]["reason"], "enable after retirement: back in service");
    assert_eq!(r[4]["rotation"]["status"], "completed");
    names_operator(&r[5], &op);
    assert_eq!(r[5]["retirement"]["state"], "enabled");

    // Fingerprints only: no value of the credential's history is in the log.
    let written = std::fs::read_to_string(&log).expect("read the audit log");
    for secret in fx.all_secrets().await {
        assert!(!written.contains(&secret), "a secret reached the audit log");
    }
    for out in [&rotated, &retired, &enabled] {
        assert!(
            !text(out).contains(&op.token),
            "the operator's token was printed"
        );
    }
}

#[tokio::test]
async fn without_audit_log_the_records_go_to_the_documented_default_and_an_unwritable_log_stops_the_rotation()
 {
    let fx = KindFixture::new("ev-def", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let op = operator(&fx).await;
    let policies = fx.policy_dir();
    let policies = policies.to_str().unwrap();

    // The fixture's HOME is its own directory: ~/.local/state/rotor/audit.jsonl.
    run(
        as_operator(&fx, &op, None),
        &[
            "rotate",
            "--policies",
            policies,
            &fx.name,
            "--reason",
            "default log",
        ],
    );
    let default = fx.policy_dir().join(".local/state/rotor/audit.jsonl");
    let r = records(&fx, &default);
    assert_eq!(
        events(&r),
        ["rotation_requested", "rotation_ended"],
        "{r:#?}"
    );
    names_operator(&r[0], &op);

    // A log that cannot be written: nothing is started, the credential is untouched.
    let (_, before) = fx.current().await;
    let out = as_operator(&fx, &op, Some(Path::new("/nonexistent/rotor/audit.jsonl")))
        .args([
            "rotate",
            "--policies",
            policies,
            &fx.name,
            "--reason",
            "no log",
        ])
        .output()
        .expect("run rotor");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the audit log cannot be written; the rotation of"),
        "{}",
        text(&out)
    );
    let (_, after) = fx.current().await;
    assert_eq!(before, after, "the canonical copy changed without a record");
}

#[tokio::test]
async fn a_local_release_lifts_the_quarantine_in_vault_and_records_it() {
    let fx = KindFixture::new("ev-rel", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let op = operator(&fx).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let store = common::quarantine_store(common::vault());

    // Not quarantined: refused, nothing recorded.
    let out = as_operator(&fx, &op, Some(&log))
        .args(["release", &fx.name, "--reason", "checked"])
        .output()
        .expect("run rotor");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is not quarantined"), "{}", text(&out));

    let q = rotor::agent::quarantine::Quarantine {
        since: "2026-12-07T00:00:00.000Z".into(),
        reason: "3 consecutive failed rotations".into(),
        rotation_id: None,
        failures: 3,
    };
    store.set(&fx.name, Some(&q)).await.expect("quarantine");
    run(
        as_operator(&fx, &op, Some(&log)),
        &["release", &fx.name, "--reason", "target fixed"],
    );
    assert!(store.get(&fx.name).await.expect("read").is_none());
    let r = records(&fx, &log);
    assert_eq!(events(&r), ["agent"], "{r:#?}");
    assert_eq!(r[0]["action"], "released");
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("policy {} released by vault:", fx.name))
            && detail.ends_with(": target fixed"),
        "{detail}"
    );
}
