//! kube clients of a [`FakeKube`] built from its kubeconfig with rotor's own kube crates.
//! The testkit keeps its own kube version (a test-only crate must never decide the
//! product's), so nothing of kube's type crosses from it: tests get the kubeconfig file
//! and make their clients here, as any client of a cluster would.

use std::path::Path;

use http::{HeaderValue, header};
use rotor_testkit::FakeKube;

/// The `User-Agent` of a test's own requests ([`kube_client`]), so the server's record
/// ([`FakeKube::user_agents`]) tells them from rotor's.
pub const TEST_USER_AGENT: &str = "rotor-tests";

/// The client configuration in the kubeconfig file `path`.
async fn config(path: &Path) -> kube::Config {
    rotor::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("a client configuration from the kubeconfig")
}

/// The test's own client, to arrange and inspect (`User-Agent:` [`TEST_USER_AGENT`]).
pub async fn kube_client(kube: &FakeKube) -> kube::Client {
    let mut config = config(&kube.kubeconfig).await;
    config.headers.push((
        header::USER_AGENT,
        HeaderValue::from_static(TEST_USER_AGENT),
    ));
    kube::Client::try_from(config).expect("kube client")
}

/// A client as rotor builds one (its limits and `User-Agent`), to hand to rotor's code.
pub async fn rotor_kube_client(kube: &FakeKube) -> kube::Client {
    rotor_kube_client_at(&kube.kubeconfig).await
}

/// [`rotor_kube_client`] from the kubeconfig file `path` (e.g. one rewritten to go
/// through a [`rotor_testkit::Proxy`]).
pub async fn rotor_kube_client_at(path: &Path) -> kube::Client {
    rotor::outside::kube_client_from(config(path).await).expect("kube client")
}

/// The `data` of Secret `ns/name` as text, `None` when there is no such Secret.
pub async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    let secret = api.get_opt(name).await.expect("get secret")?;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
            .collect(),
    )
}

/// Asserts that `kube` received requests from rotor, each with rotor's `User-Agent`, and
/// none without one: every request is rotor's, the test's ([`TEST_USER_AGENT`]) or the
/// testkit's own.
pub fn assert_rotor_user_agent(kube: &FakeKube) {
    let known = [
        rotor::outside::USER_AGENT,
        TEST_USER_AGENT,
        rotor_testkit::apiserver::TESTKIT_USER_AGENT,
    ];
    let seen = kube.user_agents().seen();
    let unknown: Vec<_> = seen
        .iter()
        .filter(|s| !known.contains(&s.user_agent.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        unknown.is_empty(),
        "requests not made by rotor or the test: {unknown:?}"
    );
    let rotor_writes = seen.iter().filter(|s| {
        s.user_agent.as_deref() == Some(rotor::outside::USER_AGENT)
            && s.request.starts_with("PATCH ")
    });
    assert!(rotor_writes.count() > 0, "rotor wrote nothing: {seen:?}");
}
