//! rotor's own records in Vault (`rotor::state`): the same scenarios run against the
//! Vault store on the real OpenBao and against the in-memory store, and both must
//! behave alike (each scenario also writes a transcript of what it saw, and the two
//! transcripts must be equal). Needs `dev/stack up`.

use std::sync::Arc;

use rotor::agent::quarantine::{Quarantine, QuarantineStore};
use rotor::agent::{ApprovalRecord, ApprovalState, ApprovalStore};
use rotor::secret::{SecretMap, SecretString};
use rotor::state::memory::MemoryStore;
use rotor::state::{self, Key, Store, VaultStore};
use rotor::vault::{Vault, VaultConfig, VaultError};
use serde_json::{Map, Value, json};

fn vault() -> Vault {
    rotor::install_crypto_provider();
    let s = rotor_testkit::stack();
    let config = VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..VaultConfig::from_env()
    };
    Vault::connect(&config).expect("Vault client")
}

/// Both stores, named alike: the Vault one under a fresh prefix of `secret`.
fn stores(test: &str) -> [Arc<dyn Store>; 2] {
    let prefix = format!("rotor-test/{}", rotor_testkit::unique(test));
    [
        Arc::new(VaultStore::new(vault(), "secret", &prefix)),
        Arc::new(MemoryStore::named("secret", &prefix)),
    ]
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// What a write did, for the transcript.
fn outcome(result: Result<u64, VaultError>) -> String {
    match result {
        Ok(version) => format!("version {version}"),
        Err(VaultError::CasConflict { expected, .. }) => format!("conflict on {expected}"),
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

/// Write, check-and-set conflicts, read back, delete, write again.
async fn write_conflict_read_delete(store: &dyn Store) -> Vec<String> {
    let key = Key::Journal("p");
    let mut seen = Vec::new();
    assert!(store.read(key).await.expect("read").is_none());
    for (n, cas) in [
        (1, Some(0)),
        (2, Some(0)),
        (3, Some(1)),
        (4, Some(1)),
        (5, None),
    ] {
        let written = store.write(key, &object(json!({ "n": n })), cas).await;
        seen.push(format!("write {n} cas {cas:?}: {}", outcome(written)));
    }
    let entry = store.read(key).await.expect("read").expect("written");
    seen.push(format!(
        "read: version {} n {}",
        entry.version, entry.data["n"]
    ));
    assert_eq!((entry.version, &entry.data["n"]), (3, &json!(5)));
    store.delete(key).await.expect("delete");
    assert!(store.read(key).await.expect("read").is_none());
    store.delete(key).await.expect("a second delete is fine");
    let again = store.write(key, &object(json!({ "n": 6 })), Some(0)).await;
    seen.push(format!("after delete, create-only: {}", outcome(again)));
    // Other keys are untouched; a version that does not exist yet is a conflict.
    let other = store
        .write(Key::History("p"), &object(json!({})), Some(3))
        .await;
    seen.push(format!("another key at version 3: {}", outcome(other)));
    seen
}

#[tokio::test]
async fn both_stores_version_conflict_and_delete_alike() {
    let [in_vault, in_memory] = stores("state-cas");
    let from_vault = write_conflict_read_delete(&*in_vault).await;
    let from_memory = write_conflict_read_delete(&*in_memory).await;
    assert_eq!(
        from_vault,
        [
            "write 1 cas Some(0): version 1",
            "write 2 cas Some(0): conflict on 0",
            "write 3 cas Some(1): version 2",
            "write 4 cas Some(1): conflict on 1",
            "write 5 cas None: version 3",
            "read: version 3 n 5",
            "after delete, create-only: version 1",
            "another key at version 3: conflict on 3",
        ]
    );
    assert_eq!(from_vault, from_memory);
}

/// The typed records over a store: staging, the fingerprint key, quarantine and
/// approval records and their pointer, and a corrupt record.
async fn records(store: Arc<dyn Store>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut value = SecretMap::new();
    value.insert("password", SecretString::from("staged-value".to_owned()));
    let staged = state::write_staged(&*store, "p", "01J", &value).await;
    let again = state::write_staged(&*store, "p", "01J", &value).await;
    seen.push(format!(
        "stage: {}, again: {}",
        outcome(staged),
        outcome(again)
    ));
    let back = state::read_staged(&*store, "p", "01J").await.expect("read");
    assert!(back.expect("staged").same_values(&value));
    state::delete_staged(&*store, "p", "01J")
        .await
        .expect("delete");
    assert!(
        state::read_staged(&*store, "p", "01J")
            .await
            .expect("read")
            .is_none()
    );

    let a = state::fingerprint_key(&*store).await.expect("created");
    let b = state::fingerprint_key(&*store).await.expect("read back");
    assert_eq!(a.fingerprint("x"), b.fingerprint("x"));
    let key = store.read(Key::FingerprintKey).await.expect("read");
    seen.push(format!(
        "fingerprint key version {:?}",
        key.map(|e| e.version)
    ));

    let quarantines = QuarantineStore::with_store(store.clone());
    let q = Quarantine {
        since: "2027-01-01T00:00:00Z".into(),
        reason: "3 consecutive failed rotations".into(),
        rotation_id: None,
        failures: 3,
    };
    quarantines.set("p", Some(&q)).await.expect("quarantine");
    assert_eq!(quarantines.get("p").await.expect("read"), Some(q));
    let raw = store.read(Key::Quarantine("p")).await.expect("read");
    seen.push(format!(
        "quarantine stored: {}",
        raw.expect("stored").data["record"]
    ));
    quarantines.set("p", None).await.expect("release");
    assert_eq!(quarantines.get("p").await.expect("read"), None);

    let approvals = ApprovalStore::with_store(store.clone());
    let record = ApprovalRecord {
        id: "01J00000000000000000000000".into(),
        policy: "p".into(),
        requester: "api:alice".into(),
        reason: Some("r".into()),
        ticket: None,
        compromise: false,
        created_at: "2027-01-01T00:00:00.000Z".into(),
        expires_at: "2027-01-01T02:00:00.000Z".into(),
        required: 1,
        approvals: Vec::new(),
        state: ApprovalState::Pending,
        rotation_id: None,
        authenticated_by: rotor::audit::AuthMethod::ApiToken,
    };
    let created = approvals.put(&record, Some(0)).await.expect("create");
    let twice = approvals.put(&record, Some(0)).await.map_err(|e| e.kind());
    seen.push(format!("approval: version {created}, again: {twice:?}"));
    let (back, version) = approvals
        .get(&record.id)
        .await
        .expect("read")
        .expect("some");
    assert_eq!((back, version), (record.clone(), created));
    approvals
        .set_latest("p", Some(&record.id))
        .await
        .expect("point");
    assert_eq!(
        approvals.latest("p").await.expect("read"),
        Some(record.id.clone())
    );
    approvals.set_latest("p", None).await.expect("clear");
    assert_eq!(approvals.latest("p").await.expect("read"), None);

    let corrupt = object(json!({"record": "{\"reason\": \"hidden-reason\"}"}));
    store
        .write(Key::Quarantine("p"), &corrupt, None)
        .await
        .expect("write");
    let e = quarantines.get("p").await.expect_err("corrupt");
    assert!(!e.to_string().contains("hidden"), "{e}");
    seen.push(format!("corrupt quarantine: {} {}", e.kind(), e));
    seen
}

#[tokio::test]
async fn both_stores_keep_rotors_records_alike() {
    let [in_vault, in_memory] = stores("state-records");
    let prefix = in_vault.prefix().to_owned();
    let from_vault = records(in_vault).await;
    let from_memory = records(in_memory).await;
    assert_eq!(from_vault[0], "stage: version 1, again: conflict on 0");
    assert_eq!(from_vault[1], "fingerprint key version Some(1)");
    assert!(
        from_vault[4].contains(&format!("at secret/{prefix}/quarantine/p")),
        "{}",
        from_vault[4]
    );
    assert_eq!(from_vault, from_memory);
}
