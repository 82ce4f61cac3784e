//! Memory bounded in bytes: a dispatcher draining a backlog of 1 MiB entries,
//! read fresh or reclaimed from a dead consumer, stays under the chart's
//! 256 MiB memory limit (its peak resident set, `VmHWM`).

mod support;

use std::time::Duration;

use outbound_webhooks::dispatcher::store::GROUP;
use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    receiver::Receiver,
    redis::{create_group, xadd_event},
    wait_for,
};

/// The chart's `dispatcher.resources.limits.memory`.
const CHART_LIMIT: u64 = 256 * 1024 * 1024;
const ENTRIES: usize = 300;

/// A `data` object of about 1,000,000 bytes (an entry is at most 1 MiB).
fn big_data() -> String {
    format!(r#"{{"blob":"{}"}}"#, "x".repeat(1_000_000))
}

fn fill(test: &DeliveryTest) {
    let data = big_data();
    let mut conn = test.redis();
    for _ in 0..ENTRIES {
        let _: String = xadd_event(&test.prefix, &test.ns, CREATE, &data, None)
            .query(&mut conn)
            .expect("XADD");
    }
}

fn drain(test: &DeliveryTest, receiver: &Receiver, flags: &[&str]) -> u64 {
    let d = test.dispatcher(flags);
    wait_for("the backlog to be delivered", Duration::from_secs(240), || {
        let got = receiver.requests().len();
        if got >= ENTRIES {
            Ok(())
        } else {
            Err(format!("{got} of {ENTRIES}"))
        }
    });
    let peak = d.peak_rss();
    eprintln!(
        "{}: VmHWM {:.1} MiB draining {ENTRIES} x 1 MiB",
        test.name,
        peak as f64 / 1048576.0
    );
    peak
}

/// A hook and a backlog of 300 entries of 1 MiB for it.
fn backlog(name: &str) -> (DeliveryTest, Receiver) {
    let test = DeliveryTest::new(name);
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    fill(&test);
    (test, receiver)
}

#[test]
fn draining_300_entries_of_1_mib_stays_under_the_chart_memory_limit() {
    let (test, receiver) = backlog("memory-read");
    let peak = drain(&test, &receiver, &[]);
    assert!(peak > 0 && peak < CHART_LIMIT, "VmHWM {peak} bytes");
}

#[test]
fn reclaiming_300_entries_of_1_mib_from_a_dead_consumer_stays_under_the_chart_memory_limit() {
    let (test, receiver) = backlog("memory-reclaim");
    // A consumer that read everything and died: all 300 entries pending on it.
    let mut conn = test.redis();
    create_group(&mut conn, &test.prefix);
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead")
        .arg("COUNT")
        .arg(ENTRIES)
        .arg("STREAMS")
        .arg(test.keys().events())
        .arg(">")
        .query(&mut conn)
        .expect("XREADGROUP as the dead consumer");
    drop(read);
    let peak = drain(&test, &receiver, &["--reclaim-idle", "1s"]);
    assert!(peak > 0 && peak < CHART_LIMIT, "VmHWM {peak} bytes");
}
