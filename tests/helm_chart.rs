//! The Helm chart `charts/rotor`, linted (strict) and rendered by the real Helm engine
//! (helm-python-sdk, installed into `.tools/venv` by `dev/stack up`, driven by
//! `rotor_testkit::helm`) for the values a platform engineer would use: defaults, HA
//! with 3 replicas, monitoring on, and existing ConfigMap/Secrets with a PVC and a
//! NetworkPolicy. Every rendered object must deserialise into its k8s-openapi type
//! without losing a field; the RBAC is least privilege (named objects only, no
//! wildcard, no list/watch on Secrets, delete only on the named Secrets, no
//! cluster-wide secret access); the pod meets the Pod Security "restricted" profile;
//! `values.schema.json` rejects bad values; the chart ships the same alert rules and
//! dashboard as `monitoring/`. `tests/chart_rbac.rs` runs rotor under this RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rotor_testkit::helm;
use rotor_testkit::stack::workspace_root;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const RELEASE: &str = "prod";
const NAMESPACE: &str = "rotor-system";
/// The full name of every resource for release `prod` (RELEASE-rotor).
const FULLNAME: &str = "prod-rotor";

fn chart_dir() -> PathBuf {
    helm::chart_dir()
}

fn op(kind: &str, values: &Value) -> Value {
    helm::op(kind, &chart_dir(), values, RELEASE, NAMESPACE)
}

/// A rendered release: every document (each already checked against its type) and
/// NOTES.txt.
struct Rendered {
    docs: Vec<Value>,
    notes: String,
}

impl Rendered {
    fn kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.kind(kind)
            .into_iter()
            .map(|v| serde_json::from_value(v.clone()).expect("checked when rendered"))
            .collect()
    }

    fn one<T: DeserializeOwned>(&self, kind: &str) -> T {
        let mut all = self.all::<T>(kind);
        assert_eq!(all.len(), 1, "expected exactly one {kind}");
        all.remove(0)
    }

    fn deployment(&self) -> Deployment {
        self.one("Deployment")
    }
}

/// Deserialises `doc` into `T` and serialises it back: the two must be equal, so a
/// misspelt or misplaced field (which k8s-openapi would silently drop) fails too.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value, template: &str) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{template}: {} {} does not deserialise into its k8s-openapi type: {e}",
            doc["kind"], doc["metadata"]["name"]
        )
    });
    let back = serde_json::to_value(&typed).expect("serialises");
    if let Some(difference) = first_difference(doc, &back, "") {
        panic!(
            "{template}: {} {} loses or changes fields through its k8s-openapi type: {difference}",
            doc["kind"], doc["metadata"]["name"]
        );
    }
}

/// Where `rendered` and `typed` (its round trip) first differ, e.g.
/// `/spec/template/…/readOnlyRootFileSystem: rendered true, typed (absent)`.
fn first_difference(rendered: &Value, typed: &Value, path: &str) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let here = format!("{path}/{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, &here),
                    (x, y) => Some(format!(
                        "{here}: rendered {}, typed {}",
                        x.map_or("(absent)".into(), Value::to_string),
                        y.map_or("(absent)".into(), Value::to_string)
                    )),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}/{i}"))),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: rendered {a}, typed {b}")),
    }
}

fn check_typed(doc: &Value, template: &str) {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc, template),
        ("v1", "Service") => round_trip::<Service>(doc, template),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc, template),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc, template),
        ("v1", "Secret") => round_trip::<Secret>(doc, template),
        ("v1", "PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(doc, template),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc, template),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc, template),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(doc, template)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc, template),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(doc, template),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(doc, template),
        // CRDs of the Prometheus operator: no k8s-openapi type, checked as YAML.
        ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule") => {
            assert!(
                doc["spec"].as_object().is_some_and(|s| !s.is_empty()),
                "{template}: {kind} without a spec"
            );
            assert!(
                doc["metadata"]["name"].is_string(),
                "{template}: {kind} without a name"
            );
        }
        _ => panic!("{template}: unexpected object {api_version} {kind}"),
    }
}

/// Renders the chart with `values` (schema-checked by Helm as an install would be),
/// parses every document with serde-saphyr and checks it against its type.
fn render(values: &Value) -> Rendered {
    let manifests = helm::render(&chart_dir(), values, RELEASE, NAMESPACE);
    let mut docs = Vec::new();
    let mut notes = String::new();
    for (template, text) in manifests {
        if template.ends_with("NOTES.txt") {
            notes = text;
            continue;
        }
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{template} is not valid YAML: {e}\n{text}"));
        for value in values {
            check_typed(&value, &template);
            let namespaced = !matches!(
                value["kind"].as_str(),
                Some("ClusterRoleBinding" | "ClusterRole")
            );
            if namespaced {
                assert!(
                    value["metadata"]["namespace"].is_string(),
                    "{template}: {} has no namespace",
                    value["kind"]
                );
            }
            docs.push(value);
        }
    }
    Rendered { docs, notes }
}

/// Renders `values` and returns Helm's error, which must happen.
fn render_error(values: &Value) -> String {
    match helm::run(vec![op("render", values)]).remove(0) {
        Ok(_) => panic!("render with {values} should have failed"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------
// The values sets.

fn defaults() -> Value {
    json!({})
}

fn ha() -> Value {
    json!({
        "replicas": 3,
        "policyResources": {"enabled": true, "namespaces": ["payments", "edge"]},
        "rbac": {"namespaces": [
            {"namespace": "payments", "secrets": ["payments-db"], "deployments": ["payments-api"]},
        ]},
    })
}

fn monitoring_on() -> Value {
    json!({
        "metrics": {
            "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
            "grafanaDashboard": {
                "enabled": true,
                "labelKey": "grafana_dashboard_rotor",
                "labelValue": "yes",
                "annotations": {"grafana_folder": "Security"},
            },
        },
        "rbac": {"tokenReview": true},
        "policies": {
            "payments-db.yaml": "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: payments-db\n",
        },
    })
}

fn existing_objects() -> Value {
    json!({
        "existingPolicyConfigMap": "team-rotor-policies",
        "policyResources": {"enabled": true},
        "auth": {"existingSecret": "rotor-api-auth", "key": "identities.yaml"},
        "agent": {"notify": {"url": "https://hooks.example.internal/rotor", "existingSecret": "rotor-notify", "secretKey": "hmac"}},
        "audit": {"persistence": {"enabled": true, "size": "5Gi", "storageClass": "fast-ssd"}},
        "vault": {
            "address": "https://vault.example.internal:8200",
            "namespace": "platform",
            "caCert": {"configMapName": "vault-ca", "key": "ca.pem"},
            "auth": {"method": "token", "token": {"existingSecret": "rotor-vault", "key": "vault-token"}},
        },
        "networkPolicy": {
            "enabled": true,
            "ingress": {"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
                {"podSelector": {"matchLabels": {"rotor-client": "true"}}},
            ]},
            "egress": {"restrict": true, "to": [
                {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 8200, "protocol": "TCP"}]},
            ]},
        },
        "rbac": {"namespaces": [
            {"namespace": "payments", "secrets": ["payments-db", "payments-api-key"],
             "deployments": ["payments-api"], "statefulsets": ["payments-worker"]},
            {"namespace": "edge", "secrets": ["ingress-tls"], "daemonsets": ["edge-proxy"]},
        ]},
    })
}

fn examples() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", defaults()),
        ("ha", ha()),
        ("monitoring", monitoring_on()),
        ("existing objects", existing_objects()),
    ]
}

// ---------------------------------------------------------------------------------
// Shared assertions.

fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// `flag` is followed by `value` in the container's arguments.
fn arg_value(container: &Container, flag: &str) -> Option<String> {
    let args = args(container);
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn rotor_container(deployment: &Deployment) -> Container {
    let spec = &deployment.spec;
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1, "one container");
    pod.containers[0].clone()
}

/// The Pod Security "restricted" profile, the probes and the agent's listen address.
fn assert_restricted_pod(deployment: &Deployment) {
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true), "pod runAsNonRoot");
    assert_eq!(psc.run_as_user, Some(65532), "pod runAsUser");
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "pod seccompProfile"
    );
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.host_path.is_none()),
        "no hostPath volume"
    );

    let c = rotor_container(deployment);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "container runAsNonRoot");
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "allowPrivilegeEscalation"
    );
    assert_ne!(sc.privileged, Some(true), "privileged");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop,
        Some(vec!["ALL".to_owned()]),
        "capabilities drop ALL"
    );
    assert!(
        caps.add.as_ref().is_none_or(|a| a.is_empty()),
        "no capability added"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "container seccompProfile"
    );
    let ports = c.ports.clone().unwrap_or_default();
    assert!(ports.iter().all(|p| p.host_port.is_none()), "no hostPort");

    // Probes on the named port that is 9464.
    let http = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("port http");
    assert_eq!(http.container_port, 9464);
    let live = c.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    let ready = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    let live = live.expect("liveness httpGet");
    let ready = ready.expect("readiness httpGet");
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    for probe in [live, ready] {
        assert_eq!(probe.port, IntOrString::String("http".into()));
    }
    let resources = c.resources.as_ref().expect("resources");
    assert!(
        resources
            .requests
            .as_ref()
            .is_some_and(|r| r.contains_key("memory"))
    );
    assert!(
        resources
            .limits
            .as_ref()
            .is_some_and(|r| r.contains_key("memory"))
    );

    // The agent's command line.
    assert_eq!(args(&c).first().map(String::as_str), Some("run"));
    assert_eq!(arg_value(&c, "--listen").as_deref(), Some("0.0.0.0:9464"));
    assert_eq!(
        arg_value(&c, "--policies").as_deref(),
        Some("/etc/rotor/policies")
    );
    assert_eq!(
        arg_value(&c, "--audit-log").as_deref(),
        Some("/var/lib/rotor/audit/audit.jsonl")
    );

    // Writable places: /tmp (an emptyDir) and the audit directory; every other mount
    // is read-only, and every mount names a declared volume.
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let declared: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    for m in &mounts {
        assert!(
            declared.contains(m.name.as_str()),
            "mount {} has no volume",
            m.name
        );
        match m.mount_path.as_str() {
            "/tmp" | "/var/lib/rotor/audit" => assert_ne!(m.read_only, Some(true)),
            other => assert_eq!(m.read_only, Some(true), "{other} should be read-only"),
        }
    }
    let tmp = mounts
        .iter()
        .find(|m| m.mount_path == "/tmp")
        .expect("/tmp is mounted");
    let tmp_volume = volumes
        .iter()
        .find(|v| v.name == tmp.name)
        .expect("tmp volume");
    assert!(tmp_volume.empty_dir.is_some(), "/tmp is an emptyDir");
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/var/lib/rotor/audit"),
        "the audit directory is mounted"
    );
}

/// The Service selects the pods and serves the container's named port.
fn assert_service_reaches_pods(r: &Rendered) {
    let service: Service = r.one("Service");
    let deployment = r.deployment();
    let spec = service.spec.expect("service spec");
    let pod_labels = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    let selector = spec.selector.expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "service selector {k}");
    }
    let ports = spec.ports.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 9464);
    assert_eq!(ports[0].name.as_deref(), Some("http-metrics"));
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );
}

/// The ServiceAccount the pods run as (its name).
fn service_account(r: &Rendered) -> String {
    r.deployment()
        .spec
        .template
        .spec
        .and_then(|p| p.service_account_name)
        .expect("serviceAccountName")
}

fn names(values: &Value, key: &str) -> BTreeSet<String> {
    values[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Least privilege over every Role, RoleBinding and ClusterRoleBinding of a render
/// (the RotationPolicy grants, `policyResources`, by [`assert_policy_resource_rbac`]).
fn assert_least_privilege(r: &Rendered, values: &Value, leader_election: bool) {
    assert_policy_resource_rbac(r, values);
    let r = &without_policy_resource_rbac(r);
    let sa = service_account(r);
    let listed: Vec<&Value> = values["rbac"]["namespaces"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let listed_by_ns: BTreeMap<&str, &Value> = listed
        .iter()
        .map(|e| (e["namespace"].as_str().expect("namespace"), *e))
        .collect();

    let roles: Vec<Role> = r.all("Role");
    let bindings: Vec<RoleBinding> = r.all("RoleBinding");
    for role in &roles {
        let ns = role.metadata.namespace.clone().expect("role namespace");
        let name = role.metadata.name.clone().expect("role name");
        let rules: Vec<PolicyRule> = role.rules.clone().unwrap_or_default();
        assert!(!rules.is_empty(), "Role {ns}/{name} has rules");
        for rule in &rules {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            let resource_names = rule.resource_names.clone().unwrap_or_default();
            let all: Vec<&String> = groups
                .iter()
                .chain(&resources)
                .chain(&rule.verbs)
                .chain(&resource_names)
                .collect();
            assert!(
                all.iter().all(|s| !s.contains('*')),
                "Role {ns}/{name}: wildcard in {rule:?}"
            );
            assert!(
                rule.non_resource_urls.is_none(),
                "Role {ns}/{name}: non-resource URLs"
            );
            for verb in [
                "list",
                "watch",
                "deletecollection",
                "escalate",
                "bind",
                "impersonate",
            ] {
                assert!(
                    !rule.verbs.iter().any(|v| v == verb),
                    "Role {ns}/{name}: verb {verb} in {rule:?}"
                );
            }
            // delete: only the listed Secrets, by name (`rotor retire` deletes a
            // Secret it emptied when it created it and is its only manager).
            if rule.verbs.iter().any(|v| v == "delete") {
                assert!(
                    resources == ["secrets"] && !resource_names.is_empty(),
                    "Role {ns}/{name}: delete beyond the named Secrets in {rule:?}"
                );
            }
            if resource_names.is_empty() {
                // The only rule Kubernetes cannot narrow to names: creating the Lease.
                assert!(
                    leader_election
                        && ns == NAMESPACE
                        && groups == ["coordination.k8s.io"]
                        && resources == ["leases"]
                        && rule.verbs == ["create"],
                    "Role {ns}/{name}: a rule without resourceNames: {rule:?}"
                );
                continue;
            }
            for resource in &resources {
                let (group, key) = match resource.as_str() {
                    "secrets" => ("", "secrets"),
                    "deployments" => ("apps", "deployments"),
                    "statefulsets" => ("apps", "statefulsets"),
                    "daemonsets" => ("apps", "daemonsets"),
                    "leases" => {
                        assert_eq!(ns, NAMESPACE, "leases only in the release namespace");
                        assert_eq!(groups, ["coordination.k8s.io"]);
                        assert_eq!(resource_names, [FULLNAME.to_owned()], "the one Lease");
                        continue;
                    }
                    other => panic!("Role {ns}/{name}: unexpected resource {other}"),
                };
                assert_eq!(groups, [group.to_owned()], "{resource} API group");
                let entry = listed_by_ns
                    .get(ns.as_str())
                    .unwrap_or_else(|| panic!("Role in {ns}, which values do not list"));
                let allowed = names(entry, key);
                let granted: BTreeSet<String> = resource_names.iter().cloned().collect();
                assert_eq!(granted, allowed, "Role {ns}/{name}: {key} names");
            }
        }
    }
    // Exactly one Role (and its RoleBinding to our ServiceAccount) per listed
    // namespace, plus the Lease Role when the agents elect a leader.
    for (ns, entry) in &listed_by_ns {
        let role = roles
            .iter()
            .find(|r| {
                r.metadata.namespace.as_deref() == Some(ns)
                    && r.metadata.name.as_deref() == Some(FULLNAME)
            })
            .unwrap_or_else(|| panic!("no Role for listed namespace {ns}"));
        let rules = role.rules.clone().unwrap_or_default();
        for key in ["secrets", "deployments", "statefulsets", "daemonsets"] {
            let wanted = names(entry, key);
            let has = rules
                .iter()
                .any(|r| r.resources.as_deref() == Some(&[key.to_owned()][..]));
            assert_eq!(has, !wanted.is_empty(), "{ns}: a rule for {key} iff listed");
        }
        let secret_rule = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["secrets".to_owned()][..]));
        if let Some(rule) = secret_rule {
            // patch: server-side apply; create: that apply on a missing Secret (the API
            // server authorises it as "create" of that name); get: read back; delete:
            // `rotor retire` deletes a Secret it emptied (tests/chart_rbac.rs runs it
            // as this Role's ServiceAccount).
            assert_eq!(rule.verbs, ["get", "patch", "create", "delete"]);
        }
        assert_bound(&bindings, ns, FULLNAME, &sa);
    }
    let lease_role = format!("{FULLNAME}-leader-election");
    let expected_roles = listed_by_ns.len() + usize::from(leader_election);
    assert_eq!(roles.len(), expected_roles, "Roles rendered");
    assert_eq!(bindings.len(), expected_roles, "RoleBindings rendered");
    if leader_election {
        let role = roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(lease_role.as_str()))
            .expect("the Lease Role");
        assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
        let verbs: BTreeSet<&str> = role
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.verbs.iter().map(String::as_str))
            .collect();
        assert_eq!(verbs, BTreeSet::from(["get", "create", "update", "patch"]));
        assert_bound(&bindings, NAMESPACE, &lease_role, &sa);
    }

    let cluster_bindings: Vec<ClusterRoleBinding> = r.all("ClusterRoleBinding");
    let token_review = values["rbac"]["tokenReview"] == true;
    assert_eq!(cluster_bindings.len(), usize::from(token_review));
    for b in cluster_bindings {
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(
            b.role_ref.name, "system:auth-delegator",
            "the only cluster-wide grant is TokenReview (no Secret access)"
        );
        let subjects = b.subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, sa);
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    }
}

/// The name of the RotationPolicy Roles (`{FULLNAME}-policies`) and of the
/// ClusterRole (`{FULLNAME}-{NAMESPACE}-policies`, unique in the cluster).
fn policy_rbac_name(cluster: bool) -> String {
    if cluster {
        format!("{FULLNAME}-{NAMESPACE}-policies")
    } else {
        format!("{FULLNAME}-policies")
    }
}

/// `r` without the RotationPolicy grants.
fn without_policy_resource_rbac(r: &Rendered) -> Rendered {
    let ours = [policy_rbac_name(true), policy_rbac_name(false)];
    Rendered {
        docs: r
            .docs
            .iter()
            .filter(|d| !ours.iter().any(|n| d["metadata"]["name"] == n.as_str()))
            .cloned()
            .collect(),
        notes: r.notes.clone(),
    }
}

/// Watching RotationPolicies grants exactly: get/list/watch on rotationpolicies,
/// update/patch on their status, create/patch on events.k8s.io Events; in every
/// namespace (a ClusterRole) or only the listed ones (a Role each); bound to the
/// chart's ServiceAccount; nothing when `policyResources.enabled` is off.
fn assert_policy_resource_rbac(r: &Rendered, values: &Value) {
    let settings = &values["policyResources"];
    let enabled = settings["enabled"] == true;
    let namespaces: Vec<&str> = settings["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let expected = vec![
        rule("rotor.dev", "rotationpolicies", &["get", "list", "watch"]),
        rule("rotor.dev", "rotationpolicies/status", &["update", "patch"]),
        rule("events.k8s.io", "events", &["create", "patch"]),
    ];
    let sa = service_account(r);
    let cluster_name = policy_rbac_name(true);
    let role_name = policy_rbac_name(false);
    let cluster_roles: Vec<ClusterRole> = r.all("ClusterRole");
    let cluster_bindings: Vec<ClusterRoleBinding> = r
        .all::<ClusterRoleBinding>("ClusterRoleBinding")
        .into_iter()
        .filter(|b| b.metadata.name.as_deref() == Some(cluster_name.as_str()))
        .collect();
    let roles: Vec<Role> = r
        .all::<Role>("Role")
        .into_iter()
        .filter(|x| x.metadata.name.as_deref() == Some(role_name.as_str()))
        .collect();
    let bindings: Vec<RoleBinding> = r
        .all::<RoleBinding>("RoleBinding")
        .into_iter()
        .filter(|x| x.metadata.name.as_deref() == Some(role_name.as_str()))
        .collect();
    let cluster_wide = enabled && namespaces.is_empty();
    assert_eq!(
        cluster_roles.len(),
        usize::from(cluster_wide),
        "ClusterRoles"
    );
    assert_eq!(cluster_bindings.len(), usize::from(cluster_wide));
    if cluster_wide {
        assert_eq!(
            cluster_roles[0].metadata.name.as_deref(),
            Some(cluster_name.as_str())
        );
        assert_eq!(cluster_roles[0].rules.clone().unwrap_or_default(), expected);
        let b = &cluster_bindings[0];
        assert_eq!(
            (b.role_ref.kind.as_str(), b.role_ref.name.as_str()),
            ("ClusterRole", cluster_name.as_str())
        );
        let subjects = b.subjects.clone().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, sa);
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
    }
    let listed = if enabled { namespaces.len() } else { 0 };
    assert_eq!(roles.len(), listed, "RotationPolicy Roles");
    assert_eq!(bindings.len(), listed, "RotationPolicy RoleBindings");
    for ns in namespaces.iter().filter(|_| enabled) {
        let role = roles
            .iter()
            .find(|x| x.metadata.namespace.as_deref() == Some(*ns))
            .unwrap_or_else(|| panic!("no RotationPolicy Role in {ns}"));
        assert_eq!(role.rules.clone().unwrap_or_default(), expected, "{ns}");
        assert_bound(&bindings, ns, &role_name, &sa);
    }
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn assert_bound(bindings: &[RoleBinding], ns: &str, role: &str, sa: &str) {
    let binding = bindings
        .iter()
        .find(|b| b.metadata.namespace.as_deref() == Some(ns) && b.role_ref.name == role)
        .unwrap_or_else(|| panic!("no RoleBinding for Role {ns}/{role}"));
    assert_eq!(binding.role_ref.kind, "Role");
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{ns}/{role}: one subject");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, sa);
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
}

fn leader_args(c: &Container) -> bool {
    args(c).iter().any(|a| a == "--leader-election")
}

// ---------------------------------------------------------------------------------
// The tests.

#[test]
fn lint_strict_passes_for_every_example() {
    let sets = examples();
    let ops = sets.iter().map(|(_, v)| op("lint", v)).collect();
    for ((name, _), report) in sets.iter().zip(helm::run(ops)) {
        let report = report.unwrap_or_else(|e| panic!("lint ({name}) failed to run: {e}"));
        let messages = report["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            eprintln!(
                "helm lint ({name}): severity {} {}: {}",
                m["severity"], m["path"], m["error"]
            );
        }
        let errors = report["errors"].as_array().cloned().unwrap_or_default();
        assert!(errors.is_empty(), "helm lint --strict ({name}): {errors:?}");
        // Strict: a warning (severity 2) fails the lint as an error (3) does.
        let serious: Vec<&Value> = messages
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap_or(0) >= 2)
            .collect();
        assert!(
            serious.is_empty(),
            "helm lint --strict ({name}): {serious:?}"
        );
    }
}

#[test]
fn defaults_render_a_restricted_single_agent() {
    let r = render(&defaults());
    let kinds: BTreeSet<&str> = r.docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "Deployment", "Service", "ServiceAccount"]),
        "what a default install creates"
    );
    let deployment = r.deployment();
    assert_restricted_pod(&deployment);
    assert_service_reaches_pods(&r);
    assert_least_privilege(&r, &defaults(), false);

    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "two agents without leader election never overlap"
    );
    let c = rotor_container(&deployment);
    assert!(!leader_args(&c), "no leader election with one replica");
    assert!(
        r.kind("PodDisruptionBudget").is_empty(),
        "no PDB with one replica"
    );
    assert_eq!(
        arg_value(&c, "--vault-token-file").as_deref(),
        Some("/var/run/secrets/rotor/vault/token")
    );
    assert!(
        arg_value(&c, "--auth-config").is_none(),
        "no auth config by default"
    );
    let env: BTreeMap<String, Option<String>> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env.get("VAULT_ADDR"),
        Some(&Some("https://vault.vault.svc:8200".to_owned()))
    );
    let pod = spec.template.spec.as_ref().expect("pod");
    let audit = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "audit")
        .expect("audit volume");
    assert!(
        audit.empty_dir.is_some(),
        "the audit log is on an emptyDir by default"
    );
    let token = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "vault-credentials")
        .and_then(|v| v.secret.clone())
        .expect("the Vault token Secret volume");
    assert_eq!(token.secret_name.as_deref(), Some("prod-rotor-vault-token"));

    // NOTES.txt tells how to reach the metrics and trigger a rotation.
    for needle in [
        "kubectl -n rotor-system port-forward svc/prod-rotor 9464:9464",
        "/metrics",
        "rotor rotate --server http://127.0.0.1:9464 POLICY --reason",
        "-X POST http://127.0.0.1:9464/v1/policies/POLICY/rotate",
        "Authorization: Bearer $ROTOR_TOKEN",
        "refuses every /v1 request",
    ] {
        assert!(
            r.notes.contains(needle),
            "NOTES.txt lacks {needle:?}:\n{}",
            r.notes
        );
    }
}

#[test]
fn three_replicas_elect_a_leader_and_keep_a_budget() {
    let values = ha();
    let r = render(&values);
    let deployment = r.deployment();
    assert_restricted_pod(&deployment);
    assert_service_reaches_pods(&r);
    assert_least_privilege(&r, &values, true);

    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(3));
    let c = rotor_container(&deployment);
    assert!(
        leader_args(&c),
        "--leader-election with 3 replicas: {:?}",
        args(&c)
    );
    assert_eq!(arg_value(&c, "--lease-name").as_deref(), Some(FULLNAME));
    assert_eq!(
        arg_value(&c, "--lease-namespace").as_deref(),
        Some(NAMESPACE)
    );
    let strategy = spec.strategy.as_ref().expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));

    // The PDB selects exactly the agent's pods.
    let pdb: PodDisruptionBudget = r.one("PodDisruptionBudget");
    let pdb_spec = pdb.spec.expect("pdb spec");
    assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
    let selector = pdb_spec
        .selector
        .and_then(|s| s.match_labels)
        .expect("pdb selector");
    assert_eq!(
        Some(&selector),
        spec.selector.match_labels.as_ref(),
        "the PDB selects the Deployment's pods"
    );

    // Replicas spread over nodes, so one node loss leaves a leader candidate.
    let pod = spec.template.spec.as_ref().expect("pod");
    let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");

    // Leader election can be asked for with one replica too (no PDB then).
    let single = json!({"leaderElection": {"enabled": true, "leaseName": "rotor-leader"}});
    let r = render(&single);
    let c = rotor_container(&r.deployment());
    assert!(leader_args(&c));
    assert_eq!(
        arg_value(&c, "--lease-name").as_deref(),
        Some("rotor-leader")
    );
    assert!(r.kind("PodDisruptionBudget").is_empty());
    let roles: Vec<Role> = r.all("Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(
        roles[0].rules.as_ref().expect("rules")[0].resource_names,
        Some(vec!["rotor-leader".to_owned()])
    );
}

#[test]
fn monitoring_renders_service_monitor_rules_and_dashboard() {
    let values = monitoring_on();
    let r = render(&values);
    assert_restricted_pod(&r.deployment());
    assert_least_privilege(&r, &values, false);

    // The ServiceMonitor scrapes the Service's named port and sets job="rotor".
    let monitors = r.kind("ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let sm = monitors[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let service: Service = r.one("Service");
    let service_labels = service.metadata.labels.clone().expect("service labels");
    let wanted: BTreeMap<String, String> =
        serde_json::from_value(sm["spec"]["selector"]["matchLabels"].clone()).expect("labels");
    for (k, v) in &wanted {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor selects the Service"
        );
    }
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http-metrics");
    assert_eq!(endpoint["path"], "/metrics");
    let relabel = &endpoint["relabelings"][0];
    assert_eq!(relabel["targetLabel"], "job");
    assert_eq!(
        relabel["replacement"], "rotor",
        "the alert rules expect job=\"rotor\""
    );

    // The PrometheusRule carries monitoring/alerts.yaml's groups, Prometheus
    // templates intact.
    let rules = r.kind("PrometheusRule");
    assert_eq!(rules.len(), 1);
    let alerts_text = std::fs::read_to_string(workspace_root().join("monitoring/alerts.yaml"))
        .expect("monitoring/alerts.yaml");
    let alerts: Value = serde_saphyr::from_str(&alerts_text).expect("alerts.yaml parses");
    assert_eq!(rules[0]["spec"]["groups"], alerts["groups"]);
    assert!(
        rules[0]["spec"]["groups"]
            .to_string()
            .contains("{{ $labels.policy }}"),
        "Prometheus templates reach the operator untouched by Helm"
    );

    // The dashboard ConfigMap: the sidecar's label and the exact dashboard JSON.
    let maps: Vec<ConfigMap> = r.all("ConfigMap");
    let dashboard = maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("prod-rotor-dashboard"))
        .expect("dashboard ConfigMap");
    let labels = dashboard.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels.get("grafana_dashboard_rotor").map(String::as_str),
        Some("yes")
    );
    let annotations = dashboard.metadata.annotations.clone().expect("annotations");
    assert_eq!(
        annotations.get("grafana_folder").map(String::as_str),
        Some("Security")
    );
    let json_text =
        std::fs::read_to_string(workspace_root().join("monitoring/grafana-dashboard.json"))
            .expect("monitoring/grafana-dashboard.json");
    let data = dashboard.data.clone().expect("data");
    assert_eq!(data.get("grafana-dashboard.json"), Some(&json_text));

    // Inline policies land in the policies ConfigMap, one key per file.
    let policies = maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("prod-rotor-policies"))
        .expect("policies ConfigMap");
    assert_eq!(
        policies
            .data
            .as_ref()
            .and_then(|d| d.get("payments-db.yaml"))
            .map(String::as_str),
        values["policies"]["payments-db.yaml"].as_str()
    );
    assert!(r.notes.contains("job=\"rotor\""));
}

#[test]
fn existing_objects_pvc_token_auth_and_network_policy() {
    let values = existing_objects();
    let r = render(&values);
    let deployment = r.deployment();
    assert_restricted_pod(&deployment);
    assert_service_reaches_pods(&r);
    assert_least_privilege(&r, &values, false);
    let c = rotor_container(&deployment);
    let pod = deployment.spec.template.spec.clone().expect("pod");
    let volume = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("volume {name}"))
    };

    // Policies from the existing ConfigMap: the chart renders none of its own.
    assert!(r.all::<ConfigMap>("ConfigMap").is_empty());
    assert_eq!(
        volume("policies").config_map.map(|c| c.name).as_deref(),
        Some("team-rotor-policies")
    );
    // Auth config from the existing Secret, under its key.
    assert!(
        r.all::<Secret>("Secret").is_empty(),
        "the chart writes no Secret"
    );
    assert_eq!(
        volume("auth").secret.and_then(|s| s.secret_name).as_deref(),
        Some("rotor-api-auth")
    );
    assert_eq!(
        arg_value(&c, "--auth-config").as_deref(),
        Some("/etc/rotor/auth/identities.yaml")
    );
    // Signed notifications: the URL and the HMAC key from the existing Secret.
    assert_eq!(
        arg_value(&c, "--notify-url").as_deref(),
        Some("https://hooks.example.internal/rotor")
    );
    assert_eq!(
        arg_value(&c, "--notify-secret-file").as_deref(),
        Some("/etc/rotor/notify/hmac")
    );
    assert_eq!(
        volume("notify-key")
            .secret
            .and_then(|s| s.secret_name)
            .as_deref(),
        Some("rotor-notify")
    );
    // Vault: token from the existing Secret as a file, CA from a ConfigMap.
    assert_eq!(
        volume("vault-credentials")
            .secret
            .and_then(|s| s.secret_name)
            .as_deref(),
        Some("rotor-vault")
    );
    assert_eq!(
        arg_value(&c, "--vault-token-file").as_deref(),
        Some("/var/run/secrets/rotor/vault/vault-token")
    );
    assert_eq!(
        volume("vault-ca").config_map.map(|c| c.name).as_deref(),
        Some("vault-ca")
    );
    let env: BTreeMap<String, Option<String>> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env["VAULT_ADDR"].as_deref(),
        Some("https://vault.example.internal:8200")
    );
    assert_eq!(env["VAULT_NAMESPACE"].as_deref(), Some("platform"));
    assert_eq!(
        env["VAULT_CACERT"].as_deref(),
        Some("/etc/rotor/vault-ca/ca.pem")
    );
    assert!(!env.contains_key("ROTOR_VAULT_AUTH_METHOD"));

    // The audit log on a claim the chart creates (and keeps on uninstall).
    let pvc: PersistentVolumeClaim = r.one("PersistentVolumeClaim");
    assert_eq!(pvc.metadata.name.as_deref(), Some("prod-rotor-audit"));
    let keep = pvc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        keep.get("helm.sh/resource-policy").map(String::as_str),
        Some("keep")
    );
    let pvc_spec = pvc.spec.expect("pvc spec");
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        pvc_spec.access_modes,
        Some(vec!["ReadWriteOnce".to_owned()])
    );
    let size = pvc_spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .expect("storage request");
    assert_eq!(size.0, "5Gi");
    assert_eq!(
        volume("audit")
            .persistent_volume_claim
            .map(|p| p.claim_name)
            .as_deref(),
        Some("prod-rotor-audit")
    );

    // NetworkPolicy: only 9464 in, from the listed peers; egress DNS + the list.
    let np: NetworkPolicy = r.one("NetworkPolicy");
    let spec = np.spec.expect("np spec");
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        deployment.spec.selector.match_labels.clone()
    );
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    let ingress = spec.ingress.expect("ingress");
    assert_eq!(ingress.len(), 1);
    let ports = ingress[0].ports.clone().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::Int(9464)));
    let from = serde_json::to_value(ingress[0].from.clone().expect("from")).expect("json");
    assert_eq!(from, values["networkPolicy"]["ingress"]["from"]);
    let egress = spec.egress.expect("egress");
    assert_eq!(egress.len(), 2, "DNS and Vault");
    assert!(
        egress[0]
            .ports
            .iter()
            .flatten()
            .all(|p| p.port == Some(IntOrString::Int(53))),
        "the first egress rule is DNS only"
    );

    // One Role per listed namespace, each with the names of its entry.
    let roles: Vec<Role> = r.all("Role");
    let namespaces: BTreeSet<String> = roles
        .iter()
        .filter_map(|r| r.metadata.namespace.clone())
        .collect();
    assert_eq!(
        namespaces,
        BTreeSet::from(["edge".to_owned(), "payments".to_owned()])
    );
}

/// Watching RotationPolicies: nothing by default, a ClusterRole for every namespace,
/// a Role per listed namespace; and the chart ships the CRD `rotor crd` prints.
#[test]
fn policy_resources_render_exactly_the_rbac_they_need() {
    let cases = [
        json!({}),
        json!({"policyResources": {"enabled": false, "namespaces": ["payments"]}}),
        json!({"policyResources": {"enabled": true}}),
        json!({"policyResources": {"enabled": true, "namespaces": ["payments", "edge"]}}),
    ];
    for values in &cases {
        let r = render(values);
        assert_policy_resource_rbac(&r, values);
        let kinds: BTreeSet<&str> = r.docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        let wanted = values["policyResources"]["enabled"] == true;
        assert_eq!(
            kinds.contains("ClusterRole") || kinds.contains("Role"),
            wanted,
            "{values}: {kinds:?}"
        );
    }
    let error = render_error(
        &json!({"policyResources": {"enabled": true, "namespaces": ["Not A Namespace"]}}),
    );
    assert!(error.contains("policyResources"), "{error}");
    let crd = std::fs::read_to_string(chart_dir().join("crds/rotationpolicies.rotor.dev.yaml"))
        .expect("the chart ships the CRD");
    assert_eq!(crd, rotor::policy::resource::crd_yaml());
}

#[test]
fn vault_auth_methods_render_what_the_agent_can_use() {
    // kubernetes: no token file; the agent logs in with the pod's ServiceAccount token.
    let r = render(
        &json!({"vault": {"auth": {"method": "kubernetes", "kubernetes": {"role": "rotor-prod"}}}}),
    );
    let d = r.deployment();
    let c = rotor_container(&d);
    assert!(arg_value(&c, "--vault-token-file").is_none());
    let env: BTreeMap<String, Option<String>> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env["ROTOR_VAULT_AUTH_METHOD"].as_deref(),
        Some("kubernetes")
    );
    assert_eq!(env["ROTOR_VAULT_ROLE"].as_deref(), Some("rotor-prod"));
    assert_eq!(env["ROTOR_VAULT_AUTH_MOUNT"].as_deref(), Some("kubernetes"));
    let pod = d.spec.template.spec.expect("pod");
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .all(|v| v.name != "vault-credentials")
    );
    assert!(
        r.notes
            .contains("reached by Kubernetes login: role rotor-prod"),
        "{}",
        r.notes
    );

    // approle: role id and secret id from an existing Secret, as files.
    let r = render(
        &json!({"vault": {"auth": {"method": "approle", "approle": {"existingSecret": "rotor-approle"}}}}),
    );
    let d = r.deployment();
    let c = rotor_container(&d);
    let env: BTreeMap<String, Option<String>> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(env["ROTOR_VAULT_AUTH_METHOD"].as_deref(), Some("approle"));
    assert_eq!(
        env["ROTOR_VAULT_SECRET_ID_FILE"].as_deref(),
        Some("/var/run/secrets/rotor/vault/secret-id")
    );
    let pod = d.spec.template.spec.expect("pod");
    let secret = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "vault-credentials")
        .and_then(|v| v.secret.clone())
        .expect("approle Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("rotor-approle"));
}

#[test]
fn templates_refuse_unsafe_combinations() {
    // One ReadWriteOnce claim cannot hold three agents' audit logs.
    let e = render_error(&json!({"replicas": 3, "audit": {"persistence": {"enabled": true}}}));
    assert!(e.contains("needs ReadWriteMany"), "{e}");
    // With ReadWriteMany each pod writes its own sub-directory (its own hash chain).
    let r = render(
        &json!({"replicas": 3, "audit": {"persistence": {"enabled": true, "accessModes": ["ReadWriteMany"]}}}),
    );
    let c = rotor_container(&r.deployment());
    let audit = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "audit")
        .cloned()
        .expect("audit mount");
    assert_eq!(audit.sub_path_expr.as_deref(), Some("$(POD_NAME)"));

    let e = render_error(&json!({"rbac": {"namespaces": [
        {"namespace": "payments", "secrets": ["a"]},
        {"namespace": "payments", "secrets": ["b"]},
    ]}}));
    assert!(e.contains("\"payments\" is listed twice"), "{e}");
    let e = render_error(&json!({"vault": {"auth": {"method": "approle"}}}));
    assert!(e.contains("vault.auth.approle.existingSecret"), "{e}");
    let e = render_error(&json!({"vault": {"caCert": {"secretName": "a", "configMapName": "b"}}}));
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn schema_rejects_bad_values_and_accepts_the_examples() {
    let bad: Vec<(&str, Value, &str)> = vec![
        ("replicas below 1", json!({"replicas": 0}), "/replicas"),
        (
            "replicas as a string",
            json!({"replicas": "3"}),
            "/replicas",
        ),
        (
            "unknown Vault auth method",
            json!({"vault": {"auth": {"method": "ldap"}}}),
            "/vault/auth/method",
        ),
        (
            "misspelt top-level key",
            json!({"replica": 3}),
            "'replica' not allowed",
        ),
        (
            "misspelt nested key",
            json!({"vault": {"auth": {"methd": "token"}}}),
            "'methd' not allowed",
        ),
        (
            "RBAC entry without namespace",
            json!({"rbac": {"namespaces": [{"secrets": ["db"]}]}}),
            "missing property 'namespace'",
        ),
        (
            "RBAC entry granting nothing",
            json!({"rbac": {"namespaces": [{"namespace": "payments"}]}}),
            "/rbac/namespaces/0",
        ),
        (
            "RBAC namespace not a DNS label",
            json!({"rbac": {"namespaces": [{"namespace": "Pay_ments", "secrets": ["db"]}]}}),
            "/rbac/namespaces/0/namespace",
        ),
        (
            "root user",
            json!({"podSecurityContext": {"runAsUser": 0}}),
            "/podSecurityContext/runAsUser",
        ),
        (
            "policy file not YAML",
            json!({"policies": {"README.md": "x"}}),
            "invalid propertyName 'README.md'",
        ),
        (
            "unknown pull policy",
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (
            "toggle as a string",
            json!({"metrics": {"serviceMonitor": {"enabled": "yes"}}}),
            "/metrics/serviceMonitor/enabled",
        ),
        (
            "no access mode",
            json!({"audit": {"persistence": {"accessModes": []}}}),
            "/audit/persistence/accessModes",
        ),
        (
            "Vault address without scheme",
            json!({"vault": {"address": "vault:8200"}}),
            "/vault/address",
        ),
        (
            "port out of range",
            json!({"service": {"port": 70000}}),
            "/service/port",
        ),
    ];
    let sets = examples();
    let mut ops: Vec<Value> = bad.iter().map(|(_, v, _)| op("validate", v)).collect();
    ops.extend(sets.iter().map(|(_, v)| op("validate", v)));
    let results = helm::run(ops);
    let (bad_results, good_results) = results.split_at(bad.len());
    for ((what, values, needle), result) in bad.iter().zip(bad_results) {
        match result {
            Ok(_) => panic!("the schema accepted {what}: {values}"),
            Err(e) => assert!(
                e.contains("HelmValuesError") && e.contains(needle),
                "{what}: rejected, but not for {needle:?}: {e}"
            ),
        }
    }
    for ((name, _), result) in sets.iter().zip(good_results) {
        assert!(
            result.is_ok(),
            "the schema rejected the {name} example: {result:?}"
        );
    }
}

#[test]
fn chart_ships_the_monitoring_files_unchanged() {
    let root = workspace_root();
    for (chart_copy, original) in [
        ("charts/rotor/files/alerts.yaml", "monitoring/alerts.yaml"),
        (
            "charts/rotor/files/grafana-dashboard.json",
            "monitoring/grafana-dashboard.json",
        ),
    ] {
        let a = std::fs::read(root.join(chart_copy)).expect(chart_copy);
        let b = std::fs::read(root.join(original)).expect(original);
        assert!(
            a == b,
            "{chart_copy} differs from {original}: copy it again (cp {original} {chart_copy})"
        );
    }
}

/// Dotted paths of the values the schema describes field by field (objects with
/// `additionalProperties: false`); free-form maps and lists are one value each.
fn schema_paths(node: &Value, path: &str, out: &mut Vec<String>) {
    let structured = node["type"] == "object" && node["additionalProperties"] == false;
    match node["properties"].as_object() {
        Some(props) if structured => {
            for (key, child) in props {
                if path.is_empty() && key == "global" {
                    continue; // Helm's shared subchart values; the chart uses none.
                }
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                schema_paths(child, &here, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[test]
fn every_value_has_a_default_and_a_line_in_the_chart_readme() {
    let dir = chart_dir();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("values.schema.json")).expect("values.schema.json"),
    )
    .expect("the schema is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("chart README.md");
    let mut paths = Vec::new();
    schema_paths(&schema, "", &mut paths);
    assert!(
        paths.len() > 50,
        "the schema describes the values: {paths:?}"
    );
    for path in &paths {
        let default = path.split('.').try_fold(&values, |v, key| v.get(key));
        assert!(default.is_some(), "{path} has no default in values.yaml");
        assert!(
            readme.contains(&format!("| `{path}` |")),
            "{path} is missing from the values table of charts/rotor/README.md"
        );
    }
}
