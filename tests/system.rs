//! The whole system together: the real controller generates the signing
//! secret and the conditions, the real dispatcher delivers, a receiver on
//! loopback answers. What an on-call engineer sees: `kubectl get owh` and
//! `kubectl describe owh` of a hook the dispatcher turned off, and the
//! documented way back; a signing secret rotated in two steps while
//! third-party verifiers keep accepting every delivery.

use outbound_webhooks_test_kit as support;

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use base64::Engine as _;
use outbound_webhooks::{
    contract::conditions::{DELIVERING, READY, SECRET_READY, delivering, ready, secret_ready},
    contract::resource::{
        PROMOTE_SECRET_ANNOTATION, REENABLE_ANNOTATION, ROTATE_SECRET_ANNOTATION, WEBHOOK_SECRET_LABEL,
    },
    contract::signing_tokens::{NEXT_STANDARD_WEBHOOKS_KEY, NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY},
    controller::secrets::secret::{STANDARD_WEBHOOKS_KEY, TOKEN_KEY},
    wire::signing::{kustomer_signature, standard_webhooks_secret},
};
use serde_json::json;
use support::{
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    dispatcher::run_cli,
    hooks::{
        Cond, TestHook, condition, condition_of, generated_secret, hook_yaml, labelled_secret, new_token, uid,
        wait_active, wait_condition, wait_not_ready,
    },
    kubectl::{apply_ok, describe, events_about, get_json, owh_row, wait_described},
    kubectl_ok,
    receiver::{Received, Receiver, Reply, standard_signatures, verify_signatures, verify_signatures_with},
    unique_suffix, wait_for,
};

/// The real controller, for namespace `ns` only, on a Lease of its own.
fn controller_for(name: &str, ns: &str) -> ControllerProcess {
    controller_with(name, ns, &[])
}

/// Like [`controller_for`], with `extra` flags.
fn controller_with(name: &str, ns: &str, extra: &[&str]) -> ControllerProcess {
    let lease = unique_lease(name);
    let mut args = vec![
        "--allow-http",
        "--watch-namespace",
        ns,
        "--lease-name",
        &lease,
        "--lease-duration",
        "3s",
    ];
    args.extend_from_slice(extra);
    ControllerProcess::start(&format!("{name}-{}", unique_suffix()), &args)
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
    // A transition right after a status write waits for the end of the
    // hook's 15 s write interval (docs/src/tenant-bounds.md#api-writes).
    let recovered = wait_for(
        "Delivering=True/Succeeding",
        Duration::from_secs(25),
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
        "the gauges gone with the failure",
        Duration::from_secs(5),
        || match controller.hook_gauges(ns, "crm") {
            [None, None, None] => Ok(()),
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

/// Publishes `{}` events until one arrives whose request satisfies `check`
/// (the dispatcher's Secret cache sees a change a moment after the API
/// server); returns that request.
fn deliver_until(test: &DeliveryTest, receiver: &Receiver, what: &str, check: impl Fn(&Received) -> bool) -> Received {
    wait_for(what, Duration::from_secs(30), || {
        let id = test.publish(&json!({}));
        let request = receiver.wait_for_event(&id, 1, Duration::from_secs(20)).remove(0);
        if check(&request) {
            Ok(request)
        } else {
            Err(format!("webhook-signature {:?}", request.header("webhook-signature")))
        }
    })
}

/// The hook's `SecretReady` message, which must stay True.
fn secret_ready_message(ns: &str, hook: &str) -> String {
    let c = condition(ns, hook, SECRET_READY).expect("SecretReady is set");
    assert_eq!(c.status, "True", "SecretReady stays True during a rotation: {c:?}");
    c.message
}

/// Waits until `SecretReady` (True) says `text`; returns the message.
fn wait_secret_ready_says(ns: &str, hook: &str, text: &str) -> String {
    wait_for(&format!("SecretReady to say {text:?}"), Duration::from_secs(15), || {
        let message = secret_ready_message(ns, hook);
        if message.contains(text) {
            Ok(message)
        } else {
            Err(message)
        }
    })
}

/// Waits until the hook's generated Secret satisfies `check`; returns its data.
fn wait_secret(
    ns: &str,
    hook: &str,
    what: &str,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    wait_for(what, Duration::from_secs(15), || {
        let data = generated_secret(ns, hook).ok_or("no Secret")?;
        if check(&data) {
            Ok(data)
        } else {
            Err(format!("keys {:?}", data.keys()))
        }
    })
}

fn annotate(ns: &str, hook: &str, annotation: &str, value: &str) {
    kubectl_ok(&[
        "annotate",
        &format!("owh/{hook}"),
        "-n",
        ns,
        &format!("{annotation}={value}"),
        "--overwrite",
    ]);
}

/// Fails if any of `secrets` (or its base64 form, as in a Secret's JSON)
/// appears in any of `texts`.
fn assert_never_shown(secrets: &[&str], texts: &[(&str, &str)]) {
    for secret in secrets {
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        for (what, text) in texts {
            assert!(
                !text.contains(secret) && !text.contains(&encoded),
                "a signing secret appears in the {what}"
            );
        }
    }
}

#[test]
fn a_signing_secret_rotates_in_two_steps_while_verifiers_keep_accepting_every_delivery() {
    let test = DeliveryTest::new("rotation");
    let ns = &test.ns;
    // Refuses (500) requests whose Kustomer header is by this token, so an
    // event is retried across the promotion.
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let refusing = refused.clone();
    let receiver = Receiver::start(move |request, _| match &*refusing.lock().unwrap() {
        Some(token) if request.header("x-kustomer-webhook-signature") == kustomer_signature(token, &request.body) => {
            Reply::Status(500)
        }
        _ => Reply::Status(200),
    });
    let overlap = ["--rotation-overlap", "5s"];
    let mut controller = controller_with("rotation", ns, &overlap);
    apply_ok(ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
    wait_active(ns, "crm", Duration::from_secs(20));
    let old = generated_secret(ns, "crm").expect("the Secret")[TOKEN_KEY].clone();
    let dispatcher = test.dispatcher(&["--retry-schedule", &["300ms"; 30].join(",")]);

    // Before: one token signs both headers.
    let first = deliver_until(&test, &receiver, "a delivery", |_| true);
    assert_eq!(standard_signatures(&first).len(), 1);
    verify_signatures_with(&old, &old, &first).expect("one token signs both headers");

    // Step 1: rotate-secret stages a next token; SecretReady names the next command.
    annotate(ns, "crm", ROTATE_SECRET_ANNOTATION, "v2");
    let staged = wait_secret(ns, "crm", "a staged next-token", |d| d.contains_key(NEXT_TOKEN_KEY));
    let new = staged[NEXT_TOKEN_KEY].clone();
    assert_eq!(new.len(), 64);
    assert_ne!(new, old);
    assert_eq!(staged[TOKEN_KEY], old, "staging keeps the token");
    assert_eq!(staged[NEXT_STANDARD_WEBHOOKS_KEY], standard_webhooks_secret(&new));
    let message = wait_secret_ready_says(ns, "crm", "next token staged by outboundwebhooks.io/rotate-secret=v2");
    assert!(
        message.contains(&format!(
            "update receivers to accept both, then: kubectl annotate owh/crm -n {ns} {PROMOTE_SECRET_ANNOTATION}=v2 --overwrite"
        )),
        "{message}"
    );
    wait_described(ns, "crm", &["SecretRotationStaged"]);
    let both = deliver_until(&test, &receiver, "a delivery signed by both tokens", |r| {
        standard_signatures(r).len() == 2
    });
    verify_signatures_with(&old, &old, &both)
        .expect("Kustomer header by the token; webhook-signature verifies with it");
    verify_signatures_with(&old, &new, &both).expect("webhook-signature also verifies with the staged token");

    // A controller restart between the steps changes nothing.
    let before = get_json(ns, "secret", "crm-webhook-secret").expect("the Secret");
    let mut logs = controller.logs();
    drop(controller);
    controller = controller_with("rotation", ns, &overlap);
    controller.wait_ready(Duration::from_secs(30));
    wait_for("the new controller to reconcile", Duration::from_secs(15), || {
        let (_, metrics) = controller.http_get("/metrics").ok_or("no answer")?;
        let reconciled = metrics
            .lines()
            .find_map(|l| l.strip_prefix("outbound_webhooks_controller_reconciles_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if reconciled >= 1.0 { Ok(()) } else { Err(metrics) }
    });
    let after = get_json(ns, "secret", "crm-webhook-secret").expect("the Secret");
    assert_eq!(
        (&after["metadata"]["resourceVersion"], &after["data"]),
        (&before["metadata"]["resourceVersion"], &before["data"]),
        "the restart rewrote the Secret"
    );
    assert_eq!(secret_ready_message(ns, "crm"), message, "the restart changed the step");

    // An event whose attempts fail before the promotion is retried after it
    // with the new token.
    *refused.lock().unwrap() = Some(old.clone());
    let retried = test.publish(&json!({"retried": true}));
    receiver.wait_for_event(&retried, 1, Duration::from_secs(20));

    // Step 2: promote-secret with the same value.
    annotate(ns, "crm", PROMOTE_SECRET_ANNOTATION, "v2");
    let promoted = wait_secret(ns, "crm", "the promotion", |d| d[TOKEN_KEY] != old);
    assert_eq!(promoted[TOKEN_KEY], new);
    assert_eq!(promoted[STANDARD_WEBHOOKS_KEY], standard_webhooks_secret(&new));
    assert_eq!(promoted[PREVIOUS_TOKEN_KEY], old);
    assert!(!promoted.contains_key(NEXT_TOKEN_KEY), "{:?}", promoted.keys());
    let message = wait_secret_ready_says(ns, "crm", "still signs webhook-signature until");
    assert!(
        message.contains("promoted outboundwebhooks.io/rotate-secret=v2"),
        "{message}"
    );
    wait_described(ns, "crm", &["SecretPromoted"]);
    let attempts = wait_for("the retry signed with the new token", Duration::from_secs(20), || {
        let attempts = receiver.requests_for(&retried);
        match attempts.last() {
            Some(last) if last.header("x-kustomer-webhook-signature") == kustomer_signature(&new, &last.body) => {
                Ok(attempts)
            }
            _ => Err(format!("{} attempts", attempts.len())),
        }
    });
    *refused.lock().unwrap() = None;
    let retry = attempts.last().unwrap();
    assert_eq!(
        attempts[0].header("x-kustomer-webhook-signature"),
        kustomer_signature(&old, &attempts[0].body),
        "the first attempt was signed before the promotion"
    );
    verify_signatures_with(&new, &new, retry).expect("after promotion both headers verify with the new token");
    verify_signatures_with(&new, &old, retry).expect("webhook-signature still verifies with the old token");

    // The overlap ends: the previous token is removed and signs no more.
    let expired = wait_secret(ns, "crm", "previous-token to be removed", |d| {
        !d.contains_key(PREVIOUS_TOKEN_KEY)
    });
    assert_eq!(expired[TOKEN_KEY], new);
    wait_described(ns, "crm", &["PreviousSecretExpired"]);
    let message = wait_secret_ready_says(ns, "crm", "keys token and standard-webhooks-secret");
    assert!(!message.contains("previous"), "{message}");
    let single = deliver_until(&test, &receiver, "a delivery signed by one token", |r| {
        standard_signatures(r).len() == 1
    });
    verify_signatures_with(&new, &new, &single).expect("the new token signs both headers");
    assert!(
        verify_signatures_with(&new, &old, &single).is_err(),
        "after the overlap the old token verifies nothing"
    );

    // No token anywhere a person or a log collector looks.
    logs.push_str(&controller.logs());
    let status = kubectl_ok(&["get", "owh", "crm", "-n", ns, "-o", "yaml"]);
    let events = kubectl_ok(&["get", "events", "-n", ns, "-o", "yaml"]);
    let described = describe(ns, "crm");
    assert!(
        logs.contains("signing secret rotation step"),
        "the log captured nothing of the rotation"
    );
    assert_never_shown(
        &[
            &old,
            &new,
            &standard_webhooks_secret(&old),
            &standard_webhooks_secret(&new),
        ],
        &[
            ("controller logs", &logs),
            ("dispatcher log", &dispatcher.log()),
            ("status", &status),
            ("events", &events),
            ("describe", &described),
        ],
    );
}

#[test]
fn a_referenced_secret_is_rotated_by_its_owner_and_its_next_and_previous_tokens_sign_webhook_signature() {
    let test = DeliveryTest::new("rotation-ref");
    let ns = &test.ns;
    let receiver = Receiver::ok();
    let (old, new) = (new_token(), new_token());
    apply_ok(
        ns,
        &labelled_secret("mine", json!({"signing": old, NEXT_TOKEN_KEY: new})),
    );
    let _controller = controller_for("rotation-ref", ns);
    apply_ok(
        ns,
        &hook_yaml(
            "crm",
            &receiver.url("/hook"),
            json!({"secretRef": {"name": "mine", "key": "signing"}}),
        ),
    );
    wait_active(ns, "crm", Duration::from_secs(20));
    let message = secret_ready_message(ns, "crm");
    assert!(
        message.contains("key next-token is present") && message.contains("move it to key signing"),
        "{message}"
    );
    let _dispatcher = test.dispatcher(&[]);
    let staged = deliver_until(&test, &receiver, "a delivery signed by both tokens", |r| {
        standard_signatures(r).len() == 2
    });
    verify_signatures_with(&old, &old, &staged).expect("the token signs both headers");
    verify_signatures_with(&old, &new, &staged).expect("webhook-signature also verifies with next-token");

    // The owner promotes by hand: next-token becomes the token, the old one previous-token.
    apply_ok(
        ns,
        &labelled_secret("mine", json!({"signing": new, PREVIOUS_TOKEN_KEY: old})),
    );
    let patch_mine = |kind: &str, patch: serde_json::Value| {
        kubectl_ok(&[
            "patch",
            "secret",
            "mine",
            "-n",
            ns,
            &format!("--type={kind}"),
            "-p",
            &patch.to_string(),
        ]);
    };
    patch_mine(
        "json",
        json!([{"op": "remove", "path": format!("/data/{NEXT_TOKEN_KEY}")}]),
    );
    let promoted = deliver_until(&test, &receiver, "a delivery by the new token", |r| {
        r.header("x-kustomer-webhook-signature") == kustomer_signature(&new, &r.body)
    });
    verify_signatures_with(&new, &new, &promoted).expect("the new token signs both headers");
    verify_signatures_with(&new, &old, &promoted).expect("webhook-signature also verifies with previous-token");
    wait_secret_ready_says(ns, "crm", "key previous-token is present");

    // An unusable previous-token is reported like an unusable token.
    patch_mine("merge", json!({"stringData": {PREVIOUS_TOKEN_KEY: "short"}}));
    let c = support::hooks::wait_condition(
        ns,
        "crm",
        SECRET_READY,
        "False",
        secret_ready::SECRET_INVALID,
        Duration::from_secs(15),
    );
    assert!(c.message.contains("\"previous-token\" of Secret mine"), "{c:?}");
    assert!(!c.message.contains("short"), "the message quotes the value: {c:?}");
}

/// A counter's value, 0 while it has no series yet.
fn counter(value: Option<f64>) -> f64 {
    value.unwrap_or(0.0)
}

#[test]
fn a_receiver_flipping_between_200_and_500_costs_one_status_write_per_15s_and_a_quiet_hook_still_fails_at_once() {
    let test = DeliveryTest::new("flapping");
    let ns = &test.ns;
    // Each event's first request alternates 500 and 200 (the very first is
    // a 500); a retry always succeeds, so nothing turns the hook off.
    let first_answers = Arc::new(Mutex::new(0usize));
    let receiver = {
        let first_answers = first_answers.clone();
        Receiver::start(move |_, nth| {
            if nth > 1 {
                return Reply::Status(200);
            }
            let mut n = first_answers.lock().unwrap();
            *n += 1;
            Reply::Status(if *n % 2 == 1 { 500 } else { 200 })
        })
    };
    let controller = controller_for("flapping", ns);
    apply_ok(ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
    wait_active(ns, "crm", Duration::from_secs(20));
    let dispatcher = test.dispatcher(&["--retry-schedule", "100ms"]);
    let writes = || {
        (
            counter(dispatcher.metric("outbound_webhooks_status_writes_total")),
            counter(controller.metric("outbound_webhooks_controller_status_writes_total")),
        )
    };
    let before = writes();

    // A quiet hook's first failure shows within 5 s.
    let first = test.publish(&json!({"n": 0}));
    let failed_at = receiver.wait_for_event(&first, 1, Duration::from_secs(10))[0].at;
    wait_condition(
        ns,
        "crm",
        DELIVERING,
        "False",
        delivering::FAILING,
        Duration::from_secs(5),
    );
    let shown_after = failed_at.elapsed();
    assert!(
        shown_after < Duration::from_secs(5),
        "Failing shown {shown_after:?} after the failure"
    );

    // Then 300 more attempts flipping between success and failure.
    let started = Instant::now();
    let mut ids = vec![first];
    while receiver.requests().len() < 300 {
        ids.push(test.publish(&json!({"n": ids.len()})));
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in &ids {
        receiver.wait_for_event(id, 1, Duration::from_secs(30));
    }
    // Let the last interval end and its write land.
    std::thread::sleep(Duration::from_secs(16));
    let elapsed = started.elapsed().as_secs_f64();
    let after = writes();
    let (dispatcher_writes, controller_writes) = (after.0 - before.0, after.1 - before.1);
    // One write per started 15 s per writer, plus the quiet hook's first.
    let bound = (elapsed / 15.0).ceil() + 2.0;
    println!(
        "{} attempts in {elapsed:.1}s: {dispatcher_writes} dispatcher and {controller_writes} controller status writes (bound {bound} each); Failing shown {shown_after:?} after the first failure",
        receiver.requests().len()
    );
    assert!(
        dispatcher_writes <= bound,
        "{dispatcher_writes} dispatcher status writes > {bound}"
    );
    assert!(
        controller_writes <= bound,
        "{controller_writes} controller status writes > {bound}"
    );
    let events = events_about(ns, "crm");
    let paced = events
        .iter()
        .filter(|e| e.reason == delivering::FAILING || e.reason == "Recovered")
        .count();
    assert!(paced <= 2, "one Failing/Recovered pair per 5 minutes: {events:?}");
    assert!(
        !get_json(ns, "owh", "crm").expect("the hook")["status"]["delivery"]["disabled"].is_object(),
        "the hook was never turned off"
    );
}
