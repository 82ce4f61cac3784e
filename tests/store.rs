//! The Redis schema (`src/store/`) against a real redis-server of its own (no
//! control plane): one test per script behaviour, so a Lua edit gets
//! feedback in seconds.

use outbound_webhooks_test_kit as support;

use std::{collections::HashMap, sync::OnceLock};

use outbound_webhooks::dispatcher::org_budget::{ORG_OVER_BUDGET, OrgBudgets};
use outbound_webhooks::store::connection::{RedisMode, RedisTarget};
use outbound_webhooks::store::{
    AttemptsBatch, Claim, DeadLetter, Delivery, Duplicate, HookLimit, NewTask, Replayed, Rescheduled, Store, Task,
    task::field, task_member,
};
use support::redis::RedisServer;
use support::redis_prefix;

/// One redis-server for every test here; each test has its own prefix.
fn redis_url() -> String {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(&[])).url()
}

async fn store(test: &str) -> Store {
    let target = RedisTarget::new(RedisMode::Standalone, &redis_url(), None, None).expect("the test Redis URL");
    Store::connect(&target, &redis_prefix(test))
        .await
        .expect("connecting to the test redis-server")
}

fn task(uid: &str, event_id: &str, due_in_ms: i64) -> NewTask {
    NewTask {
        delivery: Delivery {
            hook: format!("acme/{uid}"),
            uid: uid.to_string(),
            event_id: event_id.to_string(),
            event: "kustomer.conversation.create".to_string(),
            org: "acme".to_string(),
            body: bytes::Bytes::from(format!("{{\"id\":\"{event_id}\"}}")),
            entry_id: "1-0".to_string(),
            trace: None,
        },
        due_in_ms,
    }
}

async fn load(store: &Store, uid: &str, event_id: &str) -> Option<Task> {
    store.load_task(&task_member(uid, event_id)).await.expect("HGETALL")
}

async fn connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("URL");
    client.get_multiplexed_async_connection().await.expect("connection")
}

async fn zscore(key: String, member: &str) -> Option<i64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async::<Option<f64>>(&mut connection().await)
        .await
        .expect("ZSCORE")
        .map(|s| s as i64)
}

/// Redis's clock (`TIME`) in Unix ms: the clock of every due time and
/// lease end the scripts set.
async fn redis_now() -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut connection().await)
        .await
        .expect("TIME");
    secs * 1000 + micros / 1000
}

/// Waits until Redis's clock is past `ms`.
async fn wait_redis_past(ms: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while redis_now().await <= ms {
        assert!(std::time::Instant::now() < deadline, "Redis's clock did not pass {ms}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `score` lies `offset` ms after some Redis time in `[before, after]`.
fn assert_within(score: Option<i64>, before: i64, after: i64, offset: i64) {
    let score = score.expect("a score");
    assert!(
        (before + offset..=after + offset).contains(&score),
        "score {score} is not {offset} ms after a Redis time in [{before}, {after}]"
    );
}

/// One entry appended and read by consumer `me` (pending, not acknowledged).
async fn read_one_entry(store: &Store) -> (String, Vec<outbound_webhooks::store::RawEntry>) {
    store.ensure_group().await.expect("the consumer group");
    let entry_id: String = redis::cmd("XADD")
        .arg(store.keys().events())
        .arg("*")
        .arg(&["org", "acme"])
        .query_async(&mut connection().await)
        .await
        .expect("XADD");
    let read = store
        .read_entries("me", ">", 10, 100)
        .await
        .expect("XREADGROUP")
        .expect("one node: no fail-over");
    (entry_id, read)
}

async fn all_dead_letters(store: &Store) -> Vec<DeadLetter> {
    store.dead_letters_after(None, 1000).await.expect("XRANGE")
}

#[tokio::test]
async fn claims_walk_hooks_by_earliest_due_time_within_each_hooks_capacity() {
    let store = store("claim-order").await;
    let tasks = [
        task("hook-a", "a1", 10),
        task("hook-a", "a2", 20),
        task("hook-a", "a3", 30),
        task("hook-b", "b1", 15),
        task("hook-c", "c1", 9_000_000), // not due yet
    ];
    // Due times are Redis's clock at storing plus each task's delay.
    let before = redis_now().await;
    let stored_at = store
        .store_tasks_and_ack(&[], &tasks, 500)
        .await
        .expect("storing")
        .now_ms;
    assert_within(Some(stored_at), before, redis_now().await, 0);
    let keys = store.keys().clone();
    assert_eq!(zscore(keys.due(), "hook-b:b1").await, Some(stored_at + 15));
    wait_redis_past(stored_at + 30).await;

    // Default capacity 2: two of hook-a (its earliest), then hook-b's one.
    let before = redis_now().await;
    let claimed = store
        .claim(30_000, 10, 2, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claimed.members, ["hook-a:a1", "hook-a:a2", "hook-b:b1"]);
    assert_within(Some(claimed.lease_until), before, redis_now().await, 30_000);
    assert!(claimed.backlog, "hook-a had a third task due");
    // Claimed tasks are due at their lease end; the rest keep their time.
    assert_eq!(zscore(keys.due(), "hook-a:a1").await, Some(claimed.lease_until));
    assert_eq!(
        zscore(keys.hook_due("hook-a"), "hook-a:a1").await,
        Some(claimed.lease_until)
    );
    assert_eq!(zscore(keys.hooks_due(), "hook-a").await, Some(stored_at + 30));

    // A hook at capacity 0 is skipped in one step; others are still claimed.
    store
        .store_tasks_and_ack(&[], &[task("hook-b", "b2", 0)], 500)
        .await
        .expect("storing");
    let busy = HashMap::from([("hook-a".to_string(), 0)]);
    let claimed = store.claim(30_000, 10, 2, &busy, |_| None).await.expect("claim");
    assert_eq!(claimed.members, ["hook-b:b2"]);
    assert!(claimed.backlog, "hook-a's task waits for a slot of its lane");
    // Nothing is claimed twice while its lease runs.
    let claimed = store
        .claim(30_000, 10, 2, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claimed.members, ["hook-a:a3"]);
    // Nothing due: no backlog, so a freed slot wakes no claimer.
    let claimed = store
        .claim(30_000, 10, 2, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert!(claimed.members.is_empty());
    assert!(!claimed.backlog);
}

/// `limit_of` for claims: hook `uid` has these limits, no other hook any.
fn limit_of(uid: &'static str, per_second: u32, burst: u32, most: u32) -> impl Fn(&str) -> Option<HookLimit> + Copy {
    move |hook: &str| {
        (hook == uid).then_some(HookLimit {
            requests_per_second: per_second,
            burst,
            max_concurrent: most,
        })
    }
}

#[tokio::test]
async fn claims_keep_a_hook_to_its_rate_and_concurrency_across_claimers_and_let_others_by() {
    let store = store("limits").await;
    let keys = store.keys().clone();
    let tasks: Vec<NewTask> = (0..8).map(|i| task("hook-r", &format!("r{i}"), 0)).collect();
    store.store_tasks_and_ack(&[], &tasks, 500).await.expect("storing");
    // 10 per second, burst 3: three at once, then one per 100 ms.
    let rate = limit_of("hook-r", 10, 3, 0);
    let first = store
        .claim(30_000, 100, 100, &HashMap::new(), rate)
        .await
        .expect("claim");
    assert_eq!(first.members.len(), 3, "the burst");
    assert_eq!(first.held_by_rate, 1);
    let wait = first.next_token_in_ms.expect("the next token's time");
    assert!((95..=101).contains(&wait), "next token in {wait} ms");
    // Held back, the hook is out of hooks-due until its next token, so a
    // task of another hook is claimed (a second claimer sees the same).
    store
        .store_tasks_and_ack(&[], &[task("hook-b", "b1", 0)], 500)
        .await
        .expect("storing");
    let other = store
        .claim(30_000, 100, 100, &HashMap::new(), rate)
        .await
        .expect("claim");
    assert_eq!(other.members, ["hook-b:b1"]);
    assert!(
        zscore(keys.hooks_due(), "hook-r").await.expect("hook-r is indexed") > redis_now().await,
        "hook-r waits for its next token"
    );
    // One token per 100 ms afterwards: over 450 ms, 4 or 5 more in all.
    let start = redis_now().await;
    let mut claimed = 0;
    while redis_now().await < start + 450 {
        claimed += store
            .claim(30_000, 100, 100, &HashMap::new(), rate)
            .await
            .expect("claim")
            .members
            .len();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!((4..=5).contains(&claimed), "{claimed} claimed in 450 ms at 10/s");

    // At most 2 in flight: a claim gives two, the next none; once one
    // settles (finished), one more.
    let tasks: Vec<NewTask> = (0..4).map(|i| task("hook-c", &format!("c{i}"), 0)).collect();
    store.store_tasks_and_ack(&[], &tasks, 500).await.expect("storing");
    let two = limit_of("hook-c", 0, 0, 2);
    let first = store
        .claim(30_000, 100, 100, &HashMap::new(), two)
        .await
        .expect("claim");
    assert_eq!(first.members.len(), 2);
    assert_eq!(first.held_by_concurrency, 1);
    let none = store
        .claim(30_000, 100, 100, &HashMap::new(), two)
        .await
        .expect("claim");
    assert!(none.members.is_empty(), "{:?}", none.members);
    // An extended lease still counts.
    let member = &first.members[0];
    store
        .extend_lease(member, first.lease_until, 60_000)
        .await
        .expect("extend")
        .expect("still held");
    let none = store
        .claim(30_000, 100, 100, &HashMap::new(), two)
        .await
        .expect("claim");
    assert!(none.members.is_empty(), "{:?}", none.members);
    let (_, event_id) = member.split_once(':').expect("a member");
    let done = load(&store, "hook-c", event_id).await.expect("the task");
    store.finish(&done).await.expect("finish");
    let one = store
        .claim(30_000, 100, 100, &HashMap::new(), two)
        .await
        .expect("claim");
    assert_eq!(one.members.len(), 1, "{:?}", one.members);
}

#[tokio::test]
async fn a_stale_claim_is_refused_on_extend_and_reschedule() {
    let store = store("stale-claim").await;
    store
        .store_tasks_and_ack(&[], &[task("hook-a", "e1", 0)], 500)
        .await
        .expect("storing");
    let claim = store
        .claim(10_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claim.members, ["hook-a:e1"]);
    let claimed = claim.lease_until;
    let loaded = load(&store, "hook-a", "e1").await.expect("the task");

    assert_eq!(
        store
            .extend_lease("hook-a:e1", claimed - 1, 99_000)
            .await
            .expect("extend"),
        None
    );
    let next = Rescheduled {
        due_in_ms: 50_000,
        attempts: 1,
        first_attempt_ms: 2_000,
        last_error: "HTTP 500",
        waiting: false,
    };
    assert!(!store.reschedule(&loaded, claimed + 1, next).await.expect("reschedule"));

    // Extended to 20 s from Redis's now; a shorter extension keeps it.
    let before = redis_now().await;
    let extended = store
        .extend_lease("hook-a:e1", claimed, 20_000)
        .await
        .expect("extend")
        .expect("the claim holds");
    assert_within(Some(extended), before, redis_now().await, 20_000);
    assert_eq!(
        store.extend_lease("hook-a:e1", extended, 1_000).await.expect("extend"),
        Some(extended)
    );
    // The old lease end no longer holds the claim.
    assert!(!store.reschedule(&loaded, claimed, next).await.expect("reschedule"));
    let before = redis_now().await;
    assert!(store.reschedule(&loaded, extended, next).await.expect("reschedule"));
    let after = redis_now().await;
    let rescheduled = load(&store, "hook-a", "e1").await.expect("the task");
    assert_eq!((rescheduled.attempts, rescheduled.first_attempt_ms), (1, 2_000));
    let keys = store.keys().clone();
    let due = zscore(keys.due(), "hook-a:e1").await;
    assert_within(due, before, after, 50_000);
    assert_eq!(zscore(keys.hooks_due(), "hook-a").await, due);
}

#[tokio::test]
async fn a_dead_letter_replays_as_a_fresh_task_and_is_gone_in_the_same_step() {
    let store = store("dead-letter").await;
    store
        .store_tasks_and_ack(&[], &[task("hook-a", "e1", 0), task("hook-a", "e2", 0)], 500)
        .await
        .expect("storing");
    let claimed = store
        .claim(10_000, 1, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim")
        .lease_until;

    // A lost claim moves nothing; the held one moves its task.
    let members = ["hook-a:e1".to_string()];
    let moved = store
        .dead_letter_tasks("hook-a", &members, Claim::Held(claimed + 1), "nope", 3_000)
        .await
        .expect("dead-letter");
    assert_eq!(moved, 0);
    let moved = store
        .dead_letter_tasks(
            "hook-a",
            &members,
            Claim::Held(claimed),
            "failed all 10 attempts",
            3_000,
        )
        .await
        .expect("dead-letter");
    assert_eq!(moved, 1);
    assert!(load(&store, "hook-a", "e1").await.is_none());
    assert_eq!(zscore(store.keys().due(), "hook-a:e1").await, None);

    let letters = all_dead_letters(&store).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.text(field::REASON), "failed all 10 attempts");
    assert_eq!(letter.hook(), "acme/hook-a");
    assert_eq!(letter.text(field::EVENT_ID), "e1");
    assert_eq!(
        letter.fields.get(field::BODY).map(Vec::as_slice),
        Some(&b"{\"id\":\"e1\"}"[..])
    );
    assert!(!letter.fields.contains_key(field::CREATED_MS));
    assert!(letter.is_delivery());

    assert_eq!(
        letter.text(field::ENTRY_ID),
        "1-0",
        "the dead letter keeps its entry id"
    );
    let before = redis_now().await;
    assert_eq!(store.replay(letter, 4_000).await.expect("replay"), Replayed::Stored);
    assert_within(
        zscore(store.keys().due(), "hook-a:e1").await,
        before,
        redis_now().await,
        0,
    );
    assert!(all_dead_letters(&store).await.is_empty());
    // Replayed again (a second replay that read the same page): nothing.
    assert_eq!(store.replay(letter, 4_500).await.expect("replay"), Replayed::Gone);
    let replayed = load(&store, "hook-a", "e1").await.expect("the replayed task");
    assert_eq!((replayed.attempts, replayed.created_ms), (0, 4_000));
    assert_eq!(&replayed.body[..], b"{\"id\":\"e1\"}");
    // e2 (never claimed) is due since it was stored, the replayed e1 since
    // its replay.
    let claimed = store
        .claim(10_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claimed.members, ["hook-a:e2", "hook-a:e1"]);

    // A turn-off moves every task of the hook, whatever its claim.
    let members = store.hook_task_members("hook-a").await.expect("SMEMBERS");
    assert_eq!(members.len(), 2);
    let moved = store
        .dead_letter_tasks("hook-a", &members, Claim::Any, "hook turned off", 6_000)
        .await
        .expect("dead-letter");
    assert_eq!(moved, 2);
    assert!(store.hook_task_members("hook-a").await.expect("SMEMBERS").is_empty());
    assert_eq!(zscore(store.keys().hooks_due(), "hook-a").await, None);
}

#[tokio::test]
async fn routing_a_re_read_entry_stores_its_task_once_and_acknowledges_it() {
    let store = store("route").await;
    let (entry_id, read) = read_one_entry(&store).await;
    assert_eq!(read.len(), 1);

    let first = task("hook-a", "e1", 1_000);
    let stored_at = store
        .store_tasks_and_ack(&[], &[first], 500)
        .await
        .expect("storing")
        .now_ms;
    // The same entry read again (a restart): its task is not stored twice
    // nor moved, and the entry is acknowledged.
    store
        .store_tasks_and_ack(std::slice::from_ref(&entry_id), &[task("hook-a", "e1", 7_777)], 600)
        .await
        .expect("storing again");
    let stored = load(&store, "hook-a", "e1").await.expect("the task");
    assert_eq!(stored.created_ms, 500);
    assert_eq!(zscore(store.keys().due(), "hook-a:e1").await, Some(stored_at + 1_000));
    assert_eq!(
        store.hook_task_members("hook-a").await.expect("SMEMBERS"),
        ["hook-a:e1"]
    );
    let pending = store
        .read_entries("me", "0", 10, 0)
        .await
        .expect("XREADGROUP 0")
        .expect("one node: no fail-over");
    assert!(pending.is_empty(), "the entry is still pending: {pending:?}");

    // Another entry reusing the event id while the task is held: not
    // stored, reported with the held task's entry id.
    let mut reused = task("hook-a", "e1", 8_888);
    reused.delivery.entry_id = "2-0".to_string();
    let duplicates = store
        .store_tasks_and_ack(&[], &[task("hook-b", "e1", 1_000), reused], 700)
        .await
        .expect("storing a reused id")
        .duplicates;
    assert_eq!(
        duplicates,
        [Duplicate {
            index: 1,
            held_entry_id: "1-0".to_string()
        }]
    );
    assert_eq!(load(&store, "hook-a", "e1").await.expect("the task").created_ms, 500);
    let held = store
        .held_tasks(&[task_member("hook-a", "e1"), task_member("hook-c", "e1")])
        .await
        .expect("HMGET");
    assert_eq!(held, [Some(Some("1-0".to_string())), None]);

    // A finished task leaves nothing behind.
    store.finish(&stored).await.expect("finish");
    assert!(load(&store, "hook-a", "e1").await.is_none());
    assert!(store.hook_task_members("hook-a").await.expect("SMEMBERS").is_empty());
    assert_eq!(zscore(store.keys().hooks_due(), "hook-a").await, None);
}

#[tokio::test]
async fn a_waiting_task_sleeps_until_its_hook_changes_and_a_claim_ends_its_wait() {
    let store = store("waiting").await;
    store
        .store_tasks_and_ack(&[], &[task("hook-a", "e1", 0), task("hook-b", "e2", 0)], 500)
        .await
        .expect("storing");
    let claim = store
        .claim(10_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claim.members.len(), 2);
    // Asleep for 3 s (long enough for the checks before it comes due).
    let asleep_at = redis_now().await;
    for (uid, event_id) in [("hook-a", "e1"), ("hook-b", "e2")] {
        let loaded = load(&store, uid, event_id).await.expect("the task");
        let wait = Rescheduled {
            due_in_ms: 3_000,
            attempts: 0,
            first_attempt_ms: 0,
            last_error: "its conditions do not carry its current generation yet",
            waiting: true,
        };
        assert!(
            store
                .reschedule(&loaded, claim.lease_until, wait)
                .await
                .expect("reschedule")
        );
    }
    let b_due = zscore(store.keys().due(), "hook-b:e2").await.expect("a score");
    // Asleep: nothing due before its re-check time.
    let claimed = store
        .claim(10_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert!(claimed.members.is_empty());

    // hook-a changed: only its task wakes, due at once.
    let before = redis_now().await;
    let woken = store
        .wake(&["hook-a".to_string(), "hook-c".to_string()])
        .await
        .expect("wake");
    assert_eq!(woken, 1);
    assert_within(
        zscore(store.keys().due(), "hook-a:e1").await,
        before,
        redis_now().await,
        0,
    );
    assert_eq!(zscore(store.keys().due(), "hook-b:e2").await, Some(b_due));
    // Leased for 1 s only: it comes again unsettled with hook-b's.
    let claimed = store
        .claim(1_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    assert_eq!(claimed.members, ["hook-a:e1"]);
    assert!(
        redis_now().await < asleep_at + 3_000,
        "the checks took longer than the wait"
    );
    // Waking again changes nothing: the woken task no longer waits.
    assert_eq!(store.wake(&["hook-a".to_string()]).await.expect("wake"), 0);
    assert_eq!(zscore(store.keys().due(), "hook-a:e1").await, Some(claimed.lease_until));

    // A claim of a waiting task (its re-check time came) ends its wait too
    // (hook-a's task comes again: its lease ran out unsettled).
    wait_redis_past(b_due.max(claimed.lease_until)).await;
    let mut claimed = store
        .claim(10_000, 10, 4, &HashMap::new(), |_| None)
        .await
        .expect("claim");
    claimed.members.sort();
    assert_eq!(claimed.members, ["hook-a:e1", "hook-b:e2"]);
    assert_eq!(store.wake(&["hook-b".to_string()]).await.expect("wake"), 0);
}

#[tokio::test]
async fn tasks_larger_than_one_script_call_are_stored_in_slices_and_the_entry_acknowledged_last() {
    let store = store("slices").await;
    let (entry_id, _) = read_one_entry(&store).await;
    // Three tasks of 5 MiB: more than one script call may carry.
    let tasks: Vec<NewTask> = (0..3)
        .map(|i| {
            let mut t = task(&format!("hook-{i}"), "e1", 0);
            t.delivery.body = bytes::Bytes::from(vec![b'x'; 5 * 1024 * 1024]);
            t
        })
        .collect();
    store
        .store_tasks_and_ack(std::slice::from_ref(&entry_id), &tasks, 500)
        .await
        .expect("storing");
    for i in 0..3 {
        let stored = load(&store, &format!("hook-{i}"), "e1").await.expect("the task");
        assert_eq!(stored.body.len(), 5 * 1024 * 1024);
    }
    assert!(
        store
            .read_entries("me", "0", 10, 0)
            .await
            .expect("XREADGROUP 0")
            .is_some_and(|entries| entries.is_empty())
    );
}

#[tokio::test]
async fn retention_bounds_each_hooks_dead_letters_on_its_own() {
    let store = store("retention").await;
    let small: Vec<NewTask> = (0..3).map(|i| task("tenant-a", &format!("a{i}"), 0)).collect();
    let flood: Vec<NewTask> = (0..50).map(|i| task("tenant-b", &format!("b{i}"), 0)).collect();
    store.store_tasks_and_ack(&[], &small, 500).await.expect("storing");
    store.store_tasks_and_ack(&[], &flood, 500).await.expect("storing");
    // Tenant A's dead letters are the oldest of all.
    let a: Vec<String> = small.iter().map(NewTask::member).collect();
    let b: Vec<String> = flood.iter().map(NewTask::member).collect();
    store
        .dead_letter_tasks("tenant-a", &a, Claim::Any, "rejected", 2_000)
        .await
        .expect("dead-letter");
    store
        .dead_letter_tasks("tenant-b", &b, Claim::Any, "turned off", 3_000)
        .await
        .expect("dead-letter");
    assert_eq!(all_dead_letters(&store).await.len(), 53);

    // At most 10 per hook: tenant B keeps its newest 10, tenant A all 3.
    let deleted = store.trim_dead_letters(3_600_000, 10).await.expect("trim");
    assert_eq!(deleted, 40);
    let left = all_dead_letters(&store).await;
    let of = |uid: &str| left.iter().filter(|l| l.text(field::UID) == uid).count();
    assert_eq!((of("tenant-a"), of("tenant-b")), (3, 10));
    let kept_b: Vec<String> = left
        .iter()
        .filter(|l| l.text(field::UID) == "tenant-b")
        .map(|l| l.text(field::EVENT_ID))
        .collect();
    assert_eq!(kept_b.first().map(String::as_str), Some("b40"));

    // By age (Redis's clock, that of the stream ids): everything older than
    // the bound goes, and replayed letters leave the index too (nothing
    // left to trim twice).
    let letter = left
        .iter()
        .find(|l| l.text(field::UID) == "tenant-a")
        .expect("a dead letter")
        .clone();
    store.replay(&letter, 5_000).await.expect("replay");
    let newest = left.last().expect("a dead letter").id.clone();
    let newest_ms: i64 = newest
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .expect("a stream id");
    wait_redis_past(newest_ms + 50).await;
    let deleted = store.trim_dead_letters(50, 1).await.expect("trim");
    assert_eq!(deleted, 12);
    assert!(all_dead_letters(&store).await.is_empty());
}

#[tokio::test]
async fn a_run_of_failures_starts_at_its_first_failure_and_again_after_a_success_or_a_re_enable() {
    let store = store("failing-since").await;
    assert_eq!(
        store.record_failure("u1", 1_000, Some(500), "HTTP 500").await.unwrap(),
        1
    );
    assert_eq!(store.record_failure("u1", 2_000, None, "refused").await.unwrap(), 2);
    let health = store.health("u1").await.unwrap();
    assert_eq!((health.consecutive_failures, health.first_failure_ms), (2, Some(1_000)));
    assert_eq!((health.last_failure_ms, health.last_status), (Some(2_000), None));

    // A success ends the run; the next failure starts another.
    let no_attempts = AttemptsBatch {
        records: &HashMap::new(),
        keep: 0,
    };
    assert_eq!(
        store
            .record_successes(&[("u1".into(), 3_000)], &no_attempts)
            .await
            .unwrap(),
        [2]
    );
    assert_eq!(store.health("u1").await.unwrap().first_failure_ms, None);
    store.record_failure("u1", 4_000, Some(503), "HTTP 503").await.unwrap();
    assert_eq!(store.health("u1").await.unwrap().first_failure_ms, Some(4_000));

    // A re-enable clears the record and restarts the turn-off clock; the count goes on.
    store.set_disable_record("u1", "{}").await.unwrap();
    store.clear_disable_record("u1").await.unwrap();
    let health = store.health("u1").await.unwrap();
    assert_eq!((health.disabled, health.first_failure_ms), (None, None));
    assert_eq!(
        store.record_failure("u1", 5_000, Some(503), "HTTP 503").await.unwrap(),
        2
    );
    assert_eq!(store.health("u1").await.unwrap().first_failure_ms, Some(5_000));
}

#[tokio::test]
async fn publishing_waits_for_a_missing_shard_count_then_refuses_naming_the_key() {
    use outbound_webhooks::{
        EventName,
        publish::{NewEvent, PublishError, PublishOptions, publish_with},
        store::shard::{shard_of, shard_prefix},
    };
    let prefix = redis_prefix("no-shard-count");
    let target = RedisTarget::new(RedisMode::Standalone, &redis_url(), None, None).expect("the test Redis URL");
    let mut conn = target.connect().await.expect("connecting");
    let event = NewEvent::new("acme", EventName::ConversationCreate, serde_json::json!({})).expect("an event");
    let short = PublishOptions {
        retry_timeout: std::time::Duration::from_millis(500),
        ..PublishOptions::default()
    };
    let refused = publish_with(&mut conn, &prefix, &event, &short).await.unwrap_err();
    assert!(matches!(refused, PublishError::NoShardCount { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("{prefix}shards")) && message.contains("the dispatchers write it"),
        "{message}"
    );

    // Written meanwhile (as a recovering dispatcher does): published on
    // the org's shard of 2.
    let key = format!("{prefix}shards");
    let writer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut conn = target.connect().await.expect("connecting");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(2)
            .query_async(&mut conn)
            .await
            .expect("SET");
    };
    let default = PublishOptions::default();
    let (published, ()) = tokio::join!(publish_with(&mut conn, &prefix, &event, &default), writer);
    published.expect("published once the count is back");
    let stream = format!("{}events", shard_prefix(&prefix, shard_of("acme", 2)).unwrap());
    let length: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(length, 1);
}

#[tokio::test]
async fn an_entry_moved_from_a_dead_letter_is_appended_once_however_often_replay_runs() {
    let store = store("moved-once").await;
    let entry = HashMap::from([
        ("org".to_string(), b"acme".to_vec()),
        ("id".to_string(), b"e1".to_vec()),
    ]);
    let first = store.append_moved(1, "5-0", &entry).await.expect("appending");
    assert!(first.is_some());
    // A replay run again after stopping before it deleted the dead letter.
    let again = store.append_moved(1, "5-0", &entry).await.expect("appending");
    assert_eq!(again, None);
    // Another shard's dead letter of the same id is another entry.
    let other = store.append_moved(2, "5-0", &entry).await.expect("appending");
    assert!(other.is_some());
    let client = redis::Client::open(redis_url()).expect("URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connection");
    let length: i64 = redis::cmd("XLEN")
        .arg(store.keys().events())
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(length, 2);
}

#[tokio::test]
async fn publishing_to_a_redis_that_is_gone_fails_at_the_retry_timeout_naming_the_error() {
    use outbound_webhooks::{
        EventName,
        publish::{NewEvent, PublishError, PublishOptions, Publisher},
    };
    let mut redis = RedisServer::start(&[]);
    let prefix = redis_prefix("redis-gone");
    let target = RedisTarget::new(RedisMode::Standalone, &redis.url(), None, None).expect("the test Redis URL");
    let mut conn = target.connect_without_resends().await.expect("connecting");
    let () = redis::cmd("SET")
        .arg(format!("{prefix}shards"))
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let options = PublishOptions {
        retry_timeout: std::time::Duration::from_millis(1500),
        ..PublishOptions::default()
    };
    let mut publisher = Publisher::with_options(conn, &prefix, options)
        .await
        .expect("a publisher");
    let event = NewEvent::new("acme", EventName::ConversationCreate, serde_json::json!({})).expect("an event");
    let published = publisher.publish(&event).await.expect("published while Redis is up");
    assert_eq!((published.attempts, published.possibly_duplicated), (1, false));

    redis.stop();
    let started = std::time::Instant::now();
    let failed = publisher.publish(&event).await.unwrap_err();
    let took = started.elapsed();
    let message = failed.to_string();
    eprintln!("after {took:?}: {message}");
    assert!(
        matches!(failed, PublishError::Redis { attempts, .. } if attempts > 1),
        "{failed:?}"
    );
    assert!(
        message.contains(&format!("to {prefix}events")) && message.contains("--retry-timeout"),
        "{message}"
    );
    assert!(
        took >= std::time::Duration::from_millis(1400) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
}

/// A task of hook `uid` in `org` with a body of `body_bytes`.
fn sized_task(org: &str, uid: &str, event_id: &str, body_bytes: usize) -> NewTask {
    let mut t = task(uid, event_id, 0);
    t.delivery.org = org.to_string();
    t.delivery.hook = format!("{org}/{uid}");
    t.delivery.body = bytes::Bytes::from(vec![b'x'; body_bytes]);
    t
}

/// What `org-bytes` says `org` holds.
async fn org_bytes(store: &Store, org: &str) -> i64 {
    redis::cmd("HGET")
        .arg(store.keys().org_bytes())
        .arg(org)
        .query_async::<Option<i64>>(&mut connection().await)
        .await
        .expect("HGET")
        .unwrap_or(0)
}

/// The bytes `org` really holds, counted from what is stored: its task
/// hashes (their fields, the size field aside) and its dead letters (their
/// fields); each dead letter's indexed size must be its real size.
async fn counted_bytes(store: &Store, org: &str) -> i64 {
    let mut conn = connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}task:*",
            store.keys().prefix().replace('{', "\\{").replace('}', "\\}")
        ))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut total = 0i64;
    for key in keys {
        let map: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("HGETALL");
        if map.get(field::ORG).map(Vec::as_slice) != Some(org.as_bytes()) {
            continue;
        }
        total += map
            .iter()
            .filter(|(k, _)| k.as_str() != field::BYTES)
            .map(|(k, v)| (k.len() + v.len()) as i64)
            .sum::<i64>();
    }
    let indexed: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(store.keys().dead_letters_by_id())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    let letters = all_dead_letters(store).await;
    for member in indexed {
        let parts: Vec<String> = member
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if parts[2] != org {
            continue;
        }
        let (ms, seq) = parts[0].split_once('-').expect("a padded id");
        let id = format!("{}-{}", ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap());
        let letter = letters
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("indexed dead letter {id} is gone"));
        let real: i64 = letter.fields.iter().map(|(k, v)| (k.len() + v.len()) as i64).sum();
        assert_eq!(
            parts[1].parse::<i64>().unwrap(),
            real,
            "dead letter {id}'s indexed size"
        );
        total += real;
    }
    total
}

async fn assert_count_right(store: &Store, org: &str, what: &str) {
    assert_eq!(
        org_bytes(store, org).await,
        counted_bytes(store, org).await,
        "after {what}"
    );
}

#[tokio::test]
async fn an_orgs_bytes_follow_every_path_that_stores_or_deletes_a_task_or_a_dead_letter() {
    let store = store("org-bytes").await;
    let tasks: Vec<NewTask> = (0..6)
        .map(|i| sized_task("acme", "hook-a", &format!("e{i}"), 1000))
        .collect();
    let other = sized_task("other", "hook-o", "o1", 500);
    store.store_tasks_and_ack(&[], &tasks, 500).await.expect("storing");
    store
        .store_tasks_and_ack(&[], std::slice::from_ref(&other), 500)
        .await
        .expect("storing");
    assert!(org_bytes(&store, "acme").await > 6000);
    assert_count_right(&store, "acme", "storing").await;
    assert_count_right(&store, "other", "storing").await;

    let loaded = load(&store, "hook-a", "e0").await.expect("the task");
    store.finish(&loaded).await.expect("finish");
    store.finish(&loaded).await.expect("finish again");
    assert_count_right(&store, "acme", "finish (twice)").await;

    let members: Vec<String> = tasks[1..5].iter().map(NewTask::member).collect();
    let moved = store
        .dead_letter_tasks("hook-a", &members, Claim::Any, "failed", 2_000)
        .await
        .expect("dead-letter");
    assert_eq!(moved, 4);
    assert_count_right(&store, "acme", "dead-lettering").await;

    let letters = all_dead_letters(&store).await;
    assert_eq!(
        store.replay(&letters[0], 9_000).await.expect("replay"),
        Replayed::Stored
    );
    assert_count_right(&store, "acme", "a replay").await;

    // Per-hook retention: at most 2 kept.
    let deleted = store.trim_dead_letters(3_600_000, 2).await.expect("trim");
    assert_eq!(deleted, 1);
    assert_count_right(&store, "acme", "the per-hook count trim").await;

    // Age: everything older than 1 ms.
    wait_redis_past(redis_now().await + 5).await;
    let deleted = store.trim_dead_letters(1, 10).await.expect("trim");
    assert_eq!(deleted, 2);
    assert!(all_dead_letters(&store).await.is_empty());
    assert_count_right(&store, "acme", "the age trim").await;

    for member in ["hook-a:e1", "hook-a:e5"] {
        let loaded = store.load_task(member).await.expect("HGETALL").expect("the task");
        store.finish(&loaded).await.expect("finish");
    }
    assert_eq!(org_bytes(&store, "acme").await, 0, "nothing held, nothing counted");
    assert_count_right(&store, "other", "the other org's paths").await;
    assert!(org_bytes(&store, "other").await > 500);
}

#[tokio::test]
async fn at_its_budget_an_org_loses_its_oldest_dead_letters_then_its_new_tasks_lose_their_bodies() {
    let budgets = OrgBudgets::new(5_000);
    let store = store("org-budget").await.with_budgets(budgets.clone());
    let first: Vec<NewTask> = (0..2)
        .map(|i| sized_task("acme", "hook-a", &format!("d{i}"), 1000))
        .collect();
    store.store_tasks_and_ack(&[], &first, 500).await.expect("storing");
    let members: Vec<String> = first.iter().map(NewTask::member).collect();
    store
        .dead_letter_tasks("hook-a", &members, Claim::Any, "failed", 2_000)
        .await
        .expect("dead-letter");
    let letters = all_dead_letters(&store).await;
    assert_eq!(letters.len(), 2);

    // Four live tasks of ~1.15 KB need room: the oldest dead letters go,
    // oldest first, and leave their hook's dead-index.
    let live: Vec<NewTask> = (0..4)
        .map(|i| sized_task("acme", "hook-a", &format!("t{i}"), 1000))
        .collect();
    let routed = store.store_tasks_and_ack(&[], &live, 500).await.expect("storing");
    assert!(routed.refused.is_empty(), "{routed:?}");
    assert_eq!(routed.evicted.len(), 2, "{routed:?}");
    assert_eq!(routed.evicted[0].uid, "hook-a");
    assert!(all_dead_letters(&store).await.is_empty());
    let indexed: i64 = redis::cmd("ZCARD")
        .arg(store.keys().dead_index("hook-a"))
        .query_async(&mut connection().await)
        .await
        .expect("ZCARD");
    assert_eq!(indexed, 0, "evicted dead letters left their hook's index");
    assert_count_right(&store, "acme", "eviction").await;

    // Live tasks alone fill it: the next is dead-lettered without its body.
    let refused = sized_task("acme", "hook-a", "over", 2000);
    let routed = store
        .store_tasks_and_ack(&[], std::slice::from_ref(&refused), 500)
        .await
        .expect("storing");
    assert_eq!(routed.refused.len(), 1, "{routed:?}");
    assert!(routed.refused[0].dead_lettered);
    assert!(load(&store, "hook-a", "over").await.is_none());
    let letters = all_dead_letters(&store).await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].text(field::REASON).starts_with(ORG_OVER_BUDGET),
        "{:?}",
        letters[0]
    );
    assert!(!letters[0].fields.contains_key(field::BODY), "the body was kept");
    assert_eq!(letters[0].text(field::EVENT_ID), "over");
    assert!(org_bytes(&store, "acme").await <= 5_000);
    assert_count_right(&store, "acme", "a refusal").await;

    // Another org is not touched.
    let theirs = sized_task("other", "hook-o", "o1", 4000);
    let routed = store
        .store_tasks_and_ack(&[], std::slice::from_ref(&theirs), 500)
        .await
        .expect("storing");
    assert!(routed.refused.is_empty() && routed.evicted.is_empty(), "{routed:?}");

    // Not even the body-less dead letter fits (a Namespace lowered the
    // budget below the live tasks): dropped, and said so.
    budgets.set("acme", Some(100));
    let routed = store
        .store_tasks_and_ack(&[], &[sized_task("acme", "hook-a", "dropped", 10)], 500)
        .await
        .expect("storing");
    // (The one dead letter of acme went first to make room.)
    assert_eq!(routed.evicted.len(), 1);
    assert_eq!(routed.refused.len(), 1);
    assert!(!routed.refused[0].dead_lettered, "{routed:?}");
    assert!(
        all_dead_letters(&store)
            .await
            .iter()
            .all(|l| l.text(field::ORG) != "acme")
    );
    assert_count_right(&store, "acme", "a drop").await;
}
