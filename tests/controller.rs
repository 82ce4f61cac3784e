//! The controller on a real API server, driven with kubectl as a user
//! would. One controller process (default flags) serves every test of this
//! binary; tests that need other flags or restart controllers live in
//! `controller_processes.rs`, which has its own API server.

mod controller_process;
mod support;

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use base64::Engine as _;
use controller_process::{
    ControllerProcess, apply_hook, condition, get_json, hook_yaml, secret_data, uid, wait_condition, wait_token,
};
use serde_json::json;
use support::{apply_yaml, kubectl, kubectl_ok, namespace, wait_for};

const SOON: Duration = Duration::from_secs(15);

/// The controller shared by every test here; it exits with the test binary
/// (its stdin closes).
fn controller() -> &'static ControllerProcess {
    static SHARED: OnceLock<ControllerProcess> = OnceLock::new();
    SHARED.get_or_init(|| {
        let process = ControllerProcess::start(
            &format!("shared-{}", support::unique_suffix()),
            &["--lease-name", "shared-controller", "--lease-duration", "5s"],
        );
        process.wait_ready(Duration::from_secs(60));
        process
    })
}

fn describe(namespace: &str, hook: &str) -> String {
    kubectl_ok(&["describe", "owh", hook, "-n", namespace])
}

#[test]
fn an_applied_hook_is_ready_within_5s_with_a_labelled_owned_secret_and_events() {
    controller();
    let ns = namespace("ready");
    apply_hook(&ns, "shop");
    let started = Instant::now();
    let out = kubectl(&["wait", "--for=condition=Ready", "owh/shop", "-n", &ns, "--timeout=5s"]);
    assert!(
        out.success,
        "kubectl wait failed after {:?}: {}{}",
        started.elapsed(),
        out.stdout,
        out.stderr
    );

    let secret = get_json(&ns, "secret", "shop-webhook-secret").expect("the generated Secret exists");
    assert_eq!(
        secret["metadata"]["labels"]["outboundwebhooks.io/webhook-secret"],
        "true"
    );
    let owners = secret["metadata"]["ownerReferences"]
        .as_array()
        .expect("owner references");
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["kind"], "OutboundWebhook");
    assert_eq!(owners[0]["name"], "shop");
    assert_eq!(owners[0]["controller"], true);
    assert_eq!(owners[0]["uid"].as_str(), Some(uid(&ns, "shop").as_str()));
    let data = secret_data(&ns, "shop-webhook-secret").expect("data");
    let token = &data["token"];
    assert_eq!(token.len(), 64, "token length");
    assert!(
        token.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "lowercase hex"
    );
    assert_eq!(
        data["standard-webhooks-secret"],
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(token.as_bytes())
        )
    );

    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(hook["status"]["secretName"], "shop-webhook-secret");
    assert_eq!(hook["status"]["observedGeneration"], hook["metadata"]["generation"]);
    let table = kubectl_ok(&["get", "owh", "shop", "-n", &ns]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["shop", "https://hooks.example.com/in", "True", "Active"],
        "{table}"
    );

    let text = wait_for("Events in kubectl describe", SOON, || {
        let text = describe(&ns, "shop");
        if text.contains("SecretGenerated") && text.contains("Accepted") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(text.contains("Events:"), "{text}");
    assert!(!text.contains(token.as_str()), "token in describe:\n{text}");
}

#[test]
fn the_token_survives_spec_edits_and_delete_and_reapply() {
    controller();
    let ns = namespace("token-stays");
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let token = wait_token(&ns, "shop", SOON);

    let edited = hook_yaml(
        "shop",
        "https://other.example.com/new",
        json!({"events": ["kustomer.customer.create", "kustomer.user.update"]}),
    );
    assert!(apply_yaml(&ns, &edited).success);
    let ready = wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    assert_eq!(ready.observed_generation, Some(2));
    assert_eq!(
        wait_token(&ns, "shop", SOON),
        token,
        "token changed after editing url and events"
    );

    let old_uid = uid(&ns, "shop");
    kubectl_ok(&["delete", "owh", "shop", "-n", &ns]);
    // No garbage collector runs here, like the moment before it catches up.
    assert!(secret_data(&ns, "shop-webhook-secret").is_some());
    apply_hook(&ns, "shop");
    let new_uid = uid(&ns, "shop");
    assert_ne!(old_uid, new_uid);
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    assert_eq!(
        wait_token(&ns, "shop", SOON),
        token,
        "token changed after delete and re-apply"
    );
    let secret = get_json(&ns, "secret", "shop-webhook-secret").expect("Secret");
    let owners = secret["metadata"]["ownerReferences"]
        .as_array()
        .expect("owners")
        .clone();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        owners[0]["uid"].as_str(),
        Some(new_uid.as_str()),
        "adopted by the new hook"
    );
}

#[test]
fn enabled_false_is_disabled_by_spec_and_true_is_ready_again() {
    controller();
    let ns = namespace("enabled");
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let off = hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false}));
    assert!(apply_yaml(&ns, &off).success);
    let c = wait_condition(&ns, "shop", "Ready", "False", "DisabledBySpec", SOON);
    assert!(c.message.contains("spec.enabled is false"), "{c:?}");
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(hook["status"]["specDisabledGeneration"], 2);
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let text = wait_for("the DisabledBySpec Event", SOON, || {
        let text = describe(&ns, "shop");
        if text.contains("DisabledBySpec") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(text.contains("Normal"), "{text}");
}

#[test]
fn an_http_destination_is_not_accepted_without_allow_http() {
    controller();
    let ns = namespace("insecure");
    assert!(apply_yaml(&ns, &hook_yaml("plain", "http://hooks.example.com/in", json!({}))).success);
    let c = wait_condition(&ns, "plain", "Accepted", "False", "InsecureURL", SOON);
    assert!(c.message.contains("http://"), "{c:?}");
    wait_condition(&ns, "plain", "Ready", "False", "NotAccepted", SOON);
    assert!(
        secret_data(&ns, "plain-webhook-secret").is_none(),
        "no Secret for a refused hook"
    );
}
