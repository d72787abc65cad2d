//! The scheduler's decisions: each policy's next due time, the queue (compromise
//! first), leadership changes, and what may run next.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::info;

use super::{Entry, Job, PolicyState, Queued, State};
use crate::engine::{Asker, RotationRequest, Trigger};
use crate::policy::ValidatedPolicy;
use crate::schedule;
use crate::schedule::DueInputs;

impl Entry {
    pub(super) fn new(policy: Arc<ValidatedPolicy>, now: DateTime<Utc>) -> Entry {
        Entry {
            policy,
            running: false,
            queued: false,
            cron_after: now,
            secret_created: None,
            renewal_at: None,
            next_due: None,
            failures: 0,
            outages: 0,
            backoff_until: None,
            waiting_until: None,
            last: None,
            state: PolicyState::Idle,
            error: None,
            pending: Vec::new(),
            handover: false,
            quarantined: None,
            retired: None,
            resume_open: false,
        }
    }

    pub(super) fn recompute(&mut self, now: DateTime<Utc>) {
        self.next_due = schedule::next_due(
            &self.policy,
            &DueInputs {
                cron_after: Some(self.cron_after),
                secret_created: self.secret_created,
                renewal_at: self.renewal_at,
            },
            now,
        );
    }

    /// The state the API shows: a retirement or enable under way, else retired,
    /// quarantined or backing off before what the entry last came to.
    pub(super) fn shown_state(&self, now: DateTime<Utc>) -> PolicyState {
        if self.running && matches!(self.state, PolicyState::Retiring | PolicyState::Enabling) {
            self.state
        } else if self.retired.is_some() {
            PolicyState::Retired
        } else if self.quarantined.is_some() {
            PolicyState::Quarantined
        } else if self.backoff_until.is_some_and(|b| b > now) && !self.running {
            PolicyState::Backoff
        } else {
            self.state
        }
    }

    /// When the entry wants the loop's attention next.
    pub(super) fn wake_at(&self) -> Option<DateTime<Utc>> {
        if self.running || self.queued || self.quarantined.is_some() || self.retired.is_some() {
            return None;
        }
        if let Some(w) = self.waiting_until {
            return Some(w);
        }
        if self.resume_open {
            return Some(self.backoff_until.unwrap_or(DateTime::<Utc>::MIN_UTC));
        }
        let due = self.next_due.map(|d| d.at)?;
        Some(self.backoff_until.map_or(due, |b| b.max(due)))
    }
}

impl State {
    pub(super) fn enqueue(
        &mut self,
        policy: String,
        job: Job,
        priority: u8,
        fire: Option<DateTime<Utc>>,
    ) {
        if let Some(e) = self.entries.get_mut(&policy) {
            e.queued = true;
            if matches!(job, Job::Rotate(_)) && !e.running {
                e.state = PolicyState::Queued;
            }
        }
        let item = Queued {
            policy,
            job,
            priority,
            fire,
        };
        // Stable by priority: behind everything of the same or higher priority.
        let pos = self
            .queue
            .iter()
            .position(|q| q.priority > priority)
            .unwrap_or(self.queue.len());
        self.queue.insert(pos, item);
    }

    /// Acts on a change of leadership (leader election). A follower starts nothing and
    /// drops its queue: the leader schedules, and a stale queued rotation must not run
    /// if leadership comes back. A new leader resumes every policy's open rotation from
    /// the journal (how a half-done rotation of a lost leader is finished) and re-reads
    /// its inputs.
    pub(super) fn follow_leadership(&mut self, leader: bool) {
        if leader == self.leading {
            return;
        }
        self.leading = leader;
        if leader {
            let names: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, e)| !e.running && !e.queued)
                .map(|(name, _)| name.clone())
                .collect();
            for e in self.entries.values_mut() {
                e.handover = true;
            }
            info!(
                policies = names.len(),
                "Leader: resuming open rotations from the journal."
            );
            for name in names {
                self.enqueue(name, Job::Sync { end_grace: false }, 2, None);
            }
        } else {
            let dropped = self.queue.len();
            for q in self.queue.drain(..) {
                if let Some(e) = self.entries.get_mut(&q.policy) {
                    e.queued = false;
                    if e.state == PolicyState::Queued {
                        e.state = PolicyState::Idle;
                    }
                }
            }
            info!(
                dropped,
                "Not the leader: no rotation starts here until this replica leads."
            );
        }
    }

    /// Queues every policy whose time has come.
    pub(super) fn enqueue_due(&mut self, now: DateTime<Utc>) {
        if self.stopping || !self.leading {
            return;
        }
        let mut due = Vec::new();
        for (name, e) in &self.entries {
            if e.running || e.queued || e.quarantined.is_some() || e.retired.is_some() {
                continue;
            }
            if e.waiting_until.is_some_and(|w| w <= now) {
                due.push((name.clone(), Job::Sync { end_grace: false }, None));
                continue;
            }
            if e.waiting_until.is_some() {
                continue;
            }
            if e.resume_open {
                if e.backoff_until.is_none_or(|b| b <= now) {
                    due.push((name.clone(), Job::Sync { end_grace: false }, None));
                }
                continue;
            }
            if let Some(d) = e.next_due
                && d.at <= now
                && e.backoff_until.is_none_or(|b| b <= now)
            {
                due.push((
                    name.clone(),
                    Job::Rotate(Box::new(RotationRequest {
                        trigger: Trigger::Schedule,
                        asker: Asker::scheduler(),
                        reason: Some(format!("scheduled ({})", d.reason.as_str())),
                        ticket: None,
                        ..Default::default()
                    })),
                    d.fire,
                ));
            }
        }
        for (name, job, fire) in due {
            self.enqueue(name, job, 2, fire);
        }
    }

    /// The first queued job whose policy is not running.
    pub(super) fn pop_runnable(&mut self) -> Option<Queued> {
        if self.stopping || !self.leading {
            return None;
        }
        let i = self
            .queue
            .iter()
            .position(|q| self.entries.get(&q.policy).is_some_and(|e| !e.running))?;
        self.queue.remove(i)
    }

    pub(super) fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.leading {
            // A follower waits for `set_leader`, which wakes the loop.
            return None;
        }
        self.entries
            .values()
            .filter_map(Entry::wake_at)
            .min()
            .map(|t| t.max(now))
    }
}
