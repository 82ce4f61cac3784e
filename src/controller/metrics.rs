//! The controller's Prometheus metrics. Only the three per-hook gauges
//! ([`HookGauges`], what alerts on one hook need) carry per-hook labels,
//! and only for hooks that are failing or turned off (three series each):
//! a tenant can create any number of hooks, but only accepted hooks are
//! delivered to, so these are bounded by the per-org limit. Every other
//! series is fixed.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    contract::conditions::{self, ready},
    contract::resource::OutboundWebhook,
};

/// Counters and gauges the reconciler and the leader loop update.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed with a transient error (retried with backoff).
    pub reconcile_errors: Counter,
    /// How long reconciles took.
    pub reconcile_duration: Histogram,
    /// Status writes (a reconcile that changes nothing writes nothing).
    pub status_writes: Counter,
    /// Kubernetes Events published (created, or a repeat added to its series).
    pub events_published: Counter,
    /// 1 while this replica holds the Lease, else 0.
    pub leader: Gauge,
    /// Per-hook gauges of what the hooks' status shows.
    pub hooks: HookGauges,
}

/// `{namespace, name}` of one hook.
type HookLabels = Vec<(&'static str, String)>;

/// Per-hook gauges, set from each hook's status as the watch delivers it
/// (so they show what `kubectl get owh` shows) while the hook is failing or
/// turned off, and removed when it recovers or is deleted.
#[derive(Clone, Default)]
pub struct HookGauges {
    /// 1 while `Delivering` is False, else 0.
    failing: Family<HookLabels, Gauge>,
    /// `status.delivery.consecutiveFailures` (0 when absent).
    consecutive_failures: Family<HookLabels, Gauge>,
    /// 1 while `Ready` is False with reason `AutoDisabled` or `Revoked`, else 0.
    turned_off: Family<HookLabels, Gauge>,
    /// The hooks that have series, so a re-list can drop the ones deleted
    /// while the watch was down.
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

impl HookGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbound_webhooks_hook_failing",
            "1 while the hook's Delivering condition is False (its last request failed)",
            self.failing.clone(),
        );
        registry.register(
            "outbound_webhooks_hook_consecutive_failures",
            "Failed requests in a row to the hook's receiver (status.delivery.consecutiveFailures)",
            self.consecutive_failures.clone(),
        );
        registry.register(
            "outbound_webhooks_hook_turned_off",
            "1 while the dispatcher has turned the hook off (Ready=False, AutoDisabled or Revoked)",
            self.turned_off.clone(),
        );
    }

    /// Sets the hook's series from its status, or removes them when the
    /// hook is neither failing nor turned off (a healthy hook has none).
    pub fn observe(&self, hook: &OutboundWebhook) {
        let (Some(namespace), Some(name)) = (hook.metadata.namespace.clone(), hook.metadata.name.clone()) else {
            return;
        };
        let failing = conditions::find(hook, conditions::DELIVERING).is_some_and(|c| c.status == "False");
        let turned_off = conditions::find(hook, conditions::READY).is_some_and(|c| {
            c.status == "False" && [ready::AUTO_DISABLED, ready::REVOKED].contains(&c.reason.as_str())
        });
        let failures = hook
            .status
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .and_then(|d| d.consecutive_failures)
            .unwrap_or(0);
        if !failing && !turned_off && failures == 0 {
            self.forget(&namespace, &name);
            return;
        }
        let labels = labels(&namespace, &name);
        self.failing.get_or_create(&labels).set(i64::from(failing));
        self.consecutive_failures.get_or_create(&labels).set(failures);
        self.turned_off.get_or_create(&labels).set(i64::from(turned_off));
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace, name));
    }

    /// Removes the series of a deleted hook.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = labels(namespace, name);
        self.failing.remove(&labels);
        self.consecutive_failures.remove(&labels);
        self.turned_off.remove(&labels);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Removes the series of every hook for which `exists` is false.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(namespace, name)| !exists(namespace, name))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.forget(&namespace, &name);
        }
    }
}

fn labels(namespace: &str, name: &str) -> HookLabels {
    vec![("namespace", namespace.to_string()), ("name", name.to_string())]
}

impl Metrics {
    /// Creates the metrics and registers them as `outbound_webhooks_controller_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 14,
            )),
            status_writes: Counter::default(),
            events_published: Counter::default(),
            leader: Gauge::default(),
            hooks: HookGauges::default(),
        };
        registry.register(
            "outbound_webhooks_controller_reconciles",
            "Reconciles of OutboundWebhooks started",
            metrics.reconciles.clone(),
        );
        registry.register(
            "outbound_webhooks_controller_reconcile_errors",
            "Reconciles that failed and were retried with backoff",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "outbound_webhooks_controller_reconcile_duration_seconds",
            "Duration of reconciles",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "outbound_webhooks_controller_status_writes",
            "Status writes to OutboundWebhooks",
            metrics.status_writes.clone(),
        );
        registry.register(
            "outbound_webhooks_controller_events_published",
            "Kubernetes Events published about OutboundWebhooks",
            metrics.events_published.clone(),
        );
        registry.register(
            "outbound_webhooks_controller_leader",
            "1 while this replica holds the leader Lease",
            metrics.leader.clone(),
        );
        metrics.hooks.register(registry);
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_encodes() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.reconciles.inc();
        metrics.leader.set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "outbound_webhooks_controller_reconciles_total 1",
            "outbound_webhooks_controller_reconcile_errors_total 0",
            "outbound_webhooks_controller_reconcile_duration_seconds_bucket",
            "outbound_webhooks_controller_status_writes_total 0",
            "outbound_webhooks_controller_events_published_total 0",
            "outbound_webhooks_controller_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    fn hook(namespace: &str, name: &str, status: serde_json::Value) -> OutboundWebhook {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "outboundwebhooks.io/v1alpha1", "kind": "OutboundWebhook",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": "https://example.com", "events": ["kustomer.user.create"]},
            "status": status,
        }))
        .unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": "",
                           "lastTransitionTime": "2026-11-27T10:00:00Z"})
    }

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn hook_gauges_follow_the_status_and_go_with_the_hook() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.hooks.observe(&hook(
            "acme",
            "shop",
            serde_json::json!({
                "conditions": [condition("Ready", "True", "Active"), condition("Delivering", "False", "Failing")],
                "delivery": {"consecutiveFailures": 7},
            }),
        ));
        metrics.hooks.observe(&hook(
            "acme",
            "crm",
            serde_json::json!({"conditions": [condition("Ready", "False", "AutoDisabled")]}),
        ));
        metrics.hooks.observe(&hook(
            "acme",
            "quiet",
            serde_json::json!({"conditions": [condition("Ready", "True", "Active"),
                                              condition("Delivering", "True", "Succeeding")],
                               "delivery": {"consecutiveFailures": 0}}),
        ));
        let text = encoded(&registry);
        assert!(
            !text.contains(r#"name="quiet""#),
            "a healthy hook has no series:\n{text}"
        );
        for line in [
            r#"outbound_webhooks_hook_failing{namespace="acme",name="shop"} 1"#,
            r#"outbound_webhooks_hook_consecutive_failures{namespace="acme",name="shop"} 7"#,
            r#"outbound_webhooks_hook_turned_off{namespace="acme",name="shop"} 0"#,
            r#"outbound_webhooks_hook_failing{namespace="acme",name="crm"} 0"#,
            r#"outbound_webhooks_hook_turned_off{namespace="acme",name="crm"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Recovered: the series go.
        metrics.hooks.observe(&hook(
            "acme",
            "shop",
            serde_json::json!({"conditions": [condition("Ready", "True", "Active"),
                                              condition("Delivering", "True", "Succeeding")]}),
        ));
        let text = encoded(&registry);
        assert!(!text.contains(r#"name="shop""#), "{text}");
        metrics.hooks.retain(|_, name| name != "crm");
        let text = encoded(&registry);
        assert!(!text.contains(r#"name="crm""#), "{text}");
    }
}
