//! The agent's Prometheus metrics: one owned [`prometheus::Registry`] (never the
//! crate's global default) and the one place every metric is named. `/metrics`
//! serves [`Metrics::encode`] in the text exposition format.
//!
//! Labels carry only bounded values: policy names (validated DNS names), credential
//! kinds and consumer types (closed sets; anything else becomes `other`), triggers,
//! results, steps, route templates and status codes. Never a secret, an error text, an
//! actor, a reason or a rotation id: those stay in the journal and the audit log.
//!
//! Names are clean under `promtool check metrics`; `monitoring/` holds the alert rules
//! and the Grafana dashboard built on them (checked by `tests/metrics.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::policy::{ConsumerSpec, CredentialSpec};
use crate::state::records::{Rotation, RotationId, Status, StepOutcome};

/// Buckets of `rotor_rotation_step_duration_seconds`: 1 ms … 5 min.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Buckets of `rotor_rotation_duration_seconds`: 10 ms … 1 day (a rotation that waits
/// for its old credential's grace period ends hours after it started).
const ROTATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 21600.0, 86400.0,
];

/// How many recent rotations per policy are remembered to count each once. A policy
/// has at most one open rotation at a time, so a handful covers "resumed + new".
const REMEMBERED_PER_POLICY: usize = 8;

/// Label value used for a kind or consumer type outside the closed set.
const OTHER: &str = "other";

/// The `task` label (not `job`: Prometheus keeps that for the scrape job) of `rotor_job_panics_total`.
const JOBS: &[&str] = &["rotation", "sync"];

/// Label value used in place of a policy name that is not a valid policy name (it
/// cannot happen for loaded policies; it keeps arbitrary text out of the labels).
const INVALID: &str = "invalid";

/// The `result` label of `rotor_rotations_total` and `rotor_rotation_duration_seconds`.
///
/// `completed`, `rolled_back` and `failed` are ends; `waiting` means everything up to
/// `propagated` is done and the old credential's grace period runs; `pending` means the
/// rotation stays open (a step or a rollback is retried later).
pub const RESULTS: &[&str] = &["completed", "rolled_back", "failed", "waiting", "pending"];

/// The agent's metrics. Cheap to clone (the registry is shared); every method takes
/// `&self`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rotations: IntCounterVec,
    rotation_duration: HistogramVec,
    step_duration: HistogramVec,
    /// The per-policy gauges (`rotor_secret_created_timestamp_seconds` …
    /// `rotor_policy_quarantined`), one compact row per policy.
    gauges: PolicyGauges,
    consumer_failures: IntCounterVec,
    job_panics: IntCounterVec,
    leader: IntGauge,
    policies: IntGauge,
    reloads: IntCounterVec,
    api_requests: IntCounterVec,
    scheduler_wakeups: prometheus::IntCounter,
    state: Mutex<State>,
}

/// What was observed already, so that counts are once per rotation and `forget_policy`
/// knows which series to drop (the prometheus crate removes series only by full label set).
#[derive(Default)]
struct State {
    /// Recent rotations per policy, newest last.
    seen: HashMap<String, VecDeque<Seen>>,
    /// `(kind, trigger, result)` label sets of `rotor_rotations_total` per policy.
    rotation_series: HashMap<String, HashSet<(&'static str, &'static str, &'static str)>>,
    /// Consumer types of `rotor_consumer_failures_total` per policy.
    consumer_series: HashMap<String, HashSet<&'static str>>,
}

/// One rotation's counted results and observed step attempts.
struct Seen {
    rotation_id: RotationId,
    results: Vec<&'static str>,
    /// `(index in steps, attempts)` of step records already observed.
    steps: HashSet<(usize, u32)>,
}

/// The per-policy gauges, kept as one small row per policy and turned into metric
/// families only when `/metrics` is gathered. A `GaugeVec` child per policy and gauge
/// holds its own copy of the metric's name, help text and label pairs (some 600 bytes):
/// with 10,000 policies that alone was over 10 MiB of an idle agent's memory. Names,
/// labels and values are exactly those the `GaugeVec`s exported.
#[derive(Clone)]
struct PolicyGauges {
    inner: Arc<GaugeTable>,
}

struct GaugeTable {
    /// In [`GAUGES`] order.
    descs: Vec<prometheus::core::Desc>,
    rows: Mutex<HashMap<Box<str>, GaugeRow>>,
}

/// One of a policy's state gauges and its new value, for [`Metrics::set`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyGauge {
    /// When the policy rotates next (seconds since the epoch); `None` removes the series
    /// (nothing scheduled, e.g. an on-demand-only policy).
    NextRotation(Option<f64>),
    /// When the policy last rotated successfully (seconds since the epoch).
    LastSuccess(f64),
    /// The policy's maxAge in seconds (for the "older than maxAge" alert); `None`
    /// removes the series (no maxAge configured).
    MaxAge(Option<f64>),
    /// Whether the policy's old credential is still accepted by its target after a
    /// rotation (true) or was refused / nothing is pending (false). True is a critical
    /// alert.
    OldCredentialValid(bool),
    /// Whether the policy is quarantined.
    Quarantined(bool),
}

/// One policy's gauges; `None` is no series.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct GaugeRow {
    /// `rotor_secret_created_timestamp_seconds{policy,kind}`: the kind label and value.
    secret_created: Option<(&'static str, f64)>,
    next_rotation: Option<f64>,
    last_success: Option<f64>,
    max_age: Option<f64>,
    old_credential_valid: Option<bool>,
    quarantined: Option<bool>,
}

/// Name, help text and labels (besides `policy`) of every per-policy gauge.
const GAUGES: [(&str, &str, &[&str]); 6] = [
    (
        "rotor_secret_created_timestamp_seconds",
        "Unix time the policy's current secret was created (its age is time() minus this).",
        &["kind"],
    ),
    (
        "rotor_next_rotation_timestamp_seconds",
        "Unix time of the policy's next scheduled rotation.",
        &[],
    ),
    (
        "rotor_last_success_timestamp_seconds",
        "Unix time of the policy's last successful rotation.",
        &[],
    ),
    (
        "rotor_policy_max_age_seconds",
        "The policy's maxAge: the oldest its secret may get before it must be rotated.",
        &[],
    ),
    (
        "rotor_old_credential_still_valid",
        "1 when the policy's old credential was still accepted by the target after its rotation (it must be refused), else 0.",
        &[],
    ),
    (
        "rotor_policy_quarantined",
        "1 while the policy is quarantined (no automatic rotation until a person releases it), else 0.",
        &[],
    ),
];

impl GaugeRow {
    /// The row's series per gauge (in [`GAUGES`] order): extra label value and value.
    fn series(&self) -> [Option<(Option<&'static str>, f64)>; 6] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        [
            self.secret_created.map(|(kind, v)| (Some(kind), v)),
            self.next_rotation.map(|v| (None, v)),
            self.last_success.map(|v| (None, v)),
            self.max_age.map(|v| (None, v)),
            self.old_credential_valid.map(|b| (None, flag(b))),
            self.quarantined.map(|b| (None, flag(b))),
        ]
    }
}

impl PolicyGauges {
    fn new() -> PolicyGauges {
        let descs = GAUGES
            .iter()
            .map(|(name, help, extra)| {
                let mut labels = vec!["policy".to_owned()];
                labels.extend(extra.iter().map(|l| (*l).to_owned()));
                prometheus::core::Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels,
                    HashMap::new(),
                )
                .expect("rotor's metric definitions are static and valid")
            })
            .collect();
        PolicyGauges {
            inner: Arc::new(GaugeTable {
                descs,
                rows: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn rows(&self) -> MutexGuard<'_, HashMap<Box<str>, GaugeRow>> {
        self.inner
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the policy's row; a row left without series is dropped.
    fn update(&self, policy: &str, change: impl FnOnce(&mut GaugeRow)) {
        let policy = policy_label(policy);
        let mut rows = self.rows();
        match rows.get_mut(policy) {
            Some(row) => {
                change(row);
                if *row == GaugeRow::default() {
                    rows.remove(policy);
                }
            }
            None => {
                let mut row = GaugeRow::default();
                change(&mut row);
                if row != GaugeRow::default() {
                    rows.insert(policy.into(), row);
                }
            }
        }
    }

    fn forget(&self, policy: &str) {
        self.rows().remove(policy_label(policy));
    }
}

impl prometheus::core::Collector for PolicyGauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.inner.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
        let label = |name: &str, value: &str| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        };
        let mut metrics: [Vec<Metric>; 6] = Default::default();
        for (policy, row) in self.rows().iter() {
            for (i, series) in row.series().into_iter().enumerate() {
                let Some((extra, value)) = series else {
                    continue;
                };
                // Label pairs sorted by name, as the prometheus crate keeps them.
                let mut labels = Vec::with_capacity(2);
                if let (Some(value), Some(name)) = (extra, GAUGES[i].2.first()) {
                    labels.push(label(name, value));
                }
                labels.push(label("policy", policy));
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                let mut metric = Metric::from_gauge(gauge);
                metric.set_label(labels);
                metrics[i].push(metric);
            }
        }
        GAUGES
            .iter()
            .zip(metrics)
            .map(|((name, help, _), metrics)| {
                let mut family = MetricFamily::default();
                family.set_name((*name).to_owned());
                family.set_help((*help).to_owned());
                family.set_field_type(MetricType::GAUGE);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

/// `rotor_outside_call_timeouts_total{system}`: read from the process-wide counts in
/// [`crate::outside`] when gathered (the clients that count are built far from the
/// registry). Every system has a series from the start, so a first timeout is an increase.
#[derive(Clone)]
struct OutsideTimeouts {
    desc: Arc<prometheus::core::Desc>,
}

const OUTSIDE_TIMEOUTS: &str = "rotor_outside_call_timeouts_total";

impl OutsideTimeouts {
    fn new() -> Self {
        let desc = prometheus::core::Desc::new(
            OUTSIDE_TIMEOUTS.to_owned(),
            "Calls to outside systems (kubernetes, vault, gitlab, github, webhook, the targets) that ran into the call timeout.".to_owned(),
            vec!["system".to_owned()],
            HashMap::new(),
        )
        .expect("rotor's metric definitions are static and valid");
        OutsideTimeouts {
            desc: Arc::new(desc),
        }
    }
}

impl prometheus::core::Collector for OutsideTimeouts {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
        let metrics = crate::outside::System::ALL
            .iter()
            .map(|system| {
                let mut pair = LabelPair::default();
                pair.set_name("system".to_owned());
                pair.set_value(system.as_str().to_owned());
                let mut counter = Counter::default();
                // Counts stay far below 2^53, where f64 is exact.
                counter.set_value(crate::outside::timeouts(*system) as f64);
                let mut metric = Metric::from_label(vec![pair]);
                metric.set_counter(counter);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(OUTSIDE_TIMEOUTS.to_owned());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Registers `metric` in `registry`. Every definition in this module is static and
/// distinct, so registration cannot fail; `tests/metrics.rs` builds the set.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("rotor's metric definitions are static and distinct");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("rotor's metric definitions are static and valid");
    register(registry, metric)
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("rotor's metric definitions are static and valid");
    register(registry, metric)
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric =
        IntGauge::with_opts(Opts::new(name, help)).expect("rotor's metric definitions are valid");
    register(registry, metric)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("rotor's metric definitions are static and valid");
    register(registry, metric)
}

/// The policy label: the name itself when it is a valid policy name (at most 253
/// bytes of `[A-Za-z0-9._-]`), else `invalid`.
fn policy_label(policy: &str) -> &str {
    let valid = !policy.is_empty()
        && policy.len() <= 253
        && policy
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid { policy } else { INVALID }
}

/// `value` when it is one of `known` (a closed set of names, e.g. [`CredentialSpec::KINDS`]
/// or [`ConsumerSpec::KINDS`]), else `other`.
fn closed_label(known: &'static [&'static str], value: &str) -> &'static str {
    known.iter().copied().find(|k| *k == value).unwrap_or(OTHER)
}

/// The `result` label of a rotation as it stands.
fn result_label(rotation: &Rotation) -> &'static str {
    match rotation.status {
        Status::Completed => "completed",
        Status::RolledBack => "rolled_back",
        Status::Failed => "failed",
        Status::Open if rotation.waiting_for_grace() => "waiting",
        Status::Open | Status::RollingBack => "pending",
    }
}

/// Seconds between two RFC 3339 instants, when both parse and `end` is not earlier.
fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<f64> {
    let millis = (end - start).num_milliseconds();
    (millis >= 0).then(|| millis as f64 / 1000.0)
}

impl Metrics {
    /// A registry with every rotor metric registered; `rotor_build_info{version}` is 1.
    pub fn new(version: &str) -> Metrics {
        let r = Registry::new();
        let rotations = counter_vec(
            &r,
            "rotor_rotations_total",
            "Rotations that reached a result (completed, rolled_back, failed, or the intermediate waiting / pending), counted once per rotation and result.",
            &["policy", "kind", "trigger", "result"],
        );
        let rotation_duration = histogram_vec(
            &r,
            "rotor_rotation_duration_seconds",
            "Time from planning a rotation to reaching its result.",
            &["kind", "result"],
            ROTATION_BUCKETS,
        );
        let step_duration = histogram_vec(
            &r,
            "rotor_rotation_step_duration_seconds",
            "Wall time of one attempt of one rotation step (skipped steps excluded).",
            &["kind", "step"],
            STEP_BUCKETS,
        );
        let gauges = register(&r, PolicyGauges::new());
        register(&r, OutsideTimeouts::new());
        let consumer_failures = counter_vec(
            &r,
            "rotor_consumer_failures_total",
            "Failed attempts to update a consumer with a new value.",
            &["policy", "consumer_type"],
        );
        let job_panics = counter_vec(
            &r,
            "rotor_job_panics_total",
            "Agent jobs of a policy (task: rotation or sync) that panicked; each is also a failed attempt. Any increase is a rotor bug.",
            &["policy", "task"],
        );
        let leader = int_gauge(
            &r,
            "rotor_leader",
            "1 when this agent holds the leader lease and runs rotations, else 0.",
        );
        let policies = int_gauge(&r, "rotor_policies", "Policies currently loaded.");
        let reloads = counter_vec(
            &r,
            "rotor_policy_reloads_total",
            "Policy set reloads by result (a failed reload keeps the previous set running).",
            &["result"],
        );
        let api_requests = counter_vec(
            &r,
            "rotor_api_requests_total",
            "HTTP API requests by route template and status code.",
            &["route", "code"],
        );
        let build_info = int_gauge_vec(
            &r,
            "rotor_build_info",
            "Always 1; the version label says which rotor build runs.",
            &["version"],
        );
        build_info.with_label_values(&[version]).set(1);
        let scheduler_wakeups = register(
            &r,
            prometheus::IntCounter::with_opts(Opts::new(
                "rotor_scheduler_wakeups_total",
                "Times the agent's scheduler loop woke up (timer, request, finished job or reload poll).",
            ))
            .expect("rotor's metric definitions are valid"),
        );
        // Both results exist from the start, so a first failed reload is an increase.
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                rotations,
                rotation_duration,
                step_duration,
                gauges,
                consumer_failures,
                job_panics,
                leader,
                policies,
                reloads,
                api_requests,
                scheduler_wakeups,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a cache of what was counted; a panic elsewhere leaves it usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let families = self.inner.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "Encoding the metrics failed.");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A rotation reached an end (completed / rolled_back / failed) or an intermediate
    /// state (waiting / pending): counts it once per rotation id and result, and
    /// observes its total duration (planning to now) and each step attempt not yet
    /// observed. Calling it again with the same state changes nothing.
    pub fn observe_rotation(&self, rotation: &Rotation) {
        let policy = policy_label(&rotation.policy);
        let kind = closed_label(CredentialSpec::KINDS, &rotation.kind);
        let trigger = rotation.trigger.as_str();
        let result = result_label(rotation);
        let mut state = self.state();
        let state = &mut *state;
        let recent = state.seen.entry(policy.to_owned()).or_default();
        let index = match recent
            .iter()
            .position(|s| s.rotation_id == rotation.rotation_id)
        {
            Some(i) => i,
            None => {
                if recent.len() >= REMEMBERED_PER_POLICY {
                    recent.pop_front();
                }
                recent.push_back(Seen {
                    rotation_id: rotation.rotation_id.clone(),
                    results: Vec::new(),
                    steps: HashSet::new(),
                });
                recent.len() - 1
            }
        };
        let seen = &mut recent[index];

        for (i, rec) in rotation.steps.iter().enumerate() {
            let Some(ms) = rec.duration_ms else { continue };
            // A skipped step did nothing; it would only drag the step's quantiles down.
            if rec.outcome == StepOutcome::Skipped || !ms.is_finite() || ms < 0.0 {
                continue;
            }
            if seen.steps.insert((i, rec.attempts)) {
                self.inner
                    .step_duration
                    .with_label_values(&[kind, rec.step.as_str()])
                    .observe(ms / 1000.0);
            }
        }

        if seen.results.contains(&result) {
            return;
        }
        seen.results.push(result);
        self.inner
            .rotations
            .with_label_values(&[policy, kind, trigger, result])
            .inc();
        state
            .rotation_series
            .entry(policy.to_owned())
            .or_default()
            .insert((kind, trigger, result));
        if let Some(seconds) = seconds_between(rotation.started_at, rotation.updated_at) {
            self.inner
                .rotation_duration
                .with_label_values(&[kind, result])
                .observe(seconds);
        }
    }

    /// The policy's current secret was created at `created_unix` (seconds since the
    /// epoch). Sets `rotor_secret_created_timestamp_seconds{policy,kind}`; a policy has
    /// one such series (a new kind replaces the old one).
    pub fn set_secret_created(&self, policy: &str, kind: &str, created_unix: f64) {
        let kind = closed_label(CredentialSpec::KINDS, kind);
        self.inner.gauges.update(policy, |row| {
            row.secret_created = Some((kind, created_unix))
        });
    }

    /// Sets one of the policy's state gauges ([`PolicyGauge`]).
    pub fn set(&self, policy: &str, gauge: PolicyGauge) {
        self.inner.gauges.update(policy, |row| match gauge {
            PolicyGauge::NextRotation(at) => row.next_rotation = at,
            PolicyGauge::LastSuccess(at) => row.last_success = Some(at),
            PolicyGauge::MaxAge(seconds) => row.max_age = seconds,
            PolicyGauge::OldCredentialValid(valid) => row.old_credential_valid = Some(valid),
            PolicyGauge::Quarantined(quarantined) => row.quarantined = Some(quarantined),
        });
    }

    /// One failed attempt to update a consumer of `consumer_type` (`kubernetes`,
    /// `gitlab`, …; anything else is counted as `other`).
    pub fn consumer_failure(&self, policy: &str, consumer_type: &str) {
        let policy = policy_label(policy);
        let consumer_type = closed_label(ConsumerSpec::KINDS, consumer_type);
        self.inner
            .consumer_failures
            .with_label_values(&[policy, consumer_type])
            .inc();
        self.state()
            .consumer_series
            .entry(policy.to_owned())
            .or_default()
            .insert(consumer_type);
    }

    /// A job of `policy` panicked; `job` is `rotation` or `sync` (anything else is
    /// counted as `other`).
    pub fn job_panicked(&self, policy: &str, job: &str) {
        let job = JOBS.iter().find(|j| **j == job).copied().unwrap_or(OTHER);
        self.inner
            .job_panics
            .with_label_values(&[policy_label(policy), job])
            .inc();
    }

    /// Whether this agent leads (runs rotations).
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// How many policies are loaded.
    pub fn set_policies_loaded(&self, n: usize) {
        self.inner
            .policies
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The scheduler loop woke up once.
    pub fn scheduler_wakeup(&self) {
        self.inner.scheduler_wakeups.inc();
    }

    /// A policy reload succeeded (`ok`) or was rejected.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.inner.reloads.with_label_values(&[result]).inc();
    }

    /// One HTTP API request: `route` is the route template (`/v1/policies/{name}/rotate`),
    /// never the concrete path; `status` the response code.
    pub fn api_request(&self, route: &'static str, status: u16) {
        let code = if (100..=599).contains(&status) {
            status.to_string()
        } else {
            OTHER.to_owned()
        };
        self.inner
            .api_requests
            .with_label_values(&[route, code.as_str()])
            .inc();
    }

    /// Drops every series of a policy that was removed from the policy set.
    pub fn forget_policy(&self, policy: &str) {
        let policy = policy_label(policy);
        let mut state = self.state();
        state.seen.remove(policy);
        for (kind, trigger, result) in state.rotation_series.remove(policy).unwrap_or_default() {
            let _ = self
                .inner
                .rotations
                .remove_label_values(&[policy, kind, trigger, result]);
        }
        for consumer_type in state.consumer_series.remove(policy).unwrap_or_default() {
            let _ = self
                .inner
                .consumer_failures
                .remove_label_values(&[policy, consumer_type]);
        }
        drop(state);
        for job in JOBS.iter().chain([&OTHER]) {
            let _ = self.inner.job_panics.remove_label_values(&[policy, job]);
        }
        self.inner.gauges.forget(policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_outside_the_closed_sets_are_folded() {
        assert_eq!(closed_label(CredentialSpec::KINDS, "postgres"), "postgres");
        assert_eq!(
            closed_label(CredentialSpec::KINDS, "password=hunter2"),
            "other"
        );
        assert_eq!(closed_label(ConsumerSpec::KINDS, "vault-kv"), "vault-kv");
        assert_eq!(closed_label(ConsumerSpec::KINDS, "s3"), "other");
        assert_eq!(policy_label("payments-db"), "payments-db");
        assert_eq!(policy_label("a b"), "invalid");
        assert_eq!(policy_label(""), "invalid");
    }

    #[test]
    fn per_policy_gauges_are_exported_as_gauge_vecs_were() {
        let m = Metrics::new("test");
        m.set_secret_created("b-db", "postgres", 1_700_000_000.0);
        m.set_secret_created("b-db", "redis", 1_700_000_001.0);
        m.set("b-db", PolicyGauge::NextRotation(Some(1_800_000_000.0)));
        m.set("a-db", PolicyGauge::NextRotation(Some(1_800_000_001.5)));
        m.set("a-db", PolicyGauge::Quarantined(false));
        m.set("b-db", PolicyGauge::Quarantined(true));
        m.set("a-db", PolicyGauge::OldCredentialValid(false));
        m.set("a-db", PolicyGauge::MaxAge(None));
        let text = m.encode();
        for line in [
            "# HELP rotor_secret_created_timestamp_seconds Unix time the policy's current secret was created (its age is time() minus this).",
            "# TYPE rotor_secret_created_timestamp_seconds gauge",
            "rotor_secret_created_timestamp_seconds{kind=\"redis\",policy=\"b-db\"} 1700000001",
            "# TYPE rotor_next_rotation_timestamp_seconds gauge",
            "rotor_next_rotation_timestamp_seconds{policy=\"a-db\"} 1800000001.5\nrotor_next_rotation_timestamp_seconds{policy=\"b-db\"} 1800000000",
            "rotor_policy_quarantined{policy=\"a-db\"} 0\nrotor_policy_quarantined{policy=\"b-db\"} 1",
            "rotor_old_credential_still_valid{policy=\"a-db\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        // One secret-created series per policy; unset gauges have no series.
        assert!(!text.contains("kind=\"postgres\""), "{text}");
        assert!(!text.contains("rotor_policy_max_age_seconds"), "{text}");
        assert!(
            !text.contains("rotor_last_success_timestamp_seconds"),
            "{text}"
        );

        m.forget_policy("b-db");
        m.set("a-db", PolicyGauge::NextRotation(None));
        let text = m.encode();
        assert!(!text.contains("b-db"), "{text}");
        assert!(
            !text.contains("rotor_next_rotation_timestamp_seconds"),
            "{text}"
        );
        assert!(
            text.contains("rotor_policy_quarantined{policy=\"a-db\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn durations_need_ordered_instants() {
        let t = |s| crate::state::records::time::parse(s).expect("a time");
        assert_eq!(
            seconds_between(t("2025-01-01T00:00:00Z"), t("2025-01-01T00:00:01.500Z")),
            Some(1.5)
        );
        assert_eq!(
            seconds_between(t("2025-01-01T00:00:01Z"), t("2025-01-01T00:00:00Z")),
            None
        );
    }
}
