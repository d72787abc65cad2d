//! The command line: `validate`, `plan`, `rotate`, `resume`, `run`, `status`, `release`, `approve`, `retire`, `enable`, `audit verify`. Each command prints human text or,
//! with `-o json`, one JSON document on stdout; logs go to stderr. Exit status is 0 on
//! success, 1 on any failure (including "old credential still accepted"), 2 on usage
//! errors (clap), 3 when the agent refuses an approval (`rotor approve`: 403 not an
//! approver or the requester's own request, 410 expired, superseded or used).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use secrecy::SecretString;
use tracing_subscriber::EnvFilter;

use crate::consumers::Consumers;
use crate::engine::{Engine, EngineConfig, Rotation, RotationOutcome, RotationRequest, Trigger};
use crate::policy::{self, PolicySet, ValidatedPolicy};
use crate::vault::{Vault, VaultAuth, VaultAuthSettings, VaultConfig};

/// rotor: rotates non-human credentials through Vault to their consumers and proves
/// the old secret is rejected.
#[derive(Debug, Parser)]
#[command(name = "rotor", version, about)]
pub struct Cli {
    /// Output format of results.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More log detail on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Limit on each call to an outside system (the Kubernetes API, Vault, GitLab,
    /// GitHub, webhooks, the targets): a connect, a request, a statement. A call that
    /// runs into it fails as a retryable `timeout` and is counted in
    /// `rotor_outside_call_timeouts_total{system}`. From 100ms to 1h.
    #[arg(long, global = true, env = crate::outside::ENV_CALL_TIMEOUT, default_value = "30s", value_parser = parse_call_timeout)]
    pub call_timeout: std::time::Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and validate policies; print every error with file:line:col and field path.
    Validate {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show what rotations would touch and when; changes nothing.
    Plan {
        /// Policy directory (or file); repeatable.
        #[arg(long = "policies", required = true)]
        policies: Vec<PathBuf>,
        /// Only this policy.
        name: Option<String>,
        /// How many upcoming fire times to list.
        #[arg(short = 'n', default_value_t = 3)]
        count: usize,
    },
    /// Rotate one credential now, step by step, with verification.
    Rotate(RotateArgs),
    /// Finish or roll back interrupted rotations (what the agent does at start-up);
    /// starts nothing new.
    Resume {
        /// Policy directory (or file); repeatable.
        #[arg(long = "policies", required = true)]
        policies: Vec<PathBuf>,
        /// Only this policy (default: every policy).
        name: Option<String>,
        /// Wait up to this long (e.g. `90s`, `10m`) for an old credential's grace
        /// period to end, then revoke and verify it; default: do not wait.
        #[arg(long, value_parser = parse_wait)]
        wait_grace: Option<std::time::Duration>,
        /// Vault connection.
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// The agent: schedules, the on-demand API, /metrics, /healthz, /readyz.
    Run(RunArgs),
    /// Last rotation, age, next due and pending consumers, per policy.
    Status {
        /// A running agent's base URL; without it, read the journal in Vault.
        #[arg(long)]
        server: Option<url::Url>,
        /// File holding the API token (default: ROTOR_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Policy directory (or file), to read the journal locally.
        #[arg(long = "policies", required_unless_present = "server")]
        policies: Vec<PathBuf>,
        /// Only this policy.
        name: Option<String>,
        /// Vault connection (local mode).
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Lift a policy's quarantine in a running agent (which holds that state).
    Release {
        /// The policy.
        name: String,
        /// Why (recorded in the audit trail; required).
        #[arg(long)]
        reason: String,
        /// The running agent's base URL.
        #[arg(long)]
        server: url::Url,
        /// File holding the API token (default: ROTOR_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Approve a pending on-demand rotation request in a running agent (four eyes);
    /// exits 3 when the agent refuses (not an approver, own request, expired,
    /// superseded, already used).
    Approve {
        /// The request id (printed by `rotor rotate --server`).
        id: String,
        /// Why (recorded with the approval).
        #[arg(long)]
        reason: Option<String>,
        /// The running agent's base URL.
        #[arg(long)]
        server: url::Url,
        /// File holding the API token (default: ROTOR_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Offboard a credential: disable it on its target, remove it from every consumer,
    /// mark Vault's copy retired (every version kept) and prove the target refuses it,
    /// each step journaled in Vault first. The policy then stays inactive (no rotation)
    /// until `rotor enable`.
    Retire(RetireArgs),
    /// Enable a retired policy again: a rotation to a new credential that works.
    Enable(RetireArgs),
    /// Audit-log tools.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `rotor audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log; name the first bad record.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
    },
}

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

fn parse_selector(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not a label=value pair"))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    if out.is_empty() {
        return Err("an empty selector would select every policy; name the labels".into());
    }
    Ok(out)
}

fn parse_call_timeout(text: &str) -> Result<std::time::Duration, String> {
    let limit = parse_wait(text)?;
    if !(crate::outside::MIN_CALL_TIMEOUT..=crate::outside::MAX_CALL_TIMEOUT).contains(&limit) {
        return Err(format!("{text:?} is outside 100ms..1h"));
    }
    Ok(limit)
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    policy::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 90s, 10m or 1h"))
}

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
    /// Who is asking (default: the OS user).
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
}

/// Arguments of `rotor retire` and `rotor enable`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The policy.
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
    /// Who is asking (default: the OS user; with --server, the token's identity).
    #[arg(long)]
    pub actor: Option<String>,
    /// Vault connection.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Vault flags; each overrides its environment variable.
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// Vault address [env: VAULT_ADDR].
    #[arg(long)]
    pub vault_addr: Option<String>,
    /// Vault namespace [env: VAULT_NAMESPACE].
    #[arg(long)]
    pub vault_namespace: Option<String>,
    /// CA bundle for Vault's TLS certificate [env: VAULT_CACERT].
    #[arg(long)]
    pub vault_cacert: Option<PathBuf>,
    /// File holding the Vault token (default: VAULT_TOKEN, then ~/.vault-token).
    #[arg(long)]
    pub vault_token_file: Option<PathBuf>,
    /// How to log in to Vault [env: ROTOR_VAULT_AUTH_METHOD; default: token]. With
    /// `kubernetes` or `approle`, rotor logs in itself (see ROTOR_VAULT_ROLE_ID_FILE,
    /// ROTOR_VAULT_SECRET_ID_FILE, ROTOR_VAULT_JWT_FILE) and `rotor run` keeps the
    /// token alive.
    #[arg(long, value_parser = ["token", "kubernetes", "approle"])]
    pub vault_auth_method: Option<String>,
    /// Vault role for Kubernetes auth [env: ROTOR_VAULT_ROLE].
    #[arg(long)]
    pub vault_role: Option<String>,
    /// Mount path of the auth method [env: ROTOR_VAULT_AUTH_MOUNT; default: the
    /// method's name].
    #[arg(long)]
    pub vault_auth_mount: Option<String>,
    /// KV v2 mount holding rotor's journal and staging values.
    #[arg(long, default_value = "secret")]
    pub state_mount: String,
}

impl VaultArgs {
    fn config(&self) -> anyhow::Result<VaultConfig> {
        let mut c = VaultConfig::from_env();
        if let Some(a) = &self.vault_addr {
            c.addr = a.clone();
        }
        if let Some(n) = &self.vault_namespace {
            c.namespace = Some(n.clone());
        }
        if let Some(ca) = &self.vault_cacert {
            c.ca_cert = Some(ca.clone());
        }
        let mut auth = VaultAuthSettings::from_env();
        if let Some(m) = &self.vault_auth_method {
            auth.method = Some(m.clone());
        }
        if let Some(r) = &self.vault_role {
            auth.role = Some(r.clone());
        }
        if let Some(m) = &self.vault_auth_mount {
            auth.mount = Some(m.clone());
        }
        c.auth = auth.build()?;
        if let Some(f) = &self.vault_token_file {
            if c.auth != VaultAuth::Token {
                anyhow::bail!(
                    "--vault-token-file is for token auth, but the auth method is {}",
                    c.auth.method()
                );
            }
            let text = std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("reading the Vault token file {}: {e}", f.display())
            })?;
            c.token = Some(SecretString::from(text.trim().to_owned()));
        }
        Ok(c)
    }
}

/// Sets up logging on stderr: RUST_LOG (or the `-v` level), under a hard cap on
/// other crates' logs that no directive lifts, with control characters escaped in the
/// text format (see [`crate::logging`]).
pub fn init_tracing(verbose: u8, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let layer = crate::logging::layer(
        filter,
        format,
        std::io::stderr,
        crate::logging::stderr_is_terminal(),
    );
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    // Before any client is built: every client takes its limit from here.
    crate::outside::set_call_timeout(cli.call_timeout);
    let output = cli.output;
    let result = match cli.command {
        Command::Validate { paths } => validate(&paths, output),
        Command::Plan {
            policies,
            name,
            count,
        } => plan(&policies, name.as_deref(), count, output),
        Command::Rotate(args) => rotate(args, output).await,
        Command::Resume {
            policies,
            name,
            wait_grace,
            vault,
        } => resume(&policies, name.as_deref(), wait_grace, &vault, output).await,
        Command::Run(args) => run_agent(args).await,
        Command::Status {
            server,
            token_file,
            policies,
            name,
            vault,
        } => {
            status(
                server,
                token_file,
                &policies,
                name.as_deref(),
                &vault,
                output,
            )
            .await
        }
        Command::Release {
            name,
            reason,
            server,
            token_file,
        } => release(&server, token_file, &name, &reason, output).await,
        Command::Approve {
            id,
            reason,
            server,
            token_file,
        } => approve(&server, token_file, &id, reason.as_deref(), output).await,
        Command::Retire(args) => retire(args, false, output).await,
        Command::Enable(args) => retire(args, true, output).await,
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => Ok(crate::agent::command::audit_verify(
            &file,
            output == Output::Json,
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if output == Output::Json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(paths: &[PathBuf]) -> anyhow::Result<PolicySet> {
    policy::load_paths(paths).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "the policies are invalid ({} error(s)):\n{}",
            lines.len(),
            lines.join("\n")
        )
    })
}

/// The named policy, or all of them.
fn select<'a>(set: &'a PolicySet, name: Option<&str>) -> anyhow::Result<Vec<&'a ValidatedPolicy>> {
    match name {
        Some(n) => Ok(vec![set.get(n).ok_or_else(|| {
            anyhow::anyhow!("no policy named {n:?} in the given paths")
        })?]),
        None => Ok(set.iter().collect()),
    }
}

fn validate(paths: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    match policy::load_paths(paths) {
        Ok(set) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "valid": true, "policies": set.len() })
                ),
                Output::Text => println!("{} policies valid", set.len()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "valid": false, "errors": errors.0 })
                ),
                Output::Text => {
                    for e in &errors.0 {
                        println!("{e}");
                    }
                    println!("{} error(s)", errors.0.len());
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn plan(
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

fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn engine(
    args: &VaultArgs,
    wait_grace: Option<std::time::Duration>,
) -> anyhow::Result<Engine> {
    // Logs in once; `rotor run` then keeps the token alive (agent::command::run).
    let vault = Vault::login(&args.config()?).await?;
    let config = EngineConfig {
        state_mount: args.state_mount.clone(),
        grace_wait: wait_grace.unwrap_or_default(),
        ..EngineConfig::default()
    };
    Ok(Engine::new(vault, config, Consumers::new()).await?)
}

async fn resume(
    paths: &[PathBuf],
    name: Option<&str>,
    wait_grace: Option<std::time::Duration>,
    vault: &VaultArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let set = load(paths)?;
    let selected = select(&set, name)?;
    let engine = engine(vault, wait_grace).await?;
    let mut resumed = Vec::new();
    let mut ok = true;
    for policy in selected {
        if let Some(r) = engine.resume(policy).await? {
            ok &= r.waiting_for_grace()
                || matches!(
                    r.status,
                    crate::engine::Status::Completed | crate::engine::Status::RolledBack
                );
            resumed.push(r);
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::json!({ "resumed": resumed })),
        Output::Text if resumed.is_empty() => println!("no interrupted rotations"),
        Output::Text => {
            for r in &resumed {
                print_rotation(r);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    let set = load(&args.policies)?;
    let engine = engine(&args.vault, None).await?;
    let vault = engine.vault().clone();
    crate::agent::command::run(
        engine,
        set,
        crate::agent::command::RunOptions {
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

async fn status(
    server: Option<url::Url>,
    token_file: Option<PathBuf>,
    paths: &[PathBuf],
    name: Option<&str>,
    vault: &VaultArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let views: Vec<serde_json::Value> = match server {
        Some(base) => {
            let token = crate::agent::command::api_token(token_file.as_deref())?;
            crate::server::remote_policies(&base, &token)
                .await?
                .into_iter()
                .filter(|v| name.is_none_or(|n| v.name == n))
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?
        }
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
                        .filter(|c| c.state == "pending").map(|c| c.consumer.clone()).collect::<Vec<_>>()).unwrap_or_default(),
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

async fn release(
    base: &url::Url,
    token_file: Option<PathBuf>,
    name: &str,
    reason: &str,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let token = crate::agent::command::api_token(token_file.as_deref())?;
    crate::server::remote_release(base, &token, name, reason).await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "policy": name, "state": "released" })
        ),
        Output::Text => println!("released {name}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `rotor approve ID --server URL`: 0 when recorded (and the rotation queued once
/// enough approvals are in), 3 when the agent refuses (403, 410), 1 otherwise.
async fn approve(
    base: &url::Url,
    token_file: Option<PathBuf>,
    id: &str,
    reason: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let token = crate::agent::command::api_token(token_file.as_deref())?;
    let accepted = match crate::server::remote_approve(base, &token, id, reason).await {
        Ok(a) => a,
        Err(e) if matches!(e.status(), Some(403 | 410)) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "request_id": id, "refused": true, "error": e.to_string() })
                );
            }
            eprintln!("refused: {e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string(&accepted)?),
        Output::Text if accepted.state == "pending_approval" => println!(
            "approved request {id} ({} of {} approvals); it waits for more until {}",
            accepted.approvals.unwrap_or_default(),
            accepted.required.unwrap_or_default(),
            accepted.expires_at.as_deref().unwrap_or("?")
        ),
        Output::Text => println!(
            "approved request {id}: the rotation is {}{}",
            accepted.state,
            accepted
                .rotation_id
                .as_deref()
                .map(|r| format!(" (rotation {r})"))
                .unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate(args: RotateArgs, output: Output) -> anyhow::Result<ExitCode> {
    if let (Some(base), Some(selector)) = (&args.server, &args.selector) {
        let token = crate::agent::command::api_token(args.token_file.as_deref())?;
        let answer = crate::server::remote_rotate_selected(
            base,
            &token,
            selector,
            args.reason.as_deref(),
            args.ticket.as_deref(),
            args.compromise,
        )
        .await?;
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
        return Ok(if answer.refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if let Some(base) = &args.server {
        let token = crate::agent::command::api_token(args.token_file.as_deref())?;
        let accepted = crate::server::remote_rotate(
            base,
            &token,
            args.name.as_deref().unwrap_or_default(),
            args.reason.as_deref(),
            args.ticket.as_deref(),
            args.compromise,
        )
        .await?;
        match output {
            Output::Json => println!("{}", serde_json::to_string(&accepted)?),
            Output::Text if accepted.state == "pending_approval" => println!(
                "policy {} requires approval: request {} waits for {} approval(s) until {}; approve with `rotor approve {} --server {base}`",
                args.name.as_deref().unwrap_or_default(),
                accepted.request_id.as_deref().unwrap_or("?"),
                accepted.required.unwrap_or_default(),
                accepted.expires_at.as_deref().unwrap_or("?"),
                accepted.request_id.as_deref().unwrap_or("ID"),
            ),
            Output::Text => println!(
                "the agent at {base} {} the rotation of {}{}",
                accepted.state,
                args.name.as_deref().unwrap_or_default(),
                accepted
                    .rotation_id
                    .as_deref()
                    .map(|id| format!(" (rotation {id})"))
                    .unwrap_or_default()
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let set = load(&args.policies)?;
    let request = RotationRequest {
        trigger: if args.compromise {
            Trigger::Compromise
        } else {
            Trigger::OnDemand
        },
        actor: args.actor.clone().unwrap_or_else(default_actor),
        reason: args.reason.clone(),
        ticket: args.ticket.clone(),
        ..Default::default()
    };
    if let Some(selector) = &args.selector {
        return rotate_selected(&set, selector, &args, request, output).await;
    }
    let name = args.name.as_deref().unwrap_or_default();
    let policy = set
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no policy named {name:?} in the given paths"))?;
    let engine = engine(&args.vault, args.wait_grace).await?;
    let outcome = engine.rotate(policy, request.clone()).await?;
    // `spec.cascade`: dependents rotate under the same trigger once this one promoted,
    // their reason naming the rotation that caused them.
    let mut cascaded: Vec<(String, Result<RotationOutcome, String>)> = Vec::new();
    if outcome.succeeded() {
        let parent = outcome
            .rotation
            .as_ref()
            .map(|r| r.rotation_id.clone())
            .unwrap_or_default();
        let mut queue: std::collections::VecDeque<(String, String, String)> = policy
            .spec
            .cascade
            .iter()
            .map(|d| (d.clone(), policy.name.clone(), parent.clone()))
            .collect();
        let mut done = std::collections::BTreeSet::from([policy.name.clone()]);
        while let Some((dep, from, from_id)) = queue.pop_front() {
            if !done.insert(dep.clone()) {
                continue;
            }
            let Some(p) = set.get(&dep) else { continue };
            let mut req = request.clone();
            req.reason = Some(format!(
                "cascade from {from} (rotation {from_id}): {}",
                request.reason.as_deref().unwrap_or("")
            ));
            let r = engine
                .rotate(p, req)
                .await
                .map_err(|e| crate::error_chain(&e));
            if let Ok(o) = &r
                && o.succeeded()
            {
                let id = o
                    .rotation
                    .as_ref()
                    .map(|r| r.rotation_id.clone())
                    .unwrap_or_default();
                queue.extend(
                    p.spec
                        .cascade
                        .iter()
                        .map(|d| (d.clone(), dep.clone(), id.clone())),
                );
            }
            cascaded.push((dep, r));
        }
    }
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
async fn rotate_selected(
    set: &PolicySet,
    selector: &std::collections::BTreeMap<String, String>,
    args: &RotateArgs,
    request: RotationRequest,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let selected: Vec<&ValidatedPolicy> = set
        .iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .collect();
    if selected.is_empty() {
        anyhow::bail!("no policy has the labels {selector:?}");
    }
    let engine = std::sync::Arc::new(engine(&args.vault, args.wait_grace).await?);
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
fn outcome_json(name: &str, r: &Result<RotationOutcome, String>) -> serde_json::Value {
    match r {
        Ok(o) => serde_json::json!({"policy": name, "succeeded": o.succeeded(), "outcome": o}),
        Err(e) => serde_json::json!({"policy": name, "succeeded": false, "error": e}),
    }
}

fn print_outcome(outcome: &RotationOutcome) {
    if let Some(r) = &outcome.resumed {
        println!("resumed an interrupted rotation first:");
        print_rotation(r);
        println!();
    }
    if let Some(r) = &outcome.rotation {
        print_rotation(r);
    }
}

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
        let outcome = serde_json::to_value(s.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
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
        for v in &r.verification {
            println!(
                "  {:<24} {}  {}",
                v.check,
                if v.passed { "PASS" } else { "FAIL" },
                v.evidence
            );
        }
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
            r.revoke_after.as_deref().unwrap_or("?")
        ),
        None => println!("result: {}", r.status.as_str()),
    }
}

/// `rotor retire` (`enable: false`) and `rotor enable`, locally or through an agent.
/// Exit 0 only when the policy ended `retired` (or `enabled` with a rotation that
/// completed).
async fn retire(args: RetireArgs, enable: bool, output: Output) -> anyhow::Result<ExitCode> {
    if let Some(base) = &args.server {
        let token = crate::agent::command::api_token(args.token_file.as_deref())?;
        let ticket = args.ticket.as_deref();
        let answer = if enable {
            let enabled =
                crate::server::remote_enable(base, &token, &args.name, &args.reason, ticket);
            serde_json::to_value(enabled.await?)?
        } else {
            let retired =
                crate::server::remote_retire(base, &token, &args.name, &args.reason, ticket);
            serde_json::to_value(retired.await?)?
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
    let engine = engine(&args.vault, None).await?;
    let request = crate::engine::RetireRequest {
        actor: args.actor.clone().unwrap_or_else(default_actor),
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints a retirement record for people.
fn print_retirement(r: &crate::engine::Retirement) {
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
        let outcome = serde_json::to_value(s.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
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
    for v in &r.verification {
        println!(
            "  {:<28} {}  {}",
            v.check,
            if v.passed { "PASS" } else { "FAIL" },
            v.evidence
        );
    }
    if let Some(e) = &r.enable {
        println!(
            "  enable by {} ({}): {}{}",
            e.actor,
            e.reason,
            e.finished_at
                .as_deref()
                .map(|t| format!("enabled at {t}"))
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
