//! `postgres`: a PostgreSQL role password, changed in place (`single`) or on the idle
//! one of two roles `NAME_a`/`NAME_b` (`alternating`).

use std::time::Duration;

use super::common::{RawPort, RawTls, TlsSpec, raw_credential};
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::generator::PasswordGenerator;
use crate::policy::model::{Reference, Strategy};
use crate::policy::raw::{RawReference, raw_mapping};
use crate::policy::validate::Validator;
use crate::policy::yaml::{Checked, Located};

/// What `postgres` is, whatever a policy sets.
pub(super) const FACTS: KindFacts =
    KindFacts::password("postgres", &[Strategy::Single, Strategy::Alternating]);

raw_mapping! {
    "a connection mapping {host, port?, database?, tls?, adminFrom}",
    pub(crate) struct RawPgConnection {
        pub host: Located<String>,
        pub port: Option<Located<RawPort>>,
        pub database: Option<Located<String>>,
        pub tls: Option<Checked<Located<RawTls>>>,
        pub admin_from: Checked<Located<RawReference>>,
    }
}

raw_credential! {
    "a postgres credential",
    RawPostgres generated {
        pub connection: Located<RawPgConnection>,
        pub username: Located<String>,
    }
}

/// `postgres`.
#[derive(Debug, Clone)]
pub struct PostgresCredential {
    /// How rotor connects as an administrator.
    pub connection: PostgresConnection,
    /// The role whose password is rotated.
    pub username: String,
    /// `single` (default) or `alternating`.
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old credential stays valid (alternating only; default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `postgres` `connection`.
#[derive(Debug, Clone)]
pub struct PostgresConnection {
    /// Host name or address.
    pub host: String,
    /// Port, default 5432.
    pub port: u16,
    /// Database to connect to, default `postgres`.
    pub database: String,
    /// TLS settings; absent means no TLS.
    pub tls: Option<TlsSpec>,
    /// The admin login (`username`, `password`).
    pub admin_from: Reference,
}

impl KindSpec for PostgresCredential {
    fn target(&self) -> String {
        let c = &self.connection;
        format!(
            "postgres role {} on {}:{}/{}",
            self.username, c.host, c.port, c.database
        )
    }
}

/// Validates `spec.credential` of `type: postgres`.
pub(super) fn validate(v: &mut Validator, r: &RawPostgres) -> Option<PostgresCredential> {
    let conn = &r.connection.value;
    let host = v.host(&conn.host);
    let port = v.port(conn.port.as_ref(), 5432);
    let database = v.non_empty_or(conn.database.as_ref(), "a database name", "postgres");
    let tls = v.tls(conn.tls.as_ref());
    let admin_from = v.reference(&conn.admin_from);
    let username = v.username(&r.username, 63);
    let password = v.password(r.password.as_ref());
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::Postgres, r);
    Some(PostgresCredential {
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
