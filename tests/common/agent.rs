//! `rotor run` as a child process for black-box tests: start it on a free loopback
//! port with an audit log and an API token, wait for it, read its API and metrics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Fixture;

/// A running `rotor run`; killed (and reaped) when dropped.
pub struct Agent {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub audit: PathBuf,
    pub log: PathBuf,
    _state: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `check` until it returns Some, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn auth_config(dir: &Path, token: &str, extra_identities: &str) -> PathBuf {
    let token_file = dir.join("api-token");
    std::fs::write(&token_file, token).expect("token file");
    let config = dir.join("auth.yaml");
    std::fs::write(
        &config,
        format!(
            "identities:\n  - name: ops\n    tokenFrom: {{file: {}}}\n    policies: [\"*\"]\n    compromise: true\n{extra_identities}",
            token_file.display()
        ),
    )
    .expect("auth config");
    config
}

impl Agent {
    pub fn start(fx: &Fixture, extra_env: &[(&str, &str)]) -> Agent {
        Self::start_with(fx, extra_env, &[])
    }

    pub fn start_with(fx: &Fixture, extra_env: &[(&str, &str)], extra_args: &[&str]) -> Agent {
        Self::start_configured(fx, extra_env, extra_args, "")
    }

    /// Like [`Agent::start_with`], with more identities (YAML list items, e.g. with
    /// `tokenFrom: {env: NAME}` and NAME in `extra_env`) after `ops`.
    pub fn start_configured(
        fx: &Fixture,
        extra_env: &[(&str, &str)],
        extra_args: &[&str],
        extra_identities: &str,
    ) -> Agent {
        let port = free_port();
        let token = format!("tok{}", rotor_testkit::canary());
        // Outside the policy directory, which the agent watches.
        let state_dir = tempfile::tempdir().expect("agent dir");
        let state = state_dir.path().to_path_buf();
        let config = auth_config(&state, &token, extra_identities);
        let audit = state.join("audit.jsonl");
        let log = state.join(format!("agent-{port}.log"));
        let mut cmd = fx.rotor();
        cmd.args(["-vv", "run", "--policies"])
            .arg(fx.policy_dir())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--audit-log")
            .arg(&audit)
            .arg("--auth-config")
            .arg(&config)
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rotor run");
        Agent {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token,
            audit,
            log,
            _state: state_dir,
        }
    }

    /// Starts an agent with `--leader-election` (in `extra_args`) while another one
    /// leads: it becomes ready (a follower serves health and metrics) and follows.
    pub async fn start_follower(
        fx: &Fixture,
        extra_env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Agent {
        let agent = Self::start_with(fx, extra_env, extra_args);
        agent.ready().await;
        eventually(Duration::from_secs(10), "the agent's view", || async {
            agent.leads().await
        })
        .await;
        assert_eq!(agent.leads().await, Some(false), "the new agent follows");
        agent
    }

    pub async fn ready(&self) {
        let url = format!("{}/readyz", self.base);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rotor run never became ready; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz` as JSON (`ready`, `leader`, `reason`), or None when it does not answer.
    pub async fn readiness(&self) -> Option<serde_json::Value> {
        reqwest::get(format!("{}/readyz", self.base))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The agent's view of leadership: `/readyz`'s `leader` and the `rotor_leader`
    /// gauge, which must agree; None when it does not answer or leadership changed
    /// while it was read (`/readyz` is read before and after the gauge).
    pub async fn leads(&self) -> Option<bool> {
        let before = self.readiness().await?;
        let metrics = self.metrics().await?;
        let ready = self.readiness().await?;
        let gauge = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rotor_leader "))?
            .trim()
            .to_owned();
        let leader = ready["leader"].as_bool()?;
        if before["leader"].as_bool() != Some(leader) {
            return None;
        }
        assert_eq!(gauge, if leader { "1" } else { "0" }, "{ready}");
        Some(leader)
    }

    /// Waits until the agent leads, for at most `limit`.
    pub async fn until_leading(&self, limit: Duration) {
        eventually(limit, "the agent to lead", || async {
            self.leads().await.filter(|l| *l).map(|_| ())
        })
        .await;
    }

    /// The `/metrics` text, or None when it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    pub async fn policies(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/v1/policies", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /v1/policies")
            .json()
            .await
            .expect("JSON")
    }

    /// `POST /v1/policies/NAME/rotate` with a reason: the status code and JSON body.
    pub async fn request_rotation(&self, policy: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/policies/{policy}/rotate", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"reason": "test"}))
            .send()
            .await
            .expect("POST rotate");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// [`Agent::request_rotation`] until the agent stops answering 409 (right after it
    /// starts leading it re-reads the journal first), for at most 20 s.
    pub async fn request_rotation_as_leader(&self, policy: &str) -> (u16, serde_json::Value) {
        eventually(Duration::from_secs(20), "the leader to accept", || async {
            let (status, body) = self.request_rotation(policy).await;
            (status != 409).then_some((status, body))
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 60 s) for the agent to exit.
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("wait for rotor run").is_none() {
            assert!(
                Instant::now() < deadline,
                "rotor run did not stop on SIGTERM; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first policy of a `/v1/policies` answer.
pub fn first(policies: &serde_json::Value) -> serde_json::Value {
    let list = policies
        .get("policies")
        .cloned()
        .unwrap_or_else(|| policies.clone());
    list.as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(serde_json::Value::Null)
}
