//! The metrics an operator scrapes, and the alert rules and dashboard built on them:
//! names clean under `promtool check metrics`, each rotation counted once, only
//! bounded label values (never a secret, an error text or a rotation id), series of a
//! removed policy gone, alert rules checked and unit tested with `promtool`, and a
//! dashboard whose queries use only metrics the agent exposes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rotor::engine::{Rotation, Step};
use rotor::metrics::{Metrics, PolicyGauge, RESULTS};
use rotor::policy::{ConsumerSpec, CredentialSpec};
use serde_json::{Value, json};

const VERSION: &str = "0.1.0-test";
const ROUTES: &[&str] = &["/v1/policies", "/v1/policies/{name}/rotate", "/metrics"];

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

/// Runs `promtool ARGS` in `dir`, feeding `stdin`.
fn promtool(args: &[&str], dir: &Path, stdin: &str) -> Output {
    let mut child = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: run dev/stack up (installs Debian prometheus)")
        }
        Err(e) => panic!("promtool {args:?} could not start: {e}"),
    };
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .expect("promtool reads its input");
    drop(input);
    child.wait_with_output().expect("promtool runs")
}

fn assert_clean(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// A journal record as the engine writes it. `steps` are `(step, outcome, ms)`; a
/// negative `ms` leaves `duration_ms` out (as for `planned`).
fn rotation(
    id: &str,
    policy: &str,
    kind: &str,
    trigger: &str,
    status: &str,
    steps: &[(&str, &str, f64)],
    extra: Value,
) -> Rotation {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(step, outcome, ms)| {
            let mut rec = json!({
                "step": step,
                "outcome": outcome,
                "started_at": "2025-03-01T10:00:00Z",
                "finished_at": "2025-03-01T10:00:01Z",
            });
            if *ms >= 0.0 {
                rec["duration_ms"] = json!(ms);
            }
            rec
        })
        .collect();
    let mut record = json!({
        "rotation_id": id,
        "policy": policy,
        "kind": kind,
        "strategy": "single",
        "trigger": trigger,
        "actor": "scheduler",
        "status": status,
        "canonical": format!("secret/apps/{policy}"),
        "canonical_version": 3,
        "staging": format!("rotor/staging/{policy}/{id}"),
        "steps": steps,
        "started_at": "2025-03-01T10:00:00Z",
        "updated_at": "2025-03-01T10:00:12.500Z",
    });
    if let (Some(record), Value::Object(extra)) = (record.as_object_mut(), extra) {
        record.extend(extra);
    }
    serde_json::from_value(record).expect("a journal record")
}

/// Every step of a completed single-strategy rotation; `revoked` is skipped.
const FULL: &[(&str, &str, f64)] = &[
    ("planned", "ok", -1.0),
    ("staged", "ok", 12.0),
    ("applied", "ok", 200.0),
    ("tested", "ok", 30.0),
    ("promoted", "ok", 8.0),
    ("propagated", "ok", 1500.0),
    ("revoked", "skipped", 0.01),
    ("verified", "ok", 40.0),
    ("completed", "ok", 5.0),
];

/// Up to `propagated`, then waiting for the grace period.
const WAITING: &[(&str, &str, f64)] = &[
    ("planned", "ok", -1.0),
    ("staged", "ok", 12.0),
    ("applied", "ok", 200.0),
    ("tested", "ok", 30.0),
    ("promoted", "ok", 8.0),
    ("propagated", "ok", 1500.0),
];

/// A failure at `tested` that rolled back.
const ROLLED_BACK: &[(&str, &str, f64)] = &[
    ("planned", "ok", -1.0),
    ("staged", "ok", 10.0),
    ("applied", "ok", 150.0),
    ("tested", "failed", 3000.0),
];

/// One sample line of the text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of the text exposition format.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_owned();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices();
                let mut key = String::new();
                loop {
                    let (i, c) = chars.next().expect("a closed label set");
                    match c {
                        '}' => {
                            rest = &body[i + 1..];
                            break;
                        }
                        ',' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                            let mut value = String::new();
                            loop {
                                match chars.next().expect("a closed label value").1 {
                                    '"' => break,
                                    '\\' => match chars.next().expect("an escape").1 {
                                        'n' => value.push('\n'),
                                        other => value.push(other),
                                    },
                                    other => value.push(other),
                                }
                            }
                            labels.insert(std::mem::take(&mut key), value);
                        }
                        other => key.push(other),
                    }
                }
            }
            let value = rest.trim().parse::<f64>().unwrap_or_else(|e| {
                panic!("sample value of `{line}`: {e}");
            });
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches {} series: {found:?}",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// A registry with every metric fed: a few rotations of every result, every setter.
fn exercised() -> Metrics {
    let m = Metrics::new(VERSION);
    m.observe_rotation(&rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KA",
        "payments-db",
        "postgres",
        "schedule",
        "completed",
        FULL,
        json!({}),
    ));
    m.observe_rotation(&rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KB",
        "sessions-cache",
        "redis",
        "on_demand",
        "rolled_back",
        ROLLED_BACK,
        json!({"error": "tested: WRONGPASS"}),
    ));
    m.observe_rotation(&rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KC",
        "orders-mq",
        "rabbitmq",
        "compromise",
        "failed",
        FULL,
        json!({"error": "verified: old credential still accepted"}),
    ));
    m.observe_rotation(&rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KD",
        "billing-api",
        "http-api-key",
        "schedule",
        "open",
        WAITING,
        json!({"revoke_after": "2025-03-02T10:00:00Z"}),
    ));
    for policy in ["payments-db", "sessions-cache", "orders-mq", "billing-api"] {
        m.set_secret_created(policy, "postgres", 1_740_000_000.0);
        m.set(policy, PolicyGauge::NextRotation(Some(1_740_086_400.0)));
        m.set(policy, PolicyGauge::LastSuccess(1_740_000_000.0));
        m.set(policy, PolicyGauge::MaxAge(Some(7_776_000.0)));
        m.set(
            policy,
            PolicyGauge::OldCredentialValid(policy == "orders-mq"),
        );
        m.set(policy, PolicyGauge::Quarantined(policy == "billing-api"));
    }
    m.job_panicked("payments-db", "rotation");
    m.consumer_failure("payments-db", "kubernetes");
    m.consumer_failure("payments-db", "gitlab");
    m.set_leader(true);
    m.set_policies_loaded(4);
    m.reload(true);
    m.reload(false);
    for route in ROUTES {
        m.api_request(route, 200);
    }
    m.api_request("/v1/policies/{name}/rotate", 403);
    m
}

#[test]
fn encoded_metrics_are_clean_under_promtool_check_metrics() {
    let text = exercised().encode();
    let out = promtool(&["check", "metrics"], &monitoring(), &text);
    assert_clean(&out, "promtool check metrics");
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        problems.trim().is_empty(),
        "promtool check metrics reports:\n{problems}"
    );

    // Every metric the issue asks for is there, with help text and a type.
    for (name, kind) in [
        ("rotor_rotations_total", "counter"),
        ("rotor_rotation_duration_seconds", "histogram"),
        ("rotor_rotation_step_duration_seconds", "histogram"),
        ("rotor_secret_created_timestamp_seconds", "gauge"),
        ("rotor_next_rotation_timestamp_seconds", "gauge"),
        ("rotor_last_success_timestamp_seconds", "gauge"),
        ("rotor_policy_max_age_seconds", "gauge"),
        ("rotor_old_credential_still_valid", "gauge"),
        ("rotor_policy_quarantined", "gauge"),
        ("rotor_consumer_failures_total", "counter"),
        ("rotor_leader", "gauge"),
        ("rotor_policies", "gauge"),
        ("rotor_policy_reloads_total", "counter"),
        ("rotor_api_requests_total", "counter"),
        ("rotor_build_info", "gauge"),
        ("rotor_outside_call_timeouts_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("{name} has no help text"));
        assert!(help.len() > 10, "{name} has a too short help: {help}");
    }
    assert_eq!(
        value(&text, "rotor_build_info", &[("version", VERSION)]),
        Some(1.0)
    );
    assert_eq!(value(&text, "rotor_leader", &[]), Some(1.0));
    assert_eq!(value(&text, "rotor_policies", &[]), Some(4.0));
    assert_eq!(
        value(
            &text,
            "rotor_policy_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "rotor_api_requests_total",
            &[("route", "/v1/policies/{name}/rotate"), ("code", "403")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_fresh_registry_is_clean_and_has_build_info() {
    let text = Metrics::new(VERSION).encode();
    let out = promtool(&["check", "metrics"], &monitoring(), &text);
    assert_clean(&out, "promtool check metrics on a fresh registry");
    assert_eq!(
        value(&text, "rotor_build_info", &[("version", VERSION)]),
        Some(1.0)
    );
    // A first failed reload must be an increase from 0, not a new series.
    assert_eq!(
        value(
            &text,
            "rotor_policy_reloads_total",
            &[("result", "failure")]
        ),
        Some(0.0)
    );
    assert_eq!(value(&text, "rotor_leader", &[]), Some(0.0));
    // Every system has a timeout series from the start, so a first timeout is an increase.
    for system in rotor::outside::System::ALL {
        assert!(
            value(
                &text,
                "rotor_outside_call_timeouts_total",
                &[("system", system.as_str())]
            )
            .is_some(),
            "{} has no timeout series:\n{text}",
            system.as_str()
        );
    }
}

#[test]
fn a_rotation_is_counted_once_per_result_with_its_durations() {
    let m = Metrics::new(VERSION);
    let done = rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KA",
        "payments-db",
        "postgres",
        "schedule",
        "completed",
        FULL,
        json!({}),
    );
    m.observe_rotation(&done);
    m.observe_rotation(&done);
    let text = m.encode();
    let completed = [
        ("policy", "payments-db"),
        ("kind", "postgres"),
        ("trigger", "schedule"),
        ("result", "completed"),
    ];
    assert_eq!(value(&text, "rotor_rotations_total", &completed), Some(1.0));
    let total = [("kind", "postgres"), ("result", "completed")];
    assert_eq!(
        value(&text, "rotor_rotation_duration_seconds_count", &total),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "rotor_rotation_duration_seconds_sum", &total),
        Some(12.5),
        "planned 10:00:00, last write 10:00:12.5"
    );
    let applied = [("kind", "postgres"), ("step", "applied")];
    assert_eq!(
        value(
            &text,
            "rotor_rotation_step_duration_seconds_count",
            &applied
        ),
        Some(1.0),
        "observing the same rotation again adds no step durations"
    );
    assert_eq!(
        value(&text, "rotor_rotation_step_duration_seconds_sum", &applied),
        Some(0.2)
    );

    // A rotation seen waiting for its grace period, then completed: one count per
    // result, and the steps observed while waiting are not observed again.
    let id = "01JNR6Z8Q4W2X1V5T3S9P7M0KE";
    let waiting = rotation(
        id,
        "billing-api",
        "http-api-key",
        "on_demand",
        "open",
        WAITING,
        json!({"revoke_after": "2025-03-02T10:00:00Z"}),
    );
    m.observe_rotation(&waiting);
    m.observe_rotation(&waiting);
    let finished = rotation(
        id,
        "billing-api",
        "http-api-key",
        "on_demand",
        "completed",
        FULL,
        json!({"revoke_after": "2025-03-02T10:00:00Z"}),
    );
    m.observe_rotation(&finished);
    let text = m.encode();
    let of = |result| {
        [
            ("policy", "billing-api"),
            ("kind", "http-api-key"),
            ("trigger", "on_demand"),
            ("result", result),
        ]
    };
    assert_eq!(
        value(&text, "rotor_rotations_total", &of("waiting")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "rotor_rotations_total", &of("completed")),
        Some(1.0)
    );
    for (step, count) in [("staged", 1.0), ("propagated", 1.0), ("verified", 1.0)] {
        assert_eq!(
            value(
                &text,
                "rotor_rotation_step_duration_seconds_count",
                &[("kind", "http-api-key"), ("step", step)]
            ),
            Some(count),
            "step {step}"
        );
    }
    // A pending rotation (left open after promote, retried later) is its own result.
    let pending = rotation(
        "01JNR6Z8Q4W2X1V5T3S9P7M0KF",
        "billing-api",
        "http-api-key",
        "schedule",
        "open",
        &[
            ("planned", "ok", -1.0),
            ("staged", "ok", 12.0),
            ("applied", "ok", 200.0),
            ("tested", "ok", 30.0),
            ("promoted", "ok", 8.0),
            ("propagated", "begun", 900.0),
        ],
        json!({"error": "propagated: 1 of 1 consumer(s) pending"}),
    );
    m.observe_rotation(&pending);
    let text = m.encode();
    assert_eq!(
        value(
            &text,
            "rotor_rotations_total",
            &[("policy", "billing-api"), ("result", "pending")]
        ),
        Some(1.0)
    );
}

#[test]
fn step_histograms_have_a_series_per_step_that_ran() {
    let text = exercised().encode();
    let all = samples(&text);
    let steps_with_buckets: BTreeSet<(String, String)> = all
        .iter()
        .filter(|s| s.name == "rotor_rotation_step_duration_seconds_bucket")
        .map(|s| (s.labels["kind"].clone(), s.labels["step"].clone()))
        .collect();
    for step in [
        "staged",
        "applied",
        "tested",
        "promoted",
        "propagated",
        "verified",
        "completed",
    ] {
        assert!(
            steps_with_buckets.contains(&("postgres".into(), step.into())),
            "no postgres {step} buckets in {steps_with_buckets:?}"
        );
    }
    // A skipped step did no work: it has no duration series.
    assert!(!steps_with_buckets.contains(&("postgres".into(), "revoked".into())));
    assert!(!steps_with_buckets.iter().any(|(_, s)| s == "planned"));

    // Buckets reach from 1 ms to 5 min, and +Inf equals the count.
    let les: BTreeSet<String> = all
        .iter()
        .filter(|s| {
            s.name == "rotor_rotation_step_duration_seconds_bucket"
                && s.labels["kind"] == "postgres"
                && s.labels["step"] == "applied"
        })
        .map(|s| s.labels["le"].clone())
        .collect();
    for le in ["0.001", "300", "+Inf"] {
        assert!(les.contains(le), "no le={le} bucket in {les:?}");
    }
    let applied = [("kind", "postgres"), ("step", "applied")];
    let at = |le: &str| {
        value(
            &text,
            "rotor_rotation_step_duration_seconds_bucket",
            &[applied[0], applied[1], ("le", le)],
        )
    };
    assert_eq!(at("0.1"), Some(0.0), "200 ms is above 0.1 s");
    assert_eq!(at("0.25"), Some(1.0), "200 ms is within 0.25 s");
    assert_eq!(
        at("+Inf"),
        value(
            &text,
            "rotor_rotation_step_duration_seconds_count",
            &applied
        )
    );
}

#[test]
fn forgetting_a_policy_removes_its_series() {
    let m = exercised();
    m.consumer_failure("sessions-cache", "github");
    let before = m.encode();
    assert!(before.contains("policy=\"payments-db\""));
    assert!(before.contains("policy=\"sessions-cache\""));

    m.forget_policy("payments-db");
    let after = m.encode();
    assert!(
        !after.contains("payments-db"),
        "series of a removed policy remain:\n{after}"
    );
    // Other policies keep theirs.
    for name in [
        "rotor_rotations_total",
        "rotor_secret_created_timestamp_seconds",
        "rotor_next_rotation_timestamp_seconds",
        "rotor_last_success_timestamp_seconds",
        "rotor_policy_max_age_seconds",
        "rotor_old_credential_still_valid",
        "rotor_policy_quarantined",
        "rotor_consumer_failures_total",
    ] {
        assert!(
            value(&after, name, &[("policy", "sessions-cache")]).is_some(),
            "{name} of sessions-cache is gone"
        );
    }
    // Histograms carry no policy label: the kind's durations stay.
    assert!(
        value(
            &after,
            "rotor_rotation_duration_seconds_count",
            &[("kind", "postgres"), ("result", "completed")]
        )
        .is_some()
    );

    // Unset values remove their series too.
    m.set("sessions-cache", PolicyGauge::NextRotation(None));
    m.set("sessions-cache", PolicyGauge::MaxAge(None));
    let text = m.encode();
    assert_eq!(
        value(
            &text,
            "rotor_next_rotation_timestamp_seconds",
            &[("policy", "sessions-cache")]
        ),
        None
    );
    assert_eq!(
        value(
            &text,
            "rotor_policy_max_age_seconds",
            &[("policy", "sessions-cache")]
        ),
        None
    );
    // A policy whose kind changed has one secret-created series, under the new kind.
    m.set_secret_created("sessions-cache", "redis", 1_750_000_000.0);
    let text = m.encode();
    assert_eq!(
        value(
            &text,
            "rotor_secret_created_timestamp_seconds",
            &[("policy", "sessions-cache")]
        ),
        Some(1_750_000_000.0)
    );
}

#[test]
fn label_values_come_only_from_bounded_sets() {
    let canary = rotor_testkit::canary();
    let m = exercised();
    let id = "01JNR6Z8Q4W2X1V5T3S9P7M0KZ";
    m.observe_rotation(&rotation(
        id,
        "payments-db",
        &format!("postgres {canary}"),
        "compromise",
        "failed",
        &[
            ("planned", "ok", -1.0),
            ("staged", "ok", 12.0),
            ("applied", "failed", 80.0),
        ],
        json!({
            "actor": format!("alice {canary}"),
            "reason": format!("leaked {canary}"),
            "ticket": canary,
            "error": format!("applied: password authentication failed for {canary}"),
            "old_fingerprint": canary,
            "verification": [{"check": "old_credential_rejected", "passed": false,
                              "evidence": canary, "at": "2025-03-01T10:00:01Z"}],
            "consumers": [{"consumer": format!("file /{canary}"), "state": "pending",
                           "error": canary}],
        }),
    ));
    m.consumer_failure("payments-db", &canary);
    m.set_secret_created("payments-db", &canary, 1.0);
    m.set(
        &format!("payments db {canary}"),
        PolicyGauge::OldCredentialValid(true),
    );
    m.api_request("/v1/policies", 1000);
    let text = m.encode();
    rotor_testkit::assert_no_secret(&text, &[&canary, id]);

    let policies = [
        "payments-db",
        "sessions-cache",
        "orders-mq",
        "billing-api",
        "invalid",
    ];
    let steps: Vec<&str> = Step::FORWARD.iter().map(|s| s.as_str()).collect();
    let mut kinds: Vec<&str> = CredentialSpec::KINDS.to_vec();
    kinds.push("other");
    let mut consumers: Vec<&str> = ConsumerSpec::KINDS.to_vec();
    consumers.push("other");
    for s in samples(&text) {
        for (label, v) in &s.labels {
            let ok = match label.as_str() {
                "policy" => policies.contains(&v.as_str()),
                "kind" => kinds.contains(&v.as_str()),
                "trigger" => ["schedule", "on_demand", "compromise"].contains(&v.as_str()),
                "result" if s.name == "rotor_policy_reloads_total" => {
                    ["success", "failure"].contains(&v.as_str())
                }
                "result" => RESULTS.contains(&v.as_str()),
                "step" => steps.contains(&v.as_str()),
                "consumer_type" => consumers.contains(&v.as_str()),
                "route" => ROUTES.contains(&v.as_str()),
                "code" => v == "other" || v.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)),
                "version" => v == VERSION,
                "system" => rotor::outside::System::ALL
                    .iter()
                    .any(|system| system.as_str() == v),
                "task" => ["rotation", "sync"].contains(&v.as_str()),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(ok, "{} has label {label}={v:?} outside its set", s.name);
        }
    }
    assert_eq!(
        value(
            &text,
            "rotor_rotations_total",
            &[
                ("policy", "payments-db"),
                ("kind", "other"),
                ("result", "failed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "rotor_consumer_failures_total",
            &[("policy", "payments-db"), ("consumer_type", "other")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "rotor_old_credential_still_valid",
            &[("policy", "invalid")]
        ),
        Some(1.0)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = monitoring();
    let check = promtool(&["check", "rules", "alerts.yaml"], &dir, "");
    assert_clean(&check, "promtool check rules monitoring/alerts.yaml");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("SUCCESS: 8 rules found"), "{stdout}");

    let test = promtool(&["test", "rules", "alerts-test.yaml"], &dir, "");
    assert_clean(&test, "promtool test rules monitoring/alerts-test.yaml");

    // The unit tests cover every alert, firing and not firing.
    let tests = std::fs::read_to_string(dir.join("alerts-test.yaml")).expect("alerts-test.yaml");
    for alert in [
        "RotorRotationFailed",
        "RotorOldCredentialStillValid",
        "RotorSecretOlderThanMaxAge",
        "RotorAgentDown",
        "RotorNoLeader",
        "RotorJobPanicked",
        "RotorOutsideCallTimeouts",
    ] {
        let blocks: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|b| b.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            blocks.iter().any(|b| b.contains("exp_alerts: []")),
            "no test shows {alert} not firing"
        );
        assert!(
            blocks.iter().any(|b| b.contains("exp_labels:")),
            "no test shows {alert} firing"
        );
    }

    // Rules use only metrics the agent exposes (besides Prometheus' own `up`).
    let exposed = exposed_names();
    let rules = std::fs::read_to_string(dir.join("alerts.yaml")).expect("alerts.yaml");
    for name in metric_names(&rules) {
        assert!(exposed.contains(&name), "alerts.yaml uses unknown {name}");
    }
}

/// Every sample name `Metrics::encode` produces once fed (histograms contribute their
/// `_bucket`, `_sum` and `_count` series).
fn exposed_names() -> BTreeSet<String> {
    samples(&exercised().encode())
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// The `rotor_…` metric names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rotor_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// Every panel, rows' nested panels included.
fn panels(value: &Value, out: &mut Vec<Value>) {
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel.clone());
        panels(panel, out);
    }
}

#[test]
fn dashboard_queries_use_only_exposed_metrics() {
    let path = monitoring().join("grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    assert!(dash["uid"].is_string() && dash["title"].is_string());

    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let policy = var("policy");
    assert_eq!(policy["type"], "query");
    assert_eq!(policy["datasource"]["uid"], "${datasource}");
    let policy_query = policy["query"]["query"].as_str().expect("policy query");
    assert!(
        policy_query.starts_with("label_values(") && policy_query.ends_with(", policy)"),
        "{policy_query}"
    );

    let mut all = Vec::new();
    panels(&dash, &mut all);
    let mut exprs = vec![policy_query.to_owned()];
    let mut ids = BTreeSet::new();
    for panel in all.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64()), "duplicate id on {title}");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} does not use the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }

    let exposed = exposed_names();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exposed.contains(&name),
                "the dashboard queries {name}, which rotor does not expose: {expr}"
            );
            used.insert(name);
        }
    }
    // The panels the issue asks for have their metrics.
    for name in [
        "rotor_rotations_total",
        "rotor_rotation_duration_seconds_bucket",
        "rotor_rotation_step_duration_seconds_bucket",
        "rotor_secret_created_timestamp_seconds",
        "rotor_policy_max_age_seconds",
        "rotor_next_rotation_timestamp_seconds",
        "rotor_old_credential_still_valid",
        "rotor_consumer_failures_total",
        "rotor_leader",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }

    // Every panel query is valid PromQL: promtool parses it as a recording rule once
    // Grafana's variables are filled in.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().skip(1).enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$policy", ".*")
            .replace("$kind", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("a JSON string is a YAML string")
        ));
    }
    std::fs::write(dir.path().join("dashboard.yaml"), rules).expect("write rules");
    let out = promtool(&["check", "rules", "dashboard.yaml"], dir.path(), "");
    assert_clean(&out, "promtool check rules on the dashboard's queries");
}
