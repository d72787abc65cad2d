//! `rotor rotate`: one policy, or every policy a label selector matches, locally or
//! through a running agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;

use super::print::print_outcome;
use super::target::{AuditArgs, Local, VaultArgs, connect};
use super::{Output, load, parse_selector, parse_wait};
use crate::api::{BulkRotateBody, RotateBody};
use crate::engine::{Engine, RotationOutcome, RotationRequest, Trigger};
use crate::policy::ValidatedPolicy;
use crate::server::AgentClient;

/// Arguments of `rotor rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Policy directory (or file); repeatable.
    #[arg(long = "policies", required_unless_present = "server")]
    pub policies: Vec<PathBuf>,
    /// The policy to rotate.
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    pub name: Option<String>,
    /// Rotate every policy whose labels match (`team=payments,tier=prod`), under
    /// `--concurrency` (locally) or the agent's limit (with --server), and print a
    /// per-policy summary.
    #[arg(long, value_parser = parse_selector)]
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    /// Rotations at once with --selector.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Ask a running agent at this base URL instead of rotating locally.
    #[arg(long)]
    pub server: Option<url::Url>,
    /// File holding the API token for --server (default: ROTOR_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Why (recorded with the rotation).
    #[arg(long)]
    pub reason: Option<String>,
    /// Ticket reference (recorded with the rotation).
    #[arg(long)]
    pub ticket: Option<String>,
    /// The credential leaked: no grace period, sessions terminated.
    #[arg(long)]
    pub compromise: bool,
    /// Who is asking (default: `vault:<display name>` of the Vault token, as Vault
    /// answers it). Vault's answer is recorded either way.
    #[arg(long)]
    pub actor: Option<String>,
    /// Wait up to this long (e.g. `90s`, `10m`) for the old credential's grace period
    /// to end, then revoke and verify it. Without it, a rotation with a longer grace
    /// period ends "waiting"; `rotor resume` (or the agent) finishes it later.
    #[arg(long, value_parser = parse_wait)]
    pub wait_grace: Option<std::time::Duration>,
    /// Vault connection.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Audit log (local mode).
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// `rotor rotate`: through the agent at `--server`, or here.
pub(super) async fn rotate(args: RotateArgs, output: Output) -> anyhow::Result<ExitCode> {
    match &args.server {
        Some(base) => {
            let remote = connect(base, args.token_file.as_deref())?;
            let (reason, ticket) = (args.reason.clone(), args.ticket.clone());
            let compromise = Some(args.compromise);
            match args.selector {
                Some(selector) => {
                    let body = BulkRotateBody {
                        selector,
                        reason,
                        ticket,
                        compromise,
                    };
                    rotate_remote_selected(&remote, &body, output).await
                }
                None => {
                    let body = RotateBody {
                        reason,
                        ticket,
                        compromise,
                    };
                    let name = args.name.as_deref().unwrap_or_default();
                    rotate_remote(&remote, name, &body, output).await
                }
            }
        }
        None => rotate_local(args, output).await,
    }
}

/// `rotor rotate --server URL --selector …`: the agent accepts or refuses each.
async fn rotate_remote_selected(
    remote: &AgentClient,
    body: &BulkRotateBody,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let base = remote.base();
    let answer = remote.rotate_selected(body).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&answer)?),
        Output::Text => {
            println!(
                "the agent at {base} accepted {} of {} rotations:",
                answer.accepted,
                answer.policies.len()
            );
            for item in &answer.policies {
                match (&item.error, &item.state) {
                    (Some(error), _) => println!("  {:<32} refused: {error}", item.policy),
                    (None, state) => println!(
                        "  {:<32} {}{}",
                        item.policy,
                        state.as_deref().unwrap_or("accepted"),
                        match (&item.rotation_id, &item.request_id) {
                            (_, Some(id)) => format!(" (approve with: rotor approve {id})"),
                            (Some(id), None) => format!(" (rotation {id})"),
                            (None, None) => String::new(),
                        }
                    ),
                }
            }
        }
    }
    Ok(if answer.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rotor rotate --server URL NAME`: the agent queues it (or asks for approval).
async fn rotate_remote(
    remote: &AgentClient,
    name: &str,
    body: &RotateBody,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let base = remote.base();
    let accepted = remote.rotate(name, body).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&accepted)?),
        Output::Text if accepted.state == "pending_approval" => println!(
            "policy {} requires approval: request {} waits for {} approval(s) until {}; approve with `rotor approve {} --server {base}`",
            name,
            accepted.request_id.as_deref().unwrap_or("?"),
            accepted.required.unwrap_or_default(),
            accepted.expires_at.as_deref().unwrap_or("?"),
            accepted.request_id.as_deref().unwrap_or("ID"),
        ),
        Output::Text => println!(
            "the agent at {base} {} the rotation of {}{}",
            accepted.state,
            name,
            accepted
                .rotation_id
                .as_deref()
                .map(|id| format!(" (rotation {id})"))
                .unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `rotor rotate NAME` or `--selector` here: the engine with this command's evidence.
async fn rotate_local(args: RotateArgs, output: Output) -> anyhow::Result<ExitCode> {
    let set = load(&args.policies)?;
    let selected =
        match &args.selector {
            Some(selector) => {
                let selected: Vec<&ValidatedPolicy> = set
                    .iter()
                    .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                    .collect();
                if selected.is_empty() {
                    anyhow::bail!("no policy has the labels {selector:?}");
                }
                selected
            }
            None => {
                let name = args.name.as_deref().unwrap_or_default();
                vec![set.get(name).ok_or_else(|| {
                    anyhow::anyhow!("no policy named {name:?} in the given paths")
                })?]
            }
        };
    let local = Local::new(&args.vault, &args.audit, args.wait_grace).await?;
    let trigger = if args.compromise {
        Trigger::Compromise
    } else {
        Trigger::OnDemand
    };
    let mut request = local.request(trigger, args.actor.as_deref());
    request.reason = args.reason.clone();
    request.ticket = args.ticket.clone();
    if args.selector.is_some() {
        let code = rotate_selected(selected, local.engine.clone(), &args, request, output).await;
        local.finish().await;
        return code;
    }
    let policy = selected[0];
    let engine = &local.engine;
    let outcome = engine.rotate(policy, request.clone()).await?;
    // `spec.cascade`: dependents rotate under the same trigger once this one promoted.
    let cascaded = engine.cascade(&set, policy, &outcome, &request).await;
    local.finish().await;
    let all_ok = outcome.succeeded()
        && cascaded
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(RotationOutcome::succeeded));
    match output {
        Output::Json if cascaded.is_empty() => {
            println!("{}", serde_json::to_string_pretty(&outcome)?)
        }
        Output::Json => {
            let mut v = serde_json::to_value(&outcome)?;
            v["cascade"] = serde_json::Value::Array(
                cascaded
                    .iter()
                    .map(|(name, r)| outcome_json(name, r))
                    .collect(),
            );
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Text => {
            print_outcome(&outcome);
            for (name, r) in &cascaded {
                println!("\ncascade: {name}");
                match r {
                    Ok(o) => print_outcome(o),
                    Err(e) => println!("error: {e}"),
                }
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rotor rotate --selector`: every matching policy, `--concurrency` at a time.
pub(super) async fn rotate_selected(
    selected: Vec<&ValidatedPolicy>,
    engine: std::sync::Arc<Engine>,
    args: &RotateArgs,
    request: RotationRequest,
    output: Output,
) -> anyhow::Result<ExitCode> {
    // Each rotation is its own task, so their CPU work (SCRAM, JSON, TLS) spreads over
    // the runtime's threads, and `--concurrency` run at all times: a slow rotation
    // does not hold back the ones behind it. Results are printed in policy order.
    let mut results: Vec<(usize, String, Result<RotationOutcome, String>)> =
        futures::stream::iter(selected.into_iter().enumerate())
            .map(|(i, p)| {
                let engine = engine.clone();
                let request = request.clone();
                let policy = p.clone();
                async move {
                    let name = policy.name.clone();
                    let r = tokio::spawn(async move {
                        engine
                            .rotate(&policy, request)
                            .await
                            .map_err(|e| crate::error_chain(&e))
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(if e.is_panic() {
                            "the rotation task panicked".to_owned()
                        } else {
                            "the rotation task was cancelled".to_owned()
                        })
                    });
                    (i, name, r)
                }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
    results.sort_unstable_by_key(|(i, _, _)| *i);
    let results: Vec<(String, Result<RotationOutcome, String>)> =
        results.into_iter().map(|(_, n, r)| (n, r)).collect();
    let ok = results
        .iter()
        .all(|(_, r)| r.as_ref().is_ok_and(RotationOutcome::succeeded));
    match output {
        Output::Json => {
            let list: Vec<serde_json::Value> = results
                .iter()
                .map(|(name, r)| outcome_json(name, r))
                .collect();
            println!("{}", serde_json::json!({ "rotations": list }));
        }
        Output::Text => {
            for (name, r) in &results {
                let line = match r {
                    Ok(o) => o
                        .rotation
                        .as_ref()
                        .map(|r| {
                            format!(
                                "{} {}{}",
                                r.rotation_id,
                                if r.waiting_for_grace() {
                                    "waiting"
                                } else {
                                    r.status.as_str()
                                },
                                r.error
                                    .as_deref()
                                    .map(|e| format!(" ({e})"))
                                    .unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| "did not run".into()),
                    Err(e) => format!("error: {e}"),
                };
                println!("{name:<32} {line}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One policy's result in a `--selector` or cascade report.
pub(super) fn outcome_json(name: &str, r: &Result<RotationOutcome, String>) -> serde_json::Value {
    match r {
        Ok(o) => serde_json::json!({"policy": name, "succeeded": o.succeeded(), "outcome": o}),
        Err(e) => serde_json::json!({"policy": name, "succeeded": false, "error": e}),
    }
}
