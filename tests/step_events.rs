//! The engine's step-level events ([`Event::StepBegun`], [`Event::StepEnded`],
//! [`Event::Verified`], [`Event::ConsumerPushed`]) for a real rotation and retirement
//! of a PostgreSQL role with a Kubernetes Secret consumer, recorded in order by a sink.
//! rotor's own records are kept in memory ([`MemoryStore`]); the canonical copy is in
//! the stack's Vault. Needs `dev/stack up`.

mod common;

use std::sync::{Arc, Mutex};

use common::kinds::{self, KindFixture, KindOptions};
use rotor::consumers::Consumers;
use rotor::engine::{
    Asker, Engine, EngineConfig, RetireRequest, RetireState, RotationRequest, Status,
};
use rotor::evidence::{Event, EvidenceError, Sink, Subject};
use rotor::state::memory::MemoryStore;

/// Every event, as one line each, in the order emitted.
#[derive(Default)]
struct Recording(Mutex<Vec<String>>);

impl Sink for Recording {
    fn emit(&self, event: &Event<'_>) -> Result<(), EvidenceError> {
        let what = |s: &Subject<'_>| s.what();
        let line = match event {
            Event::StepBegun { subject, step, .. } => format!("{} begun {step}", what(subject)),
            Event::StepEnded {
                subject,
                step,
                outcome,
                duration_ms,
            } => {
                assert!(duration_ms.is_finite() && *duration_ms >= 0.0);
                format!("{} ended {step} {outcome:?}", what(subject))
            }
            Event::Verified { subject, check } => format!(
                "{} verified {} passed={}",
                what(subject),
                check.check,
                check.passed
            ),
            Event::ConsumerPushed { consumer, .. } => format!("consumer {}", consumer.state),
            Event::ConsumerPending { consumer, .. } => format!("consumer {}", consumer.state),
            Event::RotationRequested { .. } => "rotation requested".into(),
            Event::RunEnded { .. } => "run ended".into(),
            Event::PolicyRetired { .. } => "policy retired".into(),
            Event::PolicyEnabled { .. } => "policy enabled".into(),
        };
        self.0.lock().unwrap().push(line);
        Ok(())
    }
}

impl Recording {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn a_rotation_and_a_retirement_report_each_step_verification_and_consumer() {
    let fx = KindFixture::new("stepev", KindOptions::default(), |n, v| async move {
        kinds::postgres_single(&n, &v).await
    })
    .await;
    let sink = Arc::new(Recording::default());
    let engine = Engine::with_store(
        fx.vault.clone(),
        Arc::new(MemoryStore::new()),
        EngineConfig::default(),
        Consumers::with_kube_client(common::rotor_kube_client(&fx.kube).await),
    )
    .await
    .expect("engine")
    .with_evidence(sink.clone());

    let outcome = engine
        .rotate(
            &fx.policy,
            RotationRequest {
                asker: Asker::named("test"),
                reason: Some("step events".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rotate");
    let rotation = outcome.rotation.expect("a rotation");
    assert_eq!(rotation.status, Status::Completed, "{:?}", rotation.error);
    let mut want = vec!["rotation requested".to_owned()];
    for step in rotor::engine::Step::FORWARD {
        want.push(format!("rotation begun {step}"));
        match step.as_str() {
            "propagated" => want.push("consumer verified".into()),
            "verified" => want.push("rotation verified old_credential_rejected passed=true".into()),
            _ => {}
        }
        let outcome = if step.as_str() == "revoked" {
            "Skipped"
        } else {
            "Ok"
        };
        want.push(format!("rotation ended {step} {outcome}"));
    }
    want.push("run ended".into());
    assert_eq!(sink.take(), want);

    let retirement = engine
        .retire(
            &fx.policy,
            RetireRequest {
                asker: Asker::named("test"),
                reason: Some("step events".into()),
                ..Default::default()
            },
        )
        .await
        .expect("retire");
    assert_eq!(
        retirement.state,
        RetireState::Retired,
        "{:?}",
        retirement.error
    );
    assert_eq!(
        sink.take(),
        [
            "retirement begun disabled",
            "retirement ended disabled Ok",
            "retirement begun consumers_removed",
            "retirement ended consumers_removed Ok",
            "retirement begun marked",
            "retirement ended marked Ok",
            "retirement begun verified",
            "retirement verified retired_credential_rejected passed=true",
            "retirement ended verified Ok",
            "policy retired",
        ]
    );
}
