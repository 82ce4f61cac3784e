//! The `Failing` and `Recovered` Events of a hook's `Delivering` condition,
//! paced: at most one `Failing`/`Recovered` pair per hook every
//! [`PAIR_INTERVAL`] (docs/src/tenant-bounds.md#api-writes: a receiver
//! that flips between success and failure must not cost an Event per
//! flip). A `Failing` held
//! back by the interval is published at a later reconcile once the interval
//! has passed, if the hook is still failing then; a `Recovered` follows only
//! a published `Failing`, so the pairs on a hook always read in order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::controller::status::{EventNote, Severity};
use crate::{contract::conditions::delivering, contract::resource::OverBudget};

/// At most one `Failing`/`Recovered` pair per hook in this time.
pub const PAIR_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Reason of the Event that marks a hook's recovery.
pub const RECOVERED: &str = "Recovered";

/// Reason of the Warning that a hook's events were not kept at its org's
/// budget of bytes in Redis.
pub const OVER_BUDGET: &str = "OrgOverBudget";

/// What has been published about one hook.
#[derive(Clone, Debug, Default, PartialEq)]
struct Published {
    /// The last Delivering Event published said `Failing`.
    failing: bool,
    /// When the last `Failing` was published (None: not by this process).
    failing_at: Option<Instant>,
    /// Since when the hook has been failing, for the `Recovered` note.
    failing_since: String,
}

/// The `overBudget.events` count last seen of a hook, and when its last
/// `OrgOverBudget` Event was published.
type OverBudgetSeen = (i64, Option<Instant>);

/// The Delivering Events published per hook UID (one small entry per hook
/// in the controller's cache, removed with the hook).
#[derive(Clone, Default)]
pub struct DeliveringEvents {
    hooks: Arc<Mutex<HashMap<String, Published>>>,
    /// Per hook UID: the `overBudget.events` count last seen, and when an
    /// `OrgOverBudget` Event was last published.
    over_budget: Arc<Mutex<HashMap<String, OverBudgetSeen>>>,
}

impl DeliveringEvents {
    /// The Event, if any, to publish now for the hook `uid` whose
    /// `Delivering` condition went from `before` to `after`.
    pub fn note(
        &self,
        uid: &str,
        before: Option<&Condition>,
        after: Option<&Condition>,
        now: Instant,
    ) -> Option<EventNote> {
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        // A hook first seen (or after a restart): what its status already
        // shows counts as published, so a restart repeats nothing.
        let state = hooks.entry(uid.to_string()).or_insert_with(|| Published {
            failing: is_failing(before),
            failing_at: None,
            failing_since: before.map(since).unwrap_or_default(),
        });
        let (next, note) = decide(state, after, now);
        *state = next;
        note
    }

    /// The `OrgOverBudget` Warning, if any, to publish now for hook `uid`
    /// whose `status.delivery.overBudget` is `over` and whose `Delivering`
    /// message (`message`) says so: when its count grew, at most one per
    /// [`PAIR_INTERVAL`]. A count first seen (a restart) counts as
    /// published.
    pub fn over_budget_note(
        &self,
        uid: &str,
        over: Option<&OverBudget>,
        message: &str,
        now: Instant,
    ) -> Option<EventNote> {
        let over = over?;
        let mut seen = self.over_budget.lock().unwrap_or_else(|e| e.into_inner());
        let Some((count, at)) = seen.get_mut(uid) else {
            seen.insert(uid.to_string(), (over.events, None));
            return None;
        };
        let window_open = at.is_none_or(|at| now.saturating_duration_since(at) >= PAIR_INTERVAL);
        if over.events <= *count || !window_open {
            return None;
        }
        *count = over.events;
        *at = Some(now);
        Some(EventNote {
            severity: Severity::Warning,
            reason: OVER_BUDGET.into(),
            note: message.to_string(),
        })
    }

    /// Forgets a deleted hook.
    pub fn forget(&self, uid: &str) {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.over_budget.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

fn is_failing(condition: Option<&Condition>) -> bool {
    condition.is_some_and(|c| c.status == "False")
}

fn since(condition: &Condition) -> String {
    condition.last_transition_time.0.to_string()
}

/// The pure rule: the state after `after`, and the Event to publish.
fn decide(state: &Published, after: Option<&Condition>, now: Instant) -> (Published, Option<EventNote>) {
    match after {
        Some(c) if is_failing(Some(c)) => {
            let window_open = state
                .failing_at
                .is_none_or(|at| now.saturating_duration_since(at) >= PAIR_INTERVAL);
            if state.failing || !window_open {
                return (state.clone(), None);
            }
            let next = Published {
                failing: true,
                failing_at: Some(now),
                failing_since: since(c),
            };
            let note = EventNote {
                severity: Severity::Warning,
                reason: delivering::FAILING.into(),
                note: c.message.clone(),
            };
            (next, Some(note))
        }
        Some(_) if state.failing => {
            let note = EventNote {
                severity: Severity::Normal,
                reason: RECOVERED.into(),
                note: format!(
                    "a request to the receiver succeeded; deliveries had been failing since {}",
                    state.failing_since
                ),
            };
            let next = Published {
                failing: false,
                ..state.clone()
            };
            (next, Some(note))
        }
        _ => (state.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn condition(status: &str, message: &str) -> Condition {
        Condition {
            type_: "Delivering".into(),
            status: status.into(),
            reason: if status == "False" { "Failing" } else { "Succeeding" }.into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        }
    }

    fn reasons(events: &[Option<EventNote>]) -> Vec<String> {
        events.iter().flatten().map(|e| e.reason.clone()).collect()
    }

    #[test]
    fn the_turn_to_failing_and_the_recovery_are_marked_once_each() {
        let events = DeliveringEvents::default();
        let (ok, failing) = (condition("True", ""), condition("False", "3 attempts failed in a row"));
        let start = Instant::now();
        let notes = [
            events.note("u", Some(&ok), Some(&failing), start),
            events.note("u", Some(&failing), Some(&failing), start + Duration::from_secs(1)),
            events.note("u", Some(&failing), Some(&ok), start + Duration::from_secs(2)),
            events.note("u", Some(&ok), Some(&ok), start + Duration::from_secs(3)),
        ];
        assert_eq!(reasons(&notes), ["Failing", "Recovered"]);
        let failing_note = notes[0].as_ref().unwrap();
        assert_eq!(
            (failing_note.severity, failing_note.note.as_str()),
            (Severity::Warning, "3 attempts failed in a row")
        );
        assert_eq!(notes[2].as_ref().unwrap().severity, Severity::Normal);
    }

    #[test]
    fn a_flapping_hook_gets_one_pair_per_interval_and_a_late_failing_once_it_passes() {
        let events = DeliveringEvents::default();
        let (ok, failing) = (condition("True", ""), condition("False", "HTTP 500"));
        let start = Instant::now();
        let mut notes = Vec::new();
        // A flip every 15 s (one status write per 15 s) for 4 minutes.
        for i in 0..16u64 {
            let (before, after) = if i % 2 == 0 { (&ok, &failing) } else { (&failing, &ok) };
            notes.push(events.note("u", Some(before), Some(after), start + Duration::from_secs(15 * i)));
        }
        assert_eq!(reasons(&notes), ["Failing", "Recovered"]);
        // Still failing after the interval: the held-back Failing goes out.
        let late = events.note("u", Some(&failing), Some(&failing), start + PAIR_INTERVAL);
        assert_eq!(reasons(&[late]), ["Failing"]);
    }

    #[test]
    fn a_restart_repeats_nothing_the_status_already_shows() {
        let events = DeliveringEvents::default();
        let failing = condition("False", "HTTP 500");
        let now = Instant::now();
        assert!(events.note("u", Some(&failing), Some(&failing), now).is_none());
        let recovered = events.note("u", Some(&failing), Some(&condition("True", "")), now);
        assert_eq!(reasons(&[recovered]), ["Recovered"]);
        events.forget("u");
        assert!(events.hooks.lock().unwrap().is_empty());
    }

    #[test]
    fn an_org_over_budget_warns_when_more_events_were_not_kept_at_most_once_per_interval() {
        let events = DeliveringEvents::default();
        let over = |n| OverBudget {
            events: n,
            ..OverBudget::default()
        };
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        // First sight (a restart): nothing repeated.
        assert!(events.over_budget_note("u", Some(&over(3)), "m", at(0)).is_none());
        let first = events.over_budget_note("u", Some(&over(4)), "m", at(1));
        assert_eq!(first.map(|n| n.reason), Some(OVER_BUDGET.to_string()));
        // More inside the interval: held back, published once it ends.
        let note = |n, t| events.over_budget_note("u", Some(&over(n)), "m", t);
        assert!(note(9, at(60)).is_none());
        assert!(note(9, at(1) + PAIR_INTERVAL).is_some());
        assert!(note(10, at(2) + PAIR_INTERVAL).is_none());
        assert!(note(10, at(1) + PAIR_INTERVAL * 2).is_some());
        assert!(events.over_budget_note("u", None, "m", at(3) + PAIR_INTERVAL).is_none());
    }
}
