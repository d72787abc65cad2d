//! rotor rotates the credentials of non-human identities: it keeps the canonical copy
//! in Vault, pushes new values to their consumers and proves the old secret is dead.
//!
//! Module map:
//! - [`app`]: the one place the program is assembled: the engine every command uses, and
//!   `rotor run` (agent, evidence, API, leader election, token keeper, signals).
//! - [`agent`]: the long-running agent (`rotor run`) and the [`agent::Control`] the API uses.
//! - [`api`]: the wire types of the HTTP API, shared by the server and its client.
//! - [`audit`]: the hash-chained audit log and its verifier.
//! - [`cli`]: the command line (`validate`, `plan`, `rotate`, `resume`, `run`, `status`,
//!   `retire`, `enable`, `audit`, …).
//! - [`leader`]: leader election on a Kubernetes Lease (`rotor run --leader-election`).
//! - [`logging`]: the stderr log layer: the hard cap on other crates' logs, escaped text fields.
//! - [`metrics`]: the owned Prometheus registry; every metric is named there.
//! - [`outside`]: the agent-wide timeout of calls to outside systems, and their timeout
//!   counts.
//! - [`notify`]: signed webhook notifications of policy events, retried with backoff.
//! - [`server`]: the HTTP API: health, metrics, policies, on-demand rotation.
//! - [`policy`]: the policy model (serde), loading with precise errors, validation, templates.
//! - [`schedule`]: cron + time zone → next fire times.
//! - [`fuzzing`]: the entry points of the fuzz targets and their replay test.
//! - [`engine`]: the rotation state machine, its journal and failpoints; retirement
//!   (offboarding) and enabling again.
//! - [`evidence`]: the engine's typed events, and the one component that turns them into
//!   audit records, metrics and notifications (agent and CLI alike).
//! - [`credentials`]: one module per credential kind, dispatched by an enum.
//! - [`consumers`]: one module per consumer, dispatched by an enum.
//! - [`state`]: everything rotor keeps in Vault for itself (journal, staging, histories,
//!   retirement, quarantine and approval records, the fingerprint key) behind one
//!   trait, with an in-memory implementation for tests.
//! - [`vault`]: the Vault client (vaultrs): configuration, login, KV v2, references.
//! - [`secret`]: secret-holding types and HMAC fingerprints.
//! - [`cert`]: certificates in a value, read without I/O (PEM blocks, expiry).

pub mod agent;
pub mod api;
pub mod app;
pub mod audit;
pub mod cert;
pub mod cli;
pub mod consumers;
pub mod credentials;
pub mod engine;
pub mod evidence;
pub mod fuzzing;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod outside;
pub mod policy;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod state;
pub mod vault;

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call once at start,
/// before any TLS client is built: with both rustls back-ends compiled in (kube's
/// dependencies bring in ring), rustls cannot pick one by itself and would panic.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An error followed by its causes, `a: b: c`, skipping causes the text already
/// contains. rotor's errors never carry secret values, so neither does this.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
