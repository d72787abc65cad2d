//! Record times: `DateTime<Utc>` in memory, written as RFC 3339 in UTC with
//! milliseconds and a `Z` (`2026-12-07T15:42:11.138Z`), the format rotor has always
//! journaled. Any RFC 3339 time is read (older records and hand-written test records
//! may carry whole seconds or an offset). Use as `#[serde(with = "time")]`, or
//! `#[serde(with = "time::option")]` for an optional time.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// `t` as records write it: RFC 3339, UTC, milliseconds, `Z`.
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads an RFC 3339 time in any offset, as UTC.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// The current time, as records hold it (milliseconds: what is written is what is
/// kept, so a record reads back equal to itself).
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    parse(&format(&now)).unwrap_or(now)
}

/// Writes `t` with [`format`].
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

/// Reads a time with [`parse`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same for `Option<DateTime<Utc>>` (pair with `default` and
/// `skip_serializing_if = "Option::is_none"`).
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a present time with [`super::format`], an absent one as `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a time with [`super::parse`], or `null` as absent.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
