//! `spec.rateLimit` and `spec.maxConcurrentRequests` hold across dispatcher
//! replicas (docs/src/contract.md#filters-rate-limits-and-traces): two
//! replicas share one hook's limits, events over them wait without
//! counting a failure, and every event arrives.

use outbound_webhooks_test_kit as support;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    delivery_test::DeliveryTest,
    dispatcher::Dispatcher,
    receiver::{Receiver, Reply},
    wait_for,
};

/// The delivered and failed attempts both replicas counted.
fn attempts(replicas: &[&Dispatcher]) -> (f64, f64) {
    let sum = |series: &str| replicas.iter().map(|d| d.metric(series).unwrap_or(0.0)).sum::<f64>();
    let failed: f64 = ["4xx", "5xx", "none"]
        .iter()
        .map(|class| {
            sum(&format!(
                "outbound_webhooks_delivery_attempts_total{{outcome=\"failed\",status_class=\"{class}\"}}"
            ))
        })
        .sum();
    (
        sum("outbound_webhooks_delivery_attempts_total{outcome=\"delivered\",status_class=\"2xx\"}"),
        failed,
    )
}

#[test]
fn two_replicas_keep_a_hook_to_20_requests_a_second_after_its_burst_and_deliver_all_400() {
    let test = DeliveryTest::new("rate-limit");
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({"rateLimit": {"requestsPerSecond": 20, "burst": 5}}));
    let ids: Vec<String> = (0..400).map(|n| test.publish(&json!({ "n": n }))).collect();
    let a = test.dispatcher_as("rate-a", &[]);
    let b = test.dispatcher_as("rate-b", &[]);
    let started = Instant::now();
    let arrived = wait_for("400 events at the receiver", Duration::from_secs(90), || {
        let got = receiver.requests();
        if got.len() >= 400 {
            Ok(got)
        } else {
            Err(format!("{} so far", got.len()))
        }
    });
    let took = started.elapsed();
    let distinct: HashSet<&str> = arrived.iter().map(|r| r.event_id()).collect();
    assert_eq!(distinct.len(), 400, "every event arrived once");
    assert!(ids.iter().all(|id| distinct.contains(id.as_str())));
    // Every 1 s window that starts after the burst's five requests holds at
    // most 20 x 1.1 requests.
    let mut times: Vec<Instant> = arrived.iter().map(|r| r.at).collect();
    times.sort();
    let mut worst = 0;
    for (i, start) in times.iter().enumerate().skip(5) {
        let in_window = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    let in_first_second = times
        .iter()
        .take_while(|t| t.duration_since(times[0]) < Duration::from_secs(1))
        .count();
    eprintln!(
        "400 events in {took:?} ({:.1}/s from first to last arrival); busiest 1 s window after the burst: {worst}; first second: {in_first_second}",
        399.0 / times[399].duration_since(times[0]).as_secs_f64()
    );
    assert!(
        worst <= 22,
        "a 1 s window held {worst} requests (limit 20/s, 10% allowed)"
    );
    assert!(
        worst >= 18,
        "the limit, not something slower, set the pace ({worst} in the busiest window)"
    );
    // Both replicas sent some, and no attempt failed.
    let counts = wait_for("both replicas' counts add up to 400", Duration::from_secs(10), || {
        let (da, fa) = attempts(&[&a]);
        let (db, fb) = attempts(&[&b]);
        if da + db >= 400.0 {
            Ok((da, db, fa + fb))
        } else {
            Err(format!("{da} + {db}"))
        }
    });
    eprintln!(
        "delivered by the replicas: {} and {}; failed attempts: {}",
        counts.0, counts.1, counts.2
    );
    assert!(counts.0 > 0.0 && counts.1 > 0.0, "both replicas delivered: {counts:?}");
    assert_eq!(counts.2, 0.0, "waiting for the rate counts no failure");
    let waits: f64 = [&a, &b]
        .iter()
        .map(|d| {
            d.metric("outbound_webhooks_hook_limit_waits_total{limit=\"rate\"}")
                .unwrap_or(0.0)
        })
        .sum();
    assert!(waits > 0.0, "claims held the hook back by its rate");
    let failures = hook
        .delivery()
        .get("consecutiveFailures")
        .and_then(|f| f.as_i64())
        .unwrap_or(0);
    assert_eq!(failures, 0, "{}", hook.delivery());
}

#[test]
fn two_replicas_never_have_more_than_two_requests_in_flight_to_a_hook_with_max_concurrent_requests_2() {
    let test = DeliveryTest::new("max-concurrent");
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (running, peak) = (now.clone(), most.clone());
    let receiver = Receiver::start(move |_, _| {
        let in_flight = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(in_flight, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        running.fetch_sub(1, Ordering::SeqCst);
        Reply::Status(200)
    });
    test.hook_to(&receiver, json!({"maxConcurrentRequests": 2}));
    let ids: Vec<String> = (0..16).map(|n| test.publish(&json!({ "n": n }))).collect();
    let a = test.dispatcher_as("conc-a", &[]);
    let b = test.dispatcher_as("conc-b", &[]);
    for id in &ids {
        receiver.wait_for_event(id, 1, Duration::from_secs(60));
    }
    let peak = most.load(Ordering::SeqCst);
    eprintln!("16 events of 400 ms each, at most {peak} in flight");
    assert_eq!(peak, 2, "never more than 2 in flight, and the limit was reached");
    assert_eq!(receiver.requests().len(), 16, "each event once");
    let failed = wait_for("16 delivered attempts counted", Duration::from_secs(10), || {
        let (delivered, failed) = attempts(&[&a, &b]);
        if delivered >= 16.0 {
            Ok(failed)
        } else {
            Err(format!("{delivered} delivered"))
        }
    });
    assert_eq!(failed, 0.0);
}
