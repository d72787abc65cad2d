//! `rotor run`, `rotor status`, `rotor audit verify` and `rotor rotate --server`: the
//! commands around the agent. `crate::cli` parses the flags and calls these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tracing::{info, warn};

use super::{Agent, AgentConfig, Control, TokioClock};
use crate::audit::{AuditEvent, AuditLog};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::server::{self, AuditFn, AuthConfig, Authenticator, MetricsFn, RequestAudit};

/// Flags of `rotor run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--audit-log`.
    pub audit_log: Option<PathBuf>,
    /// `--auth-config`.
    pub auth_config: Option<PathBuf>,
    /// `--leader-election`: compete for this Lease; `None`: always the leader.
    pub leader: Option<crate::leader::LeaderConfig>,
    /// Agent settings (policy paths, concurrency, webhook…).
    pub agent: AgentConfig,
}

/// Serves until SIGTERM/SIGINT; SIGHUP reloads the policies.
pub async fn run(
    engine: Engine,
    policies: PolicySet,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    // Keeps rotor's Vault token alive (renewals, new logins) until the agent has
    // drained; an early return drops `keeper_stop`, which stops it too.
    let (keeper_stop, keeper_stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = engine.vault().keep_alive(async move {
        let _ = keeper_stopped.await;
    });
    let audit = match &opts.audit_log {
        Some(path) => {
            Some(Arc::new(AuditLog::open(path).map_err(|e| {
                anyhow::anyhow!("audit log {}: {e}", path.display())
            })?))
        }
        None => {
            warn!("No --audit-log: rotations and API requests are not recorded in an audit trail.");
            None
        }
    };
    let auth = match &opts.auth_config {
        Some(path) => {
            let config = AuthConfig::load(path)
                .map_err(|e| anyhow::anyhow!("auth config {}: {e}", path.display()))?;
            let mut auth = Authenticator::from_config(&config, Some(engine.vault()))
                .await
                .map_err(|e| anyhow::anyhow!("auth config {}: {e}", path.display()))?;
            // In a cluster, ServiceAccount tokens are checked with TokenReview.
            if let Ok(client) = crate::outside::kube_client().await {
                auth = auth.with_kube(client);
            }
            auth
        }
        None => {
            warn!(
                "No --auth-config: the /v1 API refuses every request (health and metrics stay open)."
            );
            Authenticator::deny_all()
        }
    };
    let engine_vault = engine.vault().clone();
    // One evidence component for the engine's events: the agent's audit log, its
    // metrics and its notifier (shared with the agent's own notifications).
    let mut agent_config = opts.agent.clone();
    let notifier = agent_config.notifier.clone().unwrap_or_else(|| {
        crate::notify::Notifier::new(agent_config.vault.clone(), agent_config.notify.clone())
    });
    agent_config.notifier = Some(notifier.clone());
    let mut evidence = crate::evidence::Evidence::new()
        .with_metrics(Arc::clone(&metrics))
        .with_notifier(notifier);
    if let Some(log) = &audit {
        evidence = evidence.with_audit(crate::evidence::AuditTarget::Held(Arc::clone(log)));
    }
    let engine = engine.with_evidence(Arc::new(evidence));
    let agent = Agent::new(
        Arc::new(engine),
        policies,
        agent_config,
        Arc::new(TokioClock::new()),
        audit.clone(),
        Arc::clone(&metrics),
    );
    // Leader election: start as a follower; the elector runs until the agent has
    // drained (so a successor never resumes a rotation this replica is still running)
    // and then releases the Lease.
    let (elector, elector_stop) = match opts.leader.clone() {
        Some(config) => {
            config.check()?;
            let client = crate::outside::kube_client().await.map_err(|e| {
                anyhow::anyhow!(
                    "--leader-election needs the Kubernetes API (in-cluster or KUBECONFIG): {e}"
                )
            })?;
            agent.set_leader_unknown();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let a = agent.clone();
            let task = tokio::spawn(crate::leader::run(
                client,
                config,
                move |leading| a.set_leader(leading),
                async move {
                    let _ = stopped.await;
                },
            ));
            (Some(task), Some(stop))
        }
        None => (None, None),
    };
    // Readiness follows Vault without a Vault call per request.
    let vault_probe = super::health::spawn_vault_probe(engine_vault, agent.health());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", opts.listen))?;
    info!(listen = %listener.local_addr().unwrap_or(opts.listen), "Serving the API, /metrics, /healthz and /readyz.");

    let metrics_fn: MetricsFn = {
        let m = Arc::clone(&metrics);
        Arc::new(move || {
            let text = m.encode();
            // Gathering builds a metric object per series (tens of thousands with
            // thousands of policies): give that memory back instead of keeping it.
            super::return_free_memory();
            text
        })
    };
    let audit_fn: Option<AuditFn> = audit.clone().map(|log| {
        let f: AuditFn = Arc::new(move |r: RequestAudit| {
            log.append(&request_event(&r))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        f
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut rx = stop_rx.clone();
        let control: Arc<dyn Control> = Arc::new(agent.clone());
        tokio::spawn(server::serve(
            listener,
            control,
            Arc::new(auth),
            metrics_fn,
            audit_fn,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    let signals = {
        let agent = agent.clone();
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                warn!("Cannot install signal handlers.");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        info!("SIGHUP: reloading policies.");
                        agent.request_reload();
                    }
                }
            }
            info!("Stopping.");
            let _ = stop_tx.send(true);
        })
    };
    let mut rx = stop_rx.clone();
    agent
        .run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
    let _ = stop_tx.send(true);
    signals.abort();
    if let (Some(task), Some(stop)) = (elector, elector_stop) {
        let _ = stop.send(());
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %crate::error_chain(&e), "Leader election ended with an error.")
            }
            Err(e) => warn!(error = %e, "Leader election task failed."),
        }
    }
    vault_probe.abort();
    let _ = keeper_stop.send(());
    if let Err(e) = keeper.await {
        warn!(error = %e, "The Vault token keeper failed.");
    }
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "The API server ended with an error."),
        _ => warn!("The API server did not stop in time."),
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit record of an API request.
fn request_event(r: &RequestAudit) -> AuditEvent {
    let mut detail = r.detail.clone();
    if let Some(t) = r.trigger {
        detail.push_str(&format!("; trigger {}", t.as_str()));
    }
    if let Some(reason) = &r.reason {
        detail.push_str(&format!("; reason {reason:?}"));
    }
    if let Some(ticket) = &r.ticket {
        detail.push_str(&format!("; ticket {ticket}"));
    }
    AuditEvent::Request {
        identity: r.identity.clone().unwrap_or_else(|| "anonymous".into()),
        method: r.method.clone(),
        path: r.path.clone(),
        policy: r.policy.clone(),
        status: r.status,
        outcome: r.outcome.as_str().into(),
        detail: Some(detail),
        remote: Some(r.remote.to_string()),
        count: r.count,
    }
}

/// `rotor audit verify FILE`.
pub fn audit_verify(path: &Path, json: bool) -> ExitCode {
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

/// The API token for `--server` calls: `--token-file`, else `ROTOR_TOKEN`.
pub fn api_token(file: Option<&Path>) -> anyhow::Result<SecretString> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("reading the API token file {}: {e}", f.display()))?;
        return Ok(SecretString::from(text.trim().to_owned()));
    }
    std::env::var("ROTOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| anyhow::anyhow!("--server needs a token: --token-file FILE or ROTOR_TOKEN"))
}
