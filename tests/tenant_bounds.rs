//! One tenant never hurts another (docs/src/tenant-bounds.md): what a tenant
//! puts in its namespace does not take the processes every tenant shares
//! past their memory limits. This binary has its own API server: it stores
//! a quarter of a gigabyte of Secrets.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    hooks::{accepted_conditions, hook_yaml, wait_active},
    kubectl::{apply_folder, apply_ok, kubectl_with_input},
    namespace,
    process::peak_rss,
    receiver::Receiver,
    unique_suffix, wait_for,
};

/// The chart's memory limit of both processes (`resources.limits.memory`).
const CHART_LIMIT: u64 = 256 * 1024 * 1024;
const SECRETS: usize = 260;
const SECRET_BYTES: usize = 1_000_000;
const HOOKS: usize = 100;
const HEADERS: usize = 10;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// 260 labelled Secrets of 1,000,000 bytes (one key each), created in
/// batches (`kubectl create`: `apply` would add a second copy in an
/// annotation, over etcd's object size).
fn create_big_secrets(ns: &str) {
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'v'; SECRET_BYTES]);
    for batch in (0..SECRETS).collect::<Vec<_>>().chunks(10) {
        let items: Vec<Value> = batch
            .iter()
            .map(|i| {
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("big-{i}"),
                                 "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
                    "data": {"value": value},
                })
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let out = kubectl_with_input(&["create", "-n", ns, "-f", "-"], Some(&list));
        assert!(out.success, "creating Secrets: {}", out.stderr);
    }
}

/// 100 hooks, each with 10 headers read from the big Secrets (95 of them
/// over the namespace's limit of 5).
fn apply_hooks_with_headers(ns: &str) {
    apply_folder(
        ns,
        (0..HOOKS).map(|i| {
            let headers: Vec<Value> = (0..HEADERS)
                .map(|j| {
                    json!({"name": format!("X-Big-{j}"),
                           "valueFrom": {"secretKeyRef": {"name": format!("big-{}", (i * HEADERS + j) % SECRETS), "key": "value"}}})
                })
                .collect();
            (
                format!("hook-{i}.yaml"),
                hook_yaml(&format!("hook-{i}"), "https://hooks.example.com/in", json!({"headers": headers})),
            )
        }),
    );
}

fn controller(lease: &str) -> ControllerProcess {
    let mut c = ControllerProcess::start(
        &format!("bounds-{}", unique_suffix()),
        &["--allow-http", "--lease-name", lease, "--lease-duration", "3s"],
    );
    c.wait_ready(Duration::from_secs(120));
    c
}

#[test]
fn big_labelled_secrets_and_over_limit_hooks_of_one_tenant_keep_both_processes_under_their_limits() {
    let big = namespace("tenant-big");
    let started = std::time::Instant::now();
    create_big_secrets(&big);
    apply_hooks_with_headers(&big);
    eprintln!(
        "{SECRETS} Secrets of {SECRET_BYTES} bytes and {HOOKS} hooks in {:?}",
        started.elapsed()
    );

    // Another tenant's hook, served throughout.
    let test = DeliveryTest::new("tenant-other");
    let receiver = Receiver::ok();
    let lease = unique_lease("bounds");
    let mut figures = Vec::new();
    for round in ["running", "after a restart"] {
        let controller = controller(&lease);
        if round == "running" {
            apply_ok(&test.ns, &hook_yaml("crm", &receiver.url("/hook"), json!({})));
        }
        wait_active(&test.ns, "crm", Duration::from_secs(60));
        wait_for(
            "a verdict on every hook of the big namespace",
            Duration::from_secs(120),
            || {
                let verdicts = accepted_conditions(&big);
                let decided = verdicts.values().filter(|v| v.current && v.accepted.is_some()).count();
                if decided == HOOKS {
                    Ok(())
                } else {
                    Err(format!("{decided} of {HOOKS}"))
                }
            },
        );
        let dispatcher = test.dispatcher(&[]);
        let id = test.publish(&json!({"round": round}));
        receiver.wait_for_event(&id, 1, Duration::from_secs(60));
        let (c, d) = (peak_rss(controller.pid()), dispatcher.peak_rss());
        eprintln!(
            "{round}: controller VmHWM {:.1} MiB, dispatcher VmHWM {:.1} MiB (limit {:.0} MiB)",
            mib(c),
            mib(d),
            mib(CHART_LIMIT)
        );
        figures.push((round, c, d));
        // Both stop here; the next round starts them again on the same
        // objects (the first list is what crashed a controller before).
    }
    for (round, c, d) in figures {
        assert!(c < CHART_LIMIT, "{round}: controller VmHWM {:.1} MiB", mib(c));
        assert!(d < CHART_LIMIT, "{round}: dispatcher VmHWM {:.1} MiB", mib(d));
    }
}
