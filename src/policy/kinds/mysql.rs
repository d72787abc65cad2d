//! `mysql`: a MariaDB/MySQL user password, changed in place (`single`) or on the idle
//! one of two users `NAME_a`/`NAME_b` (`alternating`).

use std::time::Duration;

use super::common::{Connection, RawPort, RawTls, raw_credential};
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::generator::PasswordGenerator;
use crate::policy::model::Strategy;
use crate::policy::raw::{RawReference, raw_mapping};
use crate::policy::validate::Validator;
use crate::policy::yaml::{Checked, Located};

/// What `mysql` is, whatever a policy sets.
pub(super) const FACTS: KindFacts =
    KindFacts::password("mysql", &[Strategy::Single, Strategy::Alternating]);

raw_mapping! {
    "a connection mapping {host, port?, tls?, adminFrom}",
    pub(crate) struct RawMysqlConnection {
        pub host: Located<String>,
        pub port: Option<Located<RawPort>>,
        pub tls: Option<Checked<Located<RawTls>>>,
        pub admin_from: Checked<Located<RawReference>>,
    }
}

raw_credential! {
    "a mysql credential",
    RawMysql generated {
        pub connection: Located<RawMysqlConnection>,
        pub username: Located<String>,
        pub account_host: Option<Located<String>>,
    }
}

/// `mysql`.
#[derive(Debug, Clone)]
pub struct MysqlCredential {
    /// How rotor connects as an administrator.
    pub connection: MysqlConnection,
    /// The user whose password is rotated.
    pub username: String,
    /// The account's host part, default `%`.
    pub account_host: String,
    /// `single` (default) or `alternating`.
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old credential stays valid (alternating only; default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `mysql` `connection`: the admin login is required.
pub type MysqlConnection = Connection;

impl KindSpec for MysqlCredential {
    fn target(&self) -> String {
        let c = &self.connection;
        format!(
            "mysql user '{}'@'{}' on {}:{}",
            self.username, self.account_host, c.host, c.port
        )
    }
}

/// Validates `spec.credential` of `type: mysql`.
pub(super) fn validate(v: &mut Validator, r: &RawMysql) -> Option<MysqlCredential> {
    let c = &r.connection.value;
    let admin_from = v.reference(&c.admin_from);
    let connection = v.connection(&c.host, c.port.as_ref(), 3306, c.tls.as_ref(), admin_from);
    let username = v.username(&r.username, 80);
    let account_host = v.non_empty_or(
        r.account_host.as_ref(),
        "an account host such as % or 10.0.0.%",
        "%",
    );
    let password = v.password(r.password.as_ref());
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::Mysql, r);
    Some(MysqlCredential {
        connection: connection?,
        username: username?,
        account_host: account_host?,
        strategy,
        password,
        grace,
    })
}
