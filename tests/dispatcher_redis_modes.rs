//! The dispatcher on Redis as users run it (real servers on loopback): over
//! TLS with a private CA, behind Sentinel through a forced fail-over and a
//! killed primary, on a 3-master Cluster with `--shards 6` through a
//! killed master, and with `--shards 2` through a flush. Events are
//! counted by id at the receivers.

use outbound_webhooks_test_kit as support;

use std::{
    collections::{BTreeMap, BTreeSet},
    str::FromStr,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use outbound_webhooks::{
    EventName,
    publish::{NewEvent, PublishError, PublishOptions, Publisher},
    store::connection::{RedisConn, RedisMode, RedisTarget},
    store::shard::shard_prefix,
    store::{Keys, Store},
};
use serde_json::json;
use support::{
    CREATE,
    cluster::namespace_in_shard,
    delivery_test::DeliveryTest,
    dispatcher::{Dispatcher, run_cli, try_cli},
    hooks::create_hook,
    namespace,
    receiver::Receiver,
    redis::{RedisServer, xadd_event},
    redis_prefix,
    redis_topologies::{RedisCluster, SentinelGroup, TlsRedis, redis_cli},
    wait_for,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test's producer")
}

/// A producer over the library, as a platform service would run it.
struct Producer {
    rt: tokio::runtime::Runtime,
    publisher: Publisher<RedisConn>,
    /// Publishes that failed and were sent again (a producer retries).
    retries: usize,
    /// Of those, publishes appended but not acknowledged by enough
    /// replicas in time ([`PublishError::NotReplicated`]).
    not_replicated: usize,
    /// Appends the library sent again itself (through a fail-over).
    library_resends: u32,
}

impl FailoverRun {
    /// What one run saw, for the test's output.
    fn summary(&self) -> String {
        format!(
            "{} of 300 delivered; {} duplicate(s); blocked readers followed the switch in {:?} (dispatcher) and {:?} (the test's); {} of 100 delivered before the kill; \
             {} publish retries, {} of them appended but not acknowledged by a replica in time; {} appends resent by the library",
            self.counts.len(),
            duplicates(&self.counts),
            self.dispatcher_followed,
            self.reader_followed,
            self.delivered_before_kill,
            self.publish_retries,
            self.not_replicated,
            self.library_resends,
        )
    }
}

impl Producer {
    fn new(target: &RedisTarget, prefix: &str) -> Producer {
        Producer::with_options(target, prefix, PublishOptions::default())
    }

    fn with_options(target: &RedisTarget, prefix: &str, options: PublishOptions) -> Producer {
        // A worker of its own: the connection's Sentinel watch runs between
        // publishes too, as in a service that does other work meanwhile.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the test's producer");
        let publisher = rt.block_on(async {
            let conn = target.connect().await.expect("the producer connects");
            Publisher::with_options(conn, prefix, options)
                .await
                .expect("reading the shard count")
        });
        Producer {
            rt,
            publisher,
            retries: 0,
            not_replicated: 0,
            library_resends: 0,
        }
    }

    /// Publishes event `id` for `org`, again until Redis takes it (30 s).
    fn publish(&mut self, org: &str, id: &str) {
        let mut event = NewEvent::new(
            org,
            EventName::from_str(CREATE).unwrap(),
            json!({"type": "conversation", "id": id}),
        )
        .unwrap();
        event.id = Some(id.to_string());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.rt.block_on(self.publisher.publish(&event)) {
                Ok(published) => {
                    self.library_resends += published.attempts - 1;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    self.retries += 1;
                    if matches!(e, PublishError::NotReplicated { .. }) {
                        self.not_replicated += 1;
                    }
                    eprintln!("publishing {id}: {e}; again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("publishing {id} kept failing: {e}"),
            }
        }
    }
}

/// Waits until every id in `ids` reached `receivers` (counted by
/// `webhook-id`); returns how many requests each id got.
fn wait_all_delivered(receivers: &[&Receiver], ids: &BTreeSet<String>, timeout: Duration) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    wait_for("every event to arrive", timeout, || {
        counts = BTreeMap::new();
        for r in receivers {
            for req in r.requests() {
                *counts.entry(req.event_id().to_string()).or_insert(0) += 1;
            }
        }
        let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} of {} not delivered yet", ids.len()))
        }
    });
    counts
}

/// The fail-over tests kill Redis processes and time their steps by the
/// fail-over; run together on a 2-core machine they slow each other's
/// fail-overs, and the tests that kill a new primary half a second after
/// publishing to it measure the dispatcher, not the machine. One at a time.
fn one_failover_at_a_time() -> MutexGuard<'static, ()> {
    static FAILOVERS: Mutex<()> = Mutex::new(());
    FAILOVERS.lock().unwrap_or_else(|e| e.into_inner())
}

fn duplicates(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().map(|n| n - 1).sum()
}

#[test]
fn deliveries_flow_over_tls_and_a_wrong_ca_stops_the_dispatcher_at_start_up() {
    let password = "tls-redis-password-9876";
    let redis = TlsRedis::start_with_password(password);
    let test = DeliveryTest::on("tls", &redis.url());
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let ca = redis.ca_file().to_string_lossy().into_owned();
    let wrong_ca = redis.wrong_ca_file().to_string_lossy().into_owned();

    // A CA that did not sign the server's certificate: a clear error at
    // start-up, not a retry loop.
    let started = Instant::now();
    let mut refused = Dispatcher::start_unready(test.args("tls-wrong-ca", &["--redis-ca-file", &wrong_ca]), vec![]);
    let log = refused.refusal_log("the dispatcher stops when the TLS handshake cannot succeed");
    assert!(log.contains("TLS handshake with Redis at rediss://"), "{log}");
    assert!(log.contains("--redis-ca-file"), "{log}");
    assert!(!log.contains(password), "the password reached the log:\n{log}");
    eprintln!("wrong CA refused in {:?}", started.elapsed());

    let dispatcher = test.dispatcher(&["--redis-ca-file", &ca]);
    let out = test.publish_cli("{}", &["--redis-ca-file", &ca, "--id", "over-tls-1"]);
    assert!(out.starts_with("over-tls-1 "), "{out}");
    receiver.wait_for_event("over-tls-1", 1, Duration::from_secs(30));
    assert!(!dispatcher.log().contains(password), "the password reached the log");
    let help = run_cli(&["dispatcher", "--help"]);
    assert!(!help.contains(password));
}

/// A hook of a new test on `group` with its receiver, a dispatcher in
/// Sentinel mode (entries of a dead consumer reclaimed after 5 s), and the
/// target producers connect to.
fn on_sentinel(group: &SentinelGroup, label: &str) -> (DeliveryTest, Receiver, Dispatcher, RedisTarget) {
    let test = DeliveryTest::on(label, &group.url());
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let mode = [
        "--redis-mode",
        "sentinel",
        "--redis-master-name",
        group.master_name(),
        "--reclaim-idle",
        "5s",
    ];
    let dispatcher = test.dispatcher(&mode);
    let target = RedisTarget::new(RedisMode::Sentinel, &group.url(), Some(group.master_name()), None)
        .expect("the Sentinel group's target");
    (test, receiver, dispatcher, target)
}

#[test]
fn five_hundred_events_around_a_forced_failover_and_a_killed_primary_all_arrive() {
    let _one = one_failover_at_a_time();
    let group = SentinelGroup::start("owh-primary");
    let (test, receiver, _dispatcher, target) = on_sentinel(&group, "sentinel");
    let mut producer = Producer::new(&target, &test.prefix);
    let id = |i: usize| format!("sentinel-{i:04}");
    let mut ids = BTreeSet::new();

    for i in 0..200 {
        producer.publish(&test.ns, &id(i));
        ids.insert(id(i));
        std::thread::sleep(Duration::from_millis(5));
    }
    // A forced fail-over leaves the old primary writable until Sentinel
    // reconfigures it (docs/src/redis.md#what-a-fail-over-can-lose): what a
    // producer writes there meanwhile is lost, so producers pause, as the
    // docs tell users to, until the old primary has become a replica (then a write
    // that still reaches it gets READONLY and is retried on the new one).
    let old = group.primary_port();
    let new = group.failover();
    assert_ne!(old, new);
    wait_for(
        "the old primary to be reconfigured as a replica",
        Duration::from_secs(60),
        || match redis_cli(old, &["ROLE"]) {
            Ok(role) if role.starts_with("slave") => Ok(()),
            other => Err(format!("ROLE: {other:?}")),
        },
    );
    for i in 200..350 {
        producer.publish(&test.ns, &id(i));
        ids.insert(id(i));
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL once the replica is in sync (what Redis had replicated must
    // survive); the producer goes on through the fail-over.
    let killed = group.kill_primary();
    let killed_at = Instant::now();
    for i in 350..500 {
        producer.publish(&test.ns, &id(i));
        ids.insert(id(i));
        std::thread::sleep(Duration::from_millis(5));
    }
    let promoted = group.wait_for_new_primary(killed);
    let counts = wait_all_delivered(&[&receiver], &ids, Duration::from_secs(120));
    let first_after_kill = receiver
        .requests()
        .iter()
        .filter(|r| r.at > killed_at)
        .map(|r| r.at)
        .min()
        .expect("deliveries after the kill");
    eprintln!(
        "sentinel: 500 of 500 delivered; {} duplicate(s); first delivery {:?} after the SIGKILL of {killed} ({promoted} promoted); {} publish retries",
        duplicates(&counts),
        first_after_kill.duration_since(killed_at),
        producer.retries,
    );
}

/// What [`failover_then_kill`] saw.
struct FailoverRun {
    counts: BTreeMap<String, usize>,
    /// From the first sentinel naming the new primary to a blocked
    /// XREADGROUP on the old one giving up (this process's own reader).
    reader_followed: Duration,
    /// The same for the dispatcher's stream reader, from its log.
    dispatcher_followed: Duration,
    /// Of the 100 events published to the new primary, those delivered
    /// before its SIGKILL.
    delivered_before_kill: usize,
    publish_retries: usize,
    not_replicated: usize,
    library_resends: u32,
}

/// A blocked reader of the stream under `prefix` (its own group's view,
/// BLOCK 10 s) on a thread of its own; answers when a blocking read was
/// abandoned because the sentinels named another primary.
fn blocked_reader(group: &SentinelGroup, prefix: &str) -> std::sync::mpsc::Receiver<Instant> {
    let (tx, rx) = std::sync::mpsc::channel();
    // A target of its own: its Sentinel watch runs on this thread's runtime.
    let target = RedisTarget::new(RedisMode::Sentinel, &group.url(), Some(group.master_name()), None).unwrap();
    let keys = Keys::new(prefix);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let conn = target.connect().await.expect("the probe connects");
            let blocking = target.connect().await.expect("the probe connects");
            let store = Store::new(conn, blocking, keys);
            store.ensure_group().await.expect("the probe's group");
            let _ = ready_tx.send(());
            loop {
                match store.read_entries("probe", ">", 1, 10_000).await {
                    Ok(None) => {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => eprintln!("probe read: {e}"),
                }
            }
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the probe reader to start");
    rx
}

/// How long after `after` the first log line holding `message` was
/// written (the text log starts each line with its RFC 3339 time); 0 for
/// a line up to a second before (`after` is when the test's probe, a
/// process start away, saw what the line reacts to).
fn log_time(log: &str, message: &str, after: jiff::Timestamp) -> Option<Duration> {
    log.lines().filter(|line| line.contains(message)).find_map(|line| {
        // Without the ANSI colour codes around the time, if any.
        let mut plain = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                plain.push(c);
            }
        }
        let stamp = plain.split_whitespace().next()?;
        let at: jiff::Timestamp = stamp.parse().ok()?;
        let since = at.duration_since(after);
        (since >= -jiff::SignedDuration::from_secs(1)).then(|| Duration::try_from(since).unwrap_or_default())
    })
}

/// Sentinel with a primary, two replicas and three sentinels: 100 events,
/// `SENTINEL FAILOVER`, 100 events as soon as the sentinels name the new
/// primary, SIGKILL of that primary `kill_after` the last of them, 100
/// more; waits until all 300 reached the receiver (counted by id).
fn failover_then_kill(label: &str, kill_after: Duration, options: PublishOptions) -> FailoverRun {
    let group = SentinelGroup::start_with_replicas("owh-primary", 2);
    let (test, receiver, dispatcher, target) = on_sentinel(&group, label);
    let mut producer = Producer::with_options(&target, &test.prefix, options);
    let id = |i: usize| format!("{label}-{i:03}");
    let mut ids = BTreeSet::new();
    let mut publish = |producer: &mut Producer, range: std::ops::Range<usize>| {
        for i in range {
            producer.publish(&test.ns, &id(i));
            ids.insert(id(i));
        }
    };

    publish(&mut producer, 0..100);
    let old = group.wait_settled();
    let abandoned = blocked_reader(&group, &format!("{}probe:", test.prefix));
    // When the first sentinel (the one told to fail over, which announces
    // the switch) names another primary.
    let leader = group.sentinel_ports()[0];
    let named = std::thread::spawn({
        let name = group.master_name().to_string();
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let answer = redis_cli(leader, &["SENTINEL", "get-master-addr-by-name", &name]).unwrap_or_default();
                if !answer.contains(&old.to_string()) && answer.lines().count() >= 2 {
                    return (Instant::now(), jiff::Timestamp::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!("sentinel {leader} still names {old}");
        }
    });
    let new = group.failover();
    let agreed_at = Instant::now();
    assert_ne!(old, new);
    let (named_at, named_wall) = named.join().expect("the sentinel probe");
    publish(&mut producer, 100..200);
    let published_at = Instant::now();
    std::thread::sleep(kill_after.saturating_sub(published_at.elapsed()));
    group.kill(new);
    let killed_at = Instant::now();
    let abandoned_at = abandoned
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocked reader to give up its read on the old primary");
    let reader_followed = abandoned_at.saturating_duration_since(named_at);
    let dispatcher_followed = log_time(
        &dispatcher.log(),
        "the primary moved; reading the stream there",
        named_wall,
    )
    .expect("the dispatcher's stream reader to give up its read on the old primary");
    let delivered_before_kill = receiver
        .requests()
        .iter()
        .filter(|r| r.at < killed_at)
        .map(|r| r.event_id().to_string())
        .filter(|e| (100..200).any(|i| *e == id(i)))
        .collect::<BTreeSet<_>>()
        .len();
    publish(&mut producer, 200..300);
    let promoted = group.wait_for_new_primary(new);
    eprintln!(
        "{label}: sentinel named {new} at +0 (all agreed by {:?}); blocked reader gave up at {reader_followed:?}; \
         100 published by {:?}; SIGKILL at {:?}; {promoted} promoted; {delivered_before_kill} of those 100 delivered before the kill",
        agreed_at.duration_since(named_at),
        published_at.duration_since(named_at),
        killed_at.duration_since(named_at),
    );
    let counts = wait_all_delivered(&[&receiver], &ids, Duration::from_secs(90));
    FailoverRun {
        counts,
        reader_followed,
        dispatcher_followed,
        delivered_before_kill,
        publish_retries: producer.retries,
        not_replicated: producer.not_replicated,
        library_resends: producer.library_resends,
    }
}

/// The time of each of `n` publishes to the primary of `group` with `options`.
fn publish_times(target: &RedisTarget, prefix: &str, org: &str, options: PublishOptions, n: usize) -> Vec<Duration> {
    static PUBLISHED: AtomicUsize = AtomicUsize::new(0);
    let mut producer = Producer::with_options(target, prefix, options);
    let times = (0..n)
        .map(|_| {
            let started = Instant::now();
            producer.publish(org, &format!("cost-{}", PUBLISHED.fetch_add(1, Ordering::Relaxed)));
            started.elapsed()
        })
        .collect();
    assert_eq!(producer.retries, 0, "no publish may fail while measuring");
    times
}

/// Mean, median and 99th percentile.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    format!("mean {mean:?}, median {:?}, p99 {:?}", at(0.5), at(0.99))
}

#[test]
fn a_forced_failover_then_the_new_primary_killed_half_a_second_later_loses_none_of_300_events() {
    let _one = one_failover_at_a_time();
    let run = failover_then_kill("switch", Duration::from_millis(500), PublishOptions::default());
    eprintln!("switch: {}", run.summary());
    assert_eq!(run.counts.len(), 300);
    for (who, followed) in [
        ("the dispatcher's", run.dispatcher_followed),
        ("the test's", run.reader_followed),
    ] {
        assert!(
            followed < Duration::from_millis(500),
            "{who} reader blocked on the old primary gave up {followed:?} after the switch"
        );
    }
}

#[test]
fn with_wait_replicas_one_a_new_primary_killed_at_once_after_publishing_loses_none_of_300_events() {
    let _one = one_failover_at_a_time();
    let wait = PublishOptions {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(500),
        ..PublishOptions::default()
    };
    let run = failover_then_kill("wait", Duration::ZERO, wait.clone());
    eprintln!("wait: {}", run.summary());
    assert_eq!(run.counts.len(), 300);

    // The cost of WAIT 1, on a settled group (a primary, two replicas in
    // sync), 1,000 publishes each way, through the library.
    let group = SentinelGroup::start_with_replicas("owh-primary", 2);
    let test = DeliveryTest::on("wait-cost", &group.url());
    let _dispatcher = test.dispatcher(&["--redis-mode", "sentinel", "--redis-master-name", group.master_name()]);
    let target = RedisTarget::new(RedisMode::Sentinel, &group.url(), Some(group.master_name()), None).unwrap();
    // Alternating rounds of 100, so warming up and the dispatcher's reads
    // weigh on both alike.
    let (mut plain, mut waited) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        plain.extend(publish_times(
            &target,
            &test.prefix,
            &test.ns,
            PublishOptions::default(),
            100,
        ));
        waited.extend(publish_times(&target, &test.prefix, &test.ns, wait.clone(), 100));
    }
    eprintln!(
        "wait: cost per publish over 1,000 each: without WAIT {}; with WAIT 1 {}",
        summary(plain),
        summary(waited)
    );

    // The CLI's flags: checked before connecting.
    for (flags, says) in [
        (&["--wait-timeout", "1s"][..], "--wait-replicas"),
        (&["--wait-replicas", "1", "--wait-timeout", "0s"][..], "--wait-timeout"),
        (&["--wait-replicas", "1", "--wait-timeout", "6s"][..], "at most 5s"),
    ] {
        let (ok, stdout, stderr) = test.try_publish_cli("{}", flags);
        assert!(!ok && stderr.contains(says), "{flags:?}: {stdout}{stderr}");
    }
    let on_sentinel = ["--redis-mode", "sentinel", "--redis-master-name", group.master_name()];
    let out = test.publish_cli(
        "{}",
        &[&on_sentinel[..], &["--wait-replicas", "1", "--id", "waited-cli"]].concat(),
    );
    assert!(out.starts_with("waited-cli "), "{out}");
    // More replicas than there are: appended, and said so.
    let (ok, stdout, stderr) = test.try_publish_cli(
        "{}",
        &[
            &on_sentinel[..],
            &["--wait-replicas", "3", "--wait-timeout", "200ms", "--id", "short"],
        ]
        .concat(),
    );
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("event short was appended")
            && stderr.contains("only 2 of the 3 replica(s)")
            && stderr.contains("may not survive a fail-over"),
        "{stderr}"
    );
}

#[test]
fn sixty_orgs_over_six_shards_on_a_cluster_survive_a_killed_master() {
    let _one = one_failover_at_a_time();
    let cluster = RedisCluster::start();
    let prefix = redis_prefix("cluster");
    // The six shards' keys spread over all three masters.
    let owners: BTreeSet<u16> = (0..6)
        .map(|k| cluster.node_of_key(&format!("{}events", shard_prefix(&prefix, k).unwrap())))
        .collect();
    assert_eq!(owners, cluster.masters().into_iter().collect::<BTreeSet<_>>());

    let receiver = Receiver::ok();
    let orgs: Vec<String> = (0..60).map(|i| namespace(&format!("cl{i}"))).collect();
    std::thread::scope(|s| {
        for chunk in orgs.chunks(10) {
            let url = receiver.url("/");
            s.spawn(move || {
                for org in chunk {
                    create_hook(org, "h", &url, &[CREATE], json!({}));
                }
            });
        }
    });
    let url = cluster.url();
    let mode = ["--redis-mode", "cluster", "--shards", "6", "--reclaim-idle", "5s"];
    let args = |consumer: &str| support::dispatcher::args(&url, &prefix, consumer, &mode);
    let _one = Dispatcher::start(args("cluster-a"));
    let _two = Dispatcher::start(args("cluster-b"));

    // One event per org through the CLI (which reads the shard count the
    // dispatchers stored), the rest through the library.
    let mut ids = BTreeSet::new();
    for org in &orgs {
        let id = format!("{org}-cli");
        run_cli(&[
            "publish",
            "--redis-mode",
            "cluster",
            "--redis-url",
            &url,
            "--redis-prefix",
            &prefix,
            "--org",
            org,
            "--event",
            CREATE,
            "--data",
            "{}",
            "--id",
            &id,
        ]);
        ids.insert(id);
    }
    let target = RedisTarget::new(RedisMode::Cluster, &url, None, None).unwrap();
    let mut producer = Producer::new(&target, &prefix);
    for round in 0..5 {
        for org in &orgs {
            let id = format!("{org}-{round}");
            producer.publish(org, &id);
            ids.insert(id);
        }
    }
    // Mid-run (deliveries still in flight), once replication caught up:
    // SIGKILL of the master holding shard 0.
    std::thread::sleep(Duration::from_millis(200));
    let victim = cluster.node_of_key(&format!("{prefix}events"));
    cluster.kill(victim);
    let killed_at = Instant::now();
    for round in 5..10 {
        for org in &orgs {
            let id = format!("{org}-{round}");
            producer.publish(org, &id);
            ids.insert(id);
        }
    }
    cluster.wait_for_failover();
    let counts = wait_all_delivered(&[&receiver], &ids, Duration::from_secs(180));
    let lost = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(lost, 0);
    eprintln!(
        "cluster: {} of {} delivered over 6 shards on 3 masters; {} duplicate(s); master {victim} killed, {:?} from the kill to all delivered; {} publish retries",
        counts.len(),
        ids.len(),
        duplicates(&counts),
        killed_at.elapsed(),
        producer.retries,
    );
}

#[test]
fn another_shard_count_or_a_prefix_without_a_hash_tag_is_refused_at_start_up() {
    let test = DeliveryTest::new("shard-count");
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let first = test.dispatcher(&["--shards", "3"]);
    drop(first);

    let mut other = Dispatcher::start_unready(test.args("shard-count-2", &["--shards", "4"]), vec![]);
    let log = other.refusal_log("a dispatcher with another shard count stops");
    assert!(
        log.contains("Redis holds 3 stream shard(s)") && log.contains("start every dispatcher with --shards 3"),
        "{log}"
    );
    // The producer side reads the stored count: this org's shard of 3.
    let out = test.publish_cli("{}", &[]);
    let k = outbound_webhooks::store::shard::shard_of(&test.ns, 3);
    let length = support::redis::stream_length(&test.redis_url, &shard_prefix(&test.prefix, k).unwrap());
    assert_eq!(length, 1, "{out}");

    let untagged = "owh-no-tag:";
    let mut refused = Dispatcher::start_unready(
        support::dispatcher::args(&test.redis_url, untagged, "no-tag", &[]),
        vec![],
    );
    let log = refused.refusal_log("a prefix without a hash tag is refused");
    assert!(log.contains("has no {hash tag}"), "{log}");
}

#[test]
fn after_a_flush_the_shard_count_is_written_again_and_wrong_shard_entries_replay_to_their_shard() {
    // A Redis of its own: the test flushes it.
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let test = DeliveryTest {
        name: "flush-shards".into(),
        ns: namespace_in_shard("flush-shards", 1, 2),
        prefix: redis_prefix("flush-shards"),
        redis_url: redis.url(),
    };
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let _one = test.dispatcher_as("flush-a", &["--shards", "2"]);
    let _two = test.dispatcher_as("flush-b", &["--shards", "2"]);
    let shard_prefixes: Vec<String> = (0..2).map(|k| shard_prefix(&test.prefix, k).unwrap()).collect();
    let mut conn = test.redis();

    // A restart without persistence, as far as the data goes.
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    wait_for(
        "the dispatchers to recreate both consumer groups",
        Duration::from_secs(30),
        || {
            for prefix in &shard_prefixes {
                let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(Keys::new(prefix).events())
                    .query(&mut conn);
                match groups {
                    Ok(groups) if !groups.is_empty() => {}
                    other => return Err(format!("{prefix}: {other:?}")),
                }
            }
            Ok(())
        },
    );
    // Published at once to an org of shard 1: it reaches its shard.
    let out = test.publish_cli("{}", &["--id", "after-the-flush"]);
    receiver.wait_for_event("after-the-flush", 1, Duration::from_secs(30));
    let stored: Option<String> = redis::cmd("GET")
        .arg(test.keys().shard_count())
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored.as_deref(), Some("2"), "{out}");

    // A producer that XADDs to shard 0 itself: dead-lettered wrong_shard,
    // then moved by replay to shard 1 and delivered there, once.
    let _: String = xadd_event(&shard_prefixes[0], &test.ns, CREATE, "{}", Some("on-the-wrong-shard"))
        .query(&mut conn)
        .unwrap();
    wait_for("the entry to be dead-lettered", Duration::from_secs(30), || {
        let letters = test.dead_letters(None);
        match letters.iter().any(|line| line.contains("wrong_shard: org")) {
            true => Ok(()),
            false => Err(format!("{letters:?}")),
        }
    });
    let replay = || {
        let (ok, stdout, stderr) = test.try_replay_dead_letters(&[]);
        assert!(ok, "dead-letter replay failed: {stdout}{stderr}");
        stdout
    };
    let out = replay();
    assert!(out.contains("moved 1 entry(ies)"), "{out}");
    receiver.wait_for_event("on-the-wrong-shard", 1, Duration::from_secs(30));
    assert_eq!(test.dead_letters(None), Vec::<String>::new());
    let again = replay();
    assert!(!again.contains("moved"), "{again}");
}

/// What one publishing loop saw.
#[derive(Debug, Default)]
struct Tally {
    /// Event ids published successfully.
    ids: Vec<String>,
    /// Publishes that failed, with their error.
    failures: Vec<String>,
    /// Publishes that needed more than one append.
    retried: usize,
    /// Publishes that said the event may be in the stream twice.
    possibly_duplicated: usize,
    /// The slowest publish.
    slowest: Duration,
}

impl Tally {
    fn record(&mut self, id: String, took: Duration, outcome: Result<(u32, bool), String>) {
        self.slowest = self.slowest.max(took);
        match outcome {
            Ok((attempts, possibly_duplicated)) => {
                self.retried += usize::from(attempts > 1);
                self.possibly_duplicated += usize::from(possibly_duplicated);
                self.ids.push(id);
            }
            Err(e) => self.failures.push(format!("{id}: {e}")),
        }
    }
}

/// Publishes `{label}-N` events to the test's org, one after another
/// through `publish_one`, until `stop`, counting successes in `done`.
fn publish_loop(
    label: &str,
    stop: &AtomicBool,
    done: &AtomicUsize,
    mut publish_one: impl FnMut(&str) -> Result<(u32, bool), String>,
) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("{label}-{n}");
        n += 1;
        let started = Instant::now();
        let outcome = publish_one(&id);
        tally.record(id, started.elapsed(), outcome);
        done.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
    }
    tally
}

#[test]
fn publishes_from_the_cli_and_the_library_ride_out_a_killed_cluster_master() {
    let _one = one_failover_at_a_time();
    let cluster = RedisCluster::start();
    let test = DeliveryTest::on("cluster-publish", &cluster.url());
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let _d = test.dispatcher(&["--redis-mode", "cluster", "--reclaim-idle", "5s"]);
    // Every event goes to the stream on this master.
    let victim = cluster.node_of_key(&test.keys().events());
    let target = RedisTarget::new(RedisMode::Cluster, &test.redis_url, None, None).unwrap();
    // The default 10 s covers the 4-6 s fail-overs measured here; a loaded
    // machine (the whole suite) slows them, and what is tested is that a
    // publish rides one out, not how fast.
    let retry_timeout = Duration::from_secs(30);

    let stop = AtomicBool::new(false);
    let (by_cli, by_library) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let published_by_both = |at_least: usize| {
        wait_for("both loops to publish", Duration::from_secs(120), || {
            let (cli, library) = (by_cli.load(Ordering::SeqCst), by_library.load(Ordering::SeqCst));
            if cli >= at_least && library >= at_least {
                Ok(())
            } else {
                Err(format!("{cli} by the CLI, {library} by the library"))
            }
        })
    };
    let (cli, library, killed_for) = std::thread::scope(|s| {
        let library = s.spawn(|| {
            let rt = runtime();
            let mut publisher = rt.block_on(async {
                let conn = target.connect_without_resends().await.expect("the producer connects");
                let options = PublishOptions {
                    retry_timeout,
                    ..PublishOptions::default()
                };
                Publisher::with_options(conn, &test.prefix, options)
                    .await
                    .expect("reading the shard count")
            });
            publish_loop("library", &stop, &by_library, |id| {
                let mut event = NewEvent::new(&test.ns, EventName::from_str(CREATE).unwrap(), json!({})).unwrap();
                event.id = Some(id.to_string());
                rt.block_on(publisher.publish(&event))
                    .map(|p| (p.attempts, p.possibly_duplicated))
                    .map_err(|e| e.to_string())
            })
        });
        let cli = s.spawn(|| {
            publish_loop("cli", &stop, &by_cli, |id| {
                let (ok, stdout, stderr) = try_cli(&[
                    "publish",
                    "--redis-mode",
                    "cluster",
                    "--redis-url",
                    &test.redis_url,
                    "--redis-prefix",
                    &test.prefix,
                    "--org",
                    &test.ns,
                    "--event",
                    CREATE,
                    "--data",
                    "{}",
                    "--id",
                    id,
                    "--retry-timeout",
                    "30s",
                ]);
                match ok {
                    true => Ok((1, stderr.contains("may be in the stream twice"))),
                    false => Err(format!("{stdout}{stderr}")),
                }
            })
        });
        published_by_both(5);
        cluster.kill(victim);
        let killed_at = Instant::now();
        cluster.wait_for_failover();
        let killed_for = killed_at.elapsed();
        // And on after the fail-over, a few more each.
        let (cli_now, library_now) = (by_cli.load(Ordering::SeqCst), by_library.load(Ordering::SeqCst));
        published_by_both(cli_now.max(library_now) + 5);
        stop.store(true, Ordering::SeqCst);
        (
            cli.join().expect("the CLI loop"),
            library.join().expect("the library loop"),
            killed_for,
        )
    });

    let ids: BTreeSet<String> = cli.ids.iter().chain(&library.ids).cloned().collect();
    let counts = wait_all_delivered(&[&receiver], &ids, Duration::from_secs(180));
    eprintln!(
        "cluster publish through a killed master ({killed_for:?} to fail over): CLI {} published, {} failed, slowest {:?}, {} possibly duplicated; library {} published, {} failed, {} retried, slowest {:?}, {} possibly duplicated; {} of {} delivered, {} duplicate deliveries",
        cli.ids.len(),
        cli.failures.len(),
        cli.slowest,
        cli.possibly_duplicated,
        library.ids.len(),
        library.failures.len(),
        library.retried,
        library.slowest,
        library.possibly_duplicated,
        counts.len(),
        ids.len(),
        duplicates(&counts),
    );
    assert_eq!(cli.failures, Vec::<String>::new(), "CLI publishes failed");
    assert_eq!(library.failures, Vec::<String>::new(), "library publishes failed");
}
