//! The audit log (`src/audit.rs`): records of every event kind form a hash chain that
//! `verify_file` accepts, and any single-byte change, deleted line, swapped pair of
//! lines or cut in the middle of a line is detected and named by line number; the
//! writer refuses to continue a damaged or foreign-written file, continues the chain
//! across reopen and concurrent appends, creates the file 0600, and records only
//! fingerprints of secrets.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rotor::audit::{
    AuditError, AuditEvent, AuditLog, VerifyError, VerifyReport, verify_file, verify_reader,
};
use rotor::engine::Rotation;
use rotor::secret::Fingerprinter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A journal record as the engine writes it, with the given fingerprints.
fn rotation(status: &str, old_fp: &str, new_fp: &str) -> Rotation {
    serde_json::from_value(json!({
        "rotation_id": "01JH8Z3V9K2M4N6P8Q0R2S4T6V",
        "policy": "payments-db",
        "kind": "postgres",
        "strategy": "single",
        "trigger": "compromise",
        "actor": "alice@example.com",
        "reason": "key seen in a \"public\" paste\nline two \\ backslash",
        "ticket": "SEC-1234",
        "status": status,
        "canonical": "secret/apps/payments/db",
        "canonical_version": 7,
        "promoted_version": 8,
        "staging": "rotor/rotor/staging/payments-db/01JH8Z3V9K2M4N6P8Q0R2S4T6V",
        "old_fingerprint": old_fp,
        "new_fingerprint": new_fp,
        "steps": [
            {"step": "staged", "outcome": "ok", "started_at": "2025-03-30T00:59:59.120Z",
             "finished_at": "2025-03-30T01:00:00.001Z", "duration_ms": 12.5, "attempts": 1},
            {"step": "applied", "outcome": "ok", "started_at": "2025-03-30T01:00:00.010Z",
             "finished_at": "2025-03-30T01:00:01.760Z", "duration_ms": 1750.25, "attempts": 2,
             "detail": "ALTER ROLE \"app\" — résumé ✓"},
            {"step": "verified", "outcome": "ok", "started_at": "2025-03-30T01:00:02.000Z",
             "finished_at": "2025-03-30T01:00:02.300Z", "duration_ms": 300.0}
        ],
        "verification": [
            {"check": "old_credential_rejected", "passed": true,
             "evidence": "SQLSTATE 28P01: password authentication failed for user \"app\"",
             "at": "2025-03-30T01:00:02.290Z"}
        ],
        "consumers": [
            {"consumer": "kubernetes secret payments/db", "state": "verified", "attempts": 1,
             "changed": true, "restarted": ["deployment/payments-api"]}
        ],
        "revoke_after": "2025-03-30T01:00:01.800Z",
        "sessions_terminated": 3,
        "started_at": "2025-03-30T00:59:59.000Z",
        "updated_at": "2025-03-30T01:00:02.300Z"
    }))
    .expect("the literal is a journal record")
}

/// A few records of every event kind.
fn events() -> Vec<AuditEvent> {
    let fp = Fingerprinter::new(b"audit-test-fingerprint-key-32-bytes!".to_vec());
    let (old, new) = (fp.fingerprint("old value"), fp.fingerprint("new value"));
    vec![
        AuditEvent::Agent {
            action: "started".into(),
            detail: Some("rotor 0.1.0, 12 policies".into()),
        },
        AuditEvent::Request {
            identity: "anonymous".into(),
            method: "POST".into(),
            path: "/v1/policies/payments-db/rotate".into(),
            policy: Some("payments-db".into()),
            status: 401,
            outcome: "denied".into(),
            detail: Some("missing bearer token".into()),
            remote: Some("127.0.0.1:53412".into()),
            count: 1,
        },
        AuditEvent::Request {
            identity: "team-payments".into(),
            method: "POST".into(),
            path: "/v1/policies/payments-db/rotate".into(),
            policy: Some("payments-db".into()),
            status: 202,
            outcome: "allowed".into(),
            detail: None,
            remote: None,
            count: 1,
        },
        AuditEvent::RotationRequested {
            policy: "payments-db".into(),
            trigger: "compromise".into(),
            actor: "team-payments".into(),
            reason: Some("clé publiée — \"leak\" in #ops".into()),
            ticket: Some("SEC-1234".into()),
            approver: Some(vec!["bob@example.com".into()]),
            break_glass: false,
            authenticated_by: rotor::audit::AuthMethod::VaultToken,
            vault_identity: Some(rotor::audit::VaultIdentity {
                display_name: "token-ops-alice".into(),
                entity_id: Some("6f1c9e2a-0000-4000-8000-000000000001".into()),
                policies: vec!["default".into(), "ops".into()],
            }),
        },
        AuditEvent::RotationEnded {
            rotation: rotation("completed", &old, &new),
        },
        AuditEvent::RotationRequested {
            policy: "cache".into(),
            trigger: "schedule".into(),
            actor: "scheduler".into(),
            reason: None,
            ticket: None,
            approver: None,
            break_glass: false,
            authenticated_by: rotor::audit::AuthMethod::Schedule,
            vault_identity: None,
        },
        AuditEvent::RotationEnded {
            rotation: rotation("failed", &old, &new),
        },
        AuditEvent::Agent {
            action: "reload_rejected".into(),
            detail: Some("policies/db.yaml:3:7: spec.schedule: expected a cron expression".into()),
        },
        AuditEvent::Agent {
            action: "stopped".into(),
            detail: None,
        },
    ]
}

/// A temporary directory and a log in it holding [`events`].
struct Sample {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    /// The head as an anchor kept elsewhere would hold it.
    records: u64,
    last_hash: String,
}

fn sample() -> Sample {
    sample_of(&events())
}

fn sample_of(events: &[AuditEvent]) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).expect("open a new log");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(log.append(event).expect("append"), i as u64 + 1);
    }
    let (records, last_hash) = log.head();
    drop(log);
    let bytes = fs::read(&path).expect("read log");
    Sample {
        _dir: dir,
        path,
        bytes,
        records,
        last_hash,
    }
}

/// The lines of `bytes`, each without its newline.
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let body = bytes.strip_suffix(b"\n").expect("log ends with a newline");
    body.split(|b| *b == b'\n').collect()
}

/// 1-based number of the line holding byte `pos` (a newline belongs to its line).
fn line_of(bytes: &[u8], pos: usize) -> u64 {
    bytes[..pos].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn verify_bytes(path: &Path, bytes: &[u8]) -> Result<VerifyReport, VerifyError> {
    fs::write(path, bytes).expect("write log");
    verify_file(path)
}

/// The same checks as [`verify_file`], on bytes in memory: the exhaustive loops below
/// run tens of thousands of them.
fn verify_mem(bytes: &[u8]) -> Result<VerifyReport, VerifyError> {
    verify_reader(bytes)
}

fn expect_bad(result: Result<VerifyReport, VerifyError>, what: &str) -> VerifyError {
    match result {
        Ok(report) => panic!("{what}: not detected, verify_file accepted {report:?}"),
        Err(e) => {
            assert!(
                e.message.starts_with(&format!("line {}", e.line)),
                "{what}: message does not start with the line: {}",
                e.message
            );
            e
        }
    }
}

/// Rebuilds every object with keys inserted in sorted order, so serde_json writes
/// them sorted whether or not its `preserve_order` feature is on.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        leaf => leaf,
    }
}

#[test]
fn every_event_kind_is_chained_and_verifies() {
    let s = sample();
    let report = verify_file(&s.path).expect("a log rotor wrote verifies");
    assert_eq!(report.records, events().len() as u64);
    assert_eq!(
        (report.records, report.last_hash.clone()),
        (s.records, s.last_hash.clone())
    );

    let mut prev = ZERO_HASH.to_string();
    let mut kinds = Vec::new();
    for (i, line) in lines(&s.bytes).into_iter().enumerate() {
        let mut record: Value = serde_json::from_slice(line).expect("each line is JSON");
        let fields = record.as_object_mut().expect("each line is an object");
        assert_eq!(fields["seq"], json!(i as u64 + 1));
        assert_eq!(
            fields["prev"],
            json!(prev),
            "line {} links to the line before",
            i + 1
        );
        let time = fields["time"].as_str().expect("time is a string");
        assert!(
            time.len() == 24
                && time.ends_with('Z')
                && chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "time is RFC 3339 UTC with milliseconds: {time}"
        );
        kinds.push(fields["event"].as_str().expect("event kind").to_string());
        // The documented recipe: hash = sha256 of the canonical serialisation (sorted
        // keys, no whitespace) of every other field.
        let hash = fields.remove("hash").expect("hash field");
        let canonical = serde_json::to_string(&sorted(record)).expect("serialise");
        assert_eq!(
            hash,
            json!(sha256_hex(canonical.as_bytes())),
            "line {}",
            i + 1
        );
        // ... which is the line with its hash member cut off.
        let cut = &line[..line.len() - 75];
        assert_eq!([cut, b"}"].concat(), canonical.as_bytes(), "line {}", i + 1);
        prev = sha256_hex(line);
    }
    assert_eq!(prev, report.last_hash);
    kinds.dedup();
    for kind in ["agent", "request", "rotation_requested", "rotation_ended"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} written: {kinds:?}");
    }
    // Absent optional values are explicit, so every record of a kind has the same fields.
    let first: Value = serde_json::from_slice(lines(&s.bytes)[5]).unwrap();
    assert_eq!(first["approver"], Value::Null);

    // An empty file is a valid log with nothing in it.
    let report = verify_bytes(&s.path, b"").expect("empty log");
    assert_eq!((report.records, report.last_hash.as_str()), (0, ZERO_HASH));
}

#[test]
fn any_single_byte_change_is_detected_at_its_line() {
    let s = sample();
    let mut bytes = s.bytes.clone();
    let mut checked = 0;
    for pos in 0..bytes.len() {
        let original = bytes[pos];
        // Every byte to a neighbouring value, to a line break or blank (the changes a
        // lax parser would ignore), and letters to the other case (hex digits, `e`/`E`).
        let newline_or_space = if original == b'\n' { b' ' } else { b'\n' };
        let mut replacements = vec![original ^ 0x01, newline_or_space];
        if original.is_ascii_alphabetic() {
            replacements.push(original ^ 0x20);
        }
        for replacement in replacements {
            bytes[pos] = replacement;
            let what = format!("byte {pos} changed from {original:#04x} to {replacement:#04x}");
            let e = expect_bad(verify_mem(&bytes), &what);
            assert_eq!(
                e.line,
                line_of(&s.bytes, pos),
                "{what}: wrong line named: {}",
                e.message
            );
            checked += 1;
        }
        bytes[pos] = original;
    }
    assert!(checked > s.bytes.len() * 2);
    assert_eq!(bytes, s.bytes);
    eprintln!(
        "{checked} single-byte changes over {} bytes all detected",
        s.bytes.len()
    );

    // An edit that keeps the line valid JSON names the record and says what happened.
    let text = String::from_utf8(s.bytes.clone()).unwrap();
    let edited = text.replacen("\"status\":401", "\"status\":200", 1);
    let e = expect_bad(verify_bytes(&s.path, edited.as_bytes()), "status edited");
    assert_eq!((e.line, e.seq), (2, Some(2)));
    assert_eq!(
        e.message,
        "line 2 (seq 2): hash mismatch — the record was changed"
    );
}

#[test]
fn deleting_any_line_is_detected() {
    let s = sample();
    let all = lines(&s.bytes);
    let n = all.len();
    for i in 0..n {
        let kept: Vec<&[u8]> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, l)| *l)
            .collect();
        let bytes = [kept.join(&b'\n'), b"\n".to_vec()].concat();
        let what = format!("line {} deleted", i + 1);
        if i + 1 < n {
            let e = expect_bad(verify_bytes(&s.path, &bytes), &what);
            assert_eq!(
                (e.line, e.seq),
                (i as u64 + 1, Some(i as u64 + 2)),
                "{what}: {}",
                e.message
            );
            assert!(
                e.message
                    .contains(&format!("record {} missing or reordered", i + 1)),
                "{what}: {}",
                e.message
            );
        } else {
            // Removing the last record leaves a valid shorter chain: only the anchored
            // head shows it (documented in the module).
            let report = verify_bytes(&s.path, &bytes).expect("a clean cut verifies");
            assert_eq!(report.records, s.records - 1);
            assert_ne!(
                report.last_hash, s.last_hash,
                "{what}: the anchor comparison detects it"
            );
        }
    }
    // A blank line left in place of a record.
    let blanked = [
        all[..3].join(&b'\n'),
        b"\n\n".to_vec(),
        all[4..].join(&b'\n'),
        b"\n".to_vec(),
    ]
    .concat();
    let e = expect_bad(verify_bytes(&s.path, &blanked), "line 4 blanked");
    assert_eq!(e.message, "line 4: empty line");
}

#[test]
fn swapping_any_two_adjacent_lines_is_detected() {
    let s = sample();
    let all = lines(&s.bytes);
    for i in 0..all.len() - 1 {
        let mut swapped = all.clone();
        swapped.swap(i, i + 1);
        let bytes = [swapped.join(&b'\n'), b"\n".to_vec()].concat();
        let what = format!("lines {} and {} swapped", i + 1, i + 2);
        let e = expect_bad(verify_bytes(&s.path, &bytes), &what);
        assert_eq!(
            (e.line, e.seq),
            (i as u64 + 1, Some(i as u64 + 2)),
            "{what}: {}",
            e.message
        );
        assert!(
            e.message.contains("missing or reordered"),
            "{what}: {}",
            e.message
        );
    }
}

#[test]
fn cutting_the_file_is_detected_unless_at_a_line_end_then_the_anchor_shows_it() {
    let s = sample();
    let ends: Vec<usize> = (0..s.bytes.len())
        .filter(|p| s.bytes[*p] == b'\n')
        .map(|p| p + 1)
        .collect();
    for cut in 1..s.bytes.len() {
        let result = verify_mem(&s.bytes[..cut]);
        let what = format!("file cut to {cut} bytes");
        match ends.iter().position(|e| *e == cut) {
            Some(k) => {
                let report = result.expect("a cut at a line end is a valid shorter chain");
                assert_eq!(report.records, k as u64 + 1, "{what}");
                assert_eq!(report.last_hash, sha256_hex(lines(&s.bytes)[k]), "{what}");
                assert_ne!(
                    report.last_hash, s.last_hash,
                    "{what}: the anchor comparison detects it"
                );
            }
            None => {
                let e = expect_bad(result, &what);
                assert_eq!(e.line, line_of(&s.bytes, cut), "{what}: {}", e.message);
                assert!(
                    e.message.contains("incomplete record"),
                    "{what}: {}",
                    e.message
                );
            }
        }
    }
}

fn corrupt_problem(result: Result<AuditLog, AuditError>) -> (VerifyError, String) {
    match result {
        Ok(_) => panic!("open continued a damaged log"),
        Err(e) => {
            assert_eq!(e.kind(), "audit_corrupt", "{e}");
            let text = e.to_string();
            assert!(
                text.contains("move the file aside"),
                "says how to repair: {text}"
            );
            match e {
                AuditError::Corrupt { problem, .. } => (problem, text),
                other => panic!("unexpected {other}"),
            }
        }
    }
}

#[test]
fn open_refuses_to_continue_a_damaged_log_and_leaves_it_alone() {
    let s = sample();
    let all = lines(&s.bytes);
    let n = all.len() as u64;
    let last_line_start = s.bytes.len() - all[all.len() - 1].len() - 1;

    let mut damaged: Vec<(&str, Vec<u8>)> = Vec::new();
    // A byte of the last record changed.
    let mut flipped = s.bytes.clone();
    flipped[last_line_start + 40] ^= 0x01;
    damaged.push(("last record edited", flipped));
    // A crash in the middle of writing a record.
    let partial = [s.bytes.clone(), all[2][..all[2].len() / 2].to_vec()].concat();
    damaged.push(("partial last line", partial));
    // The second-to-last record removed.
    let mut kept = all.clone();
    kept.remove(all.len() - 2);
    damaged.push((
        "second-to-last record removed",
        [kept.join(&b'\n'), b"\n".to_vec()].concat(),
    ));
    // The last two records swapped.
    let mut swapped = all.clone();
    swapped.swap(all.len() - 2, all.len() - 1);
    damaged.push((
        "last two records swapped",
        [swapped.join(&b'\n'), b"\n".to_vec()].concat(),
    ));
    // The second-to-last record edited.
    let mut edited = s.bytes.clone();
    edited[last_line_start - 30] ^= 0x01;
    damaged.push(("second-to-last record edited", edited));

    for (what, bytes) in damaged {
        fs::write(&s.path, &bytes).unwrap();
        let (problem, text) = corrupt_problem(AuditLog::open(&s.path));
        // open looks at the last two records only; verify names the first bad one,
        // which is never after the line open names.
        let first_bad = verify_file(&s.path).expect_err(what);
        assert!(
            problem.line >= n - 1,
            "{what}: open names one of the last lines: {text}"
        );
        assert!(
            first_bad.line <= problem.line,
            "{what}: {} vs {text}",
            first_bad.message
        );
        assert!(
            text.contains(&format!("line {}", problem.line)),
            "{what}: {text}"
        );
        assert_eq!(
            fs::read(&s.path).unwrap(),
            bytes,
            "{what}: the file is left as it was"
        );
        eprintln!("{what}: {text}");
    }
    // The partial line is named as the line after the last whole record.
    fs::write(
        &s.path,
        [s.bytes.clone(), b"{\"event\":\"ag".to_vec()].concat(),
    )
    .unwrap();
    let (problem, _) = corrupt_problem(AuditLog::open(&s.path));
    assert_eq!(problem.line, n + 1);
    assert!(
        problem.message.contains("incomplete record"),
        "{}",
        problem.message
    );
}

#[test]
fn reopening_continues_the_chain() {
    let s = sample();
    let log = AuditLog::open(&s.path).expect("reopen a valid log");
    assert_eq!(log.head(), (s.records, s.last_hash.clone()));
    let seq = log
        .append(&AuditEvent::Agent {
            action: "started".into(),
            detail: None,
        })
        .expect("append after reopen");
    assert_eq!(seq, s.records + 1);
    drop(log);
    let bytes = fs::read(&s.path).unwrap();
    assert!(bytes.starts_with(&s.bytes), "earlier records untouched");
    let all = lines(&bytes);
    let added: Value = serde_json::from_slice(all[all.len() - 1]).unwrap();
    assert_eq!(added["seq"], json!(s.records + 1));
    assert_eq!(added["prev"], json!(s.last_hash));
    assert_eq!(
        verify_file(&s.path).expect("still verifies").records,
        s.records + 1
    );

    // An existing empty file (e.g. created by the operator) starts at seq 1.
    let empty = s.path.with_file_name("empty.jsonl");
    fs::write(&empty, b"").unwrap();
    let log = AuditLog::open(&empty).expect("open an empty file");
    assert_eq!(log.head(), (0, ZERO_HASH.to_string()));
    assert_eq!(log.append(&events()[0]).unwrap(), 1);
    drop(log);
    assert_eq!(verify_file(&empty).unwrap().records, 1);
}

#[test]
fn concurrent_appends_form_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let events = events();
    const THREADS: usize = 8;
    const EACH: usize = 40;
    let mut seqs: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, events) = (&log, &events);
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| log.append(&events[(t + i) % events.len()]).expect("append"))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    seqs.sort_unstable();
    let total = (THREADS * EACH) as u64;
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every append got its own seq"
    );
    let report = verify_file(&path).expect("the interleaved chain verifies");
    assert_eq!(report.records, total);
    assert_eq!(log.head(), (total, report.last_hash));
}

/// Short-lived writers (each `rotor rotate` record opens the log, appends, lets go)
/// running at once: each waits for the lock and continues the chain from what the
/// others wrote while it waited. Failed before the size was read under the lock: a
/// writer that waited still saw the file as it was before, and refused the append.
#[test]
fn writers_that_open_the_log_per_record_form_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let events = events();
    const THREADS: usize = 6;
    const EACH: usize = 15;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (path, events) = (&path, &events);
            scope.spawn(move || {
                for i in 0..EACH {
                    let log = AuditLog::open_waiting(path, std::time::Duration::from_secs(30))
                        .expect("open, waiting for the other writers");
                    log.append(&events[(t + i) % events.len()]).expect("append");
                }
            });
        }
    });
    let report = verify_file(&path).expect("the chain of all writers verifies");
    assert_eq!(report.records, (THREADS * EACH) as u64);
}

#[test]
fn the_file_is_created_readable_by_its_owner_only() {
    let s = sample();
    let mode = fs::metadata(&s.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_log() {
    let s = sample();
    let first = AuditLog::open(&s.path).unwrap();
    let second = AuditLog::open(&s.path).expect_err("two writers would fork the chain");
    assert_eq!(second.kind(), "audit_locked", "{second}");
    drop(first);
    AuditLog::open(&s.path).expect("free again once the first writer is gone");
}

#[test]
fn a_log_written_by_someone_else_is_not_continued() {
    let s = sample();
    let log = AuditLog::open(&s.path).unwrap();
    log.append(&events()[0]).unwrap();
    let before = fs::read(&s.path).unwrap();
    let mut other = fs::OpenOptions::new().append(true).open(&s.path).unwrap();
    other.write_all(b"{\"event\":\"forged\"}\n").unwrap();
    let e = log
        .append(&events()[1])
        .expect_err("appended after a foreign write");
    assert_eq!(e.kind(), "audit_changed", "{e}");
    let e = log.append(&events()[1]).expect_err("still refused");
    assert_eq!(e.kind(), "audit_broken", "{e}");
    assert_eq!(
        fs::read(&s.path).unwrap(),
        [before, b"{\"event\":\"forged\"}\n".to_vec()].concat()
    );
    let bad = verify_file(&s.path).expect_err("the forged line is caught");
    assert_eq!(bad.line, s.records + 2, "{}", bad.message);
}

#[test]
fn a_missing_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("audit.jsonl");
    let e = AuditLog::open(&path).expect_err("parent does not exist");
    assert_eq!(e.kind(), "audit_open");
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    let e = verify_file(&path).expect_err("nothing to verify");
    assert_eq!(e.line, 0);
}

#[test]
fn rotation_records_hold_fingerprints_never_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (old_secret, new_secret) = (rotor_testkit::canary(), rotor_testkit::canary());
    let fp = Fingerprinter::new(b"audit-test-fingerprint-key-32-bytes!".to_vec());
    let (old_fp, new_fp) = (fp.fingerprint(&old_secret), fp.fingerprint(&new_secret));
    let log = AuditLog::open(&path).unwrap();
    log.append(&AuditEvent::RotationEnded {
        rotation: rotation("completed", &old_fp, &new_fp),
    })
    .unwrap();
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    rotor_testkit::assert_no_secret(&text, &[&old_secret, &new_secret]);
    assert!(
        text.contains(&old_fp) && text.contains(&new_fp),
        "fingerprints recorded"
    );

    fn field_names(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    field_names(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| field_names(v, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    field_names(&serde_json::from_str(text.trim_end()).unwrap(), &mut names);
    assert!(names.iter().any(|n| n == "old_fingerprint"), "{names:?}");
    for name in &names {
        let lower = name.to_lowercase();
        for word in [
            "password", "passwd", "secret", "token", "key", "private", "value",
        ] {
            assert!(
                !lower.contains(word),
                "field `{name}` may carry a secret value"
            );
        }
    }
}

#[test]
fn a_record_spliced_in_from_another_log_is_detected() {
    let mut other = events();
    other[1] = AuditEvent::Agent {
        action: "started".into(),
        detail: Some("another agent".into()),
    };
    let (a, b) = (sample(), sample_of(&other));
    let (la, lb) = (lines(&a.bytes), lines(&b.bytes));
    // Same seq and a valid hash of its own, but it follows a different line 2.
    assert_ne!(la[1], lb[1], "the two logs differ");
    let mut spliced = la.clone();
    spliced[2] = lb[2];
    let bytes = [spliced.join(&b'\n'), b"\n".to_vec()].concat();
    let e = expect_bad(verify_bytes(&a.path, &bytes), "record spliced in");
    assert_eq!((e.line, e.seq), (3, Some(3)));
    assert_eq!(
        e.message,
        "line 3 (seq 3): prev does not match line 2 — a record before it was changed, removed or reordered"
    );
}
