//! The dispatcher's Prometheus metrics (prefix `outbound_webhooks_`; no
//! per-hook labels, so cardinality stays bounded by the code, not tenants).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// Every metric of the dispatcher.
#[derive(Clone)]
pub struct Metrics {
    /// Attempts by outcome (delivered, failed, gone) and status class (2xx..5xx, none).
    pub attempts: Family<Labels, Counter>,
    /// Attempt latency in seconds.
    pub attempt_duration: Histogram,
    /// Dead letters written, by reason kind.
    pub dead_letters: Family<Labels, Counter>,
    /// Events dropped because a subscribed hook is turned off.
    pub dropped_events: Counter,
    /// Hooks turned off by this replica, by reason.
    pub disabled_hooks: Family<Labels, Counter>,
    /// Stream entries routed.
    pub entries: Counter,
    /// Entries in the events stream.
    pub stream_length: Gauge,
    /// Entries read but not yet acknowledged.
    pub stream_pending: Gauge,
    /// Entries not yet read by the consumer group.
    pub stream_lag: Gauge,
    /// Delivery tasks scheduled (due or leased).
    pub tasks_scheduled: Gauge,
    /// Entries in the dead-letter stream.
    pub dead_letter_length: Gauge,
    /// Attempts in flight on this replica.
    pub in_flight: Gauge,
    /// Bytes the orgs hold on each shard, by `shard` (bounded by `--shards`).
    pub redis_stored_bytes: Family<Labels, Gauge>,
    /// Redis `used_memory` of the node holding each shard, by `shard`.
    pub redis_used_memory: Family<Labels, Gauge>,
    /// Redis `maxmemory` of the node holding each shard (0: no limit).
    pub redis_maxmemory: Family<Labels, Gauge>,
    /// First deliveries by path: `direct` (attempted straight from the
    /// stream) or `stored` (kept as a task first: slow hook, secret not in
    /// the cache yet, shutting down).
    pub first_deliveries: Family<Labels, Counter>,
    /// The series of `attempts` every success increments, looked up once
    /// (a lookup allocates its labels).
    pub delivered_2xx: Counter,
    /// The `direct` series of `first_deliveries`, looked up once.
    pub first_direct: Counter,
    /// How each (event, matching hook) ended: `outcome` delivered,
    /// dead_lettered or dropped, with its `reason`; every event a hook
    /// matches is counted here exactly once.
    pub events: Family<Labels, Counter>,
    /// The delivered series of `events`, looked up once.
    pub events_delivered: Counter,
    /// Dead letters deleted by retention (age or count).
    pub dead_letters_trimmed: Counter,
    /// Writes of `status.delivery` (at most one per hook every 15 s, a
    /// turn-off at once).
    pub status_writes: Counter,
    /// Dead letters deleted to make room for a new task of their org at
    /// its budget of bytes in Redis.
    pub dead_letters_evicted: Counter,
    /// Claims in which a hook with due tasks was held back by its limit,
    /// by `limit` (`rate`, `concurrency`).
    pub limit_waits: Family<Labels, Counter>,
    /// Stream entries whose `traceparent` or `tracestate` was invalid and
    /// ignored (the event was delivered without it), by `field`.
    pub trace_context_invalid: Family<Labels, Counter>,
    /// Attempt spans not exported, by `reason`: `queue_full` (the bounded
    /// queue to the exporter was full) or `export_failed` (the collector
    /// refused or could not be reached).
    pub spans_dropped: Family<Labels, Counter>,
    /// Attempt spans the collector accepted.
    pub spans_exported: Counter,
    /// (event, subscribed hook) pairs the hook's `spec.filter` kept from
    /// the hook, by `reason`: `no_match` (false) or `error` (the
    /// evaluation failed). Not in `events`: such an event is not the hook's.
    pub events_filtered: Family<Labels, Counter>,
}

/// The `reason` of an event a hook's filter evaluated to false for.
pub const FILTERED_NO_MATCH: &str = "no_match";
/// The `reason` of an event a hook's filter failed on (counts as no match).
pub const FILTERED_ERROR: &str = "error";

/// How one (event, hook) ended, for [`Metrics::events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Dead-lettered, with the reason's label.
    DeadLettered(&'static str),
    /// Dropped (the hook is disabled by spec, turned off or not accepted).
    Dropped(&'static str),
}

/// The status class label of an optional status code.
pub fn status_class(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("{}xx", s / 100),
        None => "none".to_string(),
    }
}

/// Makes the series of `family` for each of `values` of `label` at 0, so a
/// rate (and an alert) over them has a zero to start from.
fn zero_series(family: &Family<Labels, Counter>, label: &'static str, values: &[&str]) {
    for value in values {
        let _ = family.get_or_create(&vec![(label, value.to_string())]);
    }
}

fn register_accounting(r: &mut Registry, m: &Metrics) {
    r.register(
        "outbound_webhooks_events",
        "How each (event, matching hook) ended: outcome delivered, dead_lettered or dropped, by reason",
        m.events.clone(),
    );
    r.register(
        "outbound_webhooks_dead_letters_trimmed",
        "Dead letters deleted by retention (age or count)",
        m.dead_letters_trimmed.clone(),
    );
    r.register(
        "outbound_webhooks_dead_letters_evicted",
        "Dead letters deleted (an org's oldest first) to make room for a new task of their org at its budget of bytes in Redis",
        m.dead_letters_evicted.clone(),
    );
    r.register(
        "outbound_webhooks_status_writes",
        "Writes of status.delivery to OutboundWebhooks (at most one per hook every 15 s, turn-offs at once)",
        m.status_writes.clone(),
    );
    r.register(
        "outbound_webhooks_hook_limit_waits",
        "Claims in which a hook with due tasks was held back by its spec.rateLimit or spec.maxConcurrentRequests, by limit (rate, concurrency)",
        m.limit_waits.clone(),
    );
    zero_series(&m.events_filtered, "reason", &[FILTERED_NO_MATCH, FILTERED_ERROR]);
    r.register(
        "outbound_webhooks_events_filtered",
        "(event, subscribed hook) pairs kept from the hook by its spec.filter, by reason: no_match, or error (the evaluation failed)",
        m.events_filtered.clone(),
    );
}

fn register_traces(r: &mut Registry, m: &Metrics) {
    r.register(
        "outbound_webhooks_trace_context_invalid",
        "Stream entries whose traceparent or tracestate was invalid and ignored (delivered without it), by field",
        m.trace_context_invalid.clone(),
    );
    r.register(
        "outbound_webhooks_spans_exported",
        "Attempt spans exported to the OTLP collector (--otlp-endpoint)",
        m.spans_exported.clone(),
    );
    r.register(
        "outbound_webhooks_spans_dropped",
        "Attempt spans not exported, by reason: queue_full (the exporter's bounded queue) or export_failed",
        m.spans_dropped.clone(),
    );
}

impl Metrics {
    /// The series of [`Metrics::trace_context_invalid`] for `field`.
    pub fn trace_context_invalid(&self, field: &str) -> Counter {
        self.trace_context_invalid
            .get_or_create(&vec![("field", field.to_string())])
            .clone()
    }

    /// Counts `n` (event, hook) pairs that ended as `outcome`.
    pub fn count_events(&self, outcome: EventOutcome, n: u64) {
        let (label, reason) = match outcome {
            EventOutcome::DeadLettered(reason) => ("dead_lettered", reason),
            EventOutcome::Dropped(reason) => ("dropped", reason),
        };
        self.events
            .get_or_create(&vec![("outcome", label.to_string()), ("reason", reason.to_string())])
            .inc_by(n);
    }

    /// Counts the hooks a claim held back by their rate and by their
    /// concurrency limit.
    pub fn count_limit_waits(&self, by_rate: u64, by_concurrency: u64) {
        for (limit, n) in [("rate", by_rate), ("concurrency", by_concurrency)] {
            if n > 0 {
                self.limit_waits
                    .get_or_create(&vec![("limit", limit.to_string())])
                    .inc_by(n);
            }
        }
    }

    /// Counts `n` (event, hook) pairs the hook's filter kept from it.
    pub fn count_filtered(&self, reason: &'static str, n: u64) {
        self.events_filtered
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }

    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            attempts: Family::default(),
            attempt_duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            dead_letters: Family::default(),
            dropped_events: Counter::default(),
            disabled_hooks: Family::default(),
            entries: Counter::default(),
            stream_length: Gauge::default(),
            stream_pending: Gauge::default(),
            stream_lag: Gauge::default(),
            tasks_scheduled: Gauge::default(),
            dead_letter_length: Gauge::default(),
            in_flight: Gauge::default(),
            redis_stored_bytes: Family::default(),
            redis_used_memory: Family::default(),
            redis_maxmemory: Family::default(),
            first_deliveries: Family::default(),
            delivered_2xx: Counter::default(),
            first_direct: Counter::default(),
            events: Family::default(),
            events_delivered: Counter::default(),
            dead_letters_trimmed: Counter::default(),
            status_writes: Counter::default(),
            dead_letters_evicted: Counter::default(),
            limit_waits: Family::default(),
            trace_context_invalid: Family::default(),
            spans_dropped: Family::default(),
            spans_exported: Counter::default(),
            events_filtered: Family::default(),
        };
        let delivered: Labels = vec![
            ("outcome", "delivered".to_string()),
            ("status_class", "2xx".to_string()),
        ];
        let direct: Labels = vec![("path", "direct".to_string())];
        let delivered_2xx = m.attempts.get_or_create(&delivered).clone();
        let first_direct = m.first_deliveries.get_or_create(&direct).clone();
        let events_delivered = m
            .events
            .get_or_create(&vec![
                ("outcome", "delivered".to_string()),
                ("reason", "ok".to_string()),
            ])
            .clone();
        zero_series(&m.limit_waits, "limit", &["rate", "concurrency"]);
        zero_series(&m.trace_context_invalid, "field", &["traceparent", "tracestate"]);
        zero_series(&m.spans_dropped, "reason", &["queue_full", "export_failed"]);
        let m = Metrics {
            delivered_2xx,
            first_direct,
            events_delivered,
            ..m
        };
        register_accounting(registry, &m);
        register_traces(registry, &m);
        let r = registry;
        r.register(
            "outbound_webhooks_delivery_attempts",
            "Delivery attempts by outcome and status class",
            m.attempts.clone(),
        );
        r.register(
            "outbound_webhooks_delivery_attempt_duration_seconds",
            "Latency of delivery attempts",
            m.attempt_duration.clone(),
        );
        r.register(
            "outbound_webhooks_dead_letters",
            "Dead letters written, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "outbound_webhooks_dropped_events",
            "Events dropped because the subscribed hook is turned off",
            m.dropped_events.clone(),
        );
        r.register(
            "outbound_webhooks_hooks_disabled",
            "Hooks turned off, by reason",
            m.disabled_hooks.clone(),
        );
        r.register(
            "outbound_webhooks_stream_entries_routed",
            "Stream entries routed",
            m.entries.clone(),
        );
        r.register(
            "outbound_webhooks_stream_length",
            "Entries in the events stream",
            m.stream_length.clone(),
        );
        r.register(
            "outbound_webhooks_stream_pending",
            "Entries read by the consumer group but not yet acknowledged",
            m.stream_pending.clone(),
        );
        r.register(
            "outbound_webhooks_stream_lag",
            "Entries in the events stream not yet read by the consumer group",
            m.stream_lag.clone(),
        );
        r.register(
            "outbound_webhooks_tasks_scheduled",
            "Delivery tasks scheduled (due, waiting to retry or leased)",
            m.tasks_scheduled.clone(),
        );
        r.register(
            "outbound_webhooks_dead_letter_length",
            "Entries in the dead-letter stream",
            m.dead_letter_length.clone(),
        );
        r.register(
            "outbound_webhooks_redis_stored_bytes",
            "Bytes the orgs hold on a shard (tasks and dead letters, as budgeted by --org-max-stored-bytes), by shard",
            m.redis_stored_bytes.clone(),
        );
        r.register(
            "outbound_webhooks_redis_used_memory_bytes",
            "Redis used_memory of the node holding a shard, by shard",
            m.redis_used_memory.clone(),
        );
        r.register(
            "outbound_webhooks_redis_maxmemory_bytes",
            "Redis maxmemory of the node holding a shard (0: no limit), by shard",
            m.redis_maxmemory.clone(),
        );
        r.register(
            "outbound_webhooks_attempts_in_flight",
            "Attempts in flight on this replica",
            m.in_flight.clone(),
        );
        r.register(
            "outbound_webhooks_first_deliveries",
            "First deliveries of events to hooks, by path (direct from the stream, or stored as a task first)",
            m.first_deliveries.clone(),
        );
        m
    }
}
