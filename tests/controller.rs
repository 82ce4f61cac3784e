//! The controller on a real API server, driven with kubectl as a user
//! would. One controller process (default flags) serves every test of this
//! binary; tests that need other flags or restart controllers live in
//! `controller_processes.rs`, which has its own API server.

use outbound_webhooks_test_kit as support;

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use base64::Engine as _;
use outbound_webhooks::{
    contract::conditions::{ACCEPTED, DELIVERING, READY, SECRET_READY, accepted, delivering, ready, secret_ready},
    contract::resource::{
        MAX_WEBHOOKS_ANNOTATION, PROMOTE_SECRET_ANNOTATION, REENABLE_ANNOTATION, ROTATE_SECRET_ANNOTATION,
        WEBHOOK_SECRET_LABEL,
    },
    contract::signing_tokens::{NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY},
    controller::secrets::rotation::PROMOTED_ANNOTATION,
    controller::secrets::secret::{STANDARD_WEBHOOKS_KEY, TOKEN_KEY},
};
use serde_json::json;
use support::{
    controller::ControllerProcess,
    hooks::{
        SOON, apply_hook, assert_token_kept, condition, generated_secret, generation, hook_yaml, label_secret_command,
        labelled_secret, uid, wait_active, wait_condition, wait_not_ready, wait_token, write_delivery_status,
    },
    kubectl,
    kubectl::{apply_folder, apply_ok, describe, events_about, get_json, owh_row, secret_data},
    kubectl_ok, namespace, wait_for,
};

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

/// A new namespace with the hook `shop` applied and Ready (the shared
/// controller started); returns the namespace.
fn active_shop(test: &str) -> String {
    controller();
    let ns = namespace(test);
    apply_hook(&ns, "shop");
    wait_active(&ns, "shop", SOON);
    ns
}

/// Waits until `kubectl describe owh shop` shows every one of `events`
/// (Event reasons); returns the text.
fn wait_described(ns: &str, events: &[&str]) -> String {
    support::kubectl::wait_described(ns, "shop", events)
}

#[test]
fn an_applied_hook_is_ready_within_5s_with_a_labelled_owned_secret_and_events() {
    controller();
    let ns = namespace("ready");
    apply_hook(&ns, "shop");
    let started = Instant::now();
    let out = kubectl(&[
        "wait",
        &format!("--for=condition={READY}"),
        "owh/shop",
        "-n",
        &ns,
        "--timeout=5s",
    ]);
    assert!(
        out.success,
        "kubectl wait failed after {:?}: {}{}",
        started.elapsed(),
        out.stdout,
        out.stderr
    );

    let secret = get_json(&ns, "secret", "shop-webhook-secret").expect("the generated Secret exists");
    assert_eq!(secret["metadata"]["labels"][WEBHOOK_SECRET_LABEL], "true");
    let owners = secret["metadata"]["ownerReferences"]
        .as_array()
        .expect("owner references");
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["kind"], "OutboundWebhook");
    assert_eq!(owners[0]["name"], "shop");
    assert_eq!(owners[0]["controller"], true);
    assert_eq!(owners[0]["uid"].as_str(), Some(uid(&ns, "shop").as_str()));
    let data = secret_data(&ns, "shop-webhook-secret").expect("data");
    let token = &data[TOKEN_KEY];
    assert_eq!(token.len(), 64, "token length");
    assert!(
        token.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "lowercase hex"
    );
    assert_eq!(
        data[STANDARD_WEBHOOKS_KEY],
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
        ["shop", "https://hooks.example.com/in", "True", ready::ACTIVE],
        "{table}"
    );

    let text = wait_described(&ns, &[secret_ready::SECRET_GENERATED, accepted::ACCEPTED]);
    assert!(text.contains("Events:"), "{text}");
    assert!(!text.contains(token.as_str()), "token in describe:\n{text}");
}

#[test]
fn the_token_survives_spec_edits_and_delete_and_reapply() {
    let ns = active_shop("token-stays");
    let token = wait_token(&ns, "shop", SOON);

    let edited = hook_yaml(
        "shop",
        "https://other.example.com/new",
        json!({"events": ["kustomer.customer.create", "kustomer.user.update"]}),
    );
    apply_ok(&ns, &edited);
    let ready = wait_active(&ns, "shop", SOON);
    assert_eq!(ready.observed_generation, Some(2));
    assert_token_kept(&ns, "shop", &token, "token changed after editing url and events");

    let old_uid = uid(&ns, "shop");
    kubectl_ok(&["delete", "owh", "shop", "-n", &ns]);
    // No garbage collector runs here, like the moment before it catches up.
    assert!(secret_data(&ns, "shop-webhook-secret").is_some());
    apply_hook(&ns, "shop");
    let new_uid = uid(&ns, "shop");
    assert_ne!(old_uid, new_uid);
    wait_active(&ns, "shop", SOON);
    assert_token_kept(&ns, "shop", &token, "token changed after delete and re-apply");
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
    let ns = active_shop("enabled");
    let off = hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false}));
    apply_ok(&ns, &off);
    let c = wait_not_ready(&ns, "shop", ready::DISABLED_BY_SPEC, SOON);
    assert!(c.message.contains("spec.enabled is false"), "{c:?}");
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(hook["status"]["specDisabledGeneration"], 2);
    apply_hook(&ns, "shop");
    wait_active(&ns, "shop", SOON);
    let text = wait_described(&ns, &[ready::DISABLED_BY_SPEC]);
    assert!(text.contains("Normal"), "{text}");
}

#[test]
fn an_http_destination_is_not_accepted_without_allow_http() {
    controller();
    let ns = namespace("insecure");
    apply_ok(&ns, &hook_yaml("plain", "http://hooks.example.com/in", json!({})));
    let c = wait_condition(&ns, "plain", ACCEPTED, "False", accepted::INSECURE_URL, SOON);
    assert!(c.message.contains("http://"), "{c:?}");
    wait_not_ready(&ns, "plain", ready::NOT_ACCEPTED, SOON);
    assert!(
        secret_data(&ns, "plain-webhook-secret").is_none(),
        "no Secret for a refused hook"
    );
}

/// Names of the hooks whose Accepted condition is True (every hook must
/// have a current Accepted condition, else Err).
fn accepted_names(ns: &str) -> Result<Vec<String>, String> {
    let all = support::hooks::accepted_conditions(ns);
    let mut accepted = Vec::new();
    for (name, verdict) in &all {
        match &verdict.accepted {
            Some(c) if verdict.current => {
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
    let mut hooks: Vec<(String, String)> = support::hooks::accepted_conditions(ns)
        .into_iter()
        .map(|(name, verdict)| (verdict.created, name))
        .collect();
    hooks.sort();
    hooks.into_iter().map(|(_, name)| name).collect()
}

#[test]
fn the_per_namespace_limit_is_sticky_admits_the_oldest_waiting_and_follows_the_annotation() {
    controller();
    let ns = namespace("limit");
    let other = namespace("limit-other");
    apply_folder(&ns, (1..=7).map(hook_file));
    apply_hook(&other, "neighbour-1");
    apply_hook(&other, "neighbour-2");

    let ordered = by_age(&ns);
    assert_eq!(ordered.len(), 7);
    let (first_five, last_two) = ordered.split_at(5);
    wait_accepted(&ns, first_five, SOON);
    for name in last_two {
        let c = wait_condition(&ns, name, ACCEPTED, "False", accepted::ORG_LIMIT_EXCEEDED, SOON);
        assert!(c.message.contains("allows 5") && c.message.contains("has 5"), "{c:?}");
        wait_not_ready(&ns, name, ready::NOT_ACCEPTED, SOON);
        assert!(
            generated_secret(&ns, name).is_none(),
            "{name} is waiting but got a Secret"
        );
    }
    for name in first_five {
        wait_active(&ns, name, SOON);
    }
    wait_active(&other, "neighbour-1", SOON);
    wait_active(&other, "neighbour-2", SOON);

    // Over 20 s, no accepted hook ever flips.
    let baseline = support::hooks::accepted_conditions(&ns);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut observations = 0;
    while Instant::now() < deadline {
        let now = support::hooks::accepted_conditions(&ns);
        for (name, verdict) in &now {
            let before = &baseline[name].accepted;
            assert_eq!(&verdict.accepted, before, "{name} changed while nothing happened");
        }
        observations += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(observations >= 20, "only {observations} observations");
    let text = kubectl_ok(&["describe", "owh", &last_two[0], "-n", &ns]);
    assert!(text.contains(accepted::ORG_LIMIT_EXCEEDED), "{text}");

    // Deleting an accepted hook admits the oldest waiting one, which gets its Secret.
    kubectl_ok(&["delete", "owh", &first_five[1], "-n", &ns]);
    let mut now_accepted: Vec<String> = first_five.iter().filter(|n| **n != first_five[1]).cloned().collect();
    now_accepted.push(last_two[0].clone());
    wait_accepted(&ns, &now_accepted, SOON);
    wait_active(&ns, &last_two[0], SOON);
    wait_token(&ns, &last_two[0], SOON);
    wait_condition(&ns, &last_two[1], ACCEPTED, "False", accepted::ORG_LIMIT_EXCEEDED, SOON);

    // The Namespace annotation set to 2 leaves exactly the two oldest accepted.
    kubectl_ok(&["annotate", "namespace", &ns, &format!("{MAX_WEBHOOKS_ANNOTATION}=2")]);
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
    let c = wait_condition(&ns, dropped, ACCEPTED, "False", accepted::ORG_LIMIT_EXCEEDED, SOON);
    assert!(c.message.contains("allows 2"), "{c:?}");
    // Its Secret is kept.
    assert!(generated_secret(&ns, dropped).is_some());
    wait_accepted(&other, &["neighbour-1".to_string(), "neighbour-2".to_string()], SOON);

    // An invalid annotation: the default applies, and the message says why.
    kubectl_ok(&[
        "annotate",
        "namespace",
        &ns,
        &format!("{MAX_WEBHOOKS_ANNOTATION}=lots"),
        "--overwrite",
    ]);
    let first = &oldest_two[0];
    let c = wait_for("the invalid-annotation message", SOON, || {
        match condition(&ns, first, ACCEPTED) {
            Some(c) if c.message.contains("not a whole number") => Ok(c),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(c.message.contains("default limit of 5"), "{c:?}");

    // Removing the annotation admits the waiting ones again (six hooks, five slots).
    kubectl_ok(&["annotate", "namespace", &ns, &format!("{MAX_WEBHOOKS_ANNOTATION}-")]);
    wait_for("five accepted again", SOON, || {
        let accepted = accepted_names(&ns)?;
        if accepted.len() == 5 {
            Ok(())
        } else {
            Err(format!("{accepted:?}"))
        }
    });
}

/// `hook-N.yaml` with the manifest of `hook-N`, for [`apply_folder`].
fn hook_file(i: usize) -> (String, String) {
    (
        format!("hook-{i}.yaml"),
        hook_yaml(&format!("hook-{i}"), "https://hooks.example.com/in", json!({})),
    )
}

/// A dispatcher's turn-off record of the hook's current generation.
/// Writes `status.delivery` as a dispatcher turning `shop` off would: the
/// turn-off `record` for its current generation, and the failure count when given.
fn write_turn_off(ns: &str, mut record: serde_json::Value, failures: Option<i64>) {
    record["generation"] = json!(generation(ns, "shop"));
    let mut delivery = json!({"disabled": record});
    if let Some(failures) = failures {
        delivery["consecutiveFailures"] = json!(failures);
    }
    write_delivery_status(ns, "shop", delivery);
}

#[test]
fn a_dispatcher_disable_record_turns_ready_off_until_reenabled_by_annotation_or_enabled_toggle() {
    let ns = active_shop("disabled");

    write_turn_off(
        &ns,
        json!({"reason": ready::AUTO_DISABLED, "at": "2026-11-27T10:00:00Z", "reenableToken": "",
               "message": "HTTP 500 Internal Server Error on 10 attempts"}),
        Some(10),
    );
    let c = wait_not_ready(&ns, "shop", ready::AUTO_DISABLED, SOON);
    let command = format!("kubectl annotate owh/shop -n {ns} {REENABLE_ANNOTATION}=\"$(date +%s)\" --overwrite");
    assert!(c.message.contains("HTTP 500 Internal Server Error"), "{c:?}");
    assert!(c.message.contains(&command), "{c:?}");
    let table = kubectl_ok(&["get", "owh", "shop", "-n", &ns]);
    assert!(
        table.lines().nth(1).unwrap_or_default().contains(ready::AUTO_DISABLED),
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
        &format!("{REENABLE_ANNOTATION}=1700000000"),
        "--overwrite",
    ]);
    wait_active(&ns, "shop", SOON);
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(
        hook["status"]["delivery"]["consecutiveFailures"], 10,
        "the controller touched delivery"
    );
    let text = wait_described(&ns, &[ready::AUTO_DISABLED, "ReEnabled"]);
    assert!(text.contains("Warning"), "{text}");

    // A second record clears by enabled false, DisabledBySpec, then true.
    let record = json!({"reason": ready::AUTO_DISABLED, "at": "2026-11-27T10:05:00Z",
                        "message": "timeout after 10s", "reenableToken": "1700000000"});
    write_turn_off(&ns, record, None);
    wait_not_ready(&ns, "shop", ready::AUTO_DISABLED, SOON);
    apply_ok(
        &ns,
        &hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false})),
    );
    wait_not_ready(&ns, "shop", ready::DISABLED_BY_SPEC, SOON);
    apply_hook(&ns, "shop");
    wait_active(&ns, "shop", SOON);

    // A Revoked record shows Revoked.
    let record = json!({"reason": ready::REVOKED, "at": "2026-11-27T10:10:00Z",
                        "message": "HTTP 410 Gone", "reenableToken": "1700000000"});
    write_turn_off(&ns, record, None);
    let c = wait_not_ready(&ns, "shop", ready::REVOKED, SOON);
    assert!(c.message.contains("410") && c.message.contains(&command), "{c:?}");
}

/// What a dispatcher mirrors after `failures` failed requests in a row,
/// the first at 10:02:11Z (503), with the default schedule's estimate.
fn failing_delivery(failures: i64) -> serde_json::Value {
    json!({
        "consecutiveFailures": failures,
        "lastSuccessTime": "2026-11-27T10:01:50Z",
        "lastFailureTime": "2026-11-27T10:20:40Z",
        "lastFailure": {"statusCode": 503, "message": "HTTP 503 Service Unavailable: upstream down"},
        "failingSince": "2026-11-27T10:02:11Z",
        "estimatedTurnOffTime": "2026-11-27T11:22:11Z",
        "attemptsPerEvent": 10,
    })
}

/// Waits until the shared controller's gauges of `ns/shop` read `expected`
/// (failing, consecutive failures, turned off; None: no series).
fn wait_gauges(ns: &str, expected: [Option<f64>; 3]) {
    wait_for(&format!("the gauges of {ns}/shop to read {expected:?}"), SOON, || {
        let gauges = controller().hook_gauges(ns, "shop");
        if gauges == expected {
            Ok(())
        } else {
            Err(format!("{gauges:?}"))
        }
    });
}

#[test]
fn a_failing_hook_is_delivering_false_with_failures_events_and_gauges_while_it_stays_ready() {
    let ns = active_shop("delivering");
    let c = wait_condition(&ns, "shop", DELIVERING, "True", delivering::NO_ATTEMPTS_YET, SOON);
    assert_eq!(c.message, "no request has been sent to the receiver yet");
    // A healthy hook has no per-hook series (tenants must not set the count).
    wait_gauges(&ns, [None, None, None]);

    write_delivery_status(&ns, "shop", failing_delivery(7));
    let c = wait_condition(&ns, "shop", DELIVERING, "False", delivering::FAILING, SOON);
    assert_eq!(
        c.message,
        "7 attempts failed in a row since 10:02:11Z (last: HTTP 503); the hook turns off if an event fails all 10 attempts, at about 11:22Z unless a delivery succeeds"
    );
    wait_active(&ns, "shop", SOON);
    let row = owh_row(&ns, "shop");
    assert_eq!(
        (row["READY"].as_str(), row["STATUS"].as_str(), row["FAILURES"].as_str()),
        ("True", ready::ACTIVE, "7"),
        "{row:?}"
    );
    wait_gauges(&ns, [Some(1.0), Some(7.0), Some(0.0)]);

    // More failures: a new count, no new Event, the same transition time.
    write_delivery_status(&ns, "shop", failing_delivery(8));
    let later = wait_for("the count to reach 8", SOON, || {
        let c = condition(&ns, "shop", DELIVERING).ok_or("no Delivering")?;
        if c.message.starts_with("8 attempts") {
            Ok(c)
        } else {
            Err(c.message)
        }
    });
    assert_eq!(later.last_transition_time, c.last_transition_time);

    // A success: Succeeding, a Normal Event, still Ready.
    write_delivery_status(
        &ns,
        "shop",
        json!({"consecutiveFailures": 0, "lastSuccessTime": "2026-11-27T10:21:00Z",
               "lastFailureTime": "2026-11-27T10:20:40Z", "attemptsPerEvent": 10}),
    );
    wait_condition(&ns, "shop", DELIVERING, "True", delivering::SUCCEEDING, SOON);
    wait_active(&ns, "shop", SOON);
    assert_eq!(owh_row(&ns, "shop")["FAILURES"], "0");
    wait_gauges(&ns, [None, None, None]);
    let events = wait_for("the Failing and Recovered Events", SOON, || {
        let events = events_about(&ns, "shop");
        if events.iter().any(|e| e.reason == "Recovered") {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    });
    let failing: Vec<_> = events.iter().filter(|e| e.reason == delivering::FAILING).collect();
    assert_eq!(failing.len(), 1, "one Warning per transition: {events:?}");
    assert_eq!(failing[0].type_, "Warning");
    assert!(
        failing[0].message.starts_with("7 attempts failed in a row"),
        "{events:?}"
    );
    let recovered: Vec<_> = events.iter().filter(|e| e.reason == "Recovered").collect();
    assert_eq!(
        (recovered.len(), recovered[0].type_.as_str()),
        (1, "Normal"),
        "{events:?}"
    );

    // Turned off: the gauge says so; deleted: the series go.
    write_turn_off(
        &ns,
        json!({"reason": ready::AUTO_DISABLED, "at": "2026-11-27T11:22:30Z", "reenableToken": "",
               "message": "HTTP 503 on 10 attempts"}),
        Some(10),
    );
    wait_not_ready(&ns, "shop", ready::AUTO_DISABLED, SOON);
    let c = wait_condition(&ns, "shop", DELIVERING, "False", delivering::FAILING, SOON);
    assert_eq!(
        c.message,
        "10 attempts failed in a row; the hook is turned off (see the Ready condition)"
    );
    wait_gauges(&ns, [Some(1.0), Some(10.0), Some(1.0)]);
    kubectl_ok(&["delete", "owh", "shop", "-n", &ns, "--wait=true"]);
    wait_gauges(&ns, [None, None, None]);
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
    apply_ok(&ns, &yaml);
    let c = wait_condition(&ns, "byo", SECRET_READY, "False", secret_ready::SECRET_NOT_FOUND, SOON);
    assert!(c.message.contains("mine"), "{c:?}");
    wait_not_ready(&ns, "byo", ready::SECRET_NOT_READY, SOON);

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
    let c = wait_condition(
        &ns,
        "byo",
        SECRET_READY,
        "False",
        secret_ready::SECRET_NOT_LABELLED,
        SOON,
    );
    let command = label_secret_command("mine", &ns);
    assert!(c.message.contains(&command), "{c:?}");

    kubectl_ok(&[
        "label",
        "secret",
        "mine",
        &format!("{WEBHOOK_SECRET_LABEL}=true"),
        "-n",
        &ns,
    ]);
    wait_condition(&ns, "byo", SECRET_READY, "True", secret_ready::SECRET_REFERENCED, SOON);
    wait_active(&ns, "byo", SOON);
    assert!(
        secret_data(&ns, "byo-webhook-secret").is_none(),
        "nothing generated with secretRef"
    );

    // A token outside 16..512 bytes: a clear message.
    // `token` is the key the hook's secretRef names.
    apply_ok(&ns, &labelled_secret("mine", json!({"token": "short"})));
    let c = wait_condition(&ns, "byo", SECRET_READY, "False", secret_ready::SECRET_INVALID, SOON);
    assert!(c.message.contains("16 to 512"), "{c:?}");
    let hook = get_json(&ns, "owh", "byo").expect("hook").to_string();
    assert!(!hook.contains(token), "the token is in the status");
}

#[test]
fn a_token_that_is_not_utf8_is_secret_invalid_naming_the_secret_and_key_never_the_value() {
    controller();
    let ns = namespace("token-binary");
    // 32 bytes, not UTF-8: the dispatcher could not sign with it.
    let binary = base64::engine::general_purpose::STANDARD.encode([0xffu8; 32]);
    apply_ok(
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "mine", "labels": {WEBHOOK_SECRET_LABEL: "true"}},
            "data": {"signing": binary},
        })
        .to_string(),
    );
    apply_ok(
        &ns,
        &hook_yaml(
            "byo",
            "https://hooks.example.com/in",
            json!({"secretRef": {"name": "mine", "key": "signing"}}),
        ),
    );
    let c = wait_condition(&ns, "byo", SECRET_READY, "False", secret_ready::SECRET_INVALID, SOON);
    assert!(
        c.message.contains("\"signing\" of Secret mine") && c.message.contains("not UTF-8"),
        "{c:?}"
    );
    wait_not_ready(&ns, "byo", ready::SECRET_NOT_READY, SOON);
    let wide = kubectl_ok(&["get", "owh", "byo", "-n", &ns, "-o", "wide"]);
    assert!(wide.contains("SecretNotReady") && wide.contains("not UTF-8"), "{wide}");
    assert!(!get_json(&ns, "owh", "byo").expect("hook").to_string().contains(&binary));
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
    let c = wait_condition(&ns, "shop", SECRET_READY, "False", secret_ready::SECRET_CONFLICT, SOON);
    assert!(
        c.message.contains("shop-webhook-secret") && c.message.contains("left untouched"),
        "{c:?}"
    );
    wait_not_ready(&ns, "shop", ready::SECRET_NOT_READY, SOON);
    let after = get_json(&ns, "secret", "shop-webhook-secret").expect("Secret");
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "the Secret was modified"
    );
    assert_eq!(
        secret_data(&ns, "shop-webhook-secret").expect("data")[TOKEN_KEY],
        "theirs"
    );

    // Once the other Secret is gone, the hook recovers by itself.
    kubectl_ok(&["delete", "secret", "shop-webhook-secret", "-n", &ns]);
    wait_active(&ns, "shop", SOON);
    assert_eq!(wait_token(&ns, "shop", SOON).len(), 64);
}

#[test]
fn the_token_never_appears_in_logs_status_or_events() {
    let process = controller();
    let ns = active_shop("no-leak");
    let token = wait_token(&ns, "shop", SOON);
    let whsec = secret_data(&ns, "shop-webhook-secret").expect("data")[STANDARD_WEBHOOKS_KEY].clone();
    // Make the controller log and publish more about this hook.
    apply_ok(
        &ns,
        &hook_yaml("shop", "https://hooks.example.com/in", json!({"enabled": false})),
    );
    wait_not_ready(&ns, "shop", ready::DISABLED_BY_SPEC, SOON);

    let logs = process.logs();
    assert!(logs.contains("shop"), "the log captured nothing about the hook");
    let status = kubectl_ok(&["get", "owh", "shop", "-n", &ns, "-o", "yaml"]);
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "yaml"]);
    let describe = describe(&ns, "shop");
    assert!(events.contains(secret_ready::SECRET_GENERATED), "{events}");
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
    apply_ok(&ns, &yaml);
    let c = wait_condition(
        &ns,
        "shop",
        SECRET_READY,
        "False",
        secret_ready::SECRET_NOT_LABELLED,
        SOON,
    );
    assert!(c.message.contains("header Authorization"), "{c:?}");
    assert!(c.message.contains(&label_secret_command("creds", &ns)), "{c:?}");
    kubectl_ok(&[
        "label",
        "secret",
        "creds",
        &format!("{WEBHOOK_SECRET_LABEL}=true"),
        "-n",
        &ns,
    ]);
    wait_active(&ns, "shop", SOON);
    let hook = get_json(&ns, "owh", "shop").expect("hook");
    assert_eq!(hook["status"]["secretName"], "shop-webhook-secret");

    // A value with a control character inside: SecretInvalid, naming the
    // Secret and key; one trailing line break (kubectl --from-file) is fine.
    apply_ok(&ns, &labelled_secret("creds", json!({"auth": "Bearer abc\rdef"})));
    let c = wait_condition(&ns, "shop", SECRET_READY, "False", secret_ready::SECRET_INVALID, SOON);
    assert!(
        c.message.contains("\"auth\" of Secret creds (header Authorization)"),
        "{c:?}"
    );
    assert!(!c.message.contains("Bearer"), "the value is in the message: {c:?}");
    apply_ok(&ns, &labelled_secret("creds", json!({"auth": "Bearer abc\n"})));
    wait_active(&ns, "shop", SOON);
}

/// Waits until the Secret of `shop` satisfies `check`; returns its data.
fn wait_shop_secret(
    ns: &str,
    what: &str,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    wait_for(what, SOON, || {
        let data = generated_secret(ns, "shop").ok_or("no Secret")?;
        if check(&data) {
            Ok(data)
        } else {
            Err(format!("keys {:?}", data.keys()))
        }
    })
}

/// Waits until `SecretReady` of `shop` is True and says `text`.
fn wait_secret_ready_says(ns: &str, text: &str) -> String {
    wait_condition(ns, "shop", SECRET_READY, "True", secret_ready::SECRET_GENERATED, SOON);
    wait_for(&format!("SecretReady to say {text:?}"), SOON, || {
        let c = condition(ns, "shop", SECRET_READY).ok_or("no SecretReady")?;
        if c.status == "True" && c.message.contains(text) {
            Ok(c.message)
        } else {
            Err(format!("{c:?}"))
        }
    })
}

#[test]
fn a_promote_value_matching_no_staged_token_promotes_nothing_and_a_new_rotate_value_replaces_the_staged_token() {
    let ns = active_shop("rotate-steps");
    let token = wait_token(&ns, "shop", SOON);
    let annotate = |annotation: &str| kubectl_ok(&["annotate", "owh/shop", "-n", &ns, annotation, "--overwrite"]);

    annotate(&format!("{ROTATE_SECRET_ANNOTATION}=v2"));
    let first = wait_shop_secret(&ns, "a staged token", |d| d.contains_key(NEXT_TOKEN_KEY))[NEXT_TOKEN_KEY].clone();

    // A promote value that is not the staged one: nothing moves, the message says so.
    annotate(&format!("{PROMOTE_SECRET_ANNOTATION}=v1"));
    let message = wait_secret_ready_says(&ns, "does not match");
    assert!(
        message.contains(&format!(
            "{PROMOTE_SECRET_ANNOTATION}=v1 does not match the staged {ROTATE_SECRET_ANNOTATION}=v2, so nothing was promoted"
        )),
        "{message}"
    );
    wait_described(&ns, &["SecretPromotionRefused"]);
    let data = generated_secret(&ns, "shop").expect("the Secret");
    assert_eq!((&data[TOKEN_KEY], &data[NEXT_TOKEN_KEY]), (&token, &first));

    // A new rotate value while one is staged replaces the staged token.
    annotate(&format!("{ROTATE_SECRET_ANNOTATION}=v3"));
    let second = wait_shop_secret(&ns, "the staged token replaced", |d| {
        d.get(NEXT_TOKEN_KEY).is_some_and(|n| *n != first)
    })[NEXT_TOKEN_KEY]
        .clone();
    assert_eq!(second.len(), 64);
    wait_secret_ready_says(&ns, "next token staged by outboundwebhooks.io/rotate-secret=v3");
    // Events of one reason form a series (kube-runtime's Recorder), which
    // keeps the first note: the one of v2.
    let note = support::kubectl::wait_event(&ns, "shop", "SecretRotationStaged", "rotate-secret=v2");
    assert!(
        note.contains(&format!("{PROMOTE_SECRET_ANNOTATION}=v2 --overwrite")),
        "the Event names the next command: {note}"
    );

    // Removing rotate-secret cancels the staged token.
    kubectl_ok(&[
        "annotate",
        "owh/shop",
        "-n",
        &ns,
        &format!("{ROTATE_SECRET_ANNOTATION}-"),
    ]);
    let data = wait_shop_secret(&ns, "the staged token removed", |d| !d.contains_key(NEXT_TOKEN_KEY));
    assert_eq!(data[TOKEN_KEY], token, "the token never changed");
    assert!(!data.contains_key(PREVIOUS_TOKEN_KEY));
    wait_described(&ns, &["SecretRotationCancelled"]);
}

#[test]
fn a_hook_applied_with_rotation_annotations_gets_one_fresh_token_and_no_rotation() {
    controller();
    let ns = namespace("rotate-fresh");
    let mut manifest =
        support::hooks::hook_manifest("shop", "https://hooks.example.com/in", &[support::CREATE], json!({}));
    manifest["metadata"]["annotations"] = json!({ROTATE_SECRET_ANNOTATION: "v7", PROMOTE_SECRET_ANNOTATION: "v7"});
    apply_ok(&ns, &manifest.to_string());
    wait_active(&ns, "shop", SOON);
    let secret = get_json(&ns, "secret", "shop-webhook-secret").expect("the Secret");
    assert_eq!(secret["metadata"]["annotations"][PROMOTED_ANNOTATION], "v7");
    let message = condition(&ns, "shop", SECRET_READY).expect("SecretReady").message;
    assert_eq!(
        message,
        "the signing token is in Secret shop-webhook-secret, keys token and standard-webhooks-secret"
    );
    let data = secret_data(&ns, "shop-webhook-secret").expect("data");
    assert!(
        !data.contains_key(NEXT_TOKEN_KEY) && !data.contains_key(PREVIOUS_TOKEN_KEY),
        "{:?}",
        data.keys()
    );
}

/// The reasons of the events.k8s.io Events about `hook` in `list`, oldest first.
fn event_reasons(ns: &str, hook: &str, list: &serde_json::Value) -> Vec<String> {
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == hook)
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    events.sort();
    assert!(events.iter().all(|(at, _)| !at.is_empty()), "{ns}/{hook}: {events:?}");
    events.into_iter().map(|(_, reason)| reason).collect()
}

#[test]
fn events_published_off_the_reconcile_path_all_arrive_in_order_and_are_counted() {
    let process = controller();
    let ns = namespace("event-burst");
    let published = |p: &ControllerProcess| p.metric("outbound_webhooks_controller_events_published_total");
    let before = published(process).expect("the events_published counter is exported");
    // Twelve at once: five take the slots, seven wait.
    apply_folder(&ns, (1..=12).map(hook_file));
    let accepted = wait_for("five of twelve accepted", SOON, || {
        let accepted = accepted_names(&ns)?;
        let decided = support::hooks::accepted_conditions(&ns).len();
        if accepted.len() == 5 && decided == 12 {
            Ok(accepted)
        } else {
            Err(format!("{decided} decided, accepted {accepted:?}"))
        }
    });
    let list = wait_for("every hook's Events", SOON, || {
        let list: serde_json::Value =
            serde_json::from_str(&kubectl_ok(&["get", "events.events.k8s.io", "-n", &ns, "-o", "json"]))
                .map_err(|e| e.to_string())?;
        let count = list["items"].as_array().map_or(0, Vec::len);
        // Accepted + SecretGenerated for five, OrgLimitExceeded for seven.
        if count >= 5 * 2 + 7 {
            Ok(list)
        } else {
            Err(format!("{count} Events"))
        }
    });
    for i in 1..=12 {
        let hook = format!("hook-{i}");
        let reasons = event_reasons(&ns, &hook, &list);
        if accepted.contains(&hook) {
            assert_eq!(reasons, ["Accepted", "SecretGenerated"], "{hook}");
        } else {
            assert_eq!(reasons, [accepted::ORG_LIMIT_EXCEEDED], "{hook}");
        }
    }
    wait_for("the counter to count them", SOON, || match published(process) {
        Some(n) if n >= before + 17.0 => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// The `(namespace, name)` pairs of `namespaces` that have a per-hook
/// series on the shared controller's /metrics.
fn hooks_with_series(namespaces: &[&str]) -> std::collections::BTreeSet<(String, String)> {
    let (_, body) = controller()
        .http_get("/metrics")
        .expect("the controller serves /metrics");
    body.lines()
        .filter(|line| line.starts_with("outbound_webhooks_hook_"))
        .filter_map(|line| {
            let labels = line.split_once('{')?.1.split_once('}')?.0;
            let value = |key: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some((value("namespace")?, value("name")?))
        })
        .filter(|(ns, _)| namespaces.contains(&ns.as_str()))
        .collect()
}

#[test]
fn per_hook_series_exist_only_for_failing_hooks_whatever_the_number_of_hooks() {
    controller();
    // 1,000 hooks over two namespaces (5 accepted in each, the rest over
    // the limit), 10 of them failing.
    let namespaces = [namespace("series-a"), namespace("series-b")];
    let started = Instant::now();
    for ns in &namespaces {
        apply_folder(ns, (0..500).map(hook_file));
    }
    let mut failing = std::collections::BTreeSet::new();
    for ns in &namespaces {
        let accepted = wait_for(
            &format!("a verdict on all 500 hooks of {ns}"),
            Duration::from_secs(120),
            || {
                let accepted = accepted_names(ns)?;
                let all = support::hooks::accepted_conditions(ns).len();
                if all == 500 && accepted.len() == 5 {
                    Ok(accepted)
                } else {
                    Err(format!("{all} hooks, {} accepted", accepted.len()))
                }
            },
        );
        for name in accepted {
            write_delivery_status(ns, &name, failing_delivery(3));
            failing.insert((ns.clone(), name));
        }
    }
    eprintln!("1,000 hooks with verdicts in {:?}", started.elapsed());
    let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    wait_for("series for exactly the 10 failing hooks", SOON, || {
        let with_series = hooks_with_series(&names);
        if with_series == failing {
            Ok(())
        } else {
            Err(format!("{} hooks have series: {with_series:?}", with_series.len()))
        }
    });
    for ns in &namespaces {
        kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
    }
}
