//! `vault-approle`: an AppRole secret-id. A new one is generated next to the old one,
//! which is destroyed by accessor after `grace`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KeyShape, KindFacts, KindSpec};
use crate::policy::model::Strategy;
use crate::policy::validate::Validator;
use crate::policy::yaml::Located;

/// What `vault-approle` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts {
    name: "vault-approle",
    output_keys: &["roleId", "secretId", "secretIdAccessor"],
    secret_keys: &["secretId"],
    strategies: &[Strategy::Overlap],
    required_current_keys: &["roleId", "secretId"],
    shapes: &[
        KeyShape::line("roleId", HEX_DASH, 36),
        KeyShape::line("secretId", HEX_DASH, 36),
        KeyShape::line("secretIdAccessor", HEX_DASH, 36),
    ],
};

/// The characters of a UUID (role ids, secret ids and their accessors).
const HEX_DASH: &str = "0123456789abcdef-";

raw_credential! {
    "a vault-approle credential",
    RawVaultApprole {
        pub mount: Option<Located<String>>,
        pub role: Located<String>,
        pub metadata: Option<BTreeMap<String, Located<String>>>,
    }
}

/// `vault-approle`: a new secret-id is generated, the old one destroyed by accessor.
#[derive(Debug, Clone)]
pub struct VaultApproleCredential {
    /// Auth mount, default `approle`.
    pub mount: String,
    /// The AppRole name.
    pub role: String,
    /// Metadata attached to each new secret-id.
    pub metadata: BTreeMap<String, String>,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old secret-id stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

impl KindSpec for VaultApproleCredential {
    fn target(&self) -> String {
        format!(
            "vault approle {} secret-id (mount {})",
            self.role, self.mount
        )
    }
}

/// Validates `spec.credential` of `type: vault-approle`.
pub(super) fn validate(v: &mut Validator, r: &RawVaultApprole) -> Option<VaultApproleCredential> {
    let mount = v.mount(r.mount.as_ref(), "approle");
    let role = v.non_empty(&r.role, "an AppRole name");
    let metadata = r
        .metadata
        .iter()
        .flatten()
        .map(|(k, value)| (k.clone(), value.value.clone()))
        .collect();
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::VaultApprole, r);
    Some(VaultApproleCredential {
        mount,
        role: role?,
        metadata,
        strategy,
        grace,
    })
}
