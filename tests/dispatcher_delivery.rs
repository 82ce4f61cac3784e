//! The dispatcher end to end: real Redis, real API server, real receivers on
//! loopback. Signatures and envelope bytes, routing, restarts.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    dispatcher::run_cli,
    hooks::{accept, create_hook, labelled_secret, write_conditions},
    kubectl::apply_ok,
    kubectl_ok, kubectl_with_input,
    receiver::{Receiver, standard_signatures, verify_signatures, verify_signatures_with},
};

#[test]
fn a_published_event_arrives_signed_and_third_party_verifiers_accept_it() {
    let test = DeliveryTest::new("signed");
    let (ns, prefix, url) = (&test.ns, &test.prefix, &test.redis_url);
    let receiver = Receiver::ok();
    let hook = test.hook(
        "ecomm",
        &receiver.url("/kustomer"),
        json!({
            "headers": [{"name": "X-Outbound-Webhook-Origin", "value": "platform"}]
        }),
    );
    let _d = test.dispatcher(&[]);

    // Published with the CLI, as a platform engineer would.
    let out = run_cli(&[
        "publish",
        "--redis-url",
        url,
        "--redis-prefix",
        prefix,
        "--org",
        ns,
        "--event",
        CREATE,
        "--data",
        r#"{"type":"conversation","id":"c1","attributes":{"z":1,"a":"é"}}"#,
        "--changes",
        r#"{"attributes":{"a":{"before":"x","after":"é"}}}"#,
        "--id",
        "5f1e2d3c4b5a69788796a5b4",
    ]);
    assert!(out.starts_with("5f1e2d3c4b5a69788796a5b4 "), "{out}");
    let request = receiver
        .wait_for_event("5f1e2d3c4b5a69788796a5b4", 1, Duration::from_secs(30))
        .remove(0);

    let body = String::from_utf8(request.body.clone()).unwrap();
    let created_at = request.json()["createdAt"].as_str().unwrap().to_string();
    assert_eq!(
        body,
        format!(
            "{{\"id\":\"5f1e2d3c4b5a69788796a5b4\",\"name\":\"{CREATE}\",\"org\":\"{ns}\",\"partition\":\"{ns}\",\
             \"data\":{{\"type\":\"conversation\",\"id\":\"c1\",\"attributes\":{{\"z\":1,\"a\":\"é\"}}}},\
             \"createdAt\":\"{created_at}\",\"changes\":{{\"attributes\":{{\"a\":{{\"before\":\"x\",\"after\":\"é\"}}}}}},\"persist\":true}}"
        )
    );
    assert!(created_at.len() == 24 && created_at.ends_with('Z'), "{created_at}");
    assert_eq!(request.path, "/kustomer");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        concat!("outbound-webhooks/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("x-kustomer-webhook-event"), CREATE);
    assert_eq!(request.header("webhook-id"), "5f1e2d3c4b5a69788796a5b4");
    assert_eq!(request.header("x-outbound-webhook-origin"), "platform");
    let ts: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!((jiff::Timestamp::now().as_second() - ts).abs() < 60);
    verify_signatures(&hook, &request).expect("the Node verifiers accept the signatures");

    // A tampered body is refused by the same verifiers (they can fail).
    let mut tampered = request.clone();
    tampered.body.push(b' ');
    assert!(verify_signatures(&hook, &tampered).is_err());
}

#[test]
fn custom_header_values_come_from_labelled_secrets() {
    let test = DeliveryTest::new("header-secret");
    let receiver = Receiver::ok();
    apply_ok(&test.ns, &labelled_secret("creds", json!({"auth": "Bearer abc123"})));
    test.hook_to(
        &receiver,
        json!({
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}]
        }),
    );
    let _d = test.dispatcher_as("hs", &[]);
    let id = test.publish(&json!({"x": 1}));
    let request = receiver.wait_for_event(&id, 1, Duration::from_secs(30)).remove(0);
    assert_eq!(request.header("authorization"), "Bearer abc123");
}

#[test]
fn only_ready_subscribed_hooks_of_the_org_receive_and_a_restart_delivers_what_waited() {
    let test = DeliveryTest::new("routing");
    let other_ns = support::namespace("routing-other");
    let ns = &test.ns;
    let subscribed = Receiver::ok();
    let unsubscribed = Receiver::ok();
    let elsewhere = Receiver::ok();
    let disabled = Receiver::ok();
    let not_accepted = Receiver::ok();
    let edited = Receiver::ok();
    let edited_new = Receiver::ok();

    create_hook(
        ns,
        "subscribed",
        &subscribed.url("/"),
        &[CREATE, "kustomer.user.create"],
        json!({}),
    );
    create_hook(
        ns,
        "unsubscribed",
        &unsubscribed.url("/"),
        &["kustomer.user.update"],
        json!({}),
    );
    create_hook(&other_ns, "elsewhere", &elsewhere.url("/"), &[CREATE], json!({}));
    test.hook("disabled", &disabled.url("/"), json!({"enabled": false}));
    test.hook("not-accepted", &not_accepted.url("/"), json!({}));
    accept(ns, "not-accepted", false);
    test.hook("edited", &edited.url("/"), json!({}));
    // The URL changes; the controller has not caught up (conditions of generation 1).
    kubectl_ok(&[
        "patch",
        "owh",
        "edited",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"url": edited_new.url("/")}}).to_string(),
    ]);
    write_conditions(ns, "edited", 1, true);

    let mut d = test.dispatcher(&[]);
    let first = test.publish(&json!({"n": 1}));
    subscribed.wait_for_event(&first, 1, Duration::from_secs(30));
    // Tasks of one entry are stored together, so anything misrouted would
    // arrive about now; give it a generous moment.
    std::thread::sleep(Duration::from_secs(2));
    for (name, r) in [
        ("unsubscribed", &unsubscribed),
        ("other namespace", &elsewhere),
        ("disabled", &disabled),
        ("not accepted", &not_accepted),
        ("edited, old URL", &edited),
        ("edited, new URL", &edited_new),
    ] {
        assert!(r.requests().is_empty(), "the {name} hook received {:?}", r.requests());
    }

    // Events published while no dispatcher runs are delivered after its caches sync.
    d.kill();
    let waiting: Vec<String> = (0..5).map(|i| test.publish(&json!({"n": i}))).collect();
    d.restart();
    for id in &waiting {
        subscribed.wait_for_event(id, 1, Duration::from_secs(30));
    }
    assert!(edited_new.requests().is_empty());
    // Once acceptance catches up, the new URL gets events.
    accept(ns, "edited", true);
    test.publish_until_delivered(
        "the edited hook to be accepted in the cache",
        &edited_new,
        Duration::from_millis(500),
    );
}

#[test]
fn a_bring_your_own_secret_signs_the_deliveries() {
    let test = DeliveryTest::new("byo-secret");
    let receiver = Receiver::ok();
    let token = "my-own-signing-token-of-32-bytes";
    apply_ok(&test.ns, &labelled_secret("mine", json!({"signing": token})));
    let mut hook = test.hook(
        "byo",
        &receiver.url("/"),
        json!({"secretRef": {"name": "mine", "key": "signing"}}),
    );
    let _d = test.dispatcher_as("byo", &[]);
    let id = test.publish(&json!({"x": 1}));
    let request = receiver.wait_for_event(&id, 1, Duration::from_secs(30)).remove(0);
    hook.token = token.to_string();
    verify_signatures(&hook, &request).expect("signed with the referenced token");
}

#[test]
fn a_secret_that_also_holds_large_keys_no_request_uses_still_signs_with_its_rotation_tokens_and_headers() {
    // The dispatcher's cache keeps only the keys a request could use; the
    // rest (here a 700 KB certificate bundle, which no header value or token
    // can be) must not change what is sent.
    let test = DeliveryTest::new("trimmed-secret");
    let receiver = Receiver::ok();
    let (token, next) = ("signing-token-of-32-bytes-000001", "signing-token-of-32-bytes-000002");
    let bundle = "-----BEGIN CERTIFICATE-----\n".to_string() + &format!("{}\n", "A".repeat(63)).repeat(11_000);
    let secret = labelled_secret(
        "mine",
        json!({"signing": token, "next-token": next, "auth": "Bearer abc123\n", "ca-bundle.pem": bundle}),
    );
    // Created, not applied: kubectl apply would copy 700 KB into an annotation.
    let out = kubectl_with_input(&["create", "-n", &test.ns, "-f", "-"], Some(&secret));
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    let mut hook = test.hook(
        "trimmed",
        &receiver.url("/"),
        json!({
            "secretRef": {"name": "mine", "key": "signing"},
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "auth"}}}]
        }),
    );
    let _d = test.dispatcher_as("trimmed", &[]);
    let id = test.publish(&json!({"x": 1}));
    let request = receiver.wait_for_event(&id, 1, Duration::from_secs(30)).remove(0);
    assert_eq!(request.header("authorization"), "Bearer abc123");
    assert_eq!(
        standard_signatures(&request).len(),
        2,
        "the token's and the staged token's"
    );
    hook.token = token.to_string();
    verify_signatures(&hook, &request).expect("signed with the referenced token");
    verify_signatures_with(token, next, &request).expect("webhook-signature also by the staged token");
}
