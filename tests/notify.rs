//! Webhook notifications (`spec.notify`) against a real receiver on loopback that
//! verifies every signature and timestamp, and real OpenBao for a key held in Vault:
//! every event arrives signed; 503s are retried under the same delivery id and 400s are
//! not; `Retry-After` is honoured; a wrong key is refused; the events filter and the
//! global targets pick the right receivers; no payload or log holds a secret, a
//! fingerprint, the key or the URL's path; and the policy field is validated with
//! positions. Needs `dev/stack up` (OpenBao).

#[path = "common/logs.rs"]
mod logs;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use logs::capture_logs;
use rotor::engine::journal::Rotation;
use rotor::notify::{Notification, Notifier, NotifyEvent};
use rotor::policy::{self, NotifyTarget, PolicyError, Reference};
use rotor::secret::{Fingerprinter, SecretMap, SecretString};
use rotor::vault::{Vault, VaultConfig};
use rotor_testkit::{WebhookReceiver, assert_no_secret, canary, stack, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// A policy with `notify_yaml` under `spec.notify`, loaded through the real loader.
fn policy_yaml(name: &str, notify_yaml: &str) -> String {
    format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: 127.0.0.1, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  notify:\n{notify_yaml}"
    )
}

fn targets(notify_yaml: &str) -> Vec<NotifyTarget> {
    let name = unique("notify");
    let yaml = policy_yaml(&name, notify_yaml);
    let set = policy::load_str(Path::new("notify.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("policy must load:\n{e}\n{yaml}"));
    set.get(&name).expect("policy").spec.notify.clone()
}

fn errors(notify_yaml: &str) -> Vec<PolicyError> {
    let yaml = policy_yaml("p", notify_yaml);
    match policy::load_str(Path::new("notify.yaml"), &yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0,
    }
}

/// A file holding `key`, for `secretFrom: {file: …}`.
fn key_file(key: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(f, "{key}").expect("write key");
    f
}

/// One target sending to `url`, signed with the key in `file`, for `events` (all if empty).
fn file_target(url: &str, file: &tempfile::NamedTempFile, events: &[&str]) -> NotifyTarget {
    let events = if events.is_empty() {
        String::new()
    } else {
        format!(", events: [{}]", events.join(", "))
    };
    let mut t = targets(&format!(
        "    - {{url: \"{url}\", secretFrom: {{file: \"{}\"}}{events}}}\n",
        file.path().display()
    ));
    assert_eq!(t.len(), 1);
    t.remove(0)
}

fn vault() -> Vault {
    rotor::install_crypto_provider();
    let s = stack();
    let config = VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..VaultConfig::from_env()
    };
    Vault::connect(&config).expect("Vault client")
}

fn fast(notifier: Notifier) -> Notifier {
    notifier.with_retry(Duration::from_millis(20), 5)
}

/// A rotation record as the engine journals it, with fingerprints of `old` and `new`.
fn rotation(policy: &str, old: &str, new: &str, fingerprints: &Fingerprinter) -> Rotation {
    serde_json::from_value(json!({
        "rotation_id": "01JROTATIONNOTIFYTEST00000",
        "policy": policy,
        "kind": "postgres",
        "strategy": "single",
        "trigger": "compromise",
        "actor": "alice@example.com",
        "reason": "password pasted in the #payments chat",
        "ticket": "INC-4242",
        "status": "failed",
        "canonical": format!("secret/apps/{policy}"),
        "canonical_version": 3,
        "staging": format!("secret/rotor/staging/{policy}/01JROTATIONNOTIFYTEST00000"),
        "old_fingerprint": fingerprints.fingerprint(old),
        "new_fingerprint": fingerprints.fingerprint(new),
        "steps": [],
        "error": "the old credential is still accepted by the target",
        "started_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:05Z",
    }))
    .expect("rotation record")
}

#[tokio::test]
async fn every_event_arrives_signed_with_a_key_from_vault_read_once() {
    capture_logs();
    let vault = vault();
    let path = format!("rotor-tests/{}", unique("webhook-key"));
    let key = canary();
    let mut data = SecretMap::new();
    data.insert("hmac", SecretString::from(key.clone()));
    vault
        .kv_write("secret", &path, &data, None)
        .await
        .expect("write key");
    let receiver = WebhookReceiver::start(&key);
    let policy_targets = targets(&format!(
        "    - url: {}\n      secretFrom: {{vault: {{path: {path}, key: hmac}}}}\n",
        receiver.url
    ));
    assert_eq!(
        policy_targets[0].secret_from,
        Reference::Vault {
            mount: "secret".into(),
            path: path.clone(),
            key: Some("hmac".into())
        }
    );
    assert_eq!(policy_targets[0].events, NotifyEvent::ALL);
    let notifier = fast(Notifier::new(Some(vault.clone()), vec![]));

    for event in NotifyEvent::ALL {
        let mut n = Notification::new(event, "payments-db");
        n.actor = Some("bob".into());
        notifier.send(&policy_targets, n);
    }
    let got = receiver.wait_for(6, WAIT).await;
    notifier.flush().await;
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    let mut events: Vec<&str> = got.iter().map(|d| d.event.as_str()).collect();
    events.sort_unstable();
    let mut all: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
    all.sort_unstable();
    assert_eq!(events, all);
    for d in &got {
        assert_eq!(d.body["event"], d.event.as_str());
        assert_eq!(d.body["delivery"], d.id.as_str());
        assert_eq!(d.body["policy"], "payments-db");
        assert_eq!(d.body["actor"], "bob");
        assert!(d.body["rotation_id"].is_null());
        assert_eq!(d.id.len(), 26, "a ULID: {}", d.id);
    }
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each delivery has its own id");

    // The key was read once: replacing it in Vault does not change what is signed
    // until a new notifier is built, and the new one reads the new key.
    let mut data = SecretMap::new();
    data.insert("hmac", SecretString::from(canary()));
    vault
        .kv_write("secret", &path, &data, None)
        .await
        .expect("replace key");
    notifier.send(
        &policy_targets,
        Notification::new(NotifyEvent::Success, "payments-db"),
    );
    receiver.wait_for(7, WAIT).await;
    let fresh = fast(Notifier::new(Some(vault), vec![]));
    fresh.send(
        &policy_targets,
        Notification::new(NotifyEvent::Success, "payments-db"),
    );
    fresh.flush().await;
    assert_eq!(receiver.deliveries().len(), 7);
    let rejected = receiver.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].reason, "signature does not match");
    receiver
        .user_agents()
        .assert_all(rotor::outside::USER_AGENT);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_under_one_delivery_id() {
    capture_logs();
    let key = canary();
    let file = key_file(&key);
    let receiver = WebhookReceiver::start(&key);
    receiver.fail_next(2, 503);
    let target = file_target(&receiver.url, &file, &[]);
    let notifier = fast(Notifier::new(None, vec![]));

    notifier.send(
        &[target],
        Notification::new(NotifyEvent::Failure, "orders-db"),
    );
    let got = receiver.wait_for(1, WAIT).await;
    notifier.flush().await;

    let attempts = receiver.attempts();
    let statuses: Vec<u16> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert!(
        attempts
            .iter()
            .all(|a| a.id.as_deref() == Some(got[0].id.as_str())),
        "one delivery id across retries: {attempts:?}"
    );
    assert_eq!(got.len(), 1);
    let first_wait = attempts[1].at - attempts[0].at;
    let second_wait = attempts[2].at - attempts[1].at;
    println!("waits between attempts: {first_wait:?}, {second_wait:?}");
    assert!(first_wait >= Duration::from_millis(20), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(40), "{second_wait:?}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    capture_logs();
    let key = canary();
    let file = key_file(&key);
    let receiver = WebhookReceiver::start(&key);
    receiver.fail_next(1, 400);
    let target = file_target(&receiver.url, &file, &[]);
    let notifier = fast(Notifier::new(None, vec![]));

    notifier.send(
        &[target],
        Notification::new(NotifyEvent::Success, "orders-db"),
    );
    notifier.flush().await;

    let statuses: Vec<u16> = receiver.attempts().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [400]);
    assert!(receiver.deliveries().is_empty());
}

#[tokio::test]
async fn retry_after_is_waited_for() {
    capture_logs();
    let key = canary();
    let file = key_file(&key);
    let receiver = WebhookReceiver::start(&key);
    receiver.fail_next(1, 429);
    receiver.set_retry_after(Some(1));
    let target = file_target(&receiver.url, &file, &[]);
    // Backoff alone would retry after ~10 ms.
    let notifier = Notifier::new(None, vec![]).with_retry(Duration::from_millis(10), 3);

    notifier.send(
        &[target],
        Notification::new(NotifyEvent::Quarantine, "orders-db"),
    );
    receiver.wait_for(1, WAIT).await;
    notifier.flush().await;

    let attempts = receiver.attempts();
    let statuses: Vec<u16> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [429, 200]);
    let wait = attempts[1].at - attempts[0].at;
    println!("wait after 429 with Retry-After: 1 -> {wait:?}");
    assert!(wait >= Duration::from_secs(1), "{wait:?}");
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_receiver_and_not_retried() {
    capture_logs();
    let receiver = WebhookReceiver::start(&canary());
    let wrong = key_file(&canary());
    let target = file_target(&receiver.url, &wrong, &[]);
    let notifier = fast(Notifier::new(None, vec![]));

    notifier.send(
        &[target],
        Notification::new(NotifyEvent::Compromise, "orders-db"),
    );
    notifier.flush().await;

    assert!(receiver.deliveries().is_empty());
    let rejected = receiver.rejected();
    assert_eq!(rejected.len(), 1, "401 is final: {rejected:?}");
    assert_eq!(rejected[0].status, 401);
    assert_eq!(rejected[0].reason, "signature does not match");
}

#[tokio::test]
async fn a_replayed_request_is_refused_by_the_receiver() {
    capture_logs();
    let key = canary();
    let receiver = WebhookReceiver::start(&key);
    let body = r#"{"delivery":"01JREPLAY0000000000000000","event":"success","policy":"p"}"#;
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 600;
    // A correctly signed request captured ten minutes ago.
    let sig = rotor::notify::signature(key.as_bytes(), old, body.as_bytes());
    let response = reqwest::Client::new()
        .post(&receiver.url)
        .header("Content-Type", "application/json")
        .header("X-Rotor-Event", "success")
        .header("X-Rotor-Delivery", "01JREPLAY0000000000000000")
        .header("X-Rotor-Timestamp", old.to_string())
        .header("X-Rotor-Signature", sig)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(
        receiver.rejected()[0].reason,
        "timestamp outside the 5-minute window"
    );
}

#[tokio::test]
async fn events_filter_and_global_targets_pick_the_receivers() {
    capture_logs();
    let key = canary();
    let file = key_file(&key);
    let failures_only = WebhookReceiver::start(&key);
    let everything = WebhookReceiver::start(&key);
    let global_quarantine = WebhookReceiver::start(&key);
    let a = file_target(&failures_only.url, &file, &["failure", "compromise"]);
    let b = file_target(&everything.url, &file, &[]);
    let g = file_target(&global_quarantine.url, &file, &["quarantine"]);
    assert_eq!(a.events, [NotifyEvent::Failure, NotifyEvent::Compromise]);
    // `b` is global too: it must still get each event once.
    let notifier = fast(Notifier::new(None, vec![g, b.clone()]));

    for event in [
        NotifyEvent::Success,
        NotifyEvent::Failure,
        NotifyEvent::Quarantine,
    ] {
        notifier.send(&[a.clone(), b.clone()], Notification::new(event, "p"));
    }
    notifier.flush().await;

    let events = |r: &WebhookReceiver| {
        let mut e: Vec<String> = r.deliveries().into_iter().map(|d| d.event).collect();
        e.sort_unstable();
        e
    };
    assert_eq!(events(&failures_only), ["failure"]);
    assert_eq!(events(&everything), ["failure", "quarantine", "success"]);
    assert_eq!(events(&global_quarantine), ["quarantine"]);
    // A global target alone is enough.
    notifier.send(&[], Notification::new(NotifyEvent::Quarantine, "q"));
    notifier.flush().await;
    assert_eq!(events(&global_quarantine), ["quarantine", "quarantine"]);
}

#[tokio::test]
async fn payloads_and_logs_hold_no_secret() {
    let logs = capture_logs();
    let (old, new, key, path_token) = (canary(), canary(), canary(), canary());
    let fingerprints = Fingerprinter::new(vec![9; 32]);
    let record = rotation("payments-db", &old, &new, &fingerprints);
    let (old_fp, new_fp) = (
        record.old_fingerprint.clone().expect("fp"),
        record.new_fingerprint.clone().expect("fp"),
    );
    let file = key_file(&key);
    let receiver = WebhookReceiver::start(&key);
    // Webhook URLs often carry a token in their path (Slack, Teams): logs must not.
    let url = format!("{}/hooks/{path_token}", receiver.base_url);
    let target = file_target(&url, &file, &[]);
    receiver.fail_next(1, 503);
    let notifier = fast(Notifier::new(None, vec![]));

    for event in NotifyEvent::ALL {
        notifier.send(
            std::slice::from_ref(&target),
            Notification::from_rotation(event, &record),
        );
    }
    let got = receiver.wait_for(6, WAIT).await;
    notifier.flush().await;

    for d in &got {
        assert_no_secret(&d.raw, &[&old, &new, &old_fp, &new_fp, &key]);
        assert_eq!(d.body["rotation_id"], "01JROTATIONNOTIFYTEST00000");
        assert_eq!(d.body["status"], "failed");
        assert_eq!(d.body["trigger"], "compromise");
        assert_eq!(d.body["actor"], "alice@example.com");
        assert_eq!(d.body["reason"], "password pasted in the #payments chat");
        assert_eq!(d.body["ticket"], "INC-4242");
        assert_eq!(
            d.body["detail"],
            "the old credential is still accepted by the target"
        );
        assert!(d.body.get("old_fingerprint").is_none());
        assert!(d.body.get("staging").is_none());
    }
    let text = logs.text();
    let signatures: Vec<String> = receiver
        .attempts()
        .iter()
        .filter_map(|a| a.signature.clone())
        .collect();
    assert_eq!(signatures.len(), 7, "six deliveries and one retry");
    let sig_refs: Vec<&str> = signatures.iter().map(String::as_str).collect();
    assert_no_secret(&text, &sig_refs);
    assert_no_secret(&text, &[&key, &path_token, &old, &new, &old_fp, &new_fp]);
    let host = receiver.base_url.trim_start_matches("http://");
    assert!(text.contains("Notification delivered."), "{text}");
    assert!(
        text.contains("Notification not delivered yet; retrying."),
        "{text}"
    );
    assert!(text.contains(host), "logs name the host: {text}");
}

#[test]
fn notify_fields_are_validated_with_positions() {
    capture_logs();
    let errs = errors(concat!(
        "    - url: ftp://hooks.example.com/x\n",
        "      secretFrom: {env: HOOK_KEY}\n",
        "    - url: https://hooks.example.com/a\n",
        "      secretFrom: {env: HOOK_KEY}\n",
        "      events: [success, rotated]\n",
        "    - url: https://hooks.example.com/b\n",
        "      events: [failure]\n",
        "    - url: https://hooks.example.com/c\n",
        "      secretFrom: {vault: {path: rotor/webhook}}\n",
        "    - url: https://hooks.example.com/d\n",
        "      secretFrom: {env: HOOK_KEY}\n",
        "      events: []\n",
        "    - url: not a url\n",
        "      secretFrom: {env: HOOK_KEY}\n",
    ));
    let find = |path: &str| {
        errs.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {errs:#?}"))
    };
    // Line 12 is `  notify:`; its first entry starts on line 13.
    let url = find("spec.notify[0].url");
    assert_eq!((url.line, url.column), (13, 12), "{url}");
    assert!(url.message.contains("scheme `ftp`"), "{url}");
    let event = find("spec.notify[1].events[1]");
    assert_eq!((event.line, event.column), (17, 25), "{event}");
    assert!(
        event.message.contains("found `rotated`") && event.message.contains("`approval_requested`"),
        "{event}"
    );
    let missing = find("spec.notify[2].secretFrom");
    assert!(missing.message.contains("secretFrom"), "{missing}");
    let keyless = find("spec.notify[3].secretFrom.vault");
    assert!(keyless.message.contains("`key`"), "{keyless}");
    let empty = find("spec.notify[4].events");
    assert!(empty.message.contains("found no events"), "{empty}");
    let bad = find("spec.notify[5].url");
    assert!(bad.message.contains("invalid URL"), "{bad}");
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn notify_defaults_and_duplicate_events() {
    capture_logs();
    let t = targets(concat!(
        "    - url: https://hooks.example.com/a\n",
        "      secretFrom: {vault: {path: rotor/webhook, key: hmac, mount: kv}}\n",
        "      events: [failure, failure, compromise]\n",
        "    - url: http://127.0.0.1:9000/hook\n",
        "      secretFrom: {file: /etc/rotor/webhook-key}\n",
    ));
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].events, [NotifyEvent::Failure, NotifyEvent::Compromise]);
    assert!(t[0].wants(NotifyEvent::Failure) && !t[0].wants(NotifyEvent::Success));
    assert_eq!(
        t[0].secret_from,
        Reference::Vault {
            mount: "kv".into(),
            path: "rotor/webhook".into(),
            key: Some("hmac".into())
        }
    );
    assert_eq!(t[1].events, NotifyEvent::ALL);
    assert_eq!(t[1].url.as_str(), "http://127.0.0.1:9000/hook");
    // Without `notify` a policy has no targets.
    let yaml = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: plain\nspec:\n  credential:\n    type: postgres\n    connection: {host: 127.0.0.1, adminFrom: {env: X}}\n    username: app\n  vault:\n    path: apps/plain\n";
    let set = policy::load_str(Path::new("plain.yaml"), yaml).expect("loads");
    assert!(set.get("plain").expect("policy").spec.notify.is_empty());
}
