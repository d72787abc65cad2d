//! The `kubernetes` consumer: writes rendered values into the keys of a Kubernetes
//! Secret with server-side apply (field manager [`FIELD_MANAGER`]), reads the Secret
//! back to prove the write, and rolls the named workloads exactly once per data change.
//!
//! Only the keys rendered from the policy are applied, so keys that another field
//! manager owns in the same Secret are left alone; a key that another manager owns is
//! a [`KubernetesError::FieldConflict`] unless the consumer sets `force: true`.
//!
//! Restarts are crash-safe: each workload's pod template carries
//! `rotor.dev/restarted-for-<secret>` = the data hash it was last rolled for. A push
//! rolls exactly the workloads whose marker differs from the current hash (setting the
//! marker and `kubectl.kubernetes.io/restartedAt` in one patch, guarded by the
//! workload's `resourceVersion`), so an unchanged re-apply rolls nothing and a push
//! resumed after a crash rolls only what was missed. A workload newly added to
//! `restart` has no marker yet and is therefore rolled once on the next push.
//!
//! Secret values never reach an error or a log: API error messages are scrubbed of
//! the rendered values (plain, JSON-escaped and base64) before they are kept, and
//! decoding errors keep only their category and position. (kube-client itself logs API
//! error bodies at `debug`, and unparsable ones at `warn`: a server that echoes request
//! bodies could leak there, so production log filters keep `kube_client` at `info`.)

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use zeroize::{Zeroize, Zeroizing};

use crate::policy::{KubernetesConsumer, WorkloadKind, WorkloadRef};
use crate::secret::{SecretMap, constant_time_eq};

/// The field manager rotor applies Secrets and patches workloads as.
pub const FIELD_MANAGER: &str = "rotor";
/// Label set on every Secret rotor writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotation holding the HMAC fingerprint of the data rotor last applied.
pub const DATA_HASH_ANNOTATION: &str = "rotor.dev/data-hash";
/// Pod-template annotation `kubectl rollout restart` sets; changing it rolls the pods.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Secret type used when the policy names none and the Secret does not exist yet.
pub const DEFAULT_SECRET_TYPE: &str = "Opaque";

/// Prefix of the restart marker annotation (the Secret name follows).
const RESTART_MARKER_PREFIX: &str = "restarted-for-";
/// Longest name part of an annotation key Kubernetes accepts.
const MAX_ANNOTATION_NAME_LEN: usize = 63;

/// Pushes rendered values into Kubernetes Secrets and restarts their workloads.
#[derive(Clone)]
pub struct KubernetesConsumerClient {
    client: kube::Client,
}

/// What one [`KubernetesConsumerClient::push`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KubernetesPushReport {
    /// Whether the Secret's data differed from what was pushed (or it did not exist).
    pub changed: bool,
    /// Whether every rendered key was read back byte-for-byte after the apply.
    pub verified: bool,
    /// Workloads rolled by this push, as `deployment/NAME`.
    pub restarted: Vec<String>,
}

/// What one [`KubernetesConsumerClient::remove`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KubernetesRemoveReport {
    /// The policy's keys that were present and are now removed.
    pub removed_keys: Vec<String>,
    /// Whether the Secret itself was deleted (empty, and only rotor ever managed it).
    pub deleted: bool,
    /// Whether the Secret (or its absence) was read back without those keys.
    pub verified: bool,
}

impl fmt::Debug for KubernetesConsumerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubernetesConsumerClient")
    }
}

impl KubernetesConsumerClient {
    /// A consumer client over an existing Kubernetes client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// Server-side applies the rendered keys (field manager `rotor`, forced only when
    /// `spec.force`), reads the Secret back and compares every rendered key, then
    /// restarts the listed workloads whose restart marker is not `data_hash`.
    ///
    /// `rendered` must hold exactly the keys of `spec.data`; `data_hash` is the HMAC
    /// fingerprint of `rendered`, computed by the caller, and is stored on the Secret
    /// and on the restarted pod templates.
    pub async fn push(
        &self,
        spec: &KubernetesConsumer,
        rendered: &SecretMap,
        data_hash: &str,
    ) -> Result<KubernetesPushReport, KubernetesError> {
        check_rendered_keys(spec, rendered)?;
        let namespace = spec.namespace.as_str();
        let name = spec.secret.as_str();
        let scrubber = Scrubber::new(rendered);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);

        let existing = secrets
            .get_opt(name)
            .await
            .map_err(|e| KubernetesError::Read {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
                source: ApiFailure::from_kube(e, &scrubber),
            })?
            .map(WipedSecret);

        let secret_type = choose_type(spec, existing.as_ref())?;
        // The type is immutable and `choose_type` has checked it, so apply it only when
        // creating the Secret or when rotor already owns it: claiming a field another
        // manager owns is a conflict on some servers, and dropping one rotor owns would
        // make the API server reset it.
        let apply_type = match &existing {
            None => true,
            Some(old) => owns_field(&old.0.metadata, FIELD_MANAGER, "f:type"),
        };
        let changed = match &existing {
            None => true,
            Some(old) => {
                annotation(&old.0.metadata, DATA_HASH_ANNOTATION) != Some(data_hash)
                    || !mismatched_keys(&old.0, rendered).is_empty()
            }
        };
        drop(existing);

        let desired = WipedSecret(desired_secret(
            spec,
            rendered,
            data_hash,
            apply_type.then_some(secret_type),
        ));
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if spec.force {
            params = params.force();
        }
        let applied = secrets
            .patch(name, &params, &Patch::Apply(&desired.0))
            .await
            .map_err(|e| apply_error(namespace, name, e, &scrubber))?;
        drop(WipedSecret(applied));
        drop(desired);

        let read_back = secrets
            .get_opt(name)
            .await
            .map_err(|e| KubernetesError::Read {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
                source: ApiFailure::from_kube(e, &scrubber),
            })?
            .map(WipedSecret);
        let mismatched = match &read_back {
            None => vec!["(the Secret is gone)".to_owned()],
            Some(s) => {
                let mut m = mismatched_keys(&s.0, rendered);
                if annotation(&s.0.metadata, DATA_HASH_ANNOTATION) != Some(data_hash) {
                    m.push(format!("metadata.annotations[{DATA_HASH_ANNOTATION}]"));
                }
                m
            }
        };
        drop(read_back);
        if !mismatched.is_empty() {
            return Err(KubernetesError::ReadBackMismatch {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
                fields: mismatched,
            });
        }
        info!(namespace = %namespace, secret = %name, changed, "Kubernetes Secret applied.");

        let mut restarted = Vec::new();
        let mut first_error = None;
        for workload in &spec.restart {
            match self.restart(namespace, name, workload, data_hash).await {
                Ok(true) => restarted.push(workload.to_string()),
                Ok(false) => {}
                Err(e) => {
                    warn!(namespace = %namespace, workload = %workload, error = %e, "Workload restart failed.");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(KubernetesPushReport {
            changed,
            verified: true,
            restarted,
        })
    }

    /// Removes the policy's keys (`spec.data`) and rotor's data-hash annotation from the
    /// Secret with a merge patch guarded by its `resourceVersion` (field manager
    /// `rotor`), then deletes the Secret itself when nothing is left in it and nobody
    /// but rotor ever managed it (every `managedFields` entry is rotor's and it carries
    /// rotor's `managed-by` label: rotor created it for this policy). Reads the Secret
    /// back to prove the keys are gone. Workloads are not restarted: a pod that still
    /// references a removed key would not start again. A missing Secret is already
    /// removed.
    pub async fn remove(
        &self,
        spec: &KubernetesConsumer,
    ) -> Result<KubernetesRemoveReport, KubernetesError> {
        let namespace = spec.namespace.as_str();
        let name = spec.secret.as_str();
        let none = Scrubber::default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let read = |e| KubernetesError::Read {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
            source: ApiFailure::from_kube(e, &none),
        };
        let remove_error = |e| KubernetesError::Remove {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
            source: ApiFailure::from_kube(e, &none),
        };
        let Some(existing) = secrets.get_opt(name).await.map_err(read)?.map(WipedSecret) else {
            info!(namespace = %namespace, secret = %name, "Kubernetes Secret already gone.");
            return Ok(KubernetesRemoveReport {
                removed_keys: Vec::new(),
                deleted: false,
                verified: true,
            });
        };
        let present = present_keys(&existing.0, spec);
        let has_hash = annotation(&existing.0.metadata, DATA_HASH_ANNOTATION).is_some();
        let mut current = existing;
        if !present.is_empty() || has_hash {
            let nulls: serde_json::Map<String, serde_json::Value> = present
                .iter()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": current.0.metadata.resource_version,
                    "annotations": { DATA_HASH_ANNOTATION: null },
                },
                "data": nulls,
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let patched = secrets
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(remove_error)?;
            current = WipedSecret(patched);
        }
        let deleted = if only_rotors(&current.0) {
            let params = DeleteParams::default().preconditions(Preconditions {
                resource_version: current.0.metadata.resource_version.clone(),
                uid: None,
            });
            match secrets.delete(name, &params).await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 404 => true,
                Err(e) => return Err(remove_error(e)),
            }
        } else {
            false
        };
        drop(current);
        let left = match secrets.get_opt(name).await.map_err(read)?.map(WipedSecret) {
            None => Vec::new(),
            Some(s) => present_keys(&s.0, spec),
        };
        if !left.is_empty() {
            return Err(KubernetesError::ReadBackMismatch {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
                fields: left,
            });
        }
        info!(namespace = %namespace, secret = %name, keys = present.len(), deleted, "Kubernetes Secret keys removed.");
        Ok(KubernetesRemoveReport {
            removed_keys: present,
            deleted,
            verified: true,
        })
    }

    /// Reads the Secret and says whether every rendered key holds exactly the rendered
    /// value (a missing Secret or key is `false`). Keys rotor does not own are ignored.
    pub async fn matches(
        &self,
        spec: &KubernetesConsumer,
        rendered: &SecretMap,
    ) -> Result<bool, KubernetesError> {
        check_rendered_keys(spec, rendered)?;
        let scrubber = Scrubber::new(rendered);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &spec.namespace);
        let current = secrets
            .get_opt(&spec.secret)
            .await
            .map_err(|e| KubernetesError::Read {
                namespace: spec.namespace.clone(),
                secret: spec.secret.clone(),
                source: ApiFailure::from_kube(e, &scrubber),
            })?
            .map(WipedSecret);
        Ok(current.is_some_and(|s| mismatched_keys(&s.0, rendered).is_empty()))
    }

    /// Rolls `workload` unless its restart marker for `secret` already equals
    /// `data_hash`. Returns whether it was rolled.
    async fn restart(
        &self,
        namespace: &str,
        secret: &str,
        workload: &WorkloadRef,
        data_hash: &str,
    ) -> Result<bool, KubernetesError> {
        let marker = restart_annotation_key(secret);
        match workload.kind {
            WorkloadKind::Deployment => {
                self.restart_as::<Deployment>(namespace, workload, &marker, data_hash)
                    .await
            }
            WorkloadKind::StatefulSet => {
                self.restart_as::<StatefulSet>(namespace, workload, &marker, data_hash)
                    .await
            }
            WorkloadKind::DaemonSet => {
                self.restart_as::<DaemonSet>(namespace, workload, &marker, data_hash)
                    .await
            }
        }
    }

    async fn restart_as<K>(
        &self,
        namespace: &str,
        workload: &WorkloadRef,
        marker: &str,
        data_hash: &str,
    ) -> Result<bool, KubernetesError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + PodTemplated
            + Clone
            + DeserializeOwned
            + fmt::Debug,
    {
        let none = Scrubber::default();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let current = api
            .get_opt(&workload.name)
            .await
            .map_err(|e| KubernetesError::WorkloadRead {
                namespace: namespace.to_owned(),
                workload: workload.to_string(),
                source: ApiFailure::from_kube(e, &none),
            })?
            .ok_or_else(|| KubernetesError::WorkloadMissing {
                namespace: namespace.to_owned(),
                workload: workload.to_string(),
            })?;
        if current.template_annotation(marker) == Some(data_hash) {
            debug!(namespace = %namespace, workload = %workload, "Workload already restarted for this data.");
            return Ok(false);
        }
        // One merge patch: the marker and restartedAt land together or not at all, and
        // the resourceVersion makes it a compare-and-swap against a concurrent writer.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.meta().resource_version },
            "spec": { "template": { "metadata": { "annotations": {
                marker: data_hash,
                RESTARTED_AT_ANNOTATION: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            }}}}
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => KubernetesError::WorkloadMissing {
                    namespace: namespace.to_owned(),
                    workload: workload.to_string(),
                },
                _ => KubernetesError::Restart {
                    namespace: namespace.to_owned(),
                    workload: workload.to_string(),
                    source: ApiFailure::from_kube(e, &none),
                },
            })?;
        info!(namespace = %namespace, workload = %workload, "Workload restarted.");
        Ok(true)
    }
}

/// The pod-template annotation key that records, per Secret, which data hash a
/// workload was last restarted for: `rotor.dev/restarted-for-<secret>`, or, when that
/// would exceed the 63-character name limit, a prefix of the name plus a hash of it.
pub fn restart_annotation_key(secret: &str) -> String {
    let budget = MAX_ANNOTATION_NAME_LEN - RESTART_MARKER_PREFIX.len();
    if secret.len() <= budget {
        return format!("rotor.dev/{RESTART_MARKER_PREFIX}{secret}");
    }
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    let hash = &digest[..12];
    // Secret names are ASCII DNS subdomains, so byte slicing stays on char boundaries;
    // trim so the name part never has "-" or "." next to the separator.
    let head = secret
        .get(..budget - hash.len() - 1)
        .unwrap_or("")
        .trim_end_matches(['-', '.']);
    format!("rotor.dev/{RESTART_MARKER_PREFIX}{head}-{hash}")
}

/// Errors of the Kubernetes consumer. None of them carries a Secret value.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The rendered keys are not the keys the consumer declares (a caller bug).
    #[error(
        "rendered keys {rendered:?} for Kubernetes Secret {namespace}/{secret} differ from the consumer's data keys {declared:?}"
    )]
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
    FieldConflict {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        secret: String,
        /// Which fields and which manager, as far as the API server said.
        detail: String,
    },
    /// The Secret read back after the apply does not hold what was applied.
    #[error("Kubernetes Secret {namespace}/{secret} read back after apply differs in {fields:?}")]
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
    WorkloadMissing {
        /// Namespace of the workload.
        namespace: String,
        /// The workload, as `deployment/NAME`.
        workload: String,
    },
    /// Reading a workload before restarting it failed.
    #[error("reading workload {workload} in namespace {namespace} failed")]
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
        match self {
            Self::RenderedKeys { .. } => "rendered_keys",
            Self::Read { .. } => "read",
            Self::TypeMismatch { .. } => "type_mismatch",
            Self::Apply { .. } => "apply",
            Self::FieldConflict { .. } => "field_conflict",
            Self::ReadBackMismatch { .. } => "read_back_mismatch",
            Self::WorkloadMissing { .. } => "workload_missing",
            Self::WorkloadRead { .. } => "workload_read",
            Self::Restart { .. } => "restart",
            Self::Remove { .. } => "remove",
        }
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
            | Self::WorkloadMissing { .. } => false,
        }
    }
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

    fn from_kube(err: kube::Error, scrubber: &Scrubber) -> Self {
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

/// Replaces every rendered value (plain, JSON-escaped, base64) in a message.
#[derive(Default)]
struct Scrubber {
    needles: Vec<Zeroizing<String>>,
}

impl Scrubber {
    fn new(rendered: &SecretMap) -> Self {
        let mut needles = Vec::new();
        for key in rendered.keys() {
            let Some(value) = rendered.expose(key) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            needles.push(Zeroizing::new(value.to_owned()));
            needles.push(Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(value),
            ));
            if let Ok(json) = serde_json::to_string(value) {
                let inner = json
                    .strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(&json);
                if inner != value {
                    needles.push(Zeroizing::new(inner.to_owned()));
                }
                let mut json = json;
                json.zeroize();
            }
        }
        // Longest first, so a value containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Scrubber { needles }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                let replaced = out.replace(needle.as_str(), "[REDACTED]");
                out.zeroize();
                out = replaced;
            }
        }
        out
    }
}

/// A Secret whose data is wiped from memory when dropped. Never `Debug`-printed.
struct WipedSecret(Secret);

impl Drop for WipedSecret {
    fn drop(&mut self) {
        if let Some(data) = self.0.data.as_mut() {
            for value in data.values_mut() {
                value.0.zeroize();
            }
        }
        if let Some(data) = self.0.string_data.as_mut() {
            for value in data.values_mut() {
                value.zeroize();
            }
        }
    }
}

/// Workloads with a pod template.
trait PodTemplated {
    fn template_meta(&self) -> Option<&ObjectMeta>;

    fn template_annotation(&self, key: &str) -> Option<&str> {
        self.template_meta().and_then(|m| annotation(m, key))
    }
}

impl PodTemplated for Deployment {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
    }
}

impl PodTemplated for StatefulSet {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
    }
}

impl PodTemplated for DaemonSet {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether `manager` owns the top-level field `field` (e.g. `f:type`) through an apply,
/// according to the object's managedFields.
fn owns_field(meta: &ObjectMeta, manager: &str, field: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(manager)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.as_deref().unwrap_or("").is_empty()
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get(field).is_some())
    })
}

/// The keys of `spec.data` that `secret` holds (in `data` or `stringData`).
fn present_keys(secret: &Secret, spec: &KubernetesConsumer) -> Vec<String> {
    spec.data
        .keys()
        .filter(|k| {
            secret.data.as_ref().is_some_and(|d| d.contains_key(*k))
                || secret
                    .string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(*k))
        })
        .cloned()
        .collect()
}

/// Whether `secret` holds no data and only rotor ever managed it: rotor's `managed-by`
/// label, and every `managedFields` entry is rotor's (another manager's entry means
/// someone else created or changed the object, and it is theirs to delete).
fn only_rotors(secret: &Secret) -> bool {
    let empty = secret.data.as_ref().is_none_or(BTreeMap::is_empty)
        && secret.string_data.as_ref().is_none_or(BTreeMap::is_empty);
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == FIELD_MANAGER);
    let managers = secret
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    empty
        && labelled
        && !managers.is_empty()
        && managers
            .iter()
            .all(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
}

fn check_rendered_keys(
    spec: &KubernetesConsumer,
    rendered: &SecretMap,
) -> Result<(), KubernetesError> {
    if rendered.keys().eq(spec.data.keys().map(String::as_str)) {
        return Ok(());
    }
    Err(KubernetesError::RenderedKeys {
        namespace: spec.namespace.clone(),
        secret: spec.secret.clone(),
        rendered: rendered.keys().map(str::to_owned).collect(),
        declared: spec.data.keys().cloned().collect(),
    })
}

/// The type to apply: a Secret's type is immutable, so an existing Secret keeps its
/// own; asking explicitly for another one is an error that says what to do.
fn choose_type(
    spec: &KubernetesConsumer,
    existing: Option<&WipedSecret>,
) -> Result<String, KubernetesError> {
    let Some(existing) = existing else {
        return Ok(spec
            .secret_type
            .clone()
            .unwrap_or_else(|| DEFAULT_SECRET_TYPE.to_owned()));
    };
    let current = existing
        .0
        .type_
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_SECRET_TYPE.to_owned());
    match &spec.secret_type {
        Some(wanted) if *wanted != current => Err(KubernetesError::TypeMismatch {
            namespace: spec.namespace.clone(),
            secret: spec.secret.clone(),
            existing: current,
            wanted: wanted.clone(),
        }),
        Some(_) => Ok(current),
        None => {
            if current != DEFAULT_SECRET_TYPE {
                warn!(
                    namespace = %spec.namespace,
                    secret = %spec.secret,
                    secret_type = %current,
                    "Kubernetes Secret keeps its existing type; set secretType to silence this."
                );
            }
            Ok(current)
        }
    }
}

fn desired_secret(
    spec: &KubernetesConsumer,
    rendered: &SecretMap,
    data_hash: &str,
    secret_type: Option<String>,
) -> Secret {
    let data = rendered
        .iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                ByteString(v.expose_secret().as_bytes().to_vec()),
            )
        })
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(spec.secret.clone()),
            namespace: Some(spec.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                DATA_HASH_ANNOTATION.to_owned(),
                data_hash.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: secret_type,
        data: Some(data),
        ..Secret::default()
    }
}

/// Names of the rendered keys that `secret` lacks or holds with other bytes.
fn mismatched_keys(secret: &Secret, rendered: &SecretMap) -> Vec<String> {
    rendered
        .keys()
        .filter(|key| {
            let want = rendered.expose(key).unwrap_or_default();
            let have = secret
                .data
                .as_ref()
                .and_then(|d| d.get(*key))
                .and_then(|b| std::str::from_utf8(&b.0).ok());
            !have.is_some_and(|have| constant_time_eq(have, want))
        })
        .map(str::to_owned)
        .collect()
}

/// Turns an apply failure into [`KubernetesError::FieldConflict`] (409) or
/// [`KubernetesError::Apply`], keeping only scrubbed text.
fn apply_error(
    namespace: &str,
    secret: &str,
    err: kube::Error,
    scrubber: &Scrubber,
) -> KubernetesError {
    if let kube::Error::Api(status) = &err
        && status.code == 409
    {
        let causes: Vec<String> = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .map(|c| match (c.field.is_empty(), c.message.is_empty()) {
                (false, false) => format!("{}: {}", c.field, c.message),
                (false, true) => c.field.clone(),
                _ => c.message.clone(),
            })
            .collect();
        let detail = if causes.is_empty() {
            status.message.clone()
        } else {
            causes.join("; ")
        };
        return KubernetesError::FieldConflict {
            namespace: namespace.to_owned(),
            secret: secret.to_owned(),
            detail: scrubber.scrub(&detail),
        };
    }
    KubernetesError::Apply {
        namespace: namespace.to_owned(),
        secret: secret.to_owned(),
        source: ApiFailure::from_kube(err, scrubber),
    }
}

impl fmt::Display for KubernetesPushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changed={} verified={} restarted=[{}]",
            self.changed,
            self.verified,
            self.restarted.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    fn rendered(pairs: &[(&str, &str)]) -> SecretMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
            .collect()
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    fn consumer(secret_type: Option<&str>) -> KubernetesConsumer {
        KubernetesConsumer {
            namespace: "ns".to_owned(),
            secret: "s".to_owned(),
            data: BTreeMap::new(),
            secret_type: secret_type.map(str::to_owned),
            restart: Vec::new(),
            force: false,
        }
    }

    fn existing(type_: Option<&str>) -> WipedSecret {
        WipedSecret(Secret {
            type_: type_.map(str::to_owned),
            ..Secret::default()
        })
    }

    fn is_valid_annotation_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_ANNOTATION_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    #[test]
    fn restart_marker_keys_are_valid_annotation_keys() {
        assert_eq!(
            restart_annotation_key("payments-db"),
            "rotor.dev/restarted-for-payments-db"
        );
        let exact = "a".repeat(MAX_ANNOTATION_NAME_LEN - RESTART_MARKER_PREFIX.len());
        assert_eq!(
            restart_annotation_key(&exact),
            format!("rotor.dev/restarted-for-{exact}")
        );
        let long_a = format!("{}-.-x", "a".repeat(40));
        let long_b = format!("{}-.-y", "a".repeat(40));
        for name in [&exact, &long_a, &long_b, &"b.c-".repeat(60)] {
            let key = restart_annotation_key(name);
            let (prefix, name_part) = key.split_once('/').unwrap();
            assert_eq!(prefix, "rotor.dev");
            assert!(is_valid_annotation_name(name_part), "{key}");
        }
        // Long names that share a prefix still get distinct keys.
        assert_ne!(
            restart_annotation_key(&long_a),
            restart_annotation_key(&long_b)
        );
        assert!(restart_annotation_key(&long_a).starts_with("rotor.dev/restarted-for-aaaa"));
    }

    #[test]
    fn scrubber_removes_plain_json_escaped_and_base64_values() {
        let values = rendered(&[("a", "pa\"ss\nword"), ("b", "hunter2"), ("c", "")]);
        let scrubber = Scrubber::new(&values);
        let b64 = base64::engine::general_purpose::STANDARD.encode("hunter2");
        let text = format!(
            "plain hunter2, json {{\"a\":\"pa\\\"ss\\nword\"}}, raw pa\"ss\nword, b64 {b64}, end"
        );
        let out = scrubber.scrub(&text);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains(&b64), "{out}");
        assert!(!out.contains("ss\\nword"), "{out}");
        assert!(!out.contains("ss\nword"), "{out}");
        assert!(out.starts_with("plain [REDACTED], json"), "{out}");
        assert!(out.ends_with(", end"), "{out}");
        // An empty value scrubs nothing.
        assert_eq!(Scrubber::new(&rendered(&[("x", "")])).scrub("abc"), "abc");
    }

    #[test]
    fn api_failures_are_classified_and_scrubbed() {
        let values = rendered(&[("k", "s3cr3t-value")]);
        let scrubber = Scrubber::new(&values);
        let e = ApiFailure::from_kube(
            api_error(
                503,
                "ServiceUnavailable",
                "etcd down while writing s3cr3t-value",
            ),
            &scrubber,
        );
        assert!(e.is_transient());
        assert_eq!(e.code(), Some(503));
        assert_eq!(e.reason(), "ServiceUnavailable");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(!format!("{e:?}").contains("s3cr3t"));
        for (code, transient) in [
            (429, true),
            (408, true),
            (500, true),
            (403, false),
            (404, false),
            (422, false),
        ] {
            let e = ApiFailure::from_kube(api_error(code, "X", "m"), &scrubber);
            assert_eq!(e.is_transient(), transient, "{code}");
        }
        // serde_json quotes the offending value in its message; only the shape is kept.
        let serde_err = serde_json::from_str::<u32>("\"s3cr3t-value\"").unwrap_err();
        assert!(serde_err.to_string().contains("s3cr3t-value"));
        let e = ApiFailure::from_kube(kube::Error::SerdeError(serde_err), &Scrubber::default());
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(!e.is_transient());
        let e = ApiFailure::from_kube(
            kube::Error::Service("connection refused".into()),
            &Scrubber::default(),
        );
        assert!(e.is_transient());
    }

    #[test]
    fn a_409_on_apply_is_a_field_conflict_naming_field_and_manager() {
        // The body a real API server sends for an apply conflict.
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Apply failed with 1 conflict: conflict with \"someone-else\" using v1: .data.PGPASSWORD",
            "reason": "Conflict",
            "details": {"causes": [{
                "reason": "FieldManagerConflict",
                "message": "conflict with \"someone-else\" using v1",
                "field": ".data.PGPASSWORD"
            }]},
            "code": 409
        }))
        .unwrap();
        let err = apply_error(
            "ns",
            "s",
            kube::Error::Api(status.boxed()),
            &Scrubber::default(),
        );
        let text = err.to_string();
        assert_eq!(err.kind(), "field_conflict");
        assert!(!err.is_transient());
        assert!(
            text.contains(".data.PGPASSWORD: conflict with \"someone-else\""),
            "{text}"
        );
        assert!(text.contains("force: true"), "{text}");

        let err = apply_error(
            "ns",
            "s",
            api_error(403, "Forbidden", "no"),
            &Scrubber::default(),
        );
        assert_eq!(err.kind(), "apply");
        assert!(!err.is_transient());
        let err = apply_error(
            "ns",
            "s",
            api_error(502, "BadGateway", "lb"),
            &Scrubber::default(),
        );
        assert!(err.is_transient());
    }

    #[test]
    fn a_lost_compare_and_swap_on_a_workload_is_transient() {
        let source =
            ApiFailure::from_kube(api_error(409, "Conflict", "stale"), &Scrubber::default());
        let err = KubernetesError::Restart {
            namespace: "ns".to_owned(),
            workload: "deployment/api".to_owned(),
            source,
        };
        assert_eq!(err.kind(), "restart");
        assert!(err.is_transient());
        let missing = KubernetesError::WorkloadMissing {
            namespace: "ns".to_owned(),
            workload: "deployment/api".to_owned(),
        };
        assert!(!missing.is_transient());
        assert!(missing.to_string().contains("deployment/api"));
    }

    #[test]
    fn secret_type_follows_the_existing_secret() {
        assert_eq!(choose_type(&consumer(None), None).unwrap(), "Opaque");
        assert_eq!(
            choose_type(&consumer(Some("kubernetes.io/tls")), None).unwrap(),
            "kubernetes.io/tls"
        );
        assert_eq!(
            choose_type(&consumer(None), Some(&existing(Some("kubernetes.io/tls")))).unwrap(),
            "kubernetes.io/tls"
        );
        assert_eq!(
            choose_type(&consumer(Some("Opaque")), Some(&existing(None))).unwrap(),
            "Opaque"
        );
        let err = choose_type(
            &consumer(Some("kubernetes.io/basic-auth")),
            Some(&existing(Some("Opaque"))),
        )
        .unwrap_err();
        assert_eq!(err.kind(), "type_mismatch");
        assert!(err.to_string().contains("cannot be changed"), "{err}");
    }

    #[test]
    fn mismatched_keys_compares_bytes_and_ignores_foreign_keys() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("a".to_owned(), ByteString(b"one".to_vec())),
                ("b".to_owned(), ByteString(b"TWO".to_vec())),
                ("c".to_owned(), ByteString(vec![0xff, 0xfe])),
                ("foreign".to_owned(), ByteString(b"x".to_vec())),
            ])),
            ..Secret::default()
        };
        let want = rendered(&[("a", "one"), ("b", "two"), ("c", "x"), ("d", "four")]);
        assert_eq!(mismatched_keys(&secret, &want), ["b", "c", "d"]);
        assert!(mismatched_keys(&secret, &rendered(&[("a", "one")])).is_empty());
    }

    #[test]
    fn rendered_keys_must_be_the_declared_keys() {
        let mut spec = consumer(None);
        spec.data.insert(
            "A".to_owned(),
            crate::policy::Template::parse("{{ password }}").unwrap(),
        );
        assert!(check_rendered_keys(&spec, &rendered(&[("A", "v")])).is_ok());
        let err =
            check_rendered_keys(&spec, &rendered(&[("A", "v"), ("B", "value-of-b")])).unwrap_err();
        assert_eq!(err.kind(), "rendered_keys");
        assert!(!err.is_transient());
        let text = format!("{err} {err:?}");
        assert!(text.contains("\"B\""), "{text}");
        assert!(!text.contains("value-of-b"), "{text}");
    }

    #[test]
    fn only_an_empty_secret_rotor_alone_manages_is_deleted_on_retire() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let entry = |manager: &str| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            ..ManagedFieldsEntry::default()
        };
        let secret = |data: &[(&str, &str)], managers: &[&str], label: bool| Secret {
            metadata: ObjectMeta {
                labels: label.then(|| {
                    BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())])
                }),
                managed_fields: Some(managers.iter().map(|m| entry(m)).collect()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        assert!(only_rotors(&secret(&[], &["rotor"], true)));
        assert!(!only_rotors(&secret(&[("OTHER", "x")], &["rotor"], true)));
        assert!(!only_rotors(&secret(&[], &["rotor", "kubectl"], true)));
        assert!(!only_rotors(&secret(&[], &["rotor"], false)));
        assert!(
            !only_rotors(&secret(&[], &[], true)),
            "no managedFields: unknown"
        );

        let mut spec = consumer(None);
        for key in ["A", "B"] {
            spec.data.insert(
                key.to_owned(),
                crate::policy::Template::parse("{{ password }}").unwrap(),
            );
        }
        let s = secret(&[("B", "v"), ("OTHER", "x")], &["rotor"], true);
        assert_eq!(present_keys(&s, &spec), ["B"]);
    }

    #[test]
    fn desired_secret_holds_only_rendered_keys_as_data() {
        let spec = consumer(None);
        let s = desired_secret(&spec, &rendered(&[("k", "v")]), "hmac-sha256:ab", None);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["data"]["k"], "dg==");
        assert!(json.get("stringData").is_none());
        assert!(json.get("type").is_none());
        assert_eq!(
            json["metadata"]["annotations"][DATA_HASH_ANNOTATION],
            "hmac-sha256:ab"
        );
        assert_eq!(json["metadata"]["labels"][MANAGED_BY_LABEL], "rotor");
        assert_eq!(json["kind"], "Secret");
    }
}
