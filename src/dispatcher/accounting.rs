//! Deliveries that end when their task is stored rather than by an
//! attempt: a duplicate of an event id its hook still holds from another
//! stream entry (dropped, `duplicate_id`), or a task refused at its org's
//! budget (dead-lettered without its body or dropped, `org_over_budget`):
//! each counted, logged and shown on the hook. Called by the consumer, the
//! first attempts and the acker alike.

use std::collections::BTreeMap;

use crate::dispatcher::{
    clock::now_ms, context::Shared, health::requests::Urgency, intake::routing::DUPLICATE_ID, metrics::EventOutcome,
    org_budget::ORG_OVER_BUDGET,
};
use crate::store::{NewTask, Routed, Store};

/// Counts and logs a delivery dropped because its hook holds a task for
/// the same event id from another stream entry.
pub fn count_duplicate(shared: &Shared, hook: &str, event_id: &str, entry_id: &str, held_entry_id: &str) {
    shared.metrics.count_events(EventOutcome::Dropped(DUPLICATE_ID), 1);
    tracing::warn!(
        %hook, event = %event_id, entry = %entry_id, held_entry = %held_entry_id,
        "event dropped for a hook: its id is reused while the hook still holds the event from another stream entry"
    );
}

/// Counts and logs what storing `tasks` did besides storing them: tasks
/// dropped as duplicates, tasks refused at their org's budget (each
/// dead-lettered without its body or dropped, counted `org_over_budget`),
/// dead letters deleted to make room (counted, logged per org).
pub async fn account_routed(shared: &Shared, store: &Store, tasks: &[NewTask], routed: &Routed) {
    for d in &routed.duplicates {
        if let Some(task) = tasks.get(d.index) {
            count_duplicate(shared, &task.hook, &task.event_id, &task.entry_id, &d.held_entry_id);
        }
    }
    // (org, dead-lettered) -> events, for one log line each.
    let mut refused: BTreeMap<(&str, bool), u64> = BTreeMap::new();
    // (hook uid, name, org) -> events: what each hook's status shows.
    let mut by_hook: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for r in &routed.refused {
        let Some(task) = tasks.get(r.index) else { continue };
        *refused.entry((&task.org, r.dead_lettered)).or_default() += 1;
        *by_hook.entry((&task.uid, &task.hook, &task.org)).or_default() += 1;
    }
    let now = now_ms();
    for ((uid, hook, org), n) in by_hook {
        let budget = shared.budgets.for_org(org);
        match store.record_over_budget(uid, n, budget, now).await {
            Ok(()) => shared.mirror.request(uid, hook, Urgency::Transition),
            Err(e) => tracing::warn!(%hook, error = %e, "noting events over the org's budget on the hook's health"),
        }
    }
    for ((org, dead_lettered), n) in refused {
        if dead_lettered {
            shared
                .metrics
                .dead_letters
                .get_or_create(&vec![("reason", ORG_OVER_BUDGET.to_string())])
                .inc_by(n);
            shared
                .metrics
                .count_events(EventOutcome::DeadLettered(ORG_OVER_BUDGET), n);
        } else {
            shared.metrics.count_events(EventOutcome::Dropped(ORG_OVER_BUDGET), n);
        }
        tracing::warn!(
            %org, events = n, dead_lettered, budget = shared.budgets.for_org(org),
            "events not stored: the org's live tasks fill its budget of bytes in Redis (dead-lettered without their bodies, or dropped when even that did not fit)"
        );
    }
    let mut evicted: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &routed.evicted {
        *evicted.entry(&e.org).or_default() += 1;
    }
    for (org, n) in evicted {
        shared.metrics.dead_letters_evicted.inc_by(n);
        tracing::warn!(%org, deleted = n, "deleted the org's oldest dead letters to stay within its budget of bytes in Redis");
    }
}
