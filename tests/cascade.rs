//! `spec.cascade`: rotating a policy — above all under compromise — rotates its
//! dependents too, under the same trigger, with a reason that names the rotation that
//! caused them. Cascades must name loaded policies and form no cycle.
//! Needs `dev/stack up` for the end-to-end test.

mod common;

use common::{Fixture, Options, text};

fn policy(name: &str, cascade: &str) -> String {
    format!(
        "---\napiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, port: 5432, database: d, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  cascade: {cascade}\n"
    )
}

#[test]
fn cascades_name_loaded_policies_without_cycles() {
    let load = |text: String| {
        rotor::policy::load_str(std::path::Path::new("c.yaml"), &text).map_err(|e| e.to_string())
    };
    assert!(load(policy("a", "[b]") + &policy("b", "[]")).is_ok());
    let err = load(policy("a", "[nope]")).expect_err("unknown");
    assert!(
        err.contains("spec.cascade[0]") && err.contains("expected the name of a loaded policy"),
        "{err}"
    );
    let err = load(policy("a", "[a]")).expect_err("self");
    assert!(err.contains("the policy itself"), "{err}");
    let err =
        load(policy("a", "[b]") + &policy("b", "[c]") + &policy("c", "[a]")).expect_err("cycle");
    assert!(err.contains("cascades back to"), "{err}");
}

#[tokio::test]
async fn a_compromise_cascades_to_the_dependents() {
    let a = Fixture::new("cas-a", Options::default()).await;
    let b = Fixture::new("cas-b", Options::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml_a = std::fs::read_to_string(a.policy_dir().join("policy.yaml"))
        .expect("policy")
        .replace(
            "  verify:\n",
            &format!("  cascade: [{}]\n  verify:\n", b.name),
        );
    std::fs::write(dir.path().join("a.yaml"), yaml_a).expect("write");
    std::fs::copy(
        b.policy_dir().join("policy.yaml"),
        dir.path().join("b.yaml"),
    )
    .expect("copy");
    a.kube.create_namespace(&b.namespace).await;
    a.kube.create_deployment(&b.namespace, &b.deployment).await;
    let (va, vb) = (a.current().await.1, b.current().await.1);

    let out = a
        .rotor()
        .args(["-o", "json", "rotate", "--policies"])
        .arg(dir.path())
        .arg(&a.name)
        .args(["--reason", "leaked", "--compromise"])
        .output()
        .expect("rotor rotate");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let parent = report["rotation"]["rotation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dep = &report["cascade"][0];
    assert_eq!(dep["policy"], b.name.as_str());
    assert_eq!(dep["succeeded"], true, "{report:#}");
    let rotation = &dep["outcome"]["rotation"];
    assert_eq!(rotation["trigger"], "compromise", "same trigger");
    let reason = rotation["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&a.name) && reason.contains(&parent),
        "{reason}"
    );
    assert_eq!(a.current().await.1, va + 1);
    assert_eq!(b.current().await.1, vb + 1);
    a.assert_consistent().await;
}
