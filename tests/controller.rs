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
        let mut process = ControllerProcess::start(
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

/// Names of the hooks whose Accepted condition is True (every hook must
/// have a current Accepted condition, else Err).
fn accepted_names(ns: &str) -> Result<Vec<String>, String> {
    let all = controller_process::accepted_conditions(ns);
    let mut accepted = Vec::new();
    for (name, (_, c, current)) in &all {
        match c {
            Some(c) if *current => {
                if c.status == "True" {
                    accepted.push(name.clone());
                }
            }
            other => return Err(format!("{name} has no current Accepted condition: {other:?}")),
        }
    }
    Ok(accepted)
}

/// Waits until exactly `expected` are accepted (and every hook has a verdict).
fn wait_accepted(ns: &str, expected: &[String], timeout: Duration) {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_for(&format!("accepted hooks {expected:?} in {ns}"), timeout, || {
        let accepted = accepted_names(ns)?;
        if accepted == expected {
            Ok(())
        } else {
            Err(format!("{accepted:?}"))
        }
    });
}

/// Hook names ordered as the limit orders them: creation time, then name.
fn by_age(ns: &str) -> Vec<String> {
    let mut hooks: Vec<(String, String)> = controller_process::accepted_conditions(ns)
        .into_iter()
        .map(|(name, (created, _, _))| (created, name))
        .collect();
    hooks.sort();
    hooks.into_iter().map(|(_, name)| name).collect()
}

#[test]
fn the_per_namespace_limit_is_sticky_admits_the_oldest_waiting_and_follows_the_annotation() {
    controller();
    let ns = namespace("limit");
    let other = namespace("limit-other");
    let dir = tempfile::tempdir().expect("a temporary folder");
    for i in 1..=7 {
        std::fs::write(
            dir.path().join(format!("hook-{i}.yaml")),
            hook_yaml(&format!("hook-{i}"), "https://hooks.example.com/in", json!({})),
        )
        .expect("writing a manifest");
    }
    let dir_path = dir.path().to_str().expect("utf-8 path");
    kubectl_ok(&["apply", "-n", &ns, "-f", dir_path]);
    apply_hook(&other, "neighbour-1");
    apply_hook(&other, "neighbour-2");

    let ordered = by_age(&ns);
    assert_eq!(ordered.len(), 7);
    let (first_five, last_two) = ordered.split_at(5);
    wait_accepted(&ns, first_five, SOON);
    for name in last_two {
        let c = wait_condition(&ns, name, "Accepted", "False", "OrgLimitExceeded", SOON);
        assert!(c.message.contains("allows 5") && c.message.contains("has 5"), "{c:?}");
        wait_condition(&ns, name, "Ready", "False", "NotAccepted", SOON);
        assert!(
            secret_data(&ns, &format!("{name}-webhook-secret")).is_none(),
            "{name} is waiting but got a Secret"
        );
    }
    for name in first_five {
        wait_condition(&ns, name, "Ready", "True", "Active", SOON);
    }
    wait_condition(&other, "neighbour-1", "Ready", "True", "Active", SOON);
    wait_condition(&other, "neighbour-2", "Ready", "True", "Active", SOON);

    // Over 20 s, no accepted hook ever flips.
    let baseline = controller_process::accepted_conditions(&ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut observations = 0;
    while Instant::now() < deadline {
        let now = controller_process::accepted_conditions(&ns);
        for (name, (_, c, _)) in &now {
            let before = &baseline[name].1;
            assert_eq!(c, before, "{name} changed while nothing happened");
        }
        observations += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(observations >= 20, "only {observations} observations");
    let text = kubectl_ok(&["describe", "owh", &last_two[0], "-n", &ns]);
    assert!(text.contains("OrgLimitExceeded"), "{text}");

    // Deleting an accepted hook admits the oldest waiting one, which gets its Secret.
    kubectl_ok(&["delete", "owh", &first_five[1], "-n", &ns]);
    let mut now_accepted: Vec<String> = first_five.iter().filter(|n| **n != first_five[1]).cloned().collect();
    now_accepted.push(last_two[0].clone());
    wait_accepted(&ns, &now_accepted, SOON);
    wait_condition(&ns, &last_two[0], "Ready", "True", "Active", SOON);
    wait_token(&ns, &last_two[0], SOON);
    wait_condition(&ns, &last_two[1], "Accepted", "False", "OrgLimitExceeded", SOON);

    // The Namespace annotation set to 2 leaves exactly the two oldest accepted.
    kubectl_ok(&["annotate", "namespace", &ns, "outboundwebhooks.io/max-webhooks=2"]);
    let remaining = by_age(&ns);
    let oldest_two: Vec<String> = remaining
        .iter()
        .filter(|n| now_accepted.contains(n))
        .take(2)
        .cloned()
        .collect();
    wait_accepted(&ns, &oldest_two, SOON);
    let dropped = remaining
        .iter()
        .find(|n| !oldest_two.contains(n))
        .expect("a dropped hook");
    let c = wait_condition(&ns, dropped, "Accepted", "False", "OrgLimitExceeded", SOON);
    assert!(c.message.contains("allows 2"), "{c:?}");
    // Its Secret is kept.
    assert!(secret_data(&ns, &format!("{dropped}-webhook-secret")).is_some());
    wait_accepted(&other, &["neighbour-1".to_string(), "neighbour-2".to_string()], SOON);

    // An invalid annotation: the default applies, and the message says why.
    kubectl_ok(&[
        "annotate",
        "namespace",
        &ns,
        "outboundwebhooks.io/max-webhooks=lots",
        "--overwrite",
    ]);
    let first = &oldest_two[0];
    let c = wait_for("the invalid-annotation message", SOON, || {
        match condition(&ns, first, "Accepted") {
            Some(c) if c.message.contains("not a whole number") => Ok(c),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(c.message.contains("default limit of 5"), "{c:?}");

    // Removing the annotation admits the waiting ones again (six hooks, five slots).
    kubectl_ok(&["annotate", "namespace", &ns, "outboundwebhooks.io/max-webhooks-"]);
    wait_for("five accepted again", SOON, || {
        let accepted = accepted_names(&ns)?;
        if accepted.len() == 5 {
            Ok(())
        } else {
            Err(format!("{accepted:?}"))
        }
    });
}

fn apply_dispatcher_status(ns: &str, hook: &str, delivery: serde_json::Value) {
    let body = json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": hook},
        "status": {"delivery": delivery},
    })
    .to_string();
    let out = support::kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--subresource=status",
            "--field-manager=outbound-webhooks-dispatcher",
            "-n",
            ns,
            "-f",
            "-",
        ],
        Some(&body),
    );
    assert!(out.success, "dispatcher-style status apply failed: {}", out.stderr);
}

fn generation(ns: &str, hook: &str) -> i64 {
    get_json(ns, "owh", hook).expect("hook")["metadata"]["generation"]
        .as_i64()
        .expect("generation")
}

#[test]
fn a_dispatcher_disable_record_turns_ready_off_until_reenabled_by_annotation_or_enabled_toggle() {
    controller();
    let ns = namespace("disabled");
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);

    apply_dispatcher_status(
        &ns,
        "shop",
        json!({
            "consecutiveFailures": 10,
            "disabled": {
                "reason": "AutoDisabled",
                "at": "2026-11-27T10:00:00Z",
                "message": "HTTP 500 Internal Server Error on 10 attempts",
                "reenableToken": "",
                "generation": generation(&ns, "shop"),
            },
        }),
    );
    let c = wait_condition(&ns, "shop", "Ready", "False", "AutoDisabled", SOON);
    let command = format!("kubectl annotate owh/shop -n {ns} outboundwebhooks.io/reenable=\"$(date +%s)\" --overwrite");
    assert!(c.message.contains("HTTP 500 Internal Server Error"), "{c:?}");
    assert!(c.message.contains(&command), "{c:?}");
    let table = kubectl_ok(&["get", "owh", "shop", "-n", &ns]);
    assert!(
        table.lines().nth(1).unwrap_or_default().contains("AutoDisabled"),
        "{table}"
    );
    let wide = kubectl_ok(&["get", "owh", "shop", "-n", &ns, "-o", "wide"]);
    assert!(wide.contains("HTTP 500 Internal Server Error"), "{wide}");

    // The reenable annotation clears it; the dispatcher's figures stay.
    kubectl_ok(&[
        "annotate",
        "owh/shop",
        "-n",
        &ns,
        "outboundwebhooks.io/reenable=1700000000",
        "--overwrite",
    ]);
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(
        hook["status"]["delivery"]["consecutiveFailures"], 10,
        "the controller touched delivery"
    );
    let text = wait_for("AutoDisabled and ReEnabled Events", SOON, || {
        let text = describe(&ns, "shop");
        if text.contains("AutoDisabled") && text.contains("ReEnabled") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(text.contains("Warning"), "{text}");

    // A second record clears by enabled false, DisabledBySpec, then true.
    apply_dispatcher_status(
        &ns,
        "shop",
        json!({
            "disabled": {
                "reason": "AutoDisabled",
                "at": "2026-11-27T10:05:00Z",
                "message": "timeout after 10s",
                "reenableToken": "1700000000",
                "generation": generation(&ns, "shop"),
            },
        }),
    );
    wait_condition(&ns, "shop", "Ready", "False", "AutoDisabled", SOON);
    assert!(
        apply_yaml(
            &ns,
            &hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false}))
        )
        .success
    );
    wait_condition(&ns, "shop", "Ready", "False", "DisabledBySpec", SOON);
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);

    // A Revoked record shows Revoked.
    apply_dispatcher_status(
        &ns,
        "shop",
        json!({
            "disabled": {
                "reason": "Revoked",
                "at": "2026-11-27T10:10:00Z",
                "message": "HTTP 410 Gone",
                "reenableToken": "1700000000",
                "generation": generation(&ns, "shop"),
            },
        }),
    );
    let c = wait_condition(&ns, "shop", "Ready", "False", "Revoked", SOON);
    assert!(c.message.contains("410") && c.message.contains(&command), "{c:?}");
}

#[test]
fn a_secret_ref_recovers_from_missing_and_unlabelled_with_no_other_action() {
    controller();
    let ns = namespace("secret-ref");
    let yaml = hook_yaml(
        "byo",
        "https://hooks.example.com/in",
        json!({"secretRef": {"name": "mine", "key": "token"}}),
    );
    assert!(apply_yaml(&ns, &yaml).success);
    let c = wait_condition(&ns, "byo", "SecretReady", "False", "SecretNotFound", SOON);
    assert!(c.message.contains("mine"), "{c:?}");
    wait_condition(&ns, "byo", "Ready", "False", "SecretNotReady", SOON);

    let token = "0123456789abcdef0123456789abcdef";
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "mine",
        "-n",
        &ns,
        &format!("--from-literal=token={token}"),
    ]);
    let c = wait_condition(&ns, "byo", "SecretReady", "False", "SecretNotLabelled", SOON);
    let command = format!("kubectl label secret mine outboundwebhooks.io/webhook-secret=true -n {ns}");
    assert!(c.message.contains(&command), "{c:?}");

    kubectl_ok(&[
        "label",
        "secret",
        "mine",
        "outboundwebhooks.io/webhook-secret=true",
        "-n",
        &ns,
    ]);
    wait_condition(&ns, "byo", "SecretReady", "True", "SecretReferenced", SOON);
    wait_condition(&ns, "byo", "Ready", "True", "Active", SOON);
    assert!(
        secret_data(&ns, "byo-webhook-secret").is_none(),
        "nothing generated with secretRef"
    );

    // A token outside 16..512 bytes: a clear message.
    let short = support::kubectl_with_input(
        &["apply", "-n", &ns, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "mine", "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
                "stringData": {"token": "short"},
            })
            .to_string(),
        ),
    );
    assert!(short.success, "{}", short.stderr);
    let c = wait_condition(&ns, "byo", "SecretReady", "False", "SecretNotFound", SOON);
    assert!(c.message.contains("16 to 512"), "{c:?}");
    let hook = get_json(&ns, "owh", "byo").expect("hook").to_string();
    assert!(!hook.contains(token), "the token is in the status");
}

#[test]
fn a_same_named_secret_owned_by_nobody_is_left_untouched() {
    controller();
    let ns = namespace("conflict");
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "shop-webhook-secret",
        "-n",
        &ns,
        "--from-literal=token=theirs",
    ]);
    let before = get_json(&ns, "secret", "shop-webhook-secret").expect("Secret");
    apply_hook(&ns, "shop");
    let c = wait_condition(&ns, "shop", "SecretReady", "False", "SecretConflict", SOON);
    assert!(
        c.message.contains("shop-webhook-secret") && c.message.contains("left untouched"),
        "{c:?}"
    );
    wait_condition(&ns, "shop", "Ready", "False", "SecretNotReady", SOON);
    let after = get_json(&ns, "secret", "shop-webhook-secret").expect("Secret");
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "the Secret was modified"
    );
    assert_eq!(
        secret_data(&ns, "shop-webhook-secret").expect("data")["token"],
        "theirs"
    );

    // Once the other Secret is gone, the hook recovers by itself.
    kubectl_ok(&["delete", "secret", "shop-webhook-secret", "-n", &ns]);
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    assert_eq!(wait_token(&ns, "shop", SOON).len(), 64);
}

#[test]
fn the_token_never_appears_in_logs_status_or_events() {
    let process = controller();
    let ns = namespace("no-leak");
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let token = wait_token(&ns, "shop", SOON);
    let whsec = secret_data(&ns, "shop-webhook-secret").expect("data")["standard-webhooks-secret"].clone();
    // Make the controller log and publish more about this hook.
    assert!(
        apply_yaml(
            &ns,
            &hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false}))
        )
        .success
    );
    wait_condition(&ns, "shop", "Ready", "False", "DisabledBySpec", SOON);

    let logs = process.logs();
    assert!(logs.contains("shop"), "the log captured nothing about the hook");
    let status = kubectl_ok(&["get", "owh", "shop", "-n", &ns, "-o", "yaml"]);
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "yaml"]);
    let describe = describe(&ns, "shop");
    assert!(events.contains("SecretGenerated"), "{events}");
    for (what, text) in [
        ("logs", &logs),
        ("status", &status),
        ("events", &events),
        ("describe", &describe),
    ] {
        assert!(!text.contains(&token), "the token appears in the {what}");
        assert!(
            !text.contains(&whsec),
            "the standard-webhooks secret appears in the {what}"
        );
    }
}

#[test]
fn the_ops_endpoints_serve_health_readiness_and_metrics() {
    let process = controller();
    assert_eq!(process.http_get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(process.http_get("/readyz").map(|r| r.0), Some(200));
    let (code, body) = process.http_get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    for name in [
        "outbound_webhooks_controller_reconciles_total",
        "outbound_webhooks_controller_reconcile_errors_total",
        "outbound_webhooks_controller_reconcile_duration_seconds_bucket",
        "outbound_webhooks_controller_leader 1",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
}

#[test]
fn a_header_secret_must_be_labelled_before_the_hook_is_ready() {
    controller();
    let ns = namespace("header-secret");
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        &ns,
        "--from-literal=auth=Bearer abc",
    ]);
    let yaml = hook_yaml(
        "shop",
        "https://hooks.example.com/in",
        json!({"headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}]}),
    );
    assert!(apply_yaml(&ns, &yaml).success);
    let c = wait_condition(&ns, "shop", "SecretReady", "False", "SecretNotLabelled", SOON);
    assert!(c.message.contains("header Authorization"), "{c:?}");
    assert!(
        c.message.contains(&format!(
            "kubectl label secret creds outboundwebhooks.io/webhook-secret=true -n {ns}"
        )),
        "{c:?}"
    );
    kubectl_ok(&[
        "label",
        "secret",
        "creds",
        "outboundwebhooks.io/webhook-secret=true",
        "-n",
        &ns,
    ]);
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(hook["status"]["secretName"], "shop-webhook-secret");
}
