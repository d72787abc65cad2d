//! Leader election on a Kubernetes Lease (issue 6, "High availability").
//!
//! Library level: `rotor::leader::run` candidates against one fake API server on
//! loopback (kube-fake-client behind real HTTP) — exactly one leads, a stopped leader
//! hands over, a leader cut off from the API steps down before anyone else takes over.
//! Agent level, in virtual time: a follower starts nothing; a new leader resumes from
//! the journal and does not repeat a cron fire the previous leader served.
//! Process level (the acceptance): two `rotor run --leader-election` agents against the
//! same API server, OpenBao and PostgreSQL — only the leader accepts a rotation, and
//! when it dies in the middle of it the other takes the lease and finishes that same
//! rotation from the journal. Needs `dev/stack up` (OpenBao, PostgreSQL).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use rotor::agent::{AgentConfig, Clock, Control, ControlError, Executor, TokioClock};
use rotor::engine::journal::Journal;
use rotor::engine::{
    Asker, EngineError, Rotation, RotationOutcome, RotationRequest, Status, Trigger,
};
use rotor::leader::{self, LeaderConfig, LeaderError};
use rotor::metrics::Metrics;
use rotor::policy::ValidatedPolicy;
use rotor_testkit::{FakeKube, unique};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::agent::{Agent, eventually, first};
use common::{Fixture, Options};

/// Lease duration of the library-level tests.
const LEASE: Duration = Duration::from_secs(2);

/// One `leader::run` task and what its callback reported.
struct Candidate {
    identity: String,
    leading: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<bool>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), LeaderError>>>,
}

impl Candidate {
    fn start(client: kube::Client, lease: &str, identity: &str) -> Candidate {
        let leading = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let config = LeaderConfig {
            lease_name: lease.to_owned(),
            namespace: "default".into(),
            identity: identity.to_owned(),
            duration: LEASE,
        };
        let (l, c) = (Arc::clone(&leading), Arc::clone(&changes));
        let task = tokio::spawn(leader::run(
            client,
            config,
            move |now| {
                l.store(now, Ordering::SeqCst);
                c.lock().unwrap().push(now);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Candidate {
            identity: identity.to_owned(),
            leading,
            changes,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn leads(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Every `on_change` call.
    fn reports(&self) -> Vec<bool> {
        self.changes.lock().unwrap().clone()
    }

    /// The leadership changes: the reports without the first `false`, which tells a
    /// candidate that has reached the Lease that it follows (no change).
    fn changes(&self) -> Vec<bool> {
        let mut reports = self.reports();
        if reports.first() == Some(&false) {
            reports.remove(0);
        }
        reports
    }

    /// Stops the task and returns what `run` returned.
    async fn stop(&mut self) -> Result<(), LeaderError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(LEASE * 3, task)
            .await
            .expect("run returns after shutdown")
            .expect("the task did not panic")
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A client of its own (like another process) for the fake API server, as rotor makes it.
async fn client(kube: &FakeKube) -> kube::Client {
    common::rotor_kube_client(kube).await
}

/// Polls every 20 ms until `done` returns true, failing if two candidates ever lead at
/// once or the deadline passes.
async fn until_checking_one_leader(
    limit: Duration,
    what: &str,
    candidates: &[&Candidate],
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let leaders: Vec<&str> = candidates
            .iter()
            .filter(|c| c.leads())
            .map(|c| c.identity.as_str())
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn holder(kube: &FakeKube, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(common::kube_client(kube).await, "default")
        .get(lease)
        .await
        .expect("the Lease exists")
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_candidate_leads_and_a_stopped_leader_hands_over_within_a_lease() {
    rotor::install_crypto_provider();
    let kube = FakeKube::start().await;
    let lease = unique("lease");
    let (client_a, client_b) = (client(&kube).await, client(&kube).await);
    let started = Instant::now();
    let a = Candidate::start(client_a, &lease, "replica-a");
    let b = Candidate::start(client_b, &lease, "replica-b");

    until_checking_one_leader(Duration::from_secs(10), "a first leader", &[&a, &b], || {
        a.leads() || b.leads()
    })
    .await;
    println!("first leader after {:?}", started.elapsed());
    let (mut leader, follower) = if a.leads() { (a, b) } else { (b, a) };

    // Three lease periods (several renewals): always the same single leader.
    let watch = Instant::now();
    while watch.elapsed() < LEASE * 3 {
        assert!(
            leader.leads() && !follower.leads(),
            "leadership moved without a reason after {:?}: leader {} {}, follower {}",
            watch.elapsed(),
            leader.identity,
            leader.leads(),
            follower.leads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(leader.changes(), [true], "the leader never stepped down");
    assert!(follower.changes().is_empty(), "the follower never led");
    assert_eq!(
        follower.reports(),
        [false],
        "the follower was told once that it follows (readiness waits for it)"
    );
    assert_eq!(
        holder(&kube, &lease).await.as_deref(),
        Some(leader.identity.as_str())
    );

    // Stopping the leader: it announces the step-down, releases the Lease, and the
    // follower takes over within about one lease duration.
    leader.stop().await.expect("the lease is released");
    assert_eq!(leader.changes(), [true, false]);
    assert_ne!(
        holder(&kube, &lease).await.as_deref(),
        Some(leader.identity.as_str()),
        "the stopped leader released the Lease"
    );
    let handover = until_checking_one_leader(
        LEASE * 2,
        "the follower to take over",
        &[&leader, &follower],
        || follower.leads(),
    )
    .await;
    println!("handover after a release took {handover:?}");
    assert_eq!(
        holder(&kube, &lease).await.as_deref(),
        Some(follower.identity.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_steps_down_before_another_takes_over() {
    rotor::install_crypto_provider();
    let kube = FakeKube::start().await;
    let lease = unique("lease");
    // Cut: connections reset and new ones refused, so one candidate loses the API.
    let proxy = rotor_testkit::Proxy::start(kube.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.kubeconfig_via(proxy.addr, &kubeconfig);
    let through_proxy = common::kube_clients::rotor_kube_client_at(&kubeconfig).await;

    let a = Candidate::start(through_proxy, &lease, "replica-a");
    until_checking_one_leader(Duration::from_secs(10), "replica-a to lead", &[&a], || {
        a.leads()
    })
    .await;
    let b = Candidate::start(client(&kube).await, &lease, "replica-b");
    // b sees a's lease and waits.
    let watch = Instant::now();
    while watch.elapsed() < LEASE * 2 {
        assert!(a.leads() && !b.leads(), "a keeps the lease while it renews");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.cut();
    let cut = Instant::now();
    let mut a_stepped_down = None;
    until_checking_one_leader(LEASE * 4, "replica-b to take over", &[&a, &b], || {
        if a_stepped_down.is_none() && !a.leads() {
            a_stepped_down = Some(cut.elapsed());
        }
        b.leads()
    })
    .await;
    let took_over = cut.elapsed();
    let stepped_down = a_stepped_down.expect("a stepped down before b led");
    println!("cut off: a stepped down after {stepped_down:?}, b led after {took_over:?}");
    assert!(
        stepped_down <= LEASE,
        "a steps down before its lease ends: {stepped_down:?}"
    );
    assert_eq!(a.changes(), [true, false]);
    assert_eq!(holder(&kube, &lease).await.as_deref(), Some("replica-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_rotates_and_the_survivor_finishes_the_dead_leaders_rotation() {
    let fx = Fixture::new("ha", Options::default()).await;
    let (_, v1) = fx.current().await;
    let args = ["--leader-election", "--lease-duration", "3s"];
    // The first agent dies (abort, like SIGKILL) right after the Secret was written.
    let mut a = Agent::start_with(&fx, &[("ROTOR_FAILPOINT", "propagated:effect")], &args);
    a.ready().await;
    a.until_leading(Duration::from_secs(30)).await;
    let b = Agent::start_follower(&fx, &[], &args).await;
    assert_eq!(a.leads().await, Some(true), "the first agent still leads");

    // Exactly one rotates: the follower refuses (503), the leader accepts (202).
    let (status, body) = b.request_rotation(&fx.name).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("not the leader"),
        "{body}"
    );
    // Right after leading, the leader may still be re-reading the journal (409).
    let (status, body) = a.request_rotation_as_leader(&fx.name).await;
    assert_eq!(status, 202, "{body}");

    // The leader dies in the middle of that rotation.
    let exit = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let status = a.child.wait().expect("wait");
            (a, status)
        }),
    )
    .await
    .expect("the leader reaches the failpoint")
    .expect("join");
    let (a, status) = exit;
    assert!(!status.success(), "the leader died at the failpoint");
    let journal = Journal::new(fx.vault.clone(), "secret", "rotor");
    let open = journal
        .load(&fx.name)
        .await
        .expect("journal")
        .0
        .expect("a journal record");
    assert!(open.status.is_open(), "{:?}", open.status);
    let (_, v2) = fx.current().await;
    assert_eq!(v2, v1 + 1, "it had promoted before dying");
    let died = Instant::now();

    // The follower takes the lease and finishes that rotation from the journal.
    let view = eventually(
        Duration::from_secs(60),
        "the survivor to finish the rotation",
        || async {
            let v = first(&b.policies().await);
            (v["last_rotation"]["status"] == "completed").then_some(v)
        },
    )
    .await;
    println!(
        "the survivor finished the rotation {:?} after the leader died",
        died.elapsed()
    );
    assert_eq!(
        view["last_rotation"]["rotation_id"],
        open.rotation_id.as_str()
    );
    assert_eq!(b.leads().await, Some(true));
    let done = journal
        .load(&fx.name)
        .await
        .expect("journal")
        .0
        .expect("a journal record");
    assert_eq!(done.rotation_id, open.rotation_id, "the same rotation");
    assert_eq!(done.status, Status::Completed);
    assert_eq!(fx.current().await.1, v2, "promoted once, not rotated again");
    fx.assert_consistent().await;

    // The survivor started no rotation of its own; it ended the dead leader's.
    let audit = std::fs::read_to_string(&b.audit).expect("the survivor's audit log");
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        !events.iter().any(|e| e["event"] == "rotation_requested"),
        "{audit}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "rotation_ended"
            && e["rotation"]["rotation_id"] == open.rotation_id.as_str()),
        "{audit}"
    );

    let mut secrets = fx.all_passwords().await;
    secrets.push(a.token.clone());
    secrets.push(b.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&a.log_text(), &refs);
    rotor_testkit::assert_no_secret(&b.log_text(), &refs);
    rotor_testkit::assert_no_secret(&audit, &refs);
}

/// Records what the agent asks of its engine, in virtual time.
struct Recorder {
    clock: TokioClock,
    rotations: Mutex<Vec<(Trigger, DateTime<Utc>)>>,
    resumes: Mutex<Vec<DateTime<Utc>>>,
    /// When the current secret was written (what `inputs` reports).
    created: Mutex<Option<DateTime<Utc>>>,
}

impl Recorder {
    fn rotations(&self) -> Vec<(Trigger, DateTime<Utc>)> {
        self.rotations.lock().unwrap().clone()
    }

    fn resumes(&self) -> usize {
        self.resumes.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Executor for Recorder {
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        let now = Clock::now(&self.clock);
        self.rotations.lock().unwrap().push((request.trigger, now));
        *self.created.lock().unwrap() = Some(now);
        let rotation = serde_json::from_value(serde_json::json!({
            "rotation_id": ulid::Ulid::new().to_string(),
            "policy": policy.name,
            "kind": "postgres",
            "strategy": "single",
            "trigger": request.trigger,
            "actor": "test",
            "status": "completed",
            "canonical": "secret/x",
            "canonical_version": 1,
            "staging": "secret/rotor/staging/x",
            "steps": [],
            "started_at": "2027-01-01T00:00:00Z",
            "updated_at": "2027-01-01T00:00:00Z",
        }))
        .expect("rotation JSON");
        Ok(RotationOutcome {
            resumed: None,
            rotation: Some(rotation),
        })
    }

    async fn resume(
        &self,
        _policy: &ValidatedPolicy,
        _end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        self.resumes.lock().unwrap().push(Clock::now(&self.clock));
        Ok(None)
    }

    async fn inputs(
        &self,
        _policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError> {
        Ok((*self.created.lock().unwrap(), None))
    }

    async fn journal(&self, _policy: &str) -> Result<Option<Rotation>, EngineError> {
        Ok(None)
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_starts_nothing_and_a_new_leader_resumes_without_repeating_served_fires() {
    let start_at = Utc.with_ymd_and_hms(2027, 6, 1, 0, 0, 0).unwrap();
    let day = Duration::from_secs(86400);
    let set = rotor::policy::load_str(
        std::path::Path::new("p.yaml"),
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: nightly\nspec:\n  credential:\n    type: postgres\n    connection: {host: h, port: 5432, database: d, adminFrom: {env: X}}\n    username: app\n  vault:\n    path: apps/nightly\n  schedule:\n    cron: \"0 3 * * *\"\n",
    )
    .expect("policy");
    let clock = TokioClock::starting_at(start_at);
    let rec = Arc::new(Recorder {
        clock,
        rotations: Mutex::new(Vec::new()),
        resumes: Mutex::new(Vec::new()),
        created: Mutex::new(Some(start_at - chrono::Duration::days(3))),
    });
    let metrics = Arc::new(Metrics::new("test"));
    let agent = rotor::agent::Agent::new(
        rec.clone(),
        set,
        AgentConfig {
            reload_poll: Duration::ZERO,
            ..AgentConfig::default()
        },
        Arc::new(clock),
        None,
        Arc::clone(&metrics),
    );
    // As `rotor run --leader-election` does: a follower until the lease says otherwise.
    agent.set_leader(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        a.run(async {
            let _ = stopped.await;
        })
        .await
    });

    // A follower: ready, not leading, and past 03:00 nothing has started — neither the
    // scheduled rotation nor the start-up journal check.
    tokio::time::sleep(day + Duration::from_secs(3600)).await;
    let readiness = agent.readiness();
    assert!(readiness.ready && !readiness.leader, "{readiness:?}");
    assert!(metrics.encode().contains("rotor_leader 0"));
    assert!(rec.rotations().is_empty(), "{:?}", rec.rotations());
    assert_eq!(rec.resumes(), 0);
    let refused = agent
        .rotate(
            "nightly",
            RotationRequest {
                trigger: Trigger::OnDemand,
                asker: Asker::named("api:test"),
                reason: Some("test".into()),
                ticket: None,
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(refused, Err(ControlError::NotLeader)),
        "{refused:?}"
    );

    // Meanwhile the leader served the 06-01 and 06-02 fires (the secret is from 06-02
    // 03:00:07). This replica takes over on 06-03 at 01:00.
    *rec.created.lock().unwrap() = Some(start_at + chrono::Duration::seconds(86400 + 3 * 3600 + 7));
    tokio::time::sleep(day).await; // 06-03 01:00
    agent.set_leader(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rec.resumes(), 1, "the new leader resumes from the journal");
    assert!(metrics.encode().contains("rotor_leader 1"));
    assert!(
        rec.rotations().is_empty(),
        "fires the previous leader served are not run again: {:?}",
        rec.rotations()
    );
    // The next fire is this leader's.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await; // 06-03 04:00
    let rotations = rec.rotations();
    assert_eq!(
        rotations,
        [(
            Trigger::Schedule,
            start_at + chrono::Duration::hours(2 * 24 + 3)
        )]
    );

    // Losing the lease stops the schedule again.
    agent.set_leader(false);
    tokio::time::sleep(day * 2).await;
    assert_eq!(rec.rotations().len(), 1, "{:?}", rec.rotations());
    let _ = stop.send(());
    task.await.expect("agent task");
}
