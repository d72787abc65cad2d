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
