//! The claimer: leases due tasks (retries, deliveries stored before a
//! first attempt, waiting tasks) within the replica's in-flight slots and
//! each hook's lane, and runs one attempt per task.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    attempt::headers::{header_secret_problem, signing_secret_of},
    attempt::send::send_signed,
    capacity::in_flight::InFlight,
    clock::{ms, now_ms, pause},
    context::Shared,
    intake::routing::{Deliverability, deliverability},
    retry::bodies::BodyRoom,
    settle::{self, Settlement},
    view::cached_objects::CachedHook,
};
use crate::store::{Store, StoreError, Task, uid_of_member};

/// Runs shard `shard`'s claims until `shutdown`.
pub async fn run(shared: Arc<Shared>, shard: usize, shutdown: CancellationToken) {
    let per_hook = shared.config.max_in_flight_per_hook;
    let store = shared.shards.get(shard).clone();
    let shards = shared.shards.all().len();
    // When the first hook held back by its rate limit gets its next token:
    // an idle claimer comes back then rather than after a whole poll
    // interval (which would cap a hook of burst 1 at one task per poll).
    let mut next_token: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        // Each shard's claimer takes its share of the free slots, so one
        // shard's backlog cannot take them all.
        let free = shared.slots.general_available().div_ceil(shards);
        if free == 0 {
            shared.claimers.set_backlog(shard, true);
            tokio::select! {
                _ = shared.claimers.notified(shard) => {}
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        // And only as many as their bodies fit in the room for retried
        // bodies, each counted at the largest size until loaded.
        let Some(mut room) = shared.retry_bodies.reserve(free, shards) else {
            shared.claimers.set_backlog(shard, true);
            tokio::select! {
                _ = shared.retry_bodies.wait_for_room() => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        };
        let capacities = shared.lanes.capacities(now_ms(), shared.slots.slow_available());
        let sent = Instant::now();
        let claimed = store
            .claim(
                ms(shared.config.task_lease),
                room.count(),
                per_hook,
                &capacities,
                |uid| shared.limits.get(uid),
            )
            .await;
        let (members, lease) = match claimed {
            Ok(claimed) => {
                shared.claimers.set_backlog(shard, claimed.backlog);
                shared
                    .metrics
                    .count_limit_waits(claimed.held_by_rate, claimed.held_by_concurrency);
                if let Some(in_ms) = claimed.next_token_in_ms {
                    let at = sent + Duration::from_millis(u64::try_from(in_ms).unwrap_or(0));
                    next_token = Some(next_token.filter(|t| *t > Instant::now() && *t < at).unwrap_or(at));
                }
                let lease = Lease {
                    score: claimed.lease_until,
                    lapses: sent + shared.config.task_lease,
                };
                (claimed.members, lease)
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming tasks; retrying");
                if !pause(&shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if members.is_empty() {
            let poll = Instant::now() + shared.config.poll_interval;
            let wake = next_token.filter(|t| *t < poll).unwrap_or(poll);
            tokio::select! {
                _ = shared.claimers.notified(shard) => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled() => break,
            }
            if next_token.is_some_and(|t| t <= Instant::now()) {
                next_token = None;
            }
            continue;
        }
        for member in members {
            let uid = uid_of_member(&member).to_string();
            let lane = shared.lanes.lane(&uid);
            // The claim returns at most `room.count()` members.
            let mut body = room.take();
            let shared = shared.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let lane = lane.acquire().await;
                let Some(slot) = shared.slots.acquire(lane.hook_is_slow(now_ms())).await else {
                    return;
                };
                let in_flight = InFlight::start(&shared, lane);
                if let Err(e) = shared
                    .slots
                    .run(slot, attempt_task(&shared, &store, &member, lease, body.as_mut()))
                    .await
                {
                    // The lease lapses and the task comes due again.
                    tracing::warn!(task = %member, error = %e, "attempt bookkeeping failed; the task will be retried after its lease");
                }
                drop(body);
                drop(in_flight);
            });
        }
        shared.lanes.prune();
    }
}

/// The cached hook a task is for: `Ok` with the hook of its UID, `Err`
/// with whether the name now belongs to another hook (a delete and
/// re-apply) when that UID is gone.
fn hook_of(shared: &Shared, task: &Task) -> Result<Arc<CachedHook>, bool> {
    let (ns, name) = task.hook.split_once('/').ok_or(false)?;
    let hook = shared.hooks.get(ns, name).ok_or(false)?;
    if hook.uid() == Some(task.uid.as_str()) {
        Ok(hook)
    } else {
        Err(true)
    }
}

/// A claim this replica holds on a task.
#[derive(Clone, Copy, Debug)]
struct Lease {
    /// The lease end by Redis's clock: the task's score while the claim
    /// holds, which every later call compares.
    score: i64,
    /// When the lease lapses by this replica's monotonic clock, counted
    /// from before the claim was sent: never later than Redis's lapse,
    /// whatever this replica's wall clock says (only durations are
    /// compared across the two clocks).
    lapses: Instant,
}

/// A lease outlasts its attempt's timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// A task younger than this whose hook this replica has not seen may be
/// for a hook created moments ago (another replica's cache saw it first).
const UNSEEN_HOOK_GRACE_MS: i64 = 10_000;

/// Runs one claimed task: deliver, reschedule, wait, dead-letter or turn
/// the hook off. `body` is the room its body holds until it settles.
async fn attempt_task(
    shared: &Shared,
    store: &Store,
    member: &str,
    lease: Lease,
    body: Option<&mut BodyRoom>,
) -> Result<(), StoreError> {
    let Some(task) = store.load_task(member).await? else {
        return store.forget_member(member).await;
    };
    if let Some(body) = body {
        body.shrink_to(task.body.len());
    }
    let claimed = lease.score;
    // Task ages (the grace below, a waiting task's give-up) compare this
    // replica's clock with the one that stored the task; leases never do.
    let now = now_ms();
    let hook = match hook_of(shared, &task) {
        Ok(hook) => hook,
        Err(renamed) if !renamed && now - task.created_ms < UNSEEN_HOOK_GRACE_MS => {
            return settle::retry_soon(shared, &task, claimed, "hook not in this replica's cache yet").await;
        }
        Err(_) => {
            let reason = format!(
                "HookDeleted: hook {} (uid {}) no longer exists; `dead-letter replay --hook {}` delivers it to a hook of that name",
                task.hook, task.uid, task.hook
            );
            return settle::dead_letter(shared, &task, claimed, "hook_deleted", &reason).await;
        }
    };
    let state = deliverability(&hook);
    if state.waits() {
        let why = match state {
            Deliverability::SecretNotReady => "its Secret is not ready (SecretReady=False)",
            _ => "its conditions do not carry its current generation yet",
        };
        return settle::wait(shared, &task, claimed, now, why).await;
    }
    if let Some(label) = state.drop_reason() {
        let reason = match state {
            Deliverability::TurnedOff => "hook is turned off (AutoDisabled or Revoked)",
            Deliverability::DisabledBySpec => "hook is disabled by spec.enabled=false",
            _ => "hook is not accepted for its current generation",
        };
        return settle::dead_letter(shared, &task, claimed, label, reason).await;
    }
    let Some(signing) = signing_secret_of(&shared.secrets, &hook) else {
        return settle::wait(shared, &task, claimed, now, "its signing Secret is not in the cache").await;
    };
    if let Some(why) = header_secret_problem(&shared.secrets, &hook) {
        return settle::wait(shared, &task, claimed, now, &why).await;
    }

    let timeout = Duration::from_secs(hook.spec.timeout_seconds.clamp(1, 30) as u64);
    // The lease must outlast the request, or another replica would retry meanwhile.
    let needed = timeout + LEASE_MARGIN;
    let claimed = if Instant::now() + needed > lease.lapses {
        match store.extend_lease(member, claimed, ms(needed)).await? {
            Some(score) => score,
            None => return Ok(()), // someone else holds it now
        }
    } else {
        claimed
    };

    let attempt_number = task.attempts + 1;
    let first_attempt_ms = if task.first_attempt_ms > 0 {
        task.first_attempt_ms
    } else {
        now
    };
    let (attempt, done_ms) = send_signed(shared, &hook, &task, &signing, attempt_number).await;
    settle::settle(
        shared,
        Settlement {
            hook: &hook,
            task: &task,
            claimed,
            attempt,
            attempt_number,
            first_attempt_ms,
            done_ms,
        },
    )
    .await
}
