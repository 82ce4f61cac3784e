//! First attempts straight from the stream.
//!
//! Storing a task per delivery before its first attempt costs Redis several
//! writes and round trips for every event, though most first attempts
//! succeed. Instead, the entry itself stays pending in the consumer group
//! (durable, and read again if this replica dies) while its first attempts
//! run; it is acknowledged, in a batch, once every matching hook either
//! succeeded or has its task stored: a failed attempt stores the task as
//! claimed by that attempt and settles it like any claimed task; a delivery
//! not attempted (slow hook, secret not cached, stopping) is stored as a due
//! task. The guarantee is the contract's (docs/src/contract.md#guarantees):
//! no event is acknowledged before each matching hook got it or holds a
//! durable task for it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::dispatcher::{
    accounting::account_routed,
    acks::AckItem,
    attempt::{outbound::Outcome, send::send_signed},
    capacity::in_flight::InFlight,
    capacity::lanes::{Lane, LanePermit},
    clock::{ms, now_ms},
    context::Shared,
    intake::held::Parked,
    settle::{self, Settlement},
    view::cached_objects::{CachedHook, CachedSecret},
};
use crate::store::{NewTask, Task};

/// A first attempt waits this long at most for a free slot of its hook;
/// then the delivery is stored as a task, so the entry is not held longer.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How often a first attempt waiting for a slot checks whether its hook
/// turned out slow.
const RECHECK: Duration = Duration::from_millis(50);

/// One stream entry whose deliveries are being settled.
#[derive(Debug)]
pub struct PendingEntry {
    shard: usize,
    id: String,
    open: AtomicUsize,
    tasks: Mutex<Vec<NewTask>>,
    /// A task could not be stored: leave the entry pending, to be read again.
    unsettled: AtomicBool,
}

impl PendingEntry {
    /// An entry with `open` deliveries (plus one the caller settles after
    /// launching them, so it cannot settle while still being routed).
    pub fn new(shard: usize, id: &str, open: usize) -> Arc<Self> {
        Arc::new(PendingEntry {
            shard,
            id: id.to_string(),
            open: AtomicUsize::new(open + 1),
            tasks: Mutex::new(Vec::new()),
            unsettled: AtomicBool::new(false),
        })
    }

    /// Notes a delivery to store as a due task.
    pub fn store_later(&self, task: NewTask) {
        self.tasks.lock().expect("pending entry lock").push(task);
    }

    /// One delivery of the entry is closed (delivered, or its task stored);
    /// the last one hands the entry to the acker.
    pub fn close_one(&self, shared: &Shared) {
        if self.open.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if self.unsettled.load(Ordering::Acquire) {
            shared.held.release(self.shard, std::slice::from_ref(&self.id));
            return;
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("pending entry lock"));
        let _ = shared.acks.send(AckItem::Entry {
            shard: self.shard,
            id: self.id.clone(),
            tasks,
        });
    }
}

/// Runs the first attempt of `task` (to `hook`, on `lane`) for `entry`;
/// `parked` counts it as parked until it has a slot of its lane.
pub async fn run(
    shared: Arc<Shared>,
    parked: Parked,
    entry: Arc<PendingEntry>,
    hook: Arc<CachedHook>,
    task: Task,
    signing: Arc<CachedSecret>,
    lane: Arc<Lane>,
) {
    // Parked (intake/held.rs) until it has a slot of the hook's lane
    // ([`wait_for_slot`] says how long it waits).
    let slot = match lane.try_acquire() {
        // The common case: a free slot, without arming the recheck timer.
        Some(permit) => Some(permit),
        None => wait_for_slot(&shared, &lane).await,
    };
    drop(parked);
    let Some(lane) = slot else {
        entry.store_later(task.to_new(0));
        entry.close_one(&shared);
        return;
    };
    // An in-flight slot, never waited for longer than SLOT_WAIT: general
    // slots free up within DEMOTE_AFTER however many hooks hang.
    let slot = shared
        .slots
        .acquire_within(lane.hook_is_slow(now_ms()), SLOT_WAIT)
        .await;
    let Some(slot) = slot else {
        entry.store_later(task.to_new(0));
        entry.close_one(&shared);
        return;
    };
    let in_flight = InFlight::start(&shared, lane);
    shared.metrics.first_direct.inc();
    let started_ms = now_ms();
    let (attempt, done_ms) = shared
        .slots
        .run(slot, send_signed(&shared, &hook, &task, &signing, 1))
        .await;
    if attempt.outcome == Outcome::Delivered {
        shared.metrics.events_delivered.inc();
        let _ = shared.acks.send(AckItem::Success {
            org: task.org.clone(),
            uid: task.uid.clone(),
            hook: task.hook.clone(),
            at_ms: done_ms,
        });
    } else {
        // Store the task as claimed by this attempt (due when a lease taken
        // now would end, by Redis's clock), then settle it like any claimed
        // task.
        let lease_ms = ms(shared.config.task_lease);
        let stored = task.to_new(lease_ms);
        let store = shared.store_for(&task.org);
        match store
            .store_tasks_and_ack(&[], std::slice::from_ref(&stored), started_ms)
            .await
        {
            // Its hook stored a task for the event id from another entry
            // while this attempt ran (that task delivers it), or its org's
            // budget had no room for it (dead-lettered or dropped, counted).
            Ok(routed) if !routed.duplicates.is_empty() || !routed.refused.is_empty() => {
                account_routed(&shared, store, std::slice::from_ref(&stored), &routed).await;
            }
            Ok(routed) => {
                let claimed = routed.now_ms + lease_ms;
                let settlement = Settlement {
                    hook: &hook,
                    task: &task,
                    claimed,
                    attempt,
                    attempt_number: 1,
                    first_attempt_ms: started_ms,
                    done_ms,
                };
                if let Err(e) = settle::settle(&shared, settlement).await {
                    tracing::warn!(task = %task.member, error = %e, "attempt bookkeeping failed; the task will be retried after its lease");
                }
            }
            Err(e) => {
                tracing::warn!(task = %task.member, error = %e, "storing a failed first attempt; the entry stays pending and is read again");
                entry.unsettled.store(true, Ordering::Release);
            }
        }
    }
    drop(in_flight);
    entry.close_one(&shared);
}

/// Waits for a slot of `lane`, but not behind a hook found slow meanwhile
/// (its slots may stay busy for its whole timeout), and not longer than
/// SLOT_WAIT in any case: `None` then, and the delivery is stored instead.
async fn wait_for_slot(shared: &Shared, lane: &Arc<Lane>) -> Option<LanePermit> {
    let acquire = lane.acquire();
    tokio::pin!(acquire);
    let give_up = tokio::time::Instant::now() + SLOT_WAIT;
    // The first check after RECHECK: a timer that is due at once still
    // costs a turn of the timer driver (up to 1 ms) before it fires.
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    loop {
        tokio::select! {
            permit = &mut acquire => break Some(permit),
            _ = recheck.tick() => {
                if lane.is_slow(now_ms()) || tokio::time::Instant::now() >= give_up {
                    break None;
                }
            }
            _ = shared.shutdown.cancelled() => break None,
        }
    }
}
