//! `vault-userpass`: the password of a user of a Vault userpass auth mount.

use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::generator::PasswordGenerator;
use crate::policy::model::Strategy;
use crate::policy::validate::Validator;
use crate::policy::yaml::Located;

/// What `vault-userpass` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts::password("vault-userpass", &[Strategy::Single]);

raw_credential! {
    "a vault-userpass credential",
    RawVaultUserpass generated {
        pub mount: Option<Located<String>>,
        pub username: Located<String>,
    }
}

/// `vault-userpass`.
#[derive(Debug, Clone)]
pub struct VaultUserpassCredential {
    /// Auth mount, default `userpass`.
    pub mount: String,
    /// The user whose password is rotated.
    pub username: String,
    /// Always [`Strategy::Single`].
    pub strategy: Strategy,
    /// The password generator.
    pub password: PasswordGenerator,
    /// Always 0.
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

impl KindSpec for VaultUserpassCredential {
    fn target(&self) -> String {
        format!(
            "vault userpass user {} (mount {})",
            self.username, self.mount
        )
    }
}

/// Validates `spec.credential` of `type: vault-userpass`.
pub(super) fn validate(v: &mut Validator, r: &RawVaultUserpass) -> Option<VaultUserpassCredential> {
    let mount = v.mount(r.mount.as_ref(), "userpass");
    let username = v.username(&r.username, 255);
    let password = v.password(r.password.as_ref());
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::VaultUserpass, r);
    Some(VaultUserpassCredential {
        mount,
        username: username?,
        strategy,
        password,
        grace,
    })
}
