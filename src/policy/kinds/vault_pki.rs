//! `vault-pki`: a certificate and key issued from a PKI role. A new certificate is
//! issued next to the old one, which is revoked after `grace`; `renewBefore` makes a
//! certificate due before it expires.

use std::net::IpAddr;
use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KeyShape, KindFacts, KindSpec};
use crate::policy::duration::LIFETIME_BOUND;
use crate::policy::model::Strategy;
use crate::policy::validate::{Validator, is_dns_subdomain};
use crate::policy::yaml::{Located, ScalarText};

/// What `vault-pki` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts {
    name: "vault-pki",
    output_keys: &[
        "certificate",
        "privateKey",
        "caChain",
        "serial",
        "expiration",
    ],
    secret_keys: &["privateKey"],
    strategies: &[Strategy::Overlap],
    required_current_keys: &["certificate", "caChain"],
    shapes: &[
        KeyShape::pem("certificate"),
        KeyShape::pem("privateKey"),
        KeyShape::pem("caChain"),
        KeyShape::line("serial", "0123456789abcdef:", 2),
        KeyShape::line("expiration", "0123456789", 10),
    ],
};

raw_credential! {
    "a vault-pki credential",
    RawVaultPki {
        pub mount: Option<Located<String>>,
        pub role: Located<String>,
        pub common_name: Located<String>,
        pub alt_names: Option<Vec<Located<String>>>,
        pub ip_sans: Option<Vec<Located<String>>>,
        pub ttl: Located<ScalarText>,
        pub renew_before: Option<Located<ScalarText>>,
    }
}

/// `vault-pki`: a certificate and key issued from a PKI role.
#[derive(Debug, Clone)]
pub struct VaultPkiCredential {
    /// PKI mount, default `pki`.
    pub mount: String,
    /// PKI role to issue from.
    pub role: String,
    /// Certificate common name.
    pub common_name: String,
    /// Subject alternative DNS names.
    pub alt_names: Vec<String>,
    /// Subject alternative IP addresses.
    pub ip_sans: Vec<IpAddr>,
    /// Certificate lifetime: positive, at most 3650d ([`crate::policy::LIFETIME_BOUND`]).
    pub ttl: Duration,
    /// Re-issue when less than this is left (a schedule trigger besides `maxAge`);
    /// shorter than `ttl`.
    pub renew_before: Option<Duration>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old certificate stays unrevoked (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

impl KindSpec for VaultPkiCredential {
    fn target(&self) -> String {
        format!(
            "vault pki certificate {} from role {} (mount {})",
            self.common_name, self.role, self.mount
        )
    }

    fn renew_before(&self) -> Option<Duration> {
        self.renew_before
    }
}

/// Validates `spec.credential` of `type: vault-pki`.
pub(super) fn validate(v: &mut Validator, r: &RawVaultPki) -> Option<VaultPkiCredential> {
    let mount = v.mount(r.mount.as_ref(), "pki");
    let role = v.non_empty(&r.role, "a PKI role name");
    let common_name = v.non_empty(&r.common_name, "a common name");
    let mut alt_names = Vec::new();
    for n in r.alt_names.iter().flatten() {
        let bare = n.value.strip_prefix("*.").unwrap_or(&n.value);
        if is_dns_subdomain(&bare.to_ascii_lowercase()) {
            alt_names.push(n.value.clone());
        } else {
            v.found(n, &n.value, "a DNS name");
        }
    }
    let mut ip_sans = Vec::new();
    for ip in r.ip_sans.iter().flatten() {
        match ip.value.parse::<IpAddr>() {
            Ok(a) => ip_sans.push(a),
            Err(_) => v.found(ip, &ip.value, "an IP address"),
        }
    }
    let (ttl, renew_before) = lifetime(v, r);
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::VaultPki, r);
    Some(VaultPkiCredential {
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

/// `ttl` (positive) and `renewBefore` (shorter than `ttl`).
fn lifetime(v: &mut Validator, r: &RawVaultPki) -> (Option<Duration>, Option<Duration>) {
    let ttl = v.duration(&r.ttl, LIFETIME_BOUND);
    if ttl.is_some_and(|t| t.is_zero()) {
        v.at(&r.ttl, "found a ttl of 0, expected a positive duration");
    }
    let renew_before = v.opt_duration(r.renew_before.as_ref(), LIFETIME_BOUND);
    if let (Some(t), Some(rb), Some(at)) = (ttl, renew_before, &r.renew_before)
        && rb >= t
    {
        v.at(
            at,
            format!(
                "found renewBefore `{}` not shorter than ttl `{}`, expected less than the ttl",
                at.value.0, r.ttl.value.0
            ),
        );
    }
    (ttl, renew_before)
}
