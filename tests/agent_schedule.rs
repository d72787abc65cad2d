//! The agent's scheduler in paused (virtual) time with a recording executor: cron in
//! Europe/Berlin across the DST changes, windows, jitter bounds, maxAge, backoff and
//! compromise priority. No services needed.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use common::fake_exec::{Ending, FakeExecutor, Running as Run, policies};
use rotor::agent::{Control, TokioClock};
use rotor::engine::{Asker, RotationRequest, Trigger};
use rotor::policy::{self, PolicySet};

fn start(
    set: PolicySet,
    start: DateTime<Utc>,
    created: Option<DateTime<Utc>>,
    fail_first: u32,
) -> Run {
    start_quarantining_after(set, start, created, fail_first, 3)
}

/// An agent whose rotations complete after `fail_first` failures, over a secret
/// created at `created` (and at each completed rotation).
fn start_quarantining_after(
    set: PolicySet,
    start: DateTime<Utc>,
    created: Option<DateTime<Utc>>,
    fail_first: u32,
    quarantine_after: u32,
) -> Run {
    let mut exec = FakeExecutor::new(TokioClock::starting_at(start), Ending::Completed);
    exec.created_ago = None;
    *exec.created.get_mut().unwrap() = created;
    *exec.fail_first.get_mut().unwrap() = fail_first;
    common::fake_exec::start(exec, set, quarantine_after)
}

async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Berlin
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .expect("a local time")
        .with_timezone(&Utc)
}

fn local_times(calls: &[(String, Trigger, DateTime<Utc>)]) -> Vec<String> {
    calls
        .iter()
        .map(|(_, _, t)| {
            t.with_timezone(&Berlin)
                .format("%m-%d %H:%M %Z")
                .to_string()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn spring_forward_runs_the_skipped_time_once_at_three() {
    // 2027-03-28: Berlin jumps from 02:00 to 03:00; 02:30 does not exist.
    let run = start(
        policies(
            "dst-spring",
            "    cron: \"30 2 * * *\"\n    timezone: Europe/Berlin\n",
        ),
        berlin(2027, 3, 27, 12, 0),
        None,
        0,
    );
    advance(Duration::from_secs(3 * 86400)).await;
    let calls = run.stop().await;
    assert_eq!(
        local_times(&calls),
        ["03-28 03:00 CEST", "03-29 02:30 CEST", "03-30 02:30 CEST"]
    );
}

#[tokio::test(start_paused = true)]
async fn fall_back_runs_the_doubled_time_once() {
    // 2027-10-31: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    let run = start(
        policies(
            "dst-fall",
            "    cron: \"30 2 * * *\"\n    timezone: Europe/Berlin\n",
        ),
        berlin(2027, 10, 30, 12, 0),
        None,
        0,
    );
    advance(Duration::from_secs(3 * 86400)).await;
    let calls = run.stop().await;
    let times = local_times(&calls);
    assert_eq!(times.len(), 3, "{times:?}");
    assert_eq!(
        times[0].split(' ').take(2).collect::<Vec<_>>(),
        ["10-31", "02:30"]
    );
    assert_eq!(times[1], "11-01 02:30 CET");
}

#[tokio::test(start_paused = true)]
async fn rotations_only_start_inside_the_window() {
    let run = start(
        policies(
            "win",
            "    cron: \"0 * * * *\"\n    timezone: Europe/Berlin\n    window: \"02:00-05:00\"\n",
        ),
        berlin(2027, 6, 1, 12, 0),
        None,
        0,
    );
    advance(Duration::from_secs(2 * 86400)).await;
    let calls = run.stop().await;
    let hours: Vec<u32> = calls
        .iter()
        .map(|(_, _, t)| chrono::Timelike::hour(&t.with_timezone(&Berlin)))
        .collect();
    assert!(!hours.is_empty());
    assert!(hours.iter().all(|h| (2..5).contains(h)), "{hours:?}");
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_bound() {
    let mut names = String::new();
    for i in 0..20 {
        names.push_str(&format!(
            "---\napiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: j{i}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, port: 5432, database: d, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/j{i}\n  schedule:\n    cron: \"0 3 * * *\"\n    timezone: Europe/Berlin\n    jitter: 10m\n"
        ));
    }
    let set = policy::load_str(std::path::Path::new("j.yaml"), &names).expect("policies");
    let run = start(set, berlin(2027, 6, 1, 12, 0), None, 0);
    advance(Duration::from_secs(86400)).await;
    let calls = run.stop().await;
    assert_eq!(calls.len(), 20);
    let base = berlin(2027, 6, 2, 3, 0);
    let offsets: Vec<i64> = calls
        .iter()
        .map(|(_, _, t)| (*t - base).num_seconds())
        .collect();
    assert!(offsets.iter().all(|s| (0..=600).contains(s)), "{offsets:?}");
    let distinct: std::collections::BTreeSet<_> = offsets.iter().collect();
    assert!(
        distinct.len() > 10,
        "jitter spreads policies out: {offsets:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_age_rotates_when_the_secret_gets_too_old() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let run = start(
        policies("age", "    maxAge: 1d\n"),
        start_at,
        Some(start_at - chrono::Duration::hours(20)),
        0,
    );
    advance(Duration::from_secs(3 * 86400)).await;
    let calls = run.stop().await;
    let times: Vec<DateTime<Utc>> = calls.iter().map(|c| c.2).collect();
    assert_eq!(
        times,
        [
            start_at + chrono::Duration::hours(4),
            start_at + chrono::Duration::hours(28),
            start_at + chrono::Duration::hours(52),
        ]
    );
    assert!(calls.iter().all(|c| c.1 == Trigger::Schedule));
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    // (Quarantine only after 10 failures here, to watch the backoff grow.)
    let run = start_quarantining_after(
        policies("flaky", "    maxAge: 1h\n"),
        start_at,
        Some(start_at - chrono::Duration::hours(2)),
        3,
        10,
    );
    advance(Duration::from_secs(3600)).await;
    let calls = run.stop().await;
    let gaps: Vec<i64> = calls
        .windows(2)
        .map(|w| (w[1].2 - w[0].2).num_seconds())
        .collect();
    // Three failures, then a success: waits of 60 s, 120 s, 240 s, each jittered
    // into [half, full].
    assert!(calls.len() >= 4, "{calls:?}");
    for (gap, full) in gaps.iter().zip([60, 120, 240]) {
        assert!(
            (full / 2..=full).contains(gap),
            "gap {gap} for backoff {full}: {gaps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn compromise_jumps_the_queue_and_on_demand_needs_a_reason() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let run = start(
        policies("od", "    cron: \"0 0 1 1 *\"\n"),
        start_at,
        None,
        0,
    );
    advance(Duration::from_secs(1)).await;
    let request = |trigger, reason: Option<&str>| RotationRequest {
        trigger,
        asker: Asker::named("api:test"),
        reason: reason.map(str::to_owned),
        ticket: None,
        ..Default::default()
    };
    let err = run
        .agent
        .rotate("od", request(Trigger::OnDemand, None))
        .await
        .expect_err("a reason is required");
    assert!(err.to_string().contains("reason"), "{err}");
    run.agent
        .rotate("od", request(Trigger::OnDemand, Some("rotate")))
        .await
        .expect("accepted");
    run.agent
        .rotate("od", request(Trigger::Compromise, Some("leaked")))
        .await
        .expect("a compromise is accepted even with one queued");
    advance(Duration::from_secs(5)).await;
    let calls = run.stop().await;
    let triggers: Vec<Trigger> = calls.iter().map(|c| c.1).collect();
    assert_eq!(
        triggers,
        [Trigger::Compromise],
        "the compromise replaced the queued request"
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_quarantine_until_released() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let run = start(
        policies("quar", "    maxAge: 1h\n"),
        start_at,
        Some(start_at - chrono::Duration::hours(2)),
        3,
    );
    // Three failures within the backoff, then nothing more for hours.
    advance(Duration::from_secs(6 * 3600)).await;
    assert_eq!(
        run.exec.calls.lock().unwrap().len(),
        3,
        "no attempt after quarantine"
    );
    let view = run.agent.policies().await.remove(0);
    assert_eq!(view.state, "quarantined");
    assert!(
        view.error
            .as_deref()
            .unwrap_or("")
            .contains("3 consecutive failed rotations"),
        "{view:?}"
    );
    // On-demand rotations are refused too; a compromise is not.
    let err = run
        .agent
        .rotate(
            "quar",
            RotationRequest {
                trigger: Trigger::OnDemand,
                asker: Asker::named("api:test"),
                reason: Some("try".into()),
                ticket: None,
                ..Default::default()
            },
        )
        .await
        .expect_err("quarantined");
    assert!(err.to_string().contains("quarantined"), "{err}");

    run.agent
        .release(
            "quar",
            "api:ops",
            "looked at it: the admin password was wrong",
        )
        .await
        .expect("release");
    advance(Duration::from_secs(60)).await;
    let calls = run.stop().await;
    assert_eq!(
        calls.len(),
        4,
        "released: the next attempt runs (and succeeds)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_credential_still_accepted_quarantines_at_once() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let run = start(
        policies("oldok", "    maxAge: 1h\n"),
        start_at,
        Some(start_at - chrono::Duration::hours(2)),
        5,
    );
    run.exec
        .old_accepted
        .store(true, std::sync::atomic::Ordering::SeqCst);
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        run.exec.calls.lock().unwrap().len(),
        1,
        "quarantined after one"
    );
    let view = run.agent.policies().await.remove(0);
    assert_eq!(view.state, "quarantined");
    assert!(
        view.error
            .as_deref()
            .unwrap_or("")
            .contains("still accepted"),
        "{view:?}"
    );
    let err = run
        .agent
        .release("nope", "x", "y")
        .await
        .expect_err("unknown policy");
    assert!(err.to_string().contains("no policy"), "{err}");
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rotation_cascades_to_its_dependents_under_the_same_trigger() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap();
    let text = |name: &str, cascade: &str| {
        format!(
            "---\napiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, port: 5432, database: d, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  cascade: {cascade}\n"
        )
    };
    let set = policy::load_str(
        std::path::Path::new("c.yaml"),
        &(text("ca", "[cb]") + &text("cb", "[]") + &text("cc", "[]")),
    )
    .expect("policies");
    let run = start(set, start_at, None, 0);
    advance(Duration::from_secs(1)).await;
    run.agent
        .rotate(
            "ca",
            RotationRequest {
                trigger: Trigger::Compromise,
                asker: Asker::named("api:ops"),
                reason: Some("leaked".into()),
                ticket: None,
                ..Default::default()
            },
        )
        .await
        .expect("accepted");
    advance(Duration::from_secs(5)).await;
    let calls = run.stop().await;
    let got: Vec<(String, Trigger)> = calls.into_iter().map(|(p, t, _)| (p, t)).collect();
    assert_eq!(
        got,
        [
            ("ca".to_owned(), Trigger::Compromise),
            ("cb".to_owned(), Trigger::Compromise)
        ],
        "the dependent follows under the same trigger; an unrelated policy does not"
    );
}
