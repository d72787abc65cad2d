//! A job that panics (a rotor bug, such as the date overflow of a `maxAge` of a billion
//! weeks) is recorded, not lost: the policy is not left "rotating" forever, its open
//! rotation is noted in the journal, the panic is counted in `rotor_job_panics_total`,
//! and it is a failed attempt (backoff, then quarantine). Paused time, a fake executor;
//! no services needed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rotor::agent::{Agent, AgentConfig, Control, Executor, TokioClock};
use rotor::engine::{EngineError, Rotation, RotationOutcome, RotationRequest};
use rotor::metrics::Metrics;
use rotor::policy::{self, PolicySet, ValidatedPolicy};

const OPEN_ID: &str = "01JOPENROTATION0000000000";

/// Panics in every rotation, leaving the journal's rotation `rolling_back`.
struct Panicker {
    clock: TokioClock,
    attempts: Mutex<Vec<DateTime<Utc>>>,
    /// `(rotation id, note)` of every `note_interrupted`.
    notes: Mutex<Vec<(String, String)>>,
}

fn open_rotation(policy: &str, error: Option<&str>) -> Rotation {
    serde_json::from_value(serde_json::json!({
        "rotation_id": OPEN_ID,
        "policy": policy,
        "kind": "postgres",
        "strategy": "single",
        "trigger": "schedule",
        "actor": "scheduler",
        "status": "rolling_back",
        "canonical": "secret/x",
        "canonical_version": 1,
        "staging": "secret/rotor/staging/x",
        "steps": [],
        "error": error,
        "started_at": "2027-01-01T00:00:00Z",
        "updated_at": "2027-01-01T00:00:00Z",
    }))
    .expect("rotation JSON")
}

#[async_trait::async_trait]
impl Executor for Panicker {
    async fn rotate(
        &self,
        _policy: &ValidatedPolicy,
        _request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        let now = rotor::agent::Clock::now(&self.clock);
        self.attempts.lock().unwrap().push(now);
        // What `DateTime + TimeDelta` does when it leaves the calendar.
        panic!("`DateTime + TimeDelta` overflowed");
    }

    async fn resume(
        &self,
        _policy: &ValidatedPolicy,
        _end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        Ok(None)
    }

    async fn inputs(
        &self,
        _policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError> {
        let now = rotor::agent::Clock::now(&self.clock);
        Ok((Some(now - chrono::Duration::hours(2)), None))
    }

    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError> {
        // Open once a rotation has begun (and panicked).
        let begun = !self.attempts.lock().unwrap().is_empty();
        Ok(begun.then(|| open_rotation(policy, None)))
    }

    async fn note_interrupted(
        &self,
        policy: &str,
        rotation_id: &str,
        note: &str,
    ) -> Result<Option<Rotation>, EngineError> {
        self.notes
            .lock()
            .unwrap()
            .push((rotation_id.to_owned(), note.to_owned()));
        Ok(Some(open_rotation(policy, Some(note))))
    }
}

fn policies() -> PolicySet {
    let yaml = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: boom\nspec:\n  credential:\n    type: postgres\n    connection: {host: h, port: 5432, database: d, adminFrom: {env: X}}\n    username: app\n  vault:\n    path: apps/boom\n  schedule:\n    maxAge: 1h\n";
    policy::load_str(std::path::Path::new("p.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(start_paused = true)]
async fn a_panicking_rotation_is_recorded_backed_off_and_quarantined() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let clock = TokioClock::starting_at(start_at);
    let exec = Arc::new(Panicker {
        clock,
        attempts: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
    });
    let metrics = Arc::new(Metrics::new("test"));
    let agent = Agent::new(
        exec.clone(),
        policies(),
        AgentConfig {
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            reload_poll: Duration::ZERO,
            quarantine_after: 3,
            ..AgentConfig::default()
        },
        Arc::new(clock),
        None,
        metrics.clone(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = rx.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;

    // Three attempts, each after a backoff, then quarantine: not one attempt and a
    // policy stuck "rotating".
    let attempts = exec.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (gap, full) in attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .zip([60, 120])
    {
        assert!(
            (full / 2..=full).contains(&gap),
            "gap {gap} for backoff {full}"
        );
    }
    let view = agent.policies().await.remove(0);
    assert_eq!(view.state, "quarantined", "{view:?}");
    let error = view.error.clone().unwrap_or_default();
    assert!(
        error.contains("3 consecutive failed rotations")
            && error.contains("the rotation job panicked (`DateTime + TimeDelta` overflowed)")
            && error.contains(&format!("rotation {OPEN_ID} was left rolling_back")),
        "{error}"
    );
    let last = view
        .last_rotation
        .clone()
        .expect("the open rotation is shown");
    assert_eq!(
        (last.rotation_id.as_str(), last.status.as_str()),
        (OPEN_ID, "rolling_back")
    );

    // The journal says so on the rotation itself.
    let notes = exec.notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|(id, note)| id == OPEN_ID && note.contains("panicked"))
    );

    // Counted.
    let text = metrics.encode();
    assert!(
        text.contains("rotor_job_panics_total{policy=\"boom\",task=\"rotation\"} 3"),
        "{text}"
    );

    let _ = stop.send(());
    task.await.expect("the agent task ends cleanly");
}
