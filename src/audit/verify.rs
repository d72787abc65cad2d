//! The verifier (`rotor audit verify FILE`): checks every record of a log and names the
//! first bad one; also reads a log's last records when it is opened again.

use std::fs::File;
use std::io;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{HASH_PREFIX, HASH_SUFFIX_LEN, MAX_LINE, ZERO_HASH, sha256_hex};

/// The outcome of a successful [`verify_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records (= the last `seq`).
    pub records: u64,
    /// SHA-256 (hex) of the last line: the value to anchor elsewhere. 64 zeros for an
    /// empty log.
    pub last_hash: String,
}

/// The first bad record of a log. `line` is 1-based (0 when the file cannot be read).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct VerifyError {
    /// Line number of the bad record.
    pub line: u64,
    /// Its `seq`, when readable.
    pub seq: Option<u64>,
    /// What is wrong, starting with `line N (seq S):`.
    pub message: String,
}

/// Checks every record of the file at `path` and names the first bad one.
///
/// Checks, per line: it ends with a newline (else the write was interrupted or the
/// file cut), it is a JSON object, its `hash` matches its content, `seq` is the
/// previous `seq` + 1 starting at 1, and `prev` is the hash of the previous line's
/// exact bytes (64 zeros on line 1). An empty file is a valid log of 0 records.
pub fn verify_file(path: &Path) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path).map_err(|e| VerifyError {
        line: 0,
        seq: None,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    verify_reader(BufReader::new(file))
}

/// [`verify_file`] over any reader (e.g. standard input).
pub fn verify_reader<R: BufRead>(mut reader: R) -> Result<VerifyReport, VerifyError> {
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut prev_seq = 0u64;
    let mut prev_hash = ZERO_HASH.to_string();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| VerifyError {
                line: number + 1,
                seq: None,
                message: format!("line {}: cannot read: {e}", number + 1),
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            let problem = if line.len() > MAX_LINE {
                too_long()
            } else {
                Problem::incomplete()
            };
            return Err(problem.at(number));
        }
        line.pop();
        let record = check_record(&line).map_err(|p| p.at(number))?;
        check_link(&record, prev_seq, &prev_hash, number).map_err(|p| p.at(number))?;
        prev_seq = record.seq;
        prev_hash = sha256_hex(&line);
    }
    Ok(VerifyReport {
        records: number,
        last_hash: prev_hash,
    })
}

/// The chain fields of a record whose own hash verified.
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) prev: String,
}

/// What is wrong with one line, before its line number is known.
pub(super) struct Problem {
    seq: Option<u64>,
    what: String,
}

impl Problem {
    pub(super) fn new(seq: Option<u64>, what: impl Into<String>) -> Self {
        Problem {
            seq,
            what: what.into(),
        }
    }

    pub(super) fn incomplete() -> Self {
        Problem::new(
            None,
            "incomplete record (no newline at the end: a write was interrupted or the file was cut)",
        )
    }

    pub(super) fn at(self, line: u64) -> VerifyError {
        let message = match self.seq {
            Some(seq) => format!("line {line} (seq {seq}): {}", self.what),
            None => format!("line {line}: {}", self.what),
        };
        VerifyError {
            line,
            seq: self.seq,
            message,
        }
    }
}

pub(super) fn too_long() -> Problem {
    Problem::new(None, "longer than 16 MiB: not a rotor audit record")
}

/// Checks one line (without its newline) on its own: JSON, own hash, field types.
pub(super) fn check_record(line: &[u8]) -> Result<Record, Problem> {
    if line.is_empty() {
        return Err(Problem::new(None, "empty line"));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "ends early",
            _ => "syntax error",
        };
        Problem::new(None, format!("not JSON ({what} at column {})", e.column()))
    })?;
    let Value::Object(fields) = value else {
        return Err(Problem::new(None, "not a JSON object"));
    };
    let seq = fields.get("seq").and_then(Value::as_u64);
    let n = line.len();
    let digest = n
        .checked_sub(HASH_SUFFIX_LEN)
        .map(|body| &line[body..])
        .filter(|suffix| suffix.starts_with(HASH_PREFIX) && suffix.ends_with(b"\"}"))
        .map(|suffix| &suffix[HASH_PREFIX.len()..HASH_PREFIX.len() + 64])
        .filter(|hex| hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let Some(digest) = digest else {
        return Err(Problem::new(
            seq,
            "`hash` is missing, malformed or not where rotor writes it — the record was changed",
        ));
    };
    let mut hasher = Sha256::new();
    hasher.update(&line[..n - HASH_SUFFIX_LEN]);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()).as_bytes() != digest {
        return Err(Problem::new(seq, "hash mismatch — the record was changed"));
    }
    let Some(seq) = seq.filter(|s| *s >= 1) else {
        return Err(Problem::new(
            None,
            "`seq` is missing or not a positive integer",
        ));
    };
    let prev = fields
        .get("prev")
        .and_then(Value::as_str)
        .filter(|p| is_hex_hash(p))
        .ok_or_else(|| Problem::new(Some(seq), "`prev` is missing or not a SHA-256 hex digest"))?;
    let time_ok = fields
        .get("time")
        .and_then(Value::as_str)
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    if !time_ok {
        return Err(Problem::new(
            Some(seq),
            "`time` is missing or not an RFC 3339 timestamp",
        ));
    }
    if fields
        .get("event")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(Problem::new(Some(seq), "`event` is missing"));
    }
    Ok(Record {
        seq,
        prev: prev.to_string(),
    })
}

/// Checks that `record` (on line `number`) follows the record with `prev_seq` whose
/// line hashed to `prev_hash` (0 and zeros before the first line).
pub(super) fn check_link(
    record: &Record,
    prev_seq: u64,
    prev_hash: &str,
    number: u64,
) -> Result<(), Problem> {
    let seq = record.seq;
    let expected = prev_seq.saturating_add(1);
    if seq != expected || prev_seq == u64::MAX {
        let what = if seq > expected {
            let (first, last) = (expected, seq - 1);
            let gap = if first == last {
                format!("record {first} missing or reordered")
            } else {
                format!("records {first}..{last} missing or reordered")
            };
            if prev_seq == 0 {
                format!("the log starts at seq {seq}, not 1 — {gap}")
            } else {
                format!("seq {seq} follows seq {prev_seq} — {gap}")
            }
        } else {
            format!("seq {seq} follows seq {prev_seq} — records reordered or duplicated")
        };
        return Err(Problem::new(Some(seq), what));
    }
    if record.prev != prev_hash {
        let what = if number == 1 {
            "prev is not 64 zeros — this is not the first record of a log".to_string()
        } else {
            format!(
                "prev does not match line {} — a record before it was changed, removed or reordered",
                number - 1
            )
        };
        return Err(Problem::new(Some(seq), what));
    }
    Ok(())
}

/// Reads the end of a file of `len` > 0 bytes backwards until it holds the last two
/// whole lines or the file start. Returns the bytes and whether they start the file.
pub(super) fn read_tail(file: &mut File, len: u64) -> io::Result<(Vec<u8>, bool)> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
        // Newlines before the final byte: two of them delimit the last two lines.
        let newlines = buf[..buf.len() - 1].iter().filter(|b| **b == b'\n').count();
        if pos == 0 || newlines >= 2 || buf.len() > 2 * (MAX_LINE + 1) {
            return Ok((buf, pos == 0));
        }
    }
}

/// Checks the last (up to) two lines in `tail` (from [`read_tail`]); returns the last
/// `seq` and the hash of the last line. `last_number` is the last line's number when
/// known; without it, error messages may name the wrong lines (rerun with it).
pub(super) fn check_tail(
    tail: &[u8],
    at_start: bool,
    last_number: Option<u64>,
) -> Result<(u64, String), VerifyError> {
    if tail.last() != Some(&b'\n') {
        return Err(Problem::incomplete().at(last_number.unwrap_or(1)));
    }
    let body = &tail[..tail.len() - 1];
    let mut lines = body.rsplit(|b| *b == b'\n');
    let last = lines.next().unwrap_or_default();
    let before = lines.next();
    let before_is_first = at_start && lines.next().is_none();
    let number = last_number.unwrap_or(if before.is_some() { 2 } else { 1 });
    if last.len() > MAX_LINE {
        return Err(too_long().at(number));
    }
    let record = check_record(last).map_err(|p| p.at(number))?;
    let (prev_seq, prev_hash) = match before {
        Some(line) => {
            if line.len() > MAX_LINE {
                return Err(too_long().at(number.saturating_sub(1)));
            }
            let earlier = check_record(line).map_err(|p| p.at(number.saturating_sub(1)))?;
            if before_is_first {
                check_link(&earlier, 0, ZERO_HASH, 1).map_err(|p| p.at(1))?;
            }
            (earlier.seq, sha256_hex(line))
        }
        None => (0, ZERO_HASH.to_string()),
    };
    check_link(&record, prev_seq, &prev_hash, number).map_err(|p| p.at(number))?;
    Ok((record.seq, sha256_hex(last)))
}

/// Number of lines in the file (a last line without newline counts).
pub(super) fn count_lines(path: &Path) -> io::Result<u64> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut count = 0u64;
    let mut last = b'\n';
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        count += buf.iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[buf.len() - 1];
        let n = buf.len();
        reader.consume(n);
    }
    Ok(if last == b'\n' { count } else { count + 1 })
}

pub(super) fn is_hex_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
