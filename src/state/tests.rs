use serde_json::json;

use super::memory::MemoryStore;
use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn every_key_has_the_path_rotor_always_used() {
    let cases = [
        (Key::Journal("p"), "rotor/journal/p"),
        (
            Key::Staging {
                policy: "p",
                rotation: "01J",
            },
            "rotor/staging/p/01J",
        ),
        (Key::History("p"), "rotor/history/p"),
        (Key::Retired("p"), "rotor/retired/p"),
        (Key::Quarantine("p"), "rotor/quarantine/p"),
        (Key::Request("01J"), "rotor/requests/01J"),
        (Key::PendingRequest("p"), "rotor/pending-request/p"),
        (Key::FingerprintKey, "rotor/config/fingerprint-key"),
    ];
    for (key, path) in cases {
        assert_eq!(key.path("rotor"), path);
    }
    let store = MemoryStore::named("kv", "team/rotor");
    assert_eq!(store.location(Key::Journal("p")), "kv/team/rotor/journal/p");
}

#[tokio::test]
async fn versions_count_up_and_check_and_set_guards_them() {
    let store = MemoryStore::new();
    let key = Key::Journal("p");
    assert!(store.read(key).await.unwrap().is_none());
    // Create-only: the first write, then a conflict.
    assert_eq!(
        store
            .write(key, &object(json!({"n": 1})), Some(0))
            .await
            .unwrap(),
        1
    );
    let e = store
        .write(key, &object(json!({"n": 2})), Some(0))
        .await
        .expect_err("exists");
    assert!(
        matches!(&e, VaultError::CasConflict { mount, path, expected: 0 } if mount == "secret" && path == "rotor/journal/p"),
        "{e}"
    );
    // On the version read: written; on a stale one: refused, nothing changed.
    assert_eq!(
        store
            .write(key, &object(json!({"n": 2})), Some(1))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store.write(key, &object(json!({"n": 3})), Some(1)).await,
        Err(VaultError::CasConflict { expected: 1, .. })
    ));
    // A version that does not exist yet is a conflict too.
    assert!(matches!(
        store.write(key, &object(json!({"n": 3})), Some(7)).await,
        Err(VaultError::CasConflict { expected: 7, .. })
    ));
    let entry = store.read(key).await.unwrap().expect("written");
    assert_eq!((entry.version, &entry.data["n"]), (2, &json!(2)));
    // Without check-and-set: always the next version.
    assert_eq!(
        store
            .write(key, &object(json!({"n": 3})), None)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn a_delete_removes_every_version_and_the_next_write_starts_over() {
    let store = MemoryStore::new();
    let key = Key::Quarantine("p");
    store
        .write(key, &object(json!({"a": 1})), None)
        .await
        .unwrap();
    store
        .write(key, &object(json!({"a": 2})), None)
        .await
        .unwrap();
    assert_eq!(store.paths(), ["rotor/quarantine/p"]);
    store.delete(key).await.unwrap();
    assert!(store.read(key).await.unwrap().is_none());
    assert!(store.paths().is_empty());
    // Deleting what is not there is fine; a create-only write works again.
    store.delete(key).await.unwrap();
    assert_eq!(
        store
            .write(key, &object(json!({"a": 3})), Some(0))
            .await
            .unwrap(),
        1
    );
    // Keys are independent.
    assert!(store.read(Key::Quarantine("q")).await.unwrap().is_none());
}

#[tokio::test]
async fn staged_values_are_create_only_and_never_debug_printed() {
    let store = MemoryStore::new();
    let mut value = SecretMap::new();
    value.insert("password", SecretString::from("canary-staged".to_owned()));
    write_staged(&store, "p", "01J", &value).await.unwrap();
    assert!(matches!(
        write_staged(&store, "p", "01J", &value).await,
        Err(VaultError::CasConflict { .. })
    ));
    let back = read_staged(&store, "p", "01J")
        .await
        .unwrap()
        .expect("staged");
    assert!(back.same_values(&value));
    let entry = store
        .read(Key::Staging {
            policy: "p",
            rotation: "01J",
        })
        .await
        .unwrap();
    let text = format!("{entry:?} {store:?}");
    assert!(!text.contains("canary"), "{text}");
    delete_staged(&store, "p", "01J").await.unwrap();
    assert!(read_staged(&store, "p", "01J").await.unwrap().is_none());
}

#[tokio::test]
async fn the_fingerprint_key_is_created_once_and_shared() {
    let store = MemoryStore::new();
    let a = fingerprint_key(&store).await.unwrap();
    let b = fingerprint_key(&store).await.unwrap();
    assert_eq!(a.fingerprint("x"), b.fingerprint("x"));
    let entry = store
        .read(Key::FingerprintKey)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(entry.version, 1);
    assert_eq!(entry.data["key"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn a_corrupt_fingerprint_key_is_reported_not_replaced() {
    let store = MemoryStore::new();
    store
        .write(Key::FingerprintKey, &object(json!({"key": "c0ffee"})), None)
        .await
        .unwrap();
    let e = fingerprint_key(&store).await.expect_err("too short");
    assert_eq!(e.kind(), "state_corrupt");
    let text = e.to_string();
    assert!(
        text.contains("secret/rotor/config/fingerprint-key"),
        "{text}"
    );
    assert!(!text.contains("c0ffee"), "{text}");
    assert_eq!(
        store
            .read(Key::FingerprintKey)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

const SAMPLE_OBJECT: Layout = Layout::object("sample record", "record");
const SAMPLE_TEXT: Layout = Layout::text("sample record", "record");

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Sample {
    name: String,
    count: u32,
}

#[tokio::test]
async fn records_that_do_not_decode_are_errors_naming_the_place_not_the_value() {
    let store = MemoryStore::new();
    let object_record = (SAMPLE_OBJECT, Key::Retired("p"), "secret/rotor/retired/p");
    let text_record = (
        SAMPLE_TEXT,
        Key::Quarantine("p"),
        "secret/rotor/quarantine/p",
    );
    let cases = [
        (object_record, json!({"other": 1}), "no key `record`"),
        (object_record, json!({"record": "text"}), "invalid type"),
        (
            object_record,
            json!({"record": {"name": "canary-value"}}),
            "missing field `count`",
        ),
        (
            object_record,
            json!({"record": {"name": "n", "count": "canary-value"}}),
            "invalid type",
        ),
        (text_record, json!({"record": 5}), "`record` is not text"),
        (
            text_record,
            json!({"record": "{\"name\": \"canary-value\"}"}),
            "missing field `count`",
        ),
        (
            text_record,
            json!({"record": "not json canary-value"}),
            "expected ident",
        ),
    ];
    for ((layout, key, place), data, expected) in cases {
        store.write(key, &object(data), None).await.unwrap();
        let e = layout
            .read::<Sample>(&store, key)
            .await
            .expect_err("corrupt");
        let text = e.to_string();
        assert!(
            text.contains(&format!("sample record at {place}")),
            "{text}"
        );
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains("canary"), "{text}");
        assert!(!e.is_transient());
    }
    let key = text_record.1;
    // A record that decodes comes back with its version.
    store
        .write(
            key,
            &object(json!({"record": "{\"name\":\"n\",\"count\":2}"})),
            None,
        )
        .await
        .unwrap();
    let (sample, version) = SAMPLE_TEXT
        .read::<Sample>(&store, key)
        .await
        .unwrap()
        .expect("present");
    assert_eq!((sample.count, version), (2, 4));
}

#[test]
fn decode_detail_names_the_position_once_and_no_value() {
    let syntax = serde_json::from_str::<serde_json::Value>("{x").unwrap_err();
    assert_eq!(
        super::decode_detail(&syntax),
        "key must be a string at line 1 column 2"
    );
    let wrong_type = serde_json::from_str::<u32>("\"s3cr3t-value\"").unwrap_err();
    let detail = super::decode_detail(&wrong_type);
    assert_eq!(detail, "invalid type at line 1 column 14");
    assert!(!detail.contains("s3cr3t"));
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Record {
        #[allow(dead_code)]
        policy: String,
    }
    let unknown = serde_json::from_str::<Record>(r#"{"policy":"p","extra":1}"#).unwrap_err();
    assert_eq!(
        super::decode_detail(&unknown),
        "unknown field `extra`, expected `policy` at line 1 column 21"
    );
}
