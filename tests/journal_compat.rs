//! Journals written by the release of 2026-12-07 (stored in `tests/fixtures/journal/`)
//! are still read, and written back unchanged: the record types may change in memory
//! (typed ids, times, states), never on disk. A rotation read from an old journal is
//! resumed at the step its record says. No services needed.

use rotor::engine::{Rotation, Status, Step, Trigger};

/// The fixture `name`, as stored JSON and as the record it reads into.
fn fixture(name: &str) -> (serde_json::Value, Rotation) {
    let path = format!(
        "{}/tests/fixtures/journal/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let stored: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let record: Rotation = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("today's journal {name} no longer reads: {e}"));
    (stored, record)
}

/// Reads every fixture and writes it back: the same JSON, field for field.
#[test]
fn journals_of_today_read_and_write_back_unchanged() {
    for name in ["completed", "waiting", "rolling_back"] {
        let (stored, record) = fixture(name);
        let written = serde_json::to_value(&record).expect("encode");
        assert_eq!(written, stored, "{name}: the journal JSON changed");
    }
}

#[test]
fn an_old_journal_resumes_where_its_record_says() {
    let (_, done) = fixture("completed");
    assert_eq!(done.status, Status::Completed);
    assert!(!done.status.is_open());
    assert_eq!(done.next_step(), None);

    let (_, waiting) = fixture("waiting");
    assert_eq!(waiting.trigger, Trigger::Compromise);
    assert!(waiting.status.is_open());
    assert_eq!(waiting.next_step(), Some(Step::Revoked));
    assert_eq!(
        waiting
            .revoke_after
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .as_deref(),
        Some("2026-12-08T15:42:11.478Z")
    );
    let pending: Vec<&str> = waiting
        .consumers
        .iter()
        .filter(|c| c.state == rotor::engine::ConsumerState::Pending)
        .map(|c| c.consumer.as_str())
        .collect();
    assert_eq!(pending, ["gitlab variable group/app DB_PASSWORD"]);

    let (_, rolling) = fixture("rolling_back");
    assert_eq!(rolling.status, Status::RollingBack);
    assert!(rolling.status.is_open() && rolling.unanswered);
    assert!(rolling.verification.last().is_some_and(|v| v.inconclusive));
    assert_eq!(rolling.promoted_version, None);
}
