//! Schedules: POSIX cron read in an IANA time zone (croner + chrono-tz) → the next
//! fire instants. Windows, jitter and maxAge are applied by the agent's scheduler.
//!
//! No function here panics on a time or duration: sums that would leave the calendar
//! are checked ([`checked_after`]) and read as "never" or saturate at [`far_future`].
//! Validation bounds every policy duration (`crate::policy::MAX_AGE_BOUND` …), so
//! those outcomes only meet absurd inputs, such as a secret created in year 9999.

use chrono::{DateTime, Utc};

/// The latest instant rotor computes with: the last millisecond of year 9999, the
/// last year RFC 3339 (the journal's and the API's time format) can write.
pub fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 999_000_000).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether `t` lies in years 1 to 9999 (up to [`far_future`]), where reading it in any
/// time zone stays on chrono's calendar (local times beyond it panic).
pub fn on_calendar(t: DateTime<Utc>) -> bool {
    t >= calendar_start() && t <= far_future()
}

/// The first instant of year 1.
fn calendar_start() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, or `None` when the sum is past [`far_future`] (or overflows).
pub fn checked_after(t: DateTime<Utc>, d: std::time::Duration) -> Option<DateTime<Utc>> {
    let d = chrono::Duration::from_std(d).ok()?;
    t.checked_add_signed(d).filter(|x| *x <= far_future())
}

/// `t + d`, saturating at [`far_future`] (or `t`, if later): for deadlines such as
/// `revoke_after` and approval expiry, where "as late as can be written" is the
/// honest reading of an absurdly long duration.
pub fn saturating_after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    checked_after(t, d).unwrap_or_else(|| far_future().max(t))
}

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
    let renew_before = policy.spec.credential.renew_before()?;
    let before = chrono::Duration::from_std(renew_before).unwrap_or(chrono::Duration::MAX);
    let expires: DateTime<Utc> = crate::cert::expiration(current)?.into();
    // Before the calendar's start: due at once.
    Some(
        expires
            .checked_sub_signed(before)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    )
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
    // Past the calendar: never due by age.
    let limit = checked_after(created, max_age)?;
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
    // At most i64::MAX ms, so `max_ms + 1` and the cast below cannot overflow.
    let max_ms = u64::try_from(jitter.as_millis())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64);
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
    if !on_calendar(t) {
        return t;
    }
    let local = t.with_timezone(&tz);
    if w.contains(local.time()) {
        return t;
    }
    // The window opens at `start` today or tomorrow (or the day after, across a gap).
    // At the calendar's end there is no such day: `t` stays as it is.
    for days in 0..3 {
        let Some(date) = local.date_naive().checked_add_days(chrono::Days::new(days)) else {
            break;
        };
        let naive = date.and_time(w.start);
        let opens = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(x) => x,
            chrono::LocalResult::Ambiguous(first, _) => first,
            // In the gap: the first valid instant after it.
            chrono::LocalResult::None => {
                let Some(later) = naive.checked_add_signed(Duration::hours(1)) else {
                    break;
                };
                match tz.from_local_datetime(&later) {
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
/// on-demand-only policies and when no trigger is ever reached (a `maxAge` limit past
/// [`far_future`]). Never panics, whatever the times and durations.
pub fn next_due(policy: &ValidatedPolicy, inputs: &DueInputs, now: DateTime<Utc>) -> Option<Due> {
    let tz = policy
        .spec
        .schedule
        .as_ref()
        .map_or(chrono_tz::UTC, |s| s.timezone);
    let window = policy.spec.schedule.as_ref().and_then(|s| s.window);
    let mut candidates: Vec<Due> = Vec::with_capacity(3);
    if let Some(s) = &policy.spec.schedule {
        // Fire times after the calendar's end are never reached; one before its start
        // reads as its start (overdue).
        let after = inputs.cron_after.unwrap_or(now).max(calendar_start());
        if let Some(cron) = s.cron.as_ref().filter(|_| on_calendar(after)) {
            let after = after.with_timezone(&s.timezone);
            if let Some(fire) = cron.iter_after(after).next() {
                let fire = fire.with_timezone(&Utc);
                let at = fire
                    .checked_add_signed(jitter_for(&policy.name, fire, s.jitter))
                    .unwrap_or(fire);
                candidates.push(Due {
                    at: into_window(at, window, tz),
                    fire: Some(fire),
                    reason: DueKind::Cron,
                });
            }
        }
        // A limit past the calendar's end is never reached: no maxAge candidate.
        if let (Some(max_age), Some(created)) = (s.max_age, inputs.secret_created)
            && let Some(limit) = checked_after(created, max_age)
        {
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
