//! `rotor release NAME`: lifts a policy's quarantine, in a running agent or in Vault.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Output;
use super::target::{AuditArgs, Local, VaultArgs, connect};

pub(super) async fn release(
    base: &url::Url,
    token_file: Option<PathBuf>,
    name: &str,
    reason: &str,
    output: Output,
) -> anyhow::Result<ExitCode> {
    connect(base, token_file.as_deref())?
        .release(name, reason)
        .await?;
    Ok(released(name, output))
}

/// Says that policy `name` was released.
fn released(name: &str, output: Output) -> ExitCode {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "policy": name, "state": "released" })
        ),
        Output::Text => println!("released {name}"),
    }
    ExitCode::SUCCESS
}

/// `rotor release NAME` without --server: lifts the quarantine kept in Vault (a running
/// agent reads it back at its next sync of the policy) and records it like the agent.
pub(super) async fn release_local(
    name: &str,
    reason: &str,
    actor: Option<String>,
    vault: &VaultArgs,
    audit: &AuditArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the quarantine is lifted");
    }
    let local = Local::new(vault, audit, None).await?;
    let store = local.engine.quarantine_store();
    if store.get(name).await?.is_none() {
        anyhow::bail!("policy {name} is not quarantined");
    }
    let actor = actor.unwrap_or_else(|| local.operator.actor());
    local.evidence.record(&crate::audit::AuditEvent::Agent {
        action: "released".into(),
        detail: Some(format!("policy {name} released by {actor}: {reason}")),
    })?;
    store.set(name, None).await?;
    local.finish().await;
    Ok(released(name, output))
}
