//! Serde structs mirroring the policy YAML, read through [`super::yaml::NodeDe`].
//!
//! Closed sets (`RawCredential`, `RawConsumer`) are plain serde enums: `NodeDe` reads
//! them internally tagged by `type`, keeping positions, which serde's own
//! `#[serde(tag = "type")]` cannot (it buffers the content and loses them).
//! `Checked` marks error barriers (one bad section does not hide errors in the next);
//! `Located` keeps the position and path needed by validation messages; `ScalarText`
//! takes a scalar as written (durations, file modes). No `Debug`: a user may have put a
//! secret where a name was expected, and these values are never printed.
//!
//! The credential kinds' own fields live with each kind in [`super::kinds`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::consumer::{GithubVisibility, GitlabVariableType};
use super::kinds::RawCredential;
use super::model::NotifyEvent;
use super::yaml::{Checked, Located, ScalarText};

/// A struct read from a YAML mapping: unknown fields are errors, field names are
/// camelCase, and the literal is the "expected …" text shown for a node of the wrong
/// shape. Optional fields are plain `Option`s, which serde's derive reads as `None`
/// when the field is missing (no `#[serde(default)]` needed). The field order is the
/// order listed in "unknown field" messages.
///
/// Policy mappings also derive `schemars::JsonSchema`: the RotationPolicy CRD's schema
/// is generated from them ([`super::resource`]). `without_schema` leaves that out, for
/// other files read the same way (the agent's auth configuration).
macro_rules! raw_mapping {
    (without_schema $expecting:tt, $(#[$meta:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase", expecting = $expecting)]
        $vis struct $name { $($body)* }
    };
    ($expecting:tt, $(#[$meta:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase", expecting = $expecting)]
        $vis struct $name { $($body)* }
    };
}
pub(crate) use raw_mapping;

/// An integer with a custom "expected" text (`found a literal string, expected …`)
/// and, for the RotationPolicy schema, the bounds validation enforces (`min..=max`, or
/// `min..` when there is no upper bound).
macro_rules! raw_int {
    ($name:ident, $expecting:literal, $min:literal ..= $max:literal) => {
        $crate::policy::raw::raw_int!(@type $name, $expecting);
        $crate::policy::resource::int_schema!($name, $min, Some($max));
    };
    ($name:ident, $expecting:literal, $min:literal ..) => {
        $crate::policy::raw::raw_int!(@type $name, $expecting);
        $crate::policy::resource::int_schema!($name, $min, None);
    };
    (@type $name:ident, $expecting:literal) => {
        #[derive(Clone, Copy)]
        pub(crate) struct $name(pub i128);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        Ok($name(v.into()))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name(v.into()))
                    }
                    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<$name, E> {
                        Ok($name(v))
                    }
                }
                d.deserialize_i128(V)
            }
        }
    };
}

pub(crate) use raw_int;

raw_int!(RawApprovals, "a number of approvals (at least 1)", 1..);

/// `apiVersion`: a policy file's `rotor/v1`, or a RotationPolicy resource's
/// `rotor.dev/v1` (a manifest beside the policy files, or an object in a cluster).
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) enum ApiVersion {
    #[serde(rename = "rotor/v1")]
    V1,
    #[serde(rename = "rotor.dev/v1")]
    Resource,
}

/// `kind`.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) enum Kind {
    RotationPolicy,
}

raw_mapping! {
    "a RotationPolicy mapping {apiVersion, kind, metadata, spec}",
    /// One YAML document.
    pub(crate) struct RawPolicy {
        pub api_version: Checked<ApiVersion>,
        pub kind: Checked<Kind>,
        pub metadata: Checked<Located<RawMetadata>>,
        pub spec: Checked<RawSpec>,
    }
}

raw_mapping! {
    "a mapping {name, namespace?, labels?, annotations?}",
    /// `metadata`; `namespace` only (and always) in a `rotor.dev/v1` resource.
    pub(crate) struct RawMetadata {
        pub name: Located<String>,
        pub namespace: Option<Located<String>>,
        pub labels: Option<Located<BTreeMap<String, Located<String>>>>,
        pub annotations: Option<Located<BTreeMap<String, Located<ScalarText>>>>,
    }
}

raw_mapping! {
    "a mapping {credential, vault, schedule?, consumers?, verify?, onDemand?, notify?}",
    pub(crate) struct RawSpec {
        pub credential: Checked<Located<RawCredential>>,
        pub vault: Checked<Located<RawVault>>,
        pub schedule: Option<Checked<Located<RawSchedule>>>,
        pub consumers: Option<Vec<Checked<Located<RawConsumer>>>>,
        pub verify: Option<Checked<RawVerify>>,
        pub on_demand: Option<Checked<RawOnDemand>>,
        pub notify: Option<Vec<Checked<Located<RawNotify>>>>,
        pub cascade: Option<Vec<Located<String>>>,
    }
}

raw_mapping! {
    "a mapping {mount?, path}",
    pub(crate) struct RawVault {
        pub mount: Option<Located<String>>,
        pub path: Located<String>,
    }
}

raw_mapping! {
    "a mapping {cron?, timezone?, jitter?, window?, maxAge?}",
    pub(crate) struct RawSchedule {
        pub cron: Option<Located<String>>,
        pub timezone: Option<Located<String>>,
        pub jitter: Option<Located<ScalarText>>,
        pub window: Option<Located<String>>,
        pub max_age: Option<Located<ScalarText>>,
    }
}

raw_mapping! {
    "a mapping {oldRejected?, terminateSessions?}",
    pub(crate) struct RawVerify {
        pub old_rejected: Option<bool>,
        pub terminate_sessions: Option<bool>,
    }
}

raw_mapping! {
    "a mapping {requireReason?, requireTicket?, approval?}",
    pub(crate) struct RawOnDemand {
        pub require_reason: Option<bool>,
        pub require_ticket: Option<bool>,
        pub approval: Option<Checked<Located<RawApproval>>>,
    }
}

raw_mapping! {
    "a mapping {required?, approvers, ttl?}",
    /// `spec.onDemand.approval`.
    pub(crate) struct RawApproval {
        pub required: Option<Located<RawApprovals>>,
        pub approvers: Option<Located<Vec<Located<String>>>>,
        pub ttl: Option<Located<ScalarText>>,
    }
}

raw_mapping! {
    "a webhook mapping {url, secretFrom, events?}",
    /// `spec.notify[]`.
    pub(crate) struct RawNotify {
        pub url: Located<String>,
        pub secret_from: Checked<Located<RawReference>>,
        pub events: Option<Located<Vec<Located<NotifyEvent>>>>,
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces (the credential kinds' shared fields are in `kinds/common.rs`)

raw_mapping! {
    "a reference {vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}",
    /// `{vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}`.
    pub(crate) struct RawReference {
        pub vault: Option<Located<RawVaultRef>>,
        pub env: Option<Located<String>>,
        pub file: Option<Located<String>>,
    }
}

raw_mapping! {
    "a Vault reference {path, key?, mount?}",
    pub(crate) struct RawVaultRef {
        pub path: Located<String>,
        pub key: Option<Located<String>>,
        pub mount: Option<Located<String>>,
    }
}

// ---------------------------------------------------------------------------------------
// Consumers

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a consumer mapping with a `type`"
)]
#[schemars(tag = "type")]
pub(crate) enum RawConsumer {
    Kubernetes(RawKubernetes),
    Gitlab(RawGitlab),
    Github(RawGithub),
    VaultKv(RawVaultKv),
    File(RawFile),
}

raw_mapping! {
    "a kubernetes consumer",
    pub(crate) struct RawKubernetes {
        pub namespace: Located<String>,
        pub secret: Located<String>,
        pub data: Located<BTreeMap<String, Located<String>>>,
        pub secret_type: Option<Located<String>>,
        pub restart: Option<Vec<Located<String>>>,
        pub force: Option<bool>,
    }
}

raw_mapping! {
    "a gitlab consumer",
    pub(crate) struct RawGitlab {
        pub url: Option<Located<String>>,
        pub token_from: Checked<Located<RawReference>>,
        pub project: Option<Located<ScalarText>>,
        pub group: Option<Located<ScalarText>>,
        pub key: Located<String>,
        pub value: Located<String>,
        pub masked: Option<Located<bool>>,
        pub protected: Option<bool>,
        pub raw: Option<Located<bool>>,
        pub environment_scope: Option<Located<String>>,
        pub variable_type: Option<GitlabVariableType>,
    }
}

raw_mapping! {
    "a github consumer",
    pub(crate) struct RawGithub {
        pub url: Option<Located<String>>,
        pub token_from: Checked<Located<RawReference>>,
        pub repository: Option<Located<String>>,
        pub environment: Option<Located<String>>,
        pub organization: Option<Located<String>>,
        pub visibility: Option<Located<GithubVisibility>>,
        pub name: Located<String>,
        pub value: Located<String>,
    }
}

raw_mapping! {
    "a vault-kv consumer",
    pub(crate) struct RawVaultKv {
        pub mount: Option<Located<String>>,
        pub namespace: Option<Located<String>>,
        pub path: Located<String>,
        pub data: Located<BTreeMap<String, Located<String>>>,
    }
}

raw_mapping! {
    "a file consumer",
    pub(crate) struct RawFile {
        pub path: Located<String>,
        pub content: Located<String>,
        pub mode: Option<Located<ScalarText>>,
        pub owner: Option<Located<ScalarText>>,
        pub group: Option<Located<ScalarText>>,
    }
}
