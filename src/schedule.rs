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
    // `rotor plan` asks this for every policy with the same `after`: policies sharing a
    // cron line and time zone share the answer (croner's search is most of the rest).
    let key = (
        schedule.cron_source.clone().unwrap_or_default(),
        schedule.timezone,
        count,
    );
    FIRE_TIMES.with_borrow_mut(|(at, known)| {
        if *at != Some(after) {
            *at = Some(after);
            known.clear();
        }
        known
            .entry(key)
            .or_insert_with(|| {
                let local = after.with_timezone(&schedule.timezone);
                cron.iter_after(local)
                    .take(count)
                    .map(|t| t.with_timezone(&Utc))
                    .collect()
            })
            .clone()
    })
}

/// Fire times per (cron line, time zone, count), all computed for one `after` instant.
type FireTimes = std::collections::HashMap<(String, chrono_tz::Tz, usize), Vec<DateTime<Utc>>>;

thread_local! {
    static FIRE_TIMES: std::cell::RefCell<(Option<DateTime<Utc>>, FireTimes)> =
        std::cell::RefCell::default();
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

/// What a policy's schedule needs to know besides the clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct DueInputs {
    /// Cron fire times at or before this instant have been handled (the agent's start
    /// or the last fire it acted on).
    pub cron_after: Option<DateTime<Utc>>,
    /// When the current secret was written (for `maxAge`).
    pub secret_created: Option<DateTime<Utc>>,
    /// When the current certificate is due for renewal (expiry − `renewBefore`).
    pub renewal_at: Option<DateTime<Utc>>,
}

/// The next scheduled start of a rotation and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When to start (jitter applied, moved into the window).
    pub at: DateTime<Utc>,
    /// The cron fire time this start stands for (to advance `cron_after`), if cron.
    pub fire: Option<DateTime<Utc>>,
    /// What made it due.
    pub reason: DueKind,
}

/// What made a rotation due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    /// A cron fire time.
    Cron,
    /// The secret reached `maxAge`.
    MaxAge,
    /// The certificate entered `renewBefore`.
    RenewBefore,
}

impl DueKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::Cron => "cron",
            DueKind::MaxAge => "max_age",
            DueKind::RenewBefore => "renew_before",
        }
    }
}

/// A deterministic delay in `[0, jitter]` for one policy and fire time: replicas and
/// restarts agree on it, and policies sharing a cron line spread out.
pub fn jitter_for(
    policy: &str,
    fire: DateTime<Utc>,
    jitter: std::time::Duration,
) -> chrono::Duration {
    use sha2::{Digest, Sha256};
    let max_ms = jitter.as_millis() as u64;
    if max_ms == 0 {
        return chrono::Duration::zero();
    }
    let digest = Sha256::new()
        .chain_update(policy.as_bytes())
        .chain_update(fire.timestamp_millis().to_be_bytes())
        .finalize();
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    chrono::Duration::milliseconds((u64::from_be_bytes(n) % (max_ms + 1)) as i64)
}

/// The first instant at or after `t` that lies inside `window` (read in `tz`). Local
/// times that do not exist (the DST spring-forward gap) start at the first instant
/// after the gap.
pub fn into_window(
    t: DateTime<Utc>,
    window: Option<crate::policy::Window>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    use chrono::{Duration, TimeZone};
    let Some(w) = window else { return t };
    let local = t.with_timezone(&tz);
    if w.contains(local.time()) {
        return t;
    }
    // The window opens at `start` today or tomorrow (or the day after, across a gap).
    for days in 0..3 {
        let date = local.date_naive() + Duration::days(days);
        let naive = date.and_time(w.start);
        let opens = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(x) => x,
            chrono::LocalResult::Ambiguous(first, _) => first,
            // In the gap: the first valid instant after it.
            chrono::LocalResult::None => {
                match tz.from_local_datetime(&(naive + Duration::hours(1))) {
                    chrono::LocalResult::Single(x) | chrono::LocalResult::Ambiguous(x, _) => x,
                    chrono::LocalResult::None => continue,
                }
            }
        };
        let opens = opens.with_timezone(&Utc);
        if opens >= t {
            return opens;
        }
    }
    t
}

/// When `policy` should next start a scheduled rotation: the earliest of its next cron
/// fire time after `inputs.cron_after` (plus jitter), the secret reaching `maxAge`, and
/// the certificate entering `renewBefore` — each moved into the window. `None` for
/// on-demand-only policies.
pub fn next_due(policy: &ValidatedPolicy, inputs: &DueInputs, now: DateTime<Utc>) -> Option<Due> {
    let tz = policy
        .spec
        .schedule
        .as_ref()
        .map_or(chrono_tz::UTC, |s| s.timezone);
    let window = policy.spec.schedule.as_ref().and_then(|s| s.window);
    let mut candidates: Vec<Due> = Vec::with_capacity(3);
    if let Some(s) = &policy.spec.schedule {
        if let Some(cron) = &s.cron {
            let after = inputs.cron_after.unwrap_or(now).with_timezone(&s.timezone);
            if let Some(fire) = cron.iter_after(after).next() {
                let fire = fire.with_timezone(&Utc);
                let at = fire + jitter_for(&policy.name, fire, s.jitter);
                candidates.push(Due {
                    at: into_window(at, window, tz),
                    fire: Some(fire),
                    reason: DueKind::Cron,
                });
            }
        }
        if let (Some(max_age), Some(created)) = (s.max_age, inputs.secret_created) {
            let limit =
                created + chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
            candidates.push(Due {
                at: into_window(limit.max(now), window, tz),
                fire: None,
                reason: DueKind::MaxAge,
            });
        }
    }
    if let Some(renew) = inputs.renewal_at {
        candidates.push(Due {
            at: into_window(renew.max(now), window, tz),
            fire: None,
            reason: DueKind::RenewBefore,
        });
    }
    candidates.into_iter().min_by_key(|d| d.at)
}
