//! `rotor retire` and `rotor enable`: offboarding a credential and bringing it back.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::print::{print_outcome, print_retirement};
use super::target::{AuditArgs, Local, VaultArgs, connect};
use super::{Output, load};

/// Arguments of `rotor retire` and `rotor enable`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The policy's name (`metadata.name`).
    pub name: String,
    /// Why (required; recorded in the retirement record and the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Ticket reference (required when the policy's onDemand.requireTicket is set).
    #[arg(long)]
    pub ticket: Option<String>,
    /// Policy directory (or file); repeatable.
    #[arg(long = "policies", required_unless_present = "server")]
    pub policies: Vec<PathBuf>,
    /// Ask a running agent at this base URL instead of acting locally.
    #[arg(long)]
    pub server: Option<url::Url>,
    /// File holding the API token for --server (default: ROTOR_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Who is asking (default: `vault:<display name>` of the Vault token, as Vault
    /// answers it; with --server, the API token's identity).
    #[arg(long)]
    pub actor: Option<String>,
    /// Vault connection.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Audit log (local mode).
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// `rotor retire` (`enable: false`) and `rotor enable`, locally or through an agent.
/// Exit 0 only when the policy ended `retired` (or `enabled` with a rotation that
/// completed).
pub(super) async fn retire(
    args: RetireArgs,
    enable: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    if let Some(base) = &args.server {
        let remote = connect(base, args.token_file.as_deref())?;
        // `ticket: null` when there is none.
        let body = crate::api::RetireBody {
            reason: Some(args.reason.clone()),
            ticket: args.ticket.clone(),
        };
        let answer = if enable {
            serde_json::to_value(remote.enable(&args.name, &body).await?)?
        } else {
            serde_json::to_value(remote.retire(&args.name, &body).await?)?
        };
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
            Output::Text => {
                let record = if enable { &answer["record"] } else { &answer };
                let record: crate::engine::Retirement = serde_json::from_value(record.clone())?;
                print_retirement(&record);
                if let Some(r) = answer.pointer("/rotation/rotation") {
                    println!(
                        "rotation {} {}",
                        r["rotation_id"].as_str().unwrap_or("?"),
                        r["status"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let set = load(&args.policies)?;
    let policy = set
        .get(&args.name)
        .ok_or_else(|| anyhow::anyhow!("no policy named {:?} in the given paths", args.name))?;
    let local = Local::new(&args.vault, &args.audit, None).await?;
    let engine = &local.engine;
    let request = crate::engine::RetireRequest {
        asker: local.asker(args.actor.as_deref()),
        reason: Some(args.reason.clone()),
        ticket: args.ticket.clone(),
    };
    let ok = if enable {
        let outcome = engine.enable(policy, request).await?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
            Output::Text => {
                print_retirement(&outcome.record);
                if let Some(o) = &outcome.rotation {
                    println!();
                    print_outcome(o);
                }
            }
        }
        outcome.succeeded()
    } else {
        let record = engine.retire(policy, request).await?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&record)?),
            Output::Text => print_retirement(&record),
        }
        record.state == crate::engine::RetireState::Retired
    };
    local.finish().await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
