//! One ending, one record (issue 14, defect 7): an agent that starts and finds a
//! policy's last rotation already ended in the journal shows it, but neither audits
//! it again (`rotation_ended`) nor counts or notifies it again. Needs `dev/stack up`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::agent::{Agent, eventually, first};
use common::{Fixture, Options, text};
use serde_json::Value;

/// The policy's last rotation as the agent shows it: (id, status).
async fn last_rotation(agent: &Agent) -> Option<(String, String)> {
    let p = first(&agent.policies().await);
    let last = &p["last_rotation"];
    Some((
        last["rotation_id"].as_str()?.to_owned(),
        last["status"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_do_not_audit_an_ended_rotation_again() {
    let fx = Fixture::new("ended-once", Options::default()).await;
    let mut rotation_id: Option<String> = None;
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for start in 0..3 {
        let mut agent = Agent::start(&fx, &[]);
        agent.ready().await;
        match &rotation_id {
            None => {
                let (status, body) = agent.request_rotation(&fx.name).await;
                assert_eq!(status, 202, "{body}");
                let (id, status) =
                    eventually(Duration::from_secs(120), "the rotation to end", || async {
                        last_rotation(&agent)
                            .await
                            .filter(|(_, s)| s == "completed" || s == "failed")
                    })
                    .await;
                assert_eq!(status, "completed", "{}", agent.log_text());
                rotation_id = Some(id);
            }
            Some(id) => {
                // The start-up sync has read the journal once the agent shows it.
                eventually(
                    Duration::from_secs(60),
                    "the restarted agent to show the last rotation",
                    || async { last_rotation(&agent).await.filter(|(i, _)| i == id) },
                )
                .await;
            }
        }
        agent.terminate().await;
        let log = std::fs::read_to_string(&agent.audit).expect("audit log");
        let out = fx
            .rotor()
            .args(["audit", "verify"])
            .arg(&agent.audit)
            .output()
            .expect("rotor audit verify");
        assert!(out.status.success(), "{}", text(&out));
        let mut started = 0;
        for line in log.lines() {
            let e: Value = serde_json::from_str(line).expect("JSON line");
            if e["event"] == "agent" && e["action"] == "started" {
                started += 1;
            }
            if e["event"] == "rotation_ended" {
                let id = e["rotation"]["rotation_id"].as_str().expect("rotation id");
                *ended.entry(id.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(started, 1, "start {start}: one agent start per log");
    }
    let id = rotation_id.expect("a rotation ran");
    assert_eq!(
        ended,
        BTreeMap::from([(id, 1)]),
        "one rotation, three agent starts: one rotation_ended record"
    );
}
