//! Bounds on calls to outside systems: one agent-wide call timeout and a count of the
//! calls that ran into it; and the one `User-Agent` ([`USER_AGENT`]) every HTTP client
//! rotor builds sends.
//!
//! Every client rotor builds for an outside system (Kubernetes, Vault, GitLab, GitHub,
//! webhooks, the targets) takes its per-call limit from [`call_timeout`], which the
//! command line sets once at start (`--call-timeout`, env `ROTOR_CALL_TIMEOUT`, default
//! [`DEFAULT_CALL_TIMEOUT`]), before any client exists. A hung system therefore holds a
//! rotation (and its concurrency slot) for at most that long per call; the error says
//! so, its `kind()` is `timeout`, it is retryable, and [`count_timeout`] adds one to
//! `rotor_outside_call_timeouts_total{system}` (see [`crate::metrics`]).
//!
//! The setting and the counts are process-wide (atomics) because the clients are built
//! in many places, lazily, and a process runs one agent.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `User-Agent` of every HTTP request rotor makes (Kubernetes, Vault, GitLab, GitHub,
/// webhooks, the HTTP targets, the agent's API), so the other side's access and audit
/// logs can tell rotor apart: `rotor/<version>`.
pub const USER_AGENT: &str = concat!("rotor/", env!("CARGO_PKG_VERSION"));

/// The call timeout when none is configured.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest call timeout accepted (shorter settings are raised to it).
pub const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest call timeout accepted (longer settings are lowered to it).
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(3600);
/// The environment variable of `--call-timeout`.
pub const ENV_CALL_TIMEOUT: &str = "ROTOR_CALL_TIMEOUT";

// Milliseconds; `u64` holds any duration a person would configure.
static CALL_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_CALL_TIMEOUT.as_millis() as u64);

/// The limit on one call to an outside system (one HTTP request, one connect, one
/// statement).
pub fn call_timeout() -> Duration {
    Duration::from_millis(CALL_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Sets [`call_timeout`] (kept within [`MIN_CALL_TIMEOUT`]..=[`MAX_CALL_TIMEOUT`]).
/// Call it once at start, before clients are built: clients built earlier keep the
/// limit they were built with.
pub fn set_call_timeout(limit: Duration) {
    let limit = limit.clamp(MIN_CALL_TIMEOUT, MAX_CALL_TIMEOUT);
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    CALL_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// An outside system rotor calls; the `system` label of the timeout counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The Kubernetes API server.
    Kubernetes,
    /// Vault / OpenBao.
    Vault,
    /// The GitLab API.
    Gitlab,
    /// The GitHub API.
    Github,
    /// Webhook notification receivers.
    Webhook,
    /// PostgreSQL targets.
    Postgres,
    /// MySQL / MariaDB targets.
    Mysql,
    /// Redis targets.
    Redis,
    /// RabbitMQ's management API.
    Rabbitmq,
    /// `http_api_key` targets.
    HttpApi,
}

impl System {
    /// Every system, in label order.
    pub const ALL: [System; 10] = [
        System::Kubernetes,
        System::Vault,
        System::Gitlab,
        System::Github,
        System::Webhook,
        System::Postgres,
        System::Mysql,
        System::Redis,
        System::Rabbitmq,
        System::HttpApi,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Kubernetes => "kubernetes",
            System::Vault => "vault",
            System::Gitlab => "gitlab",
            System::Github => "github",
            System::Webhook => "webhook",
            System::Postgres => "postgres",
            System::Mysql => "mysql",
            System::Redis => "redis",
            System::Rabbitmq => "rabbitmq",
            System::HttpApi => "http_api",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

static TIMEOUTS: [AtomicU64; System::ALL.len()] = [const { AtomicU64::new(0) }; System::ALL.len()];

/// Counts one call to `system` that ran into its timeout.
pub fn count_timeout(system: System) {
    TIMEOUTS[system.index()].fetch_add(1, Ordering::Relaxed);
    tracing::debug!(system = system.as_str(), "An outside call timed out.");
}

/// Calls to `system` that timed out since the process started.
pub fn timeouts(system: System) -> u64 {
    TIMEOUTS[system.index()].load(Ordering::Relaxed)
}

/// Whether `error` (or one of its sources) is a timeout: an I/O `TimedOut`, a reqwest
/// timeout, or an elapsed tokio/tower deadline.
pub fn is_timeout(error: &(dyn Error + 'static)) -> bool {
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return true;
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        // hyper-timeout, tower and others that wrap without a typed source.
        let text = e.to_string();
        if text.contains("timed out") || text.contains("deadline has elapsed") {
            return true;
        }
        current = e.source();
    }
    false
}

/// Counts `error` against `system` when it is a timeout; returns whether it was.
pub fn note(system: System, error: &(dyn Error + 'static)) -> bool {
    let timed_out = is_timeout(error);
    if timed_out {
        count_timeout(system);
    }
    timed_out
}

/// Runs `call` under [`call_timeout`]; on expiry counts it against `system` and returns
/// the limit that passed.
pub async fn bounded<T>(
    system: System,
    call: impl std::future::Future<Output = T>,
) -> Result<T, Duration> {
    let limit = call_timeout();
    match tokio::time::timeout(limit, call).await {
        Ok(v) => Ok(v),
        Err(_) => {
            count_timeout(system);
            Err(limit)
        }
    }
}

/// A Kubernetes client from the kubeconfig or the in-cluster configuration with every
/// request bounded by [`call_timeout`] (connect, write and each read; kube's default
/// read timeout is none and its write timeout 295 s) and carrying [`USER_AGENT`].
pub async fn kube_client() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    kube_client_from(config)
}

/// A Kubernetes client from `config` with [`kube_client`]'s limits and [`USER_AGENT`]
/// (for a configuration read some other way, as tests do from a kubeconfig file).
pub fn kube_client_from(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    let limit = call_timeout();
    config.connect_timeout = Some(limit);
    config.read_timeout = Some(limit);
    // The read limit counts from the request, not from when a pooled connection went idle
    // (which could otherwise time out the first answer on a connection idle for longer).
    config.reset_reader_on_write = true;
    config.write_timeout = Some(limit);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    kube::Client::try_from(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_timeouts_are_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(is_timeout(&e));
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!is_timeout(&refused));
    }

    #[test]
    fn labels_are_distinct_and_in_order() {
        for (i, s) in System::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        let mut labels: Vec<_> = System::ALL.iter().map(|s| s.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), System::ALL.len());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_counts_an_expired_call() {
        let before = timeouts(System::Webhook);
        let r = bounded(System::Webhook, std::future::pending::<()>()).await;
        assert_eq!(r, Err(call_timeout()));
        assert!(timeouts(System::Webhook) > before);
    }
}
