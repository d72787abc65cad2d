//! Raw structs → validated model. Pure: no I/O, no clock (cron is checked from a fixed
//! date). Every problem is recorded with its position and path; validation goes on
//! after a problem so that one run reports as much as possible.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::duration::{
    APPROVAL_TTL_BOUND, DURATION_EXPECTED, DurationBound, GRACE_BOUND, JITTER_BOUND,
    LIFETIME_BOUND, MAX_AGE_BOUND, parse_duration,
};
use super::generator::{Alphabet, CharClass, MAX_LENGTH, MIN_LENGTH, PasswordGenerator};
use super::model::*;
use super::raw::*;
use super::template::Template;
use super::yaml::{Checked, DeError, Located, Pos, ScalarText};

/// Characters GitLab can mask when `raw` is false.
const GITLAB_MASKABLE: &str = "_+=/@:.~-";
/// Expected text for a reference.
const REFERENCE_EXPECTED: &str =
    "exactly one of {vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}";

/// Collects problems while validating one document.
#[derive(Default)]
pub(crate) struct Validator {
    pub errors: Vec<DeError>,
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Kubernetes label name segment: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, ≤ 63.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A Vault mount or path: segments separated by `/`, none empty, `.` or `..`, no spaces
/// or control characters.
fn is_vault_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Most approvals a policy may require.
const MAX_APPROVALS: u32 = 100;

/// An API identity or group name as the agent's auth config accepts it.
fn is_identity_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl Validator {
    fn push(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(DeError::at(pos, path, message));
    }

    fn at<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.errors.push(at.error(message));
    }

    // ---- scalars -------------------------------------------------------------------

    fn non_empty(&mut self, s: &Located<String>, expected: &str) -> Option<String> {
        if s.value.trim().is_empty() {
            self.at(s, format!("found an empty string, expected {expected}"));
            None
        } else if has_control(&s.value) {
            self.at(s, format!("found control characters, expected {expected}"));
            None
        } else {
            Some(s.value.clone())
        }
    }

    fn host(&mut self, s: &Located<String>) -> Option<String> {
        let v = &s.value;
        if v.is_empty()
            || v.contains("://")
            || v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            self.at(
                s,
                format!(
                    "found `{}`, expected a host name or IP address (no scheme, no path)",
                    v.escape_debug()
                ),
            );
            return None;
        }
        Some(v.clone())
    }

    fn port(&mut self, p: Option<&Located<RawPort>>, default: u16) -> u16 {
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

    /// A duration no longer than `bound` (every duration field has one, so that times
    /// computed from policies stay on the calendar).
    fn duration(&mut self, d: &Located<ScalarText>, bound: DurationBound) -> Option<Duration> {
        match parse_duration(&d.value.0) {
            Some(v) if v <= bound.max => Some(v),
            Some(_) => {
                let field = d.path.rsplit('.').next().unwrap_or("the duration");
                self.at(
                    d,
                    format!(
                        "found {field} `{}`, expected a duration of at most {}",
                        d.value.0.escape_debug(),
                        bound.text
                    ),
                );
                None
            }
            None => {
                self.at(
                    d,
                    format!(
                        "found `{}`, expected {DURATION_EXPECTED}",
                        d.value.0.escape_debug()
                    ),
                );
                None
            }
        }
    }

    fn opt_duration(
        &mut self,
        d: Option<&Located<ScalarText>>,
        bound: DurationBound,
    ) -> Option<Duration> {
        d.and_then(|d| self.duration(d, bound))
    }

    fn vault_path(&mut self, s: &Located<String>, expected: &str) -> Option<String> {
        if is_vault_path(&s.value) {
            Some(s.value.clone())
        } else {
            self.at(
                s,
                format!(
                    "found `{}`, expected {expected} (segments separated by `/`, no leading or trailing `/`, no empty, `.` or `..` segments)",
                    s.value.escape_debug()
                ),
            );
            None
        }
    }

    fn mount(&mut self, m: Option<&Located<String>>, default: &str) -> String {
        match m {
            None => default.to_owned(),
            Some(m) => self
                .vault_path(m, "a mount path")
                .unwrap_or_else(|| default.to_owned()),
        }
    }

    fn http_url(&mut self, s: &Located<String>, schemes: &[&str]) -> Option<url::Url> {
        // The URL is never echoed: it might carry a password.
        match url::Url::parse(&s.value) {
            Err(e) => {
                self.at(
                    s,
                    format!(
                        "found an invalid URL ({e}), expected an absolute {} URL",
                        schemes.join("/")
                    ),
                );
                None
            }
            Ok(u) if !schemes.contains(&u.scheme()) => {
                self.at(
                    s,
                    format!(
                        "found a URL with scheme `{}`, expected {}",
                        u.scheme(),
                        one_of(schemes)
                    ),
                );
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.at(
                    s,
                    "found credentials inside the URL, expected them in a reference (adminFrom/tokenFrom)",
                );
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.at(s, "found a URL without a host, expected an absolute URL");
                None
            }
            Ok(u) => Some(u),
        }
    }

    // ---- shared pieces -------------------------------------------------------------

    fn reference(
        &mut self,
        r: &Checked<Located<RawReference>>,
        default_mount: &str,
    ) -> Option<Reference> {
        let r = r.0.as_ref()?;
        let raw = &r.value;
        let given: Vec<&str> = [
            raw.vault.as_ref().map(|_| "vault"),
            raw.env.as_ref().map(|_| "env"),
            raw.file.as_ref().map(|_| "file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() {
                "an empty reference".to_owned()
            } else {
                format!("{} together", one_of(&given))
            };
            self.at(r, format!("found {found}, expected {REFERENCE_EXPECTED}"));
            return None;
        }
        if let Some(v) = &raw.vault {
            let path = self.vault_path(&v.value.path, "a KV path");
            let key = match &v.value.key {
                Some(k) => Some(self.non_empty(k, "a key name")?),
                None => None,
            };
            let mount = self.mount(v.value.mount.as_ref(), default_mount);
            return Some(Reference::Vault {
                mount,
                path: path?,
                key,
            });
        }
        if let Some(e) = &raw.env {
            if !is_identifier(&e.value) {
                self.at(
                    e,
                    format!(
                        "found `{}`, expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        e.value.escape_debug()
                    ),
                );
                return None;
            }
            return Some(Reference::Env(e.value.clone()));
        }
        let f = raw.file.as_ref()?;
        let path = self.non_empty(f, "a file path")?;
        Some(Reference::File(PathBuf::from(path)))
    }

    /// A reference that must name one value (an API token).
    fn single_reference(
        &mut self,
        r: &Checked<Located<RawReference>>,
        default_mount: &str,
    ) -> Option<Reference> {
        let reference = self.reference(r, default_mount)?;
        let r = r.0.as_ref()?;
        if !reference.is_single_value() {
            let at = r.value.vault.as_ref().map(|v| (v.pos, v.path.clone()));
            let (pos, path) = at.unwrap_or((r.pos, r.path.clone()));
            self.push(
                pos,
                &path,
                "found a Vault reference without `key`, expected `key` naming the token (without it a reference yields username and password)",
            );
            return None;
        }
        Some(reference)
    }

    fn password(&mut self, p: Option<&Checked<Located<RawPassword>>>) -> PasswordGenerator {
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
            match a.value.as_str() {
                "alphanumeric" => g.alphabet = Alphabet::Alphanumeric,
                "ascii-printable" => g.alphabet = Alphabet::AsciiPrintable,
                set => {
                    if let Some(problem) = custom_alphabet_problem(set) {
                        alphabet_ok = false;
                        self.at(a, problem);
                    } else {
                        g.alphabet = Alphabet::Custom(set.to_owned());
                    }
                }
            }
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

    fn tls(&mut self, t: Option<&Checked<Located<RawTls>>>) -> Option<TlsSpec> {
        let t = t?.0.as_ref()?;
        let mode = match t.value.mode {
            None | Some(RawTlsMode::VerifyFull) => TlsMode::VerifyFull,
            Some(RawTlsMode::Require) => TlsMode::Require,
            Some(RawTlsMode::Disable) => TlsMode::Disable,
        };
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

    fn strategy(&mut self, kind: &str, s: Option<&Located<RawStrategy>>) -> Strategy {
        let offered = strategies_of(kind);
        let default = offered.first().copied().unwrap_or(Strategy::Single);
        let Some(s) = s else { return default };
        let strategy = match s.value {
            RawStrategy::Single => Strategy::Single,
            RawStrategy::Alternating => Strategy::Alternating,
            RawStrategy::Overlap => Strategy::Overlap,
        };
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

    fn username(&mut self, u: &Located<String>, max: usize) -> Option<String> {
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

    // ---- credentials ---------------------------------------------------------------

    fn credential(&mut self, c: &Located<RawCredential>, mount: &str) -> Option<CredentialSpec> {
        let kind = c.value.kind();
        Some(match &c.value {
            RawCredential::Postgres(r) => {
                let conn = &r.connection.value;
                let host = self.host(&conn.host);
                let port = self.port(conn.port.as_ref(), 5432);
                let database = match &conn.database {
                    Some(d) => self.non_empty(d, "a database name"),
                    None => Some("postgres".to_owned()),
                };
                let tls = self.tls(conn.tls.as_ref());
                let admin_from = self.reference(&conn.admin_from, mount);
                let username = self.username(&r.username, 63);
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let password = self.password(r.password.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::Postgres(PostgresCredential {
                    connection: PostgresConnection {
                        host: host?,
                        port,
                        database: database?,
                        tls,
                        admin_from: admin_from?,
                    },
                    username: username?,
                    strategy,
                    password,
                    grace,
                })
            }
            RawCredential::Mysql(r) => {
                let conn = &r.connection.value;
                let host = self.host(&conn.host);
                let port = self.port(conn.port.as_ref(), 3306);
                let tls = self.tls(conn.tls.as_ref());
                let admin_from = self.reference(&conn.admin_from, mount);
                let username = self.username(&r.username, 80);
                let account_host = match &r.account_host {
                    Some(h) => self.non_empty(h, "an account host such as % or 10.0.0.%"),
                    None => Some("%".to_owned()),
                };
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let password = self.password(r.password.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::Mysql(MysqlCredential {
                    connection: MysqlConnection {
                        host: host?,
                        port,
                        tls,
                        admin_from: admin_from?,
                    },
                    username: username?,
                    account_host: account_host?,
                    strategy,
                    password,
                    grace,
                })
            }
            RawCredential::Redis(r) => {
                let conn = &r.connection.value;
                let host = self.host(&conn.host);
                let port = self.port(conn.port.as_ref(), 6379);
                let tls = self.tls(conn.tls.as_ref());
                let admin_from = conn.admin_from.as_ref().map(|a| self.reference(a, mount));
                let username = self.username(&r.username, 512);
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let password = self.password(r.password.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::Redis(RedisCredential {
                    connection: RedisConnection {
                        host: host?,
                        port,
                        tls,
                        admin_from: match admin_from {
                            Some(a) => Some(a?),
                            None => None,
                        },
                    },
                    username: username?,
                    strategy,
                    password,
                    grace,
                })
            }
            RawCredential::Rabbitmq(r) => {
                let management_url = self.http_url(&r.management_url, &["http", "https"]);
                let admin_from = self.reference(&r.admin_from, mount);
                let username = self.username(&r.username, 255);
                let amqp_url = r
                    .amqp_url
                    .as_ref()
                    .map(|u| self.http_url(u, &["amqp", "amqps"]));
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let password = self.password(r.password.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::Rabbitmq(RabbitmqCredential {
                    management_url: management_url?,
                    admin_from: admin_from?,
                    username: username?,
                    amqp_url: match amqp_url {
                        Some(u) => Some(u?),
                        None => None,
                    },
                    strategy,
                    password,
                    grace,
                })
            }
            RawCredential::VaultUserpass(r) => {
                let mount = self.mount(r.mount.as_ref(), "userpass");
                let username = self.username(&r.username, 255);
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let password = self.password(r.password.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::VaultUserpass(VaultUserpassCredential {
                    mount,
                    username: username?,
                    strategy,
                    password,
                    grace,
                })
            }
            RawCredential::VaultApprole(r) => {
                let mount = self.mount(r.mount.as_ref(), "approle");
                let role = self.non_empty(&r.role, "an AppRole name");
                let mut metadata = BTreeMap::new();
                for (k, v) in r.metadata.iter().flatten() {
                    metadata.insert(k.clone(), v.value.clone());
                }
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::VaultApprole(VaultApproleCredential {
                    mount,
                    role: role?,
                    metadata,
                    strategy,
                    grace,
                })
            }
            RawCredential::VaultToken(r) => {
                let mut policies = Vec::new();
                if r.policies.value.is_empty() {
                    self.at(
                        &r.policies,
                        "found no policies, expected at least one policy name",
                    );
                }
                for p in &r.policies.value {
                    if let Some(p) = self.non_empty(p, "a policy name") {
                        policies.push(p);
                    }
                }
                let ttl = self.opt_duration(r.ttl.as_ref(), LIFETIME_BOUND);
                let period = self.opt_duration(r.period.as_ref(), LIFETIME_BOUND);
                let role = match &r.role {
                    Some(role) => self.non_empty(role, "a token role name"),
                    None => None,
                };
                let display_name = match &r.display_name {
                    Some(d) => self.non_empty(d, "a display name"),
                    None => None,
                };
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::VaultToken(VaultTokenCredential {
                    policies,
                    ttl,
                    period,
                    role,
                    display_name,
                    strategy,
                    grace,
                })
            }
            RawCredential::VaultPki(r) => {
                let mount = self.mount(r.mount.as_ref(), "pki");
                let role = self.non_empty(&r.role, "a PKI role name");
                let common_name = self.non_empty(&r.common_name, "a common name");
                let mut alt_names = Vec::new();
                for n in r.alt_names.iter().flatten() {
                    let bare = n.value.strip_prefix("*.").unwrap_or(&n.value);
                    if is_dns_subdomain(&bare.to_ascii_lowercase()) {
                        alt_names.push(n.value.clone());
                    } else {
                        self.at(
                            n,
                            format!("found `{}`, expected a DNS name", n.value.escape_debug()),
                        );
                    }
                }
                let mut ip_sans = Vec::new();
                for ip in r.ip_sans.iter().flatten() {
                    match ip.value.parse::<IpAddr>() {
                        Ok(a) => ip_sans.push(a),
                        Err(_) => self.at(
                            ip,
                            format!(
                                "found `{}`, expected an IP address",
                                ip.value.escape_debug()
                            ),
                        ),
                    }
                }
                let ttl = self.duration(&r.ttl, LIFETIME_BOUND);
                if ttl.is_some_and(|t| t.is_zero()) {
                    self.at(&r.ttl, "found a ttl of 0, expected a positive duration");
                }
                let renew_before = self.opt_duration(r.renew_before.as_ref(), LIFETIME_BOUND);
                if let (Some(t), Some(rb), Some(at)) = (ttl, renew_before, &r.renew_before)
                    && rb >= t
                {
                    self.at(
                        at,
                        format!(
                            "found renewBefore `{}` not shorter than ttl `{}`, expected less than the ttl",
                            at.value.0, r.ttl.value.0
                        ),
                    );
                }
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::VaultPki(VaultPkiCredential {
                    mount,
                    role: role?,
                    common_name: common_name?,
                    alt_names,
                    ip_sans,
                    ttl: ttl?,
                    renew_before,
                    strategy,
                    grace,
                })
            }
            RawCredential::VaultDatabase(r) => {
                let mount = self.mount(r.mount.as_ref(), "database");
                let role = self.non_empty(&r.role, "a static role name");
                let p = &r.probe.value;
                let kind_ = match p.kind {
                    RawProbeKind::Postgres => ProbeKind::Postgres,
                    RawProbeKind::Mysql => ProbeKind::Mysql,
                    RawProbeKind::Redis => ProbeKind::Redis,
                };
                let host = self.host(&p.host);
                let port = self.port(p.port.as_ref(), kind_.default_port());
                let database = p
                    .database
                    .as_ref()
                    .map(|d| self.non_empty(d, "a database name"));
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::VaultDatabase(VaultDatabaseCredential {
                    mount,
                    role: role?,
                    probe: DatabaseProbe {
                        kind: kind_,
                        host: host?,
                        port,
                        database: match database {
                            Some(d) => Some(d?),
                            None => None,
                        },
                    },
                    strategy,
                    grace,
                })
            }
            RawCredential::HttpApiKey(r) => {
                let admin_from = self.reference(&r.admin_from, mount);
                let admin_vars: &[&str] = match &admin_from {
                    Some(a) if !a.is_single_value() => &["username", "password"],
                    _ => &["admin"],
                };
                let create_vars = admin_vars.to_vec();
                let mut revoke_vars = admin_vars.to_vec();
                revoke_vars.extend(["id", "key"]);
                let probe_vars = ["key", "id"];
                let cr = &r.create.value;
                let create_url = self.url_template(&cr.url, &create_vars);
                let create_headers = self.headers(cr.headers.as_ref(), &create_vars);
                let body = match &cr.body {
                    Some(b) => self.template(b, &create_vars, "credential", false),
                    None => None,
                };
                let key_field =
                    self.non_empty(&cr.key_field, "a response field name or JSON pointer");
                let id_field =
                    self.non_empty(&cr.id_field, "a response field name or JSON pointer");
                let rv = &r.revoke.value;
                let revoke_url = self.url_template(&rv.url, &revoke_vars);
                let revoke_headers = match rv.headers.as_ref() {
                    Some(h) => self.headers(Some(h), &revoke_vars),
                    None => create_headers.clone(),
                };
                let pr = &r.probe.value;
                let probe_url = self.url_template(&pr.url, &probe_vars);
                let probe_headers = self.headers(pr.headers.as_ref(), &probe_vars);
                if let (Some(u), Some(h)) = (&revoke_url, &revoke_headers) {
                    let uses = u.variables().chain(h.values().flat_map(|t| t.variables()));
                    if !uses.into_iter().any(|v| v == "id" || v == "key") {
                        self.at(
                            &r.revoke,
                            "found a revoke request that names no key, expected {{ id }} (or {{ key }}) in its url or headers",
                        );
                    }
                }
                if let (Some(u), Some(h)) = (&probe_url, &probe_headers) {
                    let uses = u.variables().chain(h.values().flat_map(|t| t.variables()));
                    if !uses.into_iter().any(|v| v == "key") {
                        self.at(
                            &r.probe,
                            "found a probe that never sends the key, expected {{ key }} in its url or headers",
                        );
                    }
                }
                let strategy = self.strategy(kind, r.strategy.as_ref());
                let grace = self.grace(strategy, r.grace.as_ref());
                CredentialSpec::HttpApiKey(HttpApiKeyCredential {
                    admin_from: admin_from?,
                    create: HttpCreateRequest {
                        method: method(cr.method),
                        url: create_url?,
                        headers: create_headers?,
                        body,
                        key_field: key_field?,
                        id_field: id_field?,
                    },
                    revoke: HttpRequestSpec {
                        method: method(rv.method),
                        url: revoke_url?,
                        headers: revoke_headers?,
                    },
                    probe: HttpRequestSpec {
                        method: method(pr.method),
                        url: probe_url?,
                        headers: probe_headers?,
                    },
                    strategy,
                    grace,
                })
            }
        })
    }

    fn url_template(&mut self, u: &Located<String>, vars: &[&str]) -> Option<Template> {
        let t = self.template(u, vars, "credential", false)?;
        if !(t.source().starts_with("https://") || t.source().starts_with("http://")) {
            self.at(u, "found a URL that does not start with http:// or https://, expected an absolute URL");
            return None;
        }
        Some(t)
    }

    fn headers(
        &mut self,
        h: Option<&BTreeMap<String, Located<String>>>,
        vars: &[&str],
    ) -> Option<BTreeMap<String, Template>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, value) in h.into_iter().flatten() {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                self.at(
                    value,
                    format!(
                        "found header name `{}`, expected an HTTP header name",
                        name.escape_debug()
                    ),
                );
                ok = false;
                continue;
            }
            match self.template(value, vars, "credential", false) {
                Some(t) => {
                    out.insert(name.clone(), t);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Parses a template and checks its variables against `vars` (skipped when empty,
    /// i.e. the credential kind is unknown because it failed to parse).
    fn template(
        &mut self,
        t: &Located<String>,
        vars: &[&str],
        source: &str,
        require_variable: bool,
    ) -> Option<Template> {
        let template = match Template::parse(&t.value) {
            Ok(template) => template,
            Err(e) => {
                self.at(t, e.to_string());
                return None;
            }
        };
        let mut ok = true;
        if !vars.is_empty() {
            for v in template.variables() {
                if !vars.contains(&v) {
                    self.at(
                        t,
                        format!(
                            "found unknown variable `{v}`, expected one of {} (the keys {source} provides)",
                            one_of(vars)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if require_variable && template.is_literal() {
            // Never echo the value: it may be a password written inline.
            self.at(
                t,
                "found a literal string without any {{ variable }}, expected a template such as \"{{ password }}\" (secrets are never written inline)",
            );
            ok = false;
        }
        ok.then_some(template)
    }

    // ---- schedule ------------------------------------------------------------------

    fn schedule(&mut self, s: &Located<RawSchedule>) -> Option<ScheduleSpec> {
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
                    self.at(
                        tz,
                        format!(
                            "found `{}`, expected an IANA time zone name such as Europe/Berlin or UTC",
                            tz.value.escape_debug()
                        ),
                    );
                    chrono_tz::Tz::UTC
                }
            },
        };
        let cron = raw.cron.as_ref().map(|c| self.cron(c, timezone));
        let jitter = self
            .opt_duration(raw.jitter.as_ref(), JITTER_BOUND)
            .unwrap_or_default();
        let window = raw.window.as_ref().map(|w| self.window(w));
        let max_age = raw
            .max_age
            .as_ref()
            .map(|m| self.duration(m, MAX_AGE_BOUND));
        if let (Some(Some(d)), Some(m)) = (max_age, &raw.max_age)
            && d.is_zero()
        {
            self.at(m, "found maxAge 0, expected a positive duration");
        }
        Some(ScheduleSpec {
            cron: match cron {
                Some(c) => Some(c?),
                None => None,
            },
            cron_source: raw.cron.as_ref().map(|c| c.value.clone()),
            timezone,
            jitter,
            window: match window {
                Some(w) => Some(w?),
                None => None,
            },
            max_age: match max_age {
                Some(m) => Some(m?),
                None => None,
            },
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
                self.at(
                    w,
                    format!(
                        "found `{}`, expected a local time window HH:MM-HH:MM such as 02:00-05:00",
                        w.value.escape_debug()
                    ),
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

    // ---- consumers -----------------------------------------------------------------

    fn consumer(
        &mut self,
        c: &Located<RawConsumer>,
        vars: &[&str],
        kind: &str,
        credential: Option<&CredentialSpec>,
        vault: Option<&VaultLocation>,
        mount: &str,
    ) -> Option<ConsumerSpec> {
        Some(match &c.value {
            RawConsumer::Kubernetes(r) => {
                let namespace = self.dns(&r.namespace, true, "a namespace name (RFC 1123 label)");
                let secret = self.dns(&r.secret, false, "a Secret name (RFC 1123 subdomain)");
                let data = self.data_map(&r.data, vars, kind, true);
                let secret_type = match &r.secret_type {
                    None => None,
                    Some(t) => {
                        const TYPES: &[&str] =
                            &["Opaque", "kubernetes.io/tls", "kubernetes.io/basic-auth"];
                        if !TYPES.contains(&t.value.as_str()) {
                            self.at(
                                t,
                                format!(
                                    "found `{}`, expected one of {}",
                                    t.value.escape_debug(),
                                    one_of(TYPES)
                                ),
                            );
                            None
                        } else {
                            let keys: Vec<&str> = r.data.value.keys().map(String::as_str).collect();
                            let missing: Vec<&str> = match t.value.as_str() {
                                "kubernetes.io/tls" => ["tls.crt", "tls.key"]
                                    .into_iter()
                                    .filter(|k| !keys.contains(k))
                                    .collect(),
                                "kubernetes.io/basic-auth"
                                    if !keys.contains(&"username")
                                        && !keys.contains(&"password") =>
                                {
                                    vec!["username or password"]
                                }
                                _ => vec![],
                            };
                            if !missing.is_empty() {
                                self.at(
                                    &r.data,
                                    format!(
                                        "found no {} key for a {} Secret, expected it in data",
                                        missing.join(" and "),
                                        t.value
                                    ),
                                );
                            }
                            Some(t.value.clone())
                        }
                    }
                };
                let mut restart = Vec::new();
                for w in r.restart.iter().flatten() {
                    match parse_workload(&w.value) {
                        Some(wr) => restart.push(wr),
                        None => self.at(
                            w,
                            format!(
                                "found `{}`, expected deployment/NAME, statefulset/NAME or daemonset/NAME with NAME an RFC 1123 subdomain",
                                w.value.escape_debug()
                            ),
                        ),
                    }
                }
                ConsumerSpec::Kubernetes(KubernetesConsumer {
                    namespace: namespace?,
                    secret: secret?,
                    data: data?,
                    secret_type,
                    restart,
                    force: r.force.unwrap_or(false),
                })
            }
            RawConsumer::Gitlab(r) => {
                let url = match &r.url {
                    Some(u) => self.http_url(u, &["https", "http"]),
                    None => url::Url::parse("https://gitlab.com").ok(),
                };
                let token_from = self.single_reference(&r.token_from, mount);
                let target = match (&r.project, &r.group) {
                    (Some(p), None) => self.gitlab_path(p, true).map(GitlabTarget::Project),
                    (None, Some(g)) => self.gitlab_path(g, false).map(GitlabTarget::Group),
                    (Some(_), Some(_)) => {
                        self.at(c, "found both `project` and `group`, expected exactly one");
                        None
                    }
                    (None, None) => {
                        self.at(
                            c,
                            "found neither `project` nor `group`, expected exactly one",
                        );
                        None
                    }
                };
                let key = if r.key.value.is_empty()
                    || r.key.value.len() > 255
                    || !r
                        .key
                        .value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    self.at(
                        &r.key,
                        format!(
                            "found `{}`, expected a variable key of 1-255 characters [A-Za-z0-9_]",
                            r.key.value.escape_debug()
                        ),
                    );
                    None
                } else {
                    Some(r.key.value.clone())
                };
                let value = self.template(&r.value, vars, kind, true);
                let raw = r.raw.as_ref().is_none_or(|l| l.value);
                let masked = r.masked.as_ref().is_some_and(|l| l.value);
                if let (Some(m), Some(v), Some(cred)) = (&r.masked, &value, credential)
                    && m.value
                    && let Some(problem) = gitlab_mask_problem(v, cred, raw)
                {
                    self.at(m, problem);
                }
                let environment_scope = match &r.environment_scope {
                    Some(s) => self.non_empty(s, "an environment scope such as production or *"),
                    None => Some("*".to_owned()),
                };
                ConsumerSpec::Gitlab(GitlabConsumer {
                    url: url?,
                    token_from: token_from?,
                    target: target?,
                    key: key?,
                    value: value?,
                    masked,
                    protected: r.protected.unwrap_or(false),
                    raw,
                    environment_scope: environment_scope?,
                    variable_type: match r.variable_type {
                        None | Some(RawGitlabVariableType::EnvVar) => GitlabVariableType::EnvVar,
                        Some(RawGitlabVariableType::File) => GitlabVariableType::File,
                    },
                })
            }
            RawConsumer::Github(r) => {
                let url = match &r.url {
                    Some(u) => self.http_url(u, &["https", "http"]),
                    None => url::Url::parse("https://api.github.com").ok(),
                };
                let token_from = self.single_reference(&r.token_from, mount);
                let target = self.github_target(c, r);
                let name = self.github_secret_name(&r.name);
                let value = self.template(&r.value, vars, kind, true);
                ConsumerSpec::Github(GithubConsumer {
                    url: url?,
                    token_from: token_from?,
                    target: target?,
                    name: name?,
                    value: value?,
                })
            }
            RawConsumer::VaultKv(r) => {
                let kv_mount = self.mount(r.mount.as_ref(), mount);
                let path = self.vault_path(&r.path, "a KV path");
                if let (Some(p), Some(v)) = (&path, vault)
                    && *p == v.path
                    && kv_mount == v.mount
                {
                    self.at(
                        &r.path,
                        "found the canonical spec.vault location, expected a different path for the extra copy",
                    );
                }
                let data = self.data_map(&r.data, vars, kind, false);
                let namespace = r.namespace.as_ref().and_then(|n| self.vault_namespace(n));
                ConsumerSpec::VaultKv(VaultKvConsumer {
                    namespace,
                    mount: kv_mount,
                    path: path?,
                    data: data?,
                })
            }
            RawConsumer::File(r) => {
                let path = if Path::new(&r.path.value).is_absolute() {
                    Some(PathBuf::from(&r.path.value))
                } else {
                    self.at(
                        &r.path,
                        format!(
                            "found `{}`, expected an absolute path",
                            r.path.value.escape_debug()
                        ),
                    );
                    None
                };
                let content = self.template(&r.content, vars, kind, true);
                let mode = match &r.mode {
                    None => Some(0o600),
                    Some(m) => self.file_mode(m),
                };
                let owner = r.owner.as_ref().and_then(|o| self.account_name(o, "owner"));
                let group = r.group.as_ref().and_then(|g| self.account_name(g, "group"));
                ConsumerSpec::File(FileConsumer {
                    path: path?,
                    content: content?,
                    mode: mode?,
                    owner,
                    group,
                })
            }
        })
    }

    fn dns(&mut self, s: &Located<String>, label: bool, expected: &str) -> Option<String> {
        let ok = if label {
            is_dns_label(&s.value)
        } else {
            is_dns_subdomain(&s.value)
        };
        if ok {
            Some(s.value.clone())
        } else {
            self.at(
                s,
                format!("found `{}`, expected {expected}", s.value.escape_debug()),
            );
            None
        }
    }

    /// `data: {KEY: template}` of kubernetes and vault-kv consumers.
    fn data_map(
        &mut self,
        d: &Located<BTreeMap<String, Located<String>>>,
        vars: &[&str],
        kind: &str,
        k8s_keys: bool,
    ) -> Option<BTreeMap<String, Template>> {
        if d.value.is_empty() {
            self.at(d, "found no keys, expected at least one KEY: template");
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in &d.value {
            let key_ok = if k8s_keys {
                !key.is_empty()
                    && key.len() <= 253
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            } else {
                !key.is_empty() && !has_control(key)
            };
            if !key_ok {
                self.at(
                    value,
                    format!(
                        "found key `{}`, expected {}",
                        key.escape_debug(),
                        if k8s_keys {
                            "a Secret key [-._a-zA-Z0-9]+"
                        } else {
                            "a non-empty key"
                        }
                    ),
                );
                ok = false;
                continue;
            }
            match self.template(value, vars, kind, false) {
                Some(t) => {
                    out.insert(key.clone(), t);
                }
                None => ok = false,
            }
        }
        if ok && out.values().all(Template::is_literal) {
            self.at(
                d,
                "found no {{ variable }} in any value, expected at least one template such as \"{{ password }}\"",
            );
            return None;
        }
        ok.then_some(out)
    }

    fn gitlab_path(&mut self, p: &Located<ScalarText>, project: bool) -> Option<String> {
        let v = &p.value.0;
        let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let segments: Vec<&str> = v.split('/').collect();
        let path_ok = segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }) && (!project || segments.len() >= 2);
        if numeric || path_ok {
            Some(v.clone())
        } else {
            let what = if project {
                "a project path such as acme/payments or a numeric id"
            } else {
                "a group path such as acme or acme/team, or a numeric id"
            };
            self.at(p, format!("found `{}`, expected {what}", v.escape_debug()));
            None
        }
    }

    fn github_target(&mut self, c: &Located<RawConsumer>, r: &RawGithub) -> Option<GithubTarget> {
        match (&r.repository, &r.organization) {
            (Some(_), Some(_)) => {
                self.at(
                    c,
                    "found both `repository` and `organization`, expected exactly one",
                );
                None
            }
            (None, None) => {
                self.at(
                    c,
                    "found neither `repository` nor `organization`, expected exactly one",
                );
                None
            }
            (Some(repo), None) => {
                if let Some(v) = &r.visibility {
                    self.at(v, "found visibility on a repository secret, expected it only with organization");
                }
                let parts = repo.value.split_once('/').filter(|(o, n)| {
                    !o.is_empty()
                        && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                });
                let Some((owner, name)) = parts else {
                    self.at(
                        repo,
                        format!("found `{}`, expected owner/name", repo.value.escape_debug()),
                    );
                    return None;
                };
                let environment = match &r.environment {
                    Some(e) => Some(self.non_empty(e, "an environment name")?),
                    None => None,
                };
                Some(GithubTarget::Repository {
                    owner: owner.to_owned(),
                    name: name.to_owned(),
                    environment,
                })
            }
            (None, Some(org)) => {
                if let Some(e) = &r.environment {
                    self.at(e, "found environment on an organization secret, expected it only with repository");
                }
                let org_ok = !org.value.is_empty()
                    && org
                        .value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !org_ok {
                    self.at(
                        org,
                        format!(
                            "found `{}`, expected an organization login",
                            org.value.escape_debug()
                        ),
                    );
                }
                let Some(visibility) = &r.visibility else {
                    self.at(
                        org,
                        "found organization without visibility, expected visibility: all | private | selected",
                    );
                    return None;
                };
                let visibility = match visibility.value {
                    RawVisibility::All => GithubVisibility::All,
                    RawVisibility::Private => GithubVisibility::Private,
                    RawVisibility::Selected => GithubVisibility::Selected,
                };
                org_ok.then(|| GithubTarget::Organization {
                    name: org.value.clone(),
                    visibility,
                })
            }
        }
    }

    fn github_secret_name(&mut self, n: &Located<String>) -> Option<String> {
        let v = &n.value;
        let problem = if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            Some("only [A-Za-z0-9_]")
        } else if v.as_bytes()[0].is_ascii_digit() {
            Some("a name that does not start with a digit")
        } else if v.to_ascii_uppercase().starts_with("GITHUB_") {
            Some("a name without the reserved GITHUB_ prefix")
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.at(n, format!("found `{}`, expected {p}", v.escape_debug()));
                None
            }
            None => Some(v.clone()),
        }
    }

    /// A Vault namespace: path segments of `[A-Za-z0-9_.-]`, no leading/trailing `/`.
    fn vault_namespace(&mut self, n: &Located<String>) -> Option<String> {
        let ok = !n.value.is_empty()
            && n.value.split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            });
        if ok {
            Some(n.value.clone())
        } else {
            self.at(
                n,
                format!(
                    "found `{}`, expected a Vault namespace such as team-a or team-a/child",
                    n.value.escape_debug()
                ),
            );
            None
        }
    }

    /// A user or group: a POSIX name or a numeric id.
    fn account_name(&mut self, a: &Located<ScalarText>, what: &str) -> Option<String> {
        let text = a.value.0.as_str();
        let numeric =
            !text.is_empty() && text.len() <= 10 && text.chars().all(|c| c.is_ascii_digit());
        let name = text.len() <= 32
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if (numeric && text.parse::<u32>().is_ok()) || name {
            Some(text.to_owned())
        } else {
            self.at(
                a,
                format!(
                    "found `{}`, expected a {what} name (such as app or _app-1) or a numeric id",
                    text.escape_debug()
                ),
            );
            None
        }
    }

    fn file_mode(&mut self, m: &Located<ScalarText>) -> Option<u32> {
        let text = m.value.0.as_str();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let mode = (!digits.is_empty() && digits.len() <= 5)
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|m| *m <= 0o7777);
        match mode {
            None => {
                self.at(
                    m,
                    format!(
                        "found `{}`, expected an octal mode such as 0600",
                        text.escape_debug()
                    ),
                );
                None
            }
            Some(mode) if mode & 0o007 != 0 => {
                self.at(
                    m,
                    format!("found mode {mode:04o}, which gives other users access to the secret, expected no permissions for others (such as 0600 or 0640)"),
                );
                None
            }
            Some(mode) => Some(mode),
        }
    }

    // ---- notify --------------------------------------------------------------------

    /// `spec.onDemand.approval`.
    fn approval(&mut self, a: &Located<RawApproval>) -> Option<ApprovalSpec> {
        let raw = &a.value;
        let mut ok = true;
        let required = match &raw.required {
            None => 1,
            Some(r) => match u32::try_from(r.value.0) {
                Ok(n) if (1..=MAX_APPROVALS).contains(&n) => n,
                _ => {
                    self.at(
                        r,
                        format!(
                            "found {}, expected a number of approvals from 1 to {MAX_APPROVALS}",
                            r.value.0
                        ),
                    );
                    ok = false;
                    1
                }
            },
        };
        let mut approvers: Vec<Approver> = Vec::new();
        match &raw.approvers {
            None => {
                self.at(
                    a,
                    "found no `approvers`, expected a non-empty list of identity names or `group:NAME`",
                );
                ok = false;
            }
            Some(list) if list.value.is_empty() => {
                self.at(
                    list,
                    "found an empty list, expected at least one identity name or `group:NAME`",
                );
                ok = false;
            }
            Some(list) => {
                for entry in &list.value {
                    let text = entry.value.trim();
                    let approver = match text.strip_prefix("group:") {
                        Some(group) if is_identity_name(group) => Approver::Group(group.to_owned()),
                        None if is_identity_name(text) => Approver::Identity(text.to_owned()),
                        _ => {
                            self.at(
                                entry,
                                format!(
                                    "found `{}`, expected an API identity name or `group:NAME` (letters, digits, `-`, `_`, `.`, `:`; up to 128 characters)",
                                    text.escape_debug()
                                ),
                            );
                            ok = false;
                            continue;
                        }
                    };
                    if approvers.contains(&approver) {
                        self.at(
                            entry,
                            format!("found `{approver}` twice, expected each approver once"),
                        );
                        ok = false;
                    } else {
                        approvers.push(approver);
                    }
                }
            }
        }
        let identities = approvers
            .iter()
            .filter(|a| matches!(a, Approver::Identity(_)))
            .count();
        let groups = approvers.len() - identities;
        if ok
            && groups == 0
            && u32::try_from(identities).is_ok_and(|n| required > n)
            && let Some(r) = &raw.required
        {
            self.at(
                r,
                format!(
                    "found {required}, expected at most {identities} (the number of identities listed in `approvers`; list more, or a `group:NAME`)"
                ),
            );
            ok = false;
        }
        let ttl = match &raw.ttl {
            None => None,
            Some(t) => match self.duration(t, APPROVAL_TTL_BOUND) {
                Some(d) if d.is_zero() => {
                    self.at(t, "found a ttl of 0, expected a positive duration");
                    ok = false;
                    None
                }
                Some(d) => Some(d),
                None => {
                    ok = false;
                    None
                }
            },
        };
        ok.then_some(ApprovalSpec {
            required,
            approvers,
            ttl,
        })
    }

    fn notify_target(&mut self, n: &Located<RawNotify>, mount: &str) -> Option<NotifyTarget> {
        let raw = &n.value;
        let url = self.http_url(&raw.url, &["https", "http"]);
        let mut secret_from = self.reference(&raw.secret_from, mount);
        if let (Some(reference), Some(r)) = (&secret_from, raw.secret_from.0.as_ref())
            && !reference.is_single_value()
        {
            let at = r.value.vault.as_ref().map(|v| (v.pos, v.path.clone()));
            let (pos, path) = at.unwrap_or((r.pos, r.path.clone()));
            self.push(
                pos,
                &path,
                "found a Vault reference without `key`, expected `key` naming the signing key (without it a reference yields username and password)",
            );
            secret_from = None;
        }
        let events = match &raw.events {
            None => Some(NotifyEvent::ALL.to_vec()),
            Some(list) if list.value.is_empty() => {
                let names: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
                self.at(
                    list,
                    format!(
                        "found no events, expected at least one of {} (leave `events` out for all)",
                        one_of(&names)
                    ),
                );
                None
            }
            Some(list) => {
                let mut events = Vec::new();
                for e in &list.value {
                    let event = notify_event(e.value);
                    if !events.contains(&event) {
                        events.push(event);
                    }
                }
                Some(events)
            }
        };
        Some(NotifyTarget {
            url: url?,
            secret_from: secret_from?,
            events: events?,
        })
    }
}

fn notify_event(e: RawNotifyEvent) -> NotifyEvent {
    match e {
        RawNotifyEvent::Success => NotifyEvent::Success,
        RawNotifyEvent::Failure => NotifyEvent::Failure,
        RawNotifyEvent::Compromise => NotifyEvent::Compromise,
        RawNotifyEvent::Quarantine => NotifyEvent::Quarantine,
        RawNotifyEvent::ApprovalRequested => NotifyEvent::ApprovalRequested,
        RawNotifyEvent::ApprovalExpired => NotifyEvent::ApprovalExpired,
    }
}

fn method(m: RawMethod) -> HttpMethod {
    match m {
        RawMethod::Get => HttpMethod::Get,
        RawMethod::Post => HttpMethod::Post,
        RawMethod::Put => HttpMethod::Put,
        RawMethod::Patch => HttpMethod::Patch,
        RawMethod::Delete => HttpMethod::Delete,
    }
}

/// `deployment/NAME` etc.
pub(crate) fn parse_workload(s: &str) -> Option<WorkloadRef> {
    let (kind, name) = s.split_once('/')?;
    let kind = match kind {
        "deployment" => WorkloadKind::Deployment,
        "statefulset" => WorkloadKind::StatefulSet,
        "daemonset" => WorkloadKind::DaemonSet,
        _ => return None,
    };
    is_dns_subdomain(name).then(|| WorkloadRef {
        kind,
        name: name.to_owned(),
    })
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

/// What is statically known about the value of a template variable.
struct Shape {
    chars: Option<Vec<char>>,
    min_len: Option<usize>,
    multiline: bool,
    source: String,
}

fn shape_of(var: &str, cred: &CredentialSpec) -> Shape {
    let hex_dash: Vec<char> = ('0'..='9').chain('a'..='f').chain(['-']).collect();
    let alnum_dot: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain(['.', '_', '-'])
        .collect();
    let unknown = |source: &str| Shape {
        chars: None,
        min_len: None,
        multiline: false,
        source: source.to_owned(),
    };
    match var {
        // What the generator can emit: its alphabet minus `exclude`.
        "password" => match cred.password_generator() {
            Some(g) => Shape {
                chars: Some(g.chars()),
                min_len: Some(g.length),
                multiline: false,
                source: if g.exclude.is_empty() {
                    format!("password alphabet {}", g.alphabet.name())
                } else {
                    format!("password alphabet {} after exclude", g.alphabet.name())
                },
            },
            None => unknown("password"),
        },
        "username" => {
            let name = match cred {
                CredentialSpec::Postgres(c) => Some(&c.username),
                CredentialSpec::Mysql(c) => Some(&c.username),
                CredentialSpec::Redis(c) => Some(&c.username),
                CredentialSpec::Rabbitmq(c) => Some(&c.username),
                CredentialSpec::VaultUserpass(c) => Some(&c.username),
                _ => None,
            };
            match name {
                Some(n) => Shape {
                    chars: Some(n.chars().collect()),
                    min_len: Some(n.chars().count()),
                    multiline: false,
                    source: format!("username `{n}`"),
                },
                None => unknown("username"),
            }
        }
        "roleId" | "secretId" | "secretIdAccessor" => Shape {
            chars: Some(hex_dash),
            min_len: Some(36),
            multiline: false,
            source: var.to_owned(),
        },
        "token" | "accessor" => Shape {
            chars: Some(alnum_dot),
            min_len: Some(24),
            multiline: false,
            source: var.to_owned(),
        },
        "certificate" | "privateKey" | "caChain" => Shape {
            chars: None,
            min_len: None,
            multiline: true,
            source: var.to_owned(),
        },
        "serial" => Shape {
            chars: Some(('0'..='9').chain('a'..='f').chain([':']).collect()),
            min_len: Some(2),
            multiline: false,
            source: var.to_owned(),
        },
        "expiration" => Shape {
            chars: Some(('0'..='9').collect()),
            min_len: Some(10),
            multiline: false,
            source: var.to_owned(),
        },
        other => unknown(other),
    }
}

/// Why GitLab could not mask what `value` renders to, if it could not. Masked values
/// are at least 8 characters on one line; with `raw: false` only `[a-zA-Z0-9_+=/@:.~-]`.
fn gitlab_mask_problem(value: &Template, cred: &CredentialSpec, raw: bool) -> Option<String> {
    let maskable = |c: char| c.is_ascii_alphanumeric() || GITLAB_MASKABLE.contains(c);
    let literal: String = value.literals().collect();
    let shapes: Vec<Shape> = value.variables().map(|v| shape_of(v, cred)).collect();
    if literal.contains('\n') {
        return Some(
            "found masked: true for a value with a line break, expected a single-line value (GitLab cannot mask it)".into(),
        );
    }
    if let Some(s) = shapes.iter().find(|s| s.multiline) {
        return Some(format!(
            "found masked: true for `{}`, which spans several lines, expected a single-line value (GitLab cannot mask it)",
            s.source
        ));
    }
    if shapes.iter().all(|s| s.min_len.is_some()) {
        let len = literal.chars().count() + shapes.iter().filter_map(|s| s.min_len).sum::<usize>();
        if len < 8 {
            return Some(format!(
                "found masked: true for a value of {len} characters, expected at least 8 (GitLab cannot mask shorter values)"
            ));
        }
    }
    if !raw {
        if let Some(c) = literal.chars().find(|c| !maskable(*c)) {
            return Some(format!(
                "found masked: true with raw: false and literal character `{c}`, expected only [a-zA-Z0-9_+=/@:.~-] (GitLab cannot mask it)"
            ));
        }
        for s in &shapes {
            if let Some(c) = s.chars.iter().flatten().find(|c| !maskable(**c)) {
                return Some(format!(
                    "found masked: true with raw: false and {} containing `{c}`, expected only [a-zA-Z0-9_+=/@:.~-] (GitLab cannot mask it)",
                    s.source
                ));
            }
        }
    }
    None
}

/// Validates one parsed document. Returns the policy when it is entirely valid (and
/// nothing was recorded in `v`'s errors by this call or by deserialization).
pub(crate) fn validate_policy(
    raw: &RawPolicy,
    file: &Path,
    v: &mut Validator,
) -> Option<ValidatedPolicy> {
    let metadata = raw.metadata.0.as_ref();
    let name = metadata.and_then(|m| {
        let n = &m.name;
        if is_dns_label(&n.value) {
            Some(n.value.clone())
        } else {
            v.at(
                n,
                format!(
                    "found `{}`, expected a DNS label: at most 63 characters a-z, 0-9 and `-`, starting and ending with a letter or digit",
                    n.value.escape_debug()
                ),
            );
            None
        }
    });
    let mut labels = BTreeMap::new();
    for (key, value) in metadata
        .and_then(|m| m.labels.as_ref())
        .map(|l| &l.value)
        .into_iter()
        .flatten()
    {
        if !is_label_key(key) {
            v.at(
                value,
                format!(
                    "found label key `{}`, expected a Kubernetes label key",
                    key.escape_debug()
                ),
            );
        } else if !(value.value.is_empty() || is_label_name(&value.value)) {
            v.at(
                value,
                format!(
                    "found `{}`, expected a label value: at most 63 characters [A-Za-z0-9_.-], starting and ending alphanumeric",
                    value.value.escape_debug()
                ),
            );
        } else {
            labels.insert(key.clone(), value.value.clone());
        }
    }

    let spec = raw.spec.0.as_ref()?;
    let vault = spec.vault.0.as_ref().and_then(|l| {
        let mount = v.mount(l.value.mount.as_ref(), "secret");
        let path = v.vault_path(&l.value.path, "a KV path")?;
        Some(VaultLocation { mount, path })
    });
    let default_mount = vault
        .as_ref()
        .map(|l| l.mount.clone())
        .unwrap_or_else(|| "secret".to_owned());

    let raw_credential = spec.credential.0.as_ref();
    let credential = raw_credential.and_then(|c| v.credential(c, &default_mount));
    let kind = raw_credential.map(|c| c.value.kind()).unwrap_or("");
    let vars = output_keys_of(kind);

    let schedule: Option<Option<ScheduleSpec>> = match &spec.schedule {
        None => Some(None),
        Some(s) => s.0.as_ref().and_then(|s| v.schedule(s)).map(Some),
    };
    // Exactly as many as written: an empty `Vec` grows to room for four, which
    // thousands of loaded policies would keep.
    let mut consumers = Vec::with_capacity(spec.consumers.as_ref().map_or(0, Vec::len));
    let mut consumers_ok = true;
    let mut targets: Vec<(String, String)> = Vec::new();
    for c in spec.consumers.iter().flatten() {
        let Some(c) = c.0.as_ref() else {
            consumers_ok = false;
            continue;
        };
        match v.consumer(
            c,
            vars,
            kind,
            credential.as_ref(),
            vault.as_ref(),
            &default_mount,
        ) {
            Some(consumer) => {
                let target = consumer_target(&consumer);
                if let Some((_, first)) = targets.iter().find(|(t, _)| *t == target) {
                    v.at(
                        c,
                        format!("found the same target as {first} ({}), expected each consumer to write somewhere else", consumer.describe()),
                    );
                    consumers_ok = false;
                }
                targets.push((target, c.path.clone()));
                consumers.push(consumer);
            }
            None => consumers_ok = false,
        }
    }
    let verify = match &spec.verify {
        None => Some(VerifySpec::default()),
        Some(c) => c.0.as_ref().map(|r| VerifySpec {
            old_rejected: r.old_rejected.unwrap_or(true),
            terminate_sessions: r.terminate_sessions.unwrap_or(false),
        }),
    };
    let on_demand = match &spec.on_demand {
        None => Some(OnDemandSpec::default()),
        Some(c) => c.0.as_ref().and_then(|r| {
            let approval = match &r.approval {
                None => Some(None),
                Some(a) => a.0.as_ref().and_then(|a| v.approval(a)).map(Some),
            };
            Some(OnDemandSpec {
                require_reason: r.require_reason.unwrap_or(true),
                require_ticket: r.require_ticket.unwrap_or(false),
                approval: approval?,
            })
        }),
    };

    // Every target is validated (collected first) so that one run reports all problems.
    let notify: Option<Vec<NotifyTarget>> = spec
        .notify
        .iter()
        .flatten()
        .map(|n| {
            n.0.as_ref()
                .and_then(|n| v.notify_target(n, &default_mount))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect();

    let mut cascade_ok = true;
    let mut cascade = Vec::new();
    for c in spec.cascade.iter().flatten() {
        if !is_dns_label(&c.value) {
            v.at(
                c,
                format!(
                    "found `{}`, expected the name of another policy (a DNS label)",
                    c.value.escape_debug()
                ),
            );
            cascade_ok = false;
        } else if cascade.contains(&c.value) {
            v.at(
                c,
                format!("found `{}` twice, expected each dependent once", c.value),
            );
            cascade_ok = false;
        } else {
            cascade.push(c.value.clone());
        }
    }

    if !consumers_ok || !cascade_ok || raw.api_version.0.is_none() || raw.kind.0.is_none() {
        return None;
    }
    Some(ValidatedPolicy {
        name: name?,
        labels: shared_labels(labels),
        file: file.to_path_buf(),
        spec: PolicySpec {
            credential: credential?,
            vault: vault?,
            schedule: schedule?,
            consumers,
            verify: verify?,
            on_demand: on_demand?,
            notify: notify?,
            cascade,
        },
    })
}

/// Identity of what a consumer writes, to catch two consumers fighting over one target.
fn consumer_target(c: &ConsumerSpec) -> String {
    match c {
        ConsumerSpec::Kubernetes(k) => format!("kubernetes {}/{}", k.namespace, k.secret),
        ConsumerSpec::Gitlab(g) => format!(
            "gitlab {} {:?} {} {}",
            g.url, g.target, g.key, g.environment_scope
        ),
        ConsumerSpec::Github(g) => format!("github {} {:?} {}", g.url, g.target, g.name),
        ConsumerSpec::VaultKv(k) => format!("vault-kv {}/{}", k.mount, k.path),
        ConsumerSpec::File(f) => format!("file {}", f.path.display()),
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

/// Label sets of loaded policies by their hash, shared by every policy that carries
/// the same set. Only the hash is kept as the key, so a set no other policy shares costs
/// no second copy.
static LABELS: LazyLock<Mutex<HashMap<u64, Weak<LabelSet>>>> = LazyLock::new(Mutex::default);

/// `metadata.labels`.
type LabelSet = BTreeMap<String, String>;

/// `labels`, or the equal set already loaded.
fn shared_labels(labels: LabelSet) -> Arc<LabelSet> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    labels.hash(&mut h);
    let key = h.finish();
    // A poisoned lock still holds whole entries: each is inserted in one step.
    let mut known = LABELS.lock().unwrap_or_else(PoisonError::into_inner);
    match known.get(&key).and_then(Weak::upgrade) {
        Some(shared) if *shared == labels => return shared,
        // Another set with the same hash: this one is simply not shared.
        Some(_) => return Arc::new(labels),
        None => {}
    }
    let shared = Arc::new(labels);
    if known.len() >= 1024 && known.len().is_power_of_two() {
        // Sets no loaded policy carries any more.
        known.retain(|_, l| l.strong_count() > 0);
    }
    known.insert(key, Arc::downgrade(&shared));
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(is_dns_label("payments-db"));
        assert!(is_dns_label("a"));
        assert!(!is_dns_label("Payments"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_label(&"a".repeat(63)));
        assert!(is_dns_subdomain("api.payments"));
        assert!(!is_dns_subdomain("api..payments"));
    }

    #[test]
    fn workloads() {
        assert_eq!(
            parse_workload("deployment/payments-api").map(|w| w.to_string()),
            Some("deployment/payments-api".into())
        );
        assert!(parse_workload("statefulset/db").is_some());
        assert!(parse_workload("daemonset/agent").is_some());
        assert!(parse_workload("deploy/x").is_none());
        assert!(parse_workload("deployment/X_y").is_none());
        assert!(parse_workload("deployment").is_none());
    }

    #[test]
    fn custom_alphabets() {
        assert!(custom_alphabet_problem("abcdef0123456789").is_none());
        assert!(custom_alphabet_problem("").is_some());
        assert!(custom_alphabet_problem("alphanumerik").is_some());
        assert!(custom_alphabet_problem("a").is_some());
        assert!(custom_alphabet_problem("ab c").is_some());
    }

    #[test]
    fn vault_paths() {
        assert!(is_vault_path("apps/payments/db"));
        assert!(!is_vault_path("/apps"));
        assert!(!is_vault_path("apps/"));
        assert!(!is_vault_path("apps//db"));
        assert!(!is_vault_path("apps/../db"));
        assert!(!is_vault_path(""));
    }
}
