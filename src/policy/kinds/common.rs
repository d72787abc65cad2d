//! What several credential kinds share: the raw fields every kind has (`strategy`,
//! `grace`, and `password` for the kinds whose secret rotor generates), connection
//! pieces (host, port, TLS) and their pure validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::CredentialKind;
use crate::policy::duration::GRACE_BOUND;
use crate::policy::generator::{Alphabet, CharClass, MAX_LENGTH, MIN_LENGTH, PasswordGenerator};
use crate::policy::model::{Reference, Strategy};
use crate::policy::raw::raw_int;
use crate::policy::validate::{Validator, has_control, one_of};
use crate::policy::yaml::{Checked, Located, ScalarText};
use schemars::JsonSchema;

raw_int!(RawPort, "a port number 1-65535", 1..=65535);
raw_int!(RawLength, "a password length 8-1024", 8..=1024);
raw_int!(RawMinCount, "a character count 0-1024", 0..=1024);

/// A kind's raw fields: its own (`{ ... }`, in YAML order), then `strategy`,
/// `password` (with `generated`: kinds whose secret rotor generates) and `grace`,
/// in that order, as every kind lists them; and their [`RawShared`] accessors.
macro_rules! raw_credential {
    ($expecting:tt, $name:ident generated { $($body:tt)* }) => {
        $crate::policy::kinds::common::raw_credential!(@with_grace $expecting, $name {
            $($body)*
            pub strategy: Option<$crate::policy::yaml::Located<$crate::policy::model::Strategy>>,
            pub password: Option<
                $crate::policy::yaml::Checked<
                    $crate::policy::yaml::Located<$crate::policy::kinds::common::RawPassword>,
                >,
            >,
        });
    };
    ($expecting:tt, $name:ident { $($body:tt)* }) => {
        $crate::policy::kinds::common::raw_credential!(@with_grace $expecting, $name {
            $($body)*
            pub strategy: Option<$crate::policy::yaml::Located<$crate::policy::model::Strategy>>,
        });
    };
    (@with_grace $expecting:tt, $name:ident { $($body:tt)* }) => {
        $crate::policy::raw::raw_mapping! {
            $expecting,
            pub(crate) struct $name {
                $($body)*
                pub grace: Option<$crate::policy::yaml::Located<$crate::policy::yaml::ScalarText>>,
            }
        }

        impl $crate::policy::kinds::common::RawShared for $name {
            fn strategy(&self) -> Option<&$crate::policy::yaml::Located<$crate::policy::model::Strategy>> {
                self.strategy.as_ref()
            }

            fn grace(&self) -> Option<&$crate::policy::yaml::Located<$crate::policy::yaml::ScalarText>> {
                self.grace.as_ref()
            }
        }
    };
}
pub(super) use raw_credential;

/// The raw fields every kind has, whatever else it reads.
pub(in crate::policy) trait RawShared {
    /// `strategy`.
    fn strategy(&self) -> Option<&Located<Strategy>>;
    /// `grace`.
    fn grace(&self) -> Option<&Located<ScalarText>>;
}

crate::policy::raw::raw_mapping! {
    "a password generator {length?, alphabet?, minLower?, minUpper?, minDigits?, minSymbols?, exclude?} (passwords are generated, never written inline)",
    pub(crate) struct RawPassword {
        pub length: Option<Located<RawLength>>,
        pub alphabet: Option<Located<String>>,
        pub min_lower: Option<Located<RawMinCount>>,
        pub min_upper: Option<Located<RawMinCount>>,
        pub min_digits: Option<Located<RawMinCount>>,
        pub min_symbols: Option<Located<RawMinCount>>,
        pub exclude: Option<Located<String>>,
    }
}

crate::policy::raw::raw_mapping! {
    "a mapping {mode?, caFile?}",
    pub(crate) struct RawTls {
        pub mode: Option<TlsMode>,
        pub ca_file: Option<Located<String>>,
    }
}

/// TLS settings for a database connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// `mode` (default `verify-full`).
    pub mode: TlsMode,
    /// `caFile`: PEM bundle to verify the server with (default: system roots).
    pub ca_file: Option<PathBuf>,
}

/// `connection` of the `mysql` and `redis` kinds: where rotor reaches the server as an
/// administrator. `Admin` is how the admin login is named: a [`Reference`], or for
/// `redis`, where it may be left out, an `Option` of one.
#[derive(Debug, Clone)]
pub struct Connection<Admin = Reference> {
    /// Host name or address.
    pub host: String,
    /// Port (the kind's usual port unless set).
    pub port: u16,
    /// TLS settings; absent means no TLS.
    pub tls: Option<TlsSpec>,
    /// The admin login (`username`, `password`).
    pub admin_from: Admin,
}

/// `tls.mode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema, strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS, certificate and host name verified.
    VerifyFull,
}

impl TlsMode {
    /// The YAML name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

impl Validator {
    pub(in crate::policy) fn host(&mut self, s: &Located<String>) -> Option<String> {
        let v = &s.value;
        if v.is_empty()
            || v.contains("://")
            || v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            self.found(s, v, "a host name or IP address (no scheme, no path)");
            return None;
        }
        Some(v.clone())
    }

    /// A `connection` from its `host`, `port` (`default_port` when not set) and `tls`,
    /// and its validated admin login (`None` when that was invalid).
    pub(in crate::policy) fn connection<Admin>(
        &mut self,
        host: &Located<String>,
        port: Option<&Located<RawPort>>,
        default_port: u16,
        tls: Option<&Checked<Located<RawTls>>>,
        admin_from: Option<Admin>,
    ) -> Option<Connection<Admin>> {
        let host = self.host(host);
        let port = self.port(port, default_port);
        let tls = self.tls(tls);
        Some(Connection {
            host: host?,
            port,
            tls,
            admin_from: admin_from?,
        })
    }

    pub(in crate::policy) fn port(&mut self, p: Option<&Located<RawPort>>, default: u16) -> u16 {
        match p {
            None => default,
            Some(p) => match u16::try_from(p.value.0) {
                Ok(port) if port != 0 => port,
                _ => {
                    self.at(
                        p,
                        format!("found {}, expected a port number 1-65535", p.value.0),
                    );
                    default
                }
            },
        }
    }

    pub(in crate::policy) fn password(
        &mut self,
        p: Option<&Checked<Located<RawPassword>>>,
    ) -> PasswordGenerator {
        let mut g = PasswordGenerator::default();
        let Some(p) = p.and_then(|p| p.0.as_ref()) else {
            return g;
        };
        // Rules about the whole generator are only checked on parts that are valid
        // themselves, so one mistake is reported once.
        let mut length_ok = true;
        let mut alphabet_ok = true;
        if let Some(l) = &p.value.length {
            match usize::try_from(l.value.0) {
                Ok(n) if (MIN_LENGTH..=MAX_LENGTH).contains(&n) => g.length = n,
                _ => {
                    length_ok = false;
                    self.at(
                        l,
                        format!(
                            "found length {}, expected {MIN_LENGTH} to {MAX_LENGTH}",
                            l.value.0
                        ),
                    );
                }
            }
        }
        if let Some(a) = &p.value.alphabet {
            alphabet_ok = self.password_alphabet(&mut g, a);
        }
        let mins = [
            &p.value.min_lower,
            &p.value.min_upper,
            &p.value.min_digits,
            &p.value.min_symbols,
        ];
        let mut mins_ok = true;
        for (class, raw) in CharClass::ALL.into_iter().zip(mins) {
            let Some(m) = raw else { continue };
            match usize::try_from(m.value.0) {
                Ok(n) if n <= MAX_LENGTH => match class {
                    CharClass::Lower => g.min_lower = n,
                    CharClass::Upper => g.min_upper = n,
                    CharClass::Digit => g.min_digits = n,
                    CharClass::Symbol => g.min_symbols = n,
                },
                _ => {
                    mins_ok = false;
                    self.at(
                        m,
                        format!(
                            "found {} {}, expected 0 to {MAX_LENGTH}",
                            class.field(),
                            m.value.0
                        ),
                    );
                }
            }
        }
        if let Some(e) = &p.value.exclude {
            if has_control(&e.value) {
                alphabet_ok = false;
                self.at(
                    e,
                    "found control characters in exclude, expected the visible characters to leave out",
                );
            } else {
                g.exclude = e.value.clone();
                let left = g.chars().len();
                if alphabet_ok && left < 2 {
                    alphabet_ok = false;
                    self.at(
                        e,
                        format!(
                            "found an exclude that leaves {left} of the {} characters of alphabet {}, expected at least 2 characters left",
                            g.alphabet.chars().len(),
                            g.alphabet.name()
                        ),
                    );
                }
            }
        }
        if alphabet_ok {
            self.password_classes(&g, mins);
        }
        let required = g.required();
        if length_ok && mins_ok && required > g.length {
            self.at(
                p,
                format!(
                    "found minLower + minUpper + minDigits + minSymbols = {required} with length {}, expected a sum of at most the length",
                    g.length
                ),
            );
        }
        g
    }

    /// `password.alphabet`: a named alphabet or a custom set; whether it is valid.
    fn password_alphabet(&mut self, g: &mut PasswordGenerator, a: &Located<String>) -> bool {
        match a.value.as_str() {
            "alphanumeric" => g.alphabet = Alphabet::Alphanumeric,
            "ascii-printable" => g.alphabet = Alphabet::AsciiPrintable,
            set => {
                if let Some(problem) = custom_alphabet_problem(set) {
                    self.at(a, problem);
                    return false;
                }
                g.alphabet = Alphabet::Custom(set.to_owned());
            }
        }
        true
    }

    /// Each minimum above 0 needs its class in the (valid) alphabet left after `exclude`.
    fn password_classes(
        &mut self,
        g: &PasswordGenerator,
        mins: [&Option<Located<RawMinCount>>; 4],
    ) {
        let chars = g.chars();
        let after = if g.exclude.is_empty() {
            ""
        } else {
            " after exclude"
        };
        for (class, raw) in CharClass::ALL.into_iter().zip(mins) {
            let min = g.minimum(class);
            if let Some(m) = raw
                && min > 0
                && !chars.iter().any(|c| CharClass::of(*c) == Some(class))
            {
                self.at(
                    m,
                    format!(
                        "found {} {min} but alphabet {}{after} has no {}, expected 0 or an alphabet that has one",
                        class.field(),
                        g.alphabet.name(),
                        class.noun()
                    ),
                );
            }
        }
    }

    pub(in crate::policy) fn tls(
        &mut self,
        t: Option<&Checked<Located<RawTls>>>,
    ) -> Option<TlsSpec> {
        let t = t?.0.as_ref()?;
        let mode = t.value.mode.unwrap_or(TlsMode::VerifyFull);
        let ca_file = match &t.value.ca_file {
            None => None,
            Some(ca) if mode == TlsMode::Disable => {
                self.at(
                    ca,
                    "found caFile with mode disable, expected mode require or verify-full",
                );
                None
            }
            Some(ca) => self.non_empty(ca, "a file path").map(PathBuf::from),
        };
        Some(TlsSpec { mode, ca_file })
    }

    /// `strategy` and `grace`, which every kind has.
    pub(in crate::policy) fn strategy_and_grace(
        &mut self,
        kind: CredentialKind,
        raw: &impl RawShared,
    ) -> (Strategy, Duration) {
        let strategy = self.strategy(kind, raw.strategy());
        (strategy, self.grace(strategy, raw.grace()))
    }

    fn strategy(&mut self, kind: CredentialKind, s: Option<&Located<Strategy>>) -> Strategy {
        let offered = kind.strategies();
        let default = kind.default_strategy();
        let Some(s) = s else { return default };
        let strategy = s.value;
        if !offered.contains(&strategy) {
            let names: Vec<&str> = offered.iter().map(Strategy::as_str).collect();
            self.at(
                s,
                format!(
                    "found strategy `{strategy}`, expected {} (the strategies {kind} offers)",
                    one_of(&names)
                ),
            );
            return default;
        }
        strategy
    }

    fn grace(&mut self, strategy: Strategy, g: Option<&Located<ScalarText>>) -> Duration {
        let Some(g) = g else {
            return Duration::ZERO;
        };
        let grace = self.duration(g, GRACE_BOUND).unwrap_or_default();
        if strategy == Strategy::Single && !grace.is_zero() {
            self.at(
                g,
                format!(
                    "found grace `{}` with strategy single, expected 0s (grace applies to alternating and overlap)",
                    g.value.0.escape_debug()
                ),
            );
        }
        grace
    }

    pub(in crate::policy) fn username(
        &mut self,
        u: &Located<String>,
        max: usize,
    ) -> Option<String> {
        let name = self.non_empty(u, "a user name")?;
        if name.len() > max {
            self.at(
                u,
                format!(
                    "found a name of {} bytes, expected at most {max}",
                    name.len()
                ),
            );
            return None;
        }
        if name.chars().any(char::is_whitespace) {
            self.at(u, "found whitespace in the name, expected none");
            return None;
        }
        Some(name)
    }
}

fn custom_alphabet_problem(set: &str) -> Option<String> {
    if set.is_empty() {
        return Some(
            "found an empty alphabet, expected alphanumeric, ascii-printable or at least 2 distinct characters"
                .into(),
        );
    }
    if set.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(
            "found whitespace or control characters in a custom alphabet, expected visible characters"
                .into(),
        );
    }
    let mut seen = Vec::new();
    for c in set.chars() {
        if seen.contains(&c) {
            return Some(format!(
                "found `{c}` twice in custom alphabet `{set}`, expected each character once (or alphanumeric / ascii-printable)"
            ));
        }
        seen.push(c);
    }
    if seen.len() < 2 {
        return Some(format!(
            "found a custom alphabet of {} character, expected at least 2 distinct characters",
            seen.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_alphabets() {
        assert!(custom_alphabet_problem("abcdef0123456789").is_none());
        assert!(custom_alphabet_problem("").is_some());
        assert!(custom_alphabet_problem("alphanumerik").is_some());
        assert!(custom_alphabet_problem("a").is_some());
        assert!(custom_alphabet_problem("ab c").is_some());
    }
}
