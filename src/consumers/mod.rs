//! Consumers, one module each, dispatched by [`Consumers::push`]: render the
//! policy's templates from the credential's keys, push the result, read it back.

pub mod file;
pub mod github;
pub mod gitlab;
pub mod kubernetes;
pub mod vault_kv;

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::policy::{ConsumerSpec, Template};
use crate::secret::{Fingerprinter, SecretMap, SecretString};
use crate::vault::Vault;

use self::file::FileError;
use self::github::{GithubClient, GithubError};
use self::gitlab::{GitlabClient, GitlabError};
use self::kubernetes::{KubernetesConsumerClient, KubernetesError};
use self::vault_kv::VaultKvError;

/// A failed push to one consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A template could not be rendered (a variable the credential did not provide).
    #[error("rendering {key}: {detail}")]
    Render {
        /// The data key whose template failed.
        key: String,
        /// Which variable was missing (never a value).
        detail: String,
    },
    /// No Kubernetes client could be configured (kubeconfig / in-cluster).
    #[error("cannot configure a Kubernetes client: {0}")]
    KubeConfig(String),
    /// The Kubernetes API failed.
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    /// The extra Vault KV copy failed.
    #[error(transparent)]
    VaultKv(#[from] VaultKvError),
    /// The file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The GitLab API failed.
    #[error(transparent)]
    Gitlab(#[from] GitlabError),
    /// The GitHub API failed.
    #[error(transparent)]
    Github(#[from] GithubError),
    /// A consumer's token reference could not be resolved.
    #[error("resolving {what}: {detail}")]
    Token {
        /// Which field (`tokenFrom`).
        what: &'static str,
        /// Why (never a value).
        detail: String,
        /// Whether retrying may help (Vault unreachable).
        transient: bool,
    },
}

impl ConsumerError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsumerError::Render { .. } => "render",
            ConsumerError::KubeConfig(_) => "kube_config",
            ConsumerError::Kubernetes(e) => e.kind(),
            ConsumerError::VaultKv(e) => e.kind(),
            ConsumerError::File(e) => e.kind(),
            ConsumerError::Gitlab(e) => e.kind(),
            ConsumerError::Github(e) => e.kind(),
            ConsumerError::Token { .. } => "token_reference",
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsumerError::Kubernetes(e) => e.is_transient(),
            ConsumerError::VaultKv(e) => e.is_transient(),
            ConsumerError::File(e) => e.is_transient(),
            ConsumerError::Gitlab(e) => e.is_transient(),
            ConsumerError::Github(e) => e.is_transient(),
            ConsumerError::Token { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// What one push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    /// Whether the value there changed.
    pub changed: bool,
    /// Whether it was read back and matched.
    pub verified: bool,
    /// Workloads restarted.
    pub restarted: Vec<String>,
}

/// The clients of every consumer type, created on first use.
#[derive(Default)]
pub struct Consumers {
    kube: OnceCell<KubernetesConsumerClient>,
    gitlab: OnceCell<GitlabClient>,
    github: OnceCell<GithubClient>,
}

impl Consumers {
    /// No clients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `client` for Kubernetes consumers instead of the kubeconfig.
    pub fn with_kube_client(client: kube::Client) -> Self {
        Consumers {
            kube: OnceCell::new_with(Some(KubernetesConsumerClient::new(client))),
            ..Consumers::default()
        }
    }

    async fn kube(&self) -> Result<&KubernetesConsumerClient, ConsumerError> {
        self.kube
            .get_or_try_init(|| async {
                let client = crate::outside::kube_client()
                    .await
                    .map_err(|e| ConsumerError::KubeConfig(e.to_string()))?;
                Ok(KubernetesConsumerClient::new(client))
            })
            .await
    }

    /// Renders `spec`'s templates from `vars` and pushes them. `vault` resolves the
    /// references consumers need (CI tokens) and holds `vault-kv` copies.
    pub async fn push(
        &self,
        spec: &ConsumerSpec,
        vars: &SecretMap,
        fingerprints: &Fingerprinter,
        vault: &Vault,
    ) -> Result<PushOutcome, ConsumerError> {
        match spec {
            ConsumerSpec::Kubernetes(k) => {
                let rendered = render_map(&k.data, vars)?;
                let hash = fingerprints.fingerprint_map(&rendered);
                let report = self.kube().await?.push(k, &rendered, &hash).await?;
                Ok(PushOutcome {
                    changed: report.changed,
                    verified: report.verified,
                    restarted: report.restarted,
                })
            }
            ConsumerSpec::VaultKv(c) => {
                let rendered = render_map(&c.data, vars)?;
                let r = vault_kv::push(vault, c, &rendered).await?;
                Ok(PushOutcome::written(r.changed, r.verified))
            }
            ConsumerSpec::File(c) => {
                let content = render(&c.content, vars, "content")?;
                let r = file::push(c, &content).await?;
                Ok(PushOutcome::written(r.changed, r.verified))
            }
            ConsumerSpec::Gitlab(c) => {
                let (token, value) = ci_inputs(vault, &c.token_from, &c.value, vars).await?;
                let client = self
                    .gitlab
                    .get_or_try_init(|| async { GitlabClient::new() })
                    .await?;
                let r = client.push(c, &token, &value).await?;
                Ok(PushOutcome::written(r.changed, r.verified))
            }
            ConsumerSpec::Github(c) => {
                let (token, value) = ci_inputs(vault, &c.token_from, &c.value, vars).await?;
                let client = self
                    .github
                    .get_or_try_init(|| async { GithubClient::new() })
                    .await?;
                let r = client.push(c, &token, &value).await?;
                Ok(PushOutcome::written(r.changed, r.verified))
            }
        }
    }
}

/// What one [`Consumers::remove`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveOutcome {
    /// Whether something rotor wrote was there and is now removed (false: already gone).
    pub removed: bool,
    /// Whether the removal was read back (always, on success: every consumer type can
    /// prove a key or file is absent).
    pub verified: bool,
    /// What was done, for people (names keys, never values).
    pub detail: String,
}

impl Consumers {
    /// Removes what rotor pushed to `spec` for a retired policy, and proves it gone:
    ///
    /// - `kubernetes`: the policy's keys leave the Secret; the Secret is deleted when
    ///   nothing else is left and only rotor ever managed it;
    /// - `gitlab`: `DELETE` of the variable in its environment scope (404: gone);
    /// - `github`: `DELETE` of the Actions secret (404: gone);
    /// - `vault-kv`: a new version without the policy's keys (check-and-set), earlier
    ///   versions kept;
    /// - `file`: the file is removed.
    ///
    /// Idempotent: removing twice finds nothing the second time.
    pub async fn remove(
        &self,
        spec: &ConsumerSpec,
        vault: &Vault,
    ) -> Result<RemoveOutcome, ConsumerError> {
        let done = |removed: bool, detail: String| RemoveOutcome {
            removed,
            verified: true,
            detail,
        };
        match spec {
            ConsumerSpec::Kubernetes(k) => {
                let r = self.kube().await?.remove(k).await?;
                let keys = if r.removed_keys.is_empty() {
                    "no key of the policy was there".to_owned()
                } else {
                    format!("keys {} removed", r.removed_keys.join(", "))
                };
                let secret = if r.deleted {
                    "; the Secret was empty and only rotor's, so it was deleted"
                } else {
                    ""
                };
                Ok(done(
                    !r.removed_keys.is_empty() || r.deleted,
                    format!("{keys}{secret}"),
                ))
            }
            ConsumerSpec::VaultKv(c) => {
                let n = vault_kv::remove(vault, c).await?;
                Ok(done(
                    n > 0,
                    if n > 0 {
                        format!(
                            "a new version without the policy's {n} key(s); earlier versions kept"
                        )
                    } else {
                        "no key of the policy was there".to_owned()
                    },
                ))
            }
            ConsumerSpec::File(c) => {
                let existed = file::remove(c).await?;
                Ok(done(
                    existed,
                    if existed {
                        "file removed"
                    } else {
                        "no such file"
                    }
                    .to_owned(),
                ))
            }
            ConsumerSpec::Gitlab(c) => {
                let token = token(vault, &c.token_from).await?;
                let client = self
                    .gitlab
                    .get_or_try_init(|| async { GitlabClient::new() })
                    .await?;
                let existed = client.remove(c, &token).await?;
                Ok(done(
                    existed,
                    if existed {
                        "variable deleted"
                    } else {
                        "no such variable"
                    }
                    .to_owned(),
                ))
            }
            ConsumerSpec::Github(c) => {
                let token = token(vault, &c.token_from).await?;
                let client = self
                    .github
                    .get_or_try_init(|| async { GithubClient::new() })
                    .await?;
                let existed = client.remove(c, &token).await?;
                Ok(done(
                    existed,
                    if existed {
                        "secret deleted"
                    } else {
                        "no such secret"
                    }
                    .to_owned(),
                ))
            }
        }
    }
}

impl PushOutcome {
    /// A push that restarts nothing.
    fn written(changed: bool, verified: bool) -> Self {
        PushOutcome {
            changed,
            verified,
            restarted: Vec::new(),
        }
    }
}

/// A CI consumer's API token and rendered value.
async fn ci_inputs(
    vault: &Vault,
    token_from: &crate::policy::Reference,
    value: &Template,
    vars: &SecretMap,
) -> Result<(SecretString, SecretString), ConsumerError> {
    Ok((
        token(vault, token_from).await?,
        render(value, vars, "value")?,
    ))
}

/// The one secret a `tokenFrom` reference names: its single value (`key`, env,
/// file), or a Vault secret's `token` key.
async fn token(
    vault: &Vault,
    reference: &crate::policy::Reference,
) -> Result<SecretString, ConsumerError> {
    let map = vault
        .resolve(reference)
        .await
        .map_err(|e| ConsumerError::Token {
            what: "tokenFrom",
            transient: e.is_transient(),
            detail: e.to_string(),
        })?;
    let value = map.get("value").or_else(|| map.get("token")).or_else(|| {
        (map.len() == 1)
            .then(|| map.iter().next().map(|(_, v)| v))
            .flatten()
    });
    value.cloned().ok_or_else(|| ConsumerError::Token {
        what: "tokenFrom",
        transient: false,
        detail: format!(
            "{} holds several keys and none is `token`: name one with `key:`",
            crate::vault::describe_reference(reference)
        ),
    })
}

fn render(template: &Template, vars: &SecretMap, key: &str) -> Result<SecretString, ConsumerError> {
    template.render(vars).map_err(|e| ConsumerError::Render {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

fn render_map(
    templates: &std::collections::BTreeMap<String, Template>,
    vars: &SecretMap,
) -> Result<SecretMap, ConsumerError> {
    let mut rendered = SecretMap::new();
    for (key, template) in templates {
        rendered.insert(key.clone(), render(template, vars, key)?);
    }
    Ok(rendered)
}
