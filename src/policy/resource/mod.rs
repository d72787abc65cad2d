//! The `RotationPolicy` custom resource (`rotationpolicies.rotor.dev`, namespaced):
//! a policy kept in Kubernetes instead of a file.
//!
//! - Its `spec` is exactly a policy file's `spec`. It is kept as written
//!   ([`RotationPolicySpec`] wraps the JSON) so that a bad resource still reads, and
//!   [`RotationPolicy::validate`] checks it with the same code, messages and field paths
//!   (`spec.…`) as `rotor validate`, naming the source `namespace/name`.
//! - Its schema ([`crd`]) is generated from the raw model that reads policy files
//!   (`schema`), so the API server enforces the structural rules (types, required
//!   fields, enums, bounds) and `rotor validate` remains the full check.
//! - Its `status` ([`RotationPolicyStatus`]) is written through the status
//!   subresource.
//! - A resource's policy name is its `metadata.name`: names are unique across every
//!   source (files, manifests, resources in any namespace), and a clash names both.

mod schema;
mod status;

use std::borrow::Cow;
use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub(crate) use schema::int_schema;
pub use status::{Condition, ConditionStatus, ConditionType, LastRotation, RotationPolicyStatus};

use super::raw::RawSpec;
use super::{LoadErrors, ValidatedPolicy};

/// The API group.
pub const GROUP: &str = "rotor.dev";
/// The API version within [`GROUP`].
pub const VERSION: &str = "v1";
/// `apiVersion` of a RotationPolicy resource.
pub const API_VERSION: &str = "rotor.dev/v1";
/// The kind.
pub const KIND: &str = "RotationPolicy";
/// The resource (plural) name.
pub const PLURAL: &str = "rotationpolicies";
/// The CRD's name.
pub const CRD_NAME: &str = "rotationpolicies.rotor.dev";
/// `kubectl get rp`.
pub const SHORT_NAMES: &[&str] = &["rp"];

/// A RotationPolicy object as the API server returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// `rotor.dev/v1` (filled in on serialization).
    #[serde(default = "api_version")]
    pub api_version: String,
    /// `RotationPolicy`.
    #[serde(default = "kind")]
    pub kind: String,
    /// The object's metadata; `name` is the policy name.
    pub metadata: ObjectMeta,
    /// The policy spec, as written.
    #[serde(default)]
    pub spec: RotationPolicySpec,
    /// What the agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RotationPolicyStatus>,
}

fn api_version() -> String {
    API_VERSION.to_owned()
}

fn kind() -> String {
    KIND.to_owned()
}

/// A policy spec as written in the resource: any JSON reads (the schema may be older
/// than this rotor, or the object may never have passed the API server's checks);
/// [`RotationPolicy::validate`] says whether it is a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RotationPolicySpec(pub serde_json::Value);

impl RotationPolicy {
    /// A resource `namespace/name` with `spec` (as in a policy file).
    pub fn new(namespace: &str, name: &str, spec: serde_json::Value) -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: RotationPolicySpec(spec),
            status: None,
        }
    }

    /// `namespace/name`: how errors and duplicate-name messages name this resource.
    pub fn source(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or(""),
            self.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// The resource as the policy document `rotor validate` reads (`apiVersion`,
    /// `kind`, `metadata` {name, namespace, labels}, `spec`): what the loader reads.
    pub(crate) fn document(&self) -> serde_json::Value {
        let mut metadata = serde_json::Map::new();
        if let Some(name) = &self.metadata.name {
            metadata.insert("name".into(), name.clone().into());
        }
        if let Some(ns) = &self.metadata.namespace {
            metadata.insert("namespace".into(), ns.clone().into());
        }
        if let Some(labels) = self.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
            metadata.insert("labels".into(), json!(labels));
        }
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            "spec": self.spec.0,
        })
    }

    /// Validates this resource as `rotor validate` validates a policy document: the
    /// same messages and field paths (`spec.credential.connection.port`, …), with the
    /// source (`PolicyError::file`) `namespace/name` and no line or column (0).
    /// Checks that need other policies (duplicate names, Vault locations, cascades)
    /// are made by [`super::load_all`].
    pub fn validate(&self) -> Result<ValidatedPolicy, LoadErrors> {
        let set = super::load::load_resources(std::slice::from_ref(self))?;
        set.into_iter().next().ok_or_else(|| {
            // Not reached: a resource without errors gives a policy.
            LoadErrors(vec![super::PolicyError {
                file: PathBuf::from(self.source()),
                line: 0,
                column: 0,
                path: "(document)".into(),
                message: "found no policy, expected one".into(),
            }])
        })
    }
}

impl kube::Resource for RotationPolicy {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl kube::core::object::HasSpec for RotationPolicy {
    type Spec = RotationPolicySpec;

    fn spec(&self) -> &RotationPolicySpec {
        &self.spec
    }

    fn spec_mut(&mut self) -> &mut RotationPolicySpec {
        &mut self.spec
    }
}

impl kube::core::object::HasStatus for RotationPolicy {
    type Status = RotationPolicyStatus;

    fn status(&self) -> Option<&RotationPolicyStatus> {
        self.status.as_ref()
    }

    fn status_mut(&mut self) -> &mut Option<RotationPolicyStatus> {
        &mut self.status
    }
}

impl kube::CustomResourceExt for RotationPolicy {
    fn crd() -> CustomResourceDefinition {
        crd()
    }

    fn crd_name() -> &'static str {
        CRD_NAME
    }

    fn api_resource() -> kube::core::ApiResource {
        kube::core::ApiResource::erase::<Self>(&())
    }

    fn shortnames() -> &'static [&'static str] {
        SHORT_NAMES
    }
}

/// The CustomResourceDefinition of RotationPolicy (`apiextensions.k8s.io/v1`),
/// its schema generated from the policy model.
pub fn crd() -> CustomResourceDefinition {
    serde_json::from_value(crd_json()).expect("the generated CRD is a CustomResourceDefinition")
}

/// [`crd`] as YAML: what `rotor crd` prints and the chart installs
/// (`charts/rotor/crds/rotationpolicies.rotor.dev.yaml`).
pub fn crd_yaml() -> String {
    let text = serde_saphyr::to_string(&crd()).expect("a CRD serializes");
    format!(
        "# The RotationPolicy CustomResourceDefinition, generated by `rotor crd`: do not edit.\n{text}"
    )
}

fn crd_json() -> serde_json::Value {
    let spec = schema::structural_schema::<RawSpec>();
    let status = schema::structural_schema::<RotationPolicyStatus>();
    let column = |name: &str, type_: &str, path: &str, description: &str| json!({"name": name, "type": type_, "jsonPath": path, "description": description});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": "RotationPolicyList",
                "plural": PLURAL,
                "singular": "rotationpolicy",
                "shortNames": SHORT_NAMES,
                "categories": ["rotor"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    column("Kind", "string", ".spec.credential.type", "The credential kind."),
                    column("Status", "string", ".status.phase", "A summary of the conditions."),
                    column("Last rotation", "date", ".status.lastRotation.time", "When the last rotation ended."),
                    column("Next rotation", "string", ".status.nextRotation", "When the next scheduled rotation is due."),
                    column("Age", "date", ".metadata.creationTimestamp", "When the resource was created."),
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A credential rotor rotates through Vault to its consumers (a rotor policy kept in Kubernetes).",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    })
}

#[cfg(test)]
mod tests;
