use serde_json::Value;

use super::*;

/// The derived names are the serde names, so what is printed and labelled is what the
/// records hold.
fn same_name<T: Serialize + Copy + Into<&'static str> + fmt::Display>(values: &[T]) {
    for v in values {
        let Value::String(serde) = serde_json::to_value(v).expect("encode") else {
            panic!("not a string");
        };
        let name: &'static str = (*v).into();
        assert_eq!(name, serde);
        assert_eq!(v.to_string(), serde);
    }
}

#[test]
fn every_name_is_its_serde_name() {
    let mut steps = vec![Step::Planned];
    steps.extend(Step::FORWARD);
    same_name(&steps);
    use Status::{Completed, Open, RolledBack, RollingBack};
    same_name(&[Open, RollingBack, Completed, RolledBack, Status::Failed]);
    same_name(&[Trigger::Schedule, Trigger::OnDemand, Trigger::Compromise]);
    use ConsumerState::{Pending, Pushed};
    same_name(&[ConsumerState::Verified, Pushed, Pending]);
    same_name(&RetireStep::ALL);
    use RetireState::{Enabled, Enabling, Retired, Retiring};
    same_name(&[Retiring, Retired, RetireState::Failed, Enabling, Enabled]);
    use RemovalState::{Absent, Removed};
    same_name(&[Removed, Absent, RemovalState::Failed]);
    use StepOutcome::{Begun, Skipped};
    same_name(&[Begun, StepOutcome::Ok, Skipped, StepOutcome::Failed]);
    use Check::{
        OldCredentialRejected, OldCredentialRestored, OtherAccountRejected,
        RetiredCredentialRejected,
    };
    same_name(&[
        OldCredentialRejected,
        OldCredentialRestored,
        RetiredCredentialRejected,
        OtherAccountRejected,
    ]);
    assert_eq!(Status::RollingBack.as_str(), "rolling_back");
    assert_eq!(Trigger::OnDemand.as_str(), "on_demand");
    assert_eq!(RetireStep::ConsumersRemoved.as_str(), "consumers_removed");
    assert_eq!(
        Check::OldCredentialRejected.as_str(),
        "old_credential_rejected"
    );
}
