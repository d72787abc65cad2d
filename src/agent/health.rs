//! What readiness knows about the agent's dependencies, kept current in the background
//! so `/readyz` never waits on an outside system.
//!
//! - Vault: [`spawn_vault_probe`] asks `sys/health` every [`VAULT_PROBE_EVERY`] with a
//!   short limit and records the answer; an unreachable, slow, sealed or uninitialised
//!   Vault makes the agent not ready, with the reason.
//! - Leadership: with leader election on, the agent is not ready until the elector has
//!   reached the Lease once and said whether this replica leads.
//!
//! An agent without a probe (tests, embedding) has no Vault requirement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::vault::{AuthAs, Vault};

/// How often Vault is probed.
pub const VAULT_PROBE_EVERY: Duration = Duration::from_secs(5);
/// The longest a probe waits (less when the call timeout is shorter).
pub const VAULT_PROBE_LIMIT: Duration = Duration::from_secs(5);

/// The last Vault probe.
#[derive(Debug, Clone)]
enum VaultState {
    /// No probe has answered yet.
    Pending(String),
    /// Vault answered as usable.
    Up,
    /// Why Vault is not usable.
    Down(String),
}

/// The dependency facts readiness reports. Shared between the agent and its probes.
#[derive(Debug)]
pub struct Health {
    /// `None`: no probe runs, Vault is not part of readiness.
    vault: RwLock<Option<VaultState>>,
    leader_known: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            vault: RwLock::new(None),
            leader_known: AtomicBool::new(true),
        }
    }
}

impl Health {
    /// Why the dependencies keep the agent from doing its job, if they do.
    pub fn problem(&self) -> Option<String> {
        let vault = self
            .vault
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match vault {
            Some(VaultState::Pending(reason) | VaultState::Down(reason)) => return Some(reason),
            Some(VaultState::Up) | None => {}
        }
        if !self.leader_known.load(Ordering::SeqCst) {
            return Some("leader election: the lease has not been reached yet".into());
        }
        None
    }

    /// Records whether leadership is known (the elector has reported once).
    pub fn set_leader_known(&self, known: bool) {
        self.leader_known.store(known, Ordering::SeqCst);
    }

    fn set_vault(&self, state: VaultState) {
        *self.vault.write().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }
}

/// Probes `vault` now and then every [`VAULT_PROBE_EVERY`] until the task is aborted,
/// recording each result in `health`. Logs only changes.
pub fn spawn_vault_probe(
    vault: Vault,
    health: std::sync::Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    health.set_vault(VaultState::Pending(format!(
        "vault at {} not checked yet",
        vault.addr()
    )));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(VAULT_PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok: Option<bool> = None;
        loop {
            ticks.tick().await;
            let limit = VAULT_PROBE_LIMIT.min(crate::outside::call_timeout());
            let result = probe_vault(&vault, limit).await;
            let ok = result.is_ok();
            match &result {
                Ok(()) if last_ok != Some(true) => {
                    tracing::info!(vault = %vault.addr(), "Vault is reachable.")
                }
                Err(reason) if last_ok != Some(false) => {
                    tracing::warn!(vault = %vault.addr(), reason = %reason, "Vault is not usable; the agent is not ready.")
                }
                _ => {}
            }
            last_ok = Some(ok);
            health.set_vault(match result {
                Ok(()) => VaultState::Up,
                Err(reason) => VaultState::Down(reason),
            });
        }
    })
}

/// One `sys/health` request within `limit`. Active, standby and performance-standby
/// nodes count as up (`standbyok`, `perfstandbyok`); the status code is read directly,
/// since a sealed or uninitialised Vault answers 503 / 501 with the same JSON.
pub async fn probe_vault(vault: &Vault, limit: Duration) -> Result<(), String> {
    let addr = vault.addr();
    let call = vault.request_in(
        None,
        reqwest::Method::GET,
        "sys/health?standbyok=true&perfstandbyok=true",
        None,
        AuthAs::Anonymous,
    );
    let response = match tokio::time::timeout(limit, call).await {
        Err(_) => {
            crate::outside::count_timeout(crate::outside::System::Vault);
            return Err(format!(
                "vault unreachable at {addr}: no answer to sys/health within {} ms",
                limit.as_millis()
            ));
        }
        Ok(Err(e)) => return Err(format!("vault unreachable at {addr}: {e}")),
        Ok(Ok(response)) => response,
    };
    match response.status {
        200 | 429 | 472 | 473 => Ok(()),
        503 => Err(format!("vault at {addr} is sealed")),
        501 => Err(format!("vault at {addr} is not initialized")),
        status => Err(format!(
            "vault at {addr} answered sys/health with HTTP {status}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_probes_nothing_is_missing() {
        assert_eq!(Health::default().problem(), None);
    }

    #[test]
    fn vault_then_leadership_are_reported() {
        let h = Health::default();
        h.set_leader_known(false);
        h.set_vault(VaultState::Down("vault unreachable at x".into()));
        assert_eq!(h.problem().as_deref(), Some("vault unreachable at x"));
        h.set_vault(VaultState::Up);
        assert!(h.problem().is_some_and(|p| p.contains("leader election")));
        h.set_leader_known(true);
        assert_eq!(h.problem(), None);
    }
}
