//! `rotor audit verify FILE`: checks an audit log's hash chain.

use std::path::Path;
use std::process::ExitCode;

/// `rotor audit verify FILE`.
pub(super) fn audit_verify(path: &Path, json: bool) -> ExitCode {
    match crate::audit::verify_file(path) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "records": report.records, "last_hash": report.last_hash})
                );
            } else {
                println!(
                    "{}: {} record(s), hash chain intact; last hash {}",
                    path.display(),
                    report.records,
                    report.last_hash
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "line": e.line, "seq": e.seq, "error": e.message})
                );
            } else {
                println!("{}: INVALID: {}", path.display(), e.message);
            }
            ExitCode::FAILURE
        }
    }
}
