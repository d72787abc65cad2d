//! The `kubernetes` consumer: writes rendered values into the keys of a Kubernetes
//! Secret with server-side apply (field manager [`FIELD_MANAGER`]), reads the Secret
//! back to prove the write, and rolls the named workloads exactly once per data change.
//!
//! Only the keys rendered from the policy are applied, so keys that another field
//! manager owns in the same Secret are left alone; a key that another manager owns is
//! a [`KubernetesError::FieldConflict`] unless the consumer sets `force: true`. A key
//! that another manager writes through `stringData` never conflicts on apply (a real API
//! server records it as `f:stringData.f:KEY`): rotor reads `managedFields` before and
//! after its apply and reports such a key, or one read back with another manager's
//! value, as a [`KubernetesError::KeyConflict`] ([`ownership`]).
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

mod error;
pub mod ownership;
mod rollout;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use secrecy::ExposeSecret;
use tracing::{info, warn};
use zeroize::Zeroize;

use super::{
    Consumer, ConsumerKind, Context, NewValue, PushOutcome, PushResult, ReadBack, ReadBackResult,
    RemoveOutcome, RemoveResult, differing_keys, render_map, scrub::Scrubber,
};
use crate::policy::KubernetesConsumer;
use crate::secret::SecretMap;

pub use self::error::{ApiFailure, KubernetesError};
pub use self::rollout::restart_annotation_key;

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
        let scrubber = Scrubber::of_secret_data(rendered);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);

        let existing = read_secret(&secrets, namespace, name, &scrubber).await?;
        if let Some(old) = &existing {
            check_owners(spec, &managed_fields(&old.0.metadata), rendered, &[])?;
        }

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
        let owners = managed_fields(&applied.metadata);
        drop(WipedSecret(applied));
        drop(desired);

        let mismatched = match self.read_back(spec, rendered, Some(data_hash)).await? {
            ReadBack::Matches => Vec::new(),
            ReadBack::Differs { fields } => fields,
            ReadBack::Missing | ReadBack::NotReadable => {
                vec!["(the Secret or its keys are gone)".to_owned()]
            }
        };
        check_owners(spec, &owners, rendered, &mismatched)?;
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
        Ok(self.read_back(spec, rendered, None).await? == ReadBack::Matches)
    }

    /// Reads the Secret and compares it with `rendered` and, when given, rotor's
    /// data-hash annotation (`data_hash`): `Missing` when there is no Secret or it
    /// holds none of the rendered keys, `Differs` naming the rendered keys it lacks or
    /// holds with other bytes (and the annotation). Keys rotor does not own are
    /// ignored. Push verifies its apply with this.
    pub async fn read_back(
        &self,
        spec: &KubernetesConsumer,
        rendered: &SecretMap,
        data_hash: Option<&str>,
    ) -> Result<ReadBack, KubernetesError> {
        check_rendered_keys(spec, rendered)?;
        let scrubber = Scrubber::of_secret_data(rendered);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &spec.namespace);
        let Some(current) = read_secret(&secrets, &spec.namespace, &spec.secret, &scrubber).await?
        else {
            return Ok(ReadBack::Missing);
        };
        let data = current.0.data.as_ref();
        if !rendered
            .keys()
            .any(|k| data.is_some_and(|d| d.contains_key(k)))
        {
            return Ok(ReadBack::Missing);
        }
        let mut fields = mismatched_keys(&current.0, rendered);
        if data_hash
            .is_some_and(|h| annotation(&current.0.metadata, DATA_HASH_ANNOTATION) != Some(h))
        {
            fields.push(format!("metadata.annotations[{DATA_HASH_ANNOTATION}]"));
        }
        Ok(ReadBack::of_differences(fields))
    }
}

/// The Secret `namespace/name`, if it exists; API errors are scrubbed of `scrubber`'s
/// values.
async fn read_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    scrubber: &Scrubber,
) -> Result<Option<WipedSecret>, KubernetesError> {
    Ok(secrets
        .get_opt(name)
        .await
        .map_err(|e| KubernetesError::Read {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
            source: ApiFailure::from_kube(e, scrubber),
        })?
        .map(WipedSecret))
}

/// A Secret's `metadata.managedFields` as JSON (`null` when it has none).
fn managed_fields(meta: &ObjectMeta) -> serde_json::Value {
    serde_json::to_value(&meta.managed_fields).unwrap_or_default()
}

/// [`KubernetesError::KeyConflict`] when `managed_fields` shows another manager writing
/// a rendered key through `stringData`, or through `data` for a key in `differing`.
fn check_owners(
    spec: &KubernetesConsumer,
    managed_fields: &serde_json::Value,
    rendered: &SecretMap,
    differing: &[String],
) -> Result<(), KubernetesError> {
    let conflicts = ownership::conflicts(managed_fields, rendered.keys(), differing, FIELD_MANAGER);
    if conflicts.is_empty() {
        return Ok(());
    }
    warn!(
        namespace = %spec.namespace,
        secret = %spec.secret,
        conflicts = conflicts.len(),
        "Another field manager writes keys rotor applies."
    );
    Err(KubernetesError::KeyConflict {
        namespace: spec.namespace.clone(),
        secret: spec.secret.clone(),
        conflicts,
    })
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
    let data = secret.data.as_ref();
    differing_keys(rendered, |key| {
        data.and_then(|d| d.get(key))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
    })
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

impl Consumer for KubernetesConsumer {
    fn consumer_kind(&self) -> ConsumerKind {
        ConsumerKind::Kubernetes
    }

    async fn push(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        let rendered = render_map(&self.data, new.vars)?;
        let hash = new.fingerprints.fingerprint_map(&rendered);
        let report = ctx
            .clients
            .kube()
            .await?
            .push(self, &rendered, &hash)
            .await?;
        Ok(PushOutcome {
            changed: report.changed,
            verified: report.verified,
            restarted: report.restarted,
        })
    }

    async fn read_back(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> ReadBackResult {
        let rendered = render_map(&self.data, new.vars)?;
        let hash = new.fingerprints.fingerprint_map(&rendered);
        let client = ctx.clients.kube().await?;
        Ok(client.read_back(self, &rendered, Some(&hash)).await?)
    }

    async fn remove(&self, ctx: &Context<'_>) -> RemoveResult {
        let r = ctx.clients.kube().await?.remove(self).await?;
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
        Ok(RemoveOutcome::verified(
            !r.removed_keys.is_empty() || r.deleted,
            format!("{keys}{secret}"),
        ))
    }
}

#[cfg(test)]
mod tests;
