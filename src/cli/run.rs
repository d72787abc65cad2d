//! `rotor run`: the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::target::{VaultArgs, engine};
use super::{load, parse_wait};

/// Arguments of `rotor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy directory (or file); repeatable. Reloaded on SIGHUP and on change.
    #[arg(long = "policies", required = true)]
    pub policies: Vec<PathBuf>,
    /// Address of the API, /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub listen: std::net::SocketAddr,
    /// Append-only, hash-chained audit log (JSON lines).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Identities allowed to use the API (YAML).
    #[arg(long)]
    pub auth_config: Option<PathBuf>,
    /// Rotations running at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also notify this URL of every rotation outcome (signed JSON, no secrets;
    /// see the README); needs --notify-secret-file.
    #[arg(long, requires = "notify_secret_file")]
    pub notify_url: Option<url::Url>,
    /// File holding the HMAC key that signs --notify-url deliveries.
    #[arg(long, requires = "notify_url")]
    pub notify_secret_file: Option<PathBuf>,
    /// Run several replicas: only the holder of a Kubernetes Lease schedules and
    /// rotates; the others serve health and metrics and take over when it goes away.
    #[arg(long)]
    pub leader_election: bool,
    /// Name of the Lease (with --leader-election).
    #[arg(long, default_value = "rotor")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// How long the leader's last renewal holds the Lease (whole seconds, at least 2s).
    #[arg(long, default_value = "15s", value_parser = parse_wait)]
    pub lease_duration: std::time::Duration,
    /// How long an on-demand request waits for approval when its policy's
    /// `onDemand.approval` sets no `ttl`.
    #[arg(long, default_value = "2h", value_parser = parse_wait)]
    pub approval_ttl: std::time::Duration,
    /// Vault connection.
    #[command(flatten)]
    pub vault: VaultArgs,
}

pub(super) async fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    let set = load(&args.policies)?;
    let engine = engine(&args.vault, None).await?;
    let vault = engine.vault().clone();
    crate::app::run_agent(
        engine,
        set,
        crate::app::RunOptions {
            listen: args.listen,
            audit_log: args.audit_log,
            auth_config: args.auth_config,
            leader: args.leader_election.then(|| crate::leader::LeaderConfig {
                lease_name: args.lease_name,
                namespace: args
                    .lease_namespace
                    .unwrap_or_else(crate::leader::default_namespace),
                identity: crate::leader::default_identity(),
                duration: args.lease_duration,
            }),
            agent: crate::agent::AgentConfig {
                concurrency: args.concurrency,
                policy_paths: args.policies,
                notify: match (args.notify_url, args.notify_secret_file) {
                    (Some(url), Some(key)) => vec![crate::policy::NotifyTarget {
                        url,
                        secret_from: crate::policy::Reference::File(key),
                        events: crate::policy::NotifyEvent::ALL.to_vec(),
                    }],
                    _ => Vec::new(),
                },
                vault: Some(vault),
                approval_ttl: args.approval_ttl,
                ..crate::agent::AgentConfig::default()
            },
        },
    )
    .await
}
