//! `spec.schedule`: cron line, time zone, jitter, window and maximum age.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use chrono::{NaiveDate, NaiveTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::Validator;
use crate::policy::duration::{JITTER_BOUND, MAX_AGE_BOUND};
use crate::policy::model::{ScheduleSpec, Window};
use crate::policy::raw::RawSchedule;
use crate::policy::yaml::Located;

impl Validator {
    pub(super) fn schedule(&mut self, s: &Located<RawSchedule>) -> Option<ScheduleSpec> {
        let raw = &s.value;
        if raw.cron.is_none() && raw.max_age.is_none() {
            self.at(
                s,
                "found neither cron nor maxAge, expected at least one trigger",
            );
        }
        let timezone = match &raw.timezone {
            None => chrono_tz::Tz::UTC,
            Some(tz) => match tz.value.parse::<chrono_tz::Tz>() {
                Ok(z) => z,
                Err(_) => {
                    self.found(
                        tz,
                        &tz.value,
                        "an IANA time zone name such as Europe/Berlin or UTC",
                    );
                    chrono_tz::Tz::UTC
                }
            },
        };
        let cron = self.optional(raw.cron.as_ref(), |v, c| v.cron(c, timezone));
        let jitter = self
            .opt_duration(raw.jitter.as_ref(), JITTER_BOUND)
            .unwrap_or_default();
        let window = self.optional(raw.window.as_ref(), Self::window);
        let max_age = self.optional(raw.max_age.as_ref(), |v, m| v.duration(m, MAX_AGE_BOUND));
        if let (Some(Some(d)), Some(m)) = (max_age, &raw.max_age)
            && d.is_zero()
        {
            self.at(m, "found maxAge 0, expected a positive duration");
        }
        Some(ScheduleSpec {
            cron: cron?,
            cron_source: raw.cron.as_ref().map(|c| c.value.clone()),
            timezone,
            jitter,
            window: window?,
            max_age: max_age?,
        })
    }

    fn cron(&mut self, c: &Located<String>, tz: chrono_tz::Tz) -> Option<Arc<Cron>> {
        let src = c.value.escape_debug();
        let cron = match shared_cron(&c.value) {
            Ok(cron) => cron,
            Err(e) => {
                self.at(
                    c,
                    format!(
                        "found `{src}` ({e}), expected a POSIX cron line of 5 fields: minute hour day-of-month month day-of-week (0 = Sunday)"
                    ),
                );
                return None;
            }
        };
        // Fixed start so validation does not depend on the clock; a leap day is found
        // within four years, and nothing else in a 5-field line depends on the year.
        let start = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        let fires = start.is_some_and(|s| {
            cron.find_next_occurrence(&tz.from_utc_datetime(&s), false)
                .is_ok()
        });
        if !fires {
            self.at(
                c,
                format!("found `{src}`, which never fires, expected a schedule that fires (check day-of-month against month)"),
            );
            return None;
        }
        Some(cron)
    }

    fn window(&mut self, w: &Located<String>) -> Option<Window> {
        let parsed = w.value.split_once('-').and_then(|(a, b)| {
            let t = |s: &str| {
                let s = s.trim();
                (s.len() == 5)
                    .then(|| NaiveTime::parse_from_str(s, "%H:%M").ok())
                    .flatten()
            };
            Some((t(a)?, t(b)?))
        });
        match parsed {
            None => {
                self.found(
                    w,
                    &w.value,
                    "a local time window HH:MM-HH:MM such as 02:00-05:00",
                );
                None
            }
            Some((start, end)) if start == end => {
                self.at(
                    w,
                    format!(
                        "found an empty window `{}` (start equals end), expected HH:MM-HH:MM with different times",
                        w.value.escape_debug()
                    ),
                );
                None
            }
            Some((start, end)) => Some(Window { start, end }),
        }
    }
}

/// Parsed cron lines, shared by every loaded policy that writes the same line: croner
/// keeps a 5,000-entry year table in each parsed line (about 5 KB) and fills it when
/// parsing, which dominated loading thousands of policies.
static CRONS: LazyLock<Mutex<HashMap<String, Weak<Cron>>>> = LazyLock::new(Mutex::default);

/// `text` parsed as a POSIX 5-field cron line, or the copy already loaded.
fn shared_cron(text: &str) -> Result<Arc<Cron>, croner::errors::CronError> {
    // A poisoned lock still holds whole entries: each is inserted in one step.
    let crons = || CRONS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cron) = crons().get(text).and_then(Weak::upgrade) {
        return Ok(cron);
    }
    // Parsed without the lock, so the threads loading files in parallel parse in
    // parallel too; two that parse the same new line both keep the first copy stored.
    let parsed = Arc::new(
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)?,
    );
    let mut crons = crons();
    if let Some(cron) = crons.get(text).and_then(Weak::upgrade) {
        return Ok(cron);
    }
    let cron = parsed;
    if crons.len() >= 1024 && crons.len().is_power_of_two() {
        // Lines no loaded policy uses any more.
        crons.retain(|_, c| c.strong_count() > 0);
    }
    crons.insert(text.to_owned(), Arc::downgrade(&cron));
    Ok(cron)
}
