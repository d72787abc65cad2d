//! Consumers, one module each, behind the [`Consumer`] trait: render the policy's
//! templates from the credential's keys, push the result, read it back, and remove it
//! when the policy is retired. [`ConsumerSpec`] implements the trait by dispatching to
//! its type's implementation (an exhaustive match), so the engine calls every consumer
//! the same way; [`Consumers`] holds the API clients they share.
//!
//! What a consumer is statically (its fields, validation, `describe`, `templates`, the
//! target two consumers must not share) belongs to the policy, where validation needs
//! it; what it does on its real system is here.

pub mod file;
pub mod github;
pub mod gitlab;
pub mod kubernetes;
mod scrub;
pub mod vault_kv;

use std::future::Future;

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::policy::{ConsumerFacts, ConsumerSpec, Template, each_consumer_kind};
use secrecy::ExposeSecret;

use crate::secret::{Fingerprinter, SecretMap, SecretString, constant_time_eq};
use crate::vault::Vault;

use self::file::FileError;
use self::github::{GithubClient, GithubError};
use self::gitlab::{GitlabClient, GitlabError};
use self::kubernetes::{KubernetesConsumerClient, KubernetesError};
use self::vault_kv::VaultKvError;

/// A failed push to one consumer.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum ConsumerError {
    /// A template could not be rendered (a variable the credential did not provide).
    #[error("rendering {key}: {detail}")]
    #[strum(serialize = "render")]
    Render {
        /// The data key whose template failed.
        key: String,
        /// Which variable was missing (never a value).
        detail: String,
    },
    /// No Kubernetes client could be configured (kubeconfig / in-cluster).
    #[error("cannot configure a Kubernetes client: {0}")]
    #[strum(serialize = "kube_config")]
    KubeConfig(String),
    /// The Kubernetes API failed.
    #[error(transparent)]
    #[strum(disabled)]
    Kubernetes(#[from] KubernetesError),
    /// The extra Vault KV copy failed.
    #[error(transparent)]
    #[strum(disabled)]
    VaultKv(#[from] VaultKvError),
    /// The file could not be written.
    #[error(transparent)]
    #[strum(disabled)]
    File(#[from] FileError),
    /// The GitLab API failed.
    #[error(transparent)]
    #[strum(disabled)]
    Gitlab(#[from] GitlabError),
    /// The GitHub API failed.
    #[error(transparent)]
    #[strum(disabled)]
    Github(#[from] GithubError),
    /// A consumer's token reference could not be resolved.
    #[error("resolving {what}: {detail}")]
    #[strum(serialize = "token_reference")]
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
            ConsumerError::Kubernetes(e) => e.kind(),
            ConsumerError::VaultKv(e) => e.kind(),
            ConsumerError::File(e) => e.kind(),
            ConsumerError::Gitlab(e) => e.kind(),
            ConsumerError::Github(e) => e.kind(),
            other => other.into(),
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

/// The type of a consumer: closed, exhaustive, and the source of its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerKind {
    /// A Kubernetes Secret (and the workloads it restarts).
    Kubernetes,
    /// A GitLab CI/CD variable.
    Gitlab,
    /// A GitHub Actions secret.
    Github,
    /// An extra Vault KV v2 copy.
    VaultKv,
    /// A file on the agent's host.
    File,
}

impl ConsumerKind {
    /// Every consumer type.
    pub const ALL: [ConsumerKind; 5] = [
        ConsumerKind::Kubernetes,
        ConsumerKind::Gitlab,
        ConsumerKind::Github,
        ConsumerKind::VaultKv,
        ConsumerKind::File,
    ];

    /// The policy's type name, which is also the `consumer_type` metric label.
    pub fn label(self) -> &'static str {
        match self {
            ConsumerKind::Kubernetes => "kubernetes",
            ConsumerKind::Gitlab => "gitlab",
            ConsumerKind::Github => "github",
            ConsumerKind::VaultKv => "vault-kv",
            ConsumerKind::File => "file",
        }
    }

    /// The type of the consumer a rotation's record describes (the record's `consumer`,
    /// written from [`ConsumerSpec::describe`]), looked up in the policy that ran the
    /// rotation: the consumer at the record's position when its description matches, as
    /// the engine writes them in order, else the first one with that description.
    /// `None` when the policy has no such consumer (any more).
    pub fn of_record(
        consumers: &[ConsumerSpec],
        index: usize,
        described: &str,
    ) -> Option<ConsumerKind> {
        consumers
            .get(index)
            .filter(|c| c.describe() == described)
            .or_else(|| consumers.iter().find(|c| c.describe() == described))
            .map(Consumer::consumer_kind)
    }
}

/// The new value a push renders its templates from.
pub struct NewValue<'a> {
    /// The credential's keys: the templates' variables.
    pub vars: &'a SecretMap,
    /// Hashes rendered data, for consumers that record which data they hold.
    pub fingerprints: &'a Fingerprinter,
}

/// What [`Consumer::push`] answers.
pub type PushResult = Result<PushOutcome, ConsumerError>;
/// What [`Consumer::read_back`] answers.
pub type ReadBackResult = Result<ReadBack, ConsumerError>;
/// What [`Consumer::remove`] answers.
pub type RemoveResult = Result<RemoveOutcome, ConsumerError>;

/// What a consumer call may use besides its own settings.
pub struct Context<'a> {
    /// The API clients, created on first use.
    pub clients: &'a Consumers,
    /// Resolves `tokenFrom` references and holds `vault-kv` copies.
    pub vault: &'a Vault,
}

/// A place a credential's value is pushed to. Each consumer type implements it in its
/// module (for its policy settings, e.g. [`crate::policy::KubernetesConsumer`]), on
/// top of what those settings say about themselves ([`ConsumerFacts`]: type name,
/// description, templates, target identity); [`ConsumerSpec`] dispatches to them.
pub trait Consumer: ConsumerFacts {
    /// Which type of consumer this is.
    fn consumer_kind(&self) -> ConsumerKind;

    /// The metric label of this consumer: its type's [`ConsumerKind::label`].
    fn label(&self) -> &'static str {
        self.consumer_kind().label()
    }

    /// Renders the templates from the new value, writes the result, and verifies it
    /// with [`Consumer::read_back`] where the API can read values (`verified`).
    /// Idempotent: an unchanged value is not written again.
    fn push(
        &self,
        ctx: &Context<'_>,
        new: &NewValue<'_>,
    ) -> impl Future<Output = PushResult> + Send;

    /// Renders the templates from the new value and compares them with what the
    /// consumer's system holds now, without writing. The same comparison `push` uses
    /// to verify its write; the answer names fields, never values.
    fn read_back(
        &self,
        ctx: &Context<'_>,
        new: &NewValue<'_>,
    ) -> impl Future<Output = ReadBackResult> + Send;

    /// Removes what rotor pushed here for a retired policy and proves it gone.
    /// Idempotent: removing twice finds nothing the second time.
    fn remove(&self, ctx: &Context<'_>) -> impl Future<Output = RemoveResult> + Send;
}

/// What [`Consumer::read_back`] found where the consumer writes. Holds field and key
/// names only, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBack {
    /// Every rendered value (and what rotor sets with it: mode, attributes, markers)
    /// is there as rendered.
    Matches,
    /// Something rotor writes is there, but these fields or keys differ from (or lack)
    /// what was rendered.
    Differs {
        /// The differing fields or keys, e.g. `value`, `masked`, a Secret key, `mode`.
        fields: Vec<String>,
    },
    /// Nothing of what rotor writes is there (no Secret or none of its keys, no
    /// variable, no live KV version or none of its keys, no file).
    Missing,
    /// It exists, but its value cannot be read back: a GitHub Actions secret (write-only)
    /// or a hidden GitLab variable.
    NotReadable,
}

impl ReadBack {
    /// `Matches` when `fields` is empty, else `Differs` naming them.
    fn of_differences(fields: Vec<String>) -> Self {
        if fields.is_empty() {
            ReadBack::Matches
        } else {
            ReadBack::Differs { fields }
        }
    }
}

impl Consumer for ConsumerSpec {
    fn consumer_kind(&self) -> ConsumerKind {
        each_consumer_kind!(self, c => c.consumer_kind())
    }

    async fn push(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        each_consumer_kind!(self, c => c.push(ctx, new).await)
    }

    async fn read_back(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> ReadBackResult {
        each_consumer_kind!(self, c => c.read_back(ctx, new).await)
    }

    async fn remove(&self, ctx: &Context<'_>) -> RemoveResult {
        each_consumer_kind!(self, c => c.remove(ctx).await)
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

/// What one [`Consumer::remove`] did.
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

impl RemoveOutcome {
    /// A removal proven done; `removed` says whether anything was there.
    fn verified(removed: bool, detail: String) -> Self {
        RemoveOutcome {
            removed,
            verified: true,
            detail,
        }
    }

    /// A removal of one thing that `existed` or not: `gone` or `absent` says which.
    fn of_one(existed: bool, gone: &str, absent: &str) -> Self {
        Self::verified(existed, if existed { gone } else { absent }.to_owned())
    }
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

    /// The Kubernetes client: the one given, else from the kubeconfig or the cluster.
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

    /// The GitLab API client.
    async fn gitlab(&self) -> Result<&GitlabClient, ConsumerError> {
        Ok(self
            .gitlab
            .get_or_try_init(|| async { GitlabClient::new() })
            .await?)
    }

    /// The GitHub API client.
    async fn github(&self) -> Result<&GithubClient, ConsumerError> {
        Ok(self
            .github
            .get_or_try_init(|| async { GithubClient::new() })
            .await?)
    }

    /// What a consumer call gets: these clients and `vault`.
    fn context<'a>(&'a self, vault: &'a Vault) -> Context<'a> {
        Context {
            clients: self,
            vault,
        }
    }

    /// Renders `spec`'s templates from `vars` and pushes them ([`Consumer::push`]).
    /// `vault` resolves the references consumers need (CI tokens) and holds `vault-kv`
    /// copies.
    pub async fn push(
        &self,
        spec: &ConsumerSpec,
        vars: &SecretMap,
        fingerprints: &Fingerprinter,
        vault: &Vault,
    ) -> Result<PushOutcome, ConsumerError> {
        spec.push(&self.context(vault), &NewValue { vars, fingerprints })
            .await
    }

    /// Renders `spec`'s templates from `vars` and compares them with what its system
    /// holds now, writing nothing ([`Consumer::read_back`]).
    pub async fn read_back(
        &self,
        spec: &ConsumerSpec,
        vars: &SecretMap,
        fingerprints: &Fingerprinter,
        vault: &Vault,
    ) -> ReadBackResult {
        spec.read_back(&self.context(vault), &NewValue { vars, fingerprints })
            .await
    }

    /// Removes what rotor pushed to `spec` for a retired policy, and proves it gone
    /// ([`Consumer::remove`]):
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
        spec.remove(&self.context(vault)).await
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

/// The keys of `rendered` that `have` lacks or answers with other bytes (compared in
/// constant time): the read-back of the consumers that hold several keys.
fn differing_keys<'h>(rendered: &SecretMap, have: impl Fn(&str) -> Option<&'h str>) -> Vec<String> {
    rendered
        .iter()
        .filter(|(key, want)| {
            !have(key).is_some_and(|have| constant_time_eq(have, want.expose_secret()))
        })
        .map(|(key, _)| key.to_owned())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_kind_is_a_policy_type_name() {
        let labels: Vec<&str> = ConsumerKind::ALL.iter().map(|k| k.label()).collect();
        let mut policy = ConsumerSpec::KINDS.to_vec();
        let mut ours = labels.clone();
        policy.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, policy);
    }
}
