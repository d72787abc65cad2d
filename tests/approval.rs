//! Four-eyes approval of on-demand rotations, end to end: a real `rotor run` process
//! driven over HTTP (and through `rotor rotate --server` / `rotor approve`), rotating a
//! real PostgreSQL role through real OpenBao, with a webhook receiver that checks every
//! signature. Needs `dev/stack up`.
//!
//! Identities of every test: `alice` (requester, may request compromise), `bob`
//! (approver by name), `carol` (approver through `group:security`), `mallory` (granted
//! the policy, not an approver), `oncall` (break-glass).

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::agent::{eventually, free_port};
use common::{Fixture, Options, text};
use rotor::credentials::AuthOutcome;
use rotor_testkit::{WebhookReceiver, assert_no_secret, canary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const IDENTITIES: [&str; 5] = ["alice", "bob", "carol", "mallory", "oncall"];

/// The approval section spliced into the fixture's policy.
struct Approval<'a> {
    required: u32,
    ttl: Option<&'a str>,
    /// Extra `spec` lines (e.g. a schedule).
    extra: &'a str,
}

/// A fixture whose policy requires approval, its identities' tokens, a webhook
/// receiver for the approval events, and the agent's files (kept across restarts).
struct Rig {
    fx: Fixture,
    tokens: Vec<(String, String)>,
    receiver: WebhookReceiver,
    hook_key: String,
    state: tempfile::TempDir,
}

/// A running `rotor run`; killed (and reaped) when dropped.
struct Proc {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rig {
    async fn new(prefix: &str, approval: Approval<'_>) -> Rig {
        let fx = Fixture::new(prefix, Options::default()).await;
        let state = tempfile::tempdir().expect("agent dir");
        let hook_key = canary();
        let key_file = state.path().join("hook.key");
        std::fs::write(&key_file, &hook_key).expect("key file");
        let receiver = WebhookReceiver::start(&hook_key);
        let policy = fx.policy_dir().join("policy.yaml");
        let mut yaml = std::fs::read_to_string(&policy).expect("policy");
        yaml.push_str(&format!(
            "  onDemand:\n    approval:\n      required: {}\n      approvers: [bob, \"group:security\"]\n{}  notify:\n    - url: {}\n      secretFrom: {{file: {}}}\n      events: [approval_requested, approval_expired]\n{}",
            approval.required,
            approval
                .ttl
                .map(|t| format!("      ttl: {t}\n"))
                .unwrap_or_default(),
            receiver.url,
            key_file.display(),
            approval.extra,
        ));
        std::fs::write(&policy, yaml).expect("write policy");

        let mut tokens = Vec::new();
        let mut config = String::from("identities:\n");
        for name in IDENTITIES {
            let token = format!("tok{}", canary());
            let file = state.path().join(format!("{name}.token"));
            std::fs::write(&file, &token).expect("token file");
            config.push_str(&format!(
                "  - name: {name}\n    tokenFrom: {{file: {}}}\n    policies: [\"*\"]\n",
                file.display()
            ));
            match name {
                "alice" => config.push_str("    compromise: true\n"),
                "carol" => config.push_str("    groups: [security]\n"),
                "oncall" => config.push_str("    compromise: true\n    breakGlass: true\n"),
                _ => {}
            }
            tokens.push((name.to_owned(), token));
        }
        std::fs::write(state.path().join("auth.yaml"), config).expect("auth config");
        Rig {
            fx,
            tokens,
            receiver,
            hook_key,
            state,
        }
    }

    fn token(&self, name: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|(n, _)| n == name)
            .expect("identity")
            .1
    }

    fn audit_path(&self) -> PathBuf {
        self.state.path().join("audit.jsonl")
    }

    /// Starts `rotor run` (again: same audit log, same Vault state).
    async fn start(&self, extra_args: &[&str]) -> Proc {
        let port = free_port();
        let log = self.state.path().join(format!("agent-{port}.log"));
        let child = self
            .fx
            .rotor()
            .args(["-vv", "run", "--policies"])
            .arg(self.fx.policy_dir())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--audit-log")
            .arg(self.audit_path())
            .arg("--auth-config")
            .arg(self.state.path().join("auth.yaml"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start rotor run");
        let agent = Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let url = format!("{}/readyz", agent.base);
        eventually(WAIT, "rotor run to become ready", || async {
            let ok = reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
        agent
    }

    async fn call(
        &self,
        agent: &Proc,
        who: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", agent.base))
            .bearer_auth(self.token(who));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API call");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn rotate(&self, agent: &Proc, who: &str, body: Value) -> (u16, Value) {
        let path = format!("/v1/policies/{}/rotate", self.fx.name);
        self.call(agent, who, reqwest::Method::POST, &path, Some(body))
            .await
    }

    async fn approve(&self, agent: &Proc, who: &str, id: &str) -> (u16, Value) {
        let path = format!("/v1/requests/{id}/approve");
        let body = json!({"reason": format!("checked by {who}")});
        self.call(agent, who, reqwest::Method::POST, &path, Some(body))
            .await
    }

    async fn request(&self, agent: &Proc, who: &str, id: &str) -> (u16, Value) {
        let path = format!("/v1/requests/{id}");
        self.call(agent, who, reqwest::Method::GET, &path, None)
            .await
    }

    /// Polls the policy until its last rotation has `status`, and returns that view.
    async fn rotated(&self, agent: &Proc, who: &str, rotation_status: &str) -> Value {
        let path = format!("/v1/policies/{}", self.fx.name);
        eventually(WAIT, "the approved rotation to end", || async {
            let (code, view) = self
                .call(agent, who, reqwest::Method::GET, &path, None)
                .await;
            (code == 200
                && view["last_rotation"]["status"] == rotation_status
                && view["state"] == "idle")
                .then_some(view)
        })
        .await
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit JSON line"))
            .collect()
    }

    /// Asserts that no password, token or webhook key appears in any output.
    async fn assert_no_leaks(&self, agents: &[&Proc]) {
        let mut secrets = self.fx.all_passwords().await;
        secrets.extend(self.tokens.iter().map(|(_, t)| t.clone()));
        secrets.push(self.hook_key.clone());
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        for agent in agents {
            let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
            assert_no_secret(&log, &refs);
        }
        let audit = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        assert_no_secret(&audit, &refs);
        for d in self.receiver.deliveries() {
            assert_no_secret(&d.raw, &refs);
        }
    }

    /// The old password is refused with 28P01, Vault's current one logs in, and the
    /// Secret holds it.
    async fn assert_rotated_from(&self, old: &str) {
        let (current, _) = self.fx.current().await;
        assert_ne!(current, old, "the password changed");
        match self.fx.login(old).await {
            AuthOutcome::Rejected { code, .. } => assert_eq!(code, "28P01"),
            other => panic!("the old password must be refused with 28P01, got {other:?}"),
        }
        self.fx.assert_consistent().await;
    }

    fn log(&self, agent: &Proc) -> String {
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    }
}

fn pending_id(answer: &Value) -> String {
    assert_eq!(answer["state"], "pending_approval", "{answer}");
    answer["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned()
}

/// Waits for `event` about request `id` at the receiver.
async fn delivery(receiver: &WebhookReceiver, event: &str, id: &str) -> Value {
    eventually(
        WAIT,
        &format!("a signed {event} webhook for {id}"),
        || async {
            receiver
                .deliveries()
                .into_iter()
                .find(|d| d.event == event && d.body["request_id"] == id)
                .map(|d| d.body)
        },
    )
    .await
}

fn audited_rotations(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_second_identity_approves_and_the_rotation_runs() {
    let rig = Rig::new(
        "approve",
        Approval {
            required: 1,
            ttl: Some("1h"),
            extra: "",
        },
    )
    .await;
    let (old, version) = rig.fx.current().await;
    let agent = rig.start(&[]).await;

    let (code, answer) = rig
        .rotate(
            &agent,
            "alice",
            json!({"reason": "leaked in a CI log", "ticket": "INC-9"}),
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    let id = pending_id(&answer);
    assert_eq!(answer["required"], 1);
    assert!(answer["expires_at"].is_string(), "{answer}");
    assert!(
        answer.get("rotation_id").is_none(),
        "nothing started: {answer}"
    );
    let requested = delivery(&rig.receiver, "approval_requested", &id).await;
    assert_eq!(requested["policy"], rig.fx.name.as_str());
    assert_eq!(requested["actor"], "api:alice");
    assert_eq!(requested["status"], "pending");
    assert_eq!(requested["reason"], "leaked in a CI log");
    assert!(
        requested["detail"]
            .as_str()
            .is_some_and(|d| d.contains("bob") && d.contains("group:security")),
        "{requested}"
    );

    // Visible to identities granted the policy; nothing has changed yet.
    let (code, record) = rig.request(&agent, "bob", &id).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["state"], "pending");
    assert_eq!(record["requester"], "api:alice");
    assert_eq!(record["ticket"], "INC-9");
    assert_eq!(record["approvals"], json!([]));
    assert_eq!(rig.fx.current().await, (old.clone(), version));

    // The requester cannot approve, nor can someone who is not an approver.
    let (code, refused) = rig.approve(&agent, "alice", &id).await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot approve your own request")),
        "{refused}"
    );
    let (code, refused) = rig.approve(&agent, "mallory", &id).await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an approver")),
        "{refused}"
    );
    let (code, _) = rig
        .request(&agent, "bob", "01J0000000000000000000000X")
        .await;
    assert_eq!(code, 404);

    // bob approves: the rotation is queued as alice's.
    let (code, approved) = rig.approve(&agent, "bob", &id).await;
    assert_eq!(code, 200, "{approved}");
    assert_ne!(approved["state"], "pending_approval", "{approved}");
    assert_eq!(approved["request_id"], id.as_str());
    assert_eq!(approved["approvals"], 1);

    // Single use: carol (an approver through her group) is too late, also via the CLI.
    let (code, gone) = rig.approve(&agent, "carol", &id).await;
    assert_eq!(code, 410, "{gone}");
    assert_eq!(gone["reason"], "used");
    let out = rig
        .fx
        .rotor()
        .args(["approve", &id, "--server", &agent.base])
        .env("ROTOR_TOKEN", rig.token("carol"))
        .output()
        .expect("rotor approve");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("already approved and used"),
        "{}",
        text(&out)
    );

    let view = rig.rotated(&agent, "alice", "completed").await;
    assert_eq!(view["last_rotation"]["trigger"], "on_demand");
    rig.assert_rotated_from(&old).await;
    let rotation_id = view["last_rotation"]["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_owned();
    let record = eventually(WAIT, "the request to name its rotation", || async {
        let (_, r) = rig.request(&agent, "bob", &id).await;
        (r["rotation_id"] == rotation_id.as_str()).then_some(r)
    })
    .await;
    assert_eq!(record["state"], "used");
    assert_eq!(record["approvals"][0]["identity"], "api:bob");
    assert_eq!(record["approvals"][0]["reason"], "checked by bob");

    // The evidence: who asked, who approved, no break-glass.
    let events = rig.audit();
    let requested = audited_rotations(&events, "rotation_requested");
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["actor"], "api:alice");
    assert_eq!(requested[0]["approver"], json!(["api:bob"]));
    assert_eq!(requested[0]["break_glass"], false);
    assert_eq!(requested[0]["trigger"], "on_demand");
    let ended = audited_rotations(&events, "rotation_ended");
    let rotation = &ended.last().expect("rotation_ended")["rotation"];
    assert_eq!(rotation["actor"], "api:alice");
    assert_eq!(rotation["approvers"], json!(["api:bob"]));
    assert_eq!(rotation["approval_request"], id.as_str());
    assert!(rotation.get("break_glass").is_none(), "{rotation}");
    // Every approval call is audited: authorized first, then its answer.
    let answers: Vec<(String, u64)> = events
        .iter()
        .filter(|e| {
            e["event"] == "request"
                && e["outcome"] != "authorized"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("{id}/approve")))
        })
        .map(|e| {
            (
                e["identity"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("alice", 403),
        ("mallory", 403),
        ("bob", 200),
        ("carol", 410),
        ("carol", 410),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), *s))
    .collect();
    assert_eq!(answers, expected);
    let out = rig
        .fx
        .rotor()
        .args(["audit", "verify"])
        .arg(rig.audit_path())
        .output()
        .expect("rotor audit verify");
    assert!(out.status.success(), "{}", text(&out));
    assert!(rig.receiver.rejected().is_empty());
    rig.assert_no_leaks(&[&agent]).await;
}

#[tokio::test]
async fn an_unapproved_request_expires_once_with_a_signed_notification() {
    // No ttl in the policy: the agent's --approval-ttl applies.
    let rig = Rig::new(
        "approve-ttl",
        Approval {
            required: 1,
            ttl: None,
            extra: "",
        },
    )
    .await;
    let (old, version) = rig.fx.current().await;
    let agent = rig.start(&["--approval-ttl", "2s"]).await;

    // `rotor rotate --server` says approval is needed and prints the request id.
    let out = rig
        .fx
        .rotor()
        .args(["rotate", &rig.fx.name, "--server", &agent.base])
        .args(["--reason", "quarterly"])
        .env("ROTOR_TOKEN", rig.token("alice"))
        .output()
        .expect("rotor rotate --server");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("requires approval"), "{stdout}");
    let id = stdout
        .split_whitespace()
        .skip_while(|w| *w != "request")
        .nth(1)
        .expect("the request id is printed")
        .to_owned();
    assert_eq!(id.len(), 26, "a ULID: {stdout}");

    // Expired by the agent's own clock.
    let record = eventually(WAIT, "the request to expire", || async {
        let (_, r) = rig.request(&agent, "bob", &id).await;
        (r["state"] == "expired").then_some(r)
    })
    .await;
    assert!(record["approvals"].as_array().is_some_and(Vec::is_empty));
    let (code, gone) = rig.approve(&agent, "bob", &id).await;
    assert_eq!(code, 410, "{gone}");
    assert_eq!(gone["reason"], "expired");
    let expired = delivery(&rig.receiver, "approval_expired", &id).await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["actor"], "api:alice");
    assert_eq!(expired["policy"], rig.fx.name.as_str());

    // A second request expires too; by then the first has been notified only once.
    let (code, answer) = rig
        .rotate(&agent, "alice", json!({"reason": "again"}))
        .await;
    assert_eq!(code, 202, "{answer}");
    let second = pending_id(&answer);
    delivery(&rig.receiver, "approval_expired", &second).await;
    let per_request = |rid: &str| {
        rig.receiver
            .deliveries()
            .iter()
            .filter(|d| d.event == "approval_expired" && d.body["request_id"] == rid)
            .count()
    };
    assert_eq!(per_request(&id), 1);
    assert_eq!(per_request(&second), 1);
    assert!(
        rig.receiver.rejected().is_empty(),
        "{:?}",
        rig.receiver.rejected()
    );

    // Nothing rotated, and the expiry is in the audit trail.
    assert_eq!(rig.fx.current().await, (old, version));
    let events = rig.audit();
    assert!(audited_rotations(&events, "rotation_requested").is_empty());
    assert!(
        events.iter().any(|e| e["event"] == "agent"
            && e["action"] == "approval_expired"
            && e["detail"].as_str().is_some_and(|d| d.contains(&id))),
        "{events:?}"
    );
    rig.assert_no_leaks(&[&agent]).await;
}

#[tokio::test]
async fn a_pending_request_survives_a_restart_and_a_newer_one_supersedes_it() {
    let rig = Rig::new(
        "approve-restart",
        Approval {
            required: 2,
            ttl: Some("1h"),
            extra: "",
        },
    )
    .await;
    let (old, _) = rig.fx.current().await;
    let first_agent = rig.start(&[]).await;

    let (_, answer) = rig
        .rotate(&first_agent, "alice", json!({"reason": "first"}))
        .await;
    let first = pending_id(&answer);
    assert_eq!(answer["required"], 2);
    let (_, answer) = rig
        .rotate(&first_agent, "alice", json!({"reason": "second"}))
        .await;
    let second = pending_id(&answer);
    let superseded = delivery(&rig.receiver, "approval_expired", &first).await;
    assert_eq!(superseded["status"], "superseded");
    let (code, gone) = rig.approve(&first_agent, "bob", &first).await;
    assert_eq!(code, 410, "{gone}");
    assert_eq!(gone["reason"], "superseded");

    // One of two approvals, then the agent dies.
    let (code, partial) = rig.approve(&first_agent, "bob", &second).await;
    assert_eq!(code, 200, "{partial}");
    assert_eq!(partial["state"], "pending_approval");
    assert_eq!(
        (partial["approvals"].clone(), partial["required"].clone()),
        (json!(1), json!(2))
    );
    // Approving twice counts once.
    let (code, again) = rig.approve(&first_agent, "bob", &second).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["approvals"], 1);
    let mut first_agent = first_agent;
    first_agent.child.kill().expect("kill the agent");
    first_agent.child.wait().expect("reap the agent");

    // The restarted agent reads the request back from Vault.
    let agent = rig.start(&[]).await;
    let (code, record) = rig.request(&agent, "carol", &second).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["state"], "pending");
    assert_eq!(record["approvals"][0]["identity"], "api:bob");
    let (code, gone) = rig.approve(&agent, "carol", &first).await;
    assert_eq!((code, gone["reason"].clone()), (410, json!("superseded")));
    // The second approval (carol, through group:security) starts the rotation.
    let out = rig
        .fx
        .rotor()
        .args([
            "approve",
            &second,
            "--server",
            &agent.base,
            "--reason",
            "ok",
        ])
        .env("ROTOR_TOKEN", rig.token("carol"))
        .output()
        .expect("rotor approve");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the rotation is"), "{}", text(&out));
    rig.rotated(&agent, "alice", "completed").await;
    rig.assert_rotated_from(&old).await;

    let events = rig.audit();
    let requested = audited_rotations(&events, "rotation_requested");
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["approver"], json!(["api:bob", "api:carol"]));
    assert_eq!(requested[0]["reason"], "second");
    assert!(rig.receiver.rejected().is_empty());
    rig.assert_no_leaks(&[&first_agent, &agent]).await;
}

#[tokio::test]
async fn break_glass_skips_approval_for_a_compromise_only() {
    let rig = Rig::new(
        "approve-glass",
        Approval {
            required: 1,
            ttl: Some("1h"),
            extra: "",
        },
    )
    .await;
    let (old, version) = rig.fx.current().await;
    let agent = rig.start(&[]).await;

    // alice may request compromise rotations, but is not break-glass: she waits.
    let (code, answer) = rig
        .rotate(
            &agent,
            "alice",
            json!({"reason": "leak", "compromise": true}),
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    let waiting = pending_id(&answer);
    let (_, record) = rig.request(&agent, "bob", &waiting).await;
    assert_eq!(record["compromise"], true);
    // oncall's plain on-demand request waits as well.
    let (code, answer) = rig
        .rotate(&agent, "oncall", json!({"reason": "routine"}))
        .await;
    assert_eq!(code, 202, "{answer}");
    pending_id(&answer);
    // So does a selector request (`POST /v1/rotations`): its item names the request.
    let (code, answer) = rig
        .call(
            &agent,
            "alice",
            reqwest::Method::POST,
            "/v1/rotations",
            Some(json!({"selector": {"team": "tests"}, "reason": "bulk"})),
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let item = &answer["policies"][0];
    assert_eq!(item["state"], "pending_approval", "{answer}");
    let bulk_id = item["request_id"].as_str().expect("request id").to_owned();
    let (code, record) = rig.request(&agent, "bob", &bulk_id).await;
    assert_eq!((code, record["state"].clone()), (200, json!("pending")));
    assert_eq!(rig.fx.current().await, (old.clone(), version));

    // oncall's compromise starts at once.
    let (code, answer) = rig
        .rotate(
            &agent,
            "oncall",
            json!({"reason": "key on pastebin", "compromise": true}),
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["state"], "queued", "{answer}");
    assert!(answer.get("request_id").is_none(), "{answer}");
    let view = rig.rotated(&agent, "oncall", "completed").await;
    assert_eq!(view["last_rotation"]["trigger"], "compromise");
    rig.assert_rotated_from(&old).await;

    let events = rig.audit();
    let requested = audited_rotations(&events, "rotation_requested");
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["actor"], "api:oncall");
    assert_eq!(requested[0]["break_glass"], true);
    assert_eq!(requested[0]["approver"], Value::Null);
    let ended = audited_rotations(&events, "rotation_ended");
    assert_eq!(
        ended.last().expect("ended")["rotation"]["break_glass"],
        true
    );
    assert!(rig.log(&agent).contains("Break-glass compromise rotation"));
    rig.assert_no_leaks(&[&agent]).await;
}

#[tokio::test]
async fn scheduled_rotations_need_no_approval() {
    let rig = Rig::new(
        "approve-sched",
        Approval {
            required: 1,
            ttl: Some("1h"),
            extra: "  schedule:\n    maxAge: 2s\n",
        },
    )
    .await;
    let (old, _) = rig.fx.current().await;
    let agent = rig.start(&[]).await;
    // A pending on-demand request does not hold the schedule back.
    let (code, answer) = rig.rotate(&agent, "alice", json!({"reason": "x"})).await;
    assert_eq!(code, 202, "{answer}");
    pending_id(&answer);
    let path = format!("/v1/policies/{}", rig.fx.name);
    eventually(WAIT, "a scheduled rotation to complete", || async {
        let (_, view) = rig
            .call(&agent, "alice", reqwest::Method::GET, &path, None)
            .await;
        (view["last_rotation"]["trigger"] == "schedule"
            && view["last_rotation"]["status"] == "completed")
            .then_some(())
    })
    .await;
    let requested = audited_rotations(&rig.audit(), "rotation_requested");
    assert!(!requested.is_empty());
    for r in &requested {
        assert_eq!(r["trigger"], "schedule");
        assert_eq!(r["approver"], Value::Null);
        assert_eq!(r["break_glass"], false);
    }
    let (now, _) = rig.fx.current().await;
    assert_ne!(now, old);
    drop(agent);
    // Stopped mid-way at worst: the fixture's invariant still holds once resumed.
    let out = rig
        .fx
        .rotor()
        .args(["resume", "--policies"])
        .arg(rig.fx.policy_dir())
        .output()
        .expect("rotor resume");
    assert!(out.status.success(), "{}", text(&out));
    rig.fx.assert_consistent().await;
}
