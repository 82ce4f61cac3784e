//! Which hooks receive an event: pure functions over the cached hooks.

use std::sync::Arc;

use crate::contract::filter::EventValue;
use crate::dispatcher::{
    metrics::{FILTERED_ERROR, FILTERED_NO_MATCH},
    view::cache::Cached,
    view::cached_objects::{CachedHook, CompiledFilter, Seen},
};
use crate::wire::stream_entry::Event;

/// Whether a hook may be delivered to right now, and if not, what becomes
/// of its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliverability {
    /// Accepted, secret ready (both for the current generation), enabled, not turned off.
    Deliverable,
    /// `spec.enabled` is false: events are dropped (and counted).
    DisabledBySpec,
    /// `Accepted` is False for the current generation (over the org's
    /// limit, an insecure URL): events are dropped (and counted).
    NotAccepted,
    /// `Accepted` or `SecretReady` does not carry the current generation
    /// yet (a spec edit the controller has not reconciled, a fail-over):
    /// events wait.
    Lagging,
    /// `SecretReady` is False for the current generation (a Secret missing,
    /// unlabelled or invalid): events wait.
    SecretNotReady,
    /// The dispatcher turned it off (AutoDisabled or Revoked): events are
    /// dropped (and counted).
    TurnedOff,
}

impl Deliverability {
    /// Whether events for the hook wait (as waiting tasks) rather than
    /// being delivered or dropped.
    pub fn waits(self) -> bool {
        matches!(self, Deliverability::Lagging | Deliverability::SecretNotReady)
    }

    /// The `reason` label of an event dropped for this state, if it drops.
    pub fn drop_reason(self) -> Option<&'static str> {
        match self {
            Deliverability::DisabledBySpec => Some("disabled_by_spec"),
            Deliverability::NotAccepted => Some("not_accepted"),
            Deliverability::TurnedOff => Some("turned_off"),
            _ => None,
        }
    }
}

/// Decides [`Deliverability`] from the hook's spec, conditions and disable record.
pub fn deliverability(hook: &CachedHook) -> Deliverability {
    if !hook.spec.enabled {
        return Deliverability::DisabledBySpec;
    }
    let current = |c: Option<Seen>| c.filter(|c| c.observed_generation == hook.generation);
    let (Some(accepted), Some(secret_ready)) = (current(hook.accepted), current(hook.secret_ready)) else {
        return match current(hook.accepted) {
            Some(accepted) if !accepted.is_true => Deliverability::NotAccepted,
            _ => Deliverability::Lagging,
        };
    };
    if !accepted.is_true {
        Deliverability::NotAccepted
    } else if !secret_ready.is_true {
        Deliverability::SecretNotReady
    } else if hook.disabled.as_ref().is_some_and(|r| hook.turned_off_by(r)) {
        Deliverability::TurnedOff
    } else {
        Deliverability::Deliverable
    }
}

/// The routing of one event.
#[derive(Debug, Default)]
pub struct Route {
    /// Hooks that get a delivery now.
    pub deliver: Vec<Arc<CachedHook>>,
    /// Hooks whose conditions lag or whose Secret is not ready: the event
    /// waits for them as a stored task.
    pub wait: Vec<Arc<CachedHook>>,
    /// Subscribed hooks the event is dropped for, by reason.
    pub dropped: Vec<&'static str>,
    /// Subscribed hooks whose filter kept the event from them, by reason
    /// (`no_match`, `error`): the event is not theirs, nothing is stored.
    pub filtered: Vec<&'static str>,
    /// The filters that failed on the event: the hook and the error.
    pub filter_errors: Vec<(Arc<CachedHook>, String)>,
}

/// The `event` variable of the event being routed: built at the first
/// hook with a filter, then shared by the others (an event whose hooks
/// have no filter never builds it).
struct LazyEventValue<'e> {
    event: &'e Event,
    value: Option<Result<EventValue, String>>,
}

impl LazyEventValue<'_> {
    /// Whether the event passes `filter`; an error is text for people.
    fn passes(&mut self, filter: &CompiledFilter) -> Result<bool, String> {
        let filter = filter.as_ref().map_err(|e| e.to_string())?;
        let event = self.event;
        let value = self.value.get_or_insert_with(|| EventValue::new(event));
        filter.matches(value.as_ref().map_err(Clone::clone)?)
    }
}

/// The `reason` of an event whose `hook` field names no hook of its org.
pub const NO_SUCH_HOOK: &str = "no_such_hook";

/// The `reason` of an event dropped for a hook that still holds a task for
/// its id from another stream entry (docs/src/contract.md#guarantees: an
/// event id is its idempotency key).
pub const DUPLICATE_ID: &str = "duplicate_id";

/// Routes `event` over the cached hooks: same namespace (its org),
/// subscribed, not being deleted. With the entry's `hook` field, the hook
/// of that name alone, whatever its subscribed events and its filter (a
/// test event); when the org has none, the event is dropped with
/// [`NO_SUCH_HOOK`]. A hook that would get the event or wait for it and
/// has a filter gets it only when the filter is true (evaluated here,
/// once per event and hook; a retried task is not filtered again).
pub fn route<'a>(hooks: impl IntoIterator<Item = &'a Arc<CachedHook>>, event: &Event) -> Route {
    let only = event.hook.as_deref();
    let mut route = Route::default();
    let mut matched = false;
    let mut value = LazyEventValue { event, value: None };
    for hook in hooks {
        if hook.namespace() != event.org {
            continue;
        }
        let matches = match only {
            Some(target) => hook.name() == target,
            None => hook.spec.events.contains(&event.name),
        };
        if !matches || hook.deleting || hook.uid().is_none() {
            continue;
        }
        matched = true;
        let state = deliverability(hook);
        if let Some(reason) = state.drop_reason() {
            route.dropped.push(reason);
            continue;
        }
        if only.is_none()
            && let Some(filter) = &hook.filter
            // A hook waiting for the controller with a filter that does not
            // compile keeps its event waiting: the controller's verdict on
            // that spec decides (refused: dropped as not accepted).
            && (state == Deliverability::Deliverable || filter.is_ok())
        {
            match value.passes(filter) {
                Ok(true) => {}
                Ok(false) => {
                    route.filtered.push(FILTERED_NO_MATCH);
                    continue;
                }
                Err(error) => {
                    route.filtered.push(FILTERED_ERROR);
                    route.filter_errors.push((hook.clone(), error));
                    continue;
                }
            }
        }
        if state == Deliverability::Deliverable {
            route.deliver.push(hook.clone());
        } else if state.waits() {
            route.wait.push(hook.clone());
        }
    }
    if only.is_some() && !matched {
        route.dropped.push(NO_SUCH_HOOK);
    }
    route
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::{
        contract::conditions::{ACCEPTED, SECRET_READY},
        contract::event_name::EventName,
        contract::resource::{DeliveryStatus, DisableReason, DisableRecord, OutboundWebhook, OutboundWebhookStatus},
    };

    fn condition(type_: &str, status: &str, generation: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            observed_generation: Some(generation),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn cached(h: OutboundWebhook) -> Arc<CachedHook> {
        Arc::new(CachedHook::new(h))
    }

    fn hook(ns: &str, events: &[&str]) -> OutboundWebhook {
        let spec = serde_json::from_value(serde_json::json!({"url": "https://x.example", "events": events})).unwrap();
        let mut h = OutboundWebhook::new("h", spec);
        h.metadata.namespace = Some(ns.into());
        h.metadata.uid = Some(format!("uid-{ns}"));
        h.metadata.generation = Some(2);
        h.status = Some(OutboundWebhookStatus {
            conditions: vec![condition(ACCEPTED, "True", 2), condition(SECRET_READY, "True", 2)],
            secret_name: Some("h-webhook-secret".into()),
            ..Default::default()
        });
        h
    }

    const CREATE: EventName = EventName::ConversationCreate;

    /// A `kustomer.conversation.create` event of org acme, for `only` when given.
    fn ev(only: Option<&str>) -> Event {
        Event {
            id: "e1".into(),
            org: "acme".into(),
            name: CREATE,
            data: r#"{"attributes":{"priority":"low"}}"#.into(),
            changes: None,
            created_at_ms: 0,
            hook: only.map(str::to_string),
            trace: None,
            trace_ignored: None,
        }
    }

    #[test]
    fn a_filter_keeps_what_it_rejects_or_fails_on_from_the_hook_but_not_test_events() {
        let filtered = |name: &str, filter: &str| {
            let mut h = hook("acme", &["kustomer.conversation.create"]);
            h.metadata.name = Some(name.into());
            h.metadata.uid = Some(format!("uid-{name}"));
            h.spec.filter = Some(filter.into());
            cached(h)
        };
        let hooks = [
            filtered("low", "event.data.attributes.priority == 'low'"),
            filtered("urgent", "event.data.attributes.priority == 'urgent'"),
            filtered("missing", "event.data.nothing == 1"),
            cached(hook("acme", &["kustomer.conversation.create"])),
        ];
        let r = route(&hooks, &ev(None));
        let names: Vec<&str> = r.deliver.iter().map(|h| h.name()).collect();
        assert_eq!(names, ["low", "h"]);
        assert_eq!(r.filtered, [FILTERED_NO_MATCH, FILTERED_ERROR]);
        assert_eq!(r.filter_errors.len(), 1);
        assert_eq!(r.filter_errors[0].0.name(), "missing");
        assert!(r.filter_errors[0].1.contains("nothing"), "{}", r.filter_errors[0].1);
        assert!(r.dropped.is_empty() && r.wait.is_empty());

        // A test event skips the filter.
        let r = route(&hooks, &ev(Some("urgent")));
        assert_eq!(r.deliver.len(), 1);
        assert!(r.filtered.is_empty());

        // A waiting hook is filtered too; a dropped one is only dropped.
        let mut lagging = hook("acme", &["kustomer.conversation.create"]);
        lagging.spec.filter = Some("false".into());
        lagging.metadata.generation = Some(3);
        let mut off = lagging.clone();
        off.spec.enabled = false;
        let r = route(&[cached(lagging), cached(off)], &ev(None));
        assert!(r.wait.is_empty());
        assert_eq!(r.filtered, [FILTERED_NO_MATCH]);
        assert_eq!(r.dropped, ["disabled_by_spec"]);
    }

    #[test]
    fn a_ready_subscribed_hook_of_the_org_gets_the_event() {
        let hooks = [cached(hook("acme", &["kustomer.conversation.create"]))];
        assert_eq!(route(&hooks, &ev(None)).deliver.len(), 1);
    }

    #[test]
    fn other_namespaces_and_unsubscribed_hooks_get_nothing() {
        let hooks = [
            cached(hook("other", &["kustomer.conversation.create"])),
            cached(hook("acme", &["kustomer.user.create"])),
        ];
        assert!(route(&hooks, &ev(None)).deliver.is_empty());
    }

    #[test]
    fn stale_or_false_conditions_and_disabled_spec_block_delivery() {
        let mut stale = hook("acme", &["kustomer.conversation.create"]);
        stale.metadata.generation = Some(3);
        assert_eq!(deliverability(&cached(stale.clone())), Deliverability::Lagging);

        let mut refused = hook("acme", &["kustomer.conversation.create"]);
        refused.status.as_mut().unwrap().conditions[0].status = "False".into();
        assert_eq!(deliverability(&cached(refused.clone())), Deliverability::NotAccepted);

        let mut unseen = hook("acme", &["kustomer.conversation.create"]);
        unseen.status = None;
        assert_eq!(deliverability(&cached(unseen.clone())), Deliverability::Lagging);

        let mut secret = hook("acme", &["kustomer.conversation.create"]);
        secret.status.as_mut().unwrap().conditions[1].status = "False".into();
        assert_eq!(deliverability(&cached(secret.clone())), Deliverability::SecretNotReady);

        let mut off = hook("acme", &["kustomer.conversation.create"]);
        off.spec.enabled = false;
        assert_eq!(deliverability(&cached(off.clone())), Deliverability::DisabledBySpec);

        let hooks = [
            cached(stale),
            cached(secret),
            cached(off),
            cached(refused),
            cached(unseen),
        ];
        let r = route(&hooks, &ev(None));
        assert!(r.deliver.is_empty());
        // Lagging conditions and a Secret not ready wait; the rest drop, counted.
        assert_eq!(r.wait.len(), 3);
        assert_eq!(r.dropped, ["disabled_by_spec", "not_accepted"]);
    }

    #[test]
    fn turned_off_hooks_drop_and_count_the_event() {
        let mut h = hook("acme", &["kustomer.conversation.create"]);
        h.status.as_mut().unwrap().delivery = Some(DeliveryStatus {
            disabled: Some(DisableRecord {
                reason: DisableReason::AutoDisabled,
                at: Time(jiff::Timestamp::UNIX_EPOCH),
                message: "HTTP 500".into(),
                reenable_token: String::new(),
                generation: 2,
            }),
            ..Default::default()
        });
        let r = route(&[cached(h)], &ev(None));
        assert!(r.deliver.is_empty());
        assert_eq!(r.dropped, ["turned_off"]);
    }

    #[test]
    fn a_test_event_reaches_only_the_named_hook_whatever_its_events() {
        let named = |name: &str, ns: &str, events: &[&str]| {
            let mut h = hook(ns, events);
            h.metadata.name = Some(name.into());
            h.metadata.uid = Some(format!("uid-{ns}-{name}"));
            h
        };
        let hooks = [
            cached(named("target", "acme", &["kustomer.user.create"])),
            cached(named("other", "acme", &["kustomer.conversation.create"])),
            cached(named("target", "elsewhere", &["kustomer.conversation.create"])),
        ];
        let r = route(&hooks, &ev(Some("target")));
        assert_eq!(r.deliver.len(), 1);
        assert_eq!(r.deliver[0].uid(), Some("uid-acme-target"));
        assert!(r.wait.is_empty() && r.dropped.is_empty());

        // A name no hook of the org carries: dropped, with its reason.
        let r = route(&hooks, &ev(Some("missing")));
        assert!(r.deliver.is_empty() && r.wait.is_empty());
        assert_eq!(r.dropped, [NO_SUCH_HOOK]);

        // A targeted hook that is off behaves like any hook in that state.
        let mut off = named("target", "acme", &["kustomer.user.create"]);
        off.spec.enabled = false;
        let r = route(&[cached(off)], &ev(Some("target")));
        assert_eq!(r.dropped, ["disabled_by_spec"]);
    }

    #[test]
    fn the_signing_secret_comes_from_secret_ref_or_status() {
        let mut h = hook("acme", &["kustomer.conversation.create"]);
        assert_eq!(cached(h.clone()).signing_secret(), Some(("h-webhook-secret", "token")));
        h.spec.secret_ref = Some(crate::contract::resource::SecretKeyRef {
            name: "mine".into(),
            key: "k".into(),
        });
        assert_eq!(cached(h).signing_secret(), Some(("mine", "k")));
    }
}
