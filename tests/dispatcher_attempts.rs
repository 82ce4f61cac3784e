//! The attempts log (`outbound-webhooks attempts`) and test events
//! (`publish --hook`), end to end: real Redis, API server, receivers and
//! dispatcher processes.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    dispatcher::{Dispatcher, args_without_allow_list, run_cli, try_cli},
    hooks::{TestHook, create_hook},
    receiver::{Receiver, Reply},
    wait_for,
};

/// `attempts --hook HOOK` with `extra` flags, as a user runs it.
fn attempts(test: &DeliveryTest, hook: &str, extra: &[&str]) -> String {
    run_cli(&test.attempts_args(hook, extra))
}

/// The attempts log as JSON objects, newest first.
fn attempts_json(test: &DeliveryTest, hook: &TestHook, limit: usize) -> Vec<Value> {
    test.attempts_json(hook, limit)
}

/// Waits until the newest record is an attempt of `event_id`.
fn wait_logged(test: &DeliveryTest, hook: &TestHook, event_id: &str) -> Vec<Value> {
    wait_for(
        &format!("the attempt of {event_id} in the log"),
        Duration::from_secs(30),
        || {
            let log = attempts_json(test, hook, 100);
            match log.first() {
                Some(newest) if newest["eventId"] == event_id => Ok(log),
                _ => Err(format!("{log:?}")),
            }
        },
    )
}

#[test]
fn attempts_lists_200_500_timeout_and_refused_address_newest_first_without_bodies_headers_or_tokens() {
    let test = DeliveryTest::new("attempts-log");
    let body_marker = "body-marker-6b1f0c";
    let header_marker = "header-value-marker-93ad";
    // The first event answered 200, the second 500, the third never.
    let receiver = Receiver::start(|request, _| match request.json()["data"]["step"].as_i64() {
        Some(1) => Reply::Status(200),
        Some(2) => Reply::Status(500),
        _ => Reply::Hang,
    });
    let hook = test.hook_to(
        &receiver,
        json!({
            "timeoutSeconds": 1,
            "headers": [{"name": "X-Marker", "value": header_marker}],
        }),
    );
    // No retry within the test: one attempt per event.
    let mut d = test.dispatcher(&["--retry-schedule", "1h"]);
    let mut ids = Vec::new();
    for step in 1..=3 {
        let id = test.publish(&json!({"step": step, "marker": body_marker}));
        receiver.wait_for_event(&id, 1, Duration::from_secs(30));
        wait_logged(&test, &hook, &id);
        ids.push(id);
    }
    // A dispatcher without the loopback allow-list refuses the hook's
    // address. (The first one stops gracefully: it acknowledges what it
    // holds, so nothing is read again by the second.)
    assert_eq!(d.terminate(Duration::from_secs(20)), Some(true));
    let _strict = Dispatcher::start(args_without_allow_list(
        &test.redis_url,
        &test.prefix,
        "attempts-strict",
        &["--retry-schedule", "1h"],
    ));
    let refused = test.publish(&json!({"step": 4, "marker": body_marker}));
    wait_logged(&test, &hook, &refused);
    ids.push(refused);

    let table = attempts(&test, &hook.key(), &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "EVENT", "NAME", "ATTEMPT", "OUTCOME", "CODE", "MS", "ERROR"],
        "{table}"
    );
    // Newest first: refused, timeout, 500, 200.
    let expected = [
        (&ids[3], "refused_address", "-", "refused destination"),
        (&ids[2], "timeout", "-", "no response within 1s"),
        (&ids[1], "failed", "500", "HTTP 500 Internal Server Error"),
        (&ids[0], "delivered", "200", ""),
    ];
    for (line, (id, outcome, code, error)) in lines[1..].iter().zip(expected) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(
            cols[0].parse::<jiff::Timestamp>().is_ok() && cols[0].len() == 20,
            "{line}"
        );
        assert_eq!(cols[1], id.as_str(), "{table}");
        assert_eq!(cols[2], CREATE, "{line}");
        assert_eq!(cols[3], "1", "{line}");
        assert_eq!(cols[4], outcome, "{table}");
        assert_eq!(cols[5], code, "{line}");
        assert!(cols[6].parse::<u64>().is_ok(), "{line}");
        assert!(line.contains(error), "{line}");
    }
    let timeout_ms: u64 = lines[2].split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(timeout_ms >= 1000, "the timeout took {timeout_ms} ms");

    // JSON for scripts carries the same, newest first.
    let log = attempts_json(&test, &hook, 20);
    let outcomes: Vec<&str> = log.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["refused_address", "timeout", "failed", "delivered"]);
    assert_eq!(log[2]["code"], 500);
    assert_eq!(log[0]["code"], Value::Null);
    assert_eq!(log[3]["error"], Value::Null);
    assert_eq!(log[0]["eventName"], CREATE);
    assert_eq!(attempts_json(&test, &hook, 2).len(), 2, "--limit");

    // Never a request body, a response body, a header value or the token.
    let json_out = attempts(&test, &hook.key(), &["-o", "json"]);
    for out in [&table, &json_out] {
        for secret in [body_marker, header_marker, "receiver says so", hook.token.as_str()] {
            assert!(!out.contains(secret), "the output shows {secret:?}: {out}");
        }
    }

    // The same texts reach status.
    hook.wait_delivery("the refused address in status", |d| {
        d["lastFailure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused destination"))
    });
}

#[test]
fn the_attempts_log_keeps_the_newest_attempts_log_size_per_hook_and_names_missing_hooks() {
    let test = DeliveryTest::new("attempts-bound");
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--attempts-log-size", "5"]);
    let mut ids = Vec::new();
    for n in 0..8 {
        let id = test.publish(&json!({"n": n}));
        receiver.wait_for_event(&id, 1, Duration::from_secs(30));
        ids.push(id);
    }
    let log = wait_logged(&test, &hook, ids.last().unwrap());
    let logged: Vec<&str> = log.iter().map(|r| r["eventId"].as_str().unwrap()).collect();
    let newest: Vec<&str> = ids.iter().rev().take(5).map(String::as_str).collect();
    assert_eq!(logged, newest);
    let stored: usize = ::redis::cmd("LLEN")
        .arg(test.keys().attempts(&hook.uid))
        .query(&mut test.redis())
        .unwrap();
    assert_eq!(stored, 5);

    // A hook that does not exist is named as such.
    let missing = format!("{}/no-such-hook", test.ns);
    let (ok, _, stderr) = try_cli(&test.attempts_args(&missing, &[]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("no OutboundWebhook {missing} exists")),
        "{stderr}"
    );
}

#[test]
fn publish_hook_reaches_that_hook_whatever_its_events_and_no_other() {
    let test = DeliveryTest::new("test-event");
    let target = Receiver::ok();
    let other = Receiver::ok();
    // The target does not subscribe to the event; the other hook does.
    let target_hook = create_hook(
        &test.ns,
        "target",
        &target.url("/"),
        &["kustomer.user.update"],
        json!({}),
    );
    test.hook("other", &other.url("/"), json!({}));
    let d = test.dispatcher(&[]);

    let publish = |hook: &str| {
        let out = test.publish_cli(r#"{"type":"conversation","id":"test"}"#, &["--hook", hook]);
        out.split_whitespace().next().unwrap().to_string()
    };
    let test_event = publish("target");
    target.wait_for_event(&test_event, 1, Duration::from_secs(30));
    // A later, ordinary event reaching the other hook shows the test event
    // was routed (entries are routed in order) without reaching it.
    let ordinary = test.publish(&json!({}));
    other.wait_for_event(&ordinary, 1, Duration::from_secs(30));
    assert!(
        other.requests_for(&test_event).is_empty(),
        "the other hook got the test event"
    );
    assert!(
        target.requests_for(&ordinary).is_empty(),
        "the target got an event it does not subscribe to"
    );
    assert_eq!(target.requests_for(&test_event).len(), 1);
    let logged = wait_logged(&test, &target_hook, &test_event);
    assert_eq!(logged[0]["outcome"], "delivered");

    // A name no hook of the org carries: nothing is delivered, and the
    // event is counted as dropped.
    publish("nobody");
    let dropped = r#"outbound_webhooks_events_total{outcome="dropped",reason="no_such_hook"}"#;
    wait_for(
        "the dropped test event to be counted",
        Duration::from_secs(30),
        || match d.metric(dropped) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(d.log().contains("the org has no hook of that name"), "{}", d.log());
    assert_eq!(other.requests().len(), 1);
    assert_eq!(target.requests().len(), 1);

    // The CLI refuses what is not a hook name.
    let (ok, _, stderr) = test.try_publish_cli("{}", &["--hook", &format!("{}/target", test.ns)]);
    assert!(!ok);
    assert!(stderr.contains("is not a valid OutboundWebhook name"), "{stderr}");
}
