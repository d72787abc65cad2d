//! A fake [`Executor`] for the agent's scheduler tests in paused (virtual) time: it
//! records every rotation asked for and ends it as the test says, with no services.
//! [`start`] runs an agent over it until [`Running::stop`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rotor::agent::{Agent, AgentConfig, Clock, Executor, TokioClock};
use rotor::engine::{EngineError, Rotation, RotationOutcome, RotationRequest, Trigger};
use rotor::metrics::Metrics;
use rotor::policy::{self, PolicySet, ValidatedPolicy};
use rotor::vault::VaultError;

/// The id of the rotation a panicking job leaves open ([`Ending::Panic`]).
pub const OPEN_ID: &str = "01JOPENROTATION0000000000";

/// How every rotation of the fake ends (after the first `fail_first` ones, which fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Completed: the secret counts as created then.
    Completed,
    /// Vault did not answer (a transport error): `Err` before any rotation record.
    VaultUnanswered,
    /// The rotation rolled back because the target did not answer its test login.
    TargetUnanswered,
    /// Vault refused (403): evidence, not an outage.
    VaultRefused,
    /// The job panics (a rotor bug), leaving the journal's rotation `rolling_back`.
    Panic,
}

/// Records every rotation with the virtual time it started, and ends it with `ending`.
pub struct FakeExecutor {
    pub clock: TokioClock,
    pub ending: Ending,
    /// Every rotation asked for: policy, trigger, virtual time.
    pub calls: Mutex<Vec<(String, Trigger, DateTime<Utc>)>>,
    /// Fail this many rotations (status `failed`) before `ending` applies.
    pub fail_first: Mutex<u32>,
    /// What `inputs` reports as the secret's creation time (updated on completion).
    pub created: Mutex<Option<DateTime<Utc>>>,
    /// When set, `inputs` reports the secret as created this long before now instead.
    pub created_ago: Option<chrono::Duration>,
    /// Failed rotations report that the old credential was still accepted.
    pub old_accepted: AtomicBool,
    /// `(rotation id, note)` of every `note_interrupted`.
    pub notes: Mutex<Vec<(String, String)>>,
}

impl FakeExecutor {
    /// A fake whose rotations end with `ending`, reading time from `clock`; the
    /// secret is two hours old whenever it is asked (see [`FakeExecutor::created_ago`]).
    pub fn new(clock: TokioClock, ending: Ending) -> FakeExecutor {
        FakeExecutor {
            clock,
            ending,
            calls: Mutex::new(Vec::new()),
            fail_first: Mutex::new(0),
            created: Mutex::new(None),
            created_ago: Some(chrono::Duration::hours(2)),
            old_accepted: AtomicBool::new(false),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The rotations asked for so far.
    pub fn attempts(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// A rotation record of `policy` in `status`, with `extra` fields over the defaults.
pub fn rotation(policy: &str, status: &str, extra: serde_json::Value) -> Rotation {
    let mut json = serde_json::json!({
        "rotation_id": ulid::Ulid::new().to_string(),
        "policy": policy,
        "kind": "postgres",
        "strategy": "single",
        "trigger": "schedule",
        "actor": "scheduler",
        "status": status,
        "canonical": "secret/x",
        "canonical_version": 1,
        "staging": "secret/rotor/staging/x",
        "steps": [],
        "started_at": "2027-01-01T00:00:00Z",
        "updated_at": "2027-01-01T00:00:00Z",
    });
    if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
        json.extend(extra);
    }
    serde_json::from_value(json).expect("rotation JSON")
}

fn open_rotation(policy: &str, error: Option<&str>) -> Rotation {
    let extra = serde_json::json!({"rotation_id": OPEN_ID, "error": error});
    rotation(policy, "rolling_back", extra)
}

fn vault_error(detail: &str) -> EngineError {
    EngineError::Vault(VaultError::Read {
        mount: "secret".into(),
        path: "apps/x".into(),
        detail: detail.into(),
    })
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        let now = self.clock.now();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((policy.name.clone(), request.trigger, now));
            calls.len()
        };
        let trigger = serde_json::json!({"trigger": request.trigger, "actor": "test"});
        let failing = {
            let mut fail = self.fail_first.lock().unwrap();
            let failing = *fail > 0;
            *fail = fail.saturating_sub(1);
            failing
        };
        let r = if failing {
            let mut r = rotation(&policy.name, "failed", trigger);
            if self.old_accepted.load(Ordering::SeqCst) {
                r.verification.push(
                    serde_json::from_value(serde_json::json!({
                        "check": "old_credential_rejected",
                        "passed": false,
                        "evidence": "accepted",
                        "at": "2027-01-01T00:00:00Z",
                    }))
                    .expect("verification"),
                );
            }
            r
        } else {
            match self.ending {
                Ending::Completed => {
                    *self.created.lock().unwrap() = Some(now);
                    rotation(&policy.name, "completed", trigger)
                }
                Ending::VaultUnanswered => {
                    return Err(vault_error("transport: connection refused"));
                }
                Ending::VaultRefused => return Err(vault_error("HTTP 403: permission denied")),
                Ending::TargetUnanswered => rotation(
                    &policy.name,
                    "rolled_back",
                    serde_json::json!({
                        "rotation_id": format!("01JOUTAGE{n:016}"),
                        "unanswered": true,
                        "error": "tested: the new credential could not be tested: inconclusive: no login answer within 5000 ms",
                    }),
                ),
                // What `DateTime + TimeDelta` does when it leaves the calendar.
                Ending::Panic => panic!("`DateTime + TimeDelta` overflowed"),
            }
        };
        Ok(RotationOutcome {
            resumed: None,
            rotation: Some(r),
        })
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
        let created = match self.created_ago {
            Some(ago) => Some(self.clock.now() - ago),
            None => *self.created.lock().unwrap(),
        };
        Ok((created, None))
    }

    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError> {
        // A panicking rotation stays open once it has begun.
        let open = self.ending == Ending::Panic && self.attempts() > 0;
        Ok(open.then(|| open_rotation(policy, None)))
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

/// One postgres policy named `name` with the `schedule:` lines given (indented by
/// four spaces).
pub fn policies(name: &str, schedule: &str) -> PolicySet {
    let yaml = format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, port: 5432, database: d, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  schedule:\n{schedule}"
    );
    policy::load_str(std::path::Path::new("p.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("policy:\n{e}\n{yaml}"))
}

/// An agent running over a fake executor.
pub struct Running {
    pub exec: Arc<FakeExecutor>,
    pub agent: Agent,
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs an agent over `exec` with `set`, a backoff of one to ten minutes and
/// quarantine after `quarantine_after` failures.
pub fn start(exec: FakeExecutor, set: PolicySet, quarantine_after: u32) -> Running {
    let exec = Arc::new(exec);
    let metrics = Arc::new(Metrics::new("test"));
    let agent = Agent::new(
        exec.clone(),
        set,
        AgentConfig {
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            reload_poll: Duration::ZERO,
            quarantine_after,
            ..AgentConfig::default()
        },
        Arc::new(exec.clock),
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
    Running {
        exec,
        agent,
        metrics,
        stop,
        task,
    }
}

impl Running {
    /// Stops the agent and waits for its task; returns the rotations asked for.
    pub async fn stop(self) -> Vec<(String, Trigger, DateTime<Utc>)> {
        let _ = self.stop.send(());
        self.task.await.expect("the agent task ends cleanly");
        self.exec.calls.lock().unwrap().clone()
    }
}
