//! `rotor status`: last rotation, age, next due and pending consumers, per policy.

use std::path::PathBuf;
use std::process::ExitCode;

use super::target::{VaultArgs, connect, engine};
use super::{Output, load, select};
use crate::policy;

pub(super) async fn status(
    server: Option<url::Url>,
    token_file: Option<PathBuf>,
    paths: &[PathBuf],
    name: Option<&str>,
    vault: &VaultArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let views: Vec<serde_json::Value> = match server {
        Some(base) => connect(&base, token_file.as_deref())?
            .policies()
            .await?
            .into_iter()
            .filter(|v| name.is_none_or(|n| v.name == n))
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?,
        None => {
            let set = load(paths)?;
            let selected = select(&set, name)?;
            let engine = engine(vault, None).await?;
            let now = chrono::Utc::now();
            let mut out = Vec::new();
            for p in selected {
                let (record, _) = engine.journal().load(&p.name).await?;
                let loc = &p.spec.vault;
                let created = engine
                    .vault()
                    .kv_read_value(&loc.mount, &loc.path)
                    .await?
                    .map(|e| e.created_time);
                let age = created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map(|c| (now - c.with_timezone(&chrono::Utc)).num_seconds());
                let next = crate::schedule::next_fire_times(p, now, 1);
                out.push(serde_json::json!({
                    "name": p.name,
                    "kind": p.spec.credential.kind(),
                    "state": record.as_ref().map(|r| if r.waiting_for_grace() { "waiting" } else { r.status.as_str() }),
                    "last_rotation": record.as_ref().map(|r| serde_json::json!({
                        "rotation_id": r.rotation_id, "status": r.status.as_str(),
                        "trigger": r.trigger.as_str(), "updated_at": r.updated_at})),
                    "secret_created_at": created,
                    "age_seconds": age,
                    "next_due": next.first().map(|t| t.to_rfc3339()),
                    "pending_consumers": record.as_ref().map(|r| r.consumers.iter()
                        .filter(|c| c.state == crate::engine::ConsumerState::Pending).map(|c| c.consumer.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "error": record.as_ref().and_then(|r| r.error.clone()),
                }));
            }
            out
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::json!({ "policies": views })),
        Output::Text => {
            for v in &views {
                let s = |k: &str| {
                    v[k].as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| "-".into())
                };
                println!("{}", s("name"));
                println!("  state:      {}", s("state"));
                if let Some(last) = v.get("last_rotation").filter(|l| !l.is_null()) {
                    println!(
                        "  last:       {} {} ({}, {})",
                        last["rotation_id"].as_str().unwrap_or("-"),
                        last["status"].as_str().unwrap_or("-"),
                        last["trigger"].as_str().unwrap_or("-"),
                        last["updated_at"].as_str().unwrap_or("-")
                    );
                }
                if let Some(age) = v["age_seconds"]
                    .as_i64()
                    .or(v["age_seconds"].as_u64().map(|a| a as i64))
                {
                    println!(
                        "  age:        {}",
                        policy::format_duration(std::time::Duration::from_secs(age.max(0) as u64))
                    );
                }
                println!("  next due:   {}", s("next_due"));
                if let Some(p) = v["pending_consumers"].as_array().filter(|p| !p.is_empty()) {
                    for c in p {
                        println!("  pending:    {}", c.as_str().unwrap_or("-"));
                    }
                }
                if let Some(e) = v["error"].as_str() {
                    println!("  error:      {e}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
