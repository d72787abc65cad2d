//! Consumers, one module each, dispatched by [`Consumers::push`]: render the
//! policy's templates from the credential's keys, push the result, read it back.

pub mod kubernetes;

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::policy::ConsumerSpec;
use crate::secret::{Fingerprinter, SecretMap};

use self::kubernetes::{KubernetesConsumerClient, KubernetesError};

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
    /// This build cannot push to the consumer type yet; nothing was changed.
    #[error("consumer type {0} is not supported by this version of rotor")]
    Unsupported(&'static str),
}

impl ConsumerError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsumerError::Render { .. } => "render",
            ConsumerError::KubeConfig(_) => "kube_config",
            ConsumerError::Kubernetes(e) => e.kind(),
            ConsumerError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsumerError::Kubernetes(e) => e.is_transient(),
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

/// Fails for consumer types this build cannot push to, without any I/O.
pub fn check_supported(spec: &ConsumerSpec) -> Result<(), ConsumerError> {
    match spec {
        ConsumerSpec::Kubernetes(_) => Ok(()),
        other => Err(ConsumerError::Unsupported(other.kind())),
    }
}

/// The clients of every consumer type, created on first use.
#[derive(Default)]
pub struct Consumers {
    kube: OnceCell<KubernetesConsumerClient>,
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
        }
    }

    async fn kube(&self) -> Result<&KubernetesConsumerClient, ConsumerError> {
        self.kube
            .get_or_try_init(|| async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| ConsumerError::KubeConfig(e.to_string()))?;
                Ok(KubernetesConsumerClient::new(client))
            })
            .await
    }

    /// Renders `spec`'s templates from `vars` and pushes them.
    pub async fn push(
        &self,
        spec: &ConsumerSpec,
        vars: &SecretMap,
        fingerprints: &Fingerprinter,
    ) -> Result<PushOutcome, ConsumerError> {
        match spec {
            ConsumerSpec::Kubernetes(k) => {
                let mut rendered = SecretMap::new();
                for (key, template) in &k.data {
                    let value = template.render(vars).map_err(|e| ConsumerError::Render {
                        key: key.clone(),
                        detail: e.to_string(),
                    })?;
                    rendered.insert(key.clone(), value);
                }
                let hash = fingerprints.fingerprint_map(&rendered);
                let report = self.kube().await?.push(k, &rendered, &hash).await?;
                Ok(PushOutcome {
                    changed: report.changed,
                    verified: report.verified,
                    restarted: report.restarted,
                })
            }
            other => Err(ConsumerError::Unsupported(other.kind())),
        }
    }
}
