//! rotor under the Helm chart's own RBAC (issue 16, "RBAC that holds, proven"): the
//! chart is rendered by the real Helm engine for the test's policy (its Secret and
//! Deployment listed under `rbac.namespaces`), the rendered ServiceAccount, Roles and
//! RoleBindings are created in a fake API server that enforces RBAC like the real one,
//! and the `rotor` binary runs with a kubeconfig holding that ServiceAccount's token
//! only (from a TokenRequest). Rotate, status, retire, enable and leader election must
//! work with exactly what the chart grants, and a step it does not grant must fail
//! naming the verb and the resource. Needs `dev/stack up` (OpenBao, PostgreSQL, the
//! Helm SDK).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::agent::{Agent, eventually, first};
use common::kinds::{self, KindFixture, KindOptions, report};
use common::{Fixture, Options, text};
use rotor_testkit::chart::{self, ChartRbac};
use serde_json::{Value, json};

/// The release the chart is rendered for.
const RELEASE: &str = "prod";
/// The release namespace: the ServiceAccount and the Lease live there.
const NAMESPACE: &str = "rotor-system";
/// The chart's ServiceAccount (and default Lease name) for release `prod`.
const SERVICE_ACCOUNT: &str = "prod-rotor";

/// The chart's values for `fx`'s policy: its Secret and Deployment in its namespace,
/// plus `extra` (merged at the top level).
fn values(fx: &Fixture, extra: Value) -> Value {
    let mut values = json!({"rbac": {"namespaces": [{
        "namespace": fx.namespace,
        "secrets": [fx.secret],
        "deployments": [fx.deployment],
    }]}});
    if let (Some(map), Value::Object(more)) = (values.as_object_mut(), extra) {
        map.extend(more);
    }
    values
}

/// Installs the chart's RBAC for `values` in the API server `kube`.
async fn install(kube: &rotor_testkit::FakeKube, values: &Value) -> ChartRbac {
    let rbac = chart::install_rbac(kube, RELEASE, NAMESPACE, values).await;
    assert_eq!(rbac.service_account, SERVICE_ACCOUNT);
    assert_eq!(
        rbac.kubeconfig.user,
        format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}")
    );
    rbac
}

/// `cmd` as the chart's ServiceAccount: its kubeconfig and nothing else.
fn as_chart(mut cmd: Command, rbac: &ChartRbac) -> Command {
    cmd.env("KUBECONFIG", &rbac.kubeconfig.path);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run rotor")
}

/// The refusal the API server gives the chart's ServiceAccount for `verb` on `resource`
/// (`secrets`, `deployments` in `apps`, …) named `name` in `fx`'s namespace.
fn forbidden(fx: &Fixture, resource: &str, group: &str, name: &str, verb: &str) -> String {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    format!(
        "{qualified} \"{name}\" is forbidden: User \"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{}\"",
        fx.namespace
    )
}

fn assert_no_leak(fx_secrets: &[String], outs: &[&Output]) {
    let refs: Vec<&str> = fx_secrets.iter().map(String::as_str).collect();
    for out in outs {
        rotor_testkit::assert_no_secret(&text(out), &refs);
    }
}

#[tokio::test]
async fn rotate_and_status_as_the_chart_service_account() {
    let fx = Fixture::new("rbac-rot", Options::default()).await;
    let rbac = install(&fx.kube, &values(&fx, json!({}))).await;
    let mut kinds: Vec<&str> = rbac
        .objects
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["Role", "RoleBinding", "ServiceAccount"]);

    let rotated = run(as_chart(fx.rotate_cmd(), &rbac));
    assert!(rotated.status.success(), "{}", text(&rotated));
    fx.assert_consistent().await;
    assert!(
        fx.restart_marker().await.is_some(),
        "the Deployment was restarted through the chart's get/patch grant"
    );

    let mut status = fx.rotor();
    status
        .args(["-o", "json", "status", "--policies"])
        .arg(fx.policy_dir())
        .arg(&fx.name);
    let out = run(as_chart(status, &rbac));
    assert!(out.status.success(), "{}", text(&out));
    let view = &report(&out)["policies"][0];
    assert_eq!(view["name"], fx.name.as_str());
    assert_eq!(view["last_rotation"]["status"], "completed", "{view:#}");
    assert_no_leak(&fx.all_passwords().await, &[&rotated, &out]);
}

/// A PostgreSQL policy whose only consumer is its Secret, the chart's RBAC for that
/// Secret, and a first rotation as the chart's ServiceAccount (which must succeed).
async fn rotated_postgres_secret(prefix: &str) -> (KindFixture, ChartRbac, Output) {
    let fx = KindFixture::new(prefix, KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let values = json!({"rbac": {"namespaces": [
        {"namespace": fx.namespace, "secrets": [fx.secret]},
    ]}});
    let rbac = install(&fx.kube, &values).await;
    let rotated = run(as_chart(fx.rotate_cmd(), &rbac));
    assert!(rotated.status.success(), "{}", text(&rotated));
    (fx, rbac, rotated)
}

#[tokio::test]
async fn retire_and_enable_as_the_chart_service_account() {
    let (fx, rbac, rotated) = rotated_postgres_secret("rbac-ret").await;
    let (current, _) = fx.current().await;

    // Before the chart granted `delete` on its Secrets, this failed at
    // consumers_removed with `secrets "NAME" is forbidden: User
    // "system:serviceaccount:rotor-system:prod-rotor" cannot delete resource "secrets"
    // in API group "" in the namespace "NS"`, and so did every retry.
    let retired = run(as_chart(fx.retire_cmd(), &rbac));
    assert!(
        retired.status.success(),
        "rotor retire failed:\n{}",
        text(&retired)
    );
    let r = report(&retired);
    assert_eq!(r["state"], "retired", "{r:#}");
    assert_eq!(r["consumers"][0]["state"], "removed", "{r:#}");
    fx.assert_rejected(&current, "the retired credential").await;
    assert!(
        fx.secret_data().await.is_none(),
        "the Secret rotor created is deleted (the chart grants delete on it by name)"
    );

    let enabled = run(as_chart(fx.enable_cmd(), &rbac));
    assert!(
        enabled.status.success(),
        "rotor enable failed:\n{}",
        text(&enabled)
    );
    assert_eq!(report(&enabled)["record"]["state"], "enabled");
    // The enable's rotation created the Secret again: an apply authorised as create.
    fx.assert_consistent().await;
    let again = run(as_chart(fx.rotate_cmd(), &rbac));
    assert!(again.status.success(), "{}", text(&again));
    fx.assert_consistent().await;
    assert_no_leak(
        &fx.all_secrets().await,
        &[&rotated, &retired, &enabled, &again],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_elect_a_leader_as_the_chart_service_account() {
    let fx = Fixture::new("rbac-ha", Options::default()).await;
    let lease = json!({"leaderElection": {"enabled": true}});
    let rbac = install(&fx.kube, &values(&fx, lease)).await;
    let kubeconfig = rbac.kubeconfig.path.to_string_lossy().into_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let args = [
        "--leader-election",
        "--lease-name",
        SERVICE_ACCOUNT,
        "--lease-namespace",
        NAMESPACE,
        "--lease-duration",
        "3s",
    ];
    let mut a = Agent::start_with(&fx, &env, &args);
    a.ready().await;
    a.until_leading(Duration::from_secs(30)).await;
    let b = Agent::start_follower(&fx, &env, &args).await;

    let (status, body) = b.request_rotation(&fx.name).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = a.request_rotation_as_leader(&fx.name).await;
    assert_eq!(status, 202, "{body}\n{}", a.log_text());
    eventually(Duration::from_secs(60), "the rotation", || async {
        let v = first(&a.policies().await);
        (v["last_rotation"]["status"] == "completed" && v["state"] == "idle").then_some(())
    })
    .await;
    fx.assert_consistent().await;

    // `rotor status --server` of the leader.
    let mut status = fx.rotor();
    status
        .args(["-o", "json", "status", "--server", &a.base])
        .env("ROTOR_TOKEN", &a.token);
    let out = run(as_chart(status, &rbac));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        report(&out)["policies"][0]["last_rotation"]["status"],
        "completed"
    );

    // The leader stops (and releases the Lease): the follower takes over.
    a.terminate().await;
    b.until_leading(Duration::from_secs(15)).await;
    let (status, body) = b.request_rotation_as_leader(&fx.name).await;
    assert_eq!(status, 202, "{body}\n{}", b.log_text());
    eventually(Duration::from_secs(60), "the second rotation", || async {
        (fx.current().await.1 == 3 && first(&b.policies().await)["state"] == "idle").then_some(())
    })
    .await;
    fx.assert_consistent().await;
    for agent in [&a, &b] {
        let log = agent.log_text();
        assert!(!log.contains("is forbidden"), "{log}");
        let mut secrets = fx.all_passwords().await;
        secrets.push(agent.token.clone());
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        rotor_testkit::assert_no_secret(&log, &refs);
    }
}

#[tokio::test]
async fn a_step_the_chart_does_not_grant_fails_naming_the_verb_and_the_resource() {
    // (what the chart lists besides the namespace, the refused request)
    let cases = [
        // The Deployment is not listed: the Secret is written, the restart refused.
        ("secrets", ("deployments", "apps", "get")),
        // The Secret is not listed: rotor's first read of it is refused.
        ("deployments", ("secrets", "", "get")),
    ];
    for (listed, (resource, group, verb)) in cases {
        let fx = Fixture::new("rbac-deny", Options::default()).await;
        let mut entry = json!({"namespace": fx.namespace});
        let name = if resource == "secrets" {
            entry[listed] = json!([fx.deployment]);
            &fx.secret
        } else {
            entry[listed] = json!([fx.secret]);
            &fx.deployment
        };
        let rbac = install(&fx.kube, &json!({"rbac": {"namespaces": [entry]}})).await;
        let out = run(as_chart(fx.rotate_cmd(), &rbac));
        assert!(!out.status.success(), "{}", text(&out));
        let wanted = forbidden(&fx, resource, group, name, verb);
        assert!(
            text(&out).contains(&wanted),
            "{wanted}\nnot in:\n{}",
            text(&out)
        );
        assert_no_leak(&fx.all_passwords().await, &[&out]);
    }
}

#[tokio::test]
async fn a_retire_refused_the_secrets_delete_says_which_removal_failed_and_why() {
    use k8s_openapi::api::rbac::v1::Role;
    use kube::Api;
    use kube::api::PostParams;

    let (fx, rbac, rotated) = rotated_postgres_secret("rbac-nodel").await;

    // The chart's Role as it was before it granted delete on its Secrets.
    let roles: Api<Role> = Api::namespaced(common::kube_client(&fx.kube).await, &fx.namespace);
    let mut role = roles.get(SERVICE_ACCOUNT).await.expect("the chart's Role");
    for rule in role.rules.iter_mut().flatten() {
        rule.verbs.retain(|verb| verb != "delete");
    }
    roles
        .replace(SERVICE_ACCOUNT, &PostParams::default(), &role)
        .await
        .expect("replace the Role");

    let retired = run(as_chart(fx.retire_cmd(), &rbac));
    let out = text(&retired);
    assert!(!retired.status.success(), "{out}");
    let refused = format!(
        "secrets \"{}\" is forbidden: User \"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"{}\"",
        fx.secret, fx.namespace
    );
    let step = format!(
        "1 of 1 consumer(s) failed removal: kubernetes secret {}/{}",
        fx.namespace, fx.secret
    );
    assert!(out.contains(&step), "{step}\nnot in:\n{out}");
    let at = out.find(&step).unwrap();
    // The report is JSON: its quotes are escaped.
    let line = out[at..]
        .lines()
        .next()
        .unwrap_or_default()
        .replace("\\\"", "\"");
    assert!(
        line.contains(&refused),
        "the step's message names the refusal: {line}"
    );
    assert!(!out.contains("still hold it"), "{out}");
    assert_no_leak(&fx.all_secrets().await, &[&rotated, &retired]);
}
