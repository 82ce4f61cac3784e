//! Malformed entries, outbound address safety, proxies, retention, the
//! Redis eviction warning and secrecy of tokens in logs.

use outbound_webhooks_test_kit as support;

use std::time::Duration;

use outbound_webhooks::store::{GROUP, Keys};
use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    dispatcher::{Dispatcher, args, args_without_allow_list},
    env,
    receiver::Receiver,
    redis::{RedisServer, create_group, stream_length, xadd_raw, xinfo},
    redis_prefix, wait_for,
};

#[test]
fn malformed_entries_are_dead_lettered_with_their_reason_and_the_stream_keeps_moving() {
    let test = DeliveryTest::new("malformed");
    let (ns, prefix, url) = (&test.ns, &test.prefix, &test.redis_url);
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&[]);

    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let bad: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("name", CREATE), ("data", "{}")], "missing field org"),
        (vec![("org", ns), ("data", "{}")], "missing field name"),
        (
            vec![("org", ns), ("name", "kustomer.order.create"), ("data", "{}")],
            "unknown event name",
        ),
        (
            vec![("org", ns), ("name", CREATE), ("data", "[1,2]")],
            "data is not a JSON object",
        ),
        (
            vec![("org", ns), ("name", CREATE), ("data", &huge)],
            "exceeds the 1 MiB limit",
        ),
    ];
    let mut good = Vec::new();
    let mut bad_entries = Vec::new();
    good.push(test.publish(&json!({"n": 0})));
    for (i, (fields, reason)) in bad.iter().enumerate() {
        bad_entries.push((xadd_raw(url, prefix, fields), *reason));
        good.push(test.publish(&json!({"n": i + 1})));
    }
    for id in &good {
        receiver.wait_for_event(id, 1, Duration::from_secs(30));
    }
    let letters = wait_for("five dead letters", Duration::from_secs(30), || {
        let l = test.dead_letters(None);
        if l.len() >= 5 { Ok(l) } else { Err(format!("{l:?}")) }
    });
    for (entry, reason) in bad_entries {
        let _ = entry;
        assert!(
            letters.iter().any(|l| l.contains(reason)),
            "no dead letter says {reason:?}: {letters:?}"
        );
    }
    assert_eq!(letters.len(), 5, "{letters:?}");
    assert!(!std::fs::read_to_string(&_d.log_path).unwrap().contains(&hook.token));
}

#[test]
fn non_public_destinations_are_refused_without_the_allow_list() {
    let test = DeliveryTest::new("refused");
    let receiver = Receiver::ok();
    let port = receiver.port;
    let hooks = [
        ("v4-loopback", format!("http://127.0.0.1:{port}/")),
        ("v6-loopback", format!("http://[::1]:{port}/")),
        ("localhost", format!("http://localhost:{port}/")),
        ("v4-mapped", format!("http://[::ffff:127.0.0.1]:{port}/")),
        ("metadata", "http://169.254.169.254/latest/meta-data/".to_string()),
    ];
    let created: Vec<_> = hooks.iter().map(|(name, u)| test.hook(name, u, json!({}))).collect();
    let _d = Dispatcher::start(args_without_allow_list(
        &test.redis_url,
        &test.prefix,
        "refused",
        &["--retry-schedule", ""],
    ));
    test.publish(&json!({}));
    for hook in &created {
        let d = hook.wait_delivery(&format!("{} to record a refusal", hook.name), |d| {
            d["lastFailure"]["message"].is_string()
        });
        let message = d["lastFailure"]["message"].as_str().unwrap();
        assert!(
            message.contains("refused destination") && message.contains("not public"),
            "{}: {message}",
            hook.name
        );
    }
    assert!(receiver.requests().is_empty(), "a refused destination was reached");
}

#[test]
fn allowed_loopback_is_delivered_and_proxy_environment_variables_change_nothing() {
    let test = DeliveryTest::new("allowed");
    let receiver = Receiver::ok();
    let hook = test.hook_to(&receiver, json!({}));
    // A proxy that does not exist: if it were used, nothing would arrive.
    let proxy = "http://127.0.0.1:9".to_string();
    let d = Dispatcher::start_with_env(
        args_without_allow_list(
            &test.redis_url,
            &test.prefix,
            "allowed",
            &["--allow-destination-cidr", "127.0.0.0/8"],
        ),
        vec![
            ("HTTP_PROXY".into(), proxy.clone()),
            ("http_proxy".into(), proxy.clone()),
            ("ALL_PROXY".into(), proxy),
            ("NO_PROXY".into(), String::new()),
        ],
    );
    let id = test.publish(&json!({}));
    receiver.wait_for_event(&id, 1, Duration::from_secs(30));
    assert!(!d.log().contains(&hook.token), "the token appeared in the log");
}

#[test]
fn the_events_stream_is_trimmed_while_events_flow() {
    let test = DeliveryTest::new("trim");
    let (prefix, url) = (&test.prefix, &test.redis_url);
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&[]);
    let mut max_len = 0;
    let mut ids = Vec::new();
    for round in 0..10 {
        for i in 0..30 {
            ids.push(test.publish(&json!({"round": round, "i": i})));
        }
        std::thread::sleep(Duration::from_millis(300));
        max_len = max_len.max(stream_length(url, prefix));
    }
    for id in &ids {
        receiver.wait_for_event(id, 1, Duration::from_secs(30));
    }
    wait_for("the stream to be trimmed", Duration::from_secs(15), || {
        let len = stream_length(url, prefix);
        if len <= 1 { Ok(()) } else { Err(format!("length {len}")) }
    });
    assert!(
        max_len < 300,
        "the stream held {max_len} of 300 entries at once: not trimmed while flowing"
    );
}

#[test]
fn redis_without_noeviction_produces_a_start_up_warning() {
    let redis = RedisServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    let prefix = redis_prefix("eviction");
    let d = Dispatcher::start(args(&redis.url(), &prefix, "eviction", &[]));
    let log = d.log();
    assert!(
        log.contains("WARN") && log.contains("maxmemory-policy") && log.contains("allkeys-lru"),
        "log:\n{log}"
    );

    let fine = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let d = Dispatcher::start(args(&fine.url(), &prefix, "eviction", &[]));
    assert!(!d.log().contains("maxmemory-policy"), "log:\n{}", d.log());
}

#[test]
fn nothing_is_consumed_before_the_caches_sync() {
    let test = DeliveryTest::new("unsynced");
    let (prefix, url) = (&test.prefix, &test.redis_url);
    // A kubeconfig whose API server does not answer: the caches never sync.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = std::fs::read_to_string(&env().kubeconfig).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let broken = dir.path().join("kubeconfig");
    std::fs::write(&broken, kubeconfig.replace(&server, "https://127.0.0.1:9")).unwrap();
    let d = Dispatcher::start_unready(
        test.args("unsynced", &[]),
        vec![("KUBECONFIG".into(), broken.display().to_string())],
    );
    test.publish(&json!({}));
    wait_for("the ops endpoints", Duration::from_secs(30), || {
        d.ops_get("/healthz").ok_or("not up".to_string())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.ops_get("/readyz").map(|(code, _)| code), Some(503));
    // Not even the consumer group exists: nothing was read, nothing acknowledged.
    let groups: redis::Value = xinfo(url, prefix, "GROUPS");
    assert!(matches!(&groups, redis::Value::Array(a) if a.is_empty()), "{groups:?}");
    assert_eq!(stream_length(url, prefix), 1);
}

#[test]
fn dead_letters_are_bounded_and_idle_empty_consumers_are_removed() {
    let prefix = redis_prefix("retention");
    let url = &env().redis_url;
    // A consumer that died long ago holding nothing.
    let mut conn = support::redis::connect(url);
    create_group(&mut conn, &prefix);
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(Keys::new(&prefix).events())
        .arg(GROUP)
        .arg("ghost")
        .query(&mut conn)
        .unwrap();
    let d = Dispatcher::start(args(
        url,
        &prefix,
        "retention",
        &["--dead-letter-max-count", "2", "--idle-consumer-timeout", "1s"],
    ));
    for i in 0..5 {
        xadd_raw(
            url,
            &prefix,
            &[("org", "acme"), ("name", "nope"), ("data", &format!("{{\"i\":{i}}}"))],
        );
    }
    wait_for("the stream to be consumed", Duration::from_secs(30), || {
        let routed = d.metric("outbound_webhooks_stream_entries_routed_total").unwrap_or(0.0);
        let dead = d
            .metric("outbound_webhooks_dead_letters_total{reason=\"unknown_event\"}")
            .unwrap_or(0.0);
        if routed + dead >= 5.0 {
            Ok(())
        } else {
            Err(format!("{routed} routed, {dead} dead"))
        }
    });
    wait_for("dead letters trimmed to 2", Duration::from_secs(15), || {
        let n = support::dispatcher::dead_letters(url, &prefix, None).len();
        if n <= 2 {
            Ok(())
        } else {
            Err(format!("{n} dead letters"))
        }
    });
    wait_for("the ghost consumer to be removed", Duration::from_secs(15), || {
        let consumers: Vec<redis::Value> = xinfo(url, &prefix, "CONSUMERS");
        let text = format!("{consumers:?}");
        if text.contains("ghost") { Err(text) } else { Ok(()) }
    });
}

#[test]
fn with_a_proxy_the_destination_host_is_still_resolved_and_checked_before_the_proxy_sees_it() {
    let test = DeliveryTest::new("proxy");
    // A forward proxy on loopback (an IP literal: the proxy's own address
    // is the operator's choice): it records what it is asked to forward
    // and answers 200 itself.
    let proxy = Receiver::ok();
    let refused = test.hook("refused", "http://localhost:9/refused", json!({}));
    let _d = Dispatcher::start(args_without_allow_list(
        &test.redis_url,
        &test.prefix,
        "proxy",
        &["--proxy", &proxy.url(""), "--retry-schedule", "100ms"],
    ));
    let id = test.publish(&json!({"n": 1}));
    // `localhost` resolves to loopback, which is not allowed: refused here,
    // and the proxy is never asked.
    let letters = wait_for(
        "the refused delivery to be dead-lettered",
        Duration::from_secs(30),
        || {
            let letters = test.dead_letters(Some(&refused.key()));
            if letters.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(letters)
            }
        },
    );
    assert!(letters[0].contains(&id), "{letters:?}");
    let status = refused.delivery();
    assert!(
        status["lastFailure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("refused destination localhost"),
        "{status}"
    );
    assert!(
        proxy.requests().is_empty(),
        "the proxy was asked to reach a refused destination"
    );

    // An allowed destination goes through the proxy.
    let allowed_test = DeliveryTest::new("proxy-allowed");
    allowed_test.hook("through", "http://localhost:9/allowed", json!({}));
    let _d = Dispatcher::start(args(
        &allowed_test.redis_url,
        &allowed_test.prefix,
        "proxy-allowed",
        &["--proxy", &proxy.url("")],
    ));
    let id = allowed_test.publish(&json!({"n": 2}));
    let got = proxy.wait_for_event(&id, 1, Duration::from_secs(30));
    assert_eq!(got[0].path, "/allowed");
}
