//! An outage is no evidence against a policy (issue 14, defect 2): attempts that fail
//! only because Vault or the target gave no answer back off, but never quarantine the
//! policy, however many there are; failures with evidence still quarantine after
//! `quarantine_after` in a row. Paused time, a fake executor; no services needed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rotor::agent::{Agent, AgentConfig, Control, Executor, TokioClock};
use rotor::engine::{EngineError, Rotation, RotationOutcome, RotationRequest};
use rotor::metrics::Metrics;
use rotor::policy::{self, PolicySet, ValidatedPolicy};
use rotor::vault::VaultError;

/// How every attempt of the fake executor ends.
#[derive(Clone, Copy)]
enum Ending {
    /// Vault did not answer (a transport error): `Err` before any rotation record.
    VaultUnanswered,
    /// The rotation rolled back because the target did not answer its test login.
    TargetUnanswered,
    /// Vault refused (403): evidence, not an outage.
    VaultRefused,
}

struct Failing {
    clock: TokioClock,
    ending: Ending,
    attempts: Mutex<u32>,
}

fn rolled_back(policy: &str, n: u32) -> Rotation {
    serde_json::from_value(serde_json::json!({
        "rotation_id": format!("01JOUTAGE{n:016}"),
        "policy": policy,
        "kind": "postgres",
        "strategy": "single",
        "trigger": "schedule",
        "actor": "scheduler",
        "status": "rolled_back",
        "canonical": "secret/x",
        "canonical_version": 1,
        "staging": "secret/rotor/staging/x",
        "steps": [],
        "unanswered": true,
        "error": "tested: the new credential could not be tested: inconclusive: no login answer within 5000 ms",
        "started_at": "2027-01-01T00:00:00Z",
        "updated_at": "2027-01-01T00:00:00Z",
    }))
    .expect("rotation JSON")
}

fn vault_error(detail: &str) -> EngineError {
    EngineError::Vault(VaultError::Read {
        mount: "secret".into(),
        path: "apps/x".into(),
        detail: detail.into(),
    })
}

#[async_trait::async_trait]
impl Executor for Failing {
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        _request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        let n = {
            let mut a = self.attempts.lock().unwrap();
            *a += 1;
            *a
        };
        match self.ending {
            Ending::VaultUnanswered => Err(vault_error("transport: connection refused")),
            Ending::VaultRefused => Err(vault_error("HTTP 403: permission denied")),
            Ending::TargetUnanswered => Ok(RotationOutcome {
                resumed: None,
                rotation: Some(rolled_back(&policy.name, n)),
            }),
        }
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

    async fn journal(&self, _policy: &str) -> Result<Option<Rotation>, EngineError> {
        Ok(None)
    }
}

fn policies() -> PolicySet {
    let yaml = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: flaky\nspec:\n  credential:\n    type: postgres\n    connection: {host: h, port: 5432, database: d, adminFrom: {env: X}}\n    username: app\n  vault:\n    path: apps/flaky\n  schedule:\n    maxAge: 1h\n";
    policy::load_str(std::path::Path::new("p.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the agent for six hours of paused time; returns the attempts and the state.
async fn six_hours(ending: Ending) -> (u32, String, Option<String>) {
    let clock = TokioClock::starting_at(Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap());
    let exec = Arc::new(Failing {
        clock,
        ending,
        attempts: Mutex::new(0),
    });
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
        Arc::new(Metrics::new("test")),
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
    let view = agent.policies().await.remove(0);
    let _ = stop.send(());
    task.await.expect("the agent task ends cleanly");
    let attempts = *exec.attempts.lock().unwrap();
    (attempts, view.state.clone(), view.error.clone())
}

#[tokio::test(start_paused = true)]
async fn an_unanswering_vault_backs_off_but_never_quarantines() {
    let (attempts, state, error) = six_hours(Ending::VaultUnanswered).await;
    assert!(attempts > 10, "retried with a capped backoff: {attempts}");
    assert_ne!(state, "quarantined", "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn rotations_rolled_back_for_an_unanswering_target_never_quarantine() {
    let (attempts, state, error) = six_hours(Ending::TargetUnanswered).await;
    assert!(attempts > 10, "retried with a capped backoff: {attempts}");
    assert_ne!(state, "quarantined", "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn refusals_still_quarantine_after_three_in_a_row() {
    let (attempts, state, error) = six_hours(Ending::VaultRefused).await;
    assert_eq!(attempts, 3);
    assert_eq!(state, "quarantined", "{error:?}");
    assert!(
        error
            .unwrap_or_default()
            .contains("3 consecutive failed rotations"),
        "the reason names the count"
    );
}
