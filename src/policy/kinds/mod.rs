//! Credential kinds, one module each. A kind's module holds everything rotor knows about
//! it without touching its target: its raw policy fields, its validated spec, their
//! pure validation, its static facts ([`KindFacts`]: name, output keys, secret keys,
//! strategies, the keys a rotation needs, the shapes of output values) and what its
//! settings answer ([`KindSpec`]: what is rotated, when it is renewed).
//!
//! The closed set is declared once, by the `credential_kinds!` list at the end of this
//! file: one line per kind makes [`CredentialKind`], [`CredentialSpec`] and the raw
//! enum the policy YAML is read into, says whether rotor generates the kind's secret,
//! and makes every per-kind dispatch among them. Each dispatch is an exhaustive
//! `match`, so a kind whose module lacks a fact does not compile. The adapter that acts
//! on the real target is the kind's `crate::credentials` module, reached today from the
//! `match` in `crate::credentials::Credential::prepare`.

mod common;
mod http_api_key;
mod mysql;
mod postgres;
mod rabbitmq;
mod redis;
mod vault_approle;
mod vault_database;
mod vault_pki;
mod vault_token;
mod vault_userpass;

use std::fmt;
use std::time::Duration;

pub use common::{Connection, TlsMode, TlsSpec};
pub use http_api_key::{HttpApiKeyCredential, HttpCreateRequest, HttpMethod, HttpRequestSpec};
pub use mysql::{MysqlConnection, MysqlCredential};
pub use postgres::{PostgresConnection, PostgresCredential};
pub use rabbitmq::RabbitmqCredential;
pub use redis::{RedisConnection, RedisCredential};
pub use vault_approle::VaultApproleCredential;
pub use vault_database::{DatabaseProbe, ProbeKind, VaultDatabaseCredential};
pub use vault_pki::VaultPkiCredential;
pub use vault_token::VaultTokenCredential;
pub use vault_userpass::VaultUserpassCredential;

use super::generator::PasswordGenerator;
use super::model::Strategy;
use super::validate::Validator;
use super::yaml::Located;

/// What a credential kind is, whatever a policy sets: each kind's module has one as
/// its `FACTS`.
#[derive(Debug)]
pub struct KindFacts {
    /// The YAML `type` name (`postgres`, `vault-userpass`, …).
    pub name: &'static str,
    /// The keys the kind writes to Vault; they are the consumers' template variables.
    pub output_keys: &'static [&'static str],
    /// The output keys that hold the secret part: the value that must never come back
    /// (the no-reuse history fingerprints only these). The other keys are public
    /// (user names, ids, accessors, serials, certificates).
    pub secret_keys: &'static [&'static str],
    /// The strategies the kind offers, its default first; never empty.
    pub strategies: &'static [Strategy],
    /// The keys Vault's current value must hold before a rotation starts: what the
    /// kind needs to restore the target on rollback and to prove the old value dead.
    /// With strategy `alternating` they are always `username` and `password`: the
    /// user name says which of the two accounts is current.
    pub required_current_keys: &'static [&'static str],
    /// What is known of some output keys' values before they exist (the others, and
    /// the `username` and `password` a policy sets, are not described here).
    pub shapes: &'static [KeyShape],
}

/// What is known of an output key's value before it exists, for checks such as
/// whether GitLab can mask it.
#[derive(Debug, Clone, Copy)]
pub struct KeyShape {
    /// The output key.
    pub key: &'static str,
    /// Every character the value may hold, in order; `None` when unknown.
    pub chars: Option<&'static str>,
    /// The shortest value, in characters; `None` when unknown.
    pub min_len: Option<usize>,
    /// Whether the value spans several lines (PEM).
    pub multiline: bool,
}

impl KeyShape {
    /// A single-line value of `chars`, at least `min_len` long.
    pub(super) const fn line(key: &'static str, chars: &'static str, min_len: usize) -> Self {
        Self {
            key,
            chars: Some(chars),
            min_len: Some(min_len),
            multiline: false,
        }
    }

    /// A PEM value: several lines, any characters.
    pub(super) const fn pem(key: &'static str) -> Self {
        Self {
            key,
            chars: None,
            min_len: None,
            multiline: true,
        }
    }
}

impl KindFacts {
    /// The facts of a kind that rotates an account's password: it writes `username`
    /// and `password`, the password is the secret part, and the current password is
    /// all a rotation needs to start.
    pub(super) const fn password(name: &'static str, strategies: &'static [Strategy]) -> Self {
        Self {
            name,
            output_keys: &["username", "password"],
            secret_keys: &["password"],
            strategies,
            required_current_keys: &["password"],
            shapes: &[],
        }
    }
}

/// What a kind's validated settings answer. [`CredentialSpec`]'s methods of the same
/// names ask the kind in use.
pub trait KindSpec {
    /// Human description of what is rotated, for `rotor plan` (never a secret).
    fn target(&self) -> String;

    /// How long before the current credential's expiry it is renewed (`renewBefore`),
    /// for kinds whose credentials expire; `None` (the default) otherwise.
    fn renew_before(&self) -> Option<Duration> {
        None
    }
}

/// A secret rotor generates itself: the account it belongs to and how it is made.
#[derive(Debug, Clone, Copy)]
pub struct Generated<'a> {
    /// The account name (the `username` output).
    pub username: &'a str,
    /// The password generator.
    pub generator: &'a PasswordGenerator,
}

impl<'a> Generated<'a> {
    /// The account `username` whose password `generator` makes.
    pub fn new(username: &'a str, generator: &'a PasswordGenerator) -> Self {
        Self {
            username,
            generator,
        }
    }
}

impl CredentialKind {
    /// The kind called `name` in YAML (`postgres`, `vault-pki`, …), if there is one.
    pub fn from_name(name: &str) -> Option<CredentialKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// The YAML type name.
    pub const fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The keys this kind writes to Vault; they are the consumers' template variables.
    pub const fn output_keys(self) -> &'static [&'static str] {
        self.facts().output_keys
    }

    /// The output keys holding the secret part: the value that must never come back.
    ///
    /// | kind | secret part | public (ignored) |
    /// |---|---|---|
    /// | password kinds, `vault-database` | `password` | `username` |
    /// | `vault-approle` | `secretId` | `roleId`, `secretIdAccessor` |
    /// | `vault-token` | `token` | `accessor` |
    /// | `vault-pki` | `privateKey` | `certificate`, `caChain`, `serial`, `expiration` |
    /// | `http-api-key` | `key` | `id` |
    pub const fn secret_keys(self) -> &'static [&'static str] {
        self.facts().secret_keys
    }

    /// The strategies this kind offers, its default first.
    pub const fn strategies(self) -> &'static [Strategy] {
        self.facts().strategies
    }

    /// What is known of output key `key`'s value before it exists, if anything.
    pub fn shape(self, key: &str) -> Option<&'static KeyShape> {
        self.facts().shapes.iter().find(|s| s.key == key)
    }

    /// The strategy of a policy that names none.
    pub fn default_strategy(self) -> Strategy {
        // Never the fallback: every kind offers one (checked at compile time below).
        self.strategies()
            .first()
            .copied()
            .unwrap_or(Strategy::Single)
    }
}

// Every kind offers a strategy, so `default_strategy` is the kind's own.
const _: () = {
    let mut i = 0;
    while i < CredentialKind::ALL.len() {
        assert!(!CredentialKind::ALL[i].strategies().is_empty());
        i += 1;
    }
};

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every kind's YAML type name, in declaration order.
const NAMES: [&str; CredentialKind::ALL.len()] = {
    let mut names = [""; CredentialKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = CredentialKind::ALL[i].as_str();
        i += 1;
    }
    names
};

impl CredentialSpec {
    /// Every kind's YAML type name, in declaration order.
    pub const KINDS: &'static [&'static str] = &NAMES;

    /// The YAML type name (`postgres`, `vault-userpass`, …).
    pub fn kind(&self) -> &'static str {
        self.credential_kind().as_str()
    }

    /// The keys this kind writes to Vault; they are the consumers' template variables.
    pub fn output_keys(&self) -> &'static [&'static str] {
        self.credential_kind().output_keys()
    }

    /// The password generator, for kinds whose secret rotor generates.
    pub fn password_generator(&self) -> Option<&PasswordGenerator> {
        self.generated().map(|g| g.generator)
    }

    /// Human description of what is rotated, for `rotor plan` (never a secret).
    pub fn target(&self) -> String {
        self.settings().target()
    }

    /// The keys Vault's current value must hold before a rotation starts: what the
    /// kind needs to restore the target on rollback and to prove the old value dead.
    pub fn required_current_keys(&self) -> &'static [&'static str] {
        match self.strategy() {
            // The user name says which of the two accounts is current.
            Strategy::Alternating => &["username", "password"],
            Strategy::Single | Strategy::Overlap => {
                self.credential_kind().facts().required_current_keys
            }
        }
    }

    /// `renewBefore`, for kinds whose credentials expire.
    pub fn renew_before(&self) -> Option<Duration> {
        self.settings().renew_before()
    }
}

/// The account and password generator of a spec that is `generated` (has `username`
/// and `password` fields); `None` for one whose secret is `issued` by its target.
macro_rules! generated {
    (generated, $c:ident) => {
        Some(Generated::new(&$c.username, &$c.password))
    };
    (issued, $c:ident) => {{
        let _ = $c;
        None
    }};
}

/// Declares the closed set of credential kinds from one line per kind,
/// `Variant(module::SpecType, RawType) generated|issued`: the module's `FACTS`, its
/// spec type (which implements [`KindSpec`] and has `strategy` and `grace` fields, and
/// `username` and `password` when rotor generates the secret), its raw type (read
/// under `type: <kebab-case variant>`), and its `validate(&mut Validator, &Raw) ->
/// Option<Spec>`.
macro_rules! credential_kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident($module:ident::$spec:ident, $raw:ident) $secret:ident,
    )*) => {
        /// A credential kind without its settings.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CredentialKind {
            $($(#[$doc])* $variant,)*
        }

        impl CredentialKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [CredentialKind] = &[$(CredentialKind::$variant,)*];

            /// What this kind is, whatever a policy sets.
            pub const fn facts(self) -> &'static KindFacts {
                match self {
                    $(CredentialKind::$variant => &$module::FACTS,)*
                }
            }
        }

        /// `spec.credential`: the closed set of credential kinds.
        #[derive(Debug, Clone)]
        pub enum CredentialSpec {
            $($(#[$doc])* $variant($spec),)*
        }

        impl CredentialSpec {
            /// The kind.
            pub fn credential_kind(&self) -> CredentialKind {
                match self {
                    $(CredentialSpec::$variant(_) => CredentialKind::$variant,)*
                }
            }

            /// The strategy in effect.
            pub fn strategy(&self) -> Strategy {
                match self {
                    $(CredentialSpec::$variant(c) => c.strategy,)*
                }
            }

            /// How long the old credential stays valid after promotion (0 for `single`).
            pub fn grace(&self) -> Duration {
                match self {
                    $(CredentialSpec::$variant(c) => c.grace,)*
                }
            }

            /// The account name and password generator, for kinds whose secret rotor
            /// generates; `None` when the target or Vault issues it.
            pub fn generated(&self) -> Option<Generated<'_>> {
                match self {
                    $(CredentialSpec::$variant(c) => generated!($secret, c),)*
                }
            }

            fn settings(&self) -> &dyn KindSpec {
                match self {
                    $(CredentialSpec::$variant(c) => c,)*
                }
            }
        }

        /// `spec.credential` as written; `NodeDe` reads it internally tagged by `type`.
        #[derive(serde::Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "kebab-case", expecting = "a credential mapping with a `type`")]
        #[schemars(tag = "type")]
        pub(crate) enum RawCredential {
            $($variant($module::$raw),)*
        }

        impl RawCredential {
            /// The kind written in `type`.
            pub fn kind(&self) -> CredentialKind {
                match self {
                    $(RawCredential::$variant(_) => CredentialKind::$variant,)*
                }
            }
        }

        impl Validator {
            /// `spec.credential`.
            pub(crate) fn credential(&mut self, c: &Located<RawCredential>) -> Option<CredentialSpec> {
                match &c.value {
                    $(RawCredential::$variant(r) => $module::validate(self, r).map(CredentialSpec::$variant),)*
                }
            }
        }
    };
}

credential_kinds! {
    /// `postgres`: a PostgreSQL role password.
    Postgres(postgres::PostgresCredential, RawPostgres) generated,
    /// `mysql`: a MariaDB/MySQL user password.
    Mysql(mysql::MysqlCredential, RawMysql) generated,
    /// `redis`: a Redis ACL user password.
    Redis(redis::RedisCredential, RawRedis) generated,
    /// `rabbitmq`: a RabbitMQ user password.
    Rabbitmq(rabbitmq::RabbitmqCredential, RawRabbitmq) generated,
    /// `vault-userpass`: a Vault userpass password.
    VaultUserpass(vault_userpass::VaultUserpassCredential, RawVaultUserpass) generated,
    /// `vault-approle`: an AppRole secret-id.
    VaultApprole(vault_approle::VaultApproleCredential, RawVaultApprole) issued,
    /// `vault-token`: a Vault token used as an API key.
    VaultToken(vault_token::VaultTokenCredential, RawVaultToken) issued,
    /// `vault-pki`: a certificate and key from a PKI role.
    VaultPki(vault_pki::VaultPkiCredential, RawVaultPki) issued,
    /// `vault-database`: a database-engine static role.
    VaultDatabase(vault_database::VaultDatabaseCredential, RawVaultDatabase) issued,
    /// `http-api-key`: an API key behind templated HTTP requests.
    HttpApiKey(http_api_key::HttpApiKeyCredential, RawHttpApiKey) issued,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_facts_agree() {
        assert_eq!(CredentialKind::ALL.len(), CredentialSpec::KINDS.len());
        for kind in CredentialKind::ALL {
            assert_eq!(CredentialKind::from_name(kind.as_str()), Some(*kind));
            assert!(!kind.output_keys().is_empty(), "{kind}");
            assert!(!kind.secret_keys().is_empty(), "{kind}");
            let outputs = kind.output_keys();
            assert!(
                kind.secret_keys().iter().all(|k| outputs.contains(k)),
                "{kind}"
            );
        }
        assert_eq!(CredentialKind::from_name("nope"), None);
    }
}
