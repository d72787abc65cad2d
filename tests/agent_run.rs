//! `rotor run` as a process against the real stack: on-demand rotation through the
//! API (`rotor rotate --server`), the audit trail (`rotor audit verify`), metrics read
//! back through a real Prometheus server, a kill in the middle of a rotation finished
//! by the next start, policy reloads that reject an invalid set, and SIGTERM.
//! Needs `dev/stack up` (OpenBao, PostgreSQL, promtool/prometheus).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::agent::{Agent, eventually, first, free_port};
use common::{Fixture, Options, text};

#[tokio::test]
async fn on_demand_rotation_through_the_api_is_audited_and_counted() {
    let fx = Fixture::new("agent", Options::default()).await;
    let (before, _) = fx.current().await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;

    // `rotor rotate --server` asks the agent.
    let out = fx
        .rotor()
        .args(["rotate", &fx.name, "--server", &agent.base])
        .args(["--reason", "leaked in a CI log", "--ticket", "INC-7"])
        .env("ROTOR_TOKEN", &agent.token)
        .output()
        .expect("rotor rotate --server");
    assert!(out.status.success(), "{}", text(&out));

    let view = eventually(
        Duration::from_secs(60),
        "the rotation to complete",
        || async {
            let v = first(&agent.policies().await);
            (v["last_rotation"]["status"] == "completed" && v["state"] == "idle").then_some(v)
        },
    )
    .await;
    assert_eq!(view["last_rotation"]["trigger"], "on_demand");
    let (after, _) = fx.current().await;
    assert_ne!(after, before);
    fx.assert_consistent().await;

    // `rotor status --server` shows it.
    let out = fx
        .rotor()
        .args(["-o", "json", "status", "--server", &agent.base])
        .env("ROTOR_TOKEN", &agent.token)
        .output()
        .expect("rotor status");
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["policies"][0]["name"], fx.name.as_str());

    // Metrics.
    let metrics = reqwest::get(format!("{}/metrics", agent.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!(
        "rotor_rotations_total{{kind=\"postgres\",policy=\"{}\",result=\"completed\",trigger=\"on_demand\"}} 1",
        fx.name
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");

    // The audit trail: the request, who/why, and the target's rejection of the old password.
    let audit = std::fs::read_to_string(&agent.audit).expect("audit log");
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let request = events
        .iter()
        .find(|e| e["event"] == "request" && e["method"] == "POST")
        .expect("the API request is audited");
    assert_eq!(request["identity"], "ops");
    let requested = events
        .iter()
        .find(|e| e["event"] == "rotation_requested")
        .expect("rotation_requested");
    assert_eq!(requested["actor"], "api:ops");
    assert_eq!(requested["reason"], "leaked in a CI log");
    assert_eq!(requested["ticket"], "INC-7");
    let ended = events
        .iter()
        .find(|e| e["event"] == "rotation_ended")
        .expect("rotation_ended");
    let evidence = ended["rotation"]["verification"][0]["evidence"]
        .as_str()
        .expect("evidence");
    assert!(evidence.contains("28P01"), "{evidence}");
    let out = fx
        .rotor()
        .arg("audit")
        .arg("verify")
        .arg(&agent.audit)
        .output()
        .expect("rotor audit verify");
    assert!(out.status.success(), "{}", text(&out));

    let mut secrets = fx.all_passwords().await;
    secrets.push(agent.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&agent.log_text(), &refs);
    rotor_testkit::assert_no_secret(&audit, &refs);
    rotor_testkit::assert_no_secret(&metrics, &refs);
}

#[tokio::test]
async fn a_killed_agent_finishes_the_rotation_after_a_restart() {
    let fx = Fixture::new("agent-kill", Options::default()).await;
    let (_, v1) = fx.current().await;
    // The first agent dies (abort, like SIGKILL) right after the Secret was written.
    let mut agent = Agent::start(&fx, &[("ROTOR_FAILPOINT", "propagated:effect")]);
    agent.ready().await;
    let out = fx
        .rotor()
        .args([
            "rotate",
            &fx.name,
            "--server",
            &agent.base,
            "--reason",
            "test",
        ])
        .env("ROTOR_TOKEN", &agent.token)
        .output()
        .expect("rotor rotate --server");
    assert!(out.status.success(), "{}", text(&out));
    let status = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait().expect("wait");
        (agent, s)
    });
    let (agent, exit) = status.await.expect("join");
    assert!(!exit.success(), "the agent died at the failpoint");
    let (_, v2) = fx.current().await;
    assert_eq!(v2, v1 + 1, "it had promoted before dying");
    drop(agent);

    // A new agent resumes the open rotation from the journal at start-up.
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let view = first(&agent.policies().await);
    assert_eq!(view["last_rotation"]["status"], "completed", "{view:#}");
    assert_eq!(fx.current().await.1, v2, "finished, not rotated again");
    fx.assert_consistent().await;
}

#[tokio::test]
async fn an_invalid_policy_change_is_rejected_whole_and_sigterm_exits_cleanly() {
    let fx = Fixture::new("agent-reload", Options::default()).await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let policy_file = fx.policy_dir().join("policy.yaml");
    let good = std::fs::read_to_string(&policy_file).expect("policy");
    std::fs::write(
        fx.policy_dir().join("broken.yaml"),
        "apiVersion: rotor/v1\nkind: Nope\n",
    )
    .expect("write broken policy");
    agent.signal("HUP");
    eventually(
        Duration::from_secs(30),
        "the reload to be rejected",
        || async {
            let audit = std::fs::read_to_string(&agent.audit).ok()?;
            audit.contains("\"reload_rejected\"").then_some(())
        },
    )
    .await;
    // The old set keeps running.
    assert_eq!(first(&agent.policies().await)["name"], fx.name.as_str());
    let metrics = reqwest::get(format!("{}/metrics", agent.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("rotor_policy_reloads_total") && l.contains("fail")
                || l.contains("reject")
        ),
        "{metrics}"
    );
    assert_eq!(good, std::fs::read_to_string(&policy_file).expect("policy"));

    agent.signal("TERM");
    let mut agent = agent;
    let exit = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait().expect("wait");
        drop(agent);
        s
    })
    .await
    .expect("join");
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
}

#[tokio::test]
async fn prometheus_scrapes_the_agent_and_answers_the_rotation_counter() {
    let prometheus = which("prometheus").unwrap_or_else(|| {
        panic!("prometheus not found: run dev/stack up (installs Debian prometheus)")
    });
    let fx = Fixture::new("agent-prom", Options::default()).await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let out = fx
        .rotor()
        .args([
            "rotate",
            &fx.name,
            "--server",
            &agent.base,
            "--reason",
            "test",
        ])
        .env("ROTOR_TOKEN", &agent.token)
        .output()
        .expect("rotor rotate --server");
    assert!(out.status.success(), "{}", text(&out));
    eventually(Duration::from_secs(60), "the rotation", || async {
        (first(&agent.policies().await)["last_rotation"]["status"] == "completed").then_some(())
    })
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let target = agent.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: rotor\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .expect("config");
    let mut prom = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let stderr = prom.stderr.take().expect("stderr");
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=rotor_rotations_total{{policy=\"{}\",result=\"completed\"}}",
        fx.name
    );
    let value = eventually(
        Duration::from_secs(60),
        "Prometheus to have the counter",
        || {
            let q = query.clone();
            async move {
                let body: serde_json::Value = reqwest::get(&q).await.ok()?.json().await.ok()?;
                body["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            }
        },
    )
    .await;
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(value, "1");
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn a_compromise_rotation_ends_sessions_and_sends_a_notification() {
    let fx = Fixture::new("agent-cmp", Options::default()).await;
    let (before, _) = fx.current().await;
    let key = format!("hook{}", rotor_testkit::canary());
    let receiver = rotor_testkit::WebhookReceiver::start(&key);
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("notify-key");
    std::fs::write(&key_file, &key).expect("key file");
    let agent = Agent::start_with(
        &fx,
        &[],
        &[
            "--notify-url",
            &receiver.url,
            "--notify-secret-file",
            key_file.to_str().expect("utf-8 path"),
        ],
    );
    agent.ready().await;
    let out = fx
        .rotor()
        .args(["rotate", &fx.name, "--server", &agent.base])
        .args(["--reason", "key posted in chat", "--compromise"])
        .env("ROTOR_TOKEN", &agent.token)
        .output()
        .expect("rotor rotate --server --compromise");
    assert!(out.status.success(), "{}", text(&out));
    // The receiver accepts only deliveries whose signature and timestamp check out.
    let deliveries = receiver.wait_for(1, Duration::from_secs(60)).await;
    let note = &deliveries[0];
    assert_eq!(note.event, "compromise");
    assert_eq!(note.body["policy"], fx.name.as_str());
    assert_eq!(note.body["status"], "completed");
    assert_eq!(note.body["reason"], "key posted in chat");
    let body = note.raw.clone();
    match fx.login(&before).await {
        rotor::credentials::AuthOutcome::Rejected { code, .. } => assert_eq!(code, "28P01"),
        other => panic!("the leaked password must be refused: {other:?}"),
    }
    let mut secrets = fx.all_passwords().await;
    secrets.push(agent.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&body, &refs);
}
