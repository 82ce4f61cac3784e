//! The controller's Prometheus metrics. No per-hook labels: the number of
//! series must not grow with the number of hooks.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
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
    /// 1 while this replica holds the Lease, else 0.
    pub leader: Gauge,
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
            leader: Gauge::default(),
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
            "outbound_webhooks_controller_leader",
            "1 while this replica holds the leader Lease",
            metrics.leader.clone(),
        );
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
            "outbound_webhooks_controller_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
