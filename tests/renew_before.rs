//! Certificates are renewed by `renewBefore`: a certificate whose expiry is closer
//! than `renewBefore` is due, a scheduled rotation replaces it with one that is not,
//! and the old one ends up on the CRL. Needs `dev/stack up` (OpenBao).

mod common;

use common::kinds::{self, KindFixture, KindOptions};
use rotor::engine::{Asker, Engine, EngineConfig, RotationRequest, Status, Trigger};
use rotor::schedule::{self, DueReason};

#[tokio::test]
async fn a_certificate_near_expiry_is_due_and_renewed() {
    // The seeded certificate lives 1 h; the policy renews 2 h before expiry and
    // issues certificates for 24 h.
    let fx = KindFixture::new("renew", KindOptions::default(), |n, v| async move {
        kinds::vault_pki_with(&n, &v, "1h", "    renewBefore: 2h\n").await
    })
    .await;
    let (old, _) = fx.current().await;
    let now = chrono::Utc::now();
    let due_at = schedule::renewal_due(&fx.policy, &old).expect("a renewal time");
    assert!(
        due_at <= now,
        "1 h left is inside renewBefore 2 h: {due_at}"
    );
    assert!(matches!(
        schedule::due_now(&fx.policy, &old, None, now),
        Some(DueReason::RenewBefore { .. })
    ));

    let engine = Engine::new(
        fx.vault.clone(),
        EngineConfig::default(),
        rotor::consumers::Consumers::with_kube_client(common::rotor_kube_client(&fx.kube).await),
    )
    .await
    .expect("engine");
    let outcome = engine
        .rotate(
            &fx.policy,
            RotationRequest {
                trigger: Trigger::Schedule,
                asker: Asker::named("scheduler"),
                reason: Some("renewBefore".into()),
                ticket: None,
                ..Default::default()
            },
        )
        .await
        .expect("rotation");
    let rotation = outcome.rotation.expect("a rotation ran");
    assert_eq!(rotation.status, Status::Completed, "{rotation:#?}");

    let (new, _) = fx.current().await;
    let next = schedule::renewal_due(&fx.policy, &new).expect("a renewal time");
    let hours = (next - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!(
        (21.0..=22.1).contains(&hours),
        "a 24 h certificate is due 2 h before expiry, {hours:.2} h from now"
    );
    assert!(schedule::due_now(&fx.policy, &new, None, chrono::Utc::now()).is_none());
    fx.assert_rejected(&old, "the renewed certificate's predecessor")
        .await;
    fx.assert_consistent().await;
}

#[tokio::test]
async fn a_fresh_certificate_is_not_due() {
    let fx = KindFixture::new("renew-no", KindOptions::default(), |n, v| async move {
        kinds::vault_pki_with(&n, &v, "24h", "    renewBefore: 2h\n").await
    })
    .await;
    let (current, _) = fx.current().await;
    assert!(schedule::due_now(&fx.policy, &current, None, chrono::Utc::now()).is_none());
}
