//! `rotor approve ID --server URL`: four-eyes approval of a pending request.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Output;
use super::target::connect;

/// `rotor approve ID --server URL`: 0 when recorded (and the rotation queued once
/// enough approvals are in), 3 when the agent refuses (403, 410), 1 otherwise.
pub(super) async fn approve(
    base: &url::Url,
    token_file: Option<PathBuf>,
    id: &str,
    reason: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let remote = connect(base, token_file.as_deref())?;
    let accepted = match remote.approve(id, reason).await {
        Ok(a) => a,
        Err(e) if matches!(e.status(), Some(403 | 410)) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "request_id": id, "refused": true, "error": e.to_string() })
                );
            }
            eprintln!("refused: {e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&accepted)?),
        Output::Text if accepted.state == "pending_approval" => println!(
            "approved request {id} ({} of {} approvals); it waits for more until {}",
            accepted.approvals.unwrap_or_default(),
            accepted.required.unwrap_or_default(),
            accepted.expires_at.as_deref().unwrap_or("?")
        ),
        Output::Text => println!(
            "approved request {id}: the rotation is {}{}",
            accepted.state,
            accepted
                .rotation_id
                .as_deref()
                .map(|r| format!(" (rotation {r})"))
                .unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
