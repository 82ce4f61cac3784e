//! The dispatcher end to end: real Redis, real API server, real receivers on
//! loopback. Signatures and envelope bytes, routing, restarts.

mod harness;
mod support;

use std::time::Duration;

use harness::{Dispatcher, Receiver, accept, args, create_hook, publish, run_cli, verify_signatures, write_conditions};
use serde_json::json;
use support::{env, kubectl_ok, namespace, redis_prefix};

const CREATE: &str = "kustomer.conversation.create";

#[test]
fn a_published_event_arrives_signed_and_third_party_verifiers_accept_it() {
    let ns = namespace("signed");
    let prefix = redis_prefix("signed");
    let url = &env().redis_url;
    let receiver = Receiver::ok();
    let hook = create_hook(
        &ns,
        "ecomm",
        &receiver.url("/kustomer"),
        &[CREATE],
        json!({
            "headers": [{"name": "X-Outbound-Webhook-Origin", "value": "platform"}]
        }),
    );
    let _d = Dispatcher::start(args(url, &prefix, "signed", &[]));

    // Published with the CLI, as a platform engineer would.
    let out = run_cli(&[
        "publish",
        "--redis-url",
        url,
        "--redis-prefix",
        &prefix,
        "--org",
        &ns,
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
    let ns = namespace("header-secret");
    let prefix = redis_prefix("header-secret");
    let url = &env().redis_url;
    let receiver = Receiver::ok();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
        "stringData": {"auth": "Bearer abc123"},
    });
    assert!(support::apply_yaml(&ns, &secret.to_string()).success);
    create_hook(
        &ns,
        "h",
        &receiver.url("/"),
        &[CREATE],
        json!({
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}]
        }),
    );
    let _d = Dispatcher::start(args(url, &prefix, "hs", &[]));
    let id = publish(url, &prefix, &ns, CREATE, &json!({"x": 1}));
    let request = receiver.wait_for_event(&id, 1, Duration::from_secs(30)).remove(0);
    assert_eq!(request.header("authorization"), "Bearer abc123");
}

#[test]
fn only_ready_subscribed_hooks_of_the_org_receive_and_a_restart_delivers_what_waited() {
    let ns = namespace("routing");
    let other_ns = namespace("routing-other");
    let prefix = redis_prefix("routing");
    let url = &env().redis_url;
    let subscribed = Receiver::ok();
    let unsubscribed = Receiver::ok();
    let elsewhere = Receiver::ok();
    let disabled = Receiver::ok();
    let not_accepted = Receiver::ok();
    let edited = Receiver::ok();
    let edited_new = Receiver::ok();

    create_hook(
        &ns,
        "subscribed",
        &subscribed.url("/"),
        &[CREATE, "kustomer.user.create"],
        json!({}),
    );
    create_hook(
        &ns,
        "unsubscribed",
        &unsubscribed.url("/"),
        &["kustomer.user.update"],
        json!({}),
    );
    create_hook(&other_ns, "elsewhere", &elsewhere.url("/"), &[CREATE], json!({}));
    create_hook(
        &ns,
        "disabled",
        &disabled.url("/"),
        &[CREATE],
        json!({"enabled": false}),
    );
    create_hook(&ns, "not-accepted", &not_accepted.url("/"), &[CREATE], json!({}));
    accept(&ns, "not-accepted", false);
    create_hook(&ns, "edited", &edited.url("/"), &[CREATE], json!({}));
    // The URL changes; the controller has not caught up (conditions of generation 1).
    kubectl_ok(&[
        "patch",
        "owh",
        "edited",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"url": edited_new.url("/")}}).to_string(),
    ]);
    write_conditions(&ns, "edited", 1, true);

    let mut d = Dispatcher::start(args(url, &prefix, "routing", &[]));
    let first = publish(url, &prefix, &ns, CREATE, &json!({"n": 1}));
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
    let waiting: Vec<String> = (0..5)
        .map(|i| publish(url, &prefix, &ns, CREATE, &json!({"n": i})))
        .collect();
    d.restart();
    for id in &waiting {
        subscribed.wait_for_event(id, 1, Duration::from_secs(30));
    }
    assert!(edited_new.requests().is_empty());
    // Once acceptance catches up, the new URL gets events.
    accept(&ns, "edited", true);
    support::wait_for(
        "the edited hook to be accepted in the cache",
        Duration::from_secs(30),
        || {
            let id = publish(url, &prefix, &ns, CREATE, &json!({}));
            std::thread::sleep(Duration::from_millis(500));
            if edited_new.requests_for(&id).is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(())
            }
        },
    );
}

#[test]
fn a_bring_your_own_secret_signs_the_deliveries() {
    let ns = namespace("byo-secret");
    let prefix = redis_prefix("byo-secret");
    let url = &env().redis_url;
    let receiver = Receiver::ok();
    let token = "my-own-signing-token-of-32-bytes";
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "mine", "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
        "stringData": {"signing": token},
    });
    assert!(support::apply_yaml(&ns, &secret.to_string()).success);
    let mut hook = create_hook(
        &ns,
        "byo",
        &receiver.url("/"),
        &[CREATE],
        json!({"secretRef": {"name": "mine", "key": "signing"}}),
    );
    let _d = Dispatcher::start(args(url, &prefix, "byo", &[]));
    let id = publish(url, &prefix, &ns, CREATE, &json!({"x": 1}));
    let request = receiver.wait_for_event(&id, 1, Duration::from_secs(30)).remove(0);
    hook.token = token.to_string();
    verify_signatures(&hook, &request).expect("signed with the referenced token");
}
