//! Property tests of the schedule class of defects (a `maxAge` of a billion weeks once
//! passed validation and made the agent panic computing the next due time): arbitrary
//! schedules go through the validator, and every accepted one through `next_due` and
//! `due_now` with arbitrary secret ages, renewal times and clocks. Neither may panic;
//! an accepted policy is due at a time no earlier than the scheduler's reference
//! (the clock, or the last cron fire handled), or never. A second property drives the
//! scheduling functions with durations no validator would accept.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use rotor::policy::{self, ValidatedPolicy};
use rotor::schedule::{self, DueInputs};
use rotor::secret::SecretMap;

/// Cases per property: under a second in a debug build. `PROPTEST_CASES` asks for
/// more (a longer hunt).
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// A number as a duration's integer part: small, near unit limits, or anything.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..100,
        Just(3650),
        Just(3651),
        Just(1_000_000_000),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

/// Duration text as a user might write it, valid or not.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec!["ms", "s", "m", "h", "d", "w", "y", ""]);
    prop_oneof![
        Just("0".to_owned()),
        (amount(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (amount(), amount()).prop_map(|(a, b)| format!("{a}d{b}h")),
        (amount(), amount()).prop_map(|(a, b)| format!("{a}w{b}ms")),
        Just("-1s".to_owned()),
    ]
}

fn cron_text() -> impl Strategy<Value = String> {
    let minute = prop::sample::select(vec!["*", "0", "59", "*/5", "0,30", "61", "15-45/10"]);
    let hour = prop::sample::select(vec!["*", "0", "3", "23", "2-4", "*/6", "24"]);
    let dom = prop::sample::select(vec!["*", "1", "13", "29", "30", "31", "15-20", "32"]);
    let month = prop::sample::select(vec!["*", "1", "2", "2,4", "12", "13"]);
    let dow = prop::sample::select(vec!["*", "0", "1", "1-5", "6", "7", "5#2"]);
    (minute, hour, dom, month, dow).prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"))
}

fn timezone() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "UTC",
        "Europe/Berlin",
        "America/St_Johns",
        "Pacific/Apia",
        "Pacific/Kiritimati",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/Santiago",
        "Nowhere/Special",
    ])
}

fn window_text() -> impl Strategy<Value = String> {
    (0u32..26, 0u32..62, 0u32..26, 0u32..62)
        .prop_map(|(a, b, c, d)| format!("{a:02}:{b:02}-{c:02}:{d:02}"))
}

/// An instant anywhere chrono can represent, or in the years a real clock or Vault
/// reports.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        2 => 0i64..253_402_300_800, // 1970 … 9999
        1 => min..=max,
        1 => prop::sample::select(vec![min, max, 253_402_300_799]),
    ]
    .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// A clock in the years an agent runs.
fn clock() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..7_258_118_400) // 2000 … 2200
        .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// A `spec.schedule` block with each field present or not.
fn schedule_block() -> impl Strategy<Value = String> {
    (
        prop::option::of(cron_text()),
        prop::option::of(timezone()),
        prop::option::of(duration_text()),
        prop::option::of(window_text()),
        prop::option::of(duration_text()),
    )
        .prop_map(|(cron, tz, jitter, window, max_age)| {
            let mut s = String::from("  schedule:\n");
            if let Some(c) = cron {
                s.push_str(&format!("    cron: \"{c}\"\n"));
            }
            if let Some(t) = tz {
                s.push_str(&format!("    timezone: {t}\n"));
            }
            if let Some(j) = jitter {
                s.push_str(&format!("    jitter: \"{j}\"\n"));
            }
            if let Some(w) = window {
                s.push_str(&format!("    window: \"{w}\"\n"));
            }
            if let Some(m) = max_age {
                s.push_str(&format!("    maxAge: \"{m}\"\n"));
            }
            s
        })
}

fn load(schedule: &str) -> Result<ValidatedPolicy, String> {
    let yaml = format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: prop\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/prop\n{schedule}"
    );
    let set = policy::load_str(Path::new("prop.yaml"), &yaml).map_err(|e| e.to_string())?;
    set.get("prop")
        .cloned()
        .ok_or_else(|| "no policy".to_owned())
}

fn inputs() -> impl Strategy<Value = (DueInputs, DateTime<Utc>)> {
    (
        clock(),
        prop::option::of(prop_oneof![instant(), clock()]),
        prop::option::of(instant()),
        prop::option::of(instant()),
    )
        .prop_map(|(now, cron_after, secret_created, renewal_at)| {
            (
                DueInputs {
                    cron_after,
                    secret_created,
                    renewal_at,
                },
                now,
            )
        })
}

/// What every accepted policy must satisfy for any inputs: no panic (the property
/// runner reports one as a failure), and a due time no earlier than what the scheduler
/// measures from.
fn check_schedule(p: &ValidatedPolicy, inputs: &DueInputs, now: DateTime<Utc>) {
    let due = schedule::next_due(p, inputs, now);
    if let Some(d) = due {
        let reference = inputs.cron_after.map_or(now, |a| a.min(now));
        assert!(
            d.at >= reference,
            "due at {} before {reference} ({:?})",
            d.at,
            d.reason
        );
        if let Some(fire) = d.fire {
            assert!(d.at >= fire, "due at {} before its fire time {fire}", d.at);
        }
    }
    let _ = schedule::due_now(p, &SecretMap::new(), inputs.secret_created, now);
}

proptest! {
    #![proptest_config(config())]

    /// The validator rejects or accepts; what it accepts is scheduled without a panic.
    #[test]
    fn validated_schedules_never_panic(block in schedule_block(), (inputs, now) in inputs()) {
        if let Ok(p) = load(&block) {
            // (An empty `schedule:` is no schedule.)
            if let Some(s) = p.spec.schedule.as_ref() {
                prop_assert!(s.max_age.is_none_or(|m| m <= policy::MAX_AGE_BOUND.max));
                prop_assert!(s.jitter <= policy::JITTER_BOUND.max);
            }
            check_schedule(&p, &inputs, now);
        }
    }

    /// Durations past every bound (as a policy built in code could hold) and instants
    /// at the calendar's ends: scheduling still does not panic.
    #[test]
    fn unbounded_durations_never_panic(
        max_age in prop::option::of(any::<u64>()),
        jitter_ms in any::<u64>(),
        window in prop::option::of(window_text()),
        (inputs, now) in inputs(),
    ) {
        let mut block = String::from("  schedule:\n    cron: \"*/5 * * * *\"\n    timezone: Pacific/Apia\n    maxAge: 1h\n");
        if let Some(w) = window {
            block.push_str(&format!("    window: \"{w}\"\n"));
        }
        let Ok(mut p) = load(&block) else { return Ok(()) };
        if let Some(s) = p.spec.schedule.as_mut() {
            s.max_age = max_age.map(Duration::from_secs);
            s.jitter = Duration::from_millis(jitter_ms);
        }
        let _ = schedule::next_due(&p, &inputs, now);
        let _ = schedule::due_now(&p, &SecretMap::new(), inputs.secret_created, now);
        let fire = inputs.cron_after.unwrap_or(now);
        let j = schedule::jitter_for("prop", fire, Duration::from_millis(jitter_ms));
        prop_assert!(j >= chrono::Duration::zero());
        let _ = schedule::saturating_after(fire, Duration::from_secs(max_age.unwrap_or(u64::MAX)));
    }
}

#[test]
fn a_billion_weeks_is_refused_and_the_calendar_end_is_never_due() {
    let err = load("  schedule:\n    maxAge: 1000000000w\n").expect_err("over the bound");
    assert!(err.contains("spec.schedule.maxAge"), "{err}");
    // Built in code past the validator: next_due reads it as "never due by age".
    let mut p = load("  schedule:\n    maxAge: 1h\n").expect("valid");
    if let Some(s) = p.spec.schedule.as_mut() {
        s.max_age = Some(Duration::from_secs(1_000_000_000 * 604_800));
    }
    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
    let inputs = DueInputs {
        cron_after: None,
        secret_created: Some(now),
        renewal_at: None,
    };
    assert_eq!(schedule::next_due(&p, &inputs, now), None);
    assert_eq!(
        schedule::due_now(&p, &SecretMap::new(), Some(now), now),
        None
    );
}
