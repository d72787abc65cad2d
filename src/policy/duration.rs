//! Durations as written in policies: `90s`, `10m`, `12h`, `30d`, `2w`, `1h30m`, `0`.

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[
    ("ms", 0), // milliseconds are handled apart; the factor is unused
    ("s", 1),
    ("m", 60),
    ("h", 3600),
    ("d", 86_400),
    ("w", 604_800),
];

/// What [`parse_duration`] accepts, for "expected …" messages.
pub const DURATION_EXPECTED: &str =
    "a duration like 90s, 10m, 12h, 30d, 2w or 1h30m (units ms, s, m, h, d, w)";

/// The largest value a policy duration field accepts, checked at validation so that no
/// time the agent computes from a policy (next due, expiry, `revoke_after`) can leave
/// the calendar. `text` is how error messages and docs write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBound {
    /// Largest accepted value.
    pub max: Duration,
    /// The bound as policies write it, with a reading aid (`3650d (10 years)`).
    pub text: &'static str,
}

const DAY: u64 = 86_400;

/// `spec.schedule.maxAge`: at most 10 years.
pub const MAX_AGE_BOUND: DurationBound = DurationBound {
    max: Duration::from_secs(3650 * DAY),
    text: "3650d (10 years)",
};

/// `spec.schedule.jitter`: at most one day (a longer delay is a different schedule).
pub const JITTER_BOUND: DurationBound = DurationBound {
    max: Duration::from_secs(DAY),
    text: "1d",
};

/// `grace` of every credential type: at most 90 days (how long the old credential
/// stays valid after the consumers have the new one).
pub const GRACE_BOUND: DurationBound = DurationBound {
    max: Duration::from_secs(90 * DAY),
    text: "90d",
};

/// Lifetimes handed to Vault (`vault-token` `ttl` and `period`, `vault-pki` `ttl`;
/// `renewBefore` must be shorter than the `ttl`): at most 10 years.
pub const LIFETIME_BOUND: DurationBound = DurationBound {
    max: Duration::from_secs(3650 * DAY),
    text: "3650d (10 years)",
};

/// `spec.onDemand.approval.ttl`: at most 30 days of waiting for approvals.
pub const APPROVAL_TTL_BOUND: DurationBound = DurationBound {
    max: Duration::from_secs(30 * DAY),
    text: "30d",
};

/// Parses a policy duration: one or more `<integer><unit>` groups with units `ms`, `s`,
/// `m`, `h`, `d` (24h), `w` (7d), largest first, each unit at most once; `0` alone is
/// zero. Returns `None` when the text is not such a duration or overflows.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let rank = UNITS.iter().position(|(u, _)| *u == unit)?;
        // Units must go from largest to smallest without repeats: `1h30m`, not `30m1h`.
        let rank_from_large = UNITS.len() - rank;
        if last_rank != usize::MAX && rank_from_large <= last_rank {
            return None;
        }
        last_rank = rank_from_large;
        let part = if unit == "ms" {
            Duration::from_millis(n)
        } else {
            Duration::from_secs(n.checked_mul(UNITS[rank].1)?)
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// Formats a duration the way policies write it (`1h30m`, `30d`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 && millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, factor) in UNITS.iter().rev() {
        if *factor == 0 {
            continue;
        }
        if secs >= *factor {
            out.push_str(&format!("{}{unit}", secs / factor));
            secs %= factor;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Some(Duration::from_millis(93_784_005))
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-1s",
            "30m1h",
            "1h1h",
            "10 m",
            "1y",
            "h1",
            "99999999999999999999s",
            "18446744073709551615w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_back() {
        for text in ["0s", "90s", "10m", "1h30m", "30d", "2w", "1w2d", "1s250ms"] {
            let d = parse_duration(text).unwrap();
            let back = format_duration(d);
            assert_eq!(parse_duration(&back), Some(d), "{text} -> {back}");
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
    }
}
