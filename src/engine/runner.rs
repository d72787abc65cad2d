//! The one journaled step runner. A rotation and a retirement both drive their steps
//! through [`Engine::run_steps`]: each step is journaled as begun before its side
//! effect (where the record says it must be), passes its crash-test failpoints
//! ([`failpoint`]), is timed, retried with jitter on a transient failure, and its
//! outcome is recorded and reported ([`Event::StepBegun`], [`Event::StepEnded`]).
//! What differs between the two is in two places: how each record is journaled (which
//! step comes next, its failpoints, whether a repeated step restarts its clock) is
//! its [`Journaled`] impl, both here; what each run does (each step's effect, what a
//! failure means, what success changes) is the [`StepRun`] it implements.

use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{info, warn};

use super::failpoint::{self, Moment};
use super::{Check, Engine, EngineError, StepOutcome, StepRecord, Verification, now};
use crate::credentials::{AuthOutcome, CredentialError};
use crate::evidence::{Event, Subject};
use crate::policy::ConsumerFacts;
use crate::state::records::{RetireStep, RetireStepRecord, Retirement, Rotation, Step};
use crate::vault::VaultError;

/// What a step that did not fail did.
pub(super) enum StepResult {
    /// Done; the journaled detail.
    Ok(String),
    /// Nothing to do for this credential; why.
    Skipped(String),
}

impl StepResult {
    /// Done with `detail`, or skipped (`why`) when the effect had nothing to do.
    pub(super) fn done_or_skipped(detail: Option<String>, why: &str) -> Self {
        match detail {
            Some(detail) => StepResult::Ok(detail),
            None => StepResult::Skipped(why.to_owned()),
        }
    }
}

/// Why a step failed, and what the engine should do about it.
pub(super) struct StepFailure {
    pub(super) message: String,
    /// Worth retrying in this run (network, 5xx).
    pub(super) transient: bool,
    /// Stop for good: a rotation after promote (e.g. the old credential still
    /// accepted) fails rather than staying open for a later retry; a retirement whose
    /// credential still works fails and starts over.
    pub(super) fatal: bool,
    /// An outside system gave no answer (timeout, refused connection, 5xx): no
    /// evidence about the credential either way. Journaled as
    /// [`super::Rotation::unanswered`]; it never counts toward quarantine.
    pub(super) unanswered: bool,
}

impl StepFailure {
    /// A failure that ends the run for good.
    pub(super) fn fatal(message: impl Into<String>) -> Self {
        StepFailure {
            message: message.into(),
            transient: false,
            fatal: true,
            unanswered: false,
        }
    }

    /// [`StepFailure::fatal`] for a check the target did not answer.
    pub(super) fn fatal_unanswered(message: impl Into<String>) -> Self {
        StepFailure {
            unanswered: true,
            ..StepFailure::fatal(message)
        }
    }

    /// A failure that is not fatal; `transient` ones are retried, and count as no
    /// answer.
    pub(super) fn retryable(message: impl Into<String>, transient: bool) -> Self {
        StepFailure {
            message: message.into(),
            transient,
            fatal: false,
            unanswered: transient,
        }
    }
}

impl From<CredentialError> for StepFailure {
    fn from(e: CredentialError) -> Self {
        StepFailure::retryable(crate::error_chain(&e), e.is_transient())
    }
}

impl From<VaultError> for StepFailure {
    fn from(e: VaultError) -> Self {
        StepFailure::retryable(crate::error_chain(&e), e.is_transient())
    }
}

/// The verification record of a probe that must be refused: passed when the target
/// refused it, inconclusive when the target gave no answer.
pub(super) fn refusal_check(check: Check, outcome: &AuthOutcome) -> Verification {
    Verification {
        check,
        passed: matches!(outcome, AuthOutcome::Rejected { .. }),
        evidence: outcome.evidence(),
        inconclusive: matches!(outcome, AuthOutcome::Unreachable { .. }),
        at: now(),
    }
}

/// One consumer's entry in a step that works on every consumer (a rotation's
/// propagation, a retirement's removal).
pub(super) trait ConsumerEntry: Clone {
    /// The consumer (described), its attempts so far, and whether it needs nothing
    /// more (a resumed step leaves it alone).
    fn progress(&self) -> (&str, u32, bool);
}

/// What a step over every consumer left.
pub(super) struct ConsumersDone<E> {
    /// One entry per consumer, in the policy's order.
    pub(super) entries: Vec<E>,
    /// The consumers (described) whose attempt failed.
    pub(super) failed: Vec<String>,
    /// Whether every failure was transient (true when none failed).
    pub(super) transient: bool,
}

impl<E> ConsumersDone<E> {
    /// The step's result: `ok` when no consumer failed, else a failure naming them
    /// (`what` says what they are: `pending`, `failed removal`).
    pub(super) fn result(&self, ok: String, what: &str) -> Result<String, StepFailure> {
        if self.failed.is_empty() {
            return Ok(ok);
        }
        Err(StepFailure::retryable(
            format!(
                "{} of {} consumer(s) {what}: {}",
                self.failed.len(),
                self.entries.len(),
                self.failed.join("; ")
            ),
            self.transient,
        ))
    }
}

/// Runs `attempt` at each of `specs` (with the consumer described and its attempt
/// number) unless `previous`, the entries of an earlier attempt of the step, shows it
/// done: consumers are independent, so one that is done is not touched again while
/// another is retried. `attempt` gives the consumer's new entry, and on failure
/// whether it was transient.
pub(super) async fn each_consumer<'a, E, F, Fut>(
    specs: &'a [crate::policy::ConsumerSpec],
    previous: Vec<E>,
    mut attempt: F,
) -> ConsumersDone<E>
where
    E: ConsumerEntry,
    F: FnMut(&'a crate::policy::ConsumerSpec, String, u32) -> Fut,
    Fut: std::future::Future<Output = Result<E, (E, bool)>>,
{
    let mut done = ConsumersDone {
        entries: Vec::with_capacity(specs.len()),
        failed: Vec::new(),
        transient: true,
    };
    for (i, spec) in specs.iter().enumerate() {
        let consumer = spec.describe();
        let before = previous.get(i).filter(|r| r.progress().0 == consumer);
        let (_, attempts, finished) = before.map_or(("", 0, false), ConsumerEntry::progress);
        if let Some(entry) = before.filter(|_| finished) {
            done.entries.push(entry.clone());
            continue;
        }
        match attempt(spec, consumer, attempts + 1).await {
            Ok(entry) => done.entries.push(entry),
            Err((entry, transient)) => {
                done.transient &= transient;
                done.failed.push(entry.progress().0.to_owned());
                done.entries.push(entry);
            }
        }
    }
    done
}

/// A journaled record with steps (a rotation's, a retirement's): what the runner reads
/// and changes in it, whatever the run does at each step.
pub(super) trait Journaled {
    /// A step entry of the record; its name as journaled comes from `Into`.
    type Step: Copy + PartialEq + Into<&'static str>;
    /// Whether a step begun again (after a crash or a failure) restarts its clock
    /// (`started_at`, `finished_at`); otherwise it keeps the first start.
    const RESTART_CLOCK: bool = false;
    /// Whether a step's end is journaled as soon as it succeeds; otherwise with the
    /// next journaled step's "begun" (one write per side effect), or at the end.
    const JOURNAL_EACH_END: bool = false;

    /// The step to run next, if any.
    fn next_step(&self) -> Option<Self::Step>;
    /// The step's crash-test failpoint name (by default its name).
    fn failpoint(step: Self::Step) -> &'static str {
        step.into()
    }
    /// The record's step entries, in order.
    fn entries(&mut self) -> &mut Vec<StepRecord<Self::Step>>;
    /// The record, as the step events name it.
    fn subject(&self) -> Subject<'_>;
}

impl Journaled for Rotation {
    type Step = Step;

    fn next_step(&self) -> Option<Step> {
        Rotation::next_step(self)
    }

    fn entries(&mut self) -> &mut Vec<StepRecord> {
        &mut self.steps
    }

    fn subject(&self) -> Subject<'_> {
        Subject::Rotation(self)
    }
}

impl Journaled for Retirement {
    type Step = RetireStep;
    const RESTART_CLOCK: bool = true;
    const JOURNAL_EACH_END: bool = true;

    fn next_step(&self) -> Option<RetireStep> {
        Retirement::next_step(self)
    }

    /// `ROTOR_FAILPOINT=retire_disabled:effect`: the step's name after `retire_`.
    fn failpoint(step: RetireStep) -> &'static str {
        match step {
            RetireStep::Disabled => "retire_disabled",
            RetireStep::ConsumersRemoved => "retire_consumers_removed",
            RetireStep::Marked => "retire_marked",
            RetireStep::Verified => "retire_verified",
        }
    }

    fn entries(&mut self) -> &mut Vec<RetireStepRecord> {
        &mut self.steps
    }

    fn subject(&self) -> Subject<'_> {
        Subject::Retirement(self)
    }
}

/// One run over a [`Journaled`] record, driven by [`Engine::run_steps`] (one rotation
/// run, one retirement run): what each step does and what its end means.
pub(super) trait StepRun {
    /// The record the run journals.
    type Record: Journaled;

    /// The record.
    fn record(&mut self) -> &mut Self::Record;
    /// Whether a transient failure of `step` is retried within this run (by default,
    /// every step's).
    fn retried(_step: StepOf<Self>) -> bool {
        true
    }
    /// Whether `step`'s "begun" must be journaled before it runs (by default, every
    /// step's).
    fn journaled_first(&self, _step: StepOf<Self>) -> bool {
        true
    }
    /// Whether `step` may have to wait before it starts, so what is done must be
    /// journaled first.
    fn may_wait(&self, _step: StepOf<Self>) -> bool {
        false
    }
    /// Whether `step` may start now (waiting for it in-process where that is short);
    /// `false` leaves the record open, journaled, for a later run.
    async fn ready(&self, _engine: &Engine, _step: StepOf<Self>) -> bool {
        true
    }
    /// Journals the record.
    async fn write(&mut self, engine: &Engine) -> Result<(), EngineError>;
    /// Performs `step`'s side effect, once.
    async fn execute(
        &mut self,
        engine: &Engine,
        step: StepOf<Self>,
    ) -> Result<StepResult, StepFailure>;
    /// What a successful (or skipped) `step` changes in the record.
    fn succeeded(&mut self, step: StepOf<Self>, skipped: bool);
    /// What a failure of `step` (already recorded in its entry) does; journals the
    /// record. The run stops after it.
    async fn failed(
        &mut self,
        engine: &Engine,
        step: StepOf<Self>,
        failure: StepFailure,
    ) -> Result<(), EngineError>;
    /// What follows the last step (journaled by the runner before, when needed).
    async fn finished(&mut self, _engine: &Engine) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The step type of a [`StepRun`]'s record.
pub(super) type StepOf<R> = <<R as StepRun>::Record as Journaled>::Step;

/// The record type of a [`StepRun`].
type RecordOf<R> = <R as StepRun>::Record;

/// Marks `step` begun in `run`'s record: a fresh entry, or the last one again when it
/// is the same step not yet done. Returns the attempt number.
fn begin<R: StepRun>(run: &mut R, step: StepOf<R>) -> u32 {
    let entries = run.record().entries();
    if let Some(last) = entries.last_mut()
        && last.step == step
        && last.outcome != StepOutcome::Ok
    {
        last.outcome = StepOutcome::Begun;
        last.attempts += 1;
        if RecordOf::<R>::RESTART_CLOCK {
            last.started_at = now();
            last.finished_at = None;
        }
        return last.attempts;
    }
    entries.push(StepRecord {
        step,
        outcome: StepOutcome::Begun,
        started_at: now(),
        finished_at: None,
        duration_ms: None,
        detail: None,
        attempts: 1,
    });
    1
}

/// Records the end of the last step entry.
fn end<R: StepRun>(run: &mut R, outcome: StepOutcome, detail: String, duration_ms: f64) {
    let last = run
        .record()
        .entries()
        .last_mut()
        .expect("a step entry was begun");
    last.finished_at = Some(now());
    last.duration_ms = Some(duration_ms);
    last.outcome = outcome;
    last.detail = Some(detail);
}

impl Engine {
    /// Drives `run`'s steps from wherever its record says it is until the last one is
    /// done, a step fails, or a step cannot start yet. A step's side effect comes only
    /// after its "begun" is journaled (where [`StepRun::journaled_first`]); a step
    /// whose end is not journaled yet is repeated by a resume, which every step allows.
    pub(super) async fn run_steps<R: StepRun>(&self, run: &mut R) -> Result<(), EngineError> {
        // Steps done but not journaled yet: their "done" failpoints follow the write.
        let mut unwritten = Vec::new();
        while let Some(step) = run.record().next_step() {
            if run.may_wait(step) && !unwritten.is_empty() {
                self.journal_steps(run, &mut unwritten).await?;
            }
            if !run.ready(self, step).await {
                return self.journal_steps(run, &mut unwritten).await;
            }
            let attempt = begin(run, step);
            if run.journaled_first(step) {
                self.journal_steps(run, &mut unwritten).await?;
            }
            let name: &'static str = step.into();
            self.report(&Event::StepBegun {
                subject: run.record().subject(),
                step: name,
                attempt,
            });
            failpoint::hit_at(RecordOf::<R>::failpoint(step), Moment::Begun);
            let clock = Instant::now();
            let result = self.execute_with_retries(run, step).await;
            failpoint::hit_at(RecordOf::<R>::failpoint(step), Moment::Effect);
            let duration_ms = clock.elapsed().as_secs_f64() * 1000.0;
            let (outcome, failure) = match result {
                Ok(StepResult::Ok(detail)) => {
                    end(run, StepOutcome::Ok, detail, duration_ms);
                    run.succeeded(step, false);
                    (StepOutcome::Ok, None)
                }
                Ok(StepResult::Skipped(detail)) => {
                    end(run, StepOutcome::Skipped, detail, duration_ms);
                    run.succeeded(step, true);
                    (StepOutcome::Skipped, None)
                }
                Err(failure) => {
                    end(
                        run,
                        StepOutcome::Failed,
                        failure.message.clone(),
                        duration_ms,
                    );
                    (StepOutcome::Failed, Some(failure))
                }
            };
            self.report(&Event::StepEnded {
                subject: run.record().subject(),
                step: name,
                outcome,
                duration_ms,
            });
            if let Some(failure) = failure {
                return run.failed(self, step, failure).await;
            }
            unwritten.push(step);
            if RecordOf::<R>::JOURNAL_EACH_END {
                self.journal_steps(run, &mut unwritten).await?;
            }
            info!(step = name, duration_ms, "Step done.");
        }
        if !unwritten.is_empty() {
            self.journal_steps(run, &mut unwritten).await?;
        }
        run.finished(self).await
    }

    /// Journals `run`'s record, then passes the "done" failpoints of the steps whose
    /// end that write recorded.
    async fn journal_steps<R: StepRun>(
        &self,
        run: &mut R,
        unwritten: &mut Vec<StepOf<R>>,
    ) -> Result<(), EngineError> {
        run.write(self).await?;
        for done in unwritten.drain(..) {
            failpoint::hit_at(RecordOf::<R>::failpoint(done), Moment::Done);
        }
        Ok(())
    }

    /// Runs `step` once, and again after a transient failure (where
    /// [`StepRun::retried`]) up to [`super::EngineConfig::retries`] times, waiting
    /// longer each time, with jitter.
    async fn execute_with_retries<R: StepRun>(
        &self,
        run: &mut R,
        step: StepOf<R>,
    ) -> Result<StepResult, StepFailure> {
        let name: &'static str = step.into();
        let mut attempt = 0;
        loop {
            match run.execute(self, step).await {
                Err(f) if f.transient && R::retried(step) && attempt < self.config.retries => {
                    let base = self.config.retry_base.as_millis() as u64 * (1 << attempt);
                    let jitter = rand::rng().random_range(0..=base / 2);
                    warn!(step = name, attempt, error = %f.message, "Transient failure; retrying.");
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::consumers::Consumers;
    use crate::engine::{EngineConfig, Rotation, Step};
    use crate::evidence::{EvidenceError, Sink};
    use crate::state::memory::MemoryStore;
    use crate::vault::{Vault, VaultConfig};

    /// What happened, in order: journal writes, side effects and events.
    type Log = Arc<Mutex<Vec<String>>>;

    struct Recording(Log);

    impl Sink for Recording {
        fn emit(&self, event: &Event<'_>) -> Result<(), EvidenceError> {
            let line = match event {
                Event::StepBegun { step, attempt, .. } => format!("begun {step} #{attempt}"),
                Event::StepEnded { step, outcome, .. } => format!("ended {step} {outcome:?}"),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(line);
            Ok(())
        }
    }

    /// A rotation record whose steps only log, failing as told.
    struct Fake {
        rotation: Rotation,
        log: Log,
        /// Failures still to give per step: (how many, transient).
        failures: BTreeMap<Step, (u32, bool)>,
        /// Steps not journaled before they run.
        unjournaled: Vec<Step>,
    }

    impl Fake {
        fn note(&self, line: String) {
            self.log.lock().unwrap().push(line);
        }
    }

    impl StepRun for Fake {
        type Record = Rotation;

        fn record(&mut self) -> &mut Rotation {
            &mut self.rotation
        }
        fn journaled_first(&self, step: Step) -> bool {
            !self.unjournaled.contains(&step)
        }
        async fn write(&mut self, _engine: &Engine) -> Result<(), EngineError> {
            let last = self.rotation.steps.last().map(|r| (r.step, r.outcome));
            self.note(format!("write {last:?}"));
            Ok(())
        }
        async fn execute(
            &mut self,
            _engine: &Engine,
            step: Step,
        ) -> Result<StepResult, StepFailure> {
            self.note(format!("effect {step}"));
            match self.failures.get_mut(&step) {
                Some((n, transient)) if *n > 0 => {
                    *n -= 1;
                    Err(StepFailure::retryable("no answer", *transient))
                }
                _ => Ok(StepResult::Ok(format!("{step} done"))),
            }
        }
        fn succeeded(&mut self, step: Step, _skipped: bool) {
            self.note(format!("succeeded {step}"));
        }
        async fn failed(
            &mut self,
            _engine: &Engine,
            step: Step,
            failure: StepFailure,
        ) -> Result<(), EngineError> {
            self.note(format!("failed {step}: {}", failure.message));
            Ok(())
        }
        async fn finished(&mut self, _engine: &Engine) -> Result<(), EngineError> {
            self.note("finished".into());
            Ok(())
        }
    }

    async fn engine(log: &Log) -> Engine {
        // No Vault answers here: the fake run never calls it.
        let config = VaultConfig {
            addr: "http://127.0.0.1:9".into(),
            token: Some(crate::secret::SecretString::from("unused".to_owned())),
            ..VaultConfig::from_env()
        };
        let vault = Vault::connect(&config).expect("client");
        let config = EngineConfig {
            retry_base: Duration::from_millis(1),
            ..EngineConfig::default()
        };
        Engine::with_store(
            vault,
            Arc::new(MemoryStore::new()),
            config,
            Consumers::new(),
        )
        .await
        .expect("an engine over memory")
        .with_evidence(Arc::new(Recording(log.clone())))
    }

    fn fake(log: &Log, steps: serde_json::Value) -> Fake {
        let rotation = serde_json::from_value(serde_json::json!({
            "rotation_id": "r1", "policy": "p", "kind": "postgres", "trigger": "schedule",
            "actor": "t", "status": "open", "canonical": "secret/p", "canonical_version": 1,
            "staging": "secret/rotor/staging/p/r1", "steps": steps,
            "started_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"
        }))
        .expect("a rotation record");
        Fake {
            rotation,
            log: log.clone(),
            failures: BTreeMap::new(),
            unjournaled: Vec::new(),
        }
    }

    fn lines(log: &Log) -> Vec<String> {
        log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn each_step_is_journaled_before_its_effect_and_reported_begun_then_ended() {
        let log = Log::default();
        let engine = engine(&log).await;
        let mut run = fake(&log, serde_json::json!([]));
        run.unjournaled = vec![Step::Tested, Step::Completed];
        engine.run_steps(&mut run).await.expect("run");
        let mut want = Vec::new();
        for step in Step::FORWARD {
            if !run.unjournaled.contains(&step) {
                want.push(format!("write Some(({step:?}, Begun))"));
            }
            want.extend([
                format!("begun {step} #1"),
                format!("effect {step}"),
                format!("succeeded {step}"),
                format!("ended {step} Ok"),
            ]);
        }
        // The last steps' ends are journaled together, then the run is finished.
        want.extend(["write Some((Completed, Ok))".into(), "finished".into()]);
        assert_eq!(lines(&log), want);
        let rec = run.rotation.steps.last().expect("entries");
        assert_eq!((rec.outcome, rec.attempts), (StepOutcome::Ok, 1));
        assert!(rec.finished_at.is_some() && rec.duration_ms.is_some());
        assert_eq!(run.rotation.steps.len(), Step::FORWARD.len());
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_within_the_step_and_a_lasting_one_ends_the_run() {
        let log = Log::default();
        let engine = engine(&log).await;
        let mut run = fake(&log, serde_json::json!([]));
        run.failures.insert(Step::Staged, (1, true));
        run.failures.insert(Step::Applied, (1, false));
        engine.run_steps(&mut run).await.expect("run");
        assert_eq!(
            lines(&log),
            [
                "write Some((Staged, Begun))",
                "begun staged #1",
                "effect staged",
                "effect staged",
                "succeeded staged",
                "ended staged Ok",
                "write Some((Applied, Begun))",
                "begun applied #1",
                "effect applied",
                "ended applied Failed",
                "failed applied: no answer",
            ]
        );
        let rec = run.rotation.steps.last().expect("entries");
        assert_eq!(rec.outcome, StepOutcome::Failed);
        assert_eq!(rec.detail.as_deref(), Some("no answer"));
    }

    #[tokio::test]
    async fn a_step_begun_before_is_attempted_again_in_its_own_entry() {
        let log = Log::default();
        let engine = engine(&log).await;
        let started = "2026-01-01T00:00:01.000Z";
        let mut run = fake(
            &log,
            serde_json::json!([
                {"step": "staged", "outcome": "ok", "started_at": started, "attempts": 1},
                {"step": "applied", "outcome": "begun", "started_at": started, "attempts": 1}
            ]),
        );
        run.failures.insert(Step::Tested, (1, false));
        engine.run_steps(&mut run).await.expect("run");
        let log = lines(&log);
        assert_eq!(
            log[..2],
            ["write Some((Applied, Begun))", "begun applied #2"]
        );
        let applied = &run.rotation.steps[1];
        assert_eq!((applied.step, applied.attempts), (Step::Applied, 2));
        // A rotation keeps the first start of a step begun again.
        assert_eq!(
            crate::state::records::time::format(&applied.started_at),
            started
        );
        assert_eq!(run.rotation.steps.len(), 3);
    }
}
