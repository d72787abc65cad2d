//! An outage is no evidence against a policy (issue 14, defect 2): attempts that fail
//! only because Vault or the target gave no answer back off, but never quarantine the
//! policy, however many there are; failures with evidence still quarantine after
//! `quarantine_after` in a row. Paused time, a fake executor; no services needed.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::fake_exec::{Ending, FakeExecutor, policies, start};
use rotor::agent::{Control, TokioClock};

/// Runs the agent for six hours of paused time; returns the attempts and the state.
async fn six_hours(ending: Ending) -> (usize, String, Option<String>) {
    let clock = TokioClock::starting_at(Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap());
    let run = start(
        FakeExecutor::new(clock, ending),
        policies("flaky", "    maxAge: 1h\n"),
        3,
    );
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
    let view = run.agent.policies().await.remove(0);
    let attempts = run.stop().await.len();
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
