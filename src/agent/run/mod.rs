//! The agent's scheduler and worker pool.
//!
//! One loop owns the decisions: it computes each policy's next due time
//! ([`crate::schedule::next_due`]), queues scheduled and on-demand rotations, and
//! starts them under a global concurrency limit with at most one job per policy.
//! Compromise requests jump the queue. A failing policy backs off exponentially with
//! jitter. Open rotations found in the journal are resumed at start-up, and rotations
//! waiting for a grace period are resumed when it ends. The shared state sits behind a
//! `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::RotationSummary;
use super::approval::Approvals;
use super::quarantine::Quarantine;
use crate::audit::{AuditEvent, AuditLog};
use crate::engine::{Retirement, Rotation, RotationRequest};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::{PolicySet, ValidatedPolicy};
use crate::schedule::Due;

mod approvals;
mod control;
mod executor;
mod reload;
mod scheduler;
mod worker;

pub use self::executor::Executor;
use self::reload::{PolicyStamp, stamp};

/// The wall clock as the agent reads it. [`TokioClock`] follows tokio's clock, so
/// tests can run the scheduler in paused (virtual) time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// Wall time that advances with tokio's clock from a fixed start.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Starts at `base` (tests).
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Rotations running at once, across policies.
    pub concurrency: usize,
    /// First delay after a failed rotation; doubles per failure, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Policy files or directories (for reloads).
    pub policy_paths: Vec<PathBuf>,
    /// How often the policy paths are checked for changes (zero: never).
    pub reload_poll: Duration,
    /// How long a shutdown waits for running rotations to reach their end.
    pub shutdown_grace: Duration,
    /// Where every policy's notifications also go (signed webhooks; see
    /// [`crate::notify`]), besides each policy's own `spec.notify`.
    pub notify: Vec<crate::policy::NotifyTarget>,
    /// Resolves notification keys held in Vault.
    pub vault: Option<crate::vault::Vault>,
    /// Consecutive failed rotations after which a policy is quarantined.
    pub quarantine_after: u32,
    /// How long an approval request waits when its policy sets no `ttl`
    /// (`--approval-ttl`).
    pub approval_ttl: Duration,
    /// The notifier to share with the engine's evidence (so both use one key cache
    /// and one count of deliveries in flight); `None` builds one from `notify` and
    /// `vault`.
    pub notifier: Option<Notifier>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            concurrency: 4,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            policy_paths: Vec::new(),
            reload_poll: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(60),
            notify: Vec::new(),
            vault: None,
            quarantine_after: 3,
            approval_ttl: super::approval::DEFAULT_APPROVAL_TTL,
            notifier: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Job {
    Rotate(Box<RotationRequest>),
    /// Resume an open rotation (start-up, end of a grace period) and refresh inputs.
    Sync {
        end_grace: bool,
    },
}

struct Entry {
    policy: Arc<ValidatedPolicy>,
    running: bool,
    queued: bool,
    cron_after: DateTime<Utc>,
    secret_created: Option<DateTime<Utc>>,
    renewal_at: Option<DateTime<Utc>>,
    next_due: Option<Due>,
    /// Consecutive failed attempts with evidence (a refusal, a conflict, a rotor bug):
    /// `quarantine_after` of them quarantine the policy.
    failures: u32,
    /// Consecutive attempts that failed only because an outside system gave no answer
    /// (timeout, refused connection, 5xx): they lengthen the backoff, but an outage is
    /// no evidence against the policy and never quarantines it.
    outages: u32,
    backoff_until: Option<DateTime<Utc>>,
    waiting_until: Option<DateTime<Utc>>,
    /// Boxed, like `quarantined`: an entry is kept per policy (thousands of them), and
    /// these are the largest fields, often unset.
    last: Option<Box<RotationSummary>>,
    state: PolicyState,
    error: Option<String>,
    pending: Vec<String>,
    /// Leadership was gained since the last refresh: cron fires the secret's creation
    /// time shows were served (by the previous leader) are not run again.
    handover: bool,
    /// Quarantined: no automatic rotation until released.
    quarantined: Option<Box<Quarantine>>,
    /// Retired (or being retired or enabled): no rotation until `rotor enable`; what
    /// the API shows about it.
    retired: Option<String>,
    /// The last rotation stopped open (a step after promote to retry, or a rollback
    /// whose check got no answer): it is resumed once the backoff ends, whether or not
    /// the policy has a schedule.
    resume_open: bool,
}

/// What a policy's entry is doing or last came to: the `state` of the API's policy
/// view (`GET /v1/policies`, `rotor status`), which shows [`PolicyState::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyState {
    /// Nothing running or queued; the last rotation (if any) ended well.
    Idle,
    /// A rotation waits in the queue.
    Queued,
    /// A rotation runs.
    Rotating,
    /// A retirement (`rotor retire`) runs.
    Retiring,
    /// An enable (`rotor enable`) runs.
    Enabling,
    /// The last rotation keeps the old credential valid until its grace period ends.
    Waiting,
    /// The last rotation stopped open (a consumer pending, a step to retry).
    Pending,
    /// The last rotation, retirement or enable failed.
    Failed,
    /// Waiting for its backoff after a failure (shown only, never stored).
    Backoff,
    /// Quarantined after repeated failures: no automatic rotation until released.
    Quarantined,
    /// Retired: no rotation until `rotor enable`.
    Retired,
}

impl PolicyState {
    /// The word the API and `rotor status` show.
    fn as_str(self) -> &'static str {
        match self {
            PolicyState::Idle => "idle",
            PolicyState::Queued => "queued",
            PolicyState::Rotating => "rotating",
            PolicyState::Retiring => "retiring",
            PolicyState::Enabling => "enabling",
            PolicyState::Waiting => "waiting",
            PolicyState::Pending => "pending",
            PolicyState::Failed => "failed",
            PolicyState::Backoff => "backoff",
            PolicyState::Quarantined => "quarantined",
            PolicyState::Retired => "retired",
        }
    }
}

struct Queued {
    policy: String,
    job: Job,
    /// 0 = compromise, 1 = on demand, 2 = schedule / sync.
    priority: u8,
    fire: Option<DateTime<Utc>>,
}

struct State {
    entries: BTreeMap<String, Entry>,
    queue: VecDeque<Queued>,
    history: VecDeque<Rotation>,
    stopping: bool,
    started: bool,
    policy_stamp: PolicyStamp,
    /// Leadership as the loop last acted on it (see [`State::follow_leadership`]).
    leading: bool,
}

const HISTORY: usize = 256;

struct Inner {
    exec: Arc<dyn Executor>,
    config: AgentConfig,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
    leader: AtomicBool,
    /// Dependency facts for readiness (Vault probe, leadership known).
    health: Arc<super::health::Health>,
    notifier: Notifier,
    approvals: Approvals,
}

/// The running agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn summary(r: &Rotation) -> RotationSummary {
    RotationSummary {
        rotation_id: r.rotation_id.clone(),
        status: if r.waiting_for_grace() {
            "waiting".into()
        } else {
            r.status.as_str().into()
        },
        trigger: r.trigger.as_str().into(),
        updated_at: crate::state::records::time::format(&r.updated_at),
    }
}

impl Agent {
    /// An agent over `exec` with the loaded `policies`. Nothing runs until [`Agent::run`].
    pub fn new(
        exec: Arc<dyn Executor>,
        policies: PolicySet,
        config: AgentConfig,
        clock: Arc<dyn Clock>,
        audit: Option<Arc<AuditLog>>,
        metrics: Arc<Metrics>,
    ) -> Agent {
        let now = clock.now();
        let stamp = stamp(&config.policy_paths);
        let entries = policies
            .into_iter()
            .map(|p| (p.name.clone(), Entry::new(Arc::new(p), now)))
            .collect::<BTreeMap<_, _>>();
        metrics.set_policies_loaded(entries.len());
        metrics.set_leader(true);
        let approvals = Approvals::new(exec.approval_store(), config.approval_ttl);
        Agent {
            inner: Arc::new(Inner {
                exec,
                clock,
                audit,
                metrics,
                state: Mutex::new(State {
                    entries,
                    queue: VecDeque::new(),
                    history: VecDeque::new(),
                    stopping: false,
                    started: false,
                    policy_stamp: stamp,
                    leading: true,
                }),
                wake: Notify::new(),
                leader: AtomicBool::new(true),
                health: Arc::default(),
                notifier: config
                    .notifier
                    .clone()
                    .unwrap_or_else(|| Notifier::new(config.vault.clone(), config.notify.clone())),
                approvals,
                config,
            }),
        }
    }

    /// Asks the loop to reload the policy paths now (SIGHUP).
    pub fn request_reload(&self) {
        let mut st = self.inner.lock();
        st.policy_stamp.clear();
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Runs until `shutdown` resolves, then lets running rotations finish (up to
    /// `shutdown_grace`) and returns.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let inner = &self.inner;
        inner.audit_event(&AuditEvent::Agent {
            action: "started".into(),
            detail: Some(format!("{} policies", inner.lock().entries.len())),
        });
        // Start-up: resume what the journal left open and read each policy's inputs.
        {
            let mut st = inner.lock();
            let names: Vec<String> = st.entries.keys().cloned().collect();
            for name in names {
                st.enqueue(name, Job::Sync { end_grace: false }, 2, None);
            }
        }
        let permits = Arc::new(Semaphore::new(inner.config.concurrency.max(1)));
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut poll = tokio::time::interval(if inner.config.reload_poll.is_zero() {
            Duration::from_secs(3600 * 24 * 365)
        } else {
            inner.config.reload_poll
        });
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            inner.metrics.scheduler_wakeup();
            let now = inner.clock.now();
            let sleep_for = {
                let mut st = inner.lock();
                st.follow_leadership(inner.leader.load(Ordering::SeqCst));
                st.enqueue_due(now);
                while permits.available_permits() > 0 {
                    let Some(next) = st.pop_runnable() else { break };
                    let permit = match Arc::clone(&permits).try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => {
                            st.queue.push_front(next);
                            break;
                        }
                    };
                    if let Some(e) = st.entries.get_mut(&next.policy) {
                        e.running = true;
                        e.queued = false;
                        if let Some(fire) = next.fire {
                            e.cron_after = e.cron_after.max(fire);
                        }
                        if matches!(next.job, Job::Rotate(_)) {
                            e.state = PolicyState::Rotating;
                        }
                    }
                    let inner = Arc::clone(inner);
                    jobs.spawn(async move {
                        inner.execute_guarded(next).await;
                        drop(permit);
                        inner.wake.notify_one();
                    });
                }
                if !st.started && st.queue.is_empty() && jobs.is_empty() {
                    st.started = true;
                    // Start-up (parsing, the journal and inputs of every policy) is
                    // the agent's peak; what it freed goes back to the system now
                    // rather than staying resident while the agent idles.
                    super::return_free_memory();
                }
                // Approval requests past their ttl: marked expired and notified once.
                let mut wake = st.next_wake(now);
                if st.leading && !st.stopping {
                    for (policy, id) in inner.approvals.take_expired(now) {
                        let inner = Arc::clone(inner);
                        jobs.spawn(async move { inner.expire_approval(&policy, &id).await });
                    }
                    if let Some(t) = inner.approvals.next_expiry() {
                        wake = Some(wake.map_or(t, |w| w.min(t)).max(now));
                    }
                }
                wake.map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::from_secs(3600))
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(sleep_for) => {}
                _ = inner.wake.notified() => {}
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = poll.tick() => inner.maybe_reload(),
            }
        }
        inner.lock().stopping = true;
        info!(
            running = jobs.len(),
            "Stopping: no new rotations; waiting for running ones."
        );
        let drained = tokio::time::timeout(inner.config.shutdown_grace, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                "Rotations still running at shutdown were interrupted; they resume from the journal at the next start."
            );
            jobs.abort_all();
        }
        inner.audit_event(&AuditEvent::Agent {
            action: "stopped".into(),
            detail: None,
        });
    }

    /// Whether this replica may rotate (leader election sets it).
    pub fn set_leader(&self, leader: bool) {
        self.inner.health.set_leader_known(true);
        self.inner.leader.store(leader, Ordering::SeqCst);
        self.inner.metrics.set_leader(leader);
        self.inner.wake.notify_one();
    }

    /// Not the leader, and not ready until leader election first reports
    /// ([`Agent::set_leader`]): for `--leader-election`, before the elector starts.
    pub fn set_leader_unknown(&self) {
        self.set_leader(false);
        self.inner.health.set_leader_known(false);
    }

    /// The dependency facts readiness reports; probes write them.
    pub fn health(&self) -> Arc<super::health::Health> {
        Arc::clone(&self.inner.health)
    }
}

/// Whether a check of `r` found the old credential still accepted by the target.
fn old_accepted(r: &Rotation) -> bool {
    r.verification
        .iter()
        .any(|v| !v.passed && v.evidence == "accepted")
}

/// Whether `r` failed only because an outside system gave no answer: its last failure
/// was unanswered, or it is open awaiting a re-check that got no answer.
fn unanswered(r: &Rotation) -> bool {
    r.unanswered || (r.status.is_open() && r.verification.last().is_some_and(|v| v.inconclusive))
}

/// A panic's message for logs and the status: text payloads (the usual `panic!` and
/// arithmetic overflow), control characters escaped, at most 200 characters.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let mut out = String::new();
    for c in text.chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What the API shows about a retired policy.
fn retired_text(r: &Retirement) -> String {
    let since = crate::state::records::time::format(&r.started_at);
    retired_words(r.state.as_str(), &since, &r.actor, &r.reason)
}

fn retired_words(state: &str, since: &str, actor: &str, reason: &str) -> String {
    format!("{state} since {since} by {actor}: {reason}")
}
