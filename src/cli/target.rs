//! What the subcommands share: the Vault flags, the audit log of local commands, and
//! the local engine that reports to it.

use std::path::PathBuf;

use clap::Args;
use secrecy::SecretString;

use crate::engine::{Asker, Engine, RotationRequest, Trigger};
use crate::server::AgentClient;
use crate::vault::{VaultAuth, VaultAuthSettings, VaultConfig};

/// Where a local command that changes something writes its audit records.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The audit log this command appends to (hash-chained, created with mode 0600)
    /// [default: $XDG_STATE_HOME/rotor/audit.jsonl, else
    /// ~/.local/state/rotor/audit.jsonl]. Nothing starts when it cannot be written.
    #[arg(long = "audit-log", env = crate::evidence::AUDIT_LOG_ENV)]
    pub audit_log: Option<PathBuf>,
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
    /// The Vault connection and login settings: the environment, overridden by the flags.
    pub(super) fn config(&self) -> anyhow::Result<VaultConfig> {
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

/// What a local command that changes something works with: an engine that reports
/// to this command's evidence, and the operator as Vault names them.
pub(super) struct Local {
    pub(super) engine: std::sync::Arc<Engine>,
    pub(super) evidence: std::sync::Arc<crate::evidence::Evidence>,
    pub(super) operator: crate::evidence::VaultIdentity,
}

impl Local {
    /// Logs in, asks Vault who the token belongs to, and builds the engine with the
    /// same evidence as the agent's: audit records (to `audit`) and the policies'
    /// notifications.
    pub(super) async fn new(
        vault: &VaultArgs,
        audit: &AuditArgs,
        wait_grace: Option<std::time::Duration>,
    ) -> anyhow::Result<Local> {
        let path = crate::evidence::cli_audit_path(audit.audit_log.as_deref())
            .map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
        let engine = engine(vault, wait_grace).await?;
        let operator = crate::evidence::vault_identity(engine.vault())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "asking Vault who the token belongs to (auth/token/lookup-self): {e}"
                )
            })?;
        let evidence = std::sync::Arc::new(
            crate::evidence::Evidence::new()
                .with_audit(crate::evidence::AuditTarget::PerRecord(path))
                .with_notifier(crate::notify::Notifier::new(
                    Some(engine.vault().clone()),
                    Vec::new(),
                )),
        );
        let engine = std::sync::Arc::new(engine.with_evidence(evidence.clone()));
        Ok(Local {
            engine,
            evidence,
            operator,
        })
    }

    /// A rotation request by the operator (`actor` overrides the name recorded).
    pub(super) fn request(&self, trigger: Trigger, actor: Option<&str>) -> RotationRequest {
        RotationRequest {
            trigger,
            asker: self.asker(actor),
            ..Default::default()
        }
    }

    /// The operator as the asker (`actor` overrides the name recorded; Vault's answer
    /// is recorded either way).
    pub(super) fn asker(&self, actor: Option<&str>) -> Asker {
        Asker {
            actor: actor.map_or_else(|| self.operator.actor(), str::to_owned),
            authenticated_by: crate::evidence::AuthMethod::VaultToken,
            vault_identity: Some(self.operator.clone()),
        }
    }

    /// Waits for the notifications sent so far, before the command exits.
    pub(super) async fn finish(&self) {
        self.evidence.flush().await;
    }
}

/// Logs in and builds the engine ([`crate::app::engine`]) with these flags.
pub(super) async fn engine(
    args: &VaultArgs,
    wait_grace: Option<std::time::Duration>,
) -> anyhow::Result<Engine> {
    crate::app::engine(&args.config()?, &args.state_mount, wait_grace).await
}

/// A running agent's API at `base`, with the bearer token (`--token-file`, else
/// `ROTOR_TOKEN`) read now: a missing token is an error before anything is sent.
pub(super) fn connect(
    base: &url::Url,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<AgentClient> {
    Ok(AgentClient::new(base.clone(), api_token(token_file)?))
}

/// The API token for `--server` calls: `--token-file`, else `ROTOR_TOKEN`.
fn api_token(file: Option<&std::path::Path>) -> anyhow::Result<SecretString> {
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
