//! One ending, one `rotation_ended` record (issue 14, defect 7), at the agent's
//! start-up sync, with an executor that hands back what the journal would: a rotation
//! that ended before the start, one still waiting for its grace period (already
//! audited when the wait began), one that began waiting in this resume, and one still
//! rolling back. The executor reports each run's end to the evidence component as the
//! engine does ([`rotor::evidence`]); the agent itself writes no `rotation_ended`
//! record, so none is written twice. No services needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rotor::agent::{Agent, AgentConfig, Control, Executor, TokioClock};
use rotor::audit::AuditLog;
use rotor::engine::{EngineError, Rotation, RotationOutcome, RotationRequest};
use rotor::evidence::{AuditTarget, Event, Evidence, Sink};
use rotor::metrics::Metrics;
use rotor::policy::{self, ValidatedPolicy};

/// What the journal holds, and what a resume drives it to.
struct Journaled {
    /// `resume`'s answer (`None`: nothing was open).
    resumed: Option<Rotation>,
    /// The journal's record when nothing was open.
    last: Option<Rotation>,
    /// Where the runs' ends are reported, as the engine reports them.
    evidence: Evidence,
}

#[async_trait::async_trait]
impl Executor for Journaled {
    async fn rotate(
        &self,
        _policy: &ValidatedPolicy,
        _request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        Err(EngineError::Unsupported("no rotations in this test"))
    }

    async fn resume(
        &self,
        policy: &ValidatedPolicy,
        _end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        if let Some(r) = &self.resumed {
            self.evidence
                .emit(&Event::RunEnded {
                    policy,
                    rotation: r,
                })
                .expect("evidence");
        }
        Ok(self.resumed.clone())
    }

    async fn inputs(
        &self,
        _policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError> {
        Ok((None, None))
    }

    async fn journal(&self, _policy: &str) -> Result<Option<Rotation>, EngineError> {
        Ok(self.last.clone())
    }
}

fn rotation(
    id: &str,
    status: &str,
    steps: serde_json::Value,
    revoke_after: Option<&str>,
) -> Rotation {
    serde_json::from_value(serde_json::json!({
        "rotation_id": id,
        "policy": "p",
        "kind": "postgres",
        "strategy": "alternating",
        "trigger": "schedule",
        "actor": "scheduler",
        "status": status,
        "canonical": "secret/x",
        "canonical_version": 1,
        "staging": "secret/rotor/staging/p/x",
        "steps": steps,
        "revoke_after": revoke_after,
        "started_at": "2027-01-01T00:00:00Z",
        "updated_at": "2027-01-01T00:00:01Z",
    }))
    .expect("rotation JSON")
}

fn step(step: &str, outcome: &str) -> serde_json::Value {
    serde_json::json!({"step": step, "outcome": outcome, "started_at": "2027-01-01T00:00:00Z"})
}

/// A rotation waiting for its grace period (until far in the future).
fn waiting(id: &str, was_waiting: bool) -> Rotation {
    let mut r = rotation(
        id,
        "open",
        serde_json::json!([step("planned", "ok"), step("propagated", "ok")]),
        Some("2999-01-01T00:00:00Z"),
    );
    assert!(r.waiting_for_grace());
    r.was_waiting = was_waiting;
    r
}

/// Starts an agent over `exec` with an audit log, waits until its start-up sync shows
/// the policy's last rotation, stops it, and counts its `rotation_ended` records.
async fn ended_records_at_start(
    resumed: Option<Rotation>,
    last: Option<Rotation>,
    shown: &str,
) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let log = Arc::new(AuditLog::open(&path).expect("audit log"));
    let exec = Journaled {
        resumed,
        last,
        evidence: Evidence::new().with_audit(AuditTarget::Held(Arc::clone(&log))),
    };
    let set = policy::load_str(
        std::path::Path::new("p.yaml"),
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: p\nspec:\n  credential:\n    type: postgres\n    connection: {host: h, port: 5432, database: d, adminFrom: {env: X}}\n    username: app\n    strategy: alternating\n  vault:\n    path: apps/p\n",
    )
    .expect("policy");
    let agent = Agent::new(
        Arc::new(exec),
        set,
        AgentConfig {
            reload_poll: Duration::ZERO,
            ..AgentConfig::default()
        },
        Arc::new(TokioClock::new()),
        Some(log),
        Arc::new(Metrics::new("test")),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = agent.clone();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views = agent.policies().await;
        let seen = views[0]
            .last_rotation
            .as_ref()
            .is_some_and(|l| l.rotation_id == shown);
        if seen && views[0].state != "rotating" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the start-up sync never showed {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await.expect("agent task");
    std::fs::read_to_string(&path)
        .expect("read the audit log")
        .lines()
        .filter(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            e["event"] == "rotation_ended"
        })
        .count()
}

#[tokio::test]
async fn a_rotation_that_ended_before_the_start_is_not_audited_again() {
    let done = rotation(
        "01A",
        "completed",
        serde_json::json!([step("planned", "ok"), step("completed", "ok")]),
        None,
    );
    assert_eq!(ended_records_at_start(None, Some(done), "01A").await, 0);
}

#[tokio::test]
async fn a_rotation_still_waiting_for_its_grace_period_is_not_audited_again() {
    assert_eq!(
        ended_records_at_start(Some(waiting("01B", true)), None, "01B").await,
        0
    );
}

#[tokio::test]
async fn a_rotation_that_began_waiting_in_this_resume_is_audited_once() {
    assert_eq!(
        ended_records_at_start(Some(waiting("01C", false)), None, "01C").await,
        1
    );
}

#[tokio::test]
async fn a_rotation_still_rolling_back_has_not_ended() {
    let open = rotation(
        "01D",
        "rolling_back",
        serde_json::json!([step("planned", "ok"), step("tested", "failed")]),
        None,
    );
    assert_eq!(ended_records_at_start(Some(open), None, "01D").await, 0);
}
