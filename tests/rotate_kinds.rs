//! Every credential kind rotated end to end through the `rotor` binary against its
//! real system: the new credential works, the old one is refused with the target's
//! own authentication error (recorded in the report), the Vault copy holds the
//! documented keys, and the Kubernetes Secret matches Vault. Strategy behaviour:
//! `overlap` keeps the old credential alive for its grace period and no longer;
//! `alternating` never fails a client that re-reads Vault. Needs `dev/stack up`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::kinds::{self, KindFixture, KindOptions, report, text};
use rotor::credentials::AuthOutcome;

/// The common acceptance: one rotation, then every promise checked.
async fn rotate_and_prove(fx: &KindFixture) {
    let (before, v1) = fx.current().await;
    fx.assert_accepted(&before, "the seeded credential").await;

    let out = fx.rotate_cmd().output().expect("run rotor");
    assert!(out.status.success(), "rotor rotate failed:\n{}", text(&out));
    let report = report(&out);
    let rotation = &report["rotation"];
    assert_eq!(rotation["status"], "completed", "{report:#}");

    let (after, v2) = fx.current().await;
    assert_eq!(v2, v1 + 1, "one new canonical version");
    assert!(!after.same_values(&before));
    fx.assert_accepted(&after, "the new credential").await;
    fx.assert_rejected(&before, "the old credential").await;
    fx.assert_consistent().await;

    let check = &rotation["verification"][0];
    assert_eq!(check["check"], "old_credential_rejected", "{rotation:#}");
    assert_eq!(check["passed"], true);
    let evidence = check["evidence"].as_str().expect("evidence");
    assert!(
        evidence.starts_with("rejected: ") && evidence.contains(fx.rejected_code),
        "the target's own refusal is recorded: {evidence}"
    );
    let secrets = fx.all_secrets().await;
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&text(&out), &refs);
}

#[tokio::test]
async fn postgres_single() {
    let fx = KindFixture::new("k-pg", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    rotate_and_prove(&fx).await;
}

#[tokio::test]
async fn postgres_alternating() {
    let fx = KindFixture::new("k-pgalt", KindOptions::default(), |n, v| async move {
        kinds::postgres_alternating(&n, &v).await
    })
    .await;
    let (before, _) = fx.current().await;
    rotate_and_prove(&fx).await;
    let (after, _) = fx.current().await;
    assert_ne!(
        after.expose("username"),
        before.expose("username"),
        "the idle account became current"
    );
    // A second rotation switches back to the first account.
    rotate_and_prove(&fx).await;
    let (third, _) = fx.current().await;
    assert_eq!(third.expose("username"), before.expose("username"));
}

#[tokio::test]
async fn vault_database_static_role() {
    let fx = KindFixture::new("k-vdb", KindOptions::default(), |n, v| async move {
        kinds::vault_database(&n, &v).await
    })
    .await;
    rotate_and_prove(&fx).await;
}

/// Alternating with a grace period: a client holding the old credential keeps working
/// until the old account is reset; a client that re-reads Vault before every login
/// never fails; after the grace period the old account's old password is refused.
#[tokio::test]
async fn alternating_has_zero_failed_logins_for_clients_that_reread_vault() {
    let fx = Arc::new(
        KindFixture::new(
            "k-pgzero",
            KindOptions {
                grace: Some("2s"),
                ..KindOptions::default()
            },
            |n, v| async move { kinds::postgres_alternating(&n, &v).await },
        )
        .await,
    );
    let (old, _) = fx.current().await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (fx, stop, ok, failed) = (fx.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (value, _) = fx.current().await;
                match fx.probe(&value).await {
                    AuthOutcome::Accepted => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };

    let out = fx.rotate_cmd().output().expect("run rotor");
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&out);
    assert_eq!(r["rotation"]["status"], "open", "waiting for grace: {r:#}");
    assert!(r["rotation"]["revoke_after"].is_string());
    // During the grace period both accounts work.
    fx.assert_accepted(&old, "the old account during grace")
        .await;
    let (new, _) = fx.current().await;
    fx.assert_accepted(&new, "the new account").await;

    let out = fx
        .resume_cmd()
        .args(["--wait-grace", "1m"])
        .output()
        .expect("run rotor resume");
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&out);
    assert_eq!(r["resumed"][0]["status"], "completed", "{r:#}");

    stop.store(true, Ordering::SeqCst);
    client.await.expect("client task");
    assert!(ok.load(Ordering::SeqCst) > 0, "the client ran");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a client that re-reads Vault never fails to log in"
    );
    fx.assert_rejected(&old, "the old account's old password after grace")
        .await;
    fx.assert_consistent().await;
}
