//! `spec.onDemand.approval` and `spec.notify`.

use super::{Validator, one_of};
use crate::policy::duration::APPROVAL_TTL_BOUND;
use crate::policy::model::*;
use crate::policy::raw::*;
use crate::policy::yaml::Located;

/// Most approvals a policy may require.
const MAX_APPROVALS: u32 = 100;

/// An API identity or group name as the agent's auth config accepts it.
fn is_identity_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

impl Validator {
    /// `spec.onDemand.approval`.
    pub(super) fn approval(&mut self, a: &Located<RawApproval>) -> Option<ApprovalSpec> {
        let raw = &a.value;
        let mut ok = true;
        let required = match &raw.required {
            None => 1,
            Some(r) => match u32::try_from(r.value.0) {
                Ok(n) if (1..=MAX_APPROVALS).contains(&n) => n,
                _ => {
                    self.at(
                        r,
                        format!(
                            "found {}, expected a number of approvals from 1 to {MAX_APPROVALS}",
                            r.value.0
                        ),
                    );
                    ok = false;
                    1
                }
            },
        };
        let mut approvers: Vec<Approver> = Vec::new();
        match &raw.approvers {
            None => {
                self.at(
                    a,
                    "found no `approvers`, expected a non-empty list of identity names or `group:NAME`",
                );
                ok = false;
            }
            Some(list) if list.value.is_empty() => {
                self.at(
                    list,
                    "found an empty list, expected at least one identity name or `group:NAME`",
                );
                ok = false;
            }
            Some(list) => {
                for entry in &list.value {
                    let text = entry.value.trim();
                    let approver = match text.strip_prefix("group:") {
                        Some(group) if is_identity_name(group) => Approver::Group(group.to_owned()),
                        None if is_identity_name(text) => Approver::Identity(text.to_owned()),
                        _ => {
                            self.found(
                                entry,
                                text,
                                "an API identity name or `group:NAME` (letters, digits, `-`, `_`, `.`, `:`; up to 128 characters)",
                            );
                            ok = false;
                            continue;
                        }
                    };
                    if approvers.contains(&approver) {
                        self.at(
                            entry,
                            format!("found `{approver}` twice, expected each approver once"),
                        );
                        ok = false;
                    } else {
                        approvers.push(approver);
                    }
                }
            }
        }
        let identities = approvers
            .iter()
            .filter(|a| matches!(a, Approver::Identity(_)))
            .count();
        let groups = approvers.len() - identities;
        if ok
            && groups == 0
            && u32::try_from(identities).is_ok_and(|n| required > n)
            && let Some(r) = &raw.required
        {
            self.at(
                r,
                format!(
                    "found {required}, expected at most {identities} (the number of identities listed in `approvers`; list more, or a `group:NAME`)"
                ),
            );
            ok = false;
        }
        let ttl = match &raw.ttl {
            None => None,
            Some(t) => match self.duration(t, APPROVAL_TTL_BOUND) {
                Some(d) if d.is_zero() => {
                    self.at(t, "found a ttl of 0, expected a positive duration");
                    ok = false;
                    None
                }
                Some(d) => Some(d),
                None => {
                    ok = false;
                    None
                }
            },
        };
        ok.then_some(ApprovalSpec {
            required,
            approvers,
            ttl,
        })
    }

    pub(super) fn notify_target(&mut self, n: &Located<RawNotify>) -> Option<NotifyTarget> {
        let raw = &n.value;
        let url = self.http_url(&raw.url, &["https", "http"]);
        let secret_from = self.single_reference(&raw.secret_from, "the signing key");
        let events = match &raw.events {
            None => Some(NotifyEvent::ALL.to_vec()),
            Some(list) if list.value.is_empty() => {
                let names: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
                self.at(
                    list,
                    format!(
                        "found no events, expected at least one of {} (leave `events` out for all)",
                        one_of(&names)
                    ),
                );
                None
            }
            Some(list) => {
                let mut events = Vec::new();
                for e in &list.value {
                    let event = e.value;
                    if !events.contains(&event) {
                        events.push(event);
                    }
                }
                Some(events)
            }
        };
        Some(NotifyTarget {
            url: url?,
            secret_from: secret_from?,
            events: events?,
        })
    }
}
