//! Schedules: POSIX cron read in an IANA time zone (croner + chrono-tz) → the next
//! fire instants. Windows, jitter and maxAge are applied by the agent's scheduler.

use chrono::{DateTime, Utc};

use crate::policy::ValidatedPolicy;

/// The next `count` cron fire times of `policy` strictly after `after`, in UTC.
/// Empty for policies without a cron line (on demand or maxAge only).
pub fn next_fire_times(
    policy: &ValidatedPolicy,
    after: DateTime<Utc>,
    count: usize,
) -> Vec<DateTime<Utc>> {
    let Some(schedule) = &policy.spec.schedule else {
        return Vec::new();
    };
    let Some(cron) = &schedule.cron else {
        return Vec::new();
    };
    let local = after.with_timezone(&schedule.timezone);
    cron.iter_after(local)
        .take(count)
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

/// When a certificate policy's current certificate must be renewed: its expiry minus
/// `renewBefore`. `None` for other kinds, for policies without `renewBefore`, and when
/// `current` (the canonical value) holds no readable expiry.
pub fn renewal_due(
    policy: &ValidatedPolicy,
    current: &crate::secret::SecretMap,
) -> Option<DateTime<Utc>> {
    let crate::policy::CredentialSpec::VaultPki(pki) = &policy.spec.credential else {
        return None;
    };
    let before = chrono::Duration::from_std(pki.renew_before?).ok()?;
    let expires: DateTime<Utc> =
        crate::credentials::vault_pki::PkiTarget::expiration(current)?.into();
    Some(expires - before)
}

/// Why a policy is due now, if it is: its certificate is inside `renewBefore` of its
/// expiry, or its secret is older than `maxAge` (`created` is when the canonical
/// version was written). Cron fire times are the scheduler's own clock.
pub fn due_now(
    policy: &ValidatedPolicy,
    current: &crate::secret::SecretMap,
    created: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DueReason> {
    if let Some(at) = renewal_due(policy, current)
        && at <= now
    {
        return Some(DueReason::RenewBefore { due_at: at });
    }
    let max_age = policy.spec.schedule.as_ref()?.max_age?;
    let created = created?;
    let limit = created + chrono::Duration::from_std(max_age).ok()?;
    (limit <= now).then_some(DueReason::MaxAge { due_at: limit })
}

/// Why a rotation is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    /// The certificate expires within `renewBefore`.
    RenewBefore {
        /// Expiry minus `renewBefore`.
        due_at: DateTime<Utc>,
    },
    /// The secret is older than `maxAge`.
    MaxAge {
        /// Creation plus `maxAge`.
        due_at: DateTime<Utc>,
    },
}
