//! `rotor resume`: finishes or rolls back interrupted rotations; starts nothing new.

use std::path::PathBuf;
use std::process::ExitCode;

use super::print::print_rotation;
use super::target::{AuditArgs, Local, VaultArgs};
use super::{Output, load, select};

pub(super) async fn resume(
    paths: &[PathBuf],
    name: Option<&str>,
    wait_grace: Option<std::time::Duration>,
    vault: &VaultArgs,
    audit: &AuditArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let set = load(paths)?;
    let selected = select(&set, name)?;
    let local = Local::new(vault, audit, wait_grace).await?;
    let mut resumed = Vec::new();
    let mut ok = true;
    for policy in selected {
        if let Some(r) = local.engine.resume(policy).await? {
            ok &= r.waiting_for_grace()
                || matches!(
                    r.status,
                    crate::engine::Status::Completed | crate::engine::Status::RolledBack
                );
            resumed.push(r);
        }
    }
    local.finish().await;
    match output {
        Output::Json => println!("{}", serde_json::json!({ "resumed": resumed })),
        Output::Text if resumed.is_empty() => println!("no interrupted rotations"),
        Output::Text => {
            for r in &resumed {
                print_rotation(r);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
