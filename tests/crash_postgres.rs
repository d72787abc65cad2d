//! Crash safety: the `rotor` process is aborted (like SIGKILL: no cleanup, no flush)
//! at each step boundary of a rotation, then run again. Whatever the point, the end
//! state is consistent: Vault's current value is the one PostgreSQL accepts, every
//! earlier value is refused, the Secret matches Vault, and no credential was lost.
//! Needs `dev/stack up`.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{Fixture, Options, assert_no_leak, text};

async fn crash_then_recover(point: &str) {
    let fx = Fixture::new("crash", Options::default()).await;
    let (_, v1) = fx.current().await;

    let out = fx
        .rotate_cmd()
        .env("ROTOR_FAILPOINT", point)
        .output()
        .expect("run rotor");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "rotor must die at failpoint {point}:\n{}",
        text(&out)
    );

    let again = fx
        .rotate_cmd()
        .arg("-o")
        .arg("json")
        .output()
        .expect("run rotor again");
    assert!(
        again.status.success(),
        "the run after a crash at {point} must finish:\n{}",
        text(&again)
    );
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    // A `done` point journaled with the rotation's last record leaves nothing to
    // resume; otherwise the interrupted rotation is finished first, then the requested
    // one runs.
    if !report["resumed"].is_null() {
        assert_eq!(report["resumed"]["status"], "completed", "{report:#}");
        assert_ne!(
            report["resumed"]["rotation_id"], report["rotation"]["rotation_id"],
            "{report:#}"
        );
    }
    assert_eq!(report["rotation"]["status"], "completed", "{report:#}");
    // Exactly two promotions happened: the resumed one and the new one.
    assert_eq!(fx.current().await.1, v1 + 2);
    fx.assert_consistent().await;
    let passwords = fx.all_passwords().await;
    assert_no_leak(&out, &passwords);
    assert_no_leak(&again, &passwords);
}

fn libc_sigabrt() -> i32 {
    6
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_then_recover($point).await;
        }
    )*};
}

crash_tests! {
    crash_after_staged_journaled => "staged:done",
    crash_after_staging_write_before_journal => "staged:effect",
    crash_after_applied_journaled => "applied:done",
    crash_after_alter_role_before_journal => "applied:effect",
    crash_after_tested_journaled => "tested:done",
    crash_before_promote_write => "promoted:begun",
    crash_after_promote_write_before_journal => "promoted:effect",
    crash_after_promoted_journaled => "promoted:done",
    crash_after_secret_applied_before_journal => "propagated:effect",
    crash_after_propagated_journaled => "propagated:done",
    crash_after_verified_before_journal => "verified:effect",
    // Steps that are not journaled before they run: the test login, and `completed`,
    // which destroys the staging copy before the rotation is journaled complete (a
    // resume reads the new value from the canonical version it was promoted to).
    crash_after_test_login_before_journal => "tested:effect",
    crash_after_staging_destroyed_before_journal => "completed:effect",
}
