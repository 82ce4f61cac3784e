//! What follows an attempt of a stored task: finish it, reschedule it,
//! dead-letter it, or turn its hook off.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::Rng;

use crate::dispatcher::{
    acks::AckItem,
    attempt::outbound::{Attempt, Outcome},
    clock::{ms, now_ms},
    context::Shared,
    health::requests::Urgency,
    metrics::EventOutcome,
    view::cached_objects::CachedHook,
};
use crate::store::{Claim, Rescheduled, StoreError, Task};
use crate::{
    contract::resource::{DisableReason, DisableRecord},
    contract::retry_schedule::next_delay,
};

/// One finished attempt of a claimed task.
pub struct Settlement<'a> {
    /// The hook it went to.
    pub hook: &'a CachedHook,
    /// The task.
    pub task: &'a Task,
    /// The lease end this replica claimed the task until (Redis's clock).
    pub claimed: i64,
    /// How the attempt went.
    pub attempt: Attempt,
    /// Its number (1 for the first).
    pub attempt_number: u32,
    /// Unix ms of the event's first attempt.
    pub first_attempt_ms: i64,
    /// Unix ms the attempt ended.
    pub done_ms: i64,
}

/// What follows an attempt of a stored task: finish, reschedule,
/// dead-letter or turn the hook off.
pub async fn settle(shared: &Shared, settlement: Settlement<'_>) -> Result<(), StoreError> {
    let Settlement {
        hook,
        task,
        claimed,
        attempt,
        attempt_number,
        first_attempt_ms,
        done_ms,
    } = settlement;
    let store = shared.store_for(&task.org);
    let hook_name = task.hook.clone();
    match attempt.outcome {
        Outcome::Delivered => {
            store.finish(task).await?;
            shared.metrics.events_delivered.inc();
            let _ = shared.acks.send(AckItem::Success {
                org: task.org.clone(),
                uid: task.uid.clone(),
                hook: hook_name,
                at_ms: done_ms,
            });
        }
        Outcome::Gone => {
            store
                .record_failure(&task.uid, done_ms, attempt.status, &attempt.message)
                .await?;
            turn_off(
                shared,
                hook,
                task,
                DisableReason::Revoked,
                &format!("the receiver answered {}: subscription revoked", attempt.message),
            )
            .await?;
        }
        Outcome::Failed => {
            let failures = store
                .record_failure(&task.uid, done_ms, attempt.status, &attempt.message)
                .await?;
            shared.mirror.request(
                &task.uid,
                &hook_name,
                if failures == 1 {
                    Urgency::Transition
                } else {
                    Urgency::Routine
                },
            );
            match shared.config.retry_schedule.delay_after(attempt_number) {
                Some(delay) => {
                    let unit: f64 = rand::rng().random();
                    let delay = next_delay(delay, unit, attempt.retry_after);
                    store
                        .reschedule(
                            task,
                            claimed,
                            Rescheduled {
                                due_in_ms: ms(delay),
                                attempts: attempt_number,
                                first_attempt_ms,
                                last_error: &attempt.message,
                                waiting: false,
                            },
                        )
                        .await?;
                }
                None => {
                    // Exhausted. Turn the hook off only when nothing succeeded
                    // since this event's first attempt: then the endpoint is
                    // down, not merely rejecting this payload.
                    let health = store.health(&task.uid).await?;
                    let succeeded_since = health.last_success_ms.is_some_and(|s| s >= first_attempt_ms);
                    if succeeded_since {
                        let reason = format!("failed all {attempt_number} attempts; last error: {}", attempt.message);
                        dead_letter(shared, task, claimed, "attempts_exhausted", &reason).await?;
                    } else {
                        let message = format!(
                            "event {} failed all {attempt_number} attempts and no request succeeded meanwhile; last error: {}",
                            task.event_id, attempt.message
                        );
                        turn_off(shared, hook, task, DisableReason::AutoDisabled, &message).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// How long a waiting task sleeps at most before its claimer looks again
/// (a change of its hook or Secrets wakes it sooner).
const WAIT_RECHECK_MS: i64 = 60_000;

/// A task whose hook cannot take it yet (conditions lag its spec, a Secret
/// missing, invalid or not cached yet): it waits, woken when the hook or
/// one of its Secrets changes; after the retry schedule's whole span it is
/// dead-lettered `NotReady`.
pub async fn wait(shared: &Shared, task: &Task, claimed: i64, now: i64, why: &str) -> Result<(), StoreError> {
    let give_up_at = task.created_ms + ms(shared.config.retry_schedule.total());
    if now >= give_up_at {
        let reason = format!("NotReady: {why} for the whole retry schedule");
        return dead_letter(shared, task, claimed, "not_ready", &reason).await;
    }
    shared
        .store_for(&task.org)
        .reschedule(
            task,
            claimed,
            Rescheduled {
                due_in_ms: (give_up_at - now).clamp(0, WAIT_RECHECK_MS),
                attempts: task.attempts,
                first_attempt_ms: task.first_attempt_ms,
                last_error: why,
                waiting: true,
            },
        )
        .await
        .map(|_| ())
}

/// Looks again at a task shortly (its hook may not be in this replica's
/// cache yet), without marking it waiting.
pub async fn retry_soon(shared: &Shared, task: &Task, claimed: i64, why: &str) -> Result<(), StoreError> {
    let next = Rescheduled {
        due_in_ms: 2_000,
        attempts: task.attempts,
        first_attempt_ms: task.first_attempt_ms,
        last_error: why,
        waiting: false,
    };
    shared
        .store_for(&task.org)
        .reschedule(task, claimed, next)
        .await
        .map(|_| ())
}

/// Dead-letters one claimed task with `reason` (`label`: the metrics'
/// reason).
pub async fn dead_letter(
    shared: &Shared,
    task: &Task,
    claimed: i64,
    label: &'static str,
    reason: &str,
) -> Result<(), StoreError> {
    let reason = cut(reason);
    let moved = shared
        .store_for(&task.org)
        .dead_letter_tasks(
            &task.uid,
            std::slice::from_ref(&task.member),
            Claim::Held(claimed),
            reason,
            now_ms(),
        )
        .await?;
    if moved > 0 {
        shared
            .metrics
            .dead_letters
            .get_or_create(&vec![("reason", "delivery".to_string())])
            .inc();
        shared.metrics.count_events(EventOutcome::DeadLettered(label), 1);
        let trace_id = crate::wire::trace_context::event_trace_id_hex(
            &task.event_id,
            task.trace.as_ref().map(|t| t.traceparent.as_str()),
        );
        tracing::warn!(hook = %task.hook, event = %task.event_id, %reason, %trace_id, "delivery dead-lettered");
    }
    Ok(())
}

/// Tasks dead-lettered per script call when a hook is turned off.
const TURN_OFF_SLICE: usize = 200;

/// Dead-letter reasons and the messages they quote are cut to this many
/// bytes: a huge field must not become a huge reason or log line.
pub const MAX_REASON_BYTES: usize = 1024;

/// `text` cut to [`MAX_REASON_BYTES`] (on a character boundary).
pub fn cut(text: &str) -> &str {
    if text.len() <= MAX_REASON_BYTES {
        return text;
    }
    let mut end = MAX_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes the disable record, dead-letters the hook's pending tasks and
/// mirrors status at once.
async fn turn_off(
    shared: &Shared,
    hook: &CachedHook,
    task: &Task,
    reason: DisableReason,
    message: &str,
) -> Result<(), StoreError> {
    let record = DisableRecord {
        reason,
        at: Time(jiff::Timestamp::now()),
        message: message.chars().take(1000).collect(),
        reenable_token: hook.reenable.as_deref().unwrap_or_default().to_string(),
        generation: hook.generation.unwrap_or_default(),
    };
    let json = serde_json::to_string(&record).expect("the disable record serializes");
    shared.store_for(&task.org).set_disable_record(&task.uid, &json).await?;
    shared
        .metrics
        .disabled_hooks
        .get_or_create(&vec![("reason", reason.as_str().to_string())])
        .inc();
    tracing::warn!(hook = %task.hook, reason = reason.as_str(), %message, "hook turned off");
    let mut members = shared.store_for(&task.org).hook_task_members(&task.uid).await?;
    if !members.contains(&task.member) {
        members.push(task.member.clone());
    }
    let dl_reason = format!("hook turned off ({}): {message}", reason.as_str());
    // In slices: a hook with a backlog of thousands of tasks must not make
    // one script that blocks Redis for seconds.
    let mut moved = 0;
    for slice in members.chunks(TURN_OFF_SLICE) {
        moved += shared
            .store_for(&task.org)
            .dead_letter_tasks(&task.uid, slice, Claim::Any, cut(&dl_reason), now_ms())
            .await?;
    }
    shared
        .metrics
        .dead_letters
        .get_or_create(&vec![("reason", "hook_turned_off".to_string())])
        .inc_by(moved.max(0) as u64);
    shared
        .metrics
        .count_events(EventOutcome::DeadLettered("turned_off"), moved.max(0) as u64);
    shared.mirror.request(&task.uid, &task.hook, Urgency::TurnOff);
    Ok(())
}
