//! Redis bytes per org (docs/src/tenant-bounds.md#redis-bytes-per-org): one org flooding 1 MiB
//! events into a hook that waits (its header Secret is missing) stays
//! within `--org-max-stored-bytes`; the excess is dead-lettered without its
//! body and counted `org_over_budget`, the hook's status says so, and
//! another org on the same Redis publishes and delivers throughout. The
//! Namespace annotation raises one org's budget alone.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::json;
use support::{
    CREATE,
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    hooks::{self, condition},
    kubectl::{kubectl_ok, wait_event},
    namespace,
    receiver::Receiver,
    redis::{self as test_redis, RedisServer},
    redis_topologies::info_field,
    wait_for,
};

const MIB: i64 = 1024 * 1024;
/// The org's budget in the test (the default, stated as the flag).
const BUDGET: i64 = 64 * MIB;
/// Events of 1,000,000 bytes the flooding org publishes: half again as
/// many bytes as its budget.
const FLOOD: usize = 96;
/// What Redis may use besides the org's budget: the other org, the stream
/// entries not yet trimmed (read, routed and acknowledged entries are
/// trimmed every 300 ms), keys and allocator slack.
const OVERHEAD: i64 = 32 * MIB;

fn used_memory(url: &str) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut test_redis::connect(url))
        .expect("INFO memory");
    info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .expect("used_memory in INFO")
}

fn events_metric(d: &support::dispatcher::Dispatcher, outcome: &str, reason: &str) -> f64 {
    d.metric(&format!(
        "outbound_webhooks_events_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn a_flooding_org_stays_within_its_budget_and_another_org_delivers_throughout() {
    let redis = RedisServer::start(&["--maxmemory", "400mb", "--maxmemory-policy", "noeviction"]);
    let url = redis.url();
    let flood = DeliveryTest::on("budget-flood", &url);
    // The waiting hook: its header names a Secret that does not exist, so
    // every event of its org is kept whole as a waiting task.
    let waiting = flood.hook(
        "waits",
        "http://127.0.0.1:9/never",
        json!({
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "auth"}}}]
        }),
    );
    // Another org on the same stream and Redis.
    let other_ns = namespace("budget-other");
    let receiver = Receiver::ok();
    let _other_hook = hooks::create_hook(&other_ns, "h", &receiver.url("/"), &[CREATE], json!({}));
    let publish_other = |n: usize| test_redis::publish(&url, &flood.prefix, &other_ns, CREATE, &json!({"other": n}));

    // The controller computes the Delivering message and publishes the
    // Warning (it also turns SecretReady False: the header Secret is
    // missing, and the events wait).
    let _controller = ControllerProcess::scoped("budget", &flood.ns, &unique_lease("budget"), &["--allow-http"]);
    let d = flood.dispatcher(&["--org-max-stored-bytes", "64Mi"]);
    wait_for("the memory gauges", Duration::from_secs(10), || {
        match d.metric("outbound_webhooks_redis_maxmemory_bytes{shard=\"0\"}") {
            Some(v) if v == 400.0 * 1_000_000.0 || v == 400.0 * MIB as f64 => Ok(()),
            other => Err(format!("maxmemory gauge {other:?}")),
        }
    });
    let first = publish_other(0);
    receiver.wait_for_event(&first, 1, Duration::from_secs(15));
    let baseline = used_memory(&url);

    let body = "x".repeat(1_000_000);
    let mut peak = baseline;
    let mut other_ids = Vec::new();
    for i in 0..FLOOD {
        flood.publish(&json!({"n": i, "pad": body}));
        peak = peak.max(used_memory(&url));
        if i % 8 == 0 {
            // Publishes of the other org never fail, and its events arrive
            // while the flood goes on.
            let id = publish_other(i + 1);
            receiver.wait_for_event(&id, 1, Duration::from_secs(15));
            other_ids.push(id);
        }
    }
    wait_for(
        "every event of the flood to be kept or refused",
        Duration::from_secs(60),
        || {
            let refused =
                events_metric(&d, "dead_lettered", "org_over_budget") + events_metric(&d, "dropped", "org_over_budget");
            let kept = d.metric("outbound_webhooks_tasks_scheduled").unwrap_or(0.0);
            peak = peak.max(used_memory(&url));
            if refused + kept >= FLOOD as f64 {
                Ok(())
            } else {
                Err(format!(
                    "{kept} kept, {refused} refused of {FLOOD}; events {:?}; hook {}",
                    d.ops_get("/metrics").map(|(_, b)| b
                        .lines()
                        .filter(|l| l.starts_with("outbound_webhooks_events_total"))
                        .collect::<Vec<_>>()
                        .join("; ")),
                    waiting.get()["status"]
                ))
            }
        },
    );
    let refused = events_metric(&d, "dead_lettered", "org_over_budget");
    let kept = d.metric("outbound_webhooks_tasks_scheduled").unwrap_or(0.0);
    let stored = d
        .metric("outbound_webhooks_redis_stored_bytes{shard=\"0\"}")
        .unwrap_or(0.0);
    let used = used_memory(&url);
    println!(
        "flood of {FLOOD} x 1,000,000 bytes, budget 64 MiB: {kept} kept, {refused} dead-lettered without body; \
         stored {:.1} MiB; used_memory baseline {:.1} MiB, peak {:.1} MiB, end {:.1} MiB",
        stored / MIB as f64,
        baseline as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        used as f64 / MIB as f64
    );
    assert!(refused > 0.0, "nothing was refused: {kept} kept");
    assert!(
        (kept as i64) * 1_000_000 <= BUDGET,
        "{kept} events of 1,000,000 bytes kept within a 64 MiB budget"
    );
    assert!(
        stored as i64 <= BUDGET,
        "the org's stored bytes {stored} exceed its budget"
    );
    assert!(
        peak <= baseline + BUDGET + OVERHEAD,
        "Redis used_memory peaked at {:.1} MiB, more than the baseline {:.1} MiB + the 64 MiB budget + {} MiB",
        peak as f64 / MIB as f64,
        baseline as f64 / MIB as f64,
        OVERHEAD / MIB
    );
    // The hook shows it; nothing was attempted.
    let delivery = waiting.wait_delivery("status.delivery.overBudget", |d| {
        d["overBudget"]["events"].as_f64() == Some(refused)
    });
    assert_eq!(delivery["overBudget"]["budgetBytes"], json!(BUDGET), "{delivery}");
    assert!(delivery["consecutiveFailures"].as_i64().unwrap_or(0) == 0, "{delivery}");
    let delivering = wait_for("Delivering to say so", Duration::from_secs(30), || {
        let c = condition(&flood.ns, "waits", "Delivering").ok_or("no Delivering condition")?;
        if c.message
            .contains("not kept (org_over_budget): the org's bytes in Redis reached its budget of 64Mi")
        {
            Ok(c.message)
        } else {
            Err(c.message)
        }
    });
    println!("Delivering: {delivering}");
    wait_event(&flood.ns, "waits", "OrgOverBudget", "not kept (org_over_budget)");
    // The dead letters say why, without the body.
    let letters = flood.dead_letters(Some(&waiting.key()));
    assert!(
        letters.iter().any(|l| l.contains("org_over_budget")) && letters.iter().all(|l| !l.contains(&body[..1000])),
        "{} letters; first: {:?}",
        letters.len(),
        letters.first().map(|l| &l[..l.len().min(300)])
    );
    // The other org still delivers.
    let last = publish_other(FLOOD + 1);
    receiver.wait_for_event(&last, 1, Duration::from_secs(15));

    // A Namespace annotation raises the flooding org's budget alone: more
    // of its events are kept.
    kubectl_ok(&[
        "annotate",
        "namespace",
        &flood.ns,
        "outboundwebhooks.io/max-stored-bytes=96Mi",
    ]);
    let kept_before = kept;
    wait_for(
        "events to be kept under the annotation's budget",
        Duration::from_secs(30),
        || {
            flood.publish(&json!({"more": true, "pad": body}));
            let kept = d.metric("outbound_webhooks_tasks_scheduled").unwrap_or(0.0);
            if kept > kept_before + 10.0 {
                Ok(())
            } else {
                Err(format!("{kept} kept (before: {kept_before})"))
            }
        },
    );
    let stored = d
        .metric("outbound_webhooks_redis_stored_bytes{shard=\"0\"}")
        .unwrap_or(0.0);
    assert!(stored as i64 <= 96 * MIB, "stored {stored} past the annotation's 96Mi");
}
