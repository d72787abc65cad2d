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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::approval::{ApprovalCaller, ApprovalRecord, ApprovalStore, Approvals};
use super::quarantine::{Quarantine, QuarantineStore, immediate_reason};
use super::{Accepted, Control, ControlError, PolicyMeta, PolicyView, Readiness, RotationSummary};
use crate::audit::{AuditEvent, AuditLog};
use crate::engine::{
    EnableOutcome, Engine, EngineError, RetireRequest, Retirement, Rotation, RotationOutcome,
    RotationRequest, Status, Trigger,
};
use crate::metrics::Metrics;
use crate::notify::{Notification, Notifier, NotifyEvent};
use crate::policy::{PolicySet, ValidatedPolicy};
use crate::schedule::{self, Due, DueInputs};

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

/// What the agent needs from the rotation engine (the real [`Engine`], or a fake in
/// scheduler tests).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// One rotation (resuming an open one first).
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError>;
    /// Finishes the policy's open rotation, if any; `end_grace` revokes at once.
    async fn resume(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError>;
    /// When the current secret was written and when a certificate is due for renewal.
    async fn inputs(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError>;
    /// The policy's journal record.
    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError>;
    /// Notes on the policy's journal record `rotation_id`, if it is still open, that a
    /// job was interrupted by a panic (`note` is added to its `error`); returns the
    /// record as written. The rotation stays open: the next attempt resumes or rolls it
    /// back from the journal, as after a crash.
    async fn note_interrupted(
        &self,
        _policy: &str,
        _rotation_id: &str,
        _note: &str,
    ) -> Result<Option<Rotation>, EngineError> {
        Ok(None)
    }
    /// The policy's quarantine record, if any.
    async fn quarantine(&self, _policy: &str) -> Result<Option<Quarantine>, EngineError> {
        Ok(None)
    }
    /// Stores (or with `None` removes) the policy's quarantine record.
    async fn set_quarantine(
        &self,
        _policy: &str,
        _q: Option<&Quarantine>,
    ) -> Result<(), EngineError> {
        Ok(())
    }
    /// The policy's retirement record, if any (any state).
    async fn retired(&self, _policy: &str) -> Result<Option<Retirement>, EngineError> {
        Ok(None)
    }
    /// Where approval requests are kept; `None`: policies that require approval
    /// cannot be rotated on demand.
    fn approval_store(&self) -> Option<ApprovalStore> {
        None
    }
    /// Retires the policy ([`Engine::retire`]).
    async fn retire(
        &self,
        _policy: &ValidatedPolicy,
        _request: RetireRequest,
    ) -> Result<Retirement, EngineError> {
        Err(EngineError::Unsupported(
            "this executor cannot retire policies",
        ))
    }
    /// Enables a retired policy again ([`Engine::enable`]).
    async fn enable(
        &self,
        _policy: &ValidatedPolicy,
        _request: RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        Err(EngineError::Unsupported(
            "this executor cannot enable policies",
        ))
    }
}

#[async_trait::async_trait]
impl Executor for Engine {
    async fn rotate(
        &self,
        policy: &ValidatedPolicy,
        request: RotationRequest,
    ) -> Result<RotationOutcome, EngineError> {
        Engine::rotate(self, policy, request).await
    }

    async fn resume(
        &self,
        policy: &ValidatedPolicy,
        end_grace: bool,
    ) -> Result<Option<Rotation>, EngineError> {
        self.resume_with(policy, end_grace).await
    }

    async fn inputs(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), EngineError> {
        let loc = &policy.spec.vault;
        let Some(entry) = self.vault().kv_read(&loc.mount, &loc.path).await? else {
            return Ok((None, None));
        };
        let created = DateTime::parse_from_rfc3339(&entry.created_time)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        Ok((created, schedule::renewal_due(policy, &entry.data)))
    }

    async fn journal(&self, policy: &str) -> Result<Option<Rotation>, EngineError> {
        Ok(self.journal().load(policy).await?.0)
    }

    async fn note_interrupted(
        &self,
        policy: &str,
        rotation_id: &str,
        note: &str,
    ) -> Result<Option<Rotation>, EngineError> {
        let (record, version) = self.journal().load(policy).await?;
        let Some(mut r) = record.filter(|r| r.rotation_id == rotation_id && r.status.is_open())
        else {
            return Ok(None);
        };
        // Once per distinct note: a job that panics on every attempt does not grow it.
        r.error = Some(match r.error.take() {
            Some(before) if before.contains(note) => before,
            Some(before) => format!("{before}; {note}"),
            None => note.to_owned(),
        });
        r.updated_at = rfc3339(Utc::now());
        self.journal().write(&r, version).await?;
        Ok(Some(r))
    }

    async fn quarantine(&self, policy: &str) -> Result<Option<Quarantine>, EngineError> {
        Ok(self.quarantine_store().get(policy).await?)
    }

    async fn set_quarantine(
        &self,
        policy: &str,
        q: Option<&Quarantine>,
    ) -> Result<(), EngineError> {
        Ok(self.quarantine_store().set(policy, q).await?)
    }

    async fn retired(&self, policy: &str) -> Result<Option<Retirement>, EngineError> {
        self.retirement(policy).await
    }

    fn approval_store(&self) -> Option<ApprovalStore> {
        Some(ApprovalStore::with_store(self.state().clone()))
    }

    async fn retire(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<Retirement, EngineError> {
        Engine::retire(self, policy, request).await
    }

    async fn enable(
        &self,
        policy: &ValidatedPolicy,
        request: RetireRequest,
    ) -> Result<EnableOutcome, EngineError> {
        Engine::enable(self, policy, request).await
    }
}

impl Engine {
    fn quarantine_store(&self) -> QuarantineStore {
        QuarantineStore::with_store(self.state().clone())
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
    Rotate(RotationRequest),
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
    state: &'static str,
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
        updated_at: r.updated_at.clone(),
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
                            e.state = "rotating";
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

impl Entry {
    fn new(policy: Arc<ValidatedPolicy>, now: DateTime<Utc>) -> Entry {
        Entry {
            policy,
            running: false,
            queued: false,
            cron_after: now,
            secret_created: None,
            renewal_at: None,
            next_due: None,
            failures: 0,
            outages: 0,
            backoff_until: None,
            waiting_until: None,
            last: None,
            state: "idle",
            error: None,
            pending: Vec::new(),
            handover: false,
            quarantined: None,
            retired: None,
            resume_open: false,
        }
    }

    fn recompute(&mut self, now: DateTime<Utc>) {
        self.next_due = schedule::next_due(
            &self.policy,
            &DueInputs {
                cron_after: Some(self.cron_after),
                secret_created: self.secret_created,
                renewal_at: self.renewal_at,
            },
            now,
        );
    }

    /// When the entry wants the loop's attention next.
    fn wake_at(&self) -> Option<DateTime<Utc>> {
        if self.running || self.queued || self.quarantined.is_some() || self.retired.is_some() {
            return None;
        }
        if let Some(w) = self.waiting_until {
            return Some(w);
        }
        if self.resume_open {
            return Some(self.backoff_until.unwrap_or(DateTime::<Utc>::MIN_UTC));
        }
        let due = self.next_due.map(|d| d.at)?;
        Some(self.backoff_until.map_or(due, |b| b.max(due)))
    }
}

impl State {
    fn enqueue(&mut self, policy: String, job: Job, priority: u8, fire: Option<DateTime<Utc>>) {
        if let Some(e) = self.entries.get_mut(&policy) {
            e.queued = true;
            if matches!(job, Job::Rotate(_)) && !e.running {
                e.state = "queued";
            }
        }
        let item = Queued {
            policy,
            job,
            priority,
            fire,
        };
        // Stable by priority: behind everything of the same or higher priority.
        let pos = self
            .queue
            .iter()
            .position(|q| q.priority > priority)
            .unwrap_or(self.queue.len());
        self.queue.insert(pos, item);
    }

    /// Acts on a change of leadership (leader election). A follower starts nothing and
    /// drops its queue: the leader schedules, and a stale queued rotation must not run
    /// if leadership comes back. A new leader resumes every policy's open rotation from
    /// the journal (how a half-done rotation of a lost leader is finished) and re-reads
    /// its inputs.
    fn follow_leadership(&mut self, leader: bool) {
        if leader == self.leading {
            return;
        }
        self.leading = leader;
        if leader {
            let names: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, e)| !e.running && !e.queued)
                .map(|(name, _)| name.clone())
                .collect();
            for e in self.entries.values_mut() {
                e.handover = true;
            }
            info!(
                policies = names.len(),
                "Leader: resuming open rotations from the journal."
            );
            for name in names {
                self.enqueue(name, Job::Sync { end_grace: false }, 2, None);
            }
        } else {
            let dropped = self.queue.len();
            for q in self.queue.drain(..) {
                if let Some(e) = self.entries.get_mut(&q.policy) {
                    e.queued = false;
                    if e.state == "queued" {
                        e.state = "idle";
                    }
                }
            }
            info!(
                dropped,
                "Not the leader: no rotation starts here until this replica leads."
            );
        }
    }

    /// Queues every policy whose time has come.
    fn enqueue_due(&mut self, now: DateTime<Utc>) {
        if self.stopping || !self.leading {
            return;
        }
        let mut due = Vec::new();
        for (name, e) in &self.entries {
            if e.running || e.queued || e.quarantined.is_some() || e.retired.is_some() {
                continue;
            }
            if e.waiting_until.is_some_and(|w| w <= now) {
                due.push((name.clone(), Job::Sync { end_grace: false }, None));
                continue;
            }
            if e.waiting_until.is_some() {
                continue;
            }
            if e.resume_open {
                if e.backoff_until.is_none_or(|b| b <= now) {
                    due.push((name.clone(), Job::Sync { end_grace: false }, None));
                }
                continue;
            }
            if let Some(d) = e.next_due
                && d.at <= now
                && e.backoff_until.is_none_or(|b| b <= now)
            {
                due.push((
                    name.clone(),
                    Job::Rotate(RotationRequest {
                        trigger: Trigger::Schedule,
                        actor: "scheduler".into(),
                        reason: Some(format!("scheduled ({})", d.reason.as_str())),
                        ticket: None,
                        authenticated_by: crate::audit::AuthMethod::Schedule,
                        ..Default::default()
                    }),
                    d.fire,
                ));
            }
        }
        for (name, job, fire) in due {
            self.enqueue(name, job, 2, fire);
        }
    }

    /// The first queued job whose policy is not running.
    fn pop_runnable(&mut self) -> Option<Queued> {
        if self.stopping || !self.leading {
            return None;
        }
        let i = self
            .queue
            .iter()
            .position(|q| self.entries.get(&q.policy).is_some_and(|e| !e.running))?;
        self.queue.remove(i)
    }

    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.leading {
            // A follower waits for `set_leader`, which wakes the loop.
            return None;
        }
        self.entries
            .values()
            .filter_map(Entry::wake_at)
            .min()
            .map(|t| t.max(now))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent (if stale) state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn audit_event(&self, event: &AuditEvent) -> bool {
        match &self.audit {
            None => true,
            Some(log) => match log.append(event) {
                Ok(_) => true,
                Err(e) => {
                    error!(error = %e, "Cannot write the audit log.");
                    false
                }
            },
        }
    }

    /// [`Inner::execute`], with a panic in the job caught and recorded
    /// ([`Inner::panicked`]) instead of leaving the policy marked running, its rotation
    /// open in the journal, and no word of it in the status or the metrics.
    async fn execute_guarded(self: &Arc<Self>, job: Queued) {
        use futures::FutureExt;
        let policy = job.policy.clone();
        let what = match job.job {
            Job::Rotate(_) => "rotation",
            Job::Sync { .. } => "sync",
        };
        // Unwind safety: the state behind the lock is made consistent again by
        // `panicked` (the lock itself ignores poisoning), and nothing else the job held
        // outlives it.
        let outcome = std::panic::AssertUnwindSafe(self.execute(job))
            .catch_unwind()
            .await;
        if let Err(payload) = outcome {
            let message = panic_message(payload.as_ref());
            drop(payload);
            self.panicked(&policy, what, &message).await;
        }
    }

    /// Records a job that panicked: logged (policy, rotation id), audited, counted in
    /// `rotor_job_panics_total`, noted on the open rotation in the journal, shown as the
    /// policy's state `failed` with the reason, and treated as a failed attempt (backoff,
    /// then quarantine after `quarantine_after` in a row). The open rotation itself is
    /// left to the journal: the next attempt resumes or rolls it back, as after a crash.
    async fn panicked(self: &Arc<Self>, policy_name: &str, what: &'static str, message: &str) {
        let Some(policy) = self
            .lock()
            .entries
            .get(policy_name)
            .map(|e| Arc::clone(&e.policy))
        else {
            return;
        };
        self.metrics.job_panicked(policy_name, what);
        let open = match self.exec.journal(policy_name).await {
            Ok(r) => r.filter(|r| r.status.is_open()),
            Err(e) => {
                warn!(policy = %policy_name, error = %e, "Cannot read the journal after a panic.");
                None
            }
        };
        let text = match &open {
            Some(r) => format!(
                "internal error: the {what} job panicked ({message}); rotation {} was left {} and resumes from the journal at the next attempt",
                r.rotation_id,
                r.status.as_str()
            ),
            None => format!("internal error: the {what} job panicked ({message})"),
        };
        error!(
            policy = %policy_name,
            job = what,
            rotation_id = open.as_ref().map_or("", |r| r.rotation_id.as_str()),
            rotation_status = open.as_ref().map_or("", |r| r.status.as_str()),
            panic = %message,
            "A job panicked; counted as a failed attempt."
        );
        self.audit_event(&AuditEvent::Agent {
            action: "job_panicked".into(),
            detail: Some(format!("policy {policy_name}: {text}")),
        });
        let mut last = open.clone();
        if let Some(r) = &open {
            match self
                .exec
                .note_interrupted(policy_name, &r.rotation_id, &text)
                .await
            {
                Ok(Some(written)) => last = Some(written),
                Ok(None) => {}
                Err(e) => {
                    warn!(policy = %policy_name, rotation_id = %r.rotation_id, error = %e, "Cannot note the panic in the journal.")
                }
            }
        }
        if let Some(e) = self.lock().entries.get_mut(policy_name) {
            e.running = false;
            if let Some(r) = &last {
                e.last = Some(Box::new(summary(r)));
            }
        }
        self.failed(&policy, &text, false);
        if what == "rotation" {
            self.maybe_quarantine(&policy, None).await;
        }
    }

    async fn execute(self: &Arc<Self>, job: Queued) {
        let Some(policy) = self
            .lock()
            .entries
            .get(&job.policy)
            .map(|e| Arc::clone(&e.policy))
        else {
            return;
        };
        match job.job {
            Job::Sync { end_grace } => {
                // A record that cannot be read (Vault down, or corrupt) keeps what the
                // agent knew; the rotation itself reads it again and refuses to start.
                match self.exec.retired(&policy.name).await {
                    Ok(r) => {
                        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
                            e.retired = r
                                .filter(|r| r.state.is_inactive())
                                .map(|r| retired_text(&r));
                        }
                    }
                    Err(err) => {
                        warn!(policy = %policy.name, error = %err, "Cannot read the policy's retirement record.")
                    }
                }
                match self.exec.quarantine(&policy.name).await {
                    Ok(q) => {
                        self.metrics.set_quarantined(&policy.name, q.is_some());
                        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
                            e.quarantined = q.map(Box::new);
                        }
                    }
                    Err(err) => {
                        warn!(policy = %policy.name, error = %err, "Cannot read the policy's quarantine record.")
                    }
                }
                if policy.spec.on_demand.approval.is_some()
                    && let Err(e) = self.approvals.load(&policy.name).await
                {
                    warn!(policy = %policy.name, error = %e, "Cannot read the policy's pending approval request.");
                }
                let result = self.exec.resume(&policy, end_grace).await;
                match result {
                    Ok(Some(r)) => self.finished(&policy, std::slice::from_ref(&r)),
                    Ok(None) => {
                        // Nothing open: show the last rotation, if any. It ended
                        // earlier (its records were written then), so nothing is
                        // audited, counted or notified again.
                        let last = self.exec.journal(&policy.name).await.ok().flatten();
                        if let Some(r) = &last {
                            self.restore_gauges(&policy, r);
                        }
                        self.settle(&policy, last.as_slice(), false);
                    }
                    Err(e) => self.failed(&policy, &e.to_string(), e.is_unanswered()),
                }
            }
            Job::Rotate(request) => {
                // The engine records the request before it plans anything, and each
                // run's end ([`crate::evidence`]).
                match self.exec.rotate(&policy, request.clone()).await {
                    Ok(outcome) => {
                        if let (Some(id), Some(r)) = (&request.approval_request, &outcome.rotation)
                            && let Err(e) = self.approvals.set_rotation(id, &r.rotation_id).await
                        {
                            warn!(request = %id, error = %e, "Cannot note the rotation in its approval request.");
                        }
                        let promoted = outcome.succeeded();
                        let ran: Vec<Rotation> = outcome
                            .resumed
                            .into_iter()
                            .chain(outcome.rotation)
                            .collect();
                        self.finished(&policy, &ran);
                        if promoted && let Some(last) = ran.last() {
                            self.cascade(&policy, last, &request);
                        }
                        let immediate = ran.iter().rev().find_map(|r| {
                            immediate_reason(r).map(|why| (why, r.rotation_id.clone()))
                        });
                        self.maybe_quarantine(&policy, immediate).await;
                    }
                    Err(EngineError::Retired {
                        state,
                        since,
                        actor,
                        reason,
                        ..
                    }) => {
                        // Retired elsewhere (e.g. a local `rotor retire`): not a failure.
                        info!(policy = %policy.name, "The policy is retired; no rotation.");
                        if let Some(entry) = self.lock().entries.get_mut(&policy.name) {
                            entry.retired = Some(retired_words(state, &since, &actor, &reason));
                            entry.state = "retired";
                        }
                    }
                    Err(EngineError::Evidence { .. }) => {
                        // Not started, so not a failed rotation: no quarantine count.
                        self.failed(
                            &policy,
                            "the audit log cannot be written; the rotation was not started",
                            false,
                        );
                    }
                    Err(e) => {
                        self.failed(&policy, &crate::error_chain(&e), e.is_unanswered());
                        if matches!(e, EngineError::Pending { .. })
                            && let Some(entry) = self.lock().entries.get_mut(&policy.name)
                        {
                            // Its open rotation is resumed again after the backoff.
                            entry.resume_open = true;
                        }
                        self.maybe_quarantine(&policy, None).await;
                    }
                }
            }
        }
        self.refresh_inputs(&policy).await;
    }

    /// Queues the policy's `spec.cascade` dependents under the same trigger (a
    /// compromise stays a compromise), their reason naming the rotation that caused them.
    fn cascade(&self, policy: &ValidatedPolicy, parent: &Rotation, request: &RotationRequest) {
        if policy.spec.cascade.is_empty() {
            return;
        }
        let priority = if request.trigger == Trigger::Compromise {
            0
        } else {
            1
        };
        let mut st = self.lock();
        for dep in &policy.spec.cascade {
            let Some(e) = st.entries.get(dep) else {
                continue;
            };
            if e.queued
                || e.retired.is_some()
                || (e.quarantined.is_some() && request.trigger != Trigger::Compromise)
            {
                continue;
            }
            let req = crate::engine::cascade::dependent(&policy.name, &parent.rotation_id, request);
            info!(policy = %dep, from = %policy.name, "Cascading rotation queued.");
            st.enqueue(dep.clone(), Job::Rotate(req), priority, None);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Quarantines the policy when `immediate` says so or it has failed
    /// `quarantine_after` times in a row: no automatic attempt until it is released.
    async fn maybe_quarantine(
        &self,
        policy: &ValidatedPolicy,
        immediate: Option<(String, String)>,
    ) {
        let q = {
            let st = self.lock();
            let Some(e) = st.entries.get(&policy.name) else {
                return;
            };
            if e.quarantined.is_some() {
                return;
            }
            let (reason, rotation_id) = match immediate {
                Some((why, id)) => (why, Some(id)),
                None if e.failures >= self.config.quarantine_after.max(1) => (
                    format!(
                        "{} consecutive failed rotations; last error: {}",
                        e.failures,
                        e.error.as_deref().unwrap_or("unknown")
                    ),
                    e.last.as_ref().map(|l| l.rotation_id.clone()),
                ),
                None => return,
            };
            Quarantine {
                since: rfc3339(self.clock.now()),
                reason,
                rotation_id,
                failures: e.failures,
            }
        };
        error!(policy = %policy.name, reason = %q.reason, "Policy quarantined: no automatic rotation until a person releases it.");
        if let Err(err) = self.exec.set_quarantine(&policy.name, Some(&q)).await {
            error!(policy = %policy.name, error = %err, "Cannot store the quarantine in Vault; it holds in this agent only.");
        }
        self.metrics.set_quarantined(&policy.name, true);
        self.audit_event(&AuditEvent::Agent {
            action: "quarantined".into(),
            detail: Some(format!("policy {}: {}", policy.name, q.reason)),
        });
        let mut n = Notification::new(NotifyEvent::Quarantine, policy.name.clone());
        n.rotation_id = q.rotation_id.clone();
        n.detail = Some(q.reason.clone());
        self.notifier.send(&policy.spec.notify, n);
        if let Some(e) = self.lock().entries.get_mut(&policy.name) {
            e.quarantined = Some(Box::new(q));
            e.state = "quarantined";
        }
    }

    async fn refresh_inputs(&self, policy: &ValidatedPolicy) {
        let inputs = self.exec.inputs(policy).await;
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(e) = st.entries.get_mut(&policy.name) else {
            return;
        };
        e.running = false;
        match inputs {
            Ok((created, renewal)) => {
                if std::mem::take(&mut e.handover)
                    && let Some(c) = created
                {
                    e.cron_after = e.cron_after.max(c);
                }
                e.secret_created = created;
                e.renewal_at = renewal;
                if let Some(c) = created {
                    self.metrics.set_secret_created(
                        &policy.name,
                        policy.spec.credential.kind(),
                        c.timestamp() as f64,
                    );
                }
            }
            Err(err) => {
                warn!(policy = %policy.name, error = %err, "Cannot read the policy's current secret.")
            }
        }
        e.recompute(now);
        self.metrics
            .set_next_rotation(&policy.name, e.next_due.map(|d| d.at.timestamp() as f64));
        self.metrics.set_max_age(
            &policy.name,
            policy
                .spec
                .schedule
                .as_ref()
                .and_then(|s| s.max_age)
                .map(|d| d.as_secs_f64()),
        );
    }

    /// Shows what the rotations that ran in this process came to: the policy's state
    /// and its state gauges. Their audit records, counters and notifications came
    /// from the engine's evidence as they ended ([`crate::evidence`]).
    fn finished(&self, policy: &ValidatedPolicy, ran: &[Rotation]) {
        let now = self.clock.now();
        for r in ran {
            self.metrics
                .set_old_credential_valid(&policy.name, old_accepted(r));
            if r.status == Status::Completed {
                self.metrics
                    .set_last_success(&policy.name, now.timestamp() as f64);
            }
        }
        self.settle(policy, ran, true);
    }

    /// The state gauges a rotation that ended before this process started leaves:
    /// whether the old credential was still valid, and when it last succeeded.
    fn restore_gauges(&self, policy: &ValidatedPolicy, r: &Rotation) {
        self.metrics
            .set_old_credential_valid(&policy.name, old_accepted(r));
        if r.status == Status::Completed
            && let Ok(t) = DateTime::parse_from_rfc3339(&r.updated_at)
        {
            self.metrics
                .set_last_success(&policy.name, t.timestamp() as f64);
        }
    }

    /// Shows the last of `ran` as the policy's state. `fresh`: it ran in this process,
    /// so a failure counts toward backoff (and quarantine); a rotation read back from
    /// the journal at start-up was counted by the process that ran it.
    fn settle(&self, policy: &ValidatedPolicy, ran: &[Rotation], fresh: bool) {
        let now = self.clock.now();
        let mut st = self.lock();
        for r in ran {
            st.history.retain(|h| h.rotation_id != r.rotation_id);
            st.history.push_back(r.clone());
            while st.history.len() > HISTORY {
                st.history.pop_front();
            }
        }
        let Some(e) = st.entries.get_mut(&policy.name) else {
            return;
        };
        let Some(last) = ran.last() else {
            e.state = "idle";
            e.resume_open = false;
            return;
        };
        e.last = Some(Box::new(summary(last)));
        e.pending = last
            .consumers
            .iter()
            .filter(|c| c.state == "pending")
            .map(|c| c.consumer.clone())
            .collect();
        e.waiting_until = None;
        e.error = last.error.clone();
        e.resume_open = last.status.is_open() && !last.waiting_for_grace();
        let ok = matches!(last.status, Status::Completed) || last.waiting_for_grace();
        if last.waiting_for_grace() {
            e.state = "waiting";
            e.waiting_until = last
                .revoke_after
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
        } else if last.status.is_open() {
            e.state = "pending";
        } else if ok {
            e.state = "idle";
        } else {
            e.state = "failed";
        }
        if ok {
            e.failures = 0;
            e.outages = 0;
            e.backoff_until = None;
        } else if fresh {
            self.back_off(e, now, unanswered(last));
        }
    }

    /// A job that did not run to its end. `unanswered`: only because an outside system
    /// gave no answer ([`EngineError::is_unanswered`]), which never quarantines.
    fn failed(&self, policy: &ValidatedPolicy, error: &str, unanswered: bool) {
        warn!(policy = %policy.name, error = %error, unanswered, "Rotation did not run to its end.");
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(&policy.name) {
            e.state = "failed";
            e.error = Some(error.to_owned());
            self.back_off(e, now, unanswered);
        }
    }

    /// Counts a failed attempt (toward quarantine unless `unanswered`) and sets the
    /// backoff, which grows with every failed attempt of either sort.
    fn back_off(&self, e: &mut Entry, now: DateTime<Utc>, unanswered: bool) {
        if unanswered {
            e.outages = e.outages.saturating_add(1);
        } else {
            e.failures = e.failures.saturating_add(1);
        }
        let attempts = e.failures.saturating_add(e.outages).min(64);
        let base = self.config.backoff_base.as_secs_f64() * 2f64.powi(attempts as i32 - 1);
        let capped = base.min(self.config.backoff_max.as_secs_f64());
        let jittered = capped * rand::rng().random_range(0.5..=1.0);
        e.backoff_until = Some(crate::schedule::saturating_after(
            now,
            Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX),
        ));
        // A failed scheduled rotation is retried after the backoff, not at the next
        // cron fire only.
        if e.next_due.is_none_or(|d| d.at > now) && e.policy.spec.schedule.is_some() {
            e.next_due = Some(Due {
                at: now,
                fire: None,
                reason: schedule::DueKind::Cron,
            });
        }
    }

    /// Reloads the policy paths when they changed; an invalid set is rejected whole.
    fn maybe_reload(&self) {
        if self.config.policy_paths.is_empty() {
            return;
        }
        let now_stamp = stamp(&self.config.policy_paths);
        if self.lock().policy_stamp == now_stamp {
            return;
        }
        match crate::policy::load_paths(&self.config.policy_paths) {
            Err(errors) => {
                let detail = errors.to_string();
                error!(errors = %detail, "The changed policies are invalid; the previous set keeps running.");
                self.metrics.reload(false);
                self.audit_event(&AuditEvent::Agent {
                    action: "reload_rejected".into(),
                    detail: Some(detail),
                });
                self.lock().policy_stamp = now_stamp;
            }
            Ok(set) => {
                let now = self.clock.now();
                let mut st = self.lock();
                st.policy_stamp = now_stamp;
                let names: Vec<String> = set.iter().map(|p| p.name.clone()).collect();
                let removed: Vec<String> = st
                    .entries
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for name in &removed {
                    if st.entries.get(name).is_some_and(|e| !e.running) {
                        st.entries.remove(name);
                        self.metrics.forget_policy(name);
                    }
                }
                st.queue.retain(|q| !removed.contains(&q.policy));
                let mut added = Vec::new();
                for p in set.iter() {
                    match st.entries.get_mut(&p.name) {
                        Some(e) => {
                            e.policy = Arc::new(p.clone());
                            e.recompute(now);
                        }
                        None => {
                            st.entries
                                .insert(p.name.clone(), Entry::new(Arc::new(p.clone()), now));
                            added.push(p.name.clone());
                        }
                    }
                }
                for name in added {
                    st.enqueue(name, Job::Sync { end_grace: false }, 2, None);
                }
                let count = st.entries.len();
                drop(st);
                self.metrics.set_policies_loaded(count);
                self.metrics.reload(true);
                // The parse of the whole set is garbage now.
                super::return_free_memory();
                info!(policies = count, "Policies reloaded.");
                self.audit_event(&AuditEvent::Agent {
                    action: "reloaded".into(),
                    detail: Some(format!("{count} policies")),
                });
                self.wake.notify_one();
            }
        }
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
    retired_words(r.state.as_str(), &r.started_at, &r.actor, &r.reason)
}

fn retired_words(state: &str, since: &str, actor: &str, reason: &str) -> String {
    format!("{state} since {since} by {actor}: {reason}")
}

/// The API's answer for an engine error of a retire or enable.
fn retire_error(name: &str, e: EngineError) -> ControlError {
    match e {
        EngineError::RetireIncomplete { what, .. } => ControlError::Incomplete {
            policy: name.to_owned(),
            what,
        },
        EngineError::Pending { .. }
        | EngineError::Retired { .. }
        | EngineError::NotRetired { .. }
        | EngineError::Credential(crate::credentials::CredentialError::CannotDisable(_)) => {
            ControlError::Busy(e.to_string())
        }
        EngineError::Evidence { .. } => ControlError::Audit(
            "the rotation of the enable cannot be recorded; nothing was changed".into(),
        ),
        other => ControlError::Internal(crate::error_chain(&other)),
    }
}

impl Agent {
    /// Marks the policy busy with `what` (`retiring`, `enabling`), or says why not.
    /// Returns the policy and the state it had.
    fn claim(
        &self,
        name: &str,
        what: &'static str,
    ) -> Result<(Arc<ValidatedPolicy>, &'static str), ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        let mut st = self.inner.lock();
        if st.stopping {
            return Err(ControlError::Busy("the agent is shutting down".into()));
        }
        let e = st
            .entries
            .get_mut(name)
            .ok_or_else(|| ControlError::UnknownPolicy(name.to_owned()))?;
        if e.running || e.queued {
            return Err(ControlError::Busy(format!(
                "policy {name} is {}; try again when it is done",
                if e.running { e.state } else { "queued" }
            )));
        }
        e.running = true;
        let before = std::mem::replace(&mut e.state, what);
        Ok((Arc::clone(&e.policy), before))
    }

    /// Gives back a claim that did nothing.
    async fn unclaim(&self, policy: &ValidatedPolicy, state: &'static str) {
        if let Some(e) = self.inner.lock().entries.get_mut(&policy.name) {
            e.state = state;
        }
        self.inner.refresh_inputs(policy).await;
    }

    /// Runs `work` on its own task, so a caller that goes away (an HTTP client
    /// disconnecting) cannot cut a retirement or an enable short between two steps.
    async fn detached<T: Send + 'static>(
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, ControlError> {
        tokio::spawn(work)
            .await
            .map_err(|e| ControlError::Internal(format!("the task failed: {e}")))
    }
}

/// A digest of the name, modification time and size of every policy file under the
/// policy paths: what the reload poll compares. `clear` forces the next poll to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PolicyStamp(Option<(u64, usize)>);

impl PolicyStamp {
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// [`PolicyStamp`] of `paths`. Order-independent (a sum of per-file hashes), so it
/// needs no sorting, and directory entries are read relative to their directory: with
/// thousands of policies this poll was the idle agent's main cost.
fn stamp(paths: &[PathBuf]) -> PolicyStamp {
    use std::hash::{DefaultHasher, Hash, Hasher};
    fn entry(path: &std::path::Path, meta: &std::fs::Metadata) -> u64 {
        let mut h = DefaultHasher::new();
        path.hash(&mut h);
        meta.modified()
            .unwrap_or(std::time::UNIX_EPOCH)
            .hash(&mut h);
        meta.len().hash(&mut h);
        h.finish()
    }
    let is_policy = |p: &std::path::Path| p.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let (mut sum, mut files) = (0u64, 0usize);
    let mut dirs = Vec::new();
    for p in paths {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            dirs.push(p.clone());
        } else if is_policy(p) {
            sum = sum.wrapping_add(entry(p, &meta));
            files += 1;
        }
    }
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            // Follows symbolic links, as `std::fs::metadata` does.
            let meta = match e.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(&path),
                _ => e.metadata(),
            };
            let Ok(meta) = meta else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path);
            } else if is_policy(&path) {
                sum = sum.wrapping_add(entry(&path, &meta));
                files += 1;
            }
        }
    }
    PolicyStamp(Some((sum, files)))
}

#[async_trait::async_trait]
impl Control for Agent {
    async fn policies(&self) -> Vec<PolicyView> {
        let now = self.inner.clock.now();
        let st = self.inner.lock();
        st.entries
            .values()
            .map(|e| PolicyView {
                name: e.policy.name.clone(),
                kind: e.policy.spec.credential.kind().to_owned(),
                labels: (*e.policy.labels).clone(),
                state: if e.running && matches!(e.state, "retiring" | "enabling") {
                    e.state.into()
                } else if e.retired.is_some() {
                    "retired".into()
                } else if e.quarantined.is_some() {
                    "quarantined".into()
                } else if e.backoff_until.is_some_and(|b| b > now) && !e.running {
                    "backoff".into()
                } else {
                    e.state.into()
                },
                last_rotation: e.last.as_deref().cloned(),
                secret_created_at: e.secret_created.map(rfc3339),
                age_seconds: e
                    .secret_created
                    .and_then(|c| (now - c).to_std().ok())
                    .map(|d| d.as_secs()),
                next_due: e.next_due.map(|d| rfc3339(d.at)),
                pending_consumers: e.pending.clone(),
                error: e
                    .retired
                    .clone()
                    .or_else(|| {
                        e.quarantined
                            .as_ref()
                            .map(|q| format!("quarantined since {}: {}", q.since, q.reason))
                    })
                    .or_else(|| e.error.clone()),
            })
            .collect()
    }

    fn policy_meta(&self, name: &str) -> Option<PolicyMeta> {
        let st = self.inner.lock();
        st.entries.get(name).map(|e| PolicyMeta {
            name: e.policy.name.clone(),
            labels: (*e.policy.labels).clone(),
            require_reason: e.policy.spec.on_demand.require_reason,
            require_ticket: e.policy.spec.on_demand.require_ticket,
        })
    }

    async fn rotate(
        &self,
        name: &str,
        mut request: RotationRequest,
    ) -> Result<Accepted, ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        if let Some(pending) = self.approval_gate(name, &mut request).await? {
            return Ok(pending);
        }
        let mut st = self.inner.lock();
        if st.stopping {
            return Err(ControlError::Busy("the agent is shutting down".into()));
        }
        let Some(e) = st.entries.get(name) else {
            return Err(ControlError::UnknownPolicy(name.to_owned()));
        };
        if let Some(what) = e
            .policy
            .spec
            .on_demand
            .missing(request.reason.as_deref(), request.ticket.as_deref())
        {
            return Err(ControlError::Incomplete {
                policy: name.to_owned(),
                what,
            });
        }
        let compromise = request.trigger == Trigger::Compromise;
        if let Some(r) = &e.retired {
            return Err(ControlError::Busy(format!(
                "policy {name} is {r}; `rotor enable {name} --reason …` makes it rotate again"
            )));
        }
        if let (false, Some(q)) = (compromise, &e.quarantined) {
            return Err(ControlError::Busy(format!(
                "policy {name} is quarantined since {}: {}; `rotor release {name} --reason …` resumes it",
                q.since, q.reason
            )));
        }
        if let (false, Some(until)) = (compromise, e.waiting_until) {
            return Err(ControlError::Busy(format!(
                "the previous rotation of {name} keeps the old credential valid until {} (grace period); rotate with compromise to end it now",
                rfc3339(until)
            )));
        }
        if !compromise && (e.running || e.queued) {
            return Err(ControlError::Busy(format!(
                "a rotation of {name} is already {}",
                if e.running { "running" } else { "queued" }
            )));
        }
        if compromise {
            // A compromise replaces whatever was queued for the policy.
            st.queue.retain(|q| q.policy != name);
        }
        st.enqueue(
            name.to_owned(),
            Job::Rotate(request),
            if compromise { 0 } else { 1 },
            None,
        );
        drop(st);
        self.inner.wake.notify_one();
        Ok(Accepted {
            rotation_id: None,
            state: "queued".into(),
            ..Default::default()
        })
    }

    async fn rotation(&self, id: &str) -> Result<Option<Rotation>, ControlError> {
        let (found, candidates) = {
            let st = self.inner.lock();
            let found = st.history.iter().find(|r| r.rotation_id == id).cloned();
            let candidates: Vec<String> = st
                .entries
                .values()
                .filter(|e| e.last.as_ref().is_some_and(|l| l.rotation_id == id))
                .map(|e| e.policy.name.clone())
                .collect();
            (found, candidates)
        };
        if found.is_some() {
            return Ok(found);
        }
        for name in candidates {
            if let Some(r) = self
                .inner
                .exec
                .journal(&name)
                .await
                .map_err(|e| ControlError::Internal(e.to_string()))?
                && r.rotation_id == id
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    async fn release(&self, name: &str, actor: &str, reason: &str) -> Result<(), ControlError> {
        {
            let st = self.inner.lock();
            let e = st
                .entries
                .get(name)
                .ok_or_else(|| ControlError::UnknownPolicy(name.to_owned()))?;
            if e.quarantined.is_none() {
                return Err(ControlError::Busy(format!(
                    "policy {name} is not quarantined"
                )));
            }
        }
        self.inner
            .exec
            .set_quarantine(name, None)
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let now = self.inner.clock.now();
        {
            let mut st = self.inner.lock();
            if let Some(e) = st.entries.get_mut(name) {
                e.quarantined = None;
                e.failures = 0;
                e.outages = 0;
                e.backoff_until = None;
                e.state = "idle";
                e.recompute(now);
            }
        }
        self.inner.metrics.set_quarantined(name, false);
        self.inner.audit_event(&AuditEvent::Agent {
            action: "released".into(),
            detail: Some(format!("policy {name} released by {actor}: {reason}")),
        });
        info!(policy = %name, actor = %actor, "Quarantine lifted.");
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn retire(&self, name: &str, request: RetireRequest) -> Result<Retirement, ControlError> {
        let (policy, before) = self.claim(name, "retiring")?;
        let result = {
            let (inner, policy) = (Arc::clone(&self.inner), Arc::clone(&policy));
            Self::detached(async move { inner.exec.retire(&policy, request).await }).await
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                self.inner.failed(&policy, &e.to_string(), false);
                self.inner.refresh_inputs(&policy).await;
                return Err(e);
            }
        };
        {
            let mut st = self.inner.lock();
            if let Some(e) = st.entries.get_mut(name) {
                match &result {
                    Ok(r) => {
                        e.retired = r.state.is_inactive().then(|| retired_text(r));
                        e.state = if r.state == crate::engine::RetireState::Retired {
                            "retired"
                        } else {
                            "failed"
                        };
                        e.error = r.error.clone();
                    }
                    // Refused (or Vault failed): a record written so far still makes
                    // the engine refuse rotations, which marks the entry retired.
                    Err(_) => e.state = before,
                }
            }
        }
        self.inner.refresh_inputs(&policy).await;
        match &result {
            Ok(r) => {
                info!(policy = %name, state = r.state.as_str(), actor = %r.actor, "Retirement ended.")
            }
            Err(e) => warn!(policy = %name, error = %e, "Retirement did not run."),
        }
        self.inner.wake.notify_one();
        result.map_err(|e| retire_error(name, e))
    }

    async fn enable(
        &self,
        name: &str,
        request: RetireRequest,
    ) -> Result<EnableOutcome, ControlError> {
        let (policy, before) = self.claim(name, "enabling")?;
        let retired = self.inner.exec.retired(name).await;
        if !matches!(&retired, Ok(Some(r)) if r.state.is_inactive()) {
            self.unclaim(&policy, before).await;
            return Err(match retired {
                Err(e) => ControlError::Internal(crate::error_chain(&e)),
                Ok(_) => ControlError::Busy(format!(
                    "policy {name} is not retired; there is nothing to enable"
                )),
            });
        }
        let result = {
            let (inner, policy) = (Arc::clone(&self.inner), Arc::clone(&policy));
            Self::detached(async move { inner.exec.enable(&policy, request).await }).await
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                self.inner.failed(&policy, &e.to_string(), false);
                self.inner.refresh_inputs(&policy).await;
                return Err(e);
            }
        };
        match &result {
            Ok(outcome) => {
                let ran: Vec<Rotation> = outcome
                    .rotation
                    .iter()
                    .flat_map(|o| o.resumed.iter().chain(o.rotation.iter()))
                    .cloned()
                    .collect();
                self.inner.finished(&policy, &ran);
                let mut st = self.inner.lock();
                if let Some(e) = st.entries.get_mut(name) {
                    e.retired = outcome
                        .record
                        .state
                        .is_inactive()
                        .then(|| retired_text(&outcome.record));
                    if e.retired.is_some() {
                        e.state = "retired";
                        e.error = outcome.record.error.clone();
                    }
                }
            }
            Err(err) => {
                let mut st = self.inner.lock();
                if let Some(e) = st.entries.get_mut(name) {
                    e.state = if e.retired.is_some() {
                        "retired"
                    } else {
                        "failed"
                    };
                    e.error = Some(crate::error_chain(err));
                }
            }
        }
        self.inner.refresh_inputs(&policy).await;
        self.inner.wake.notify_one();
        result.map_err(|e| retire_error(name, e))
    }

    async fn approval_request(&self, id: &str) -> Result<Option<ApprovalRecord>, ControlError> {
        self.inner.approvals.get(id, self.inner.clock.now()).await
    }

    async fn approve(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
    ) -> Result<Accepted, ControlError> {
        self.approve_request(id, caller, reason).await
    }

    fn readiness(&self) -> Readiness {
        let problem = self.inner.health.problem();
        let st = self.inner.lock();
        let leader = self.inner.leader.load(Ordering::SeqCst);
        let reason = if st.stopping {
            Some("shutting down".into())
        } else if !st.started {
            Some("resuming open rotations".into())
        } else {
            problem
        };
        Readiness {
            ready: reason.is_none(),
            leader,
            reason,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Four-eyes approval (see `super::approval`).

impl Agent {
    /// For a policy that requires approval, turns an on-demand request into a pending
    /// approval request and answers it (`Some`); lets through scheduled requests,
    /// approved ones and a break-glass compromise (`None`). Clears `break_glass` where
    /// it skips nothing, so a rotation records it only when approval was skipped.
    async fn approval_gate(
        &self,
        name: &str,
        request: &mut RotationRequest,
    ) -> Result<Option<Accepted>, ControlError> {
        let (rule, notify) = {
            let st = self.inner.lock();
            let Some(e) = st.entries.get(name) else {
                return Err(ControlError::UnknownPolicy(name.to_owned()));
            };
            (
                e.policy.spec.on_demand.approval.clone(),
                e.policy.spec.notify.clone(),
            )
        };
        let compromise = request.trigger == Trigger::Compromise;
        let Some(rule) = rule.filter(|_| request.trigger != Trigger::Schedule) else {
            request.break_glass = false;
            return Ok(None);
        };
        if compromise && request.break_glass {
            warn!(policy = %name, actor = %request.actor, "Break-glass compromise rotation: the required approval is skipped.");
            return Ok(None);
        }
        request.break_glass = false;
        // Only `approve_request` sets `approval_request`, once the request has its
        // approvals and is marked used (the API never does).
        if request.approval_request.is_some()
            && !request.approvers.is_empty()
            && !request.approvers.contains(&request.actor)
        {
            return Ok(None);
        }
        {
            let st = self.inner.lock();
            if st.stopping {
                return Err(ControlError::Busy("the agent is shutting down".into()));
            }
            if let Some(e) = st.entries.get(name) {
                if let Some(what) = e
                    .policy
                    .spec
                    .on_demand
                    .missing(request.reason.as_deref(), request.ticket.as_deref())
                {
                    return Err(ControlError::Incomplete {
                        policy: name.to_owned(),
                        what,
                    });
                }
                if let (false, Some(q)) = (compromise, &e.quarantined) {
                    return Err(ControlError::Busy(format!(
                        "policy {name} is quarantined since {}: {}; `rotor release {name} --reason …` resumes it",
                        q.since, q.reason
                    )));
                }
            }
        }
        let now = self.inner.clock.now();
        let created = self
            .inner
            .approvals
            .create(name, &rule, request, now)
            .await?;
        let record = &created.record;
        let who: Vec<String> = rule.approvers.iter().map(ToString::to_string).collect();
        let detail = format!(
            "request {} by {} needs {} approval(s) from [{}] before {}",
            record.id,
            record.requester,
            record.required,
            who.join(", "),
            record.expires_at
        );
        info!(policy = %name, request = %record.id, requester = %record.requester, "On-demand rotation waits for approval.");
        self.inner.audit_event(&AuditEvent::Agent {
            action: "approval_requested".into(),
            detail: Some(format!("policy {name}: {detail}")),
        });
        self.inner.notifier.send(
            &notify,
            record.notification(NotifyEvent::ApprovalRequested, detail),
        );
        if let Some(old) = &created.superseded {
            let detail = format!("superseded by request {}", record.id);
            self.inner.audit_event(&AuditEvent::Agent {
                action: "approval_superseded".into(),
                detail: Some(format!("policy {name}: request {} {detail}", old.id)),
            });
            self.inner.notifier.send(
                &notify,
                old.notification(NotifyEvent::ApprovalExpired, detail),
            );
        }
        // The sweep may have to wake earlier than it planned.
        self.inner.wake.notify_one();
        Ok(Some(Accepted {
            rotation_id: None,
            state: "pending_approval".into(),
            request_id: Some(record.id.clone()),
            expires_at: Some(record.expires_at.clone()),
            required: Some(record.required),
            approvals: Some(0),
        }))
    }

    /// [`Control::approve`]: records the approval; with enough of them the request is
    /// used (written first) and its rotation queued through [`Control::rotate`]. If the
    /// rotation cannot be queued, the request is pending again and the error returned.
    async fn approve_request(
        &self,
        id: &str,
        caller: &ApprovalCaller,
        reason: Option<&str>,
    ) -> Result<Accepted, ControlError> {
        if !self.inner.leader.load(Ordering::SeqCst) {
            return Err(ControlError::NotLeader);
        }
        let rule_of = |policy: &str| {
            self.inner
                .lock()
                .entries
                .get(policy)
                .and_then(|e| e.policy.spec.on_demand.approval.clone())
        };
        let now = self.inner.clock.now();
        let approved = self
            .inner
            .approvals
            .approve(id, caller, reason, rule_of, now)
            .await?;
        let record = &approved.record;
        let count = u32::try_from(record.approvals.len()).unwrap_or(u32::MAX);
        info!(policy = %record.policy, request = %id, approver = %caller.actor, approvals = count, required = record.required, "Approval recorded.");
        self.inner.audit_event(&AuditEvent::Agent {
            action: "approval_granted".into(),
            detail: Some(format!(
                "policy {}: request {id} approved by {} ({count} of {})",
                record.policy, caller.actor, record.required
            )),
        });
        let answer = |state: &str, rotation_id: Option<String>| Accepted {
            rotation_id,
            state: state.to_owned(),
            request_id: Some(record.id.clone()),
            expires_at: Some(record.expires_at.clone()),
            required: Some(record.required),
            approvals: Some(count),
        };
        if !approved.complete {
            return Ok(answer("pending_approval", None));
        }
        match self.rotate(&record.policy, record.rotation_request()).await {
            Ok(accepted) => Ok(answer(&accepted.state, accepted.rotation_id)),
            Err(e) => {
                warn!(policy = %record.policy, request = %id, error = %e, "The approved rotation could not be queued; the request is pending again.");
                if let Err(err) = self.inner.approvals.reopen(&approved).await {
                    error!(request = %id, error = %err, "Cannot reopen the approval request.");
                }
                Err(e)
            }
        }
    }
}

impl Inner {
    /// Marks an approval request expired (once), audits and notifies it.
    async fn expire_approval(&self, policy: &str, id: &str) {
        let now = self.clock.now();
        match self.approvals.expire(policy, id, now).await {
            Ok(Some(record)) => {
                let detail = format!(
                    "request {id} by {} expired at {} with {} of {} approval(s)",
                    record.requester,
                    record.expires_at,
                    record.approvals.len(),
                    record.required
                );
                info!(policy = %policy, request = %id, "Approval request expired.");
                self.audit_event(&AuditEvent::Agent {
                    action: "approval_expired".into(),
                    detail: Some(format!("policy {policy}: {detail}")),
                });
                let targets = self
                    .lock()
                    .entries
                    .get(policy)
                    .map(|e| e.policy.spec.notify.clone())
                    .unwrap_or_default();
                self.notifier.send(
                    &targets,
                    record.notification(NotifyEvent::ApprovalExpired, detail),
                );
            }
            Ok(None) => {}
            Err(e) => {
                warn!(policy = %policy, request = %id, error = %e, "Cannot mark the approval request expired; trying again later.")
            }
        }
        self.wake.notify_one();
    }
}
