//! "Old credential rejected" is only ever proven by an authentication error from the
//! target. When the target cannot be reached at verification time, the rotation must
//! fail verification, never pass it. Needs `dev/stack up`.

mod common;

use common::{Fixture, Options, assert_no_leak, text};
use rotor_testkit::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_fails_verification_instead_of_passing() {
    let s = rotor_testkit::stack();
    let upstream = format!("{}:{}", s.pg.host, s.pg.port)
        .parse()
        .expect("PostgreSQL's address");
    let proxy = Proxy::start(upstream);
    let fx = Fixture::new(
        "unreach",
        Options {
            pg_port: Some(proxy.addr.port()),
            ..Options::default()
        },
    )
    .await;

    // Everything up to and including propagation happens, then the process dies just
    // before verification (a probe-only verify is journaled with the next write, so
    // the journal says propagation is where to resume).
    let crashed = fx
        .rotate_cmd()
        .env("ROTOR_FAILPOINT", "verified:begun")
        .output()
        .expect("run rotor");
    assert!(!crashed.status.success(), "{}", text(&crashed));

    // The target becomes unreachable before verification runs.
    proxy.cut();
    let out = fx
        .rotor()
        .args(["-o", "json", "resume", "--policies"])
        .arg(fx.policy_dir())
        .arg(&fx.name)
        .output()
        .expect("run rotor resume");
    assert!(
        !out.status.success(),
        "an unverifiable rotation must not succeed:\n{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rotation = &report["resumed"][0];
    assert_eq!(rotation["status"], "failed", "{report:#}");
    let check = &rotation["verification"][0];
    assert_eq!(check["check"], "old_credential_rejected");
    assert_eq!(check["passed"], false);
    assert!(
        check["evidence"]
            .as_str()
            .expect("evidence")
            .starts_with("inconclusive"),
        "{check}"
    );
    assert!(
        rotation["error"]
            .as_str()
            .expect("error")
            .contains("could not prove the old credential is rejected"),
        "{rotation:#}"
    );
    assert_no_leak(&out, &fx.all_passwords().await);
}
