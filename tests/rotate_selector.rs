//! `rotor rotate --selector`: every policy whose labels match is rotated (under the
//! concurrency limit) with a per-policy summary; the others are untouched.
//! Needs `dev/stack up`.

mod common;

use common::{Fixture, Options, text};

#[tokio::test]
async fn a_selector_rotates_exactly_the_matching_policies() {
    let a = Fixture::new("sel-a", Options::default()).await;
    let b = Fixture::new("sel-b", Options::default()).await;
    let c = Fixture::new("sel-c", Options::default()).await;
    // One policy directory; all consumers in `a`'s fake cluster.
    let dir = tempfile::tempdir().expect("tempdir");
    for (fx, team) in [(&a, "payments"), (&b, "payments"), (&c, "search")] {
        let yaml = std::fs::read_to_string(fx.policy_dir().join("policy.yaml"))
            .expect("policy")
            .replace(
                "labels: {team: tests}",
                &format!("labels: {{team: {team}}}"),
            );
        std::fs::write(dir.path().join(format!("{}.yaml", fx.name)), yaml).expect("write");
        if fx.name != a.name {
            rotor_testkit::create_namespace(&a.kube.client, &fx.namespace).await;
            rotor_testkit::create_deployment(&a.kube.client, &fx.namespace, &fx.deployment).await;
        }
    }
    let versions = [
        a.current().await.1,
        b.current().await.1,
        c.current().await.1,
    ];

    let out = a
        .rotor()
        .args(["-o", "json", "rotate", "--policies"])
        .arg(dir.path())
        .args([
            "--selector",
            "team=payments",
            "--reason",
            "quarterly",
            "--concurrency",
            "2",
        ])
        .output()
        .expect("rotor rotate --selector");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut rotated: Vec<String> = report["rotations"]
        .as_array()
        .expect("rotations")
        .iter()
        .map(|r| {
            assert_eq!(r["succeeded"], true, "{r:#}");
            r["policy"].as_str().expect("policy").to_owned()
        })
        .collect();
    rotated.sort();
    let mut expected = vec![a.name.clone(), b.name.clone()];
    expected.sort();
    assert_eq!(rotated, expected);
    assert_eq!(a.current().await.1, versions[0] + 1);
    assert_eq!(b.current().await.1, versions[1] + 1);
    assert_eq!(
        c.current().await.1,
        versions[2],
        "a policy of another team is untouched"
    );

    // A selector that matches nothing is an error, not a silent success.
    let out = a
        .rotor()
        .args(["rotate", "--policies"])
        .arg(dir.path())
        .args(["--selector", "team=nobody", "--reason", "x"])
        .output()
        .expect("rotor rotate --selector");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no policy has the labels"),
        "{}",
        text(&out)
    );
}
