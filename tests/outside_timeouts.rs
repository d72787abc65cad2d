//! Outside systems that hang, seen from `rotor run`: readiness follows Vault (a TCP
//! proxy the test owns stands in front of the stack's OpenBao and is frozen and cut,
//! never the shared service), and a frozen Kubernetes API costs a rotation one call
//! timeout (`--call-timeout`), not kube's minutes: the consumer stays pending with a
//! `timeout` error, `rotor_outside_call_timeouts_total{system="kubernetes"}` counts it,
//! and the rotation completes once the API answers again (after an agent restart). With
//! leader election, readiness waits until the Lease has been reached.
//! Needs `dev/stack up` (OpenBao, PostgreSQL).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::agent::{Agent, eventually, first};
use common::{Fixture, Options};
use rotor_testkit::{Proxy, stack};

/// `/readyz`: the status code and the JSON, or None when it does not answer.
async fn readyz(agent: &Agent) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(format!("{}/readyz", agent.base)).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// The `rotor_outside_call_timeouts_total` sample of `system`.
fn timeouts(metrics: &str, system: &str) -> Option<f64> {
    let prefix = format!("rotor_outside_call_timeouts_total{{system=\"{system}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Like [`eventually`], polling every 3 s: the API allows an identity 30 requests a
/// minute.
async fn every_3s<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn vault_socket() -> SocketAddr {
    let addr = url::Url::parse(&stack().vault_addr).expect("VAULT_ADDR");
    let host = addr.host_str().expect("VAULT_ADDR host");
    let port = addr.port_or_known_default().expect("VAULT_ADDR port");
    format!("{host}:{port}")
        .parse()
        .expect("VAULT_ADDR is host:port on loopback")
}

#[tokio::test]
async fn readiness_follows_vault_through_a_frozen_and_a_cut_proxy() {
    let fx = Fixture::new("ready-vault", Options::default()).await;
    let proxy = Proxy::start(vault_socket());
    let vault_url = proxy.url();
    let agent = Agent::start_with(
        &fx,
        &[("VAULT_ADDR", vault_url.as_str())],
        &["--call-timeout", "2s"],
    );
    agent.ready().await;
    let (status, ready) = readyz(&agent).await.expect("/readyz answers");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");

    // Frozen: connections are accepted and nothing comes back.
    proxy.freeze();
    let reason = eventually(
        Duration::from_secs(60),
        "/readyz to answer 503 naming Vault while it hangs",
        || async {
            let (status, body) = readyz(&agent).await?;
            (status == 503 && body["ready"] == false).then_some(body["reason"].clone())
        },
    )
    .await;
    let reason = reason.as_str().expect("a reason");
    assert!(
        reason.contains("vault unreachable") && reason.contains(&vault_url),
        "{reason}"
    );
    let metrics = agent
        .metrics()
        .await
        .expect("/metrics answers while Vault hangs");
    assert!(
        timeouts(&metrics, "vault").is_some_and(|n| n >= 1.0),
        "the probe's timeout is counted:\n{metrics}"
    );

    proxy.restore();
    eventually(Duration::from_secs(60), "ready again", || async {
        let (status, body) = readyz(&agent).await?;
        (status == 200 && body["ready"] == true).then_some(())
    })
    .await;

    // Cut: connections are refused.
    proxy.cut();
    let reason = eventually(
        Duration::from_secs(60),
        "/readyz to answer 503 naming Vault while it is down",
        || async {
            let (status, body) = readyz(&agent).await?;
            (status == 503).then_some(body["reason"].clone())
        },
    )
    .await;
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("vault unreachable") && r.contains(&vault_url)),
        "{reason}"
    );
    proxy.restore();
    eventually(
        Duration::from_secs(60),
        "ready again after the cut",
        || async {
            let (status, _) = readyz(&agent).await?;
            (status == 200).then_some(())
        },
    )
    .await;
}

/// A copy of the fixture's kubeconfig whose server is `proxy`.
fn kubeconfig_through(fx: &Fixture, proxy: &Proxy, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&fx.kube.kubeconfig).expect("kubeconfig");
    let server = fx.kube.url();
    assert!(text.contains(&server), "the kubeconfig names {server}");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text.replace(&server, &fx.kube.url_via(proxy.addr)))
        .expect("write kubeconfig");
    path
}

#[tokio::test]
async fn a_frozen_kubernetes_api_costs_a_call_timeout_not_minutes() {
    let fx = Fixture::new("kube-hang", Options::default()).await;
    let proxy = Proxy::start(fx.kube.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig_through(&fx, &proxy, dir.path());
    let kubeconfig = kubeconfig.to_str().expect("UTF-8 path");
    let agent = Agent::start_with(
        &fx,
        &[("KUBECONFIG", kubeconfig)],
        &["--call-timeout", "2s"],
    );
    agent.ready().await;
    let (before, _) = fx.current().await;

    // Only the propagate step talks to Kubernetes: it meets a hung API server.
    proxy.freeze();
    let (status, body) = agent.request_rotation(&fx.name).await;
    assert_eq!(status, 202, "{body}");

    // kube's own limits (no read timeout, 295 s write timeout) would hold the push far
    // beyond this deadline; the call timeout ends each attempt after 2 s.
    let view = every_3s(
        Duration::from_secs(60),
        "the Kubernetes consumer to be left pending after timeouts",
        || async {
            let v = first(&agent.policies().await);
            let pending = v["pending_consumers"]
                .as_array()
                .is_some_and(|p| !p.is_empty());
            pending.then_some(v)
        },
    )
    .await;
    let id = view["last_rotation"]["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_owned();
    let rotation: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/rotations/{id}", agent.base))
        .bearer_auth(&agent.token)
        .send()
        .await
        .expect("GET rotation")
        .json()
        .await
        .expect("JSON");
    let consumer = &rotation["consumers"][0];
    assert_eq!(consumer["state"], "pending", "{rotation:#}");
    let error = consumer["error"].as_str().expect("error");
    assert!(
        error.contains("timeout") && error.contains("2000 ms"),
        "{error}"
    );
    let metrics = agent.metrics().await.expect("/metrics");
    assert!(
        timeouts(&metrics, "kubernetes").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("Consumer update failed"))
        .unwrap_or_else(|| panic!("the failure is logged:\n{log}"));
    let plain = strip_ansi(line);
    assert!(plain.contains("kind=\"timeout\""), "{plain}");
    // Nothing else waited: promoted already, so the new value is canonical.
    let (promoted, _) = fx.current().await;
    assert_ne!(promoted, before);

    // The API answers again: an agent started now resumes the open rotation (an
    // unscheduled policy's pending rotation is not retried by the running agent) and
    // finishes it.
    proxy.restore();
    let mut secrets = fx.all_passwords().await;
    secrets.push(agent.token.clone());
    let first_log = agent.log_text();
    drop(agent);
    let agent = Agent::start_with(
        &fx,
        &[("KUBECONFIG", kubeconfig)],
        &["--call-timeout", "2s"],
    );
    agent.ready().await;
    let view = first(&agent.policies().await);
    assert_eq!(view["last_rotation"]["status"], "completed", "{view:#}");
    fx.assert_consistent().await;
    secrets.push(agent.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&first_log, &refs);
    rotor_testkit::assert_no_secret(&agent.log_text(), &refs);
}

#[tokio::test]
async fn readiness_waits_until_leader_election_reaches_the_lease() {
    let fx = Fixture::new("ready-lease", Options::default()).await;
    let proxy = Proxy::start(fx.kube.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig_through(&fx, &proxy, dir.path());
    let kubeconfig = kubeconfig.to_str().expect("UTF-8 path");
    // The Kubernetes API hangs from the start: nobody knows who leads.
    proxy.freeze();
    let agent = Agent::start_with(
        &fx,
        &[("KUBECONFIG", kubeconfig)],
        &[
            "--call-timeout",
            "2s",
            "--leader-election",
            "--lease-duration",
            "3s",
        ],
    );
    let reason = eventually(
        Duration::from_secs(60),
        "/readyz to answer 503 naming leader election",
        || async {
            let (status, body) = readyz(&agent).await?;
            let reason = body["reason"].as_str()?.to_owned();
            (status == 503 && reason.contains("leader election")).then_some(reason)
        },
    )
    .await;
    assert!(reason.contains("lease"), "{reason}");

    proxy.restore();
    eventually(
        Duration::from_secs(60),
        "ready and leading once the lease is reached",
        || async {
            let (status, body) = readyz(&agent).await?;
            (status == 200 && body["leader"] == true).then_some(())
        },
    )
    .await;
}
