//! The command line: `validate`, `crd`, `plan`, `rotate`, `resume`, `run`, `status`, `release`, `approve`, `retire`, `enable`, `audit verify`. Each command prints human text or,
//! with `-o json`, one JSON document on stdout; logs go to stderr. Exit status is 0 on
//! success, 1 on any failure (including "old credential still accepted"), 2 on usage
//! errors (clap), 3 when the agent refuses an approval (`rotor approve`: 403 not an
//! approver or the requester's own request, 410 expired, superseded or used).

//!
//! One file per subcommand; [`target`] holds what they share: the Vault flags, the
//! local engine with its evidence ([`target::Local`]) and a running agent's API
//! ([`target::Remote`]).

mod approve;
mod audit;
mod plan;
mod print;
mod release;
mod resume;
mod retire;
mod rotate;
mod run;
mod status;
mod target;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::policy::{self, PolicySet, ValidatedPolicy};

pub use self::print::print_rotation;
pub use self::retire::RetireArgs;
pub use self::rotate::RotateArgs;
pub use self::run::RunArgs;
pub use self::target::{AuditArgs, VaultArgs};
pub use crate::logging::LogFormat;

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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and validate policies; print every error with file:line:col and field path.
    Validate {
        /// Policy files or directories (`rotor/v1` policies and `rotor.dev/v1`
        /// RotationPolicy manifests alike).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the RotationPolicy CustomResourceDefinition (YAML; JSON with `-o json`),
    /// e.g. `rotor crd | kubectl apply -f -`.
    Crd,
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
        /// Audit log.
        #[command(flatten)]
        audit: AuditArgs,
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
    /// Lift a policy's quarantine: in a running agent (--server), or in Vault, where
    /// the agent keeps it and reads it back.
    Release {
        /// The policy's name (`metadata.name`).
        name: String,
        /// Why (recorded in the audit trail; required).
        #[arg(long)]
        reason: String,
        /// A running agent's base URL; without it, act on Vault directly.
        #[arg(long)]
        server: Option<url::Url>,
        /// File holding the API token (default: ROTOR_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Who is asking (local mode; default: `vault:<display name>`).
        #[arg(long)]
        actor: Option<String>,
        /// Vault connection (local mode).
        #[command(flatten)]
        vault: VaultArgs,
        /// Audit log (local mode).
        #[command(flatten)]
        audit: AuditArgs,
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
        Command::Validate { paths } => validate::validate(&paths, output),
        Command::Crd => validate::crd(output),
        Command::Plan {
            policies,
            name,
            count,
        } => plan::plan(&policies, name.as_deref(), count, output),
        Command::Rotate(args) => rotate::rotate(args, output).await,
        Command::Resume {
            policies,
            name,
            wait_grace,
            vault,
            audit,
        } => {
            resume::resume(
                &policies,
                name.as_deref(),
                wait_grace,
                &vault,
                &audit,
                output,
            )
            .await
        }
        Command::Run(args) => run::run_agent(args).await,
        Command::Status {
            server,
            token_file,
            policies,
            name,
            vault,
        } => {
            status::status(
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
            server: Some(server),
            token_file,
            ..
        } => release::release(&server, token_file, &name, &reason, output).await,
        Command::Release {
            name,
            reason,
            server: None,
            actor,
            vault,
            audit,
            ..
        } => release::release_local(&name, &reason, actor, &vault, &audit, output).await,
        Command::Approve {
            id,
            reason,
            server,
            token_file,
        } => approve::approve(&server, token_file, &id, reason.as_deref(), output).await,
        Command::Retire(args) => retire::retire(args, false, output).await,
        Command::Enable(args) => retire::retire(args, true, output).await,
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => Ok(audit::audit_verify(&file, output == Output::Json)),
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

/// Loads and validates the policies at `paths`, all errors in one message.
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
