//! The policy model, loading with precise errors, and validation.
//!
//! - [`load_paths`] reads files and directories (recursive `*.yaml`/`*.yml`, several
//!   documents per file), validates every policy and returns a [`PolicySet`] or every
//!   problem found as [`LoadErrors`], each with file, line, column and field path.
//! - `yaml`: a YAML tree that keeps every node's position, and a serde deserializer
//!   over it that knows the field path of every value.
//! - `raw`: serde structs mirroring the YAML; `validate` turns them, without I/O, into
//!   the model types re-exported here.
//! - [`kinds`]: one module per credential kind (its raw fields, spec, validation and
//!   static facts) and [`CredentialKind`], the closed set.
//! - `consumer`: each consumer type's settings and what they say about themselves
//!   ([`ConsumerFacts`]: description, templates, target identity), and
//!   [`ConsumerSpec`], the closed set.
//! - [`Template`], [`PasswordGenerator`]: consumer templates and password generation.
//! - [`resource`]: the `RotationPolicy` custom resource (its spec is a policy's
//!   `spec`), its status and its CRD, whose schema is generated from `raw`.

mod consumer;
mod duration;
mod error;
mod generator;
pub mod kinds;
mod load;
mod model;
mod raw;
pub mod resource;
mod shared;
mod template;
mod validate;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use consumer::*;
pub use duration::{
    APPROVAL_TTL_BOUND, DurationBound, GRACE_BOUND, JITTER_BOUND, LIFETIME_BOUND, MAX_AGE_BOUND,
    format_duration, parse_duration,
};
pub use error::{LoadErrors, PolicyError};
pub use generator::{Alphabet, GeneratorError, PasswordGenerator};
pub use kinds::*;
pub use model::*;
pub(crate) use raw::raw_mapping;
pub use resource::RotationPolicy;
pub use template::{Template, TemplateError};

/// Loads and validates every policy under `paths` (files, or directories searched
/// recursively for `*.yaml`/`*.yml`; a file may hold several `---` documents, each a
/// `rotor/v1` policy or a `rotor.dev/v1` RotationPolicy manifest).
/// Never touches the network. Names must be unique across everything loaded.
pub fn load_paths(paths: &[PathBuf]) -> Result<PolicySet, LoadErrors> {
    load::load_paths(paths, &[])
}

/// [`load_paths`] plus RotationPolicy resources read from a cluster, validated the
/// same way (errors name a resource's source as `namespace/name`). Names must be
/// unique across files and resources: a clash is an error at each place, naming the
/// others.
pub fn load_all(paths: &[PathBuf], resources: &[RotationPolicy]) -> Result<PolicySet, LoadErrors> {
    load::load_paths(paths, resources)
}

/// Loads policies from YAML text as if read from `file` (for tests and the API).
pub fn load_str(file: &std::path::Path, text: &str) -> Result<PolicySet, LoadErrors> {
    load::load_sources(vec![(file.to_path_buf(), Ok(text.to_owned()))], &[])
}

/// A set of validated policies with unique names.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: BTreeMap<String, ValidatedPolicy>,
}

impl PolicySet {
    /// Policies sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &ValidatedPolicy> {
        self.policies.values()
    }

    /// The policy called `name`.
    pub fn get(&self, name: &str) -> Option<&ValidatedPolicy> {
        self.policies.get(name)
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Policy names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// Builds a set from policies whose names are known to be unique; a later policy
    /// with the same name replaces an earlier one.
    pub fn from_policies(policies: impl IntoIterator<Item = ValidatedPolicy>) -> Self {
        Self {
            policies: policies.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }
}

impl IntoIterator for PolicySet {
    type Item = ValidatedPolicy;
    type IntoIter = std::collections::btree_map::IntoValues<String, ValidatedPolicy>;

    /// The policies, sorted by name, without copying them.
    fn into_iter(self) -> Self::IntoIter {
        self.policies.into_values()
    }
}

impl<'a> IntoIterator for &'a PolicySet {
    type Item = &'a ValidatedPolicy;
    type IntoIter = std::collections::btree_map::Values<'a, String, ValidatedPolicy>;

    fn into_iter(self) -> Self::IntoIter {
        self.policies.values()
    }
}

#[cfg(test)]
mod tests;
