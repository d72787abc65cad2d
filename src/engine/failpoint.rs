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
//! `rollback:effect` is reached once a rollback has given the target its old value
//! back, before the old credential is tried.
//!
//! `ROTOR_FAILPOINT=<step>:<moment>:pause=<file>` pauses instead of aborting (fault
//! tests: the test makes an outside system fail while the rotation stands still, then
//! lets it run into the fault). At the point, the process creates `<file>.reached`
//! and blocks until `<file>` no longer exists (at most [`PAUSE_LIMIT`]); a point whose
//! `<file>.reached` exists already does not pause again. Several points may be given,
//! separated by commas (`tested:begun:pause=/a,rollback:effect:pause=/b`). Debug
//! builds only, like the abort.
//!
//! Unset in production; reading it costs one environment lookup per process.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// Aborts (or pauses) the process if `ROTOR_FAILPOINT` names this point and moment:
/// a rotation's step (`staged`, …), a retirement's (`retire_disabled`, …), `enable`
/// or `rollback`.
pub fn hit_at(name: &str, moment: Moment) {
    // Test builds only: a release binary never aborts because of its environment.
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(points) = configured() else {
        return;
    };
    for point in points.split(',') {
        let mut parts = point.splitn(3, ':');
        if parts.next() != Some(name) || parts.next() != Some(moment.as_str()) {
            continue;
        }
        match parts.next().map(|action| action.strip_prefix("pause=")) {
            Some(Some(file)) => pause(name, moment, Path::new(file)),
            Some(None) => {
                eprintln!("rotor: failpoint {point} has an unknown action, aborting");
                std::process::abort();
            }
            None => {
                eprintln!("rotor: failpoint {point} reached, aborting");
                std::process::abort();
            }
        }
    }
}

/// The longest a `pause=` failpoint holds the process.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(120);

/// Blocks the calling thread at a `pause=<file>` failpoint (once: not when
/// `<file>.reached` exists): creates `<file>.reached`, then waits until `<file>` is gone
/// or [`PAUSE_LIMIT`] has passed.
fn pause(name: &str, moment: Moment, file: &Path) {
    let mut reached = file.as_os_str().to_owned();
    reached.push(".reached");
    if Path::new(&reached).exists() {
        return;
    }
    if let Err(e) = std::fs::write(&reached, b"") {
        eprintln!(
            "rotor: failpoint {name}:{}: cannot mark it reached: {e}",
            moment.as_str()
        );
    }
    eprintln!(
        "rotor: failpoint {name}:{} reached, pausing",
        moment.as_str()
    );
    let start = Instant::now();
    while file.exists() && start.elapsed() < PAUSE_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("rotor: failpoint {name}:{} released", moment.as_str());
}
