//! `redis`: a Redis ACL user password. Always `overlap`: an ACL user holds several
//! passwords, so the new one is added and the old one removed after `grace`.

use std::time::Duration;

use super::common::{Connection, RawPort, RawTls, raw_credential};
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::generator::PasswordGenerator;
use crate::policy::model::{Reference, Strategy};
use crate::policy::raw::{RawReference, raw_mapping};
use crate::policy::validate::Validator;
use crate::policy::yaml::{Checked, Located};

/// What `redis` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts::password("redis", &[Strategy::Overlap]);

raw_mapping! {
    "a connection mapping {host, port?, tls?, adminFrom?}",
    pub(crate) struct RawRedisConnection {
        pub host: Located<String>,
        pub port: Option<Located<RawPort>>,
        pub tls: Option<Checked<Located<RawTls>>>,
        pub admin_from: Option<Checked<Located<RawReference>>>,
    }
}

raw_credential! {
    "a redis credential",
    RawRedis generated {
        pub connection: Located<RawRedisConnection>,
        pub username: Located<String>,
    }
}

/// `redis` (strategy is always `overlap`: ACL users hold several passwords).
#[derive(Debug, Clone)]
pub struct RedisCredential {
    /// How rotor connects as an administrator.
    pub connection: RedisConnection,
    /// The ACL user whose password is rotated.
    pub username: String,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// How long the old password stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `redis` `connection`: without an admin login, rotor is the default user without a
/// password.
pub type RedisConnection = Connection<Option<Reference>>;

impl KindSpec for RedisCredential {
    fn target(&self) -> String {
        let c = &self.connection;
        format!("redis ACL user {} on {}:{}", self.username, c.host, c.port)
    }
}

/// Validates `spec.credential` of `type: redis`.
pub(super) fn validate(v: &mut Validator, r: &RawRedis) -> Option<RedisCredential> {
    let c = &r.connection.value;
    let admin_from = v.optional(c.admin_from.as_ref(), |v, a| v.reference(a));
    let connection = v.connection(&c.host, c.port.as_ref(), 6379, c.tls.as_ref(), admin_from);
    let username = v.username(&r.username, 512);
    let password = v.password(r.password.as_ref());
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::Redis, r);
    Some(RedisCredential {
        connection: connection?,
        username: username?,
        strategy,
        password,
        grace,
    })
}
