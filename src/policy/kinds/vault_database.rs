//! `vault-database`: a static role of Vault's database secrets engine. rotor triggers
//! `rotate-role`, propagates the new password, and proves the old one rejected by
//! logging in to the database itself (`probe`).

use std::time::Duration;

use super::common::{RawPort, raw_credential};
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::model::Strategy;
use crate::policy::raw::raw_mapping;
use crate::policy::validate::Validator;
use crate::policy::yaml::Located;
use schemars::JsonSchema;

/// What `vault-database` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts {
    // Vault chose the user name, and the probe logs in as it.
    required_current_keys: &["username", "password"],
    ..KindFacts::password("vault-database", &[Strategy::Single])
};

raw_credential! {
    "a vault-database credential",
    RawVaultDatabase {
        pub mount: Option<Located<String>>,
        pub role: Located<String>,
        pub probe: Located<RawProbe>,
    }
}

raw_mapping! {
    "a probe mapping {type, host, port?, database?}",
    pub(crate) struct RawProbe {
        #[serde(rename = "type")]
        pub kind: ProbeKind,
        pub host: Located<String>,
        pub port: Option<Located<RawPort>>,
        pub database: Option<Located<String>>,
    }
}

/// `vault-database`: rotor triggers `rotate-role` on a static role, then propagates.
#[derive(Debug, Clone)]
pub struct VaultDatabaseCredential {
    /// Database secrets engine mount, default `database`.
    pub mount: String,
    /// Static role name.
    pub role: String,
    /// Where to prove the old password is rejected.
    pub probe: DatabaseProbe,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `vault-database` `probe`.
#[derive(Debug, Clone)]
pub struct DatabaseProbe {
    /// `type`.
    pub kind: ProbeKind,
    /// Host name or address.
    pub host: String,
    /// Port (default by kind: 5432, 3306, 6379).
    pub port: u16,
    /// Database to log in to (postgres default `postgres`).
    pub database: Option<String>,
}

/// `probe.type`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ProbeKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB/MySQL.
    Mysql,
    /// Redis.
    Redis,
}

impl ProbeKind {
    /// The YAML name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The usual port.
    pub fn default_port(&self) -> u16 {
        match self {
            ProbeKind::Postgres => 5432,
            ProbeKind::Mysql => 3306,
            ProbeKind::Redis => 6379,
        }
    }
}

impl KindSpec for VaultDatabaseCredential {
    fn target(&self) -> String {
        let p = &self.probe;
        format!(
            "vault database static role {} (mount {}), probed on {} {}:{}",
            self.role,
            self.mount,
            p.kind.as_str(),
            p.host,
            p.port
        )
    }
}

/// Validates `spec.credential` of `type: vault-database`.
pub(super) fn validate(v: &mut Validator, r: &RawVaultDatabase) -> Option<VaultDatabaseCredential> {
    let mount = v.mount(r.mount.as_ref(), "database");
    let role = v.non_empty(&r.role, "a static role name");
    let p = &r.probe.value;
    let kind = p.kind;
    let host = v.host(&p.host);
    let port = v.port(p.port.as_ref(), kind.default_port());
    let database = v.optional(p.database.as_ref(), |v, d| {
        v.non_empty(d, "a database name")
    });
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::VaultDatabase, r);
    Some(VaultDatabaseCredential {
        mount,
        role: role?,
        probe: DatabaseProbe {
            kind,
            host: host?,
            port,
            database: database?,
        },
        strategy,
        grace,
    })
}
