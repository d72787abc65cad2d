//! How rotations and retirements are printed for people.

use crate::engine::{Rotation, RotationOutcome, Verification};
use crate::state::records::time;

/// Prints one rotation for people.
pub fn print_rotation(r: &Rotation) {
    println!(
        "rotation {} of policy {} ({}, {} by {})",
        r.rotation_id,
        r.policy,
        r.kind,
        r.trigger.as_str(),
        r.actor
    );
    for s in &r.steps {
        let outcome = s.outcome.as_str();
        let ms = s
            .duration_ms
            .map(|d| format!("{d:>8.1} ms"))
            .unwrap_or_else(|| " ".repeat(11));
        println!(
            "  {:<11} {:<8} {ms}  {}",
            s.step.as_str(),
            outcome,
            s.detail.as_deref().unwrap_or("")
        );
    }
    if !r.verification.is_empty() {
        println!("verification:");
        print_checks(&r.verification, 24);
    }
    if !r.consumers.is_empty() {
        println!("consumers:");
        for c in &r.consumers {
            let mut extra = Vec::new();
            if c.changed {
                extra.push("changed".to_owned());
            }
            if !c.restarted.is_empty() {
                extra.push(format!("restarted {}", c.restarted.join(", ")));
            }
            if let Some(e) = &c.error {
                extra.push(e.clone());
            }
            println!("  {}: {} {}", c.consumer, c.state, extra.join("; "));
        }
    }
    if r.sessions_terminated > 0 {
        println!("sessions ended: {}", r.sessions_terminated);
    }
    match &r.error {
        Some(e) => println!("result: {} ({e})", r.status.as_str()),
        None if r.waiting_for_grace() => println!(
            "result: waiting — the old credential stays valid until {} (grace period); then `rotor resume` (or the agent) revokes and verifies it",
            r.revoke_after
                .map_or_else(|| "?".to_owned(), |t| time::format(&t))
        ),
        None => println!("result: {}", r.status.as_str()),
    }
}

/// Prints a retirement record for people.
pub(super) fn print_retirement(r: &crate::engine::Retirement) {
    println!(
        "policy {} ({}, {}): {} — retired by {} ({}{})",
        r.policy,
        r.kind,
        r.strategy,
        r.state.as_str(),
        r.actor,
        r.reason,
        r.ticket
            .as_deref()
            .map(|t| format!(", ticket {t}"))
            .unwrap_or_default()
    );
    for s in &r.steps {
        let outcome = s.outcome.as_str();
        println!(
            "  {:<18} {:<8} {}",
            s.step.as_str(),
            outcome,
            s.detail.as_deref().unwrap_or("")
        );
    }
    for c in &r.consumers {
        println!(
            "  consumer {}: {} {}",
            c.consumer,
            c.state,
            c.error.as_deref().or(c.detail.as_deref()).unwrap_or("")
        );
    }
    print_checks(&r.verification, 28);
    if let Some(e) = &r.enable {
        println!(
            "  enable by {} ({}): {}{}",
            e.actor,
            e.reason,
            e.finished_at
                .map(|t| format!("enabled at {}", time::format(&t)))
                .unwrap_or_else(|| "not done".into()),
            e.error
                .as_deref()
                .map(|x| format!("; error: {x}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &r.error {
        println!("error: {e}");
    }
}

/// Prints checks one a line, each name padded to `width`, then PASS or FAIL and the
/// evidence.
fn print_checks(checks: &[Verification], width: usize) {
    for v in checks {
        println!(
            "  {:<width$} {}  {}",
            v.check.as_str(),
            if v.passed { "PASS" } else { "FAIL" },
            v.evidence
        );
    }
}

/// Prints a rotation outcome: the resumed rotation first, if any.
pub(super) fn print_outcome(outcome: &RotationOutcome) {
    if let Some(r) = &outcome.resumed {
        println!("resumed an interrupted rotation first:");
        print_rotation(r);
        println!();
    }
    if let Some(r) = &outcome.rotation {
        print_rotation(r);
    }
}
