//! A job that panics (a rotor bug, such as the date overflow of a `maxAge` of a billion
//! weeks) is recorded, not lost: the policy is not left "rotating" forever, its open
//! rotation is noted in the journal, the panic is counted in `rotor_job_panics_total`,
//! and it is a failed attempt (backoff, then quarantine). Paused time, a fake executor;
//! no services needed.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::fake_exec::{Ending, FakeExecutor, OPEN_ID, policies, start};
use rotor::agent::{Control, TokioClock};

#[tokio::test(start_paused = true)]
async fn a_panicking_rotation_is_recorded_backed_off_and_quarantined() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let clock = TokioClock::starting_at(start_at);
    let run = start(
        FakeExecutor::new(clock, Ending::Panic),
        policies("boom", "    maxAge: 1h\n"),
        3,
    );
    let (agent, exec, metrics) = (&run.agent, &run.exec, &run.metrics);
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;

    // Three attempts, each after a backoff, then quarantine: not one attempt and a
    // policy stuck "rotating".
    let attempts: Vec<_> = exec.calls.lock().unwrap().iter().map(|c| c.2).collect();
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

    run.stop().await;
}
