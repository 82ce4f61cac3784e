//! Batches what every delivery would otherwise pay a Redis round trip for:
//! acknowledging settled stream entries (with the tasks they still need),
//! recording successful requests in the hooks' health, and the attempts
//! log (in the same pipeline as the successes).
//!
//! Entries are held (read, not acknowledged) while their first attempts
//! run; the held set bounds how far the consumer reads ahead, and held
//! entries are re-claimed for this consumer before another replica would
//! take them as abandoned.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    accounting::account_routed, acks::AckItem, clock::now_ms, context::Shared, health::requests::Urgency,
};
use crate::store::shard::shard_of;
use crate::store::{AttemptsBatch, NewTask, Routed};

/// Most items flushed in one round trip.
const MAX_BATCH: usize = 512;
/// A batch smaller than this waits [`GATHER`] for more before it is
/// flushed: at a steady few thousand deliveries a second, items otherwise
/// trickle in one or two per flush, and each flush costs a script, a
/// pipeline and their round trips. Held entries wait that much longer for
/// their acknowledgement; no delivery waits for it.
const GATHER_BELOW: usize = 64;
/// How long a small batch waits for more (the timer's granularity is 1 ms).
const GATHER: Duration = Duration::from_millis(1);

/// Runs until `stop` and then flushes what is queued.
pub async fn run(shared: Arc<Shared>, mut items: mpsc::UnboundedReceiver<AckItem>, stop: CancellationToken) {
    let touch_every = (shared.config.reclaim_idle / 4).max(Duration::from_millis(100));
    let mut touch = tokio::time::interval(touch_every);
    touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            item = items.recv() => item,
            _ = touch.tick() => {
                for shard in 0..shared.shards.all().len() {
                    touch_held(&shared, shard, touch_every).await;
                }
                continue;
            }
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        take_queued(&mut items, &mut batch);
        if batch.len() < GATHER_BELOW && !stop.is_cancelled() {
            tokio::time::sleep(GATHER).await;
            take_queued(&mut items, &mut batch);
        }
        flush(&shared, batch, &stop).await;
    }
    let mut rest = Vec::new();
    while let Ok(item) = items.try_recv() {
        rest.push(item);
    }
    if !rest.is_empty() {
        flush(&shared, rest, &CancellationToken::new()).await;
    }
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH`].
fn take_queued(items: &mut mpsc::UnboundedReceiver<AckItem>, batch: &mut Vec<AckItem>) {
    while batch.len() < MAX_BATCH {
        match items.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// What one flush writes to one shard.
#[derive(Default)]
struct ShardBatch {
    ids: Vec<String>,
    tasks: Vec<NewTask>,
    /// UID -> (the hook's `namespace/name`, its latest success).
    successes: HashMap<String, (String, i64)>,
    /// UID -> its attempt records, oldest first.
    attempts: HashMap<String, Vec<String>>,
}

async fn flush(shared: &Shared, batch: Vec<AckItem>, stop: &CancellationToken) {
    let mut shards: BTreeMap<usize, ShardBatch> = BTreeMap::new();
    let count = shared.shards.all().len();
    for item in batch {
        match item {
            AckItem::Entry { shard, id, tasks } => {
                let b = shards.entry(shard).or_default();
                b.ids.push(id);
                b.tasks.extend(tasks);
            }
            AckItem::Success { org, uid, hook, at_ms } => {
                let b = shards.entry(shard_of(&org, count)).or_default();
                let e = b.successes.entry(uid).or_insert((hook, at_ms));
                e.1 = e.1.max(at_ms);
            }
            AckItem::Attempt { org, uid, record } => {
                let b = shards.entry(shard_of(&org, count)).or_default();
                b.attempts.entry(uid).or_default().push(record.encode());
            }
        }
    }
    for (shard, batch) in shards {
        flush_shard(shared, shard, batch, stop).await;
    }
}

async fn flush_shard(shared: &Shared, shard: usize, batch: ShardBatch, stop: &CancellationToken) {
    let ShardBatch {
        ids,
        tasks,
        successes,
        attempts: attempt_records,
    } = batch;
    let store = shared.shards.get(shard);
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0;
    let mut routed = Routed::default();
    while !ids.is_empty() || !tasks.is_empty() {
        // (`created_ms`: this replica's clock; only task ages use it.)
        match store.store_tasks_and_ack(&ids, &tasks, now_ms()).await {
            Ok(done) => {
                routed = done;
                break;
            }
            Err(e) => {
                attempts += 1;
                // While stopping, give up after a few tries: the entries stay
                // pending and are read again (here after a restart, or by
                // another replica), so nothing is lost.
                if stop.is_cancelled() && attempts >= 3 {
                    tracing::warn!(error = %e, entries = ids.len(), "acknowledging entries while stopping; leaving them pending");
                    break;
                }
                tracing::warn!(error = %e, entries = ids.len(), "acknowledging entries; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    account_routed(shared, store, &tasks, &routed).await;
    let unstored = routed.duplicates.len() + routed.refused.len();
    if tasks.len() > unstored {
        shared
            .metrics
            .first_deliveries
            .get_or_create(&vec![("path", "stored".to_string())])
            .inc_by((tasks.len() - unstored) as u64);
        shared.claimers.wake(shard);
    }
    shared.held.release(shard, &ids);

    if successes.is_empty() && attempt_records.is_empty() {
        return;
    }
    let list: Vec<(String, i64)> = successes.iter().map(|(uid, (_, at))| (uid.clone(), *at)).collect();
    let log = AttemptsBatch {
        records: &attempt_records,
        keep: shared.config.attempts_log_size,
    };
    match store.record_successes(&list, &log).await {
        Ok(previous) => {
            for ((uid, _), failures_before) in list.iter().zip(previous) {
                let hook = successes[uid].0.clone();
                // A success after failures changes what status shows: at once.
                shared.mirror.request(
                    uid,
                    &hook,
                    if failures_before > 0 {
                        Urgency::Transition
                    } else {
                        Urgency::Routine
                    },
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "recording successful deliveries and the attempts log"),
    }
}

/// Re-claims entries held longer than `older_than` for this consumer, so
/// their idle time stays below `--reclaim-idle` while a slow first attempt
/// runs and no other replica takes them as abandoned.
async fn touch_held(shared: &Shared, shard: usize, older_than: Duration) {
    let now = now_ms();
    let ids = shared.held.since(shard, now - older_than.as_millis() as i64);
    if ids.is_empty() {
        return;
    }
    match shared
        .shards
        .get(shard)
        .touch_entries(&shared.config.consumer_name, &ids)
        .await
    {
        Ok(()) => shared.held.mark_touched(shard, &ids, now),
        Err(e) => tracing::warn!(error = %e, "renewing held stream entries"),
    }
}
