//! Every event accounted for on ordinary operational paths: a spec edit the
//! controller has not reconciled yet, a signing Secret being re-created, a
//! hook deleted while its task retries, and a GitOps delete-and-re-apply
//! before a replay. Each of these lost events before waiting tasks.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use serde_json::json;
use support::{
    delivery_test::DeliveryTest,
    hooks::{self, accept, create_hook, write_conditions, write_secret_not_found},
    kubectl_ok,
    receiver::Receiver,
    wait_for,
};

/// How long an event that must wait is watched for not arriving.
const QUIET: Duration = Duration::from_secs(2);

fn events_metric(d: &support::dispatcher::Dispatcher, outcome: &str, reason: &str) -> f64 {
    d.metric(&format!(
        "outbound_webhooks_events_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

/// `dead-letter replay` as a user runs it over the test's prefix.
fn replay_command(test: &DeliveryTest) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_outbound-webhooks"));
    command
        .args([
            "dead-letter",
            "replay",
            "--redis-url",
            &test.redis_url,
            "--redis-prefix",
            &test.prefix,
        ])
        .env("KUBECONFIG", &support::env().kubeconfig);
    command
}

/// `dead-letter replay --hook KEY` as a user runs it: whether it succeeded,
/// and what it said.
fn replay(test: &DeliveryTest, key: &str) -> (bool, String) {
    let out = replay_command(test)
        .args(["--hook", key])
        .output()
        .expect("running dead-letter replay");
    let said = support::printed(&out);
    (out.status.success(), said)
}

/// A hook taking deliveries from a running dispatcher.
fn live_hook(name: &str) -> (DeliveryTest, Receiver, hooks::TestHook, support::dispatcher::Dispatcher) {
    let test = DeliveryTest::new(name);
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({}));
    let d = test.dispatcher(&[]);
    test.publish_until_delivered("the hook to be live", &receiver, Duration::from_millis(300));
    (test, receiver, hook, d)
}

#[test]
fn an_event_published_before_the_controller_reconciles_a_spec_edit_is_delivered_once_it_does() {
    let (test, receiver, hook, d) = live_hook("spec-edit");

    // A spec edit: the generation moves on, the conditions (the controller
    // is "stopped") still carry the old one.
    let old_generation = hooks::generation(&hook.namespace, &hook.name);
    kubectl_ok(&[
        "patch",
        "owh",
        &hook.name,
        "-n",
        &hook.namespace,
        "--type=merge",
        "-p",
        r#"{"spec":{"timeoutSeconds":7}}"#,
    ]);
    assert!(hooks::generation(&hook.namespace, &hook.name) > old_generation);
    wait_for("the dispatcher to see the edit", Duration::from_secs(10), || {
        let id = test.publish(&json!({"probe": true}));
        std::thread::sleep(Duration::from_millis(300));
        if receiver.requests_for(&id).is_empty() {
            Ok(id)
        } else {
            Err("still delivered at once".into())
        }
    });
    let waiting = test.publish(&json!({"n": 1}));
    std::thread::sleep(QUIET);
    assert!(
        receiver.requests_for(&waiting).is_empty(),
        "delivered before the conditions caught up"
    );
    assert!(
        test.dead_letters(None).is_empty(),
        "nothing is dead-lettered while it waits"
    );

    // The controller catches up: the waiting event goes out, no user action.
    accept(&hook.namespace, &hook.name, true);
    let got = receiver.wait_for_event(&waiting, 1, Duration::from_secs(15));
    assert_eq!(got.len(), 1);
    assert!(events_metric(&d, "delivered", "ok") >= 2.0);
}

#[test]
fn an_event_published_while_the_signing_secret_is_re_created_is_delivered_once_it_is_back() {
    let (test, receiver, hook, _d) = live_hook("secret-gone");

    // The Secret is deleted; the controller reports SecretReady=False.
    let secret = outbound_webhooks::controller::secrets::secret::generated_secret_name(&hook.name);
    kubectl_ok(&["delete", "secret", &secret, "-n", &hook.namespace]);
    write_secret_not_found(&hook.namespace, &hook.name);
    std::thread::sleep(Duration::from_millis(500));
    let waiting = test.publish(&json!({"n": 1}));
    std::thread::sleep(QUIET);
    assert!(
        receiver.requests_for(&waiting).is_empty(),
        "delivered without a signing Secret"
    );

    // Re-created (same token, as a user restoring it) and ready again.
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &secret,
        "-n",
        &hook.namespace,
        &format!("--from-literal=token={}", hook.token),
    ]);
    kubectl_ok(&[
        "label",
        "secret",
        &secret,
        "-n",
        &hook.namespace,
        &format!("{}=true", outbound_webhooks::contract::resource::WEBHOOK_SECRET_LABEL),
    ]);
    accept(&hook.namespace, &hook.name, true);
    let got = receiver.wait_for_event(&waiting, 1, Duration::from_secs(15));
    support::receiver::verify_signatures(&hook, &got[0]).expect("signed with the restored token");
}

#[test]
fn a_task_whose_hook_was_deleted_is_dead_lettered_hook_deleted_and_replays_to_the_re_applied_hook() {
    let test = DeliveryTest::new("hook-deleted");
    // Fails until told otherwise, so the event becomes a retrying task.
    let (receiver, healthy) = Receiver::switchable(false);
    let hook = test.hook_to(&receiver, json!({}));
    let d = test.dispatcher(&["--retry-schedule", "1s,1s,1s,1s,1s,1s,1s,1s,1s"]);
    let event = test.publish(&json!({"n": 1}));
    receiver.wait_for_event(&event, 1, Duration::from_secs(15));

    // The hook is deleted (a GitOps prune) while its task retries.
    kubectl_ok(&["delete", "owh", &hook.name, "-n", &hook.namespace]);
    let key = hook.key();
    let letters = wait_for("the task to be dead-lettered", Duration::from_secs(45), || {
        let letters = test.dead_letters(Some(&key));
        if letters.is_empty() {
            Err("no dead letter yet".to_string())
        } else {
            Ok(letters)
        }
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].contains(&event) && letters[0].contains("HookDeleted"),
        "{letters:?}"
    );
    assert_eq!(events_metric(&d, "dead_lettered", "hook_deleted"), 1.0);

    // Replay before the re-apply: it says so and keeps the dead letter.
    let (replayed, said) = replay(&test, &key);
    assert!(!replayed, "{said}");
    assert!(said.contains(&format!("no OutboundWebhook {key} exists now")), "{said}");
    assert_eq!(test.dead_letters(Some(&key)).len(), 1, "the dead letter stays");

    // Re-applied under the same name (a new UID), then replayed: delivered
    // to the new hook, and only then is the dead letter gone.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let again = create_hook(
        &hook.namespace,
        &hook.name,
        &receiver.url("/"),
        &[support::CREATE],
        json!({}),
    );
    assert_ne!(again.uid, hook.uid);
    write_conditions(
        &again.namespace,
        &again.name,
        hooks::generation(&again.namespace, &again.name),
        true,
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = receiver.requests_for(&event).len();
    let (replayed, out) = replay(&test, &key);
    assert!(replayed, "{out}");
    assert!(out.contains("replayed 1 dead letter(s)"), "{out}");
    let got = receiver.wait_for_event(&event, before + 1, Duration::from_secs(15));
    let replayed = got.last().expect("the replayed request");
    support::receiver::verify_signatures(&again, replayed).expect("signed with the new hook's token");
    assert!(test.dead_letters(Some(&key)).is_empty());
}

#[test]
fn an_event_id_reused_while_its_first_entry_is_retried_is_dropped_counted_and_logged() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    let test = DeliveryTest::new("reused-id");
    let healthy = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (h, n) = (healthy.clone(), delivered.clone());
    let receiver = Receiver::start(move |_, _| {
        if h.load(Ordering::SeqCst) {
            n.fetch_add(1, Ordering::SeqCst);
            support::receiver::Reply::Status(200)
        } else {
            support::receiver::Reply::Status(500)
        }
    });
    test.hook_to(&receiver, json!({}));
    let d = test.dispatcher(&[
        "--retry-schedule",
        "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
    ]);

    let id = outbound_webhooks::wire::stream_entry::new_event_id();
    let xadd = |data: &str| -> String {
        support::redis::xadd_event(&test.prefix, &test.ns, support::CREATE, data, Some(&id))
            .query(&mut test.redis())
            .expect("XADD")
    };
    let first = xadd(r#"{"entry":"first"}"#);
    // Being retried: its task is held.
    receiver.wait_for_event(&id, 2, Duration::from_secs(30));
    let second = xadd(r#"{"entry":"second"}"#);
    wait_for(
        "the second entry to be counted duplicate_id",
        Duration::from_secs(20),
        || match events_metric(&d, "dropped", "duplicate_id") {
            1.0 => Ok(()),
            n => Err(format!("{n} counted")),
        },
    );
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains(&first) && l.contains(&second)),
        "no log line names both entries {first} and {second}:\n{log}"
    );

    healthy.store(true, Ordering::SeqCst);
    wait_for(
        "the first entry to be delivered and nothing left to do",
        Duration::from_secs(30),
        || {
            let due = support::redis::due_count(&mut test.redis(), &test.prefix)?;
            match delivered.load(Ordering::SeqCst) {
                n if n >= 1 && due == 0 => Ok(()),
                n => Err(format!("{n} delivered, {due} task(s) left")),
            }
        },
    );
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        1,
        "the event was delivered more than once"
    );
    let bodies: Vec<String> = receiver
        .requests_for(&id)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies.iter().all(|b| b.contains("first")),
        "the second entry was sent: {bodies:?}"
    );
    assert_eq!(events_metric(&d, "dropped", "duplicate_id"), 1.0);
}

#[test]
fn two_replays_of_the_same_dead_letters_at_once_deliver_each_event_once() {
    const EVENTS: usize = 200;
    let test = DeliveryTest::new("replay-twice");
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({}));
    // Its Secret not ready: events wait, then are dead-lettered NotReady
    // after the (short) schedule's span.
    write_secret_not_found(&hook.namespace, &hook.name);
    let d = test.dispatcher(&["--retry-schedule", "100ms", "--poll-interval", "5ms"]);
    let mut conn = test.redis();
    let mut pipe = redis::pipe();
    let ids: Vec<String> = (0..EVENTS)
        .map(|i| {
            let id = format!("replay-{i}");
            pipe.add_command(support::redis::xadd_event(
                &test.prefix,
                &test.ns,
                support::CREATE,
                "{}",
                Some(&id),
            ))
            .ignore();
            id
        })
        .collect();
    let _: () = pipe.query(&mut conn).expect("XADD");
    wait_for(
        "every event to be dead-lettered NotReady",
        Duration::from_secs(60),
        || match events_metric(&d, "dead_lettered", "not_ready") as usize {
            EVENTS => Ok(()),
            n => Err(format!("{n} dead-lettered")),
        },
    );
    assert!(receiver.requests().is_empty());

    accept(&hook.namespace, &hook.name, true);
    let spawn = || {
        replay_command(&test)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting dead-letter replay")
    };
    let (a, b) = (spawn(), spawn());
    let said: Vec<String> = [a, b]
        .into_iter()
        .map(|p| {
            let out = p.wait_with_output().expect("dead-letter replay");
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    wait_for(
        "every event to be delivered and no task left",
        Duration::from_secs(60),
        || {
            let delivered = ids.iter().filter(|id| !receiver.requests_for(id).is_empty()).count();
            let due = support::redis::due_count(&mut test.redis(), &test.prefix)?;
            if delivered == EVENTS && due == 0 {
                Ok(())
            } else {
                Err(format!("{delivered} delivered, {due} task(s) left"))
            }
        },
    );
    let replayed: usize = said
        .iter()
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("replayed ")))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        replayed, EVENTS,
        "the two replays together replayed each letter once: {said:?}"
    );
    let twice: Vec<&String> = ids.iter().filter(|id| receiver.requests_for(id).len() > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?}; the replays said {said:?}"
    );
    assert!(test.dead_letters(None).is_empty());
}

#[test]
fn a_missing_header_secret_makes_events_wait_without_attempts_or_failures_and_they_go_once_it_is_back() {
    use support::kubectl::apply_ok;
    let test = DeliveryTest::new("header-gone");
    let receiver = Receiver::ok();
    let creds = || hooks::labelled_secret("creds", json!({"auth": "Bearer abc123"}));
    apply_ok(&test.ns, &creds());
    let hook = test.hook_to(
        &receiver,
        json!({
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}]
        }),
    );
    // No controller runs (the test wrote its conditions): nothing turns
    // SecretReady False when the header Secret goes.
    let mut d = test.dispatcher(&[
        "--retry-schedule",
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
    ]);
    test.publish_until_delivered("the hook to be live", &receiver, Duration::from_millis(300));
    assert_eq!(receiver.requests()[0].header("authorization"), "Bearer abc123");

    // Deleted while the dispatcher is down, so its cache starts without it.
    d.kill();
    kubectl_ok(&["delete", "secret", "creds", "-n", &test.ns]);
    d.restart();
    let before = receiver.requests().len();
    let exhausted = test.publish(&json!({"n": 1}));
    wait_for(
        "the event to wait the whole schedule and be dead-lettered NotReady",
        Duration::from_secs(30),
        || match events_metric(&d, "dead_lettered", "not_ready") {
            1.0 => Ok(()),
            n => Err(format!(
                "{n} not_ready; turned_off {}; hook {}",
                events_metric(&d, "dead_lettered", "turned_off"),
                hook.delivery()
            )),
        },
    );
    assert_eq!(
        receiver.requests().len(),
        before,
        "a request went out without its header"
    );
    let delivery = hook.delivery();
    assert!(delivery["disabled"].is_null(), "the hook was turned off: {delivery}");
    assert!(
        delivery["consecutiveFailures"].as_i64().unwrap_or(0) == 0,
        "a failure was counted: {delivery}"
    );
    let failed = d.metric("outbound_webhooks_delivery_attempts_total{outcome=\"failed\",status_class=\"none\"}");
    assert_eq!(failed, None, "an attempt was counted failed");
    let letters = test.dead_letters(Some(&hook.key()));
    assert!(
        letters
            .iter()
            .any(|l| l.contains(&exhausted) && l.contains("header Authorization")),
        "{letters:?}"
    );

    // An event waiting when the Secret comes back goes out with the header,
    // and the dead-lettered one replays.
    let waiting = test.publish(&json!({"n": 2}));
    apply_ok(&test.ns, &creds());
    let got = receiver.wait_for_event(&waiting, 1, Duration::from_secs(15));
    assert_eq!(got[0].header("authorization"), "Bearer abc123");
    let (ok, said) = replay(&test, &hook.key());
    assert!(ok, "{said}");
    let got = receiver.wait_for_event(&exhausted, 1, Duration::from_secs(15));
    assert_eq!(got[0].header("authorization"), "Bearer abc123");
}
