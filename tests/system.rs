//! The whole system together: the real controller generates the signing
//! secret and the conditions, the real dispatcher delivers, a receiver on
//! loopback answers. What an on-call engineer sees: `kubectl get owh` and
//! `kubectl describe owh` of a hook the dispatcher turned off, and the
//! documented way back.

mod support;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use outbound_webhooks::{
    conditions::{DELIVERING, READY, delivering, ready},
    controller::secret::TOKEN_KEY,
    resource::{REENABLE_ANNOTATION, WEBHOOK_SECRET_LABEL},
};
use serde_json::json;
use support::{
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    dispatcher::run_cli,
    hooks::{
        Cond, TestHook, condition_of, generated_secret, hook_yaml, uid, wait_active, wait_condition, wait_not_ready,
    },
    kubectl::{apply_ok, events_about, get_json, owh_row},
    kubectl_ok,
    receiver::{Receiver, verify_signatures},
    unique_suffix, wait_for,
};

/// The real controller, for namespace `ns` only, on a Lease of its own.
fn controller_for(name: &str, ns: &str) -> ControllerProcess {
    ControllerProcess::start(
        &format!("{name}-{}", unique_suffix()),
        &[
            "--allow-http",
            "--watch-namespace",
            ns,
            "--lease-name",
            &unique_lease(name),
            "--lease-duration",
            "3s",
        ],
    )
}

#[test]
fn a_failing_hook_is_shown_auto_disabled_by_kubectl_and_comes_back_by_annotation_and_replay() {
    let test = DeliveryTest::new("system");
    let (ns, prefix, redis) = (&test.ns, &test.prefix, &test.redis_url);
    let (receiver, healthy) = Receiver::switchable(false);

    let _controller = controller_for("system", ns);
    // The shared manifest subscribes to CREATE.
    apply_ok(ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
    wait_active(ns, "crm", Duration::from_secs(20));
    let secret = generated_secret(ns, "crm").expect("the controller generated the Secret");
    let token = secret.get(TOKEN_KEY).cloned().expect("the Secret has a token");
    let hook = TestHook {
        namespace: ns.clone(),
        name: "crm".into(),
        uid: uid(ns, "crm"),
        token,
    };

    let _dispatcher = test.dispatcher(&["--retry-schedule", "200ms,200ms"]);

    // Three attempts fail: the hook is turned off, and kubectl says so.
    let first = test.publish(&json!({"n": 1}));
    let attempts = receiver.wait_for_event(&first, 3, Duration::from_secs(30));
    verify_signatures(&hook, &attempts[0])
        .expect("the controller's generated token signs what the dispatcher sends, and third-party verifiers agree");
    let table = wait_for("kubectl get owh to show AutoDisabled", Duration::from_secs(30), || {
        let table = kubectl_ok(&["get", "owh", "crm", "-n", ns, "-o", "wide"]);
        if table.contains(ready::AUTO_DISABLED) {
            Ok(table)
        } else {
            Err(table)
        }
    });
    assert!(table.contains("False"), "{table}");
    let ready = wait_not_ready(ns, "crm", ready::AUTO_DISABLED, Duration::from_secs(5));
    assert!(
        ready.message.contains("500"),
        "the message names the last error: {}",
        ready.message
    );
    assert!(
        ready.message.contains(REENABLE_ANNOTATION),
        "the message says how to turn it back on: {}",
        ready.message
    );
    let described = support::kubectl::describe(ns, "crm");
    assert!(
        described.contains(ready::AUTO_DISABLED),
        "describe shows the turn-off:\n{described}"
    );
    assert_eq!(
        test.dead_letters(Some(&hook.key())).len(),
        1,
        "the failed event is dead-lettered"
    );

    // While it is off, new events are not delivered.
    let while_off = test.publish(&json!({"n": 2}));

    // The documented way back: fix the receiver, annotate, replay.
    healthy.store(true, Ordering::SeqCst);
    kubectl_ok(&[
        "annotate",
        "owh/crm",
        "-n",
        ns,
        &format!("{REENABLE_ANNOTATION}=1800000000"),
        "--overwrite",
    ]);
    wait_active(ns, "crm", Duration::from_secs(20));
    let after = test.publish(&json!({"n": 3}));
    receiver.wait_for_event(&after, 1, Duration::from_secs(20));
    run_cli(&[
        "dead-letter",
        "replay",
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--hook",
        &hook.key(),
    ]);
    let replayed = receiver.wait_for_event(&first, 4, Duration::from_secs(20));
    assert_eq!(replayed.len(), 4, "three failed attempts, then the replayed delivery");
    assert!(
        receiver.requests_for(&while_off).is_empty(),
        "the event published while the hook was off was dropped"
    );
    let described = support::kubectl::describe(ns, "crm");
    assert!(
        described.contains("ReEnabled"),
        "describe shows the re-enable:\n{described}"
    );
}

/// `kubectl get owh` FAILURES of the hook, and its Delivering and Ready
/// conditions, with Ready asserted True/Active (a failing hook stays Ready).
fn failures_delivering_ready(ns: &str, name: &str) -> (String, Option<Cond>) {
    let failures = owh_row(ns, name)["FAILURES"].clone();
    let json = get_json(ns, "owh", name).expect("the hook exists");
    let ready = condition_of(&json, READY).expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", ready::ACTIVE),
        "Ready stays True while deliveries fail: {ready:?}"
    );
    (failures, condition_of(&json, DELIVERING))
}

#[test]
fn a_receiver_answering_500_turns_delivering_false_within_5s_with_an_event_and_a_200_turns_it_back_while_ready_stays_true()
 {
    let test = DeliveryTest::new("delivering");
    let ns = &test.ns;
    let (receiver, healthy) = Receiver::switchable(false);
    let controller = controller_for("delivering", ns);
    apply_ok(ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
    wait_active(ns, "crm", Duration::from_secs(20));
    wait_condition(
        ns,
        "crm",
        DELIVERING,
        "True",
        delivering::NO_ATTEMPTS_YET,
        Duration::from_secs(5),
    );
    // Three attempts over two minutes: long enough that it never turns off here.
    let _dispatcher = test.dispatcher(&["--retry-schedule", "1m,1m"]);

    let published = Instant::now();
    let first = test.publish(&json!({"n": 1}));
    let (failures, failing) = wait_for(
        "FAILURES > 0 and Delivering=False/Failing",
        Duration::from_secs(5),
        || {
            let (failures, delivering) = failures_delivering_ready(ns, "crm");
            match delivering {
                Some(c)
                    if c.status == "False"
                        && c.reason == delivering::FAILING
                        && failures.parse::<i64>().unwrap_or(0) > 0 =>
                {
                    Ok((failures, c))
                }
                other => Err(format!("FAILURES {failures:?}, Delivering {other:?}")),
            }
        },
    );
    let seen_after = published.elapsed();
    assert_eq!(receiver.requests_for(&first).len(), 1);
    assert_eq!(failures, "1", "one attempt so far");
    let delivery = get_json(ns, "owh", "crm").expect("the hook")["status"]["delivery"].clone();
    let clock = |field: &str, format: &str| {
        let at: jiff::Timestamp = delivery[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {delivery}"))
            .parse()
            .unwrap();
        at.strftime(format).to_string()
    };
    assert_eq!(
        failing.message,
        format!(
            "1 attempt failed since {} (last: HTTP 500); the hook turns off if an event fails all 3 attempts, at about {} unless a delivery succeeds",
            clock("failingSince", "%H:%M:%SZ"),
            clock("estimatedTurnOffTime", "%H:%MZ")
        )
    );
    let warning = wait_for("a Warning Event Failing", Duration::from_secs(5), || {
        let events = events_about(ns, "crm");
        events
            .iter()
            .find(|e| e.reason == delivering::FAILING)
            .cloned()
            .ok_or(format!("{events:?}"))
    });
    assert_eq!(warning.type_, "Warning");
    assert_eq!(warning.message, failing.message);
    assert_eq!(
        controller.hook_gauges(ns, "crm"),
        [Some(1.0), Some(1.0), Some(0.0)],
        "failing, 1 failure, not turned off"
    );

    // The receiver recovers: the next delivery succeeds.
    healthy.store(true, Ordering::SeqCst);
    let second = test.publish(&json!({"n": 2}));
    receiver.wait_for_event(&second, 1, Duration::from_secs(10));
    let recovered = wait_for(
        "Delivering=True/Succeeding",
        Duration::from_secs(10),
        || match failures_delivering_ready(ns, "crm") {
            (failures, Some(c)) if c.status == "True" && c.reason == delivering::SUCCEEDING && failures == "0" => Ok(c),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(recovered.message, "the last request to the receiver succeeded");
    let events = wait_for("a Normal Event Recovered", Duration::from_secs(5), || {
        let events = events_about(ns, "crm");
        if events.iter().any(|e| e.reason == "Recovered") {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    });
    let of = |reason: &str| {
        events
            .iter()
            .filter(|e| e.reason == reason)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("Recovered").len(), 1, "{events:?}");
    assert_eq!(of("Recovered")[0].type_, "Normal");
    assert_eq!(
        of(delivering::FAILING).len(),
        1,
        "one Warning for the one transition: {events:?}"
    );
    wait_for(
        "the gauges to read recovered",
        Duration::from_secs(5),
        || match controller.hook_gauges(ns, "crm") {
            [Some(0.0), Some(0.0), Some(0.0)] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    println!("kubectl get owh showed FAILURES={failures} and Delivering=False {seen_after:?} after the publish");
}

#[test]
fn a_header_secret_made_from_a_file_with_a_trailing_newline_is_sent_without_the_line_break() {
    let test = DeliveryTest::new("newline");
    let ns = &test.ns;
    let receiver = Receiver::ok();
    let _controller = controller_for("newline", ns);
    // What `echo "Bearer abc" > auth` and `kubectl create secret --from-file` give.
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("auth");
    std::fs::write(&file, "Bearer abc\n").expect("writing the header file");
    let from_file = format!("--from-file=auth={}", file.display());
    kubectl_ok(&["create", "secret", "generic", "creds", "-n", ns, &from_file]);
    kubectl_ok(&[
        "label",
        "secret",
        "creds",
        "-n",
        ns,
        &format!("{WEBHOOK_SECRET_LABEL}=true"),
    ]);
    apply_ok(
        ns,
        &hook_yaml(
            "crm",
            &receiver.url("/hook"),
            json!({"headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}]}),
        ),
    );
    wait_active(ns, "crm", Duration::from_secs(20));
    let table = kubectl_ok(&["get", "owh", "crm", "-n", ns, "-o", "wide"]);
    assert!(table.contains(ready::ACTIVE), "{table}");

    let _dispatcher = test.dispatcher(&[]);
    let id = test.publish(&json!({"n": 1}));
    let got = receiver.wait_for_event(&id, 1, Duration::from_secs(20));
    assert_eq!(got[0].header("authorization"), "Bearer abc");
}
