//! The quarantine record against real OpenBao: stored next to the journal, read back
//! by another agent (what a restart or another replica sees), lifted by a release.
//! Needs `dev/stack up`.

mod common;

use rotor::agent::Executor;
use rotor::agent::quarantine::Quarantine;
use rotor::consumers::Consumers;
use rotor::engine::{Engine, EngineConfig};

#[tokio::test]
async fn a_quarantine_survives_a_restart_and_a_release_lifts_it() {
    let vault = common::vault();
    let policy = rotor_testkit::unique("quar");
    let engine = Engine::new(vault.clone(), EngineConfig::default(), Consumers::new())
        .await
        .expect("engine");
    assert_eq!(engine.quarantine(&policy).await.expect("read"), None);
    let q = Quarantine {
        since: "2027-01-01T00:00:00Z".into(),
        reason: "3 consecutive failed rotations".into(),
        rotation_id: Some("01J000000000000000000000000".into()),
        failures: 3,
    };
    engine
        .set_quarantine(&policy, Some(&q))
        .await
        .expect("quarantine");

    // Another engine (a restarted agent, another replica) sees the same record.
    let other = Engine::new(vault.clone(), EngineConfig::default(), Consumers::new())
        .await
        .expect("engine");
    assert_eq!(other.quarantine(&policy).await.expect("read"), Some(q));
    let raw = vault
        .kv_read_value("secret", &format!("rotor/quarantine/{policy}"))
        .await
        .expect("read")
        .expect("stored next to the journal");
    assert!(
        raw.data["record"]
            .as_str()
            .expect("record")
            .contains("consecutive")
    );

    other.set_quarantine(&policy, None).await.expect("release");
    assert_eq!(engine.quarantine(&policy).await.expect("read"), None);
}
