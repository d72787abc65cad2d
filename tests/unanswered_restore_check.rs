//! A target that does not answer during a rotation is not a lockout (issue 14, defect
//! 2). PostgreSQL sits behind a proxy the test owns; the proxy is frozen (new
//! connections hang) between two rotations, so the second rotation's test login and
//! its restore check after the rollback get no answer, while the agent's pooled admin
//! connection (opened before the freeze) still rolls the target back. The agent must
//! not quarantine the policy: the rotation stays rolling back with the check journaled
//! as inconclusive, the policy backs off, the check is repeated once the backoff ends,
//! and the next rotation completes. Needs `dev/stack up`.

mod common;

use std::time::Duration;

use common::agent::{Agent, eventually, first};
use common::{Fixture, Options};
use rotor::credentials::AuthOutcome;
use rotor::engine::{Journal, Rotation, Status};
use rotor_testkit::Proxy;
use serde_json::Value;

/// The policy's journaled rotation.
async fn journaled(fx: &Fixture) -> Option<Rotation> {
    Journal::new(fx.vault.clone(), "secret", "rotor")
        .load(&fx.name)
        .await
        .expect("read the journal")
        .0
}

/// Waits (reading the journal in Vault, not the rate-limited API) until the policy's
/// journaled rotation is not `before` and `done` says it got far enough.
async fn journal_until(
    fx: &Fixture,
    before: Option<&str>,
    what: &str,
    done: impl Fn(&Rotation) -> bool,
) -> Rotation {
    eventually(Duration::from_secs(180), what, || async {
        journaled(fx)
            .await
            .filter(|r| Some(r.rotation_id.as_str()) != before && done(r))
    })
    .await
}

/// The policy as the agent shows it once it is done with the last rotation (polled
/// once a second: the API limits each identity to 30 requests a minute).
async fn settled(agent: &Agent) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let policy = first(&agent.policies().await);
        let state = policy["state"].as_str().unwrap_or("");
        if !["", "rotating", "queued", "pending"].contains(&state) {
            return policy;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never settled: {policy:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn restore_check(r: &Rotation) -> Option<&rotor::engine::Verification> {
    r.verification
        .iter()
        .rfind(|v| v.check == rotor::engine::Check::OldCredentialRestored)
}

fn audit(agent: &Agent) -> Vec<Value> {
    std::fs::read_to_string(&agent.audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_restore_check_backs_off_and_rechecks_instead_of_quarantining() {
    let s = rotor_testkit::stack();
    let upstream = tokio::net::lookup_host((s.pg.host.as_str(), s.pg.port))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = Proxy::start(upstream);
    let fx = Fixture::new(
        "unanswered",
        Options {
            pg_port: Some(proxy.addr.port()),
            ..Options::default()
        },
    )
    .await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;

    // A first rotation through the open proxy (it also leaves the agent an admin
    // connection to PostgreSQL in its pool).
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202, "{body}");
    let first_rotation =
        journal_until(&fx, None, "the first rotation", |r| !r.status.is_open()).await;
    assert_eq!(
        first_rotation.status,
        Status::Completed,
        "{first_rotation:#?}"
    );
    settled(&agent).await;
    let (current, version) = fx.current().await;

    // PostgreSQL hangs for new connections: the second rotation's test login and its
    // restore check get no answer within the login timeout, while the rollback goes
    // through the admin connection opened before.
    proxy.freeze_new();
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202, "{body}");
    let second = journal_until(
        &fx,
        Some(&first_rotation.rotation_id),
        "the second rotation's restore check",
        |r| restore_check(r).is_some() || !r.status.is_open(),
    )
    .await;
    let policy = settled(&agent).await;

    let events = audit(&agent);
    let quarantined: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "agent" && e["action"] == "quarantined")
        .collect();
    assert!(
        quarantined.is_empty(),
        "no answer is no evidence of a lockout, yet the policy was quarantined: {quarantined:?}"
    );
    assert_eq!(policy["state"], "backoff", "{policy:#}");
    // The metrics say the same: not quarantined, no old credential accepted, nothing
    // counted as ended yet for the open rotation.
    let metrics = agent.metrics().await.expect("/metrics answers");
    let quarantined = [("policy", fx.name.as_str())];
    assert_eq!(
        sample(&metrics, "rotor_policy_quarantined", &quarantined),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "rotor_old_credential_still_valid", &quarantined),
        Some(0.0)
    );
    let rolled_back = [("policy", fx.name.as_str()), ("result", "rolled_back")];
    assert_eq!(
        sample(&metrics, "rotor_rotations_total", &rolled_back),
        None,
        "{metrics}"
    );

    // The journal says honestly what happened: the test login and the restore check
    // got no answer; the rollback itself ran.
    assert_eq!(second.status, Status::RollingBack, "{second:#?}");
    let check = restore_check(&second).expect("a restore check");
    assert!(
        check.inconclusive && !check.passed && check.evidence.starts_with("inconclusive"),
        "{check:?}"
    );
    let error = second.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("could not be tested") && error.contains("could not be checked yet"),
        "{error}"
    );
    let second_id = second.rotation_id.clone();
    assert!(
        !events.iter().any(|e| e["event"] == "rotation_ended"
            && e["rotation"]["rotation_id"] == second_id.as_str()),
        "a rotation still rolling back has not ended"
    );
    // Nothing was promoted, and the current password works (checked directly, not
    // through the proxy).
    assert_eq!(fx.current().await.1, version);
    assert!(matches!(fx.login(&current).await, AuthOutcome::Accepted));

    // PostgreSQL answers again: once the backoff ends, the agent repeats the rollback
    // and its check by itself, and the rotation ends rolled back.
    proxy.restore();
    let rechecked = journal_until(&fx, None, "the restore check to be repeated", |r| {
        r.rotation_id == second_id && r.status == Status::RolledBack
    })
    .await;
    let last = restore_check(&rechecked).expect("a restore check");
    assert!(last.passed && !last.inconclusive, "{last:?}");
    assert!(matches!(fx.login(&current).await, AuthOutcome::Accepted));
    let policy = settled(&agent).await;
    assert_ne!(policy["state"], "quarantined", "{policy:#}");

    // And the next rotation completes.
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202, "{body}");
    let third = journal_until(&fx, Some(&second_id), "the third rotation", |r| {
        !r.status.is_open()
    })
    .await;
    assert_eq!(third.status, Status::Completed, "{third:#?}");
    fx.assert_consistent().await;
    settled(&agent).await;

    let events = audit(&agent);
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "agent" && e["action"] == "quarantined")
    );
    let ended = events
        .iter()
        .filter(|e| {
            e["event"] == "rotation_ended" && e["rotation"]["rotation_id"] == second_id.as_str()
        })
        .count();
    assert_eq!(
        ended, 1,
        "the rolled-back rotation has one rotation_ended record"
    );
    // Counted once each: the rollback that closed after the re-check and the two
    // completions; never quarantined.
    let metrics = agent.metrics().await.expect("/metrics answers");
    assert_eq!(
        sample(&metrics, "rotor_rotations_total", &rolled_back),
        Some(1.0),
        "{metrics}"
    );
    let completed = [("policy", fx.name.as_str()), ("result", "completed")];
    assert_eq!(
        sample(&metrics, "rotor_rotations_total", &completed),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "rotor_policy_quarantined", &quarantined),
        Some(0.0)
    );

    let mut secrets = fx.all_passwords().await;
    secrets.push(agent.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&agent.log_text(), &refs);
    rotor_testkit::assert_no_secret(
        &std::fs::read_to_string(&agent.audit).unwrap_or_default(),
        &refs,
    );
}

/// The sum of `name`'s samples whose labels include all of `labels`, or None when it
/// has none.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let (head, value) = rest.rsplit_once(' ')?;
        if labels
            .iter()
            .all(|(k, v)| head.contains(&format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}
