//! Crash-test failpoints. `ROTOR_FAILPOINT=<step>:<moment>` makes the process abort
//! (like SIGKILL: no destructors, no flush) at that point of a rotation, so tests can
//! prove that every step boundary resumes or rolls back safely. Moments:
//!
//! - `begun`: the step is about to run (journaled as begun first when it has a side
//!   effect a resume must know about; see `journaled_first` in the engine);
//! - `effect`: the side effect happened, the journal does not say so yet;
//! - `done`: the step is journaled as done (with the next journaled step's "begun",
//!   or with the rotation's last record).
//!
//! Retirements use the points `retire_<step>` (`retire_disabled`,
//! `retire_consumers_removed`, `retire_marked`, `retire_verified`) with the same
//! moments, and `enable:begun` once an enable is journaled, before the target changes.
//!
//! Unset in production; reading it costs one environment lookup per process.

use std::sync::OnceLock;

use super::journal::Step;

/// A point in a step's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Journaled as begun.
    Begun,
    /// Side effect done, not yet journaled.
    Effect,
    /// Journaled as done.
    Done,
}

impl Moment {
    fn as_str(self) -> &'static str {
        match self {
            Moment::Begun => "begun",
            Moment::Effect => "effect",
            Moment::Done => "done",
        }
    }
}

fn configured() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var("ROTOR_FAILPOINT").ok())
        .as_deref()
}

/// Aborts the process if `ROTOR_FAILPOINT` names this step and moment.
pub fn hit(step: Step, moment: Moment) {
    hit_at(step.as_str(), moment);
}

/// Aborts the process if `ROTOR_FAILPOINT` names this point and moment; for steps
/// outside a rotation (retirement: `retire_disabled`, `retire_consumers_removed`, …).
pub fn hit_at(name: &str, moment: Moment) {
    // Test builds only: a release binary never aborts because of its environment.
    if !cfg!(debug_assertions) {
        return;
    }
    if let Some(point) = configured()
        && let Some((s, m)) = point.split_once(':')
        && s == name
        && m == moment.as_str()
    {
        eprintln!("rotor: failpoint {point} reached, aborting");
        std::process::abort();
    }
}
