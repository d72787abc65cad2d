//! `vault-token`: a Vault token used as an API key. A new token with the same policies
//! is created next to the old one, which is revoked after `grace`.

use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KeyShape, KindFacts, KindSpec};
use crate::policy::duration::LIFETIME_BOUND;
use crate::policy::model::Strategy;
use crate::policy::validate::Validator;
use crate::policy::yaml::{Located, ScalarText};

/// What `vault-token` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts {
    name: "vault-token",
    output_keys: &["token", "accessor"],
    secret_keys: &["token"],
    strategies: &[Strategy::Overlap],
    required_current_keys: &["token"],
    shapes: &[
        KeyShape::line("token", TOKEN_CHARS, 24),
        KeyShape::line("accessor", TOKEN_CHARS, 24),
    ],
};

/// The characters of a Vault token or accessor.
const TOKEN_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

raw_credential! {
    "a vault-token credential",
    RawVaultToken {
        pub policies: Located<Vec<Located<String>>>,
        pub ttl: Option<Located<ScalarText>>,
        pub period: Option<Located<ScalarText>>,
        pub role: Option<Located<String>>,
        pub display_name: Option<Located<String>>,
    }
}

/// `vault-token`: a new token with the same policies, the old one revoked.
#[derive(Debug, Clone)]
pub struct VaultTokenCredential {
    /// Policies of the new token (at least one).
    pub policies: Vec<String>,
    /// Token TTL; at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub ttl: Option<Duration>,
    /// Periodic token period; at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub period: Option<Duration>,
    /// Token role to create the token against.
    pub role: Option<String>,
    /// Display name of the new token.
    pub display_name: Option<String>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old token stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

impl KindSpec for VaultTokenCredential {
    fn target(&self) -> String {
        let mut s = format!("vault token with policies [{}]", self.policies.join(", "));
        if let Some(role) = &self.role {
            s.push_str(&format!(" from token role {role}"));
        }
        s
    }
}

/// Validates `spec.credential` of `type: vault-token`.
pub(super) fn validate(v: &mut Validator, r: &RawVaultToken) -> Option<VaultTokenCredential> {
    let mut policies = Vec::new();
    if r.policies.value.is_empty() {
        v.at(
            &r.policies,
            "found no policies, expected at least one policy name",
        );
    }
    for p in &r.policies.value {
        if let Some(p) = v.non_empty(p, "a policy name") {
            policies.push(p);
        }
    }
    let ttl = v.opt_duration(r.ttl.as_ref(), LIFETIME_BOUND);
    let period = v.opt_duration(r.period.as_ref(), LIFETIME_BOUND);
    let role = r
        .role
        .as_ref()
        .and_then(|role| v.non_empty(role, "a token role name"));
    let display_name = r
        .display_name
        .as_ref()
        .and_then(|d| v.non_empty(d, "a display name"));
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::VaultToken, r);
    Some(VaultTokenCredential {
        policies,
        ttl,
        period,
        role,
        display_name,
        strategy,
        grace,
    })
}
