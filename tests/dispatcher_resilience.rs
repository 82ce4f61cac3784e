//! No loss and no head-of-line blocking: a slow endpoint, dispatchers killed
//! with SIGKILL, Redis restarted from its AOF and flushed.

use outbound_webhooks_test_kit as support;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use outbound_webhooks::store::GROUP;
use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    hooks::create_hook,
    receiver::{Receiver, Reply},
    redis::{RedisServer, create_group, due_count, publish, xadd_backlog},
    wait_for,
};

const USER: &str = "kustomer.user.create";

/// The bound a healthy hook's deliveries must meet while another hook hangs.
const ISOLATION_BOUND: Duration = Duration::from_millis(1500);

#[test]
fn an_endpoint_that_never_answers_does_not_delay_another_hook() {
    let test = DeliveryTest::new("isolation");
    let (hanging, fast, _d) = hanging_and_fast_hooks(&test);

    // Far more hanging deliveries than the per-hook bound (16).
    for i in 0..60 {
        test.publish_event(USER, &json!({"i": i}));
    }
    wait_for("the hanging hook to be saturated", Duration::from_secs(30), || {
        let n = hanging.requests().len();
        if n >= 16 { Ok(()) } else { Err(format!("{n} in flight")) }
    });
    let worst = worst_latency_of_20(&test, &fast);
    eprintln!("worst delivery latency of the healthy hook while the other hangs: {worst:?}");
    assert_isolated(worst, &hanging);
}

/// A hook whose endpoint never answers (subscribed to [`USER`]), a healthy
/// one (subscribed to [`CREATE`]) and a dispatcher.
fn hanging_and_fast_hooks(test: &DeliveryTest) -> (Receiver, Receiver, support::dispatcher::Dispatcher) {
    let hanging = Receiver::start(|_, _| Reply::Hang);
    let fast = Receiver::ok();
    create_hook(
        &test.ns,
        "hanging",
        &hanging.url("/"),
        &[USER],
        json!({"timeoutSeconds": 30}),
    );
    test.hook("fast", &fast.url("/"), json!({}));
    let dispatcher = test.dispatcher(&[]);
    (hanging, fast, dispatcher)
}

/// The worst latency of 20 events to the healthy hook, one after another.
fn worst_latency_of_20(test: &DeliveryTest, fast: &Receiver) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        let id = test.publish(&json!({"i": i}));
        let got = fast.wait_for_event(&id, 1, Duration::from_secs(30));
        worst = worst.max(got[0].at - sent);
    }
    worst
}

/// The healthy hook met the bound and the hanging one never had more than
/// its 16 attempts in flight.
fn assert_isolated(worst: Duration, hanging: &Receiver) {
    assert!(
        worst < ISOLATION_BOUND,
        "worst latency {worst:?} exceeds {ISOLATION_BOUND:?}"
    );
    assert!(
        hanging.requests().len() <= 16,
        "the per-hook bound was not kept: {}",
        hanging.requests().len()
    );
}

#[test]
fn a_hanging_hook_with_a_backlog_of_thousands_does_not_hide_another_hooks_tasks() {
    // More held-back tasks than any scan of one shared due set would look at:
    // the claim must skip the hook at its limit, not wade through its backlog.
    const BACKLOG: usize = 6_000;
    let test = DeliveryTest::new("isolation-backlog");
    let (hanging, fast, _d) = hanging_and_fast_hooks(&test);

    let mut conn = test.redis();
    xadd_backlog(&mut conn, &test.prefix, &test.ns, USER, BACKLOG, |i| {
        format!("{{\"i\":{i}}}")
    });
    // All but the 16 first attempts in flight (their entries held) are
    // stored as tasks: the hanging hook's slots are busy and slow.
    wait_for("the backlog to be stored as tasks", Duration::from_secs(60), || {
        let due = due_count(&mut conn, &test.prefix)?;
        if due >= BACKLOG - 16 {
            Ok(())
        } else {
            Err(format!("{due} tasks"))
        }
    });

    let worst = worst_latency_of_20(&test, &fast);
    eprintln!("worst delivery latency of the healthy hook behind a backlog of {BACKLOG}: {worst:?}");
    assert_isolated(worst, &hanging);
}

#[test]
fn two_dispatchers_deliver_1000_events_although_one_is_killed_repeatedly() {
    let test = DeliveryTest::new("kill9");
    let (ns, prefix, url) = (test.ns.clone(), test.prefix.clone(), test.redis_url.clone());
    let successes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let receiver = {
        let successes = successes.clone();
        Receiver::start(move |r, nth| {
            let mut b = [0u8; 1];
            getrandom::fill(&mut b).unwrap();
            // About 30% of first attempts fail, so retries are in flight.
            if nth == 1 && b[0] < 77 {
                Reply::Status(500)
            } else {
                *successes.lock().unwrap().entry(r.event_id().to_string()).or_default() += 1;
                Reply::Status(200)
            }
        })
    };
    test.hook_to(&receiver, json!({}));
    let more = [
        "--retry-schedule",
        "200ms,400ms,800ms,1s,2s,5s",
        "--task-lease",
        "12s",
        "--reclaim-idle",
        "2s",
    ];
    let _steady = test.dispatcher_as("steady", &more);
    let mut victim = test.dispatcher_as("victim", &more);

    let started = Instant::now();
    let publishing = {
        let (url, prefix, ns) = (url.clone(), prefix.clone(), ns.clone());
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            for i in 0..1000 {
                ids.push(publish(&url, &prefix, &ns, CREATE, &json!({"i": i})));
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
            ids
        })
    };
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        victim.kill();
        std::thread::sleep(Duration::from_millis(300));
        victim.restart();
    }
    let ids = publishing.join().unwrap();
    let expected: HashSet<String> = ids.into_iter().collect();
    assert_eq!(expected.len(), 1000);
    wait_for("every event delivered", Duration::from_secs(120), || {
        let delivered: HashSet<String> = successes.lock().unwrap().keys().cloned().collect();
        let missing = expected.difference(&delivered).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} missing"))
        }
    });
    let elapsed = started.elapsed();
    let successes = successes.lock().unwrap().clone();
    let duplicates: usize = successes.values().map(|n| n - 1).sum();
    let requests = receiver.requests().len();
    eprintln!(
        "1000 events delivered in {elapsed:?} with one of two dispatchers SIGKILLed 3 times: {requests} requests, {duplicates} duplicate successful deliveries ({:.1} per kill)",
        duplicates as f64 / 3.0
    );
    assert_eq!(successes.len(), 1000, "every event got a successful delivery");
    // A kill can duplicate at most what the killed replica held: entries it
    // read and had not acknowledged (at most 300) and tasks it had claimed
    // (at most --max-in-flight, 256).
    assert!(duplicates <= 3 * (300 + 256), "{duplicates} duplicates in 3 kills");
}

#[test]
fn dispatchers_recover_from_a_redis_restart_with_aof_and_from_a_flush() {
    let mut redis = RedisServer::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let test = DeliveryTest::on("redis-restart", &redis.url());
    // Every first attempt fails, so retries are scheduled in Redis when it goes down.
    let receiver = Receiver::start(|_, nth| Reply::Status(if nth == 1 { 500 } else { 200 }));
    test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher_as("restart", &["--retry-schedule", "200ms,500ms,1s,2s,5s"]);

    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(test.publish(&json!({"i": i})));
    }
    redis.restart(Duration::from_secs(2));
    for i in 50..100 {
        ids.push(test.publish(&json!({"i": i})));
    }
    // Delivered means the second (successful) attempt arrived.
    for id in &ids {
        receiver.wait_for_event(id, 2, Duration::from_secs(60));
    }

    // A flush loses the consumer group; the dispatcher recreates it.
    let _: () = redis::cmd("FLUSHALL").query(&mut test.redis()).unwrap();
    test.publish_until(
        "delivery after FLUSHALL",
        &receiver,
        &json!({"after": "flush"}),
        Duration::from_millis(1500),
        2,
        Duration::from_secs(60),
    );
}

#[test]
fn sigterm_finishes_the_attempt_in_flight_and_exits() {
    let test = DeliveryTest::new("sigterm");
    let receiver = Receiver::slow(Duration::from_millis(1500));
    let hook = test.hook_to(&receiver, json!({"timeoutSeconds": 5}));
    let mut d = test.dispatcher(&[]);
    let id = test.publish(&json!({}));
    receiver.wait_for_event(&id, 1, Duration::from_secs(30));
    let exited = d.terminate(Duration::from_secs(30));
    assert_eq!(exited, Some(true), "the dispatcher did not exit cleanly on SIGTERM");
    // The attempt finished: the task is gone from Redis, and status says so.
    let due = due_count(&mut test.redis(), &test.prefix).unwrap();
    assert_eq!(due, 0, "the in-flight task was neither finished nor released");
    assert!(hook.delivery()["lastSuccessTime"].is_string(), "{}", hook.delivery());
}

#[test]
fn entries_left_pending_by_a_dead_replica_are_reclaimed() {
    let test = DeliveryTest::new("reclaim");
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let stream = test.keys().events();
    let mut conn = test.redis();
    create_group(&mut conn, &test.prefix);
    let ids: Vec<String> = (0..5).map(|i| test.publish(&json!({"i": i}))).collect();
    // A replica reads them and dies before storing any task.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead-replica")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let _d = test.dispatcher_as("survivor", &["--reclaim-idle", "1s"]);
    for id in &ids {
        receiver.wait_for_event(id, 1, Duration::from_secs(30));
    }
}

#[test]
fn a_first_attempt_slower_than_reclaim_idle_is_not_taken_over_by_another_replica() {
    // First attempts run while their stream entry is still pending; a
    // replica must renew what it holds, or another one would reclaim the
    // entry as abandoned and send the event a second time.
    let test = DeliveryTest::new("held");
    let receiver = Receiver::slow(Duration::from_millis(4000));
    test.hook_to(&receiver, json!({"timeoutSeconds": 10}));
    let more = ["--reclaim-idle", "1s"];
    let a = test.dispatcher_as("held-a", &more);
    let b = test.dispatcher_as("held-b", &more);
    let ids: Vec<String> = (0..3).map(|i| test.publish(&json!({"i": i}))).collect();
    for id in &ids {
        receiver.wait_for_event(id, 1, Duration::from_secs(30));
    }
    let stream = test.keys().events();
    let mut conn = test.redis();
    wait_for("every entry acknowledged", Duration::from_secs(20), || {
        let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(GROUP)
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        match pending.count() {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    });
    for id in &ids {
        assert_eq!(
            receiver.requests_for(id).len(),
            1,
            "event {id} was sent more than once: its entry was taken over while its first attempt ran"
        );
    }
    let direct = |d: &support::dispatcher::Dispatcher| {
        d.metric("outbound_webhooks_first_deliveries_total{path=\"direct\"}")
            .unwrap_or(0.0)
    };
    assert_eq!(
        direct(&a) + direct(&b),
        3.0,
        "every first attempt ran straight from the stream"
    );
}

/// `faketime` (Debian's libfaketime), or a failure saying how to get it.
fn faketime() -> &'static str {
    let found = std::process::Command::new("faketime")
        .args(["-f", "+0s", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test runs a dispatcher under `faketime`: install Debian's faketime \
         (`apt-get install faketime`, or run scripts/install-tools.sh)"
    );
    "faketime"
}

/// The first timestamp of a dispatcher's log (its own wall clock).
fn first_log_time(log: &str) -> Option<jiff::Timestamp> {
    // Drop the ANSI colour sequences around the timestamp.
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().find_map(|word| word.parse().ok())
}

#[test]
fn a_replica_whose_clock_is_20s_ahead_never_sends_an_event_while_another_attempt_of_it_runs() {
    // Leases are compared by Redis's clock: a replica 20 s ahead must not
    // take a task whose lease (the attempt's 30 s timeout + 5 s) another
    // replica holds while its 25 s attempt runs.
    let faketime = faketime();
    let test = DeliveryTest::new("skew");
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let overlaps: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver = {
        let (in_flight, overlaps) = (in_flight.clone(), overlaps.clone());
        Receiver::start(move |request, nth| {
            let id = request.event_id().to_string();
            {
                let mut in_flight = in_flight.lock().unwrap();
                let running = in_flight.entry(id.clone()).or_default();
                *running += 1;
                if *running > 1 {
                    overlaps
                        .lock()
                        .unwrap()
                        .push(format!("attempt {nth} of {id} arrived while {} ran", *running - 1));
                }
            }
            std::thread::sleep(Duration::from_secs(25));
            *in_flight.lock().unwrap().get_mut(&id).expect("counted") -= 1;
            Reply::Status(500)
        })
    };
    test.hook_to(&receiver, json!({"timeoutSeconds": 30}));
    let more = ["--retry-schedule", "1s,1s,1s,1s,1s,1s,1s,1s"];
    let _on_time = test.dispatcher_as("skew-on-time", &more);
    let id = test.publish(&json!({"n": 1}));
    // The first attempt fails after 25 s; the retry is claimed by the only
    // replica. While it runs, a replica 20 s ahead joins.
    receiver.wait_for_event(&id, 2, Duration::from_secs(60));
    let joined = jiff::Timestamp::now();
    let ahead =
        support::dispatcher::Dispatcher::start_wrapped(&[faketime, "-f", "+20s"], test.args("skew-ahead", &more));
    let ahead_by = first_log_time(&ahead.log())
        .map(|t| t.duration_since(joined).as_secs_f64())
        .unwrap_or_default();
    assert!(
        ahead_by >= 15.0,
        "libfaketime did not move the dispatcher's clock 20 s ahead (its log starts {ahead_by:.1} s after it was started)"
    );
    // Two more attempts (the second retry by either replica, the third
    // begun), none while another runs.
    wait_for("the fourth attempt", Duration::from_secs(90), || {
        let overlaps = overlaps.lock().unwrap();
        assert!(
            overlaps.is_empty(),
            "an event was sent while another attempt of it ran: {overlaps:?}"
        );
        match receiver.requests_for(&id).len() {
            n if n >= 4 => Ok(()),
            n => Err(format!("{n} attempts")),
        }
    });
    assert!(overlaps.lock().unwrap().is_empty(), "{:?}", overlaps.lock().unwrap());
}
