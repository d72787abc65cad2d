//! Rollout restarts of the workloads that read a Secret, exactly once per data change
//! (see the module documentation of [`super`]): each pod template carries
//! `rotor.dev/restarted-for-<secret>` = the data hash it was last rolled for.

use std::fmt;

use chrono::{SecondsFormat, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::error::{ApiFailure, KubernetesError};
use super::{FIELD_MANAGER, KubernetesConsumerClient, RESTARTED_AT_ANNOTATION, annotation};
use crate::consumers::scrub::Scrubber;
use crate::policy::{WorkloadKind, WorkloadRef};

/// Prefix of the restart marker annotation (the Secret name follows).
pub(super) const RESTART_MARKER_PREFIX: &str = "restarted-for-";
/// Longest name part of an annotation key Kubernetes accepts.
pub(super) const MAX_ANNOTATION_NAME_LEN: usize = 63;

impl KubernetesConsumerClient {
    /// Rolls `workload` unless its restart marker for `secret` already equals
    /// `data_hash`. Returns whether it was rolled.
    pub(super) async fn restart(
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

/// Workloads with a pod template.
trait PodTemplated {
    fn template_meta(&self) -> Option<&ObjectMeta>;

    fn template_annotation(&self, key: &str) -> Option<&str> {
        self.template_meta().and_then(|m| annotation(m, key))
    }
}

impl PodTemplated for Deployment {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec.template.metadata.as_ref()
    }
}

impl PodTemplated for StatefulSet {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec.template.metadata.as_ref()
    }
}

impl PodTemplated for DaemonSet {
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec.template.metadata.as_ref()
    }
}
