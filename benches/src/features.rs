//! Scenario 7: what a filter and tracing cost. 1a's shape (one hook) and
//! 1b's (five hooks of one org) drained three times each: plain, with a
//! filter on every hook (its own org, the same events), and with one span
//! per attempt exported over OTLP (to this process's receiver, which
//! answers the exports at once). Reports the dispatcher's CPU per 1,000
//! deliveries of each, and the ratio to plain. And 1a's shape once more
//! with `rateLimit: {requestsPerSecond: 10000, burst: 10000}`: what the
//! claimer's path (a limited hook's deliveries are stored as tasks first)
//! costs and how close to its limit the hook gets.

use crate::{
    Env, Error,
    load::fill,
    report::Report,
    scale,
    seed::SeedHook,
    throughput::{DRAIN_TIMEOUT, drain},
};

const SCENARIO: &str = "7 filters and tracing";

/// The filter every hook of the filtered orgs has: true for every bench
/// event, reading a field of its data as a tenant's filter would.
pub const FILTER: &str = "event.name == 'kustomer.conversation.create' && event.data.attributes.status == 'open'";

/// The filtered orgs' hooks (their plain twins are 1a's and 1b's).
pub fn hooks(fast_url: &str) -> Vec<SeedHook> {
    let mut hooks = vec![SeedHook::new("bench-one-f", "hook-1", fast_url).with_filter(FILTER)];
    hooks.extend((1..=5).map(|i| SeedHook::new("bench-five-f", format!("hook-{i}"), fast_url).with_filter(FILTER)));
    hooks.push(SeedHook::new("bench-one-r", "hook-1", fast_url).with_spec(RATE_LIMITED));
    hooks
}

/// The rate-limited hook's extra spec.
const RATE_LIMITED: &str = r#"{"rateLimit": {"requestsPerSecond": 10000, "burst": 10000}}"#;

/// Scenario 7 (see the module's comment).
pub async fn scenario_7(env: &Env, report: &mut Report) -> Result<(), Error> {
    let otlp = format!("http://127.0.0.1:{}", env.receiver_port);
    for (shape, hooks, plain_org, filtered_org, events) in [
        ("1a", 1, "bench-one", "bench-one-f", scale(50_000)),
        ("1b", 5, "bench-five", "bench-five-f", scale(10_000)),
    ] {
        eprintln!("bench: scenario 7: {events} events for {shape}'s shape, plain, filtered and traced");
        let mut conn = env.redis.clone();
        let plain = format!("{{bench-7-{shape}-plain}}:");
        let filtered = format!("{{bench-7-{shape}-filter}}:");
        let traced = format!("{{bench-7-{shape}-trace}}:");
        fill(&mut conn, &plain, plain_org, events).await?;
        fill(&mut conn, &filtered, filtered_org, events).await?;
        fill(&mut conn, &traced, plain_org, events).await?;
        let deliveries = (hooks * events) as u64;
        let base = drain(env, &plain, "dispatcher-7-plain", deliveries, DRAIN_TIMEOUT, &[]).await?;
        let filter = drain(env, &filtered, "dispatcher-7-filter", deliveries, DRAIN_TIMEOUT, &[]).await?;
        let trace = drain(
            env,
            &traced,
            "dispatcher-7-trace",
            deliveries,
            DRAIN_TIMEOUT,
            &["--otlp-endpoint", &otlp],
        )
        .await?;
        for (what, d) in [
            ("plain", &base),
            ("a filter on every hook", &filter),
            ("tracing on", &trace),
        ] {
            report.row(
                SCENARIO,
                &format!("CPU s per 1,000 deliveries ({shape}, {what})"),
                format!("{:.3}", d.cpu_per_1000),
                &format!("{}; {:.0} deliveries/s", d.progress(), d.rate),
            );
        }
        let mut rows = vec![("filter", &filter), ("tracing", &trace)];
        let limited;
        if shape == "1a" {
            let prefix = "{bench-7-1a-rate}:";
            fill(&mut conn, prefix, "bench-one-r", events).await?;
            limited = drain(env, prefix, "dispatcher-7-rate", deliveries, DRAIN_TIMEOUT, &[]).await?;
            report.row(
                SCENARIO,
                "CPU s per 1,000 deliveries (1a, rateLimit 10,000/s)",
                format!("{:.3}", limited.cpu_per_1000),
                &format!(
                    "{}; {:.0} deliveries/s (limit 10,000/s)",
                    limited.progress(),
                    limited.rate
                ),
            );
            rows.push(("rateLimit", &limited));
        }
        for (what, d) in rows {
            report.row(
                SCENARIO,
                &format!("{shape} CPU with {what} / plain"),
                format!("{:.0}%", 100.0 * d.cpu_per_1000 / base.cpu_per_1000.max(1e-9)),
                "same events, same run",
            );
        }
    }
    Ok(())
}
