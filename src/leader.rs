//! Leader election on a Kubernetes Lease (`rotor run --leader-election`).
//!
//! Replicas of the agent compete for one `coordination.k8s.io/v1` Lease through the
//! `kube-lease-manager` crate; only the holder schedules and rotates, followers serve
//! health and metrics. [`run`] reports every change of leadership through a callback
//! (the agent's `set_leader`) and releases the Lease at shutdown.
//!
//! One safeguard sits on top of the crate: its background task only logs a failed
//! renewal and keeps believing it holds the Lease. While leading, [`run`] therefore
//! reads the Lease itself every `duration / 8` (at least 250 ms) and steps down as soon
//! as its own last renewal is older than `duration - grace / 2` — before another
//! replica may take the Lease over, with `grace / 2` to spare for clock skew between
//! nodes. It leads again once a fresh renewal by this replica is visible.
//!
//! Timing, for a Lease duration `D` (whole seconds, at least 2 s): the holder renews
//! `grace = max(1 s, D / 3)` before expiry. A follower looks at the Lease when the
//! expiry it last saw has passed, so after a release it takes over within `D`; after a
//! crash (no release) within about `D` plus up to one second of the crate's back-off.

use std::future::Future;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The shortest Lease duration [`run`] accepts (the crate needs a grace period of at
/// least one second below the duration).
pub const MIN_DURATION: Duration = Duration::from_secs(2);

/// Where Kubernetes mounts the pod's namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Which Lease to compete for, as whom, and for how long a renewal holds.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Name of the Lease (`--lease-name`, default `rotor`).
    pub lease_name: String,
    /// Namespace of the Lease (`--lease-namespace`, default: the pod's namespace).
    pub namespace: String,
    /// This replica's identity in the Lease: unique among the replicas
    /// ([`default_identity`]: the pod name, or host name and process id).
    pub identity: String,
    /// How long a renewal holds the Lease (`--lease-duration`, default 15 s); whole
    /// seconds, at least [`MIN_DURATION`].
    pub duration: Duration,
}

impl LeaderConfig {
    /// Checks what [`run`] would refuse, so `rotor run` can fail at start.
    pub fn check(&self) -> Result<(), LeaderError> {
        if self.duration < MIN_DURATION {
            return Err(LeaderError::Duration(self.duration));
        }
        if self.lease_name.trim().is_empty()
            || self.namespace.trim().is_empty()
            || self.identity.trim().is_empty()
        {
            return Err(LeaderError::Empty);
        }
        Ok(())
    }

    /// `(duration, grace)` in whole seconds for the crate; `grace < duration`.
    fn seconds(&self) -> (u64, u64) {
        let duration = self.duration.as_secs().max(MIN_DURATION.as_secs());
        let grace = (duration / 3).clamp(1, duration - 1);
        (duration, grace)
    }
}

/// This replica's identity: `POD_NAME` when set (the Downward API), else the host
/// name (in a pod: the pod name) and the process id, `host-1234`.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rotor".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The pod's namespace (from its service account mount), else `default`.
pub fn default_namespace() -> String {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Why leader election could not run or end cleanly.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum LeaderError {
    /// The Lease duration is below [`MIN_DURATION`].
    #[error("the lease duration must be at least 2s (whole seconds), not {0:?}")]
    #[strum(serialize = "lease_duration")]
    Duration(Duration),
    /// The Lease name, namespace or identity is empty.
    #[error("the lease name, namespace and identity must not be empty")]
    #[strum(serialize = "lease_name")]
    Empty,
    /// The Lease could not be released at shutdown; a successor waits for it to expire.
    #[error("releasing lease {namespace}/{name} failed")]
    #[strum(serialize = "lease_release")]
    Release {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The crate's error (boxed: it is large).
        #[source]
        source: Box<LeaseManagerError>,
    },
}

impl LeaderError {
    /// Fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether trying again may help (network, timeouts, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            LeaderError::Duration(_) | LeaderError::Empty => false,
            LeaderError::Release { source, .. } => match source.as_ref() {
                LeaseManagerError::KubeError(kube::Error::Api(status)) => {
                    status.code >= 500 || status.code == 429
                }
                LeaseManagerError::KubeError(_) => true,
                _ => false,
            },
        }
    }
}

/// The crate's background task and the channel it reports holding the Lease on.
struct Elector {
    held: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

async fn start_elector(
    client: &kube::Client,
    config: &LeaderConfig,
) -> Result<Elector, LeaseManagerError> {
    let (duration, grace) = config.seconds();
    let params = LeaseParams::new(config.identity.clone(), duration, grace);
    let manager = LeaseManager::new(
        client.clone(),
        &config.lease_name,
        &config.namespace,
        params,
        LeaseCreateMode::AutoCreate,
    )
    .await?;
    let (held, task) = manager.watch().await;
    Ok(Elector { held, task })
}

/// Until when `lease` proves `identity` holds it, keeping `margin` for clock skew.
fn confirmed_until(lease: Option<&Lease>, identity: &str, margin: Duration) -> Option<SystemTime> {
    let spec = lease?.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    (renewed + duration).checked_sub(margin)
}

/// Competes for the Lease until `shutdown`: calls `on_change(true)` when this replica
/// becomes the leader and `on_change(false)` when it stops being one (also at
/// shutdown, before the Lease is released), and `on_change(false)` once when the Lease
/// is first reached and another replica holds it, so the caller knows its state. Failures to reach the API server are
/// logged and retried; a leader that cannot confirm its renewal in time steps down.
///
/// Returns an error for an invalid [`LeaderConfig`] (before doing anything) or when
/// the Lease could not be released at shutdown.
///
/// ```no_run
/// # async fn example(agent: rotor::agent::Agent, stop: tokio::sync::oneshot::Receiver<()>) {
/// use std::time::Duration;
/// use rotor::leader::{self, LeaderConfig};
///
/// let client = kube::Client::try_default().await.expect("a kubeconfig");
/// let config = LeaderConfig {
///     lease_name: "rotor".into(),
///     namespace: leader::default_namespace(),
///     identity: leader::default_identity(),
///     duration: Duration::from_secs(15),
/// };
/// agent.set_leader(false);
/// leader::run(client, config, move |leading| agent.set_leader(leading), async {
///     let _ = stop.await;
/// })
/// .await
/// .expect("the lease is released");
/// # }
/// ```
pub async fn run(
    client: kube::Client,
    config: LeaderConfig,
    on_change: impl Fn(bool) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LeaderError> {
    config.check()?;
    let (duration, grace) = config.seconds();
    let lease = format!("{}/{}", config.namespace, config.lease_name);
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let check_every = (config.duration / 8).max(Duration::from_millis(250));
    let margin = Duration::from_secs(grace) / 2;
    let mut ticks = tokio::time::interval(check_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(
        lease = %lease,
        identity = %config.identity,
        duration_seconds = duration,
        "Leader election: competing for the lease."
    );

    tokio::pin!(shutdown);
    let mut elector: Option<Elector> = None;
    let mut retry = Duration::from_millis(500);
    // `held`: the crate says this replica holds the Lease; `leader`: announced.
    let mut held = false;
    let mut leader = false;
    let mut valid_until = SystemTime::UNIX_EPOCH;
    // Whether `on_change` has been told a first state.
    let mut reported = false;
    loop {
        let Some(e) = elector.as_mut() else {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                started = start_elector(&client, &config) => match started {
                    Ok(e) => {
                        elector = Some(e);
                        retry = Duration::from_millis(500);
                    }
                    Err(error) => {
                        crate::outside::note(crate::outside::System::Kubernetes, &error);
                        warn!(lease = %lease, error = %crate::error_chain(&error), "Cannot reach the lease; retrying.");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(config.duration);
                    }
                },
            }
            continue;
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            changed = e.held.changed() => match changed {
                Ok(()) => held = *e.held.borrow_and_update(),
                Err(_) => {
                    // The crate's task ended (it only does so on a closed channel or
                    // a failed send); start a new one.
                    warn!(lease = %lease, "The lease task ended; starting it again.");
                    elector = None;
                    held = false;
                }
            },
            _ = ticks.tick() => {}
        }
        if held {
            match tokio::time::timeout(check_every, api.get_opt(&config.lease_name)).await {
                Ok(Ok(found)) => {
                    valid_until = confirmed_until(found.as_ref(), &config.identity, margin)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                }
                Ok(Err(error)) => {
                    crate::outside::note(crate::outside::System::Kubernetes, &error);
                    debug!(lease = %lease, error = %error, "Cannot read the lease to confirm it.")
                }
                Err(_) => {
                    crate::outside::count_timeout(crate::outside::System::Kubernetes);
                    debug!(lease = %lease, "Reading the lease timed out.")
                }
            }
        }
        let leading = held && SystemTime::now() < valid_until;
        if !reported {
            // The first state since the elector reached the Lease: the agent learns
            // that its leadership is known (readiness waits for it), even as a follower.
            reported = true;
            if !leading {
                on_change(false);
            }
        }
        if leading != leader {
            leader = leading;
            if leading {
                info!(lease = %lease, identity = %config.identity, "Leader: this replica rotates.");
            } else if held {
                warn!(lease = %lease, "Cannot confirm the lease renewal in time; stepping down.");
            } else {
                info!(lease = %lease, "Lost the lease: this replica no longer rotates.");
            }
            on_change(leading);
        }
    }

    if leader {
        on_change(false);
    }
    release(elector, config, &lease).await
}

/// Lets go of the Lease at shutdown: closing the channel makes the crate's task
/// release it and end (waiting at most one lease duration).
async fn release(
    elector: Option<Elector>,
    config: LeaderConfig,
    lease: &str,
) -> Result<(), LeaderError> {
    let Some(e) = elector else {
        return Ok(());
    };
    // Closing the channel makes the crate's task release the Lease and end.
    let Elector { held, mut task } = e;
    drop(held);
    match tokio::time::timeout(config.duration, &mut task).await {
        Ok(Ok(Ok(_))) => {
            info!(lease = %lease, "Lease released.");
            Ok(())
        }
        Ok(Ok(Err(source))) => Err(LeaderError::Release {
            namespace: config.namespace,
            name: config.lease_name,
            source: Box::new(source),
        }),
        Ok(Err(join)) => {
            warn!(lease = %lease, error = %join, "The lease task failed.");
            Ok(())
        }
        Err(_) => {
            task.abort();
            warn!(lease = %lease, "Releasing the lease timed out; it expires by itself.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn config(duration: Duration) -> LeaderConfig {
        LeaderConfig {
            lease_name: "rotor".into(),
            namespace: "default".into(),
            identity: "a".into(),
            duration,
        }
    }

    #[test]
    fn durations_below_two_seconds_are_refused() {
        assert!(matches!(
            config(Duration::from_millis(1500)).check(),
            Err(LeaderError::Duration(_))
        ));
        assert!(config(Duration::from_secs(2)).check().is_ok());
        let mut empty = config(Duration::from_secs(15));
        empty.identity = " ".into();
        assert!(matches!(empty.check(), Err(LeaderError::Empty)));
    }

    #[test]
    fn grace_is_a_third_of_the_duration_and_below_it() {
        assert_eq!(config(Duration::from_secs(2)).seconds(), (2, 1));
        assert_eq!(config(Duration::from_secs(3)).seconds(), (3, 1));
        assert_eq!(config(Duration::from_secs(15)).seconds(), (15, 5));
        assert_eq!(config(Duration::from_millis(3900)).seconds(), (3, 1));
    }

    fn lease(holder: &str, renewed: SystemTime, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(
                    k8s_openapi::jiff::Timestamp::try_from(renewed).expect("timestamp"),
                )),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_our_own_renewal_confirms_the_lease() {
        let renewed = SystemTime::now();
        let margin = Duration::from_millis(500);
        assert_eq!(
            confirmed_until(Some(&lease("a", renewed, 3)), "a", margin),
            Some(renewed + Duration::from_millis(2500))
        );
        assert_eq!(
            confirmed_until(Some(&lease("b", renewed, 3)), "a", margin),
            None
        );
        assert_eq!(confirmed_until(None, "a", margin), None);
        assert_eq!(confirmed_until(Some(&Lease::default()), "a", margin), None);
    }
}
