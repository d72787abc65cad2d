//! Keeping the token alive in a long-running agent ([`Vault::keep_alive`]): renewals at
//! two thirds of each lease, new logins when a renewal cannot give a full TTL.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{AuthAs, Vault, VaultAuth, VaultError};

/// A token's lease as Vault reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TokenLease {
    /// When the lease was granted (taken before the request was sent, so early).
    pub(super) granted: Instant,
    /// Time to live from `granted`; zero with a zero `full_ttl`: never expires.
    pub(super) ttl: Duration,
    /// Whether `auth/token/renew-self` may extend it.
    pub(super) renewable: bool,
    /// The largest TTL seen for this token: what a renewal grants while the token is
    /// far from its maximum TTL.
    pub(super) full_ttl: Duration,
}

impl TokenLease {
    /// The last renewal gave less than a full TTL: the token is near its maximum TTL.
    fn capped(&self) -> bool {
        self.ttl < self.full_ttl
    }
}

/// `auth.lease_duration` and `auth.renewable` of a login or renewal answer.
pub(super) fn auth_lease(body: &Value, granted: Instant, full_ttl: Option<Duration>) -> TokenLease {
    let auth = &body["auth"];
    let ttl = Duration::from_secs(auth["lease_duration"].as_u64().unwrap_or(0));
    TokenLease {
        granted,
        ttl,
        renewable: auth["renewable"].as_bool().unwrap_or(false),
        // The largest TTL seen is the full one (a looked-up token shows what is left).
        full_ttl: full_ttl.map_or(ttl, |full| full.max(ttl)),
    }
}

/// What the token keeper does next, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `auth/token/renew-self`.
    Renew,
    /// Log in again (the token cannot be renewed, or is near its maximum TTL).
    LogIn,
    /// Nothing more can be done for this token.
    Stop(&'static str),
}

/// The keeper's next step for `lease`: act at two thirds of the lease, renewing while
/// a renewal still gives a full TTL, then (login methods) logging in again.
fn next_step(lease: &TokenLease, can_log_in: bool) -> (Instant, Step) {
    if lease.ttl.is_zero() && lease.full_ttl.is_zero() {
        return (lease.granted, Step::Stop("the token does not expire"));
    }
    // A TTL from Vault may be absurd (u64 seconds): no arithmetic that can overflow.
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    let at = lease
        .granted
        .checked_add((lease.ttl / 3).saturating_mul(2).min(CENTURY))
        .unwrap_or(lease.granted);
    let step = match (can_log_in, lease.renewable && !lease.capped()) {
        (_, true) => Step::Renew,
        (true, false) => Step::LogIn,
        (false, false) if !lease.renewable => Step::Stop("the token is not renewable"),
        (false, false) => Step::Stop("the token reaches its maximum TTL"),
    };
    (at, step)
}

/// Backoff between failed attempts: 1 s, doubling, at most 60 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

impl Vault {
    /// `auth/token/renew-self` for the token in use.
    async fn renew(&self, full_ttl: Duration) -> Result<TokenLease, VaultError> {
        let granted = Instant::now();
        let resp = self
            .request_ok(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(&json!({})),
                AuthAs::Rotor,
            )
            .await?;
        let lease = auth_lease(&resp.json(), granted, Some(full_ttl));
        self.set_lease(lease);
        Ok(lease)
    }

    /// `auth/token/lookup-self`: the lease of a given token.
    async fn look_up(&self) -> Result<TokenLease, VaultError> {
        let granted = Instant::now();
        let resp = self
            .request_ok(
                reqwest::Method::GET,
                "auth/token/lookup-self",
                None,
                AuthAs::Rotor,
            )
            .await?;
        let data = &resp.json()["data"];
        let secs = |k: &str| Duration::from_secs(data[k].as_u64().unwrap_or(0));
        let lease = TokenLease {
            granted,
            ttl: secs("ttl"),
            renewable: data["renewable"].as_bool().unwrap_or(false),
            // What is left, not `creation_ttl`: the first renewal shows the full TTL.
            full_ttl: secs("ttl"),
        };
        self.set_lease(lease);
        Ok(lease)
    }

    /// Keeps the token valid until `shutdown` resolves, in a task of its own: renews
    /// it (`auth/token/renew-self`) at two thirds of each lease; with Kubernetes or
    /// AppRole auth, logs in again when a renewal fails, when the token is not
    /// renewable, or when renewals stop giving a full TTL (its maximum TTL is near).
    /// A given token is renewed while it is renewable; otherwise there is nothing to
    /// do. Each renewal and login is logged (never the token); failures are logged as
    /// errors and retried with backoff (1 s doubling to 60 s).
    pub fn keep_alive<F>(&self, shutdown: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let vault = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {}
                () = vault.keep_alive_loop() => {}
            }
        })
    }

    async fn keep_alive_loop(&self) {
        let method = self.shared.auth.method();
        let mount = self.shared.auth.mount().unwrap_or_default();
        let can_log_in = self.shared.auth != VaultAuth::Token;
        let mut attempt = 0u32;
        let lease = loop {
            let known = self.session().lease;
            let result = match known {
                Some(lease) => Ok(lease),
                None => self.look_up().await,
            };
            match result {
                Ok(lease) => break lease,
                Err(e) => {
                    let wait = backoff(attempt);
                    error!(error = %e, retry_in_secs = wait.as_secs(), "Cannot look up the Vault token's lease; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        };
        let mut lease = lease;
        attempt = 0;
        // After a failed renewal of a given token: when to try again.
        let mut retry_at: Option<Instant> = None;
        loop {
            let (mut at, step) = next_step(&lease, can_log_in);
            if let Some(retry) = retry_at.take() {
                at = retry;
            }
            match step {
                Step::Stop(why) => {
                    if lease.ttl.is_zero() && lease.full_ttl.is_zero() {
                        debug!(method, "The Vault token does not expire; nothing to renew.");
                    } else {
                        warn!(
                            method,
                            reason = why,
                            expires_in_secs =
                                lease.ttl.saturating_sub(lease.granted.elapsed()).as_secs(),
                            "The Vault token cannot be kept alive; replace it before it expires."
                        );
                    }
                    return;
                }
                Step::Renew => {
                    tokio::time::sleep_until(at).await;
                    match self.renew(lease.full_ttl).await {
                        Ok(renewed) => {
                            info!(
                                method,
                                mount,
                                ttl_secs = renewed.ttl.as_secs(),
                                "Renewed the Vault token."
                            );
                            lease = renewed;
                        }
                        Err(e) if can_log_in => {
                            warn!(method, mount, error = %e, "Renewing the Vault token failed; logging in again.");
                            lease = self.log_in_until_done("renewal_failed").await;
                        }
                        Err(e) => {
                            // A given token cannot be replaced: renew again later.
                            let wait = backoff(attempt);
                            attempt += 1;
                            error!(method, error = %e, retry_in_secs = wait.as_secs(), "Renewing the Vault token failed; retrying.");
                            retry_at = Some(Instant::now() + wait);
                            continue;
                        }
                    }
                    attempt = 0;
                }
                Step::LogIn => {
                    tokio::time::sleep_until(at).await;
                    let reason = if lease.renewable {
                        "max_ttl"
                    } else {
                        "not_renewable"
                    };
                    lease = self.log_in_until_done(reason).await;
                }
            }
        }
    }

    /// Logs in again, retrying with backoff until it works.
    async fn log_in_until_done(&self, reason: &'static str) -> TokenLease {
        let method = self.shared.auth.method();
        let mount = self.shared.auth.mount().unwrap_or_default();
        let mut attempt = 0u32;
        loop {
            match self.log_in().await {
                Ok(lease) => {
                    info!(
                        method,
                        mount,
                        reason,
                        ttl_secs = lease.ttl.as_secs(),
                        renewable = lease.renewable,
                        "Logged in to Vault again."
                    );
                    return lease;
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    attempt += 1;
                    error!(method, mount, error = %e, retry_in_secs = wait.as_secs(), "Logging in to Vault failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ttl: u64, full: u64, renewable: bool) -> TokenLease {
        TokenLease {
            granted: Instant::now(),
            ttl: Duration::from_secs(ttl),
            renewable,
            full_ttl: Duration::from_secs(full),
        }
    }

    #[test]
    fn renews_at_two_thirds_then_logs_in_near_the_max_ttl() {
        let l = lease(3600, 3600, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::Renew);
        assert_eq!(at - l.granted, Duration::from_secs(2400));
        // A renewal capped by the maximum TTL: log in again before it runs out.
        let l = lease(600, 3600, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::LogIn);
        assert_eq!(at - l.granted, Duration::from_secs(400));
        assert_eq!(next_step(&lease(60, 60, false), true).1, Step::LogIn);
        // A renewal that gave nothing: log in at once.
        let l = lease(0, 60, true);
        assert_eq!(next_step(&l, true), (l.granted, Step::LogIn));
    }

    #[test]
    fn an_absurd_ttl_from_vault_cannot_overflow_the_keeper() {
        // `granted + ttl * 2 / 3` panicked for a TTL near u64::MAX seconds.
        let l = lease(u64::MAX, u64::MAX, true);
        let (at, step) = next_step(&l, true);
        assert_eq!(step, Step::Renew);
        assert!(at > l.granted, "renewal is still in the future");
    }

    #[test]
    fn a_given_token_is_renewed_while_it_can_be() {
        assert_eq!(next_step(&lease(90, 90, true), false).1, Step::Renew);
        assert!(matches!(
            next_step(&lease(90, 90, false), false).1,
            Step::Stop(_)
        ));
        assert!(matches!(
            next_step(&lease(30, 90, true), false).1,
            Step::Stop(_)
        ));
        // A root token never expires.
        assert!(matches!(
            next_step(&lease(0, 0, false), true).1,
            Step::Stop(_)
        ));
    }

    #[test]
    fn a_looked_up_lease_learns_the_full_ttl_from_its_first_renewal() {
        // lookup-self said 2 s were left of a 3 s token; the renewal grants 3 s.
        let answer = json!({"auth": {"lease_duration": 3, "renewable": true}});
        let renewed = auth_lease(&answer, Instant::now(), Some(Duration::from_secs(2)));
        assert_eq!(renewed.full_ttl, Duration::from_secs(3));
        assert!(!renewed.capped());
        // Near the maximum TTL the renewal grants less than that: capped.
        let answer = json!({"auth": {"lease_duration": 1, "renewable": true}});
        let capped = auth_lease(&answer, Instant::now(), Some(renewed.full_ttl));
        assert!(capped.capped());
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
