//! CustomResourceDefinitions as a real API server serves them: a stored
//! `apiextensions.k8s.io/v1` CRD makes its resource served (discovery, CRUD, list, watch,
//! apply, `/status` when declared), and before it exists (or after it is deleted) the
//! resource answers 404.
//!
//! The backend (`kube-fake-client`) needs every stored type registered when it is built,
//! so custom resources can only be stored for the types in [`STORAGE`] (registered up
//! front, namespaced). A CRD for another type is stored and established, but requests for
//! its resource are answered 404 with a message naming [`STORAGE`]. The CRD's
//! `additionalPrinterColumns`, schema and `subresources.status` are read on every request,
//! so a changed CRD takes effect at once.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::feed;

/// Path of the CRD collection.
pub(super) const CRD_PATH: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// The custom resource types the backend can store: group, version, kind, plural.
pub const STORAGE: &[(&str, &str, &str, &str)] =
    &[("rotor.dev", "v1", "RotationPolicy", "rotationpolicies")];

/// Declares a storage type for the backend: a namespaced kind with no fields of its own.
macro_rules! storage_type {
    ($name:ident, $index:expr) => {
        /// A custom resource type registered in the backend (see [`STORAGE`]).
        #[derive(Default)]
        pub(super) struct $name {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                STORAGE[$index].2.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                STORAGE[$index].0.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                STORAGE[$index].1.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                STORAGE[$index].3.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }

        // The backend reads the GVK of a status-subresource type from a serialised default.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let (group, version, kind, _) = STORAGE[$index];
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("apiVersion", &format!("{group}/{version}"))?;
                map.serialize_entry("kind", kind)?;
                map.serialize_entry("metadata", &self.metadata)?;
                map.end()
            }
        }
    };
}

storage_type!(RotationPolicyStorage, 0);

/// Registers the [`STORAGE`] types (with a status subresource) in a backend builder.
pub(super) fn register(
    builder: kube_fake_client::ClientBuilder,
) -> kube_fake_client::ClientBuilder {
    builder
        .with_resource::<RotationPolicyStorage>()
        .with_status_subresource::<RotationPolicyStorage>()
}

/// The kind of a [`STORAGE`] type stored under `group/version/plural`.
pub(super) fn storage_kind(group: &str, version: &str, plural: &str) -> Option<&'static str> {
    STORAGE
        .iter()
        .find(|(g, v, _, p)| *g == group && *v == version && *p == plural)
        .map(|(_, _, kind, _)| *kind)
}

/// One served version of a stored CRD: what the front needs to serve its resource.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) kind: String,
    pub(super) plural: String,
    pub(super) singular: String,
    pub(super) short_names: Vec<String>,
    pub(super) categories: Vec<String>,
    pub(super) namespaced: bool,
    /// `subresources.status` declared for this version.
    pub(super) status: bool,
    /// `schema.openAPIV3Schema` of this version.
    pub(super) schema: Option<Value>,
    /// `additionalPrinterColumns` of this version.
    pub(super) columns: Vec<Value>,
}

impl Served {
    /// Whether the backend can store this resource.
    pub(super) fn stored(&self) -> bool {
        storage_kind(&self.group, &self.version, &self.plural) == Some(self.kind.as_str())
    }
}

/// Every stored CRD, as the backend has them.
pub(super) async fn all(backend: &kube::Client) -> Vec<Value> {
    feed::get(backend, CRD_PATH)
        .await
        .and_then(|list| list.get("items").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// Every served version of every stored CRD.
pub(super) async fn served(backend: &kube::Client) -> Vec<Served> {
    all(backend).await.iter().flat_map(versions_of).collect()
}

/// The served version of `group/version/plural`, when a stored CRD serves it.
pub(super) async fn lookup(
    backend: &kube::Client,
    group: &str,
    version: &str,
    plural: &str,
) -> Option<Served> {
    served(backend)
        .await
        .into_iter()
        .find(|s| s.group == group && s.version == version && s.plural == plural)
}

/// The served versions of one CRD object.
fn versions_of(crd: &Value) -> Vec<Served> {
    let spec = &crd["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let names = &spec["names"];
    let kind = text(&names["kind"]);
    let singular = match text(&names["singular"]) {
        s if s.is_empty() => kind.to_ascii_lowercase(),
        s => s,
    };
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .map(|v| Served {
            group: text(&spec["group"]),
            version: text(&v["name"]),
            kind: kind.clone(),
            plural: text(&names["plural"]),
            singular: singular.clone(),
            short_names: list(&names["shortNames"]),
            categories: list(&names["categories"]),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status: v.pointer("/subresources/status").is_some(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// Why a CRD is refused (the real server's messages for what is checked here): `None`
/// when it is acceptable. Checked: the name is `PLURAL.GROUP`, names and group are set,
/// one storage version, scope `Namespaced` or `Cluster`.
pub(super) fn invalid(crd: &Value) -> Vec<(String, String)> {
    let spec = &crd["spec"];
    let text = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let mut errors = Vec::new();
    for (pointer, field) in [
        ("/spec/group", "spec.group"),
        ("/spec/names/plural", "spec.names.plural"),
        ("/spec/names/kind", "spec.names.kind"),
    ] {
        if text(pointer).is_empty() {
            errors.push((field.to_owned(), "Required value".to_owned()));
        }
    }
    let expected = format!("{}.{}", text("/spec/names/plural"), text("/spec/group"));
    let name = text("/metadata/name");
    if errors.is_empty() && name != expected {
        errors.push((
            "metadata.name".to_owned(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => errors.push((
            "spec.scope".to_owned(),
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
        None => errors.push(("spec.scope".to_owned(), "Required value".to_owned())),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if versions.is_empty() {
        errors.push((
            "spec.versions".to_owned(),
            "Invalid value: \"null\": must have exactly one version marked as storage version"
                .to_owned(),
        ));
    } else if storage != 1 {
        errors.push((
            "spec.versions".to_owned(),
            format!("Invalid value: []apiextensions.CustomResourceDefinitionVersion{{...}}: must have exactly one version marked as storage version (found {storage})"),
        ));
    }
    errors
}

/// The status a real server gives an accepted CRD: names accepted, established, the
/// storage version stored.
pub(super) fn established_status(crd: &Value, now: &str) -> Value {
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "True", "lastTransitionTime": now,
               "reason": reason, "message": message})
    };
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": storage,
    })
}

/// Whether `path` (a backend path) is the CRD collection or one CRD.
pub(super) fn is_crd_path(group: &str, plural: &str) -> bool {
    group == "apiextensions.k8s.io" && plural == "customresourcedefinitions"
}

/// Writes the established status of the CRD `name` (after a create or update) and answers
/// the stored CRD.
pub(super) async fn establish(backend: &kube::Client, crd: &Value, now: &str) -> Option<Value> {
    let name = crd.pointer("/metadata/name")?.as_str()?;
    let status = established_status(crd, now);
    if crd.get("status").is_some_and(|s| {
        s["acceptedNames"] == status["acceptedNames"]
            && s["storedVersions"] == status["storedVersions"]
            && s["conditions"].as_array().is_some_and(|c| !c.is_empty())
    }) {
        return None;
    }
    let (code, object) = feed::call(
        backend,
        Method::PATCH,
        &format!("{CRD_PATH}/{name}/status"),
        "application/merge-patch+json",
        json!({"status": status}).to_string(),
    )
    .await
    .ok()?;
    (code == StatusCode::OK).then_some(object)
}

/// Discovery entries of the served custom resources: group → versions → resources.
pub(super) fn discovery(served: &[Served]) -> BTreeMap<String, BTreeMap<String, Vec<Value>>> {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for s in served {
        let resources = groups
            .entry(s.group.clone())
            .or_default()
            .entry(s.version.clone())
            .or_default();
        let mut entry = json!({
            "name": s.plural,
            "singularName": s.singular,
            "namespaced": s.namespaced,
            "kind": s.kind,
            "verbs": super::VERBS,
        });
        if !s.short_names.is_empty() {
            entry["shortNames"] = json!(s.short_names);
        }
        if !s.categories.is_empty() {
            entry["categories"] = json!(s.categories);
        }
        resources.push(entry);
        if s.status {
            resources.push(json!({
                "name": format!("{}/status", s.plural),
                "singularName": "",
                "namespaced": s.namespaced,
                "kind": s.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    groups
}

/// A `RotationPolicy` CRD resembling rotor's (namespaced, `/status`, a structural schema
/// with required `spec.credential` and `spec.vault`, printer columns Kind, Status, Last
/// rotation, Next rotation, Age), for the testkit's own tests. Tests of rotor install
/// the CRD rotor prints instead.
pub fn example_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "rotationpolicies.rotor.dev"},
        "spec": {
            "group": "rotor.dev",
            "scope": "Namespaced",
            "names": {"plural": "rotationpolicies", "singular": "rotationpolicy",
                      "kind": "RotationPolicy", "listKind": "RotationPolicyList",
                      "shortNames": ["rp"], "categories": ["rotor"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["credential", "vault"], "properties": {
                        "credential": {"type": "object", "required": ["type"], "properties": {
                            "type": {"type": "string", "enum": ["postgres", "mysql", "redis"]},
                            "role": {"type": "string"}}},
                        "vault": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "schedule": {"type": "string"}}},
                    "status": {"type": "object", "properties": {
                        "observedGeneration": {"type": "integer"},
                        "conditions": {"type": "array", "items": {"type": "object", "properties": {
                            "type": {"type": "string"}, "status": {"type": "string"},
                            "reason": {"type": "string"}, "message": {"type": "string"},
                            "lastTransitionTime": {"type": "string"}}}},
                        "lastRotation": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "nextRotation": {"type": "string"}}}
                }}},
                "additionalPrinterColumns": [
                    {"name": "Kind", "type": "string", "jsonPath": ".spec.credential.type"},
                    {"name": "Status", "type": "string",
                     "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"},
                    {"name": "Last rotation", "type": "date", "jsonPath": ".status.lastRotation.time"},
                    {"name": "Next rotation", "type": "date", "jsonPath": ".status.nextRotation"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ]
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_versions_are_read_from_the_crd() {
        let served = versions_of(&example_crd());
        assert_eq!(served.len(), 1);
        let s = &served[0];
        assert_eq!(
            (s.kind.as_str(), s.plural.as_str(), s.singular.as_str()),
            ("RotationPolicy", "rotationpolicies", "rotationpolicy")
        );
        assert!(s.namespaced && s.status && s.stored());
        assert_eq!(s.short_names, ["rp"]);
        let groups = discovery(&served);
        let resources = &groups["rotor.dev"]["v1"];
        assert_eq!(resources[1]["name"], "rotationpolicies/status");
    }

    #[test]
    fn a_crd_must_be_named_plural_dot_group() {
        assert!(invalid(&example_crd()).is_empty());
        let mut wrong = example_crd();
        wrong["metadata"]["name"] = json!("policies.rotor.dev");
        let errors = invalid(&wrong);
        assert_eq!(errors[0].0, "metadata.name");
        let mut two = example_crd();
        two["spec"]["versions"] = json!([]);
        assert_eq!(invalid(&two)[0].0, "spec.versions");
    }
}
