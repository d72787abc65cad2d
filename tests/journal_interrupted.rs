//! A panicked job's note on the open rotation, against real OpenBao: the journal
//! record keeps its status (the next attempt resumes or rolls it back) and says why it
//! stopped; a finished or other rotation is left alone. Needs `dev/stack up`.

mod common;

use rotor::agent::Executor;
use rotor::consumers::Consumers;
use rotor::engine::{Engine, EngineConfig, Rotation, Status};

/// A rotation left open by an unanswered target.
fn rotation(policy: &str, id: &str, status: &str) -> Rotation {
    common::fake_exec::rotation(
        policy,
        status,
        serde_json::json!({"rotation_id": id, "error": "applied: the target did not answer"}),
    )
}

#[tokio::test]
async fn a_panic_is_noted_on_the_open_rotation_only() {
    let vault = common::vault();
    let policy = rotor_testkit::unique("noted");
    let engine = Engine::new(vault.clone(), EngineConfig::default(), Consumers::new())
        .await
        .expect("engine");
    let id = ulid::Ulid::new().to_string();
    engine
        .journal()
        .write(&rotation(&policy, &id, "rolling_back"), 0)
        .await
        .expect("journal written");

    // Another rotation id: nothing is written.
    let other = engine
        .note_interrupted(&policy, "01JOTHER000000000000000000", "x")
        .await
        .expect("note");
    assert!(other.is_none());

    let note = "internal error: the rotation job panicked (overflow)";
    let written = engine
        .note_interrupted(&policy, &id, note)
        .await
        .expect("note")
        .expect("the open rotation is noted");
    let (stored, _) = engine.journal().load(&policy).await.expect("read");
    let stored = stored.expect("record");
    assert_eq!(stored.status, Status::RollingBack, "still open, to resume");
    assert_eq!(
        stored.error.as_deref(),
        Some(format!("applied: the target did not answer; {note}").as_str())
    );
    assert_eq!(stored.error, written.error);
    // The same panic again (every attempt): noted once.
    let again = engine
        .note_interrupted(&policy, &id, note)
        .await
        .expect("note")
        .expect("still open");
    assert_eq!(again.error, written.error);

    // A finished rotation is not touched.
    let (_, version) = engine.journal().load(&policy).await.expect("read");
    engine
        .journal()
        .write(&rotation(&policy, &id, "rolled_back"), version)
        .await
        .expect("journal written");
    assert!(
        engine
            .note_interrupted(&policy, &id, note)
            .await
            .expect("note")
            .is_none()
    );
    let (stored, _) = engine.journal().load(&policy).await.expect("read");
    assert_eq!(
        stored.and_then(|r| r.error).as_deref(),
        Some("applied: the target did not answer")
    );
}
