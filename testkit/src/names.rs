//! Unique names for the objects tests create on shared services, and canary values.
//!
//! The services outlive a test run (`dev/stack up` reuses them), so every role, Vault path,
//! namespace or policy a test creates takes a name from [`unique`]: tests running in
//! parallel, and runs following one another, never collide.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

/// Longest name [`unique`] returns.
pub const MAX_UNIQUE_LEN: usize = 40;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A name unique per call and per test run, e.g. `pay-2x7k9qa1-7`:
/// the sanitized `prefix`, then the process id and a random per-process tag, then a
/// per-process counter.
///
/// The result is at most [`MAX_UNIQUE_LEN`] characters of `[a-z0-9-]`, starts with a letter
/// and ends with a letter or digit: a valid DNS label (namespaces, Secrets, Deployments), a
/// valid Vault path segment, and a valid PostgreSQL role name. PostgreSQL needs it quoted as
/// an identifier (`"pay-2x7k9qa1-7"`) because of the `-`; rotor quotes identifiers anyway,
/// so names from here also exercise that quoting.
///
/// The prefix is lowercased, characters outside `[a-z0-9]` become `-`, and it is shortened
/// when needed; an empty prefix becomes `t`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{}-{}", run_tag(), base36(n));
    let mut head = sanitize(prefix);
    head.truncate(MAX_UNIQUE_LEN.saturating_sub(suffix.len()));
    let head = head.trim_end_matches('-');
    let head = if head.is_empty() { "t" } else { head };
    format!("{head}{suffix}")
}

/// A fresh random marker (`canary-` and 26 random lowercase letters and digits) to plant
/// as a secret value and then look for with [`crate::assert_no_secret`]. Safe in URLs,
/// connection strings, YAML and shell words, and long enough never to occur by chance.
pub fn canary() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..26)
        .map(|_| char::from(BASE36[rng.random_range(0..BASE36.len())]))
        .collect();
    format!("canary-{tail}")
}

/// The per-process part of [`unique`] names: pid then four random characters.
fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let mut rng = rand::rng();
        let random: String = (0..4)
            .map(|_| char::from(BASE36[rng.random_range(0..BASE36.len())]))
            .collect();
        format!("{}{random}", base36(u64::from(std::process::id())))
    })
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(BASE36[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// Lowercase, `[a-z0-9-]` only, no repeated or leading `-`, starting with a letter.
fn sanitize(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 't');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
    }

    #[test]
    fn unique_names_are_distinct_and_valid() {
        let mut seen = HashSet::new();
        for prefix in [
            "pay",
            "Payments DB",
            "",
            "---",
            "9lives",
            "ünïcode_prefix",
            "a-very-long-prefix-that-goes-on-and-on-and-on-forever",
        ] {
            for _ in 0..50 {
                let name = unique(prefix);
                assert!(name.len() <= MAX_UNIQUE_LEN, "{name}");
                assert!(is_dns_label(&name), "{name}");
                assert!(seen.insert(name.clone()), "duplicate {name}");
            }
        }
    }

    #[test]
    fn unique_keeps_a_readable_prefix() {
        assert!(unique("pay").starts_with("pay-"));
        assert!(unique("Payments DB").starts_with("payments-db-"));
        assert!(unique("9lives").starts_with("t9lives-"));
    }

    #[test]
    fn unique_is_distinct_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..200).map(|_| unique("x")).collect::<Vec<_>>()))
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for name in h.join().unwrap() {
                assert!(seen.insert(name.clone()), "duplicate {name}");
            }
        }
    }

    #[test]
    fn canaries_differ() {
        let a = canary();
        let b = canary();
        assert_ne!(a, b);
        assert!(a.starts_with("canary-") && a.len() == 33, "{a}");
    }
}
