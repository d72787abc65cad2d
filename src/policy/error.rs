//! Load and validation errors: each one points at a file, line, column and field path.

use std::fmt;
use std::path::PathBuf;

/// One problem in a policy file. Messages read "found X, expected Y" and never
/// contain a secret value (a literal password is described, not echoed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyError {
    /// The file the problem is in; for a RotationPolicy read from a cluster,
    /// `namespace/name`.
    pub file: PathBuf,
    /// 1-based line (0 for a resource read from a cluster).
    pub line: usize,
    /// 1-based column (0 for a resource read from a cluster).
    pub column: usize,
    /// Field path such as `spec.consumers[1].secret` (`(yaml)` for syntax errors,
    /// `(file)` for a file that cannot be read).
    pub path: String,
    /// What was found and what was expected.
    pub message: String,
}

/// `file:line:column`, or the source alone when it has no position (line 0: a
/// RotationPolicy read from a cluster, named `namespace/name`).
pub(crate) fn place(file: &std::path::Path, line: usize, column: usize) -> String {
    if line == 0 {
        file.display().to_string()
    } else {
        format!("{}:{line}:{column}", file.display())
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            place(&self.file, self.line, self.column),
            self.path,
            self.message
        )
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found while loading, sorted by file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<PolicyError>);

impl LoadErrors {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        "policy_invalid"
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}
