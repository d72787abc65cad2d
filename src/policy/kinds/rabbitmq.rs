//! `rabbitmq`: a RabbitMQ user password, changed through the management API and
//! probed over AMQP.

use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::generator::PasswordGenerator;
use crate::policy::model::{Reference, Strategy};
use crate::policy::raw::RawReference;
use crate::policy::validate::Validator;
use crate::policy::yaml::{Checked, Located};

/// What `rabbitmq` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts::password("rabbitmq", &[Strategy::Single]);

raw_credential! {
    "a rabbitmq credential",
    RawRabbitmq generated {
        pub management_url: Located<String>,
        pub admin_from: Checked<Located<RawReference>>,
        pub username: Located<String>,
        pub amqp_url: Option<Located<String>>,
    }
}

/// `rabbitmq`.
#[derive(Debug, Clone)]
pub struct RabbitmqCredential {
    /// Management API base URL (no credentials in it).
    pub management_url: url::Url,
    /// The management API admin login (`username`, `password`).
    pub admin_from: Reference,
    /// The user whose password is rotated.
    pub username: String,
    /// AMQP URL used to probe the old and new password (no credentials in it).
    pub amqp_url: Option<url::Url>,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

impl KindSpec for RabbitmqCredential {
    fn target(&self) -> String {
        format!("rabbitmq user {} at {}", self.username, self.management_url)
    }
}

/// Validates `spec.credential` of `type: rabbitmq`.
pub(super) fn validate(v: &mut Validator, r: &RawRabbitmq) -> Option<RabbitmqCredential> {
    let management_url = v.http_url(&r.management_url, &["http", "https"]);
    let admin_from = v.reference(&r.admin_from);
    let username = v.username(&r.username, 255);
    let amqp_url = v.optional(r.amqp_url.as_ref(), |v, u| {
        v.http_url(u, &["amqp", "amqps"])
    });
    let password = v.password(r.password.as_ref());
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::Rabbitmq, r);
    Some(RabbitmqCredential {
        management_url: management_url?,
        admin_from: admin_from?,
        username: username?,
        amqp_url: amqp_url?,
        strategy,
        password,
        grace,
    })
}
