//! Retry policy, auto-disable, dead letters, re-enabling and replay, and the
//! answers that are not plain successes (400, 410, 302, timeouts, Retry-After).

use outbound_webhooks_test_kit as support;

use std::{sync::atomic::Ordering, time::Duration};

use outbound_webhooks::{contract::conditions::ready, contract::resource::REENABLE_ANNOTATION, dispatcher};
use serde_json::{Value, json};
use support::{
    delivery_test::DeliveryTest,
    dispatcher::run_cli,
    hooks::write_controller_status,
    kubectl_ok,
    receiver::{Receiver, Reply},
    wait_for,
};

#[test]
fn a_failing_endpoint_gets_n_spaced_attempts_then_the_hook_is_turned_off_and_can_be_re_enabled_and_replayed() {
    let test = DeliveryTest::new("always-500");
    let (ns, prefix, url) = (&test.ns, &test.prefix, &test.redis_url);
    let (receiver, healthy) = Receiver::switchable(false);
    let hook = test.hook("flaky", &receiver.url("/"), json!({}));
    let schedule = [400u64, 800, 1200];
    let d = test.dispatcher(&["--retry-schedule", "400ms,800ms,1200ms"]);

    let first = test.publish(&json!({"n": 1}));
    let attempts = receiver.wait_for_event(&first, 4, Duration::from_secs(30));
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let planned = Duration::from_millis(schedule[i]);
        assert!(
            gap >= planned.mul_f64(0.9) && gap <= planned.mul_f64(1.1) + Duration::from_millis(700),
            "gap {} was {gap:?}, planned {planned:?} ±10%",
            i + 1
        );
    }
    assert!(
        attempts.iter().all(|a| a.body == attempts[0].body),
        "every attempt sends identical bytes"
    );

    let delivery = hook.wait_delivery("the hook to be turned off", |d| {
        d["disabled"]["reason"] == ready::AUTO_DISABLED
    });
    let message = delivery["disabled"]["message"].as_str().unwrap();
    assert!(message.contains("500"), "the message names the last error: {message}");
    assert_eq!(delivery["disabled"]["reenableToken"], "");
    assert_eq!(delivery["disabled"]["generation"], 1);
    assert!(delivery["consecutiveFailures"].as_i64().unwrap() >= 4, "{delivery}");
    assert_eq!(delivery["lastFailure"]["statusCode"], 500);

    let letters = test.dead_letters(Some(&hook.key()));
    assert!(letters.iter().any(|l| l.contains(&first)), "dead letters: {letters:?}");

    // Exactly N attempts, and later events are not delivered while it is off.
    let later = test.publish(&json!({"n": 2}));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.requests_for(&first).len(), 4);
    assert!(
        receiver.requests_for(&later).is_empty(),
        "an event reached a turned-off hook"
    );
    assert!(d.metric("outbound_webhooks_dropped_events_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        d.metric("outbound_webhooks_hooks_disabled_total{reason=\"AutoDisabled\"}"),
        Some(1.0)
    );

    // The user re-enables it; new events flow again.
    healthy.store(true, Ordering::SeqCst);
    kubectl_ok(&[
        "annotate",
        "owh",
        "flaky",
        "-n",
        ns,
        &format!("{REENABLE_ANNOTATION}=1795773600"),
        "--overwrite",
    ]);
    test.publish_until_delivered(
        "events to flow after re-enabling",
        &receiver,
        Duration::from_millis(700),
    );

    // Replaying the hook's dead letters delivers the first event.
    let out = run_cli(&[
        "dead-letter",
        "replay",
        "--redis-url",
        url,
        "--redis-prefix",
        prefix,
        "--hook",
        &hook.key(),
    ]);
    assert!(out.contains("replayed"), "{out}");
    let replayed = receiver.wait_for_event(&first, 5, Duration::from_secs(30));
    assert_eq!(replayed[4].body, attempts[0].body);
    assert!(test.dead_letters(Some(&hook.key())).iter().all(|l| !l.contains(&first)));
}

#[test]
fn n_minus_one_failures_then_success_delivers_on_the_last_attempt_and_recovers() {
    let test = DeliveryTest::new("n-minus-one");
    let receiver = Receiver::start(|_, nth| Reply::Status(if nth < 4 { 503 } else { 200 }));
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--retry-schedule", "200ms,200ms,200ms"]);
    let id = test.publish(&json!({}));
    receiver.wait_for_event(&id, 4, Duration::from_secs(30));
    let started = std::time::Instant::now();
    let d = hook.wait_delivery("consecutiveFailures back to 0", |d| {
        d["consecutiveFailures"] == 0 && d["lastSuccessTime"].is_string()
    });
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(d["disabled"].is_null(), "{d}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests_for(&id).len(), 4);

    // The dispatcher's field manager owns status.delivery and nothing else.
    let out = kubectl_ok(&["get", "owh", "h", "-n", &test.ns, "-o", "json", "--show-managed-fields"]);
    let object: Value = serde_json::from_str(&out).unwrap();
    let entries = object["metadata"]["managedFields"].as_array().unwrap();
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|e| e["manager"] == dispatcher::health::status::FIELD_MANAGER)
        .collect();
    assert_eq!(ours.len(), 1, "{entries:?}");
    assert_eq!(ours[0]["subresource"], "status");
    let fields = ours[0]["fieldsV1"]["f:status"].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["f:delivery"], "{fields:?}");
}

#[test]
fn a_payload_the_receiver_rejects_is_dead_lettered_without_turning_the_hook_off() {
    let test = DeliveryTest::new("rejected");
    let receiver = Receiver::start(|r, _| Reply::Status(if r.json()["data"]["bad"] == true { 400 } else { 200 }));
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--retry-schedule", "300ms,300ms"]);
    let bad = test.publish(&json!({"bad": true}));
    // Good events keep succeeding meanwhile.
    wait_for(
        "the rejected event to be dead-lettered",
        Duration::from_secs(30),
        || {
            test.publish(&json!({"bad": false}));
            std::thread::sleep(Duration::from_millis(100));
            let letters = test.dead_letters(Some(&hook.key()));
            if letters.iter().any(|l| l.contains(&bad)) {
                Ok(())
            } else {
                Err(format!("{letters:?}"))
            }
        },
    );
    assert_eq!(receiver.requests_for(&bad).len(), 3);
    std::thread::sleep(Duration::from_millis(500));
    assert!(hook.delivery()["disabled"].is_null(), "{}", hook.delivery());
    let good = test.publish(&json!({"bad": false}));
    receiver.wait_for_event(&good, 1, Duration::from_secs(30));
}

#[test]
fn gone_revokes_the_hook_after_one_attempt() {
    let test = DeliveryTest::new("gone");
    let receiver = Receiver::start(|_, _| Reply::Status(410));
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--retry-schedule", "200ms,200ms,200ms"]);
    let id = test.publish(&json!({}));
    let d = hook.wait_delivery("the hook to be revoked", |d| d["disabled"]["reason"] == ready::REVOKED);
    assert!(d["disabled"]["message"].as_str().unwrap().contains("410"), "{d}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.requests_for(&id).len(), 1);
}

#[test]
fn a_redirect_is_a_failed_attempt_and_its_target_receives_nothing() {
    let test = DeliveryTest::new("redirect");
    let target = Receiver::ok();
    let target_url = target.url("/elsewhere");
    let receiver = Receiver::start(move |_, _| Reply::WithHeaders(302, vec![("location", target_url.clone())]));
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--retry-schedule", "200ms"]);
    let id = test.publish(&json!({}));
    receiver.wait_for_event(&id, 2, Duration::from_secs(30));
    let d = hook.wait_delivery("the redirect to count as failure", |d| {
        d["lastFailure"]["statusCode"] == 302
    });
    assert!(
        d["lastFailure"]["message"].as_str().unwrap().contains("not followed"),
        "{d}"
    );
    assert!(target.requests().is_empty());
}

#[test]
fn a_receiver_slower_than_timeout_seconds_is_a_failed_attempt() {
    let test = DeliveryTest::new("slow");
    let receiver = Receiver::start(|_, nth| if nth == 1 { Reply::Hang } else { Reply::Status(200) });
    let hook = test.hook_to(&receiver, json!({"timeoutSeconds": 1}));
    let _d = test.dispatcher(&["--retry-schedule", "100ms"]);
    let id = test.publish(&json!({}));
    let got = receiver.wait_for_event(&id, 2, Duration::from_secs(30));
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_secs(5),
        "gap {gap:?}"
    );
    let d = hook.wait_delivery("the timeout to be recorded", |d| {
        d["lastFailure"]["message"].is_string()
    });
    assert!(
        d["lastFailure"]["message"]
            .as_str()
            .unwrap()
            .contains("no response within 1s"),
        "{d}"
    );
}

#[test]
fn retry_after_on_429_delays_the_next_attempt() {
    let test = DeliveryTest::new("retry-after");
    let receiver = Receiver::start(|_, nth| {
        if nth == 1 {
            Reply::WithHeaders(429, vec![("retry-after", "2".to_string())])
        } else {
            Reply::Status(200)
        }
    });
    test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--retry-schedule", "100ms,100ms"]);
    let id = test.publish(&json!({}));
    let got = receiver.wait_for_event(&id, 2, Duration::from_secs(30));
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 must delay the retry; gap {gap:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests_for(&id).len(), 2, "Retry-After adds no attempts");
}

#[test]
fn disabling_and_enabling_the_spec_turns_an_auto_disabled_hook_back_on() {
    let test = DeliveryTest::new("spec-toggle");
    let ns = &test.ns;
    let (receiver, healthy) = Receiver::switchable(false);
    let hook = test.hook("toggle", &receiver.url("/"), json!({}));
    let d = test.dispatcher(&["--retry-schedule", "100ms"]);
    test.publish(&json!({}));
    hook.wait_delivery("the hook to be turned off", |d| {
        d["disabled"]["reason"] == ready::AUTO_DISABLED
    });

    // enabled: false (generation 2), which the controller records, then true (generation 3).
    healthy.store(true, Ordering::SeqCst);
    let patch = |enabled: bool| {
        kubectl_ok(&[
            "patch",
            "owh",
            "toggle",
            "-n",
            ns,
            "--type=merge",
            "-p",
            &json!({"spec": {"enabled": enabled}}).to_string(),
        ]);
    };
    patch(false);
    write_controller_status(ns, "toggle", 2, true, Some(2));
    patch(true);
    write_controller_status(ns, "toggle", 3, true, Some(2));
    test.publish_until_delivered(
        "events to flow after the spec toggle",
        &receiver,
        Duration::from_millis(700),
    );
    // The histogram and every other metric carry no per-hook label.
    let (_, metrics) = d.ops_get("/metrics").unwrap();
    assert!(
        metrics.contains("outbound_webhooks_delivery_attempt_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hook=") && !metrics.contains(ns.as_str()),
        "{metrics}"
    );
}

#[test]
fn a_status_write_for_a_deleted_hook_is_refused_on_the_hook_re_created_under_its_name() {
    use outbound_webhooks::contract::resource::{DeliveryStatus, DisableReason, DisableRecord};
    let test = DeliveryTest::new("mirror-uid");
    let receiver = Receiver::ok();
    let old = test.hook_to(&receiver, json!({}));
    kubectl_ok(&["delete", "owh", &old.name, "-n", &test.ns, "--wait"]);
    let new = test.hook_to(&receiver, json!({}));
    assert_ne!(old.uid, new.uid);

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&support::env().kubeconfig).expect("the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client config");
        kube::Client::try_from(config).expect("a client")
    });
    let turned_off = DeliveryStatus {
        disabled: Some(DisableRecord {
            reason: DisableReason::AutoDisabled,
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
            message: "the old hook's endpoint failed".into(),
            reenable_token: String::new(),
            generation: 1,
        }),
        ..Default::default()
    };
    // The old hook's record, written by name while a cache still had it.
    let written = runtime.block_on(dispatcher::health::status::apply(
        &client,
        &test.ns,
        &new.name,
        &old.uid,
        &turned_off,
    ));
    assert!(matches!(written, Ok(false)), "{written:?}");
    assert!(
        new.delivery().is_null(),
        "the old hook's record landed: {}",
        new.delivery()
    );
    // The hook's own record is written.
    let before = new.get()["metadata"]["resourceVersion"].clone();
    let written = runtime.block_on(dispatcher::health::status::apply(
        &client,
        &test.ns,
        &new.name,
        &new.uid,
        &turned_off,
    ));
    assert!(matches!(written, Ok(true)), "{written:?}");
    assert_eq!(new.delivery()["disabled"]["reason"], "AutoDisabled");

    // What the guard rests on: the API server refuses a status apply whose
    // resourceVersion is no longer the hook's.
    let api: kube::Api<outbound_webhooks::contract::resource::OutboundWebhook> =
        kube::Api::namespaced(client, &test.ns);
    let stale = json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": new.name, "resourceVersion": before},
        "status": {"delivery": {"consecutiveFailures": 7}},
    });
    let refused = runtime.block_on(api.patch_status(
        &new.name,
        &kube::api::PatchParams::apply(dispatcher::health::status::FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&stale),
    ));
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.is_conflict()),
        "{refused:?}"
    );
}
