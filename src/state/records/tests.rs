use serde_json::Value;

use super::*;

/// The derived names are the serde names, so what is printed and labelled is what the
/// records hold.
fn same_name<T: Serialize + Copy + Into<&'static str> + fmt::Display>(values: &[T]) {
    for v in values {
        let Value::String(serde) = serde_json::to_value(v).expect("encode") else {
            panic!("not a string");
        };
        let name: &'static str = (*v).into();
        assert_eq!(name, serde);
        assert_eq!(v.to_string(), serde);
    }
}

#[test]
fn every_name_is_its_serde_name() {
    let mut steps = vec![Step::Planned];
    steps.extend(Step::FORWARD);
    same_name(&steps);
    use Status::{Completed, Open, RolledBack, RollingBack};
    same_name(&[Open, RollingBack, Completed, RolledBack, Status::Failed]);
    same_name(&[Trigger::Schedule, Trigger::OnDemand, Trigger::Compromise]);
    use ConsumerState::{Pending, Pushed};
    same_name(&[ConsumerState::Verified, Pushed, Pending]);
    same_name(&RetireStep::ALL);
    use RetireState::{Enabled, Enabling, Retired, Retiring};
    same_name(&[Retiring, Retired, RetireState::Failed, Enabling, Enabled]);
    use RemovalState::{Absent, Removed};
    same_name(&[Removed, Absent, RemovalState::Failed]);
    use StepOutcome::{Begun, Skipped};
    same_name(&[Begun, StepOutcome::Ok, Skipped, StepOutcome::Failed]);
    use Check::{
        OldCredentialRejected, OldCredentialRestored, OtherAccountRejected,
        RetiredCredentialRejected,
    };
    same_name(&[
        OldCredentialRejected,
        OldCredentialRestored,
        RetiredCredentialRejected,
        OtherAccountRejected,
    ]);
    assert_eq!(Status::RollingBack.as_str(), "rolling_back");
    assert_eq!(Trigger::OnDemand.as_str(), "on_demand");
    assert_eq!(RetireStep::ConsumersRemoved.as_str(), "consumers_removed");
    assert_eq!(
        Check::OldCredentialRejected.as_str(),
        "old_credential_rejected"
    );
}

/// The stored journals of `tests/fixtures/journal/` (the release of 2026-12-07), as
/// their text: decoded and written back the way the store writes records (a JSON
/// object, keys in order), they are the same bytes.
#[test]
fn stored_journals_re_encode_byte_for_byte() {
    for text in [
        include_str!("../../../tests/fixtures/journal/completed.json"),
        include_str!("../../../tests/fixtures/journal/waiting.json"),
        include_str!("../../../tests/fixtures/journal/rolling_back.json"),
    ] {
        let record: Rotation = serde_json::from_str(text).expect("a journal record");
        let object = serde_json::to_value(&record).expect("encode");
        let written = serde_json::to_string_pretty(&object).expect("text");
        assert_eq!(written, text.trim_end());
    }
}

#[test]
fn times_are_written_with_milliseconds_and_read_in_any_rfc3339_form() {
    let t = time::parse("2026-12-07T17:42:11.138+02:00").expect("an offset time");
    assert_eq!(time::format(&t), "2026-12-07T15:42:11.138Z");
    let whole = time::parse("2027-01-01T00:00:00Z").expect("whole seconds");
    assert_eq!(time::format(&whole), "2027-01-01T00:00:00.000Z");
    assert!(time::parse("yesterday").is_err());
    let now = time::now();
    assert_eq!(time::parse(&time::format(&now)).expect("read back"), now);
}

#[test]
fn a_retirement_record_reads_and_writes_back_unchanged() {
    let stored = serde_json::json!({
        "policy": "p", "kind": "postgres", "strategy": "single", "state": "enabled",
        "actor": "vault:alice", "reason": "offboarding", "canonical": "secret/app/db",
        "canonical_version": 4, "finished_rotation": "01JABCDEFGHJKMNPQRSTVWXYZ0",
        "started_at": "2026-12-07T15:42:11.138Z", "retired_at": "2026-12-07T15:42:12.000Z",
        "updated_at": "2026-12-07T15:43:00.001Z", "runs": 1,
        "steps": [{"step": "disabled", "outcome": "ok", "started_at": "2026-12-07T15:42:11.140Z",
                   "finished_at": "2026-12-07T15:42:11.200Z", "duration_ms": 60.0, "attempts": 1}],
        "consumers": [{"consumer": "file /x", "state": "removed", "attempts": 1}],
        "verification": [{"check": "retired_credential_rejected", "passed": true,
                          "evidence": "SQLSTATE 28000", "at": "2026-12-07T15:42:11.900Z"}],
        "enable": {"actor": "vault:bob", "reason": "back", "started_at": "2026-12-07T15:42:50.000Z",
                   "finished_at": "2026-12-07T15:43:00.000Z",
                   "rotation_id": "01JABCDEFGHJKMNPQRSTVWXYZ1"}
    });
    let record: Retirement = serde_json::from_value(stored.clone()).expect("a record");
    assert_eq!(
        record
            .enable
            .as_ref()
            .and_then(|e| e.rotation_id.as_deref()),
        Some("01JABCDEFGHJKMNPQRSTVWXYZ1")
    );
    assert!(record.retired_at > Some(record.started_at));
    assert_eq!(serde_json::to_value(&record).expect("encode"), stored);
}
