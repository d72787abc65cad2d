//! `rotor rotate --selector`: every policy whose labels match is rotated (under the
//! concurrency limit) with a per-policy summary; the others are untouched. Locally,
//! and through a running agent's API (`--server`, `POST /v1/rotations`).
//! Needs `dev/stack up`.

mod common;

use std::time::Duration;

use common::agent::{Agent, eventually};
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
            a.kube.create_namespace(&fx.namespace).await;
            a.kube
                .create_deployment(&fx.namespace, &fx.deployment)
                .await;
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

#[tokio::test]
async fn a_selector_through_the_agent_rotates_exactly_the_matching_policies() {
    let a = Fixture::new("selapi-a", Options::default()).await;
    let b = Fixture::new("selapi-b", Options::default()).await;
    let c = Fixture::new("selapi-c", Options::default()).await;
    // All three policies in `a`'s directory (the agent's), consumers in `a`'s cluster.
    for (fx, team) in [(&a, "payments"), (&b, "payments"), (&c, "search")] {
        let path = fx.policy_dir().join("policy.yaml");
        let yaml = std::fs::read_to_string(&path).expect("policy").replace(
            "labels: {team: tests}",
            &format!("labels: {{team: {team}}}"),
        );
        std::fs::write(a.policy_dir().join(format!("{}.yaml", fx.name)), yaml).expect("write");
        if fx.name != a.name {
            a.kube.create_namespace(&fx.namespace).await;
            a.kube
                .create_deployment(&fx.namespace, &fx.deployment)
                .await;
        }
    }
    std::fs::remove_file(a.policy_dir().join("policy.yaml")).expect("remove");
    let (old_a, va) = a.current().await;
    let (old_b, vb) = b.current().await;
    let (_, vc) = c.current().await;

    let agent = Agent::start(&a, &[]);
    agent.ready().await;
    let out = a
        .rotor()
        .env("ROTOR_TOKEN", &agent.token)
        .args(["-o", "json", "rotate", "--server", &agent.base])
        .args(["--selector", "team=payments", "--reason", "quarterly"])
        .output()
        .expect("rotor rotate --selector --server");
    assert!(out.status.success(), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["accepted"], 2, "{answer:#}");
    assert_eq!(answer["refused"], 0, "{answer:#}");
    let mut named: Vec<String> = answer["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| p["policy"].as_str().expect("policy").to_owned())
        .collect();
    named.sort();
    let mut expected = vec![a.name.clone(), b.name.clone()];
    expected.sort();
    assert_eq!(named, expected);

    // Both rotate to completion; the old passwords are refused by PostgreSQL.
    for (fx, version, old) in [(&a, va, &old_a), (&b, vb, &old_b)] {
        eventually(Duration::from_secs(60), "the selected rotation", || async {
            (fx.current().await.1 > version).then_some(())
        })
        .await;
        eventually(
            Duration::from_secs(60),
            "the old password refused",
            || async {
                matches!(
                    fx.login(old).await,
                    rotor::credentials::AuthOutcome::Rejected { .. }
                )
                .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        c.current().await.1,
        vc,
        "a policy of another team is untouched"
    );

    // A selector some of whose policies the agent lacks: 404 and a failed exit.
    let out = a
        .rotor()
        .env("ROTOR_TOKEN", &agent.token)
        .args(["rotate", "--server", &agent.base])
        .args(["--selector", "team=nobody", "--reason", "x"])
        .output()
        .expect("rotor rotate --selector --server");
    assert!(!out.status.success());
    assert!(text(&out).contains("404"), "{}", text(&out));

    // The audit log names each policy's rotation under the one request.
    let audit = std::fs::read_to_string(&agent.audit).expect("audit log");
    for fx in [&a, &b] {
        assert!(
            audit.contains(&format!("\"policy\":\"{}\"", fx.name)),
            "no audit record for {}",
            fx.name
        );
    }
    common::assert_no_leak(&out, &[old_a, old_b]);
}
