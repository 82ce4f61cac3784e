//! Memory bounded in bytes: a dispatcher draining a backlog of 1 MiB entries,
//! read fresh or reclaimed from a dead consumer, or retrying 1 MiB events
//! against receivers that take 8 s, stays under the chart's 256 MiB memory
//! limit (its peak resident set, `VmHWM`).

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use outbound_webhooks::store::GROUP;
use serde_json::json;
use support::{
    CREATE,
    cluster::namespace,
    delivery_test::DeliveryTest,
    hooks::create_hook,
    receiver::{Receiver, Reply},
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

/// Orgs of the retry test, each with [`HOOKS_PER_ORG`] hooks (the per-org
/// limit admits 5).
const ORGS: usize = 5;
const HOOKS_PER_ORG: usize = 4;
/// Events per org, each delivered to every hook of its org.
const EVENTS_PER_ORG: usize = 16;

#[test]
fn retrying_1_mib_events_against_receivers_that_take_8_s_stays_under_the_chart_memory_limit() {
    // 20 hooks, each with 16 retries of 1 MiB in flight at once unless
    // their bodies are bounded in bytes: the receivers fail each event's
    // first attempt at once, then take 8 s to answer its retry (an attempt
    // that long gives its in-flight slot up); half the hooks then take the
    // event, the other half fail it again (dead-lettered: 2 attempts).
    let test = DeliveryTest::new("memory-retries");
    let mut receivers = Vec::new();
    let mut orgs = Vec::new();
    for o in 0..ORGS {
        let ns = namespace(&format!("memory-retries-{o}"));
        for h in 0..HOOKS_PER_ORG {
            let accepts = (o * HOOKS_PER_ORG + h).is_multiple_of(2);
            let seen = std::sync::Mutex::new(std::collections::HashSet::new());
            let receiver = Receiver::start(move |request, _| {
                let first = seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request.event_id().to_string());
                if first {
                    return Reply::Status(500);
                }
                std::thread::sleep(Duration::from_secs(8));
                Reply::Status(if accepts { 200 } else { 500 })
            });
            create_hook(
                &ns,
                &format!("h{h}"),
                &receiver.url("/"),
                &[CREATE],
                json!({"timeoutSeconds": 15}),
            );
            receivers.push((receiver, accepts));
        }
        orgs.push(ns);
    }
    let d = test.dispatcher(&["--retry-schedule", "1s"]);
    let data = big_data();
    let mut conn = test.redis();
    for org in &orgs {
        for _ in 0..EVENTS_PER_ORG {
            let _: String = xadd_event(&test.prefix, org, CREATE, &data, None)
                .query(&mut conn)
                .expect("XADD");
        }
    }
    // Every (event, hook) ends delivered, or dead-lettered or dropped
    // (attempts exhausted, or the hook turned off meanwhile): 160 each.
    let each = ORGS * EVENTS_PER_ORG * HOOKS_PER_ORG / 2;
    let count = |outcome: &str| {
        let prefix = format!("outbound_webhooks_events_total{{outcome=\"{outcome}\"");
        let (_, body) = d.ops_get("/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    wait_for(
        "every retried event delivered or dead-lettered",
        Duration::from_secs(150),
        || {
            let (delivered, dead) = (count("delivered"), count("dead_lettered") + count("dropped"));
            if delivered == each && dead == each {
                Ok(())
            } else {
                Err(format!("{delivered} delivered and {dead} dead-lettered of {each} each"))
            }
        },
    );
    // The accepting receivers agree: each took each of its events twice
    // (no retry sent twice while its body waited for room).
    for (receiver, _) in receivers.iter().filter(|(_, accepts)| *accepts) {
        assert_eq!(
            receiver.requests().len(),
            EVENTS_PER_ORG * 2,
            "requests at an accepting receiver"
        );
    }
    let peak = d.peak_rss();
    eprintln!(
        "{}: VmHWM {:.1} MiB retrying {} x 1 MiB",
        test.name,
        peak as f64 / 1048576.0,
        ORGS * HOOKS_PER_ORG * EVENTS_PER_ORG
    );
    assert!(peak > 0 && peak < CHART_LIMIT, "VmHWM {peak} bytes");
}
