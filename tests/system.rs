//! The whole system together: the real controller generates the signing
//! secret and the conditions, the real dispatcher delivers, a receiver on
//! loopback answers. What an on-call engineer sees: `kubectl get owh` and
//! `kubectl describe owh` of a hook the dispatcher turned off, and the
//! documented way back.

mod controller_process;
mod harness;
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use controller_process::{ControllerProcess, hook_yaml, secret_data, wait_condition};
use harness::{Dispatcher, Receiver, Reply, TestHook, args, dead_letters, publish, run_cli};
use serde_json::json;
use support::{apply_yaml, env, kubectl_ok, namespace, redis_prefix, unique_suffix, wait_for};

const CREATE: &str = "kustomer.conversation.create";

#[test]
fn a_failing_hook_is_shown_auto_disabled_by_kubectl_and_comes_back_by_annotation_and_replay() {
    let ns = namespace("system");
    let prefix = redis_prefix("system");
    let redis = &env().redis_url;
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = {
        let healthy = healthy.clone();
        Receiver::start(move |_, _| Reply::Status(if healthy.load(Ordering::SeqCst) { 200 } else { 500 }))
    };

    let _controller = ControllerProcess::start(
        &format!("system-{}", unique_suffix()),
        &[
            "--allow-http",
            "--watch-namespace",
            &ns,
            "--lease-name",
            &format!("system-{}", unique_suffix()),
            "--lease-duration",
            "3s",
        ],
    );
    // The shared manifest subscribes to CREATE.
    let hook_yaml = hook_yaml("crm", &receiver.url("/hook"), json!({}));
    let out = apply_yaml(&ns, &hook_yaml);
    assert!(out.success, "{}", out.stderr);
    wait_condition(&ns, "crm", "Ready", "True", "Active", Duration::from_secs(20));
    let secret = secret_data(&ns, "crm-webhook-secret").expect("the controller generated the Secret");
    let token = secret.get("token").cloned().expect("the Secret has a token");
    let uid = kubectl_ok(&["get", "owh", "crm", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
    let hook = TestHook {
        namespace: ns.clone(),
        name: "crm".into(),
        uid,
        token,
    };

    let _dispatcher = Dispatcher::start(args(redis, &prefix, "system", &["--retry-schedule", "200ms,200ms"]));

    // Three attempts fail: the hook is turned off, and kubectl says so.
    let first = publish(redis, &prefix, &ns, CREATE, &json!({"n": 1}));
    let attempts = receiver.wait_for_event(&first, 3, Duration::from_secs(30));
    harness::verify_signatures(&hook, &attempts[0])
        .expect("the controller's generated token signs what the dispatcher sends, and third-party verifiers agree");
    let table = wait_for("kubectl get owh to show AutoDisabled", Duration::from_secs(30), || {
        let table = kubectl_ok(&["get", "owh", "crm", "-n", &ns, "-o", "wide"]);
        if table.contains("AutoDisabled") {
            Ok(table)
        } else {
            Err(table)
        }
    });
    assert!(table.contains("False"), "{table}");
    let ready = wait_condition(&ns, "crm", "Ready", "False", "AutoDisabled", Duration::from_secs(5));
    assert!(
        ready.message.contains("500"),
        "the message names the last error: {}",
        ready.message
    );
    assert!(
        ready.message.contains("outboundwebhooks.io/reenable"),
        "the message says how to turn it back on: {}",
        ready.message
    );
    let described = kubectl_ok(&["describe", "owh", "crm", "-n", &ns]);
    assert!(
        described.contains("AutoDisabled"),
        "describe shows the turn-off:\n{described}"
    );
    assert_eq!(
        dead_letters(redis, &prefix, Some(&hook.key())).len(),
        1,
        "the failed event is dead-lettered"
    );

    // While it is off, new events are not delivered.
    let while_off = publish(redis, &prefix, &ns, CREATE, &json!({"n": 2}));

    // The documented way back: fix the receiver, annotate, replay.
    healthy.store(true, Ordering::SeqCst);
    kubectl_ok(&[
        "annotate",
        "owh/crm",
        "-n",
        &ns,
        "outboundwebhooks.io/reenable=1800000000",
        "--overwrite",
    ]);
    wait_condition(&ns, "crm", "Ready", "True", "Active", Duration::from_secs(20));
    let after = publish(redis, &prefix, &ns, CREATE, &json!({"n": 3}));
    receiver.wait_for_event(&after, 1, Duration::from_secs(20));
    run_cli(&[
        "dead-letter",
        "replay",
        "--redis-url",
        redis,
        "--redis-prefix",
        &prefix,
        "--hook",
        &hook.key(),
    ]);
    let replayed = receiver.wait_for_event(&first, 4, Duration::from_secs(20));
    assert_eq!(replayed.len(), 4, "three failed attempts, then the replayed delivery");
    assert!(
        receiver.requests_for(&while_off).is_empty(),
        "the event published while the hook was off was dropped"
    );
    let described = kubectl_ok(&["describe", "owh", "crm", "-n", &ns]);
    assert!(
        described.contains("ReEnabled"),
        "describe shows the re-enable:\n{described}"
    );
}
