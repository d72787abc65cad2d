//! A RotationPolicy's `status`: what the agent last saw and did, for `kubectl get`
//! and `kubectl describe`. Pure data and setters; the agent writes it through the
//! status subresource.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `status` of a RotationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary for `kubectl get` (`Ready`, `Invalid`, `Rotating`,
    /// `Quarantined`, `PendingApproval`, `Retired`, `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The conditions, at most one of each type (`Valid`, `Ready`, `Rotating`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The last rotation that finished (or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<LastRotation>,
    /// When the next scheduled rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub next_rotation: Option<DateTime<Utc>>,
    /// The Vault KV version holding the current credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// Since when the current credential has been current (its age is now minus this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub current_since: Option<DateTime<Utc>>,
}

/// The condition types a RotationPolicy reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr,
)]
pub enum ConditionType {
    /// The spec passed the same validation as `rotor validate`.
    Valid,
    /// The policy is loaded and its credential is current.
    Ready,
    /// A rotation is running.
    Rotating,
    /// The policy is quarantined after failures.
    Quarantined,
    /// An on-demand rotation waits for approval.
    PendingApproval,
    /// The credential was retired.
    Retired,
    /// The target refused the old credential after the last rotation.
    OldCredentialRejected,
}

impl ConditionType {
    /// The name written in `conditions[].type`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `True`, `False` or `Unknown`, as Kubernetes conditions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// One entry of `status.conditions` (the `metav1.Condition` shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which condition.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase reason (`Validated`, `SpecInvalid`, `RotationFailed`, …).
    pub reason: String,
    /// A human message (for `Valid=False`: every problem with its `spec.…` path).
    pub message: String,
    /// When `status` last changed.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: DateTime<Utc>,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `status.lastRotation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRotation {
    /// The rotation id (as in `rotor status` and the audit log).
    pub id: String,
    /// What started it (`schedule`, `on-demand`, `max-age`, …).
    pub trigger: String,
    /// How it ended (`succeeded`, `failed`, `rolled-back`, …).
    pub result: String,
    /// When it ended.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub time: DateTime<Utc>,
    /// Whether the target refused the old credential afterwards; absent when not
    /// checked (`verify.oldRejected: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_credential_rejected: Option<bool>,
}

impl RotationPolicyStatus {
    /// The condition of type `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets condition `type_`. Its `lastTransitionTime` stays as it was unless
    /// `status` changes (or the condition is new), as Kubernetes conditions do.
    /// Returns whether anything changed (so the caller can skip a no-op update).
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> bool {
        let new = Condition {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now,
            observed_generation: generation,
        };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                self.conditions.push(new);
                true
            }
            Some(old) => {
                let last_transition_time = if old.status == status {
                    old.last_transition_time
                } else {
                    now
                };
                let new = Condition {
                    last_transition_time,
                    ..new
                };
                let changed = *old != new;
                *old = new;
                changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap();
        let mut s = RotationPolicyStatus::default();
        assert!(s.set_condition(
            ConditionType::Ready,
            true.into(),
            "Rotated",
            "ok",
            Some(1),
            t0
        ));
        assert!(!s.set_condition(
            ConditionType::Ready,
            true.into(),
            "Rotated",
            "ok",
            Some(1),
            t1
        ));
        assert!(s.set_condition(
            ConditionType::Ready,
            true.into(),
            "Current",
            "fine",
            Some(2),
            t1
        ));
        let ready = s.condition(ConditionType::Ready).unwrap();
        assert_eq!(ready.last_transition_time, t0);
        assert_eq!(ready.reason, "Current");
        assert!(s.set_condition(
            ConditionType::Ready,
            false.into(),
            "Failed",
            "no",
            Some(2),
            t1
        ));
        assert_eq!(
            s.condition(ConditionType::Ready)
                .unwrap()
                .last_transition_time,
            t1
        );
        assert_eq!(s.conditions.len(), 1);
    }

    #[test]
    fn status_serializes_in_kubernetes_shape() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let mut s = RotationPolicyStatus {
            observed_generation: Some(3),
            ..Default::default()
        };
        s.set_condition(
            ConditionType::OldCredentialRejected,
            true.into(),
            "Verified",
            "",
            Some(3),
            t0,
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["observedGeneration"], 3);
        assert_eq!(json["conditions"][0]["type"], "OldCredentialRejected");
        assert_eq!(json["conditions"][0]["status"], "True");
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:16:40Z"
        );
        let back: RotationPolicyStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
