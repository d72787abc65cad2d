use super::*;

/// Paths every authenticated client reads before it asks for objects.
const DISCOVERY_PATHS: [&str; 6] = [
    "/api",
    "/api/v1",
    "/apis",
    "/apis/apps/v1",
    "/version",
    "/openapi/v3",
];

fn attrs(method: Method, path: &str, query: Option<&str>) -> Attributes {
    Attributes::of_request(&method, path, query)
}

fn sa(ns: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            AUTHENTICATED_GROUP.into(),
        ],
    }
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(list(groups)),
        resources: Some(list(resources)),
        resource_names: (!names.is_empty()).then(|| list(names)),
        verbs: list(verbs),
        non_resource_urls: None,
    }
}

fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "rules": serde_json::to_value(rules).unwrap()
    }))
    .unwrap()
}

fn role_binding(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
        "subjects": subjects
    }))
    .unwrap()
}

/// The chart's Secret Role in `payments`, bound to `rotor-system:prod-rotor`.
fn chart_rules() -> Rules {
    let secrets = rule(&[""], &["secrets"], &["db"], &["get", "patch", "create"]);
    let mut rules = Rules::default();
    rules.roles.insert(
        "prod-rotor".into(),
        role("payments", "prod-rotor", vec![secrets]),
    );
    rules.role_bindings.push(role_binding(
        "payments",
        "prod-rotor",
        "Role",
        "prod-rotor",
        json!([{"kind": "ServiceAccount", "name": "prod-rotor", "namespace": "rotor-system"}]),
    ));
    rules
}

fn with_bootstrap(mut rules: Rules) -> Rules {
    for object in bootstrap_objects() {
        match object["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(object).unwrap();
                let name = role.metadata.name.clone().unwrap();
                rules.cluster_roles.insert(name, role);
            }
            Some("ClusterRoleBinding") => rules
                .cluster_role_bindings
                .push(serde_json::from_value(object).unwrap()),
            other => panic!("unexpected bootstrap kind {other:?}"),
        }
    }
    rules
}

#[test]
fn verbs_come_from_the_method_and_the_shape_of_the_path() {
    let secret = "/api/v1/namespaces/payments/secrets/db";
    let collection = "/api/v1/namespaces/payments/secrets";
    for (method, path, query, verb) in [
        (Method::GET, secret, None, "get"),
        (Method::HEAD, secret, None, "get"),
        (Method::PUT, secret, None, "update"),
        (Method::PATCH, secret, None, "patch"),
        (Method::DELETE, secret, None, "delete"),
        (Method::POST, collection, None, "create"),
        (Method::GET, collection, None, "list"),
        (Method::GET, collection, Some("watch=true"), "watch"),
        (
            Method::GET,
            collection,
            Some("watch=1&resourceVersion=5"),
            "watch",
        ),
        (Method::GET, collection, Some("watch"), "watch"),
        (Method::GET, collection, Some("watch=false"), "list"),
        (Method::GET, collection, Some("watch=0"), "list"),
        (
            Method::GET,
            "/api/v1/watch/namespaces/payments/secrets",
            None,
            "watch",
        ),
        (Method::DELETE, collection, None, "deletecollection"),
    ] {
        let a = attrs(method.clone(), path, query);
        assert_eq!(a.verb, verb, "{method} {path} {query:?}");
        assert!(a.resource_request);
        assert_eq!(a.namespace, "payments");
        assert_eq!(a.resource, "secrets");
    }
    assert_eq!(attrs(Method::GET, secret, None).name, "db");
    assert_eq!(
        attrs(Method::POST, collection, None).name,
        "",
        "a create has no name"
    );
}

#[test]
fn groups_subresources_and_cluster_scope_are_read_from_the_path() {
    let a = attrs(
        Method::PUT,
        "/apis/apps/v1/namespaces/payments/deployments/api/status",
        None,
    );
    assert_eq!(
        (
            a.api_group.as_str(),
            a.api_version.as_str(),
            a.resource.as_str()
        ),
        ("apps", "v1", "deployments")
    );
    assert_eq!((a.name.as_str(), a.subresource.as_str()), ("api", "status"));
    assert_eq!(a.combined_resource(), "deployments/status");

    let token = attrs(
        Method::POST,
        "/api/v1/namespaces/rotor-system/serviceaccounts/prod-rotor/token",
        None,
    );
    assert_eq!(token.verb, "create");
    assert_eq!(token.name, "prod-rotor");
    assert_eq!(token.subresource, "token");

    // A Namespace is its own namespace; its status is its subresource.
    let ns = attrs(Method::GET, "/api/v1/namespaces/payments", None);
    assert_eq!(
        (ns.resource.as_str(), ns.name.as_str()),
        ("namespaces", "payments")
    );
    assert_eq!(ns.namespace, "payments");
    let ns_status = attrs(Method::PUT, "/api/v1/namespaces/payments/status", None);
    assert_eq!(ns_status.subresource, "status");
    let all = attrs(Method::GET, "/api/v1/namespaces", None);
    assert_eq!((all.verb.as_str(), all.namespace.as_str()), ("list", ""));

    let crb = attrs(
        Method::GET,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        None,
    );
    assert_eq!(crb.namespace, "");
    assert_eq!(
        crb.group_resource(),
        "clusterrolebindings.rbac.authorization.k8s.io"
    );
}

#[test]
fn a_name_field_selector_names_the_object_of_a_list_or_watch() {
    let leases = "/apis/coordination.k8s.io/v1/namespaces/rotor-system/leases";
    let a = attrs(
        Method::GET,
        leases,
        Some("fieldSelector=metadata.name%3Dprod-rotor&watch=true"),
    );
    assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "prod-rotor"));
    let a = attrs(
        Method::GET,
        leases,
        Some("fieldSelector=metadata.name%3D%3Dx,a%3Db"),
    );
    assert_eq!(a.name, "x");
    let a = attrs(
        Method::GET,
        leases,
        Some("fieldSelector=metadata.name!%3Dx"),
    );
    assert_eq!(a.name, "", "a negative selector names nothing");
    let a = attrs(
        Method::GET,
        leases,
        Some("fieldSelector=metadata.name%3D.."),
    );
    assert_eq!(a.name, "", "not a valid path segment");
}

#[test]
fn discovery_and_other_paths_are_non_resource_requests() {
    for path in DISCOVERY_PATHS {
        let a = attrs(Method::GET, path, None);
        assert!(!a.resource_request, "{path}");
        assert_eq!(a.verb, "get");
        assert_eq!(a.path, path);
    }
    assert_eq!(attrs(Method::POST, "/logs", None).verb, "post");
}

#[test]
fn the_chart_role_grants_its_named_secret_and_nothing_else() {
    let rules = chart_rules();
    let user = sa("rotor-system", "prod-rotor");
    let db = "/api/v1/namespaces/payments/secrets/db";
    assert_eq!(rules.decide(&user, &attrs(Method::GET, db, None)), Ok(()));
    assert_eq!(rules.decide(&user, &attrs(Method::PATCH, db, None)), Ok(()));
    // A server-side apply that creates `db` is checked as a create of that name.
    assert_eq!(
        rules.decide(&user, &attrs(Method::PATCH, db, None).as_create()),
        Ok(())
    );
    for refused in [
        attrs(Method::DELETE, db, None),
        attrs(Method::PUT, db, None),
        attrs(
            Method::GET,
            "/api/v1/namespaces/payments/secrets/other",
            None,
        ),
        attrs(Method::GET, "/api/v1/namespaces/payments/secrets", None),
        // A POST carries no name, so a resourceNames rule does not grant it.
        attrs(Method::POST, "/api/v1/namespaces/payments/secrets", None),
        attrs(Method::GET, "/api/v1/namespaces/billing/secrets/db", None),
        attrs(
            Method::GET,
            "/api/v1/namespaces/payments/configmaps/db",
            None,
        ),
    ] {
        assert_eq!(
            rules.decide(&user, &refused),
            Err(String::new()),
            "{refused:?}"
        );
    }
    // Another ServiceAccount of the same name elsewhere is someone else.
    let other = sa("default", "prod-rotor");
    assert!(rules.decide(&other, &attrs(Method::GET, db, None)).is_err());
}

#[test]
fn wildcards_subresources_and_cluster_roles_match_like_rbac() {
    let user = sa("apps", "ci");
    let mut rules = Rules::default();
    rules.cluster_roles.insert(
        "status-writer".into(),
        serde_json::from_value(json!({
            "metadata": {"name": "status-writer"},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["update", "patch"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}
            ]
        }))
        .unwrap(),
    );
    // Bound in `apps` through a RoleBinding: valid in that namespace only.
    rules.role_bindings.push(role_binding(
        "apps",
        "ci",
        "ClusterRole",
        "status-writer",
        json!([{"kind": "ServiceAccount", "name": "ci"}]),
    ));
    let status = "/apis/apps/v1/namespaces/apps/statefulsets/db/status";
    let elsewhere = "/apis/apps/v1/namespaces/other/deployments";
    for (method, path, allowed, why) in [
        (Method::PATCH, status, true, "*/status"),
        (Method::GET, status, false, "get is not granted"),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/apps/statefulsets/db",
            false,
            "not status",
        ),
        (
            Method::DELETE,
            "/apis/apps/v1/namespaces/apps/deployments",
            true,
            "verb *",
        ),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/apps/deployments/api/scale",
            false,
            "deployments does not cover deployments/scale",
        ),
        (
            Method::GET,
            elsewhere,
            false,
            "a RoleBinding grants in its namespace only",
        ),
    ] {
        let decision = rules.decide(&user, &attrs(method, path, None));
        assert_eq!(decision.is_ok(), allowed, "{path}: {why}");
    }

    // A ClusterRoleBinding to a User grants everywhere, cluster scope included.
    rules.cluster_role_bindings.push(
        serde_json::from_value(json!({
            "metadata": {"name": "alice"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "status-writer"},
            "subjects": [{"kind": "User", "name": "alice"}]
        }))
        .unwrap(),
    );
    let alice = UserInfo {
        name: "alice".into(),
        groups: vec![AUTHENTICATED_GROUP.into()],
    };
    assert_eq!(
        rules.decide(&alice, &attrs(Method::GET, elsewhere, None)),
        Ok(())
    );
    assert_eq!(
        rules.decide(
            &alice,
            &attrs(Method::PATCH, "/api/v1/nodes/n1/status", None)
        ),
        Ok(())
    );
}

#[test]
fn masters_are_unrestricted_and_discovery_is_open_to_the_authenticated() {
    let rules = with_bootstrap(Rules::default());
    let admin = UserInfo {
        name: "kubernetes-admin".into(),
        groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
    };
    let user = sa("ns", "nobody");
    let delete_all = attrs(Method::DELETE, "/api/v1/namespaces/ns/secrets", None);
    assert_eq!(rules.decide(&admin, &delete_all), Ok(()));
    assert!(rules.decide(&user, &delete_all).is_err());
    for path in DISCOVERY_PATHS {
        assert_eq!(
            rules.decide(&user, &attrs(Method::GET, path, None)),
            Ok(()),
            "{path}"
        );
    }
    assert!(
        rules
            .decide(&user, &attrs(Method::GET, "/metrics", None))
            .is_err()
    );
    assert!(
        rules
            .decide(&user, &attrs(Method::POST, "/api", None))
            .is_err()
    );
}

#[test]
fn a_binding_to_a_missing_role_is_named_in_the_reason() {
    let mut rules = Rules::default();
    rules.role_bindings.push(role_binding(
        "payments",
        "gone",
        "Role",
        "deleted-role",
        json!([{"kind": "Group", "name": AUTHENTICATED_GROUP}]),
    ));
    let user = sa("payments", "app");
    let a = attrs(Method::GET, "/api/v1/namespaces/payments/secrets/db", None);
    assert_eq!(
        rules.decide(&user, &a),
        Err("RBAC: role.rbac.authorization.k8s.io \"deleted-role\" not found".into())
    );
}

#[test]
fn refusals_read_like_the_real_servers() {
    let user = sa("rotor-system", "prod-rotor");
    let delete = attrs(
        Method::DELETE,
        "/api/v1/namespaces/payments/secrets/db",
        None,
    );
    let reason = forbidden_reason(&user, &delete);
    let status = forbidden_status(&delete, &reason);
    assert_eq!(
        status["message"],
        "secrets \"db\" is forbidden: User \"system:serviceaccount:rotor-system:prod-rotor\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"payments\""
    );
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);
    assert_eq!(status["details"], json!({"name": "db", "kind": "secrets"}));

    let create = attrs(
        Method::POST,
        "/apis/coordination.k8s.io/v1/namespaces/rotor-system/leases",
        None,
    );
    let status = forbidden_status(&create, &forbidden_reason(&user, &create));
    assert_eq!(
        status["message"],
        "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:rotor-system:prod-rotor\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"rotor-system\""
    );
    assert_eq!(
        status["details"],
        json!({"group": "coordination.k8s.io", "kind": "leases"})
    );

    let nodes = attrs(Method::GET, "/api/v1/nodes", None);
    assert!(
        forbidden_reason(&user, &nodes)
            .ends_with("cannot list resource \"nodes\" in API group \"\" at the cluster scope")
    );
    let path = attrs(Method::GET, "/metrics", None);
    let status = forbidden_status(&path, &forbidden_reason(&user, &path));
    assert_eq!(
        status["message"],
        "forbidden: User \"system:serviceaccount:rotor-system:prod-rotor\" cannot get path \"/metrics\""
    );
    assert_eq!(status["details"], json!({}));
}

#[test]
fn query_values_are_percent_decoded() {
    assert_eq!(percent_decode("metadata.name%3Da+b"), "metadata.name=a b");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%C3%A9"), "é");
}
