//! The audit trail: an append-only, hash-chained JSON-lines file, and its verifier
//! (`rotor audit verify FILE`).
//!
//! # Format
//!
//! One record per line, each line one JSON object terminated by `\n`:
//!
//! ```text
//! {"action":"started","detail":null,"event":"agent","prev":"000…000","seq":1,"time":"2025-01-02T03:04:05.678Z","hash":"9f2c…"}
//! ```
//!
//! - `seq`: 1, 2, 3, … with no gaps.
//! - `prev`: lower-case hex SHA-256 of the previous line's exact bytes (without its
//!   newline); 64 zeros on the first line.
//! - `time`: when rotor wrote the record, RFC 3339 UTC with milliseconds.
//! - `event`: the record's kind (`request`, `rotation_requested`, `rotation_ended`,
//!   `policy_retired`, `policy_enabled`, `agent`), followed by that kind's fields (see
//!   [`AuditEvent`]). Absent optional values are written as `null`, so every record of
//!   a kind has the same fields.
//! - `hash`: lower-case hex SHA-256 of the canonical serialisation of every other
//!   field: keys sorted by their UTF-8 bytes at every level, no whitespace, strings and
//!   numbers as `serde_json` writes them. The line *is* that serialisation with
//!   `,"hash":"<hex>"` inserted before the final `}`, so the hash can be recomputed
//!   without a JSON library: cut the last 75 bytes (`,"hash":"` + 64 hex digits +
//!   `"}`), append `}`, and hash the result.
//!
//! Records never hold a secret: rotations refer to values by HMAC fingerprint only
//! (see [`crate::secret::Fingerprinter`]).
//!
//! # What an auditor can rely on
//!
//! When [`verify_file`] accepts a file:
//! - no record between the first and the last one present was changed, inserted,
//!   removed or reordered, and no line was cut short — unless someone recomputed the
//!   hashes (see below): the per-record `hash` catches any edit of a record (every
//!   single-byte change is detected, at its line), `prev` and `seq` catch any
//!   removal, insertion or reordering, and a missing final newline reveals a cut in
//!   the middle of a line;
//! - the log starts at its first record (`seq` 1, `prev` all zeros);
//! - every rotation the agent ran has its `rotation_requested` record: the agent
//!   appends it (write + fsync) before planning and does not start a rotation whose
//!   record cannot be written.
//!
//! # What an auditor cannot rely on without an anchor
//!
//! The chain is not keyed: it proves the file is consistent with itself, not who
//! wrote it. So, from the file alone, nobody can tell that:
//! - the **last records were removed** by cutting the file at a line boundary
//!   (the shorter file is a valid chain);
//! - the file was **rewritten from some record on** by someone who recomputed every
//!   later hash, or replaced by a fresh log starting at seq 1.
//!
//! Both are detected by comparing against an *anchored* hash kept where the
//! writer of the file cannot change it (a ticket, a SIEM, WORM storage):
//! [`VerifyReport::last_hash`] and [`AuditLog::head`] give the hash of the last
//! record; any later verification must reach a record with that hash at that `seq`.
//! Also: `time` is the agent's wall clock, not a trusted timestamp; a rotation
//! interrupted by a crash has its `rotation_ended` record only once it is resumed.
//!
//! # Operating the file
//!
//! rotor creates the file with mode 0600 (the parent directory must exist), takes an
//! exclusive advisory lock on it for as long as the [`AuditLog`] lives (a second
//! writer is refused), and continues the chain from the last record. It refuses to
//! continue a file whose last record does not verify or whose last line is
//! incomplete (a crash in the middle of a write): the operator keeps that file as
//! evidence by moving it aside, and rotor starts a new log (seq 1) on the next start.
//! The same applies when archiving a log; record its last hash when doing so.
//! A log being written while it is verified may show its last line as incomplete.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use strum::{Display, IntoStaticStr};

mod verify;

use self::verify::{Problem, check_tail, count_lines, read_tail};
pub use self::verify::{VerifyError, VerifyReport, verify_file, verify_reader};

/// `prev` of the first record.
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What precedes the hex digest at the end of every line.
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
/// Length of the `,"hash":"<64 hex>"}` suffix of every line.
const HASH_SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + 2;
/// Longest line rotor writes or reads back (a rotation record is a few KiB).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Fields rotor sets on every record; no event may use these names.
const RESERVED: [&str; 4] = ["seq", "prev", "time", "hash"];

/// One audited event. Serialised with its kind in the `event` field.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
// Events are built, appended and dropped at once; boxing the rotation buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum AuditEvent {
    /// An API request, allowed or not: identity (or "anonymous"), method, path, policy,
    /// outcome ("allowed"/"denied"), HTTP status, reason text (why denied), remote address.
    Request {
        /// Authenticated identity, or `anonymous`.
        identity: String,
        /// HTTP method.
        method: String,
        /// Request path (no query string with secrets: rotor's API takes none).
        path: String,
        /// The policy the request is about, if any.
        policy: Option<String>,
        /// HTTP status answered.
        status: u16,
        /// `allowed` or `denied`.
        outcome: String,
        /// Why it was denied, for people.
        detail: Option<String>,
        /// Peer address.
        remote: Option<String>,
        /// How many requests the record stands for: 1, or more when refusals (401,
        /// 429) of one kind from one peer were counted into one record.
        count: u64,
    },
    /// A rotation is about to start (written BEFORE planning; if this fails the rotation
    /// must not start).
    RotationRequested {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// `schedule`, `on_demand` or `compromise`.
        trigger: String,
        /// Who asked (user, API identity, `scheduler`).
        actor: String,
        /// The reason the requester gave (free text, audited).
        reason: Option<String>,
        /// Ticket reference.
        ticket: Option<String>,
        /// Who approved, in approval order, where the policy requires approval
        /// (`null` otherwise).
        approver: Option<Vec<String>>,
        /// A compromise by a break-glass identity that skipped the approval the policy
        /// requires.
        break_glass: bool,
        /// How the requester proved who they are (the compliance reviewers'
        /// "verification method").
        authenticated_by: AuthMethod,
        /// The requester's identity as Vault answered it (`auth/token/lookup-self`),
        /// where the requester used their own Vault token (the local CLI).
        vault_identity: Option<VaultIdentity>,
    },
    /// A rotation ended (completed, rolled back, failed, waiting, pending): the full
    /// journal record (fingerprints only, never values).
    RotationEnded {
        /// The journal record.
        rotation: crate::state::records::Rotation,
    },
    /// A policy retirement (offboarding) ended: the whole retirement record — actor,
    /// reason, ticket, every step with timestamps, the consumers' removals, the target's
    /// refusal of the retired credential, its HMAC fingerprint; never a value. Its
    /// `state` is `retired` on success.
    PolicyRetired {
        /// The retirement record.
        retirement: crate::state::records::Retirement,
        /// How the requester proved who they are.
        authenticated_by: AuthMethod,
        /// The requester's Vault identity, where they used their own Vault token.
        vault_identity: Option<VaultIdentity>,
    },
    /// A retired policy was enabled again (or the attempt failed): the record with its
    /// `enable` part (state `enabled` on success).
    PolicyEnabled {
        /// The retirement record.
        retirement: crate::state::records::Retirement,
        /// How the requester proved who they are.
        authenticated_by: AuthMethod,
        /// The requester's Vault identity, where they used their own Vault token.
        vault_identity: Option<VaultIdentity>,
    },
    /// Agent lifecycle: started / stopped / policies reloaded / reload rejected.
    Agent {
        /// `started`, `stopped`, `policies_reloaded`, `reload_rejected`, …
        action: String,
        /// Details for people.
        detail: Option<String>,
    },
}

/// How the one who asked for an action proved who they are: the "verification
/// method" of a compliance review. Written as its `snake_case` name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, IntoStaticStr, Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AuthMethod {
    /// Not said: a library caller that did not set it. rotor's own entry points
    /// always say.
    #[default]
    Unknown,
    /// The agent's scheduler (cron, `maxAge`, renewal): no person asked.
    Schedule,
    /// The operator's own Vault token (the local CLI), named by Vault's
    /// `auth/token/lookup-self` answer.
    VaultToken,
    /// A static bearer token of the agent's API.
    ApiToken,
    /// A Kubernetes ServiceAccount token checked with a TokenReview.
    KubernetesTokenReview,
}

impl AuthMethod {
    /// The name written in records (`vault_token`, `api_token`, …).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The `auth` field of the API's `request` records (`token`, `kubernetes`),
    /// unchanged since that record was introduced; other methods use their name.
    pub fn audit_label(self) -> &'static str {
        match self {
            AuthMethod::ApiToken => "token",
            AuthMethod::KubernetesTokenReview => "kubernetes",
            other => other.as_str(),
        }
    }
}

/// Who a Vault token belongs to, as Vault itself answers `auth/token/lookup-self`:
/// never the token, its accessor or anything that grants access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VaultIdentity {
    /// The token's display name (`token-ops-alice`, `approle`, `root`).
    pub display_name: String,
    /// The identity entity the token belongs to (`null` for tokens without one, such
    /// as the root token).
    pub entity_id: Option<String>,
    /// The token's policies, sorted.
    pub policies: Vec<String>,
}

impl VaultIdentity {
    /// The actor name for records: `vault:<display name>`.
    pub fn actor(&self) -> String {
        format!("vault:{}", self.display_name)
    }
}

/// A failed audit-log operation. None carries event content.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum AuditError {
    /// The file could not be created, opened, read or locked.
    #[error("cannot open audit log {path}: {source}")]
    #[strum(serialize = "audit_open")]
    Open {
        /// The log.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("audit log {path} is not a regular file")]
    #[strum(serialize = "audit_not_a_file")]
    NotAFile {
        /// The log.
        path: PathBuf,
    },
    /// Another process (or another `AuditLog` in this one) holds the file.
    #[error(
        "audit log {path} is in use by another rotor process; only one writer may append to it"
    )]
    #[strum(serialize = "audit_locked")]
    Locked {
        /// The log.
        path: PathBuf,
    },
    /// The end of the file does not verify: rotor will not continue the chain.
    #[error(
        "audit log {path}: {problem}; rotor does not append to a log whose last record does not verify. \
         Keep the file as evidence: run `rotor audit verify {path}`, move the file aside; rotor then starts a new log at this path"
    )]
    #[strum(serialize = "audit_corrupt")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// Which line and what is wrong with it.
        problem: VerifyError,
    },
    /// The event could not be serialised.
    #[error("cannot encode audit record: {0}")]
    #[strum(serialize = "audit_encode")]
    Encode(String),
    /// Writing the record failed; the file was restored to its previous end.
    #[error("cannot write audit log {path}: {source}")]
    #[strum(serialize = "audit_write")]
    Write {
        /// The log.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The record was written but could not be made durable.
    #[error("cannot sync audit log {path} to disk: {source}")]
    #[strum(serialize = "audit_sync")]
    Sync {
        /// The log.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file changed size behind rotor's back (another writer, truncation).
    #[error(
        "audit log {path} was changed by someone else (size {actual} bytes, rotor wrote {expected}); \
         rotor stops appending to it"
    )]
    #[strum(serialize = "audit_changed")]
    Changed {
        /// The log.
        path: PathBuf,
        /// Size rotor expects.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// An earlier failure left the end of the file unknown; reopen the log.
    #[error("audit log {path} cannot be continued: {reason}; restart rotor to check and reopen it")]
    #[strum(serialize = "audit_broken")]
    Broken {
        /// The log.
        path: PathBuf,
        /// What happened earlier.
        reason: String,
    },
}

impl AuditError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether retrying may succeed: a write that was rolled back (e.g. a full disk)
    /// or a lock held by a process that is exiting.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuditError::Write { .. } | AuditError::Locked { .. })
    }
}

/// The mutable end of the chain.
struct State {
    file: File,
    seq: u64,
    last_hash: String,
    len: u64,
    broken: Option<String>,
}

/// An append-only, hash-chained audit log, shared by reference (`Arc<AuditLog>`).
/// Methods are synchronous and hold the internal lock only for one write and one
/// fsync; there is no `.await` inside. From async code, call them directly for
/// occasional records or through `spawn_blocking` when fsync latency matters.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at `path` (creating it with mode 0600; the parent directory must
    /// exist), locks it against other writers and reads its last two records to
    /// continue the chain. Refuses a file whose last record does not verify, whose
    /// last line is incomplete, or whose last two records do not link (fail closed).
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        Self::open_waiting(path, Duration::ZERO)
    }

    /// [`AuditLog::open`], waiting up to `wait` for another writer to let go of the
    /// lock: what a short-lived writer (the CLI, one record at a time) uses so that two
    /// commands run at once both get their records in.
    pub fn open_waiting(path: &Path, wait: Duration) -> Result<AuditLog, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (mut file, created) = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(open_err)?,
                false,
            ),
            Err(e) => return Err(open_err(e)),
        };
        // Locked before the size is read: another writer may have appended while this
        // one waited.
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    // Another short-lived writer holds it for one record: poll.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(AuditError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
            }
        }
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(AuditError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if created {
            // Make the new directory entry durable, or a crash could lose the file.
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(open_err)?;
        } else if meta.permissions().mode() & 0o022 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "Audit log is writable by group or others; 0600 is expected."
            );
        }
        let len = meta.len();
        let (seq, last_hash) = if len == 0 {
            (0, ZERO_HASH.to_string())
        } else {
            let (tail, at_start) = read_tail(&mut file, len).map_err(open_err)?;
            check_tail(&tail, at_start, None).map_err(|_| {
                // Rare path: count lines so the message names the right ones.
                let lines = count_lines(path).unwrap_or(0);
                let problem = match check_tail(&tail, at_start, Some(lines)) {
                    Err(problem) => problem,
                    Ok(_) => Problem::new(None, "does not verify").at(lines),
                };
                AuditError::Corrupt {
                    path: path.to_path_buf(),
                    problem,
                }
            })?
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                seq,
                last_hash,
                len,
                broken: None,
            }),
        })
    }

    /// Appends one record and syncs it to disk before returning its `seq`. On error
    /// the record must be treated as not written (fail closed). A failed write is cut
    /// off again so the chain still ends at a whole record; when that is impossible,
    /// or the fsync failed, or someone else wrote to the file, the log refuses every
    /// further append until it is reopened (which checks the end of the file again).
    pub fn append(&self, event: &AuditEvent) -> Result<u64, AuditError> {
        let mut guard = self.state.lock().map_err(|_| AuditError::Broken {
            path: self.path.clone(),
            reason: "an earlier append was interrupted by a panic".into(),
        })?;
        let state = &mut *guard;
        if let Some(reason) = &state.broken {
            return Err(AuditError::Broken {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let seq = state
            .seq
            .checked_add(1)
            .ok_or_else(|| AuditError::Encode("seq would overflow".into()))?;
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = encode(seq, &state.last_hash, &time, event)?;

        let actual = state
            .file
            .metadata()
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })?
            .len();
        if actual != state.len {
            state.broken = Some(format!(
                "it was changed by someone else (size {actual} bytes, rotor wrote {})",
                state.len
            ));
            return Err(AuditError::Changed {
                path: self.path.clone(),
                expected: state.len,
                actual,
            });
        }
        if let Err(source) = state.file.write_all(&line) {
            // Cut off whatever part of the line reached the file, so the chain still
            // ends at the last whole record.
            if let Err(undo) = state
                .file
                .set_len(state.len)
                .and_then(|()| state.file.sync_data())
            {
                state.broken = Some(format!(
                    "a failed write could not be undone ({undo}); the last line may be incomplete"
                ));
            }
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        if let Err(source) = state.file.sync_data() {
            state.broken = Some(format!("syncing record {seq} failed ({source})"));
            return Err(AuditError::Sync {
                path: self.path.clone(),
                source,
            });
        }
        state.seq = seq;
        state.last_hash = sha256_hex(&line[..line.len() - 1]);
        state.len += line.len() as u64;
        Ok(seq)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `seq` and hash of the last record (0 and 64 zeros for an empty log): the
    /// value to anchor outside the file.
    pub fn head(&self) -> (u64, String) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.seq, state.last_hash.clone())
    }
}

/// Builds one line (with its newline) for `event`.
fn encode(seq: u64, prev: &str, time: &str, event: &AuditEvent) -> Result<Vec<u8>, AuditError> {
    let value = serde_json::to_value(event).map_err(|e| AuditError::Encode(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(AuditError::Encode("event is not a JSON object".into()));
    };
    if let Some(name) = RESERVED.iter().find(|name| fields.contains_key(**name)) {
        return Err(AuditError::Encode(format!(
            "event uses the reserved field `{name}`"
        )));
    }
    fields.insert("seq".into(), Value::from(seq));
    fields.insert("prev".into(), Value::from(prev));
    fields.insert("time".into(), Value::from(time));
    let mut line = Vec::with_capacity(1024);
    write_canonical(&mut line, &Value::Object(fields))
        .map_err(|e| AuditError::Encode(e.to_string()))?;
    if line.len() + HASH_SUFFIX_LEN > MAX_LINE {
        return Err(AuditError::Encode(format!(
            "record of {} bytes is over the 16 MiB limit",
            line.len()
        )));
    }
    let hash = sha256_hex(&line);
    // `line` is a non-empty object: replace its closing brace by the hash member.
    line.pop();
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok(line)
}

/// Writes `value` with object keys sorted by their bytes and no whitespace, whatever
/// serde_json's `preserve_order` feature says.
fn write_canonical(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item)?;
            }
            out.push(b']');
            Ok(())
        }
        leaf => serde_json::to_writer(&mut *out, leaf),
    }
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) -> Result<(), serde_json::Error> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        write_canonical(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::verify::check_record;
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        let mut out = Vec::new();
        write_canonical(&mut out, &value).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn hash_suffix_length_matches_what_encode_writes() {
        let line = encode(
            1,
            ZERO_HASH,
            "2025-01-01T00:00:00.000Z",
            &AuditEvent::Agent {
                action: "started".into(),
                detail: None,
            },
        )
        .unwrap();
        let line = &line[..line.len() - 1];
        let record = check_record(line).ok().unwrap();
        assert_eq!(record.seq, 1);
        assert!(line[line.len() - HASH_SUFFIX_LEN..].starts_with(HASH_PREFIX));
    }
}
