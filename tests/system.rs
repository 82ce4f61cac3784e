//! The whole system together: the real controller generates the signing
//! secret and the conditions, the real dispatcher delivers, a receiver on
//! loopback answers. What an on-call engineer sees: `kubectl get owh` and
//! `kubectl describe owh` of a hook the dispatcher turned off, and the
//! documented way back.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use outbound_webhooks::{
    conditions::ready,
    controller::secret::TOKEN_KEY,
    resource::{REENABLE_ANNOTATION, WEBHOOK_SECRET_LABEL},
};
use serde_json::json;
use support::{
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    dispatcher::run_cli,
    hooks::{TestHook, generated_secret, hook_yaml, uid, wait_active, wait_not_ready},
    kubectl::apply_ok,
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
