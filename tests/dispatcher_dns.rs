//! DNS inside the deadline (docs/src/tenant-bounds.md#dns): a zone that never
//! answers fails its own hooks' attempts within their `timeoutSeconds`,
//! with a DNS timeout, and delays no other hook; behind `--proxy` too, where
//! no attempt outlives its lease. A DNS server on loopback plays both zones
//! (`--dns-server`).

use outbound_webhooks_test_kit as support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    delivery_test::DeliveryTest,
    dns_server::{DEAD_ZONE, DnsServer, LIVE_ZONE},
    hooks::TestHook,
    receiver::{Receiver, Reply},
    wait_for,
};

/// docs/src/guarantees.md#isolation-from-slow-hooks: a healthy hook's attempt starts within
/// this of its event being read, whatever other hooks do (as
/// `tests/dispatcher_isolation.rs` holds it).
const BOUND: Duration = Duration::from_millis(1500);

/// The dead zone's hooks' `timeoutSeconds`.
const TIMEOUT_SECONDS: u64 = 2;

/// Slack over `timeoutSeconds` for an attempt's recorded duration (the
/// attempt's own bookkeeping on a machine shared with the control plane).
const SLACK_MS: u64 = 700;

/// `n` hooks on names of the dead zone, each its own name.
fn dead_hooks(test: &DeliveryTest, n: usize) -> Vec<TestHook> {
    (0..n)
        .map(|i| {
            test.hook(
                &format!("dead-{i}"),
                &format!("http://dead-{i}.{DEAD_ZONE}:8080/"),
                json!({"timeoutSeconds": TIMEOUT_SECONDS}),
            )
        })
        .collect()
}

/// Waits until each hook has logged `min` attempts, then checks every one:
/// a DNS timeout naming its host, within `timeoutSeconds`.
fn assert_dns_timeouts_in_time(test: &DeliveryTest, hooks: &[TestHook], min: usize) {
    for (i, hook) in hooks.iter().enumerate() {
        let log = wait_for(
            &format!("{min} attempts of {} logged", hook.name),
            Duration::from_secs(60),
            || {
                let log = test.attempts_json(hook, 100);
                if log.len() >= min {
                    Ok(log)
                } else {
                    Err(format!("{log:?}"))
                }
            },
        );
        let expected = format!("DNS lookup of dead-{i}.{DEAD_ZONE} timed out after ");
        for record in &log {
            let error = record["error"].as_str().unwrap_or_default();
            assert_eq!(record["outcome"], "connection_failed", "{record}");
            assert!(error.starts_with(&expected), "{}: {record}", hook.name);
            let took = record["durationMs"].as_u64().unwrap_or(u64::MAX);
            assert!(
                took <= TIMEOUT_SECONDS * 1000 + SLACK_MS,
                "an attempt of {} took {took} ms, over its timeoutSeconds {TIMEOUT_SECONDS}: {record}",
                hook.name
            );
        }
    }
}

#[test]
fn a_zone_that_never_answers_fails_its_own_attempts_in_time_and_delays_no_other_hook() {
    let dns = DnsServer::start();
    let test = DeliveryTest::new("dns-dead-zone");
    let dead = dead_hooks(&test, 20);
    // The healthy receiver closes each connection, so every delivery
    // connects, and so looks its name up (TTL 0), while the dead zone's
    // lookups hang.
    let healthy = Receiver::start(|_, _| Reply::WithHeaders(200, vec![("connection", "close".to_string())]));
    let healthy_host = format!("healthy.{LIVE_ZONE}");
    test.hook(
        "healthy",
        &healthy.url("/").replace("127.0.0.1", &healthy_host),
        json!({}),
    );
    let d = test.dispatcher(&["--dns-server", &dns.address(), "--retry-schedule", "1s"]);

    // A backlog for every dead hook: 10 events each, all in flight at once.
    let started = Instant::now();
    let mut backlog = Vec::new();
    for n in 0..10 {
        backlog.push(test.publish(&json!({ "backlog": n })));
    }
    for id in &backlog {
        healthy.wait_for_event(id, 1, Duration::from_secs(30));
    }
    let mut worst = Duration::ZERO;
    for n in 0..20 {
        let sent = Instant::now();
        let id = test.publish(&json!({ "n": n }));
        let got = healthy.wait_for_event(&id, 1, Duration::from_secs(30));
        worst = worst.max(got[0].at.duration_since(sent));
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let live_queries = dns.queries_for(&healthy_host);
    let dead_queries: Vec<usize> = (0..dead.len())
        .map(|i| dns.queries_for(&format!("dead-{i}.{DEAD_ZONE}")))
        .collect();
    eprintln!(
        "healthy hook's worst start {worst:?} over 20 events; its name asked {live_queries} times; \
         queries per dead name over {elapsed:?}: {dead_queries:?}"
    );
    assert!(worst <= BOUND, "a healthy hook's attempt waited {worst:?}");
    assert!(
        live_queries >= 20,
        "the healthy hook's deliveries did not look its name up"
    );

    assert_dns_timeouts_in_time(&test, &dead, 10);
    // One query per name at a time, not one per waiting attempt (10 waited
    // at once): a query sends at most 12 packets (A and AAAA, two tries of
    // 4 s, each sent up to three times) and lasts 8 s.
    let elapsed = started.elapsed();
    let bound = 12 * (elapsed.as_secs() as usize / 8 + 1);
    for (i, n) in dead_queries.iter().enumerate() {
        assert!(*n <= bound, "dead-{i} sent {n} queries in {elapsed:?} (bound {bound})");
    }
    assert!(d.log().contains("timed out after"), "the failures are logged");
}

#[test]
fn behind_a_proxy_the_lookup_is_inside_the_deadline_and_no_attempt_outlives_its_lease() {
    let dns = DnsServer::start();
    let test = DeliveryTest::new("dns-proxy");
    let dead = dead_hooks(&test, 5);
    // A forward proxy on loopback (an IP literal, the operator's choice): it
    // records what it is asked to forward and answers 200 itself.
    let proxy = Receiver::ok();
    let healthy = test.hook("healthy", &format!("http://healthy.{LIVE_ZONE}:8080/in"), json!({}));
    let flags = [
        "--dns-server",
        &dns.address(),
        "--proxy",
        &proxy.url(""),
        "--retry-schedule",
        "1s",
        "--task-lease",
        "1s",
    ];
    // Two replicas claim the same tasks: an attempt that outlived its lease
    // would be sent again by the other one.
    let _a = test.dispatcher_as("dns-proxy-a", &flags);
    let _b = test.dispatcher_as("dns-proxy-b", &flags);
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(test.publish(&json!({ "n": n })));
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &ids {
        let got = proxy.wait_for_event(id, 1, Duration::from_secs(30));
        assert_eq!(got[0].path, "/in");
    }
    assert_dns_timeouts_in_time(&test, &dead, 6);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in proxy.requests() {
        *seen.entry(request.event_id().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(seen.len(), ids.len(), "only the healthy hook reached the proxy");
    let _ = healthy;
}
