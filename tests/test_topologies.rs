//! Redis the way users run it: over TLS, behind Sentinel, as a Cluster.
//! These tests prove the test topologies themselves
//! (`test-kit/src/redis_topologies.rs`) with `redis-cli` alone: each comes
//! up, fails over as Redis documents, and leaves no process behind.

use outbound_webhooks_test_kit as support;

use std::{
    collections::BTreeSet,
    sync::mpsc,
    time::{Duration, Instant},
};

use support::redis_topologies::{RedisCluster, SentinelGroup, TlsRedis, info_field, process_is_running, redis_cli};

/// Fails unless none of `pids` runs any more.
fn assert_no_process_left(what: &str, pids: &[u32]) {
    let running: Vec<u32> = pids.iter().copied().filter(|&pid| process_is_running(pid)).collect();
    assert!(running.is_empty(), "{what}: processes {running:?} still run after drop");
}

fn role(port: u16) -> String {
    let info = redis_cli(port, &["INFO", "replication"]).unwrap();
    info_field(&info, "role").unwrap_or(info)
}

#[test]
fn tls_redis_answers_over_tls_with_its_ca_and_refuses_a_wrong_ca_and_plain_tcp() {
    let redis = TlsRedis::start();
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.cli(&["PING"]).unwrap(), "PONG");

    let wrong_ca = redis.cli_with(&redis.wrong_ca_file(), None, &["PING"]).unwrap_err();
    assert!(wrong_ca.contains("certificate verify failed"), "{wrong_ca}");
    assert!(
        redis_cli(redis.port(), &["PING"]).is_err(),
        "the TLS port answered plain TCP"
    );

    let pids = redis.pids();
    drop(redis);
    assert_no_process_left("TLS Redis", &pids);
}

#[test]
fn tls_redis_with_a_password_refuses_clients_without_it() {
    let password = "tls-test-password-1234";
    let redis = TlsRedis::start_with_password(password);
    assert_eq!(redis.url(), format!("rediss://:{password}@127.0.0.1:{}", redis.port()));
    assert_eq!(redis.password(), Some(password));
    assert_eq!(redis.cli(&["PING"]).unwrap(), "PONG");
    let refused = redis.cli_with(&redis.ca_file(), None, &["PING"]).unwrap_err();
    assert!(refused.contains("NOAUTH"), "{refused}");
}

#[test]
fn sentinel_group_names_its_primary_and_follows_a_failover_and_a_killed_primary() {
    let started = Instant::now();
    let group = SentinelGroup::start("owh-primary");
    eprintln!("Sentinel group up in {:?}", started.elapsed());
    assert_eq!(group.master_name(), "owh-primary");
    let sentinels = group.sentinel_ports();
    assert_eq!(
        group.url(),
        format!(
            "redis://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            sentinels[0], sentinels[1], sentinels[2]
        )
    );
    let first = group.primary_port();
    assert_eq!(first, group.data_ports()[0], "the primary at start");
    assert_eq!(role(first), "master");
    assert_eq!(role(group.data_ports()[1]), "slave");
    redis_cli(first, &["SET", "written-before-failover", "kept"]).unwrap();
    assert_eq!(redis_cli(first, &["WAIT", "1", "5000"]).unwrap(), "1");

    let forced = Instant::now();
    let second = group.failover();
    let promoted = forced.elapsed();
    assert_ne!(second, first);
    assert_eq!(role(second), "master");
    assert_eq!(redis_cli(second, &["GET", "written-before-failover"]).unwrap(), "kept");
    assert_eq!(group.wait_settled(), second);
    eprintln!(
        "SENTINEL FAILOVER: {second} named primary after {promoted:?}, {first} replicating from it after {:?}",
        forced.elapsed()
    );
    assert_eq!(role(first), "slave", "the old primary replicates from the new one");

    let killed_at = Instant::now();
    let killed = group.kill_primary();
    assert_eq!(killed, second);
    let third = group.wait_for_new_primary(killed);
    eprintln!(
        "SIGKILL of the primary: {third} promoted after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(third, first, "the only replica left is promoted");
    assert_eq!(role(third), "master");
    assert_eq!(redis_cli(third, &["GET", "written-before-failover"]).unwrap(), "kept");

    let pids = group.pids();
    drop(group);
    assert_no_process_left("Sentinel group", &pids);
}

/// The events stream of each shard of `--shards 6` with the default prefix
/// (docs/src/redis.md#stream-shards: shard k > 0 appends `-k` inside the braces).
fn shard_stream_keys() -> Vec<String> {
    (0..6)
        .map(|k| match k {
            0 => "{outbound-webhooks}:events".to_string(),
            k => format!("{{outbound-webhooks-{k}}}:events"),
        })
        .collect()
}

#[test]
fn cluster_spreads_hash_tags_over_three_masters_and_a_killed_masters_replica_takes_over() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("Cluster up in {:?}", started.elapsed());
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert_eq!(cluster.ports().len(), 6);
    assert!(cluster.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(cluster.url().matches(',').count(), 5, "{}", cluster.url());
    for &master in &masters {
        assert_eq!(role(master), "master");
        let replica = cluster.replica_of(master).expect("every master has a replica");
        assert_eq!(role(replica), "slave");
    }

    // Different hash tags, different masters: the six shard tags cover all three.
    let keys = shard_stream_keys();
    let homes: Vec<u16> = keys.iter().map(|key| cluster.node_of_key(key)).collect();
    assert_eq!(
        homes.iter().copied().collect::<BTreeSet<u16>>(),
        masters.iter().copied().collect::<BTreeSet<u16>>(),
        "the shards' keys live on {homes:?}"
    );
    // Written through a Cluster client, each key is stored on its master.
    for (key, &home) in keys.iter().zip(&homes) {
        cluster.cli(&["SET", key, "stored"]).unwrap();
        assert_eq!(redis_cli(home, &["GET", key]).unwrap(), "stored", "{key} on {home}");
    }

    let victim = homes[0];
    let replica = cluster.replica_of(victim).expect("the victim has a replica");
    assert_eq!(redis_cli(victim, &["WAIT", "1", "5000"]).unwrap(), "1");
    let killed_at = Instant::now();
    cluster.kill(victim);
    let masters_after = cluster.wait_for_failover();
    eprintln!(
        "SIGKILL of master {victim}: replica {replica} took over, Cluster ok after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(masters_after.len(), 3);
    assert!(!masters_after.contains(&victim), "{masters_after:?}");
    assert!(masters_after.contains(&replica), "{masters_after:?}");
    assert_eq!(cluster.node_of_key(&keys[0]), replica);
    assert_eq!(role(replica), "master");
    assert_eq!(cluster.cli(&["GET", &keys[0]]).unwrap(), "stored");

    let pids = cluster.pids();
    drop(cluster);
    assert_no_process_left("Cluster", &pids);
}

#[test]
fn a_test_that_panics_leaves_no_redis_process_behind() {
    let (pids_tx, pids_rx) = mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let redis = TlsRedis::start();
        pids_tx.send(redis.pids()).unwrap();
        panic!("this test panics on purpose, holding a TLS Redis");
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let pids = pids_rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_no_process_left("a panicking test's TLS Redis", &pids);
}
