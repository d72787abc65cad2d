//! The one place the program is assembled: the engine every command uses (the CLI's
//! local commands and the agent alike), and `rotor run` — the agent with its evidence,
//! the API, leader election, the Vault token keeper and the signals, started and
//! stopped in order. `crate::cli` parses the flags and calls these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::agent::{Agent, AgentConfig, Control, TokioClock};
use crate::audit::{AuditEvent, AuditLog};
use crate::consumers::Consumers;
use crate::engine::{Engine, EngineConfig};
use crate::evidence::{AuditTarget, Evidence};
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::server::{self, AuditFn, AuthConfig, Authenticator, MetricsFn, RequestAudit};
use crate::vault::{Vault, VaultConfig};

/// Logs in to Vault once and builds the engine over it, keeping rotor's state under
/// `state_mount`; `grace_wait` is how long a run may wait in-process for a grace
/// period. Evidence is attached by the caller ([`Engine::with_evidence`]).
pub async fn engine(
    vault: &VaultConfig,
    state_mount: &str,
    grace_wait: Option<Duration>,
) -> anyhow::Result<Engine> {
    // `rotor run` then keeps the token alive (`run_agent`).
    let vault = Vault::login(vault).await?;
    let config = EngineConfig {
        state_mount: state_mount.to_owned(),
        grace_wait: grace_wait.unwrap_or_default(),
        ..EngineConfig::default()
    };
    Ok(Engine::new(vault, config, Consumers::new()).await?)
}

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

/// A background task and the sender that asks it to stop.
type Stoppable<T> = (JoinHandle<T>, oneshot::Sender<()>);

/// `rotor run`: serves until SIGTERM/SIGINT; SIGHUP reloads the policies.
pub async fn run_agent(
    engine: Engine,
    policies: PolicySet,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    // Keeps rotor's Vault token alive (renewals, new logins) until the agent has
    // drained; an early return drops the sender, which stops it too.
    let (keeper_stop, keeper_stopped) = oneshot::channel::<()>();
    let keeper = engine.vault().keep_alive(async move {
        let _ = keeper_stopped.await;
    });
    let audit = open_audit(&opts)?;
    let auth = load_auth(&opts, engine.vault()).await?;
    let engine_vault = engine.vault().clone();
    let agent = build_agent(engine, policies, &opts, audit.clone(), &metrics);
    let elector = start_leader(&opts, &agent).await?;
    // Readiness follows Vault without a Vault call per request.
    let vault_probe = crate::agent::health::spawn_vault_probe(engine_vault, agent.health());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", opts.listen))?;
    info!(listen = %listener.local_addr().unwrap_or(opts.listen), "Serving the API, /metrics, /healthz and /readyz.");
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = serve_api(listener, &agent, auth, &metrics, audit, stop_rx.clone());
    let signals = watch_signals(agent.clone(), stop_tx.clone());
    let mut rx = stop_rx;
    agent
        .run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
    let _ = stop_tx.send(true);
    signals.abort();
    stop_leader(elector).await;
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

/// The agent's audit log (`--audit-log`), held open and locked for its whole run.
fn open_audit(opts: &RunOptions) -> anyhow::Result<Option<Arc<AuditLog>>> {
    match &opts.audit_log {
        Some(path) => {
            Ok(Some(Arc::new(AuditLog::open(path).map_err(|e| {
                anyhow::anyhow!("audit log {}: {e}", path.display())
            })?)))
        }
        None => {
            warn!("No --audit-log: rotations and API requests are not recorded in an audit trail.");
            Ok(None)
        }
    }
}

/// Who may call the API (`--auth-config`); without it, nobody.
async fn load_auth(opts: &RunOptions, vault: &Vault) -> anyhow::Result<Authenticator> {
    let Some(path) = &opts.auth_config else {
        warn!(
            "No --auth-config: the /v1 API refuses every request (health and metrics stay open)."
        );
        return Ok(Authenticator::deny_all());
    };
    let config = AuthConfig::load(path)
        .map_err(|e| anyhow::anyhow!("auth config {}: {e}", path.display()))?;
    let mut auth = Authenticator::from_config(&config, Some(vault))
        .await
        .map_err(|e| anyhow::anyhow!("auth config {}: {e}", path.display()))?;
    // In a cluster, ServiceAccount tokens are checked with TokenReview.
    if let Ok(client) = crate::outside::kube_client().await {
        auth = auth.with_kube(client);
    }
    Ok(auth)
}

/// The agent over `engine`, whose events go to one evidence component: the agent's
/// audit log, its metrics and its notifier (shared with the agent's own notifications).
fn build_agent(
    engine: Engine,
    policies: PolicySet,
    opts: &RunOptions,
    audit: Option<Arc<AuditLog>>,
    metrics: &Arc<Metrics>,
) -> Agent {
    let mut config = opts.agent.clone();
    let notifier = config.notifier.clone().unwrap_or_else(|| {
        crate::notify::Notifier::new(config.vault.clone(), config.notify.clone())
    });
    config.notifier = Some(notifier.clone());
    let mut evidence = Evidence::new()
        .with_metrics(Arc::clone(metrics))
        .with_notifier(notifier);
    if let Some(log) = &audit {
        evidence = evidence.with_audit(AuditTarget::Held(Arc::clone(log)));
    }
    let engine = engine.with_evidence(Arc::new(evidence));
    Agent::new(
        Arc::new(engine),
        policies,
        config,
        Arc::new(TokioClock::new()),
        audit,
        Arc::clone(metrics),
    )
}

/// Leader election, when asked for: the agent starts as a follower; the elector runs
/// until the agent has drained (so a successor never resumes a rotation this replica
/// is still running) and then releases the Lease.
async fn start_leader(
    opts: &RunOptions,
    agent: &Agent,
) -> anyhow::Result<Option<Stoppable<Result<(), crate::leader::LeaderError>>>> {
    let Some(config) = opts.leader.clone() else {
        return Ok(None);
    };
    config.check()?;
    let client = crate::outside::kube_client().await.map_err(|e| {
        anyhow::anyhow!(
            "--leader-election needs the Kubernetes API (in-cluster or KUBECONFIG): {e}"
        )
    })?;
    agent.set_leader_unknown();
    let (stop, stopped) = oneshot::channel::<()>();
    let a = agent.clone();
    let task = tokio::spawn(crate::leader::run(
        client,
        config,
        move |leading| a.set_leader(leading),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Some((task, stop)))
}

/// Stops the elector (it releases the Lease) and waits for it.
async fn stop_leader(elector: Option<Stoppable<Result<(), crate::leader::LeaderError>>>) {
    let Some((task, stop)) = elector else { return };
    let _ = stop.send(());
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %crate::error_chain(&e), "Leader election ended with an error.")
        }
        Err(e) => warn!(error = %e, "Leader election task failed."),
    }
}

/// The HTTP API, /metrics, /healthz and /readyz, until `stop` turns true.
fn serve_api(
    listener: tokio::net::TcpListener,
    agent: &Agent,
    auth: Authenticator,
    metrics: &Arc<Metrics>,
    audit: Option<Arc<AuditLog>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    let metrics_fn: MetricsFn = {
        let m = Arc::clone(metrics);
        Arc::new(move || {
            let text = m.encode();
            // Gathering builds a metric object per series (tens of thousands with
            // thousands of policies): give that memory back instead of keeping it.
            crate::agent::return_free_memory();
            text
        })
    };
    let audit_fn: Option<AuditFn> = audit.map(|log| {
        let f: AuditFn = Arc::new(move |r: RequestAudit| {
            log.append(&request_event(&r))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        f
    });
    let control: Arc<dyn Control> = Arc::new(agent.clone());
    tokio::spawn(server::serve(
        listener,
        control,
        Arc::new(auth),
        metrics_fn,
        audit_fn,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ))
}

/// SIGTERM and SIGINT stop the agent (through `stop`); SIGHUP reloads its policies.
fn watch_signals(agent: Agent, stop: watch::Sender<bool>) -> JoinHandle<()> {
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
        let _ = stop.send(true);
    })
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
