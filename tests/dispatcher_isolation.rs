//! Isolation whatever the number of slow hooks: many hooks that hang (more
//! hanging hooks x per-hook bound than the replica's in-flight slots) never
//! delay a healthy hook's first attempts beyond the documented bound
//! (docs/src/guarantees.md#isolation-from-slow-hooks).

use outbound_webhooks_test_kit as support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    delivery_test::DeliveryTest,
    receiver::{Receiver, Reply},
};

/// docs/src/guarantees.md#isolation-from-slow-hooks: a healthy hook's attempt starts within this of its
/// event being read, however many hooks hang (general slots free up within
/// 100 ms; the rest is this machine's scheduling, two cores shared with
/// the control plane).
const BOUND: Duration = Duration::from_millis(1500);

/// `hanging` hooks whose receiver never answers and one healthy hook, all
/// subscribed to the same events of one org; 20 events; the healthy hook's
/// worst time from publish to arrival.
fn worst_healthy_start(name: &str, hanging: usize, flags: &[&str]) -> Duration {
    let test = DeliveryTest::new(name);
    let stuck = Receiver::start(|_, _| Reply::Hang);
    for i in 0..hanging {
        test.hook(&format!("hang-{i}"), &stuck.url("/"), json!({"timeoutSeconds": 30}));
    }
    let healthy = Receiver::ok();
    test.hook("healthy", &healthy.url("/"), json!({}));
    let d = test.dispatcher(flags);
    let mut worst = Duration::ZERO;
    for n in 0..20 {
        let sent = Instant::now();
        let id = test.publish(&json!({ "n": n }));
        let got = healthy.wait_for_event(&id, 1, Duration::from_secs(60));
        if got[0].at.duration_since(sent) > BOUND {
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "event {n} ({id}) took {:?}; log tail:\n{}",
                got[0].at.duration_since(sent),
                tail.join("\n")
            );
        }
        worst = worst.max(got[0].at.duration_since(sent));
        std::thread::sleep(Duration::from_millis(50));
    }
    let hung = stuck.requests().len();
    eprintln!("{name}: {hanging} hanging hooks held {hung} requests; the healthy hook's worst start {worst:?}");
    assert!(hung > 0, "the hanging hooks got requests");
    worst
}

#[test]
fn twenty_hanging_hooks_filling_256_slots_do_not_delay_a_healthy_hook() {
    // 20 x 16 per hook = 320 attempts would fill the 256 slots (the
    // default is 4,096, which 20 hooks cannot fill).
    let worst = worst_healthy_start("isolation-256", 20, &["--max-in-flight", "256"]);
    assert!(worst <= BOUND, "a healthy hook's first attempt waited {worst:?}");
}

#[test]
fn hanging_hooks_do_not_delay_a_healthy_hook_with_a_small_max_in_flight() {
    // 5 x 4 per hook = 20 attempts would fill the 8 slots.
    let flags = ["--max-in-flight", "8", "--max-in-flight-per-hook", "4"];
    let worst = worst_healthy_start("isolation-small", 5, &flags);
    assert!(worst <= BOUND, "a healthy hook's first attempt waited {worst:?}");
}
