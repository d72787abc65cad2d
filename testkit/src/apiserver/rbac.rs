//! Authorization the way the real kube-apiserver's RBAC authorizer does it.
//!
//! A request is read into [`Attributes`] as the real server's request-info parser reads
//! the URL (verb from the method, `list`/`watch`/`deletecollection` for collections, a
//! `metadata.name` field selector naming the object of a list or watch, subresources,
//! non-resource paths). It is then allowed when a rule of a Role or ClusterRole reached
//! through a RoleBinding (in the request's namespace) or a ClusterRoleBinding whose
//! subjects include the user matches it: verb, API group, `resource` or
//! `resource/subresource` (and `*/subresource`), `resourceNames`, non-resource URLs
//! (with a trailing `*`), `*` wildcards. Members of `system:masters` are always allowed,
//! as the real server's privileged group is. A server-side apply of an object that does
//! not exist is also authorised as `create` of that name, as the real server does when
//! the apply creates it. A refused request gets the real server's `403` `Status`, with
//! its message shape, e.g. `secrets "db" is forbidden: User "system:serviceaccount:ns:sa"
//! cannot delete resource "secrets" in API group "" in the namespace "ns"`.
//!
//! The rules are read from the Roles, ClusterRoles and bindings stored in the server, so
//! tests create them through the API like on a cluster. [`bootstrap_objects`] are the
//! bootstrap roles a new cluster has (`cluster-admin`, `system:discovery`,
//! `system:public-info-viewer`, `system:basic-user`, `system:auth-delegator`).
//!
//! Not modelled: aggregated ClusterRoles (`aggregationRule`), the `escalate`, `bind` and
//! `impersonate` checks, and other authorizers (Node, webhooks).

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode, header};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use super::{ReplyBody, backend_path, json_response, status};

/// The group whose members every request is allowed (the real server's privileged group).
pub const MASTERS_GROUP: &str = "system:masters";

/// The group of every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// API group of Roles, ClusterRoles and their bindings.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Who made a request, as authentication found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name, e.g. `system:serviceaccount:NS:NAME`.
    pub name: String,
    /// The groups, e.g. `system:serviceaccounts`, `system:authenticated`.
    pub groups: Vec<String>,
}

/// What a request asks for, as the real server's request-info parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for a non-resource request the lower-case HTTP method.
    pub verb: String,
    /// A request for an API object (`/api/…`, `/apis/…` with a resource); discovery
    /// documents and every other path are non-resource requests.
    pub resource_request: bool,
    /// The URL path (what non-resource rules match).
    pub path: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace (`""` at the cluster scope).
    pub namespace: String,
    /// Resource (plural), e.g. `secrets`.
    pub resource: String,
    /// Subresource, e.g. `status` or `token`.
    pub subresource: String,
    /// Object name (`""` for a collection or a create).
    pub name: String,
}

impl Attributes {
    /// Reads a request's method, path and query the way the real server does.
    pub fn of_request(method: &Method, path: &str, query: Option<&str>) -> Attributes {
        let mut attrs = Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            resource_request: false,
            path: path.to_string(),
            api_group: String::new(),
            api_version: String::new(),
            namespace: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        };
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return attrs;
        }
        let mut rest = &parts[1..];
        if parts[0] == "apis" {
            if rest.len() < 3 {
                return attrs;
            }
            attrs.api_group = rest[0].to_string();
            rest = &rest[1..];
        }
        attrs.resource_request = true;
        attrs.api_version = rest[0].to_string();
        rest = &rest[1..];
        if rest[0] == "watch" && rest.len() >= 2 {
            attrs.verb = "watch".into();
            rest = &rest[1..];
        } else {
            attrs.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .into();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            attrs.namespace = rest[1].to_string();
            // `namespaces/NAME/status` and `/finalize` are the Namespace's own.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        attrs.resource = rest[0].to_string();
        if let Some(name) = rest.get(1) {
            attrs.name = name.to_string();
        }
        if let Some(sub) = rest.get(2) {
            attrs.subresource = sub.to_string();
        }
        if attrs.name.is_empty() && attrs.verb == "get" {
            attrs.verb = if query_flag(query, "watch") {
                "watch".into()
            } else {
                "list".into()
            };
            if let Some(name) = field_selector_name(query) {
                attrs.name = name;
            }
        }
        if attrs.name.is_empty() && attrs.verb == "delete" {
            attrs.verb = "deletecollection".into();
        }
        attrs
    }

    /// The same request as a `create` of its object (a server-side apply that creates).
    pub fn as_create(&self) -> Attributes {
        Attributes {
            verb: "create".into(),
            ..self.clone()
        }
    }

    /// `resource` or `resource/subresource`, as rules name it.
    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// `secrets` or `leases.coordination.k8s.io`: a group-qualified resource.
    fn group_resource(&self) -> String {
        if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        }
    }
}

/// The query's values for `key`, percent-decoded.
fn query_values<'q>(query: Option<&'q str>, key: &'q str) -> impl Iterator<Item = String> + 'q {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
}

/// A boolean query parameter as the real server converts it: present and not `0`,
/// `f` or `false` (any case).
fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_values(query, key).next().is_some_and(|v| {
        !(v == "0" || v.eq_ignore_ascii_case("f") || v.eq_ignore_ascii_case("false"))
    })
}

/// The name a `fieldSelector` requires exactly (`metadata.name=NAME` or `==`), when it
/// is a valid path segment.
fn field_selector_name(query: Option<&str>) -> Option<String> {
    let selector = query_values(query, "fieldSelector").next()?;
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        if field.trim() != "metadata.name" {
            return None;
        }
        let value = value.trim();
        let valid = !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains('/')
            && !value.contains('%');
        valid.then(|| value.to_string())
    })
}

/// `%XX` and `+` (a space) decoded; invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    // Two hex digits are at most 0xff.
                    out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The RBAC objects that can grant a request in one namespace: every ClusterRole and
/// ClusterRoleBinding, and the namespace's Roles and RoleBindings.
#[derive(Debug, Default, Clone)]
pub struct Rules {
    /// Every ClusterRoleBinding.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Every ClusterRole, by name.
    pub cluster_roles: BTreeMap<String, ClusterRole>,
    /// The request namespace's RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// The request namespace's Roles, by name.
    pub roles: BTreeMap<String, Role>,
}

impl Rules {
    /// Reads the rules that apply in `namespace` (`""`: cluster scope) from the backend.
    pub async fn load(backend: &kube::Client, namespace: &str) -> Result<Rules, kube::Error> {
        let all = ListParams::default();
        let by_name = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.clone().unwrap_or_default()
        };
        let mut rules = Rules {
            cluster_role_bindings: Api::<ClusterRoleBinding>::all(backend.clone())
                .list(&all)
                .await?
                .items,
            cluster_roles: Api::<ClusterRole>::all(backend.clone())
                .list(&all)
                .await?
                .items
                .into_iter()
                .map(|r| (by_name(&r.metadata), r))
                .collect(),
            ..Rules::default()
        };
        if !namespace.is_empty() {
            rules.role_bindings = Api::<RoleBinding>::namespaced(backend.clone(), namespace)
                .list(&all)
                .await?
                .items;
            rules.roles = Api::<Role>::namespaced(backend.clone(), namespace)
                .list(&all)
                .await?
                .items
                .into_iter()
                .map(|r| (by_name(&r.metadata), r))
                .collect();
        }
        Ok(rules)
    }

    /// Allowed, or refused with the authorizer's reason (`""`, or `RBAC: …` naming
    /// roles that bindings refer to but that do not exist).
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(());
        }
        let mut errors: Vec<String> = Vec::new();
        for binding in &self.cluster_role_bindings {
            if !applies_to(user, binding.subjects.as_deref(), "") {
                continue;
            }
            let name = &binding.role_ref.name;
            match self.cluster_roles.get(name) {
                Some(role) if rules_allow(role.rules.as_deref(), attrs) => return Ok(()),
                Some(_) => {}
                None => errors.push(not_found("clusterrole", name)),
            }
        }
        if !attrs.namespace.is_empty() {
            for binding in &self.role_bindings {
                let ns = binding.metadata.namespace.as_deref().unwrap_or_default();
                if ns != attrs.namespace || !applies_to(user, binding.subjects.as_deref(), ns) {
                    continue;
                }
                let name = &binding.role_ref.name;
                let rules = if binding.role_ref.kind == "ClusterRole" {
                    match self.cluster_roles.get(name) {
                        Some(role) => role.rules.as_deref(),
                        None => {
                            errors.push(not_found("clusterrole", name));
                            continue;
                        }
                    }
                } else {
                    match self.roles.get(name) {
                        Some(role) => role.rules.as_deref(),
                        None => {
                            errors.push(not_found("role", name));
                            continue;
                        }
                    }
                };
                if rules_allow(rules, attrs) {
                    return Ok(());
                }
            }
        }
        errors.dedup();
        Err(match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        })
    }
}

/// `role.rbac.authorization.k8s.io "NAME" not found`.
fn not_found(kind: &str, name: &str) -> String {
    format!("{kind}.{RBAC_GROUP} \"{name}\" not found")
}

/// Whether one of `subjects` is `user` (a RoleBinding's ServiceAccount subject without a
/// namespace means one in the binding's namespace `namespace`).
fn applies_to(user: &UserInfo, subjects: Option<&[Subject]>, namespace: &str) -> bool {
    subjects
        .unwrap_or_default()
        .iter()
        .any(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.groups.contains(&s.name),
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace);
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
            }
            _ => false,
        })
}

fn rules_allow(rules: Option<&[PolicyRule]>, attrs: &Attributes) -> bool {
    rules
        .unwrap_or_default()
        .iter()
        .any(|rule| rule_allows(rule, attrs))
}

/// Whether one rule grants the request.
fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    let has = |list: Option<&Vec<String>>, wanted: &str| {
        list.is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
    };
    if !has(Some(&rule.verbs), &attrs.verb) {
        return false;
    }
    if !attrs.resource_request {
        let path = attrs.path.as_str();
        return rule.non_resource_urls.iter().flatten().any(|url| {
            url == "*"
                || url == path
                || url
                    .strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        });
    }
    let combined = attrs.combined_resource();
    let resource_matches = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    });
    let name_matches = match &rule.resource_names {
        Some(names) if !names.is_empty() => names.contains(&attrs.name),
        _ => true,
    };
    has(rule.api_groups.as_ref(), &attrs.api_group) && resource_matches && name_matches
}

/// `User "NAME" cannot VERB resource "R" in API group "G" in the namespace "NS"` (or
/// `at the cluster scope`, or `cannot VERB path "P"`), as the real server says it.
pub fn forbidden_reason(user: &UserInfo, attrs: &Attributes) -> String {
    if !attrs.resource_request {
        return format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name, attrs.verb, attrs.path
        );
    }
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", attrs.namespace)
    };
    format!(
        "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name,
        attrs.verb,
        attrs.combined_resource(),
        attrs.api_group
    )
}

/// The real server's `403` `Status` for `attrs` with `message` after the
/// `… is forbidden: ` prefix.
pub fn forbidden_status(attrs: &Attributes, message: &str) -> Value {
    let (resource, group) = if attrs.resource_request {
        (attrs.resource.as_str(), attrs.api_group.as_str())
    } else {
        ("", "")
    };
    let full = if resource.is_empty() {
        format!("forbidden: {message}")
    } else if attrs.name.is_empty() {
        format!("{} is forbidden: {message}", attrs.group_resource())
    } else {
        format!(
            "{} \"{}\" is forbidden: {message}",
            attrs.group_resource(),
            attrs.name
        )
    };
    let mut details = serde_json::Map::new();
    for (key, value) in [
        ("name", attrs.name.as_str()),
        ("group", group),
        ("kind", resource),
    ] {
        if !resource.is_empty() && !value.is_empty() {
            details.insert(key.into(), Value::String(value.into()));
        }
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": full,
        "reason": "Forbidden",
        "details": details,
        "code": 403
    })
}

/// Authorizes one request of `user`; `None` when allowed, else the response to send
/// (403 when refused, 500 when the rules cannot be read). `apply` marks a server-side
/// apply, which is also authorised as `create` when its object does not exist.
pub(super) async fn check(
    backend: &kube::Client,
    user: &UserInfo,
    attrs: &Attributes,
    apply: bool,
) -> Option<Response<ReplyBody>> {
    if user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return None;
    }
    let rules = match Rules::load(backend, &attrs.namespace).await {
        Ok(rules) => rules,
        Err(error) => {
            return Some(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("reading the RBAC rules failed: {error}"),
            ));
        }
    };
    if let Err(reason) = rules.decide(user, attrs) {
        let mut message = forbidden_reason(user, attrs);
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        return Some(json_response(
            StatusCode::FORBIDDEN,
            &forbidden_status(attrs, &message),
        ));
    }
    let creates = apply
        && attrs.verb == "patch"
        && attrs.subresource.is_empty()
        && !attrs.name.is_empty()
        && !exists(backend, &attrs.path).await;
    if creates {
        let create = attrs.as_create();
        if let Err(reason) = rules.decide(user, &create) {
            // The real server's message for a create refused inside an apply carries
            // only the authorizer's reason, which RBAC leaves empty unless a role is
            // missing.
            return Some(json_response(
                StatusCode::FORBIDDEN,
                &forbidden_status(&create, &reason),
            ));
        }
    }
    None
}

/// Whether the object at `path` exists in the backend.
async fn exists(backend: &kube::Client, path: &str) -> bool {
    let Ok(request) = Request::get(backend_path(path))
        .header(header::ACCEPT, "application/json")
        .body(kube::client::Body::empty())
    else {
        return false;
    };
    backend
        .send(request)
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// The bootstrap ClusterRoles and ClusterRoleBindings of a new cluster that matter to
/// clients: `cluster-admin` (bound to `system:masters`), `system:discovery` and
/// `system:public-info-viewer` (discovery, version and health for every authenticated
/// user), `system:basic-user` (self reviews) and `system:auth-delegator` (TokenReview and
/// SubjectAccessReview, for bindings such as the chart's).
pub fn bootstrap_objects() -> Vec<Value> {
    let object = |kind: &str, name: &str| {
        json!({
            "apiVersion": format!("{RBAC_GROUP}/v1"),
            "kind": kind,
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
            }
        })
    };
    let role = |name: &str, rules: Value| {
        let mut role = object("ClusterRole", name);
        role["rules"] = rules;
        role
    };
    let binding = |name: &str, groups: &[&str]| {
        let mut binding = object("ClusterRoleBinding", name);
        binding["roleRef"] = json!({"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name});
        binding["subjects"] = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
            .collect();
        binding
    };
    let public_info = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let mut discovery = vec![
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/openapi",
        "/openapi/*",
    ];
    discovery.extend(public_info);
    discovery.sort_unstable();
    vec![
        role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]}
            ]),
        ),
        binding("cluster-admin", &[MASTERS_GROUP]),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": discovery, "verbs": ["get"]}]),
        ),
        binding("system:discovery", &[AUTHENTICATED_GROUP]),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": public_info, "verbs": ["get"]}]),
        ),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED_GROUP, "system:unauthenticated"],
        ),
        role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"],
                 "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                 "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"],
                 "resources": ["selfsubjectreviews"],
                 "verbs": ["create"]}
            ]),
        ),
        binding("system:basic-user", &[AUTHENTICATED_GROUP]),
        role(
            "system:auth-delegator",
            json!([
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests;
