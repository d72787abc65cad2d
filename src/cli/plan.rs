//! `rotor plan`: what the next rotations would touch and when; changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Output, load, select};
use crate::policy::ConsumerFacts;

pub(super) fn plan(
    paths: &[PathBuf],
    name: Option<&str>,
    count: usize,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let set = load(paths)?;
    let selected = select(&set, name)?;
    let now = chrono::Utc::now();
    let entries: Vec<serde_json::Value> = selected
        .iter()
        .map(|p| {
            let next = crate::schedule::next_fire_times(p, now, count);
            serde_json::json!({
                "name": p.name,
                "kind": p.spec.credential.kind(),
                "target": p.spec.credential.target(),
                "vault": format!("{}/{}", p.spec.vault.mount, p.spec.vault.path),
                "consumers": p.spec.consumers.iter().map(|c| c.describe()).collect::<Vec<_>>(),
                "schedule": p.spec.schedule.as_ref().and_then(|s| s.cron_source.clone()),
                "timezone": p.spec.schedule.as_ref().map(|s| s.timezone.name()),
                "next": next.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            })
        })
        .collect();
    match output {
        Output::Json => println!("{}", serde_json::json!({ "policies": entries })),
        Output::Text => {
            for (p, e) in selected.iter().zip(&entries) {
                println!("{}", p.name);
                println!("  target:    {}", p.spec.credential.target());
                println!("  vault:     {}/{}", p.spec.vault.mount, p.spec.vault.path);
                if p.spec.consumers.is_empty() {
                    println!("  consumers: none (Vault only)");
                }
                for c in &p.spec.consumers {
                    println!("  consumer:  {}", c.describe());
                }
                match &p.spec.schedule {
                    None => println!("  schedule:  on demand only"),
                    Some(s) => {
                        let what = s.cron_source.as_deref().unwrap_or("maxAge only");
                        println!("  schedule:  {what} ({})", s.timezone.name());
                    }
                }
                if let Some(next) = e["next"].as_array() {
                    for t in next {
                        println!("  next:      {}", t.as_str().unwrap_or_default());
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
