//! Password generation from the operating system's CSPRNG, uniform over the alphabet.

use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::secret::SecretString;

/// Default password length.
pub const DEFAULT_LENGTH: usize = 32;
/// Shortest password a policy may ask for.
pub const MIN_LENGTH: usize = 8;
/// Longest password a policy may ask for.
pub const MAX_LENGTH: usize = 1024;

/// `password: {length, alphabet}`: how a new password is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordGenerator {
    /// Number of characters (8..=1024, default 32).
    pub length: usize,
    /// Characters to draw from (default alphanumeric).
    pub alphabet: Alphabet,
}

impl Default for PasswordGenerator {
    fn default() -> Self {
        Self {
            length: DEFAULT_LENGTH,
            alphabet: Alphabet::Alphanumeric,
        }
    }
}

/// The character set of a generated password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alphabet {
    /// `alphanumeric`: `[A-Za-z0-9]`.
    Alphanumeric,
    /// `ascii-printable`: every printable ASCII character except space (`!`..=`~`).
    AsciiPrintable,
    /// An explicit character set (duplicates are ignored; never empty once validated).
    Custom(String),
}

/// Failure of the operating system's random source.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// Reading the OS random source failed.
    #[error("reading the operating system's random source failed")]
    Random(#[source] rand::rand_core::OsError),
    /// The alphabet holds no character.
    #[error("the alphabet is empty")]
    EmptyAlphabet,
}

impl GeneratorError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GeneratorError::Random(_) => "os_random",
            GeneratorError::EmptyAlphabet => "empty_alphabet",
        }
    }
}

impl Alphabet {
    /// The distinct characters, in a stable order.
    pub fn chars(&self) -> Vec<char> {
        match self {
            Alphabet::Alphanumeric => ('A'..='Z').chain('a'..='z').chain('0'..='9').collect(),
            Alphabet::AsciiPrintable => ('!'..='~').collect(),
            Alphabet::Custom(set) => {
                let mut seen = Vec::new();
                for c in set.chars() {
                    if !seen.contains(&c) {
                        seen.push(c);
                    }
                }
                seen
            }
        }
    }

    /// The name used in policies (`alphanumeric`, `ascii-printable`, or `custom`).
    pub fn name(&self) -> &'static str {
        match self {
            Alphabet::Alphanumeric => "alphanumeric",
            Alphabet::AsciiPrintable => "ascii-printable",
            Alphabet::Custom(_) => "custom",
        }
    }
}

/// A uniform index in `0..n` (n ≥ 1) by rejection sampling: draws falling in the
/// incomplete last block of `u32` values are discarded, so there is no modulo bias.
fn uniform_index(rng: &mut OsRng, n: u32) -> Result<u32, GeneratorError> {
    let zone = u32::MAX - (u32::MAX - n + 1) % n; // largest multiple of n, minus one
    loop {
        let x = rng.try_next_u32().map_err(GeneratorError::Random)?;
        if x <= zone {
            return Ok(x % n);
        }
    }
}

impl PasswordGenerator {
    /// Generates a password, or reports a failure of the OS random source.
    pub fn try_generate(&self) -> Result<SecretString, GeneratorError> {
        let chars = self.alphabet.chars();
        let n = u32::try_from(chars.len()).map_err(|_| GeneratorError::EmptyAlphabet)?;
        if n == 0 {
            return Err(GeneratorError::EmptyAlphabet);
        }
        let mut rng = OsRng;
        let capacity = chars.iter().map(|c| c.len_utf8()).max().unwrap_or(1) * self.length;
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        for _ in 0..self.length {
            let i = uniform_index(&mut rng, n)? as usize;
            out.push(chars[i]);
        }
        Ok(SecretString::from(out.as_str()))
    }

    /// Generates a password.
    ///
    /// # Panics
    /// When the operating system's random source fails, which leaves no safe way to
    /// make a secret; use [`PasswordGenerator::try_generate`] to handle that instead.
    pub fn generate(&self) -> SecretString {
        match self.try_generate() {
            Ok(secret) => secret,
            Err(e) => panic!("cannot generate a password: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn default_is_32_alphanumeric() {
        let g = PasswordGenerator::default();
        let p = g.generate();
        assert_eq!(p.expose_secret().chars().count(), 32);
        assert!(p.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn respects_length_and_custom_alphabet() {
        for length in [8, 33, 1024] {
            let g = PasswordGenerator {
                length,
                alphabet: Alphabet::Custom("abcé€".into()),
            };
            let p = g.generate();
            assert_eq!(p.expose_secret().chars().count(), length);
            assert!(p.expose_secret().chars().all(|c| "abcé€".contains(c)));
        }
    }

    #[test]
    fn ascii_printable_has_94_chars_without_space() {
        let chars = Alphabet::AsciiPrintable.chars();
        assert_eq!(chars.len(), 94);
        assert!(!chars.contains(&' '));
        assert_eq!(Alphabet::Alphanumeric.chars().len(), 62);
        assert_eq!(Alphabet::Custom("aab".into()).chars(), vec!['a', 'b']);
    }

    #[test]
    fn values_are_distinct() {
        let g = PasswordGenerator::default();
        let set: HashSet<String> = (0..200)
            .map(|_| g.generate().expose_secret().to_owned())
            .collect();
        assert_eq!(set.len(), 200);
    }

    #[test]
    fn every_character_is_used_roughly_uniformly() {
        // 3 characters, 30 000 draws: each count is 10 000 ± a few hundred. A modulo-biased
        // or stuck generator (e.g. one that never picks the last character) fails this.
        let g = PasswordGenerator {
            length: 30_000,
            alphabet: Alphabet::Custom("xyz".into()),
        };
        let p = g.generate();
        let mut counts: HashMap<char, usize> = HashMap::new();
        for c in p.expose_secret().chars() {
            *counts.entry(c).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (c, n) in counts {
            assert!((9_000..=11_000).contains(&n), "{c} drawn {n} times");
        }
    }

    #[test]
    fn uniform_index_stays_in_range() {
        let mut rng = OsRng;
        for n in [1, 2, 3, 62, 94, u32::MAX] {
            for _ in 0..100 {
                assert!(uniform_index(&mut rng, n).unwrap() < n);
            }
        }
    }

    #[test]
    fn empty_alphabet_is_an_error() {
        let g = PasswordGenerator {
            length: 8,
            alphabet: Alphabet::Custom(String::new()),
        };
        assert!(matches!(
            g.try_generate(),
            Err(GeneratorError::EmptyAlphabet)
        ));
    }
}
