//! Test support for rotor: the contract with the local service stack that `dev/stack up`
//! starts (OpenBao, PostgreSQL), names and canaries for tests, a leak check, and a fake
//! Kubernetes API server that speaks real HTTP on loopback.
//!
//! Module map:
//! - [`stack`]: where the running services are ([`stack()`], [`Stack`], [`PgInfo`]).
//! - [`names`]: unique resource names and canary values ([`unique`], [`canary`]).
//! - [`leak`]: [`assert_no_secret`] for logs, errors and other output.
//! - [`apiserver`]: the HTTP front of `kube-fake-client` (used by [`FakeKube`] and the
//!   `fake-kube-apiserver` binary), kubeconfig writing and seed loading.
//! - [`fake_kube`]: [`FakeKube`], an in-process fake API server for one test (its
//!   kubeconfig, URL and admin token; helpers that create namespaces, deployments and any
//!   object, and log in as a ServiceAccount; install a CRD, read the Events about an
//!   object, write a workload's status as its controller would; Secret-apply faults,
//!   [`SecretPatches`]), whose kube crates need not be the ones a test uses.
//! - [`helm`]: the real Helm engine (helm-python-sdk) that lints and renders the chart.
//! - [`chart`]: the chart's rendered RBAC installed in a [`FakeKube`], with a kubeconfig
//!   of its ServiceAccount ([`chart::install_rbac`]).
//! - [`github`]: [`FakeGithub`], a GitHub Actions secrets API on loopback that decrypts
//!   the sealed values it receives.
//! - [`gitlab`]: [`FakeGitlab`], the GitLab CI/CD variables API on loopback with GitLab's
//!   documented rules (no upsert, environment scopes, masking).
//! - [`loopback`]: [`loopback::LoopbackServer`], the thread and accept loop the fakes share.
//! - [`proxy`]: [`Proxy`], a TCP proxy a test puts in front of an outside system to cut
//!   it (refused) or freeze it (accepted, never forwarded; or new connections only) and restore it.
//! - [`http_recorder`]: [`HttpRecorder`], an HTTP forwarder a test puts in front of a
//!   plain-HTTP outside system (OpenBao, RabbitMQ) to see the requests that reached it.
//! - [`user_agents`]: [`UserAgents`], the `User-Agent` of every request a fake (or the
//!   recorder) received.
//! - [`webhook`]: [`WebhookReceiver`], a webhook endpoint on loopback that verifies rotor's
//!   notification signatures and timestamps and records what it accepted.
//!
//! Services are real (see `INTEGRATION-NOTES.md`): nothing here mocks OpenBao or
//! PostgreSQL. A test that needs them calls [`stack()`], which panics with the command
//! that starts them when they are not there.

pub mod apiserver;
pub mod chart;
pub mod fake_kube;
pub mod github;
pub mod gitlab;
pub mod helm;
pub mod http_recorder;
pub mod key_api;
pub mod leak;
pub mod loopback;
pub mod names;
pub mod proxy;
pub mod stack;
pub mod user_agents;
pub mod webhook;

pub use fake_kube::{FakeKube, FakeKubeOptions, SecretPatches, ServiceAccountKubeconfig};
pub use github::FakeGithub;
pub use gitlab::FakeGitlab;
pub use http_recorder::HttpRecorder;
pub use key_api::FakeKeyApi;
pub use leak::assert_no_secret;
pub use names::{canary, unique};
pub use proxy::Proxy;
pub use stack::{PgInfo, ServiceInfo, Stack, mysql, rabbitmq, redis, stack};
pub use user_agents::{Seen, UserAgents};
pub use webhook::WebhookReceiver;

/// Installs the process-wide rustls crypto provider (aws-lc-rs), as rotor does at start.
/// kube's dependencies compile in a second rustls back-end, so without an installed
/// default a kube client would panic when it is built. Safe to call many times.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
