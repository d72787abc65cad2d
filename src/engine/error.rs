//! Why the engine could not start or journal a rotation ([`EngineError`]).

use crate::credentials::CredentialError;
use crate::engine::journal::{JournalError, RotationId};
use crate::state;
use crate::state::StateError;
use crate::vault::VaultError;

/// A failure that prevents a rotation from starting or from being journaled.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum EngineError {
    /// Vault failed outside a step.
    #[error(transparent)]
    #[strum(disabled)]
    Vault(#[from] VaultError),
    /// The journal could not be read or written.
    #[error(transparent)]
    #[strum(disabled)]
    Journal(#[from] JournalError),
    /// A record rotor keeps in Vault (retirement, quarantine, fingerprint key) does not
    /// decode.
    #[error(transparent)]
    #[strum(serialize = "state_corrupt")]
    StateCorrupt(#[from] state::Corrupt),
    /// The credential kind cannot be prepared (unsupported, reference missing…).
    #[error(transparent)]
    #[strum(disabled)]
    Credential(#[from] CredentialError),
    /// The canonical path has no current value to rotate from.
    #[error(
        "{mount}/{path} has no current version: seed it with the credential that works today (keys {keys}) before the first rotation"
    )]
    #[strum(serialize = "canonical_missing")]
    CanonicalMissing {
        /// KV mount.
        mount: String,
        /// The Vault path involved (never a value).
        path: String,
        /// The keys expected.
        keys: String,
    },
    /// The current value lacks a key the kind needs.
    #[error("{mount}/{path} (version {version}) has no key {key:?}")]
    #[strum(serialize = "canonical_incomplete")]
    CanonicalIncomplete {
        /// KV mount.
        mount: String,
        /// The Vault path involved (never a value).
        path: String,
        /// Version read.
        version: u64,
        /// Missing key.
        key: &'static str,
    },
    /// The rotation could not be recorded before it started, so it did not start.
    #[error("the audit log cannot be written; the rotation of {policy} was not started")]
    #[strum(serialize = "evidence")]
    Evidence {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// What the evidence sink said.
        #[source]
        source: crate::evidence::EvidenceError,
    },
    /// The on-demand request lacks what the policy requires.
    #[error("policy {policy} requires {what} for on-demand rotations")]
    #[strum(serialize = "request_incomplete")]
    RequestIncomplete {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// An open rotation is still pending and blocks a new one.
    #[error(
        "rotation {rotation_id} of policy {policy} is still {status} at step {step}; it must finish before a new one starts"
    )]
    #[strum(serialize = "pending")]
    Pending {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// The open rotation.
        rotation_id: RotationId,
        /// Its status.
        status: &'static str,
        /// Its step.
        step: &'static str,
    },
    /// The previous rotation waits for its old credential's grace period to end.
    #[error(
        "rotation {rotation_id} of policy {policy} keeps the old credential valid until {until} (grace period); a new rotation starts after that (`rotor resume` finishes it then), or now with --compromise"
    )]
    #[strum(serialize = "waiting_for_grace")]
    WaitingForGrace {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// The waiting rotation.
        rotation_id: RotationId,
        /// End of the grace period (RFC 3339).
        until: String,
    },
    /// The policy is retired (or being retired or enabled): rotations are refused.
    #[error(
        "policy {policy} is retired ({state} since {since} by {actor}: {reason}); rotations are refused until `rotor enable {policy} --reason …`"
    )]
    #[strum(serialize = "retired")]
    Retired {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// `retiring`, `retired`, `failed` or `enabling`.
        state: &'static str,
        /// When the retirement began (RFC 3339).
        since: String,
        /// Who retired it.
        actor: String,
        /// What went wrong, in words an operator can act on.
        reason: String,
    },
    /// `enable` of a policy that is not retired.
    #[error("policy {policy} is not retired; there is nothing to enable")]
    #[strum(serialize = "not_retired")]
    NotRetired {
        /// The policy's name (`metadata.name`).
        policy: String,
    },
    /// A retire or enable request lacks what it needs.
    #[error("{action} policy {policy} requires {what}")]
    #[strum(serialize = "request_incomplete")]
    RetireIncomplete {
        /// The policy's name (`metadata.name`).
        policy: String,
        /// `retiring` / `enabling`.
        action: &'static str,
        /// `a reason` / `a ticket`.
        what: &'static str,
    },
    /// This executor cannot do what was asked (test doubles of the agent's executor).
    #[error("{0}")]
    #[strum(serialize = "unsupported")]
    Unsupported(&'static str),
    /// The value a rotation must restore is gone from Vault.
    #[error(
        "canonical version {version} of {canonical} is gone; cannot continue rotation {rotation_id} safely"
    )]
    #[strum(serialize = "old_value_gone")]
    OldValueGone {
        /// Rotation (or `retirement of <policy>`).
        rotation_id: String,
        /// `mount/path`.
        canonical: String,
        /// Version.
        version: u64,
    },
}

impl EngineError {
    /// Whether an outside system (Vault, the target) gave no answer — a timeout, a
    /// refused connection, a 5xx — rather than a refusal: retrying later may succeed,
    /// and it is no evidence against the policy.
    pub fn is_unanswered(&self) -> bool {
        match self {
            EngineError::Vault(e) => e.is_transient(),
            EngineError::Journal(JournalError::Vault { source, .. }) => source.is_transient(),
            EngineError::Credential(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Vault(e) => e.kind(),
            EngineError::Journal(e) => e.kind(),
            EngineError::Credential(e) => e.kind(),
            other => other.into(),
        }
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Vault(e) => EngineError::Vault(e),
            StateError::Corrupt(c) => EngineError::StateCorrupt(c),
        }
    }
}
