//! Scenario 6's measurements and the rows they make.

use std::{collections::HashMap, time::Duration, time::Instant};

use crate::{
    apiserver_metrics::{Latencies, mean_latency},
    controller_scenario::{CONCURRENCY, DEADLINE, HOOKS_PER_NAMESPACE, LAG_TARGET, TARGET},
    processes::ProcStats,
    report::{Report, mib, percentile, verdict},
};

/// The scenario's name in the table, with its size.
fn scenario(o: &Outcome) -> String {
    format!("6 controller, {} hooks", thousands(o.total))
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What scenario 6 measured; times are `Instant`s, reported from `t0`.
pub struct Outcome {
    /// Hooks created.
    pub total: usize,
    /// When the first create was sent.
    pub t0: Instant,
    /// The untimed first create on the fresh API server.
    pub warm_up: Duration,
    /// From `t0` to the last create answered.
    pub all_created: Duration,
    /// When each hook's create was answered, by `namespace/name`.
    pub created_at: HashMap<String, Instant>,
    /// When the watch first saw each hook Ready for its generation.
    pub ready_at: HashMap<String, Instant>,
    /// Hooks Ready for their generation in the final list.
    pub ready_listed: usize,
    /// Hooks in the final list.
    pub listed: usize,
    /// Hooks not Ready in the final list, by `status/reason` of `Ready`.
    pub not_ready: HashMap<String, usize>,
    /// Signing Secrets as the controller must make them.
    pub good_secrets: usize,
    /// The controller once its caches synced, before the hooks.
    pub idle: ProcStats,
    /// The controller when the first create was sent.
    pub before: ProcStats,
    /// The controller once all were Ready (or at the deadline).
    pub after: ProcStats,
    /// Seconds from `t0` to `after`.
    pub window: f64,
    /// CPU seconds of kube-apiserver over the window.
    pub apiserver_cpu: f64,
    /// CPU seconds of etcd over the window.
    pub etcd_cpu: f64,
    /// CPU seconds of this process over the window.
    pub bench_cpu: f64,
    /// The controller's unlabelled metrics at the end.
    pub metrics: HashMap<String, f64>,
    /// The API server's latencies at `t0`.
    pub latencies_before: Latencies,
    /// The API server's latencies at the end of the window.
    pub latencies_after: Latencies,
    /// Namespaces the hooks were created in.
    pub namespaces: usize,
    /// Events the controller had published, and when (from `t0`), once it
    /// had all it should or the wait ended.
    pub events: (f64, Duration),
    /// CPU from `t0` until then.
    pub after_events: EventsCost,
}

/// CPU seconds from `t0` until the Events were published.
pub struct EventsCost {
    /// The controller's.
    pub controller_cpu: f64,
    /// kube-apiserver's.
    pub apiserver_cpu: f64,
}

impl Outcome {
    fn since_t0(&self, at: Option<&Instant>) -> f64 {
        at.map_or(f64::NAN, |at| at.duration_since(self.t0).as_secs_f64())
    }

    /// Seconds from `t0` to each Ready, sorted.
    fn ready_times(&self) -> Vec<f64> {
        let mut times: Vec<f64> = self.ready_at.values().map(|at| self.since_t0(Some(at))).collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// Create answered -> Ready seen, per hook, sorted.
    fn lags(&self) -> Vec<f64> {
        let mut lags: Vec<f64> = self
            .ready_at
            .iter()
            .filter_map(|(key, ready)| {
                Some(
                    ready
                        .saturating_duration_since(*self.created_at.get(key)?)
                        .as_secs_f64(),
                )
            })
            .collect();
        lags.sort_by(f64::total_cmp);
        lags
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// The time-to-Ready rows.
fn time_rows(o: &Outcome, report: &mut Report) {
    let total = o.total;
    let times = o.ready_times();
    if o.ready_at.len() >= total {
        let seconds = times.last().copied().unwrap_or(f64::NAN);
        report.row(
            &scenario(o),
            "time to all Ready",
            format!("{seconds:.1} s"),
            &format!(
                "target <= {} s: {} (first create to last Ready; half Ready at {:.1} s)",
                TARGET.as_secs(),
                verdict(seconds <= TARGET.as_secs_f64()),
                percentile(&times, 50.0)
            ),
        );
    } else {
        report.row(
            &scenario(o),
            "time to all Ready",
            format!("> {} s", DEADLINE.as_secs()),
            &format!(
                "target <= {} s: {} ({} of {total} Ready at the deadline)",
                TARGET.as_secs(),
                verdict(false),
                o.ready_at.len()
            ),
        );
    }
    let last_created = o.created_at.values().max();
    let last_ready = o.ready_at.values().max();
    if o.ready_at.len() >= total
        && let (Some(created), Some(ready)) = (last_created, last_ready)
    {
        let lag = ready.saturating_duration_since(*created).as_secs_f64();
        report.row(
            &scenario(o),
            "last create to all Ready",
            format!("{lag:.1} s"),
            &format!(
                "target <= {} s: {} (the controller's lag behind the API server)",
                LAG_TARGET.as_secs(),
                verdict(lag <= LAG_TARGET.as_secs_f64())
            ),
        );
    }
    report.row(
        &scenario(o),
        "time to all created",
        format!("{:.1} s", o.all_created.as_secs_f64()),
        &format!(
            "{total} creates, {CONCURRENCY} in flight, {} namespaces x {HOOKS_PER_NAMESPACE}; first answered at {:.2} s, first Ready at {:.2} s",
            o.namespaces,
            o.since_t0(o.created_at.values().min()),
            o.since_t0(o.ready_at.values().min())
        ),
    );
    report.row(
        &scenario(o),
        "first hook create on the fresh API server",
        format!("{:.2} s", o.warm_up.as_secs_f64()),
        "not timed: one hook created and deleted before the controller starts",
    );
    let lags = o.lags();
    report.row(
        &scenario(o),
        "create to Ready per hook, p50 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} s",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0),
            lags.last().copied().unwrap_or(f64::NAN)
        ),
        "create answered -> Ready seen by a watch",
    );
}

/// The rows of what the controller left behind.
fn result_rows(o: &Outcome, report: &mut Report) {
    let mut reasons: Vec<String> = o.not_ready.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    report.row(
        &scenario(o),
        "Ready for their generation (final list)",
        format!("{} of {}", o.ready_listed, o.listed),
        &if reasons.is_empty() {
            String::new()
        } else {
            format!("not Ready: {}", reasons.join(", "))
        },
    );
    report.row(
        &scenario(o),
        "signing Secrets",
        format!("{} of {}", o.good_secrets, o.total),
        "labelled, controlled by their hook, 64-hex token",
    );
}

/// The row of the Events (published off the path to Ready).
fn event_rows(o: &Outcome, report: &mut Report) {
    let (published, at) = o.events;
    report.row(
        &scenario(o),
        "Events published (Accepted + SecretGenerated)",
        format!("{published:.0} of {}", 2 * o.total),
        &format!(
            "by {:.1} s after the first create; controller / kube-apiserver CPU s until then {:.2} / {:.1}",
            at.as_secs_f64(),
            o.after_events.controller_cpu,
            o.after_events.apiserver_cpu
        ),
    );
}

/// The rows of what it cost: memory, CPU, API calls.
fn cost_rows(o: &Outcome, report: &mut Report) {
    report.row(
        &scenario(o),
        "controller peak RSS",
        format!("{:.1} MiB", mib(o.after.peak_rss)),
        &format!("VmHWM; {:.1} MiB after its caches synced", mib(o.idle.rss)),
    );
    report.row(
        &scenario(o),
        "controller RSS after",
        format!("{:.1} MiB", mib(o.after.rss)),
        "VmRSS once all were Ready",
    );
    let window = o.window;
    let reconciles = o.metric("outbound_webhooks_controller_reconciles_total");
    let mean_reconcile_ms = 1000.0 * o.metric("outbound_webhooks_controller_reconcile_duration_seconds_sum")
        / o.metric("outbound_webhooks_controller_reconcile_duration_seconds_count");
    report.row(
        &scenario(o),
        "controller CPU s",
        format!("{:.2}", o.after.cpu_seconds - o.before.cpu_seconds),
        &format!(
            "over {window:.1} s; {reconciles:.0} reconciles (mean {mean_reconcile_ms:.1} ms), {:.0} status writes, {:.0} errors",
            o.metric("outbound_webhooks_controller_status_writes_total"),
            o.metric("outbound_webhooks_controller_reconcile_errors_total"),
        ),
    );
    report.row(
        &scenario(o),
        "kube-apiserver / etcd / bench CPU s",
        format!("{:.1} / {:.1} / {:.1}", o.apiserver_cpu, o.etcd_cpu, o.bench_cpu),
        &format!(
            "same {window:.1} s, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    );
    let calls: Vec<String> = [
        ("POST", "outboundwebhooks", "create hook"),
        ("POST", "secrets", "create Secret"),
        ("APPLY", "outboundwebhooks/status", "apply status"),
        ("POST", "events", "create Event"),
    ]
    .iter()
    .map(|(verb, resource, what)| {
        let (ms, n) = mean_latency(&o.latencies_before, &o.latencies_after, verb, resource);
        format!("{what} {ms:.0} ms (x{n:.0})")
    })
    .collect();
    report.row(
        &scenario(o),
        "API server mean latency per call",
        calls.join(", "),
        "apiserver_request_duration_seconds over the same window",
    );
}

/// Every row of scenario 6, in the table's order.
pub fn report_rows(o: &Outcome, report: &mut Report) {
    time_rows(o, report);
    result_rows(o, report);
    event_rows(o, report);
    cost_rows(o, report);
}
