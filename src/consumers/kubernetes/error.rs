//! Errors of the Kubernetes consumer, and the scrubbing that keeps Secret values out of
//! them.

use super::ownership::KeyConflict;
use crate::consumers::scrub::Scrubber;

/// Errors of the Kubernetes consumer. None of them carries a Secret value.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum KubernetesError {
    /// The rendered keys are not the keys the consumer declares (a caller bug).
    #[error(
        "rendered keys {rendered:?} for Kubernetes Secret {namespace}/{secret} differ from the consumer's data keys {declared:?}"
    )]
    #[strum(serialize = "rendered_keys")]
    RenderedKeys {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// Keys the caller rendered.
        rendered: Vec<String>,
        /// Keys `spec.data` declares.
        declared: Vec<String>,
    },
    /// Reading the Secret failed.
    #[error("reading Kubernetes Secret {namespace}/{secret} failed")]
    #[strum(serialize = "read")]
    Read {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The API failure, scrubbed of secret values.
        #[source]
        source: ApiFailure,
    },
    /// The Secret exists with a type other than the one the policy asks for.
    #[error(
        "Kubernetes Secret {namespace}/{secret} has type {existing:?} but the policy asks for {wanted:?}; a Secret's type cannot be changed: delete the Secret or set secretType to {existing:?}"
    )]
    #[strum(serialize = "type_mismatch")]
    TypeMismatch {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The type the Secret has.
        existing: String,
        /// The type the policy asks for.
        wanted: String,
    },
    /// The server-side apply failed for another reason than a field conflict.
    #[error("applying Kubernetes Secret {namespace}/{secret} failed")]
    #[strum(serialize = "apply")]
    Apply {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The API failure, scrubbed of secret values.
        #[source]
        source: ApiFailure,
    },
    /// Another field manager owns some of the keys rotor applies.
    #[error(
        "applying Kubernetes Secret {namespace}/{secret}: keys are owned by another field manager ({detail}); set `force: true` on the consumer to let rotor take ownership"
    )]
    #[strum(serialize = "field_conflict")]
    FieldConflict {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// Which fields and which manager, as far as the API server said.
        detail: String,
    },
    /// Another field manager writes keys rotor applies in a way no apply reports as a
    /// conflict: through `stringData` (a real API server records it as
    /// `f:stringData.f:KEY`), or through `data` with a value other than rotor's.
    #[error(
        "Kubernetes Secret {namespace}/{secret}: {}; an apply does not report this as a conflict (force: true does not help) and the other manager's next write would put its own value back: stop that manager writing the key, or stop rotor writing it",
        describe(conflicts)
    )]
    #[strum(serialize = "key_conflict")]
    KeyConflict {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// Each key and the other manager writing it; never a value.
        conflicts: Vec<KeyConflict>,
    },
    /// The Secret read back after the apply does not hold what was applied.
    #[error("Kubernetes Secret {namespace}/{secret} read back after apply differs in {fields:?}")]
    #[strum(serialize = "read_back_mismatch")]
    ReadBackMismatch {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The keys (or metadata fields) that differ; never their values.
        fields: Vec<String>,
    },
    /// Removing the policy's keys from the Secret, or deleting it, failed.
    #[error("removing rotor's keys from Kubernetes Secret {namespace}/{secret} failed")]
    #[strum(serialize = "remove")]
    Remove {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// The API failure.
        #[source]
        source: ApiFailure,
    },
    /// A workload listed under `restart` does not exist.
    #[error("workload {workload} to restart does not exist in namespace {namespace}")]
    #[strum(serialize = "workload_missing")]
    WorkloadMissing {
        /// Namespace of the workload.
        namespace: String,
        /// The workload, as `deployment/NAME`.
        workload: String,
    },
    /// Reading a workload before restarting it failed.
    #[error("reading workload {workload} in namespace {namespace} failed")]
    #[strum(serialize = "workload_read")]
    WorkloadRead {
        /// Namespace of the workload.
        namespace: String,
        /// The workload, as `deployment/NAME`.
        workload: String,
        /// The API failure.
        #[source]
        source: ApiFailure,
    },
    /// Patching a workload's pod template to restart it failed.
    #[error("restarting workload {workload} in namespace {namespace} failed")]
    #[strum(serialize = "restart")]
    Restart {
        /// Namespace of the workload.
        namespace: String,
        /// The workload, as `deployment/NAME`.
        workload: String,
        /// The API failure.
        #[source]
        source: ApiFailure,
    },
}

impl KubernetesError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        if self.api_failure().is_some_and(ApiFailure::is_timeout) {
            return "timeout";
        }
        self.into()
    }

    /// The failed API call, for the variants that have one.
    fn api_failure(&self) -> Option<&ApiFailure> {
        match self {
            Self::Read { source, .. }
            | Self::Apply { source, .. }
            | Self::WorkloadRead { source, .. }
            | Self::Restart { source, .. }
            | Self::Remove { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether retrying the same push may succeed: server errors (5xx, 429),
    /// timeouts and connection failures are transient; field conflicts, 403, 404,
    /// invalid objects and mismatches need a person. A 409 on a workload patch is a
    /// lost compare-and-swap and is transient. A read-back mismatch is transient too:
    /// a concurrent writer may have won, and the next push re-applies.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Read { source, .. }
            | Self::Apply { source, .. }
            | Self::WorkloadRead { source, .. } => source.is_transient(),
            Self::Restart { source, .. } | Self::Remove { source, .. } => {
                source.is_transient() || source.code() == Some(409)
            }
            Self::ReadBackMismatch { .. } => true,
            Self::RenderedKeys { .. }
            | Self::TypeMismatch { .. }
            | Self::FieldConflict { .. }
            | Self::KeyConflict { .. }
            | Self::WorkloadMissing { .. } => false,
        }
    }
}

/// `key A is written through stringData by field manager "m"; key B …`.
fn describe(conflicts: &[KeyConflict]) -> String {
    let parts: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// A failed Kubernetes API call with everything that could hold a secret value
/// removed: the server's message is scrubbed of the rendered values, and decoding
/// errors keep only their category and position.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    code: Option<u16>,
    reason: String,
    message: String,
    transient: bool,
    timed_out: bool,
}

impl ApiFailure {
    /// The HTTP status code, when the API server answered.
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// The API server's machine-readable reason (`Conflict`, `Forbidden`, …), if any.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the failure is worth retrying (5xx, 429, 408, timeouts, connections).
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Whether the API server did not answer within the call timeout
    /// ([`crate::outside::call_timeout`]); such a failure is counted and transient.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }

    pub(super) fn from_kube(err: kube::Error, scrubber: &Scrubber) -> Self {
        match err {
            kube::Error::Api(status) => {
                let code = status.code;
                ApiFailure {
                    code: Some(code),
                    reason: status.reason.clone(),
                    message: format!(
                        "HTTP {code} {}: {}",
                        status.reason,
                        scrubber.scrub(&status.message)
                    ),
                    transient: code >= 500 || code == 429 || code == 408,
                    timed_out: false,
                }
            }
            kube::Error::SerdeError(e) => ApiFailure {
                code: None,
                reason: String::new(),
                // serde_json's Display can quote the offending value: keep the shape only.
                message: format!(
                    "could not decode the API response ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
                transient: false,
                timed_out: false,
            },
            other => {
                let timed_out = crate::outside::note(crate::outside::System::Kubernetes, &other);
                let transient = timed_out
                    || matches!(
                        other,
                        kube::Error::HyperError(_)
                            | kube::Error::Service(_)
                            | kube::Error::ReadEvents(_)
                    );
                ApiFailure {
                    code: None,
                    reason: String::new(),
                    message: if timed_out {
                        format!(
                            "timeout: the Kubernetes API did not answer within {} ms: {}",
                            crate::outside::call_timeout().as_millis(),
                            scrubber.scrub(&crate::error_chain(&other))
                        )
                    } else {
                        scrubber.scrub(&other.to_string())
                    },
                    transient,
                    timed_out,
                }
            }
        }
    }
}
