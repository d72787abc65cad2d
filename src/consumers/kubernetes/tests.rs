//! Unit tests of the Kubernetes consumer (no API server).

use base64::Engine as _;

use super::error::*;
use super::rollout::*;
use super::*;
use crate::secret::SecretString;

fn rendered(pairs: &[(&str, &str)]) -> SecretMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
        .collect()
}

fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(message, reason)
            .with_code(code)
            .boxed(),
    )
}

fn consumer(secret_type: Option<&str>) -> KubernetesConsumer {
    KubernetesConsumer {
        namespace: "ns".to_owned(),
        secret: "s".to_owned(),
        data: BTreeMap::new(),
        secret_type: secret_type.map(str::to_owned),
        restart: Vec::new(),
        force: false,
    }
}

fn existing(type_: Option<&str>) -> WipedSecret {
    WipedSecret(Secret {
        type_: type_.map(str::to_owned),
        ..Secret::default()
    })
}

fn is_valid_annotation_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ANNOTATION_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[test]
fn restart_marker_keys_are_valid_annotation_keys() {
    assert_eq!(
        restart_annotation_key("payments-db"),
        "rotor.dev/restarted-for-payments-db"
    );
    let exact = "a".repeat(MAX_ANNOTATION_NAME_LEN - RESTART_MARKER_PREFIX.len());
    assert_eq!(
        restart_annotation_key(&exact),
        format!("rotor.dev/restarted-for-{exact}")
    );
    let long_a = format!("{}-.-x", "a".repeat(40));
    let long_b = format!("{}-.-y", "a".repeat(40));
    for name in [&exact, &long_a, &long_b, &"b.c-".repeat(60)] {
        let key = restart_annotation_key(name);
        let (prefix, name_part) = key.split_once('/').unwrap();
        assert_eq!(prefix, "rotor.dev");
        assert!(is_valid_annotation_name(name_part), "{key}");
    }
    // Long names that share a prefix still get distinct keys.
    assert_ne!(
        restart_annotation_key(&long_a),
        restart_annotation_key(&long_b)
    );
    assert!(restart_annotation_key(&long_a).starts_with("rotor.dev/restarted-for-aaaa"));
}

#[test]
fn scrubber_removes_plain_json_escaped_and_base64_values() {
    let values = rendered(&[("a", "pa\"ss\nword"), ("b", "hunter2"), ("c", "")]);
    let scrubber = Scrubber::of_secret_data(&values);
    let b64 = base64::engine::general_purpose::STANDARD.encode("hunter2");
    let text = format!(
        "plain hunter2, json {{\"a\":\"pa\\\"ss\\nword\"}}, raw pa\"ss\nword, b64 {b64}, end"
    );
    let out = scrubber.scrub(&text);
    assert!(!out.contains("hunter2"), "{out}");
    assert!(!out.contains(&b64), "{out}");
    assert!(!out.contains("ss\\nword"), "{out}");
    assert!(!out.contains("ss\nword"), "{out}");
    assert!(out.starts_with("plain [REDACTED], json"), "{out}");
    assert!(out.ends_with(", end"), "{out}");
    // An empty value scrubs nothing.
    assert_eq!(
        Scrubber::of_secret_data(&rendered(&[("x", "")])).scrub("abc"),
        "abc"
    );
}

#[test]
fn api_failures_are_classified_and_scrubbed() {
    let values = rendered(&[("k", "s3cr3t-value")]);
    let scrubber = Scrubber::of_secret_data(&values);
    let e = ApiFailure::from_kube(
        api_error(
            503,
            "ServiceUnavailable",
            "etcd down while writing s3cr3t-value",
        ),
        &scrubber,
    );
    assert!(e.is_transient());
    assert_eq!(e.code(), Some(503));
    assert_eq!(e.reason(), "ServiceUnavailable");
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert!(!format!("{e:?}").contains("s3cr3t"));
    for (code, transient) in [
        (429, true),
        (408, true),
        (500, true),
        (403, false),
        (404, false),
        (422, false),
    ] {
        let e = ApiFailure::from_kube(api_error(code, "X", "m"), &scrubber);
        assert_eq!(e.is_transient(), transient, "{code}");
    }
    // serde_json quotes the offending value in its message; only the shape is kept.
    let serde_err = serde_json::from_str::<u32>("\"s3cr3t-value\"").unwrap_err();
    assert!(serde_err.to_string().contains("s3cr3t-value"));
    let e = ApiFailure::from_kube(kube::Error::SerdeError(serde_err), &Scrubber::default());
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert!(!e.is_transient());
    let e = ApiFailure::from_kube(
        kube::Error::Service("connection refused".into()),
        &Scrubber::default(),
    );
    assert!(e.is_transient());
}

#[test]
fn a_409_on_apply_is_a_field_conflict_naming_field_and_manager() {
    // The body a real API server sends for an apply conflict.
    let status: kube::core::Status = serde_json::from_value(serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Apply failed with 1 conflict: conflict with \"someone-else\" using v1: .data.PGPASSWORD",
        "reason": "Conflict",
        "details": {"causes": [{
            "reason": "FieldManagerConflict",
            "message": "conflict with \"someone-else\" using v1",
            "field": ".data.PGPASSWORD"
        }]},
        "code": 409
    }))
    .unwrap();
    let err = apply_error(
        "ns",
        "s",
        kube::Error::Api(status.boxed()),
        &Scrubber::default(),
    );
    let text = err.to_string();
    assert_eq!(err.kind(), "field_conflict");
    assert!(!err.is_transient());
    assert!(
        text.contains(".data.PGPASSWORD: conflict with \"someone-else\""),
        "{text}"
    );
    assert!(text.contains("force: true"), "{text}");

    let err = apply_error(
        "ns",
        "s",
        api_error(403, "Forbidden", "no"),
        &Scrubber::default(),
    );
    assert_eq!(err.kind(), "apply");
    assert!(!err.is_transient());
    let err = apply_error(
        "ns",
        "s",
        api_error(502, "BadGateway", "lb"),
        &Scrubber::default(),
    );
    assert!(err.is_transient());
}

#[test]
fn a_lost_compare_and_swap_on_a_workload_is_transient() {
    let source = ApiFailure::from_kube(api_error(409, "Conflict", "stale"), &Scrubber::default());
    let err = KubernetesError::Restart {
        namespace: "ns".to_owned(),
        workload: "deployment/api".to_owned(),
        source,
    };
    assert_eq!(err.kind(), "restart");
    assert!(err.is_transient());
    let missing = KubernetesError::WorkloadMissing {
        namespace: "ns".to_owned(),
        workload: "deployment/api".to_owned(),
    };
    assert!(!missing.is_transient());
    assert!(missing.to_string().contains("deployment/api"));
}

#[test]
fn secret_type_follows_the_existing_secret() {
    assert_eq!(choose_type(&consumer(None), None).unwrap(), "Opaque");
    assert_eq!(
        choose_type(&consumer(Some("kubernetes.io/tls")), None).unwrap(),
        "kubernetes.io/tls"
    );
    assert_eq!(
        choose_type(&consumer(None), Some(&existing(Some("kubernetes.io/tls")))).unwrap(),
        "kubernetes.io/tls"
    );
    assert_eq!(
        choose_type(&consumer(Some("Opaque")), Some(&existing(None))).unwrap(),
        "Opaque"
    );
    let err = choose_type(
        &consumer(Some("kubernetes.io/basic-auth")),
        Some(&existing(Some("Opaque"))),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "type_mismatch");
    assert!(err.to_string().contains("cannot be changed"), "{err}");
}

#[test]
fn mismatched_keys_compares_bytes_and_ignores_foreign_keys() {
    let secret = Secret {
        data: Some(BTreeMap::from([
            ("a".to_owned(), ByteString(b"one".to_vec())),
            ("b".to_owned(), ByteString(b"TWO".to_vec())),
            ("c".to_owned(), ByteString(vec![0xff, 0xfe])),
            ("foreign".to_owned(), ByteString(b"x".to_vec())),
        ])),
        ..Secret::default()
    };
    let want = rendered(&[("a", "one"), ("b", "two"), ("c", "x"), ("d", "four")]);
    assert_eq!(mismatched_keys(&secret, &want), ["b", "c", "d"]);
    assert!(mismatched_keys(&secret, &rendered(&[("a", "one")])).is_empty());
}

#[test]
fn rendered_keys_must_be_the_declared_keys() {
    let mut spec = consumer(None);
    spec.data.insert(
        "A".to_owned(),
        crate::policy::Template::parse("{{ password }}").unwrap(),
    );
    assert!(check_rendered_keys(&spec, &rendered(&[("A", "v")])).is_ok());
    let err =
        check_rendered_keys(&spec, &rendered(&[("A", "v"), ("B", "value-of-b")])).unwrap_err();
    assert_eq!(err.kind(), "rendered_keys");
    assert!(!err.is_transient());
    let text = format!("{err} {err:?}");
    assert!(text.contains("\"B\""), "{text}");
    assert!(!text.contains("value-of-b"), "{text}");
}

#[test]
fn only_an_empty_secret_rotor_alone_manages_is_deleted_on_retire() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    let entry = |manager: &str| ManagedFieldsEntry {
        manager: Some(manager.to_owned()),
        ..ManagedFieldsEntry::default()
    };
    let secret = |data: &[(&str, &str)], managers: &[&str], label: bool| Secret {
        metadata: ObjectMeta {
            labels: label
                .then(|| BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())])),
            managed_fields: Some(managers.iter().map(|m| entry(m)).collect()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    assert!(only_rotors(&secret(&[], &["rotor"], true)));
    assert!(!only_rotors(&secret(&[("OTHER", "x")], &["rotor"], true)));
    assert!(!only_rotors(&secret(&[], &["rotor", "kubectl"], true)));
    assert!(!only_rotors(&secret(&[], &["rotor"], false)));
    assert!(
        !only_rotors(&secret(&[], &[], true)),
        "no managedFields: unknown"
    );

    let mut spec = consumer(None);
    for key in ["A", "B"] {
        spec.data.insert(
            key.to_owned(),
            crate::policy::Template::parse("{{ password }}").unwrap(),
        );
    }
    let s = secret(&[("B", "v"), ("OTHER", "x")], &["rotor"], true);
    assert_eq!(present_keys(&s, &spec), ["B"]);
}

#[test]
fn desired_secret_holds_only_rendered_keys_as_data() {
    let spec = consumer(None);
    let s = desired_secret(&spec, &rendered(&[("k", "v")]), "hmac-sha256:ab", None);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["data"]["k"], "dg==");
    assert!(json.get("stringData").is_none());
    assert!(json.get("type").is_none());
    assert_eq!(
        json["metadata"]["annotations"][DATA_HASH_ANNOTATION],
        "hmac-sha256:ab"
    );
    assert_eq!(json["metadata"]["labels"][MANAGED_BY_LABEL], "rotor");
    assert_eq!(json["kind"], "Secret");
}
