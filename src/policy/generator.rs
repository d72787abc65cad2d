//! Password generation from the operating system's CSPRNG.
//!
//! `password: {length, alphabet, minLower, minUpper, minDigits, minSymbols, exclude}`:
//! the characters drawn from are the alphabet's minus those listed in `exclude`. When a
//! policy asks for minima, the required characters are drawn first (each uniformly from
//! its class), the rest uniformly from the whole remaining alphabet, and the positions
//! are then shuffled uniformly (Fisher–Yates), all with rejection sampling — no modulo
//! bias anywhere. Without minima every character is uniform over the alphabet.
//!
//! Character classes: lower-case and upper-case letters are Unicode's (`é` is lower
//! case), digits are `0`-`9`, symbols are everything that is neither a letter nor a
//! number (`!`, `$`, `€`…). A character in no class (a title-case letter, a non-ASCII
//! numeral) can still be drawn; it just counts towards no minimum.

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

/// `password: {length, alphabet, minLower, minUpper, minDigits, minSymbols, exclude}`:
/// how a new password is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordGenerator {
    /// Number of characters (8..=1024, default 32).
    pub length: usize,
    /// Characters to draw from (default alphanumeric).
    pub alphabet: Alphabet,
    /// `minLower`: at least this many lower-case letters (default 0).
    pub min_lower: usize,
    /// `minUpper`: at least this many upper-case letters (default 0).
    pub min_upper: usize,
    /// `minDigits`: at least this many digits `0`-`9` (default 0).
    pub min_digits: usize,
    /// `minSymbols`: at least this many characters that are neither letters nor
    /// numbers (default 0).
    pub min_symbols: usize,
    /// `exclude`: characters removed from the alphabet (default none).
    pub exclude: String,
}

impl Default for PasswordGenerator {
    fn default() -> Self {
        Self {
            length: DEFAULT_LENGTH,
            alphabet: Alphabet::Alphanumeric,
            min_lower: 0,
            min_upper: 0,
            min_digits: 0,
            min_symbols: 0,
            exclude: String::new(),
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

/// A character class a policy can ask a minimum of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CharClass {
    Lower,
    Upper,
    Digit,
    Symbol,
}

impl CharClass {
    /// Every class, in the order of the policy fields.
    pub(crate) const ALL: [CharClass; 4] = [
        CharClass::Lower,
        CharClass::Upper,
        CharClass::Digit,
        CharClass::Symbol,
    ];

    /// The class of `c`, if any (see the module documentation).
    pub(crate) fn of(c: char) -> Option<CharClass> {
        if c.is_lowercase() {
            Some(CharClass::Lower)
        } else if c.is_uppercase() {
            Some(CharClass::Upper)
        } else if c.is_ascii_digit() {
            Some(CharClass::Digit)
        } else if !c.is_alphanumeric() {
            Some(CharClass::Symbol)
        } else {
            None
        }
    }

    /// The policy field holding this class's minimum.
    pub(crate) fn field(self) -> &'static str {
        match self {
            CharClass::Lower => "minLower",
            CharClass::Upper => "minUpper",
            CharClass::Digit => "minDigits",
            CharClass::Symbol => "minSymbols",
        }
    }

    /// A member of the class, for messages (`upper-case letter`).
    pub(crate) fn noun(self) -> &'static str {
        match self {
            CharClass::Lower => "lower-case letter",
            CharClass::Upper => "upper-case letter",
            CharClass::Digit => "digit 0-9",
            CharClass::Symbol => "symbol (neither letter nor number)",
        }
    }
}

/// Why no password could be generated.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum GeneratorError {
    /// Reading the OS random source failed.
    #[error("reading the operating system's random source failed")]
    #[strum(serialize = "os_random")]
    Random(#[source] rand::rand_core::OsError),
    /// The alphabet holds no character (once `exclude` is applied).
    #[error("the alphabet is empty")]
    #[strum(serialize = "empty_alphabet")]
    EmptyAlphabet,
    /// A minimum names a class the alphabet (after `exclude`) has no character of.
    #[error("{field} is {min} but the alphabet has no such character after exclude")]
    #[strum(serialize = "missing_class")]
    MissingClass {
        /// The policy field (`minUpper`, …).
        field: &'static str,
        /// Its value.
        min: usize,
    },
    /// The minima add up to more than the length.
    #[error("the minima add up to {required} characters, more than the length {length}")]
    #[strum(serialize = "minima_exceed_length")]
    MinimaExceedLength {
        /// Sum of the minima.
        required: usize,
        /// The length.
        length: usize,
    },
}

impl GeneratorError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether trying again may succeed (never: the OS source does not recover, and
    /// the other failures are properties of the policy).
    pub fn is_transient(&self) -> bool {
        false
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

/// One uniformly drawn element of `pool` (non-empty, at most `u32::MAX` long).
fn pick(rng: &mut OsRng, pool: &[char]) -> Result<char, GeneratorError> {
    let n = u32::try_from(pool.len()).map_err(|_| GeneratorError::EmptyAlphabet)?;
    if n == 0 {
        return Err(GeneratorError::EmptyAlphabet);
    }
    Ok(pool[uniform_index(rng, n)? as usize])
}

impl PasswordGenerator {
    /// The characters a password is drawn from: the alphabet's, minus `exclude`.
    pub fn chars(&self) -> Vec<char> {
        let mut chars = self.alphabet.chars();
        chars.retain(|c| !self.exclude.contains(*c));
        chars
    }

    /// The minimum a policy asks for `class`.
    pub(crate) fn minimum(&self, class: CharClass) -> usize {
        match class {
            CharClass::Lower => self.min_lower,
            CharClass::Upper => self.min_upper,
            CharClass::Digit => self.min_digits,
            CharClass::Symbol => self.min_symbols,
        }
    }

    /// `minLower + minUpper + minDigits + minSymbols`.
    pub fn required(&self) -> usize {
        CharClass::ALL.iter().map(|c| self.minimum(*c)).sum()
    }

    /// Whether `password` meets the minima and uses only allowed characters (what
    /// [`PasswordGenerator::try_generate`] guarantees; length is not checked).
    pub fn accepts(&self, password: &str) -> bool {
        let chars = self.chars();
        password.chars().all(|c| chars.contains(&c))
            && CharClass::ALL.iter().all(|class| {
                password
                    .chars()
                    .filter(|c| CharClass::of(*c) == Some(*class))
                    .count()
                    >= self.minimum(*class)
            })
    }

    /// Generates a password, or reports why none can be made: a failure of the OS
    /// random source, or rules no password can satisfy (validation refuses those at
    /// load time).
    pub fn try_generate(&self) -> Result<SecretString, GeneratorError> {
        let chars = self.chars();
        if chars.is_empty() {
            return Err(GeneratorError::EmptyAlphabet);
        }
        let required = self.required();
        if required > self.length {
            return Err(GeneratorError::MinimaExceedLength {
                required,
                length: self.length,
            });
        }
        let mut rng = OsRng;
        let mut out: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(self.length));
        for class in CharClass::ALL {
            let min = self.minimum(class);
            if min == 0 {
                continue;
            }
            let pool: Vec<char> = chars
                .iter()
                .copied()
                .filter(|c| CharClass::of(*c) == Some(class))
                .collect();
            if pool.is_empty() {
                return Err(GeneratorError::MissingClass {
                    field: class.field(),
                    min,
                });
            }
            for _ in 0..min {
                out.push(pick(&mut rng, &pool)?);
            }
        }
        while out.len() < self.length {
            out.push(pick(&mut rng, &chars)?);
        }
        if required > 0 {
            // Fisher–Yates: every permutation equally likely, so the required
            // characters sit at unpredictable positions.
            for i in (1..out.len()).rev() {
                let bound = u32::try_from(i + 1).map_err(|_| GeneratorError::EmptyAlphabet)?;
                let j = uniform_index(&mut rng, bound)? as usize;
                out.swap(i, j);
            }
        }
        let text: Zeroizing<String> = Zeroizing::new(out.iter().collect());
        Ok(SecretString::from(text.as_str()))
    }

    /// Generates a password.
    ///
    /// ```
    /// use rotor::policy::{Alphabet, PasswordGenerator};
    /// use secrecy::ExposeSecret;
    ///
    /// // 20 printable ASCII characters, at least 2 digits and 2 symbols, no quotes.
    /// let generator = PasswordGenerator {
    ///     length: 20,
    ///     alphabet: Alphabet::AsciiPrintable,
    ///     min_digits: 2,
    ///     min_symbols: 2,
    ///     exclude: "\"'`".into(),
    ///     ..PasswordGenerator::default()
    /// };
    /// let password = generator.generate();
    /// let text = password.expose_secret();
    /// assert_eq!(text.chars().count(), 20);
    /// assert!(text.chars().filter(char::is_ascii_digit).count() >= 2);
    /// assert!(!text.contains(['"', '\'', '`']));
    /// assert!(generator.accepts(text));
    /// ```
    ///
    /// # Panics
    /// When the operating system's random source fails, which leaves no safe way to
    /// make a secret, or when the rules cannot be satisfied (a validated policy always
    /// can); use [`PasswordGenerator::try_generate`] to handle those instead.
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

    fn custom(length: usize, set: &str) -> PasswordGenerator {
        PasswordGenerator {
            length,
            alphabet: Alphabet::Custom(set.into()),
            ..PasswordGenerator::default()
        }
    }

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
            let p = custom(length, "abcé€").generate();
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
        let p = custom(30_000, "xyz").generate();
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
        assert!(matches!(
            custom(8, "").try_generate(),
            Err(GeneratorError::EmptyAlphabet)
        ));
        let all_excluded = PasswordGenerator {
            exclude: "ab".into(),
            ..custom(8, "ab")
        };
        assert!(matches!(
            all_excluded.try_generate(),
            Err(GeneratorError::EmptyAlphabet)
        ));
    }

    #[test]
    fn classes_follow_unicode_letters_ascii_digits_and_the_rest() {
        assert_eq!(CharClass::of('a'), Some(CharClass::Lower));
        assert_eq!(CharClass::of('é'), Some(CharClass::Lower));
        assert_eq!(CharClass::of('Z'), Some(CharClass::Upper));
        assert_eq!(CharClass::of('7'), Some(CharClass::Digit));
        assert_eq!(CharClass::of('$'), Some(CharClass::Symbol));
        assert_eq!(CharClass::of('€'), Some(CharClass::Symbol));
        assert_eq!(CharClass::of('٣'), None, "a non-ASCII numeral is no digit");
        let symbols = Alphabet::AsciiPrintable
            .chars()
            .into_iter()
            .filter(|c| CharClass::of(*c) == Some(CharClass::Symbol))
            .count();
        assert_eq!(symbols, 94 - 62);
    }

    #[test]
    fn minima_and_exclusions_hold_on_every_draw() {
        let tight = PasswordGenerator {
            length: 8,
            alphabet: Alphabet::AsciiPrintable,
            min_lower: 2,
            min_upper: 2,
            min_digits: 2,
            min_symbols: 2,
            exclude: "0O1lI$\"'`\\".into(),
        };
        let loose = PasswordGenerator {
            length: 40,
            min_upper: 5,
            min_digits: 10,
            exclude: "aeiou".into(),
            ..PasswordGenerator::default()
        };
        for g in [tight, loose] {
            for _ in 0..1_000 {
                let p = g.generate();
                let text = p.expose_secret();
                assert_eq!(text.chars().count(), g.length);
                assert!(g.accepts(text), "a draw broke the rules of {g:?}");
                assert!(!text.contains(|c| g.exclude.contains(c)));
            }
        }
    }

    #[test]
    fn required_characters_are_shuffled_into_place() {
        // One forced upper-case `A` among 7 draws from {x, y, z, A}: `A` is at position
        // 0 with probability 2.75 / 8 ≈ 0.34, not always (unshuffled) or never.
        let g = PasswordGenerator {
            min_upper: 1,
            ..custom(8, "xyzA")
        };
        let first_a = (0..4_000)
            .filter(|_| g.generate().expose_secret().starts_with('A'))
            .count();
        assert!(
            (1_000..=1_800).contains(&first_a),
            "A first {first_a} times"
        );
    }

    #[test]
    fn unsatisfiable_rules_are_errors_not_panics() {
        let no_upper = PasswordGenerator {
            min_upper: 1,
            ..custom(8, "abc123")
        };
        assert!(matches!(
            no_upper.try_generate(),
            Err(GeneratorError::MissingClass {
                field: "minUpper",
                min: 1
            })
        ));
        let excluded_digits = PasswordGenerator {
            min_digits: 1,
            exclude: "0123456789".into(),
            ..PasswordGenerator::default()
        };
        assert!(matches!(
            excluded_digits.try_generate(),
            Err(GeneratorError::MissingClass {
                field: "minDigits",
                ..
            })
        ));
        let too_many = PasswordGenerator {
            length: 8,
            min_lower: 5,
            min_upper: 4,
            ..PasswordGenerator::default()
        };
        let e = too_many.try_generate().expect_err("9 > 8");
        assert_eq!(e.kind(), "minima_exceed_length");
        assert_eq!(
            e.to_string(),
            "the minima add up to 9 characters, more than the length 8"
        );
    }

    #[test]
    fn exclude_shrinks_the_alphabet() {
        let g = PasswordGenerator {
            exclude: "ABCabc0".into(),
            ..PasswordGenerator::default()
        };
        assert_eq!(g.chars().len(), 62 - 7);
        assert!(!g.accepts("abcdefgh"));
        assert!(g.accepts("defghijk"));
    }
}
