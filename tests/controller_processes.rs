//! Controllers started with particular flags, restarted, killed and run in
//! pairs. Each test scopes its controllers to its own namespace
//! (`--watch-namespace`) and its own Lease, so controllers of parallel tests
//! never write the same objects.

use outbound_webhooks_test_kit as support;

use std::time::{Duration, Instant};

use outbound_webhooks::contract::conditions::{ACCEPTED, accepted};
use serde_json::json;
use support::{
    controller::{ControllerProcess, unique_lease},
    hooks::{SOON, apply_hook, assert_token_kept, hook_yaml, wait_active, wait_condition, wait_token},
    kubectl::{apply_folder, apply_ok, get_json, lease_holder},
    kubectl_ok, namespace, wait_for,
};

fn scoped(identity: &str, ns: &str, lease: &str, extra: &[&str]) -> ControllerProcess {
    ControllerProcess::scoped(identity, ns, lease, extra)
}

/// A namespace, a Lease and a controller scoped to both, ready.
fn ready_scoped(test: &str, extra: &[&str]) -> (String, String, ControllerProcess) {
    let ns = namespace(test);
    let lease = unique_lease(test);
    let mut controller = scoped(test, &ns, &lease, extra);
    controller.wait_ready(Duration::from_secs(30));
    (ns, lease, controller)
}

/// Waits up to 10 s until `identity` holds the Lease.
fn wait_for_holder(what: &str, lease: &str, identity: &str) {
    wait_for(what, Duration::from_secs(10), || {
        let holder = lease_holder(lease);
        if holder == identity { Ok(()) } else { Err(holder) }
    });
}

fn leader_gauge(process: &ControllerProcess) -> Option<String> {
    let (_, body) = process.http_get("/metrics")?;
    body.lines().find_map(|l| {
        l.strip_prefix("outbound_webhooks_controller_leader ")
            .map(str::to_string)
    })
}

#[test]
fn http_destinations_are_accepted_with_allow_http() {
    let (ns, _lease, _controller) = ready_scoped("allow-http", &["--allow-http"]);
    apply_ok(&ns, &hook_yaml("plain", "http://hooks.example.com/in", json!({})));
    wait_condition(&ns, "plain", ACCEPTED, "True", accepted::ACCEPTED, SOON);
    wait_active(&ns, "plain", SOON);
}

#[test]
fn the_token_survives_a_controller_restart() {
    let ns = namespace("restart");
    let lease = unique_lease("restart");
    let mut first = scoped("restart-first", &ns, &lease, &[]);
    first.wait_ready(Duration::from_secs(30));
    apply_hook(&ns, "shop");
    wait_active(&ns, "shop", SOON);
    let token = wait_token(&ns, "shop", SOON);
    apply_hook(&ns, "doomed");
    wait_active(&ns, "doomed", SOON);
    let doomed = get_json(&ns, "owh", "doomed").expect("hook");
    assert!(doomed["metadata"]["finalizers"].is_null(), "no finalizer: {doomed}");

    first.signal("TERM");
    let status = first
        .wait_exit(Duration::from_secs(10))
        .expect("the controller exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}; logs:\n{}", first.logs());
    assert!(first.logs().contains("released the leader Lease"), "{}", first.logs());

    // With no controller running at all, deleting a hook does not hang.
    kubectl_ok(&["delete", "owh", "doomed", "-n", &ns, "--timeout=10s"]);

    let mut second = scoped("restart-second", &ns, &lease, &["--log-format", "json"]);
    second.wait_ready(Duration::from_secs(30));
    let logs = second.logs();
    let first_line = logs.lines().next().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(first_line).expect("--log-format json writes JSON lines");
    assert!(line["level"].is_string() && line["message"].is_string(), "{first_line}");
    let edited = hook_yaml("shop", "https://moved.example.com/in", json!({}));
    apply_ok(&ns, &edited);
    let c = wait_active(&ns, "shop", SOON);
    assert_eq!(c.observed_generation, Some(2));
    assert_token_kept(&ns, "shop", &token, "the token changed across a restart");
}

#[test]
fn two_controllers_elect_one_leader_and_hand_over_on_kill_and_on_sigterm() {
    let ns = namespace("leader");
    let lease = unique_lease("leader");
    let suffix = support::unique_suffix();
    let mut a = scoped(&format!("a-{suffix}"), &ns, &lease, &[]);
    a.wait_ready(Duration::from_secs(30));
    let mut b = scoped(&format!("b-{suffix}"), &ns, &lease, &[]);
    wait_for("the follower's metrics", SOON, || match leader_gauge(&b) {
        Some(v) => Ok(v),
        None => Err("no answer".into()),
    });
    assert_eq!(lease_holder(&lease), a.identity);
    assert_eq!(leader_gauge(&a).as_deref(), Some("1"));
    assert_eq!(leader_gauge(&b).as_deref(), Some("0"));

    // Exactly one reconciles.
    apply_hook(&ns, "first");
    wait_active(&ns, "first", SOON);
    assert!(a.logs().contains("status updated"), "the leader did not reconcile");
    assert!(
        !b.logs().contains("status updated"),
        "the follower reconciled:\n{}",
        b.logs()
    );
    assert!(!b.logs().contains("became the leader"), "{}", b.logs());

    // kill -9 of the leader: the other takes over within the lease duration
    // (3 s) plus the renew period, and new hooks still become Ready.
    a.signal("KILL");
    let killed = Instant::now();
    wait_for_holder("the follower to take the Lease", &lease, &b.identity);
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    // Lease duration 3 s + renew period 1 s, plus half a second for the API.
    assert!(takeover <= Duration::from_millis(4500), "takeover took {takeover:?}");
    apply_hook(&ns, "after-kill");
    wait_active(&ns, "after-kill", SOON);
    assert!(b.logs().contains("became the leader"), "{}", b.logs());
    assert_eq!(leader_gauge(&b).as_deref(), Some("1"));

    // SIGTERM of the leader releases the Lease: a new follower takes over
    // within 2 s.
    let c = scoped(&format!("c-{suffix}"), &ns, &lease, &[]);
    wait_for("the new follower's metrics", SOON, || match leader_gauge(&c) {
        Some(v) if v == "0" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    b.signal("TERM");
    let terminated = Instant::now();
    wait_for_holder("the new follower to take the Lease", &lease, &c.identity);
    let handover = terminated.elapsed();
    eprintln!("handover after SIGTERM: {handover:?}");
    assert!(
        handover <= Duration::from_secs(2),
        "handover took {handover:?}; old leader:\n{}\nnew leader:\n{}",
        b.logs(),
        c.logs()
    );
    let status = b.wait_exit(Duration::from_secs(10)).expect("the old leader exits");
    assert!(status.success(), "{status:?}");
    apply_hook(&ns, "after-term");
    wait_active(&ns, "after-term", SOON);
}

fn metric(process: &ControllerProcess, name: &str) -> u64 {
    let (_, body) = process.http_get("/metrics").expect("metrics answer");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

#[test]
fn many_waiting_hooks_cost_one_status_write_each_not_one_per_pair() {
    let (ns, _lease, controller) = ready_scoped("many-waiting", &["--max-webhooks-per-namespace", "3"]);
    let count = 60;
    apply_folder(
        &ns,
        (0..count).map(|i| {
            (
                format!("hook-{i:02}.yaml"),
                hook_yaml(&format!("hook-{i:02}"), "https://hooks.example.com/in", json!({})),
            )
        }),
    );
    wait_for("a verdict on every hook", Duration::from_secs(60), || {
        let all = support::hooks::accepted_conditions(&ns);
        let decided = all.values().filter(|v| v.accepted.is_some() && v.current).count();
        let accepted = all
            .values()
            .filter(|v| v.accepted.as_ref().is_some_and(|c| c.status == "True"))
            .count();
        if all.len() == count && decided == count && accepted == 3 {
            Ok(())
        } else {
            Err(format!("{decided} decided, {accepted} accepted of {}", all.len()))
        }
    });
    // Settle, then count: one write per hook (plus a few for the accepted
    // ones), far below one per pair of hooks (3600).
    std::thread::sleep(Duration::from_secs(2));
    let writes = metric(&controller, "outbound_webhooks_controller_status_writes_total");
    assert!(
        writes <= (count as u64) + 10,
        "{writes} status writes for {count} hooks"
    );

    // Freeing a slot admits one hook with a handful of writes.
    kubectl_ok(&["delete", "owh", "hook-00", "-n", &ns]);
    wait_active(&ns, "hook-03", SOON);
    std::thread::sleep(Duration::from_secs(2));
    let after = metric(&controller, "outbound_webhooks_controller_status_writes_total");
    assert!(after - writes <= 3, "{} writes to admit one hook", after - writes);
}

#[test]
fn a_test_controller_exits_and_releases_its_lease_when_its_stdin_closes() {
    let (_ns, lease, mut controller) = ready_scoped("stdin", &[]);
    assert_eq!(lease_holder(&lease), "stdin");
    controller.close_stdin();
    let status = controller.wait_exit(Duration::from_secs(10)).expect("it exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(lease_holder(&lease), "", "the Lease was not released");
}
