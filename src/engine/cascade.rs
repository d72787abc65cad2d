//! `spec.cascade`: once a rotation of a policy promoted, its dependents rotate under
//! the same trigger (a compromise stays a compromise), each reason naming the
//! rotation that caused it. The rule lives here once: the agent queues the
//! dependents' requests ([`dependent`]), the CLI runs the whole cascade in order
//! ([`Engine::cascade`]).

use std::collections::{BTreeSet, VecDeque};

use super::{Engine, RotationId, RotationOutcome, RotationRequest};
use crate::policy::{PolicySet, ValidatedPolicy};

/// The request a dependent of `parent` rotates under: `request`'s, with its reason
/// naming the rotation that caused it.
pub fn dependent(
    parent: &str,
    parent_rotation: &str,
    request: &RotationRequest,
) -> RotationRequest {
    let mut req = request.clone();
    req.reason = Some(format!(
        "cascade from {parent} (rotation {parent_rotation}): {}",
        request.reason.as_deref().unwrap_or("")
    ));
    req
}

/// One dependent's result in a cascade: its name, and its outcome or why it did not run.
pub type Cascaded = (String, Result<RotationOutcome, String>);

impl Engine {
    /// Rotates the dependents of `policy` after `outcome` (its rotation under
    /// `request`), breadth first, each policy once, following the dependents' own
    /// `cascade` after each that promoted. Nothing runs when `outcome` did not
    /// succeed; a dependent missing from `set` is skipped.
    pub async fn cascade(
        &self,
        set: &PolicySet,
        policy: &ValidatedPolicy,
        outcome: &RotationOutcome,
        request: &RotationRequest,
    ) -> Vec<Cascaded> {
        let mut done: Vec<Cascaded> = Vec::new();
        let Some(parent) = outcome.rotation.as_ref().filter(|_| outcome.succeeded()) else {
            return done;
        };
        let mut queue: VecDeque<(String, String, RotationId)> = policy
            .spec
            .cascade
            .iter()
            .map(|d| (d.clone(), policy.name.clone(), parent.rotation_id.clone()))
            .collect();
        let mut seen = BTreeSet::from([policy.name.clone()]);
        while let Some((dep, from, from_id)) = queue.pop_front() {
            if !seen.insert(dep.clone()) {
                continue;
            }
            let Some(p) = set.get(&dep) else { continue };
            let result = self
                .rotate(p, dependent(&from, &from_id, request))
                .await
                .map_err(|e| crate::error_chain(&e));
            if let Ok(o) = &result
                && o.succeeded()
                && let Some(r) = &o.rotation
            {
                queue.extend(
                    p.spec
                        .cascade
                        .iter()
                        .map(|d| (d.clone(), dep.clone(), r.rotation_id.clone())),
                );
            }
            done.push((dep, result));
        }
        done
    }
}
