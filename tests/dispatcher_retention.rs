//! Dead-letter retention per hook: one tenant's flood (a turn-off that
//! dead-letters thousands of tasks) never pushes out another tenant's dead
//! letters, and the turn-off does not block Redis.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    receiver::{Receiver, Reply},
    redis::xadd_backlog,
    wait_for,
};

const FLOOD: usize = 2000;
const PER_HOOK: usize = 500;

#[test]
fn a_tenants_turn_off_of_thousands_of_tasks_leaves_another_tenants_dead_letters_intact() {
    let quiet = DeliveryTest::new("retention-a");
    let flood = DeliveryTest::on("retention-b", &quiet.redis_url);
    let mut redis = quiet.redis();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000)
        .query(&mut redis)
        .expect("CONFIG SET");
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query(&mut redis)
        .expect("SLOWLOG RESET");

    // Tenant A rejects three payloads and takes everything else.
    let picky = Receiver::start(|r, _| Reply::Status(if r.json()["data"]["reject"] == true { 500 } else { 200 }));
    let a = quiet.hook_to(&picky, json!({}));
    // Tenant B's endpoint is down.
    let down = Receiver::start(|_, _| Reply::Status(500));
    let b = flood.hook_to(&down, json!({}));
    // B's backlog, all in the stream before the dispatcher starts (same
    // prefix: one dispatcher serves both tenants).
    xadd_backlog(&mut redis, &quiet.prefix, &flood.ns, CREATE, FLOOD, |n| {
        json!({ "n": n }).to_string()
    });
    let rejected: Vec<String> = (0..3)
        .map(|n| quiet.publish(&json!({"reject": true, "n": n})))
        .collect();

    let d = quiet.dispatcher(&[
        "--retry-schedule",
        "2s,2s",
        "--dead-letter-max-count",
        &PER_HOOK.to_string(),
    ]);
    // A keeps succeeding meanwhile, so its rejects are dead-lettered
    // without turning it off.
    let a_letters = wait_for(
        "tenant A's three rejects to be dead-lettered",
        Duration::from_secs(60),
        || {
            quiet.publish(&json!({"ok": true}));
            std::thread::sleep(Duration::from_millis(300));
            let letters = quiet.dead_letters(Some(&a.key()));
            if letters.len() >= 3 {
                Ok(letters)
            } else {
                Err(format!("{} dead letters", letters.len()))
            }
        },
    );
    // B is turned off; its backlog is dead-lettered and then trimmed to its own bound.
    let b_count = wait_for(
        "tenant B's dead letters to be trimmed to its bound",
        Duration::from_secs(90),
        || {
            let n = quiet.dead_letters(Some(&b.key())).len();
            let trimmed = d.metric("outbound_webhooks_dead_letters_trimmed_total").unwrap_or(0.0);
            if n == PER_HOOK && trimmed > 0.0 {
                Ok(n)
            } else {
                Err(format!("{n} dead letters, {trimmed} trimmed"))
            }
        },
    );
    assert_eq!(b_count, PER_HOOK);
    let a_after = quiet.dead_letters(Some(&a.key()));
    assert_eq!(a_after, a_letters, "tenant A's dead letters survived tenant B's flood");
    for id in &rejected {
        assert!(a_after.iter().any(|l| l.contains(id)), "{id} is still dead-lettered");
    }
    let turned_off = d
        .metric("outbound_webhooks_events_total{outcome=\"dead_lettered\",reason=\"turned_off\"}")
        .unwrap_or(0.0);
    assert!(
        turned_off >= 1000.0,
        "the turn-off dead-lettered B's backlog ({turned_off})"
    );

    // Redis was never blocked for long: the slowest command of the run.
    let slow: Vec<(i64, i64, i64, Vec<String>)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query::<Vec<redis::Value>>(&mut redis)
        .expect("SLOWLOG GET")
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(parts) = entry else { return None };
            let number = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => 0,
            };
            let args = match parts.get(3) {
                Some(redis::Value::Array(a)) => a
                    .iter()
                    .take(3)
                    .map(|v| match v {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).chars().take(40).collect(),
                        _ => String::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((number(&parts[0]), number(&parts[1]), number(&parts[2]), args))
        })
        .collect();
    let worst = slow.iter().max_by_key(|e| e.2);
    eprintln!(
        "slowest Redis command during the turn-off of {turned_off} tasks: {:?} us ({} over 1 ms)",
        worst.map(|e| (e.2, &e.3)),
        slow.len()
    );
    assert!(
        worst.is_none_or(|e| e.2 < 250_000),
        "a command blocked Redis for {:?}",
        worst
    );
}
