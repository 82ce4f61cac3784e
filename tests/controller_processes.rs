//! Controllers started with particular flags, restarted, killed and run in
//! pairs. Each test scopes its controllers to its own namespace
//! (`--watch-namespace`) and its own Lease, so controllers of parallel tests
//! never write the same objects.

mod controller_process;
mod support;

use std::time::{Duration, Instant};

use controller_process::{ControllerProcess, apply_hook, hook_yaml, wait_condition, wait_token};
use serde_json::json;
use support::{apply_yaml, kubectl, namespace, wait_for};

const SOON: Duration = Duration::from_secs(15);

fn scoped(identity: &str, ns: &str, lease: &str, extra: &[&str]) -> ControllerProcess {
    let mut args = vec!["--watch-namespace", ns, "--lease-name", lease, "--lease-duration", "3s"];
    args.extend_from_slice(extra);
    ControllerProcess::start(identity, &args)
}

fn lease_holder(lease: &str) -> String {
    let out = kubectl(&[
        "get",
        "lease",
        lease,
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    if out.success { out.stdout } else { String::new() }
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
    let ns = namespace("allow-http");
    let lease = format!("allow-http-{}", support::unique_suffix());
    let mut controller = scoped("allow-http", &ns, &lease, &["--allow-http"]);
    controller.wait_ready(Duration::from_secs(30));
    assert!(apply_yaml(&ns, &hook_yaml("plain", "http://hooks.example.com/in", json!({}))).success);
    wait_condition(&ns, "plain", "Accepted", "True", "Accepted", SOON);
    wait_condition(&ns, "plain", "Ready", "True", "Active", SOON);
}

#[test]
fn the_token_survives_a_controller_restart() {
    let ns = namespace("restart");
    let lease = format!("restart-{}", support::unique_suffix());
    let mut first = scoped("restart-first", &ns, &lease, &[]);
    first.wait_ready(Duration::from_secs(30));
    apply_hook(&ns, "shop");
    wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    let token = wait_token(&ns, "shop", SOON);
    apply_hook(&ns, "doomed");
    wait_condition(&ns, "doomed", "Ready", "True", "Active", SOON);
    let doomed = controller_process::get_json(&ns, "owh", "doomed").expect("hook");
    assert!(doomed["metadata"]["finalizers"].is_null(), "no finalizer: {doomed}");

    first.signal("TERM");
    let status = first
        .wait_exit(Duration::from_secs(10))
        .expect("the controller exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}; logs:\n{}", first.logs());
    assert!(first.logs().contains("released the leader Lease"), "{}", first.logs());

    // With no controller running at all, deleting a hook does not hang.
    support::kubectl_ok(&["delete", "owh", "doomed", "-n", &ns, "--timeout=10s"]);

    let mut second = scoped("restart-second", &ns, &lease, &["--log-format", "json"]);
    second.wait_ready(Duration::from_secs(30));
    let logs = second.logs();
    let first_line = logs.lines().next().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(first_line).expect("--log-format json writes JSON lines");
    assert!(line["level"].is_string() && line["message"].is_string(), "{first_line}");
    let edited = hook_yaml("shop", "https://moved.example.com/in", json!({}));
    assert!(apply_yaml(&ns, &edited).success);
    let c = wait_condition(&ns, "shop", "Ready", "True", "Active", SOON);
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(
        wait_token(&ns, "shop", SOON),
        token,
        "the token changed across a restart"
    );
}

#[test]
fn two_controllers_elect_one_leader_and_hand_over_on_kill_and_on_sigterm() {
    let ns = namespace("leader");
    let lease = format!("leader-{}", support::unique_suffix());
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
    wait_condition(&ns, "first", "Ready", "True", "Active", SOON);
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
    wait_for("the follower to take the Lease", Duration::from_secs(10), || {
        let holder = lease_holder(&lease);
        if holder == b.identity { Ok(()) } else { Err(holder) }
    });
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    // Lease duration 3 s + renew period 1 s, plus half a second for the API.
    assert!(takeover <= Duration::from_millis(4500), "takeover took {takeover:?}");
    apply_hook(&ns, "after-kill");
    wait_condition(&ns, "after-kill", "Ready", "True", "Active", SOON);
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
    wait_for("the new follower to take the Lease", Duration::from_secs(10), || {
        let holder = lease_holder(&lease);
        if holder == c.identity { Ok(()) } else { Err(holder) }
    });
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
    wait_condition(&ns, "after-term", "Ready", "True", "Active", SOON);
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
    let ns = namespace("many-waiting");
    let lease = format!("many-{}", support::unique_suffix());
    let mut controller = scoped("many", &ns, &lease, &["--max-webhooks-per-namespace", "3"]);
    controller.wait_ready(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let count = 60;
    for i in 0..count {
        std::fs::write(
            dir.path().join(format!("hook-{i:02}.yaml")),
            hook_yaml(&format!("hook-{i:02}"), "https://hooks.example.com/in", json!({})),
        )
        .expect("writing a manifest");
    }
    support::kubectl_ok(&["apply", "-n", &ns, "-f", dir.path().to_str().expect("utf-8 path")]);
    wait_for("a verdict on every hook", Duration::from_secs(60), || {
        let all = controller_process::accepted_conditions(&ns);
        let decided = all.values().filter(|(_, c, current)| c.is_some() && *current).count();
        let accepted = all
            .values()
            .filter(|(_, c, _)| c.as_ref().is_some_and(|c| c.status == "True"))
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
    support::kubectl_ok(&["delete", "owh", "hook-00", "-n", &ns]);
    wait_condition(&ns, "hook-03", "Ready", "True", "Active", SOON);
    std::thread::sleep(Duration::from_secs(2));
    let after = metric(&controller, "outbound_webhooks_controller_status_writes_total");
    assert!(after - writes <= 3, "{} writes to admit one hook", after - writes);
}

#[test]
fn a_test_controller_exits_and_releases_its_lease_when_its_stdin_closes() {
    let ns = namespace("stdin");
    let lease = format!("stdin-{}", support::unique_suffix());
    let mut controller = scoped("stdin", &ns, &lease, &[]);
    controller.wait_ready(Duration::from_secs(30));
    assert_eq!(lease_holder(&lease), "stdin");
    controller.close_stdin();
    let status = controller.wait_exit(Duration::from_secs(10)).expect("it exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(lease_holder(&lease), "", "the Lease was not released");
}
