//! Crash safety for every credential kind: the `rotor` process is aborted (like
//! SIGKILL: no cleanup, no flush) at each step boundary, then run again. Whatever the
//! point, the interrupted rotation is finished first, a new one runs, and the end
//! state is consistent: Vault's current value works on the real target, every earlier
//! value is refused with the target's own error, and the Secret matches Vault.
//! Needs `dev/stack up`.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::kinds::{self, KindFixture, KindOptions, Setup, report, text};
use rotor::vault::Vault;

const SIGABRT: i32 = 6;

/// Every point where a kill leaves a different state behind.
const POINTS: &[&str] = &[
    "staged:effect",
    "staged:done",
    "applied:effect",
    "applied:done",
    "tested:done",
    "promoted:begun",
    "promoted:effect",
    "promoted:done",
    "propagated:effect",
    "propagated:done",
    "revoked:effect",
    "revoked:done",
    "verified:effect",
    // The staging copy destroyed, the rotation not yet journaled complete.
    "completed:effect",
];

async fn crash_matrix<F, Fut>(prefix: &str, setup: F)
where
    F: Fn(String, Vault) -> Fut + Copy,
    Fut: std::future::Future<Output = Setup>,
{
    for point in POINTS {
        let fx = KindFixture::new(prefix, KindOptions::default(), setup).await;
        let (_, v1) = fx.current().await;
        let out = fx
            .rotate_cmd()
            .env("ROTOR_FAILPOINT", point)
            .output()
            .expect("run rotor");
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{}: rotor must die at failpoint {point}:\n{}",
            fx.kind,
            text(&out)
        );
        let again = fx.rotate_cmd().output().expect("run rotor again");
        assert!(
            again.status.success(),
            "{}: the run after a crash at {point} must finish:\n{}",
            fx.kind,
            text(&again)
        );
        let r = report(&again);
        // A `done` point journaled with the rotation's last record leaves nothing to
        // resume; otherwise the interrupted rotation is finished first.
        if !r["resumed"].is_null() {
            assert_eq!(r["resumed"]["status"], "completed", "{point}: {r:#}");
        }
        assert_eq!(r["rotation"]["status"], "completed", "{point}: {r:#}");
        assert_eq!(
            fx.current().await.1,
            v1 + 2,
            "{point}: the resumed and the new rotation each promoted once"
        );
        fx.assert_consistent().await;
        let secrets = fx.all_secrets().await;
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        rotor_testkit::assert_no_secret(&text(&out), &refs);
        rotor_testkit::assert_no_secret(&text(&again), &refs);
    }
}

#[tokio::test]
async fn postgres_alternating() {
    crash_matrix("c-pgalt", |n, v| async move {
        kinds::postgres_alternating(&n, &v).await
    })
    .await;
}

#[tokio::test]
async fn vault_database() {
    crash_matrix("c-vdb", |n, v| async move {
        kinds::vault_database(&n, &v).await
    })
    .await;
}

macro_rules! crash_kinds {
    ($($name:ident => ($prefix:literal, $setup:path),)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_matrix($prefix, |n, v| async move { $setup(&n, &v).await }).await;
        }
    )*};
}

crash_kinds! {
    mysql_single => ("c-my", kinds::mysql_single),
    mysql_alternating => ("c-myalt", kinds::mysql_alternating),
    redis_overlap => ("c-redis", kinds::redis_user),
    rabbitmq_single => ("c-rmq", kinds::rabbitmq_user),
    vault_userpass => ("c-up", kinds::vault_userpass),
    vault_approle => ("c-ar", kinds::vault_approle),
    vault_token => ("c-tok", kinds::vault_token),
    vault_pki => ("c-pki", kinds::vault_pki),
    http_api_key => ("c-http", kinds::http_api_key),
}
