//! The status mirror: writes hooks' delivery health from Redis to
//! `status.delivery`: at most one write per hook every
//! [`status::MIRROR_INTERVAL_MS`], the first transition of a quiet hook at
//! once, a turn-off always at once ([`Urgency`], [`write_due`]). A receiver
//! that flips between success and failure therefore costs one API write per
//! interval, whatever its request rate.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::contract::resource::DisableRecord;
use crate::dispatcher::{
    clock::now_ms,
    context::Shared,
    health::requests::{MirrorRequest, Urgency},
    health::status,
};
use crate::store::StoreError;

/// A hook waiting to be mirrored.
struct Pending {
    /// `namespace/name`.
    hook: String,
    urgency: Urgency,
    /// Not before this time (Unix ms): known from the hook's last write, so
    /// a hook inside its interval costs no Redis read per tick.
    not_before_ms: i64,
}

/// Runs until `shutdown`, then flushes what is left.
pub async fn run(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<MirrorRequest>,
    shutdown: CancellationToken,
) {
    // One entry per hook UID with figures to write: bounded by the hooks
    // this replica delivers to, drained as they are written.
    let mut dirty: HashMap<String, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some(MirrorRequest { uid, hook, urgency }) => {
                    let pending = dirty.entry(uid).or_insert(Pending { hook, urgency, not_before_ms: 0 });
                    pending.urgency = pending.urgency.max(urgency);
                    if urgency == Urgency::Routine { continue; }
                }
                None => break,
            },
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let now = now_ms();
        let uids: Vec<String> = dirty
            .iter()
            .filter(|(_, p)| p.urgency == Urgency::TurnOff || p.not_before_ms <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in uids {
            let Some(pending) = dirty.get(&uid) else { continue };
            match mirror_one(&shared, &uid, &pending.hook, pending.urgency).await {
                Ok(Mirrored::Written) => {
                    dirty.remove(&uid);
                }
                Ok(Mirrored::NotBefore(at)) => {
                    if let Some(pending) = dirty.get_mut(&uid) {
                        pending.not_before_ms = at;
                    }
                }
                Err(e) => tracing::warn!(hook = %pending.hook, error = %e, "mirroring delivery status; will retry"),
            }
        }
    }
    // Flush what is left on shutdown (best effort).
    while let Ok(MirrorRequest { uid, hook, .. }) = requests.try_recv() {
        dirty.entry(uid).or_insert(Pending {
            hook,
            urgency: Urgency::TurnOff,
            not_before_ms: 0,
        });
    }
    for (uid, pending) in dirty {
        let _ = mirror_one(&shared, &uid, &pending.hook, Urgency::TurnOff).await;
    }
}

/// Whether a hook whose status was last written at `mirrored_ms` may be
/// written at `now_ms` for `urgency`: `Ok` when it may, else the time it
/// may. Only a turn-off skips the interval; a transition of a quiet hook
/// goes at once because its last write is older than the interval.
pub fn write_due(urgency: Urgency, mirrored_ms: Option<i64>, now_ms: i64) -> Result<(), i64> {
    match mirrored_ms {
        Some(last) if urgency != Urgency::TurnOff && now_ms - last < status::MIRROR_INTERVAL_MS => {
            Err(last + status::MIRROR_INTERVAL_MS)
        }
        _ => Ok(()),
    }
}

/// What [`mirror_one`] did.
enum Mirrored {
    /// Written, or nothing to write (the hook is gone).
    Written,
    /// Not yet: the hook's interval ends at this time (Unix ms).
    NotBefore(i64),
}

#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing status.delivery: {0}")]
    Kube(#[from] kube::Error),
}

/// Mirrors one hook, unless its interval forbids it yet.
async fn mirror_one(shared: &Shared, uid: &str, hook_name: &str, urgency: Urgency) -> Result<Mirrored, MirrorError> {
    let Some((ns, name)) = hook_name.split_once('/') else {
        return Ok(Mirrored::Written);
    };
    let Some(hook) = shared.hooks.get(ns, name) else {
        return Ok(Mirrored::Written);
    };
    if hook.uid() != Some(uid) {
        return Ok(Mirrored::Written);
    }
    let store = shared.store_for(ns);
    let health = store.health(uid).await?;
    let now = now_ms();
    if let Err(at) = write_due(urgency, health.mirrored_ms, now) {
        return Ok(Mirrored::NotBefore(at));
    }
    let from_redis = health
        .disabled
        .as_deref()
        .and_then(|j| serde_json::from_str::<DisableRecord>(j).ok());
    let had_redis_record = from_redis.is_some();
    let record = status::effective_record(&hook, from_redis);
    let mut health = health;
    if had_redis_record && record.is_none() {
        // Re-enabled: the turn-off clock restarts at the next failure.
        store.clear_disable_record(uid).await?;
        health.first_failure_ms = None;
    }
    let delivery = status::delivery_status(&health, record, &shared.config.retry_schedule);
    if status::apply(&shared.kube, ns, name, uid, &delivery).await? {
        shared.metrics.status_writes.inc();
        store.set_mirrored(uid, now).await?;
    } else {
        tracing::info!(hook = %hook_name, %uid, "not mirroring delivery status: the hook of that name has another UID now");
    }
    Ok(Mirrored::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: i64 = status::MIRROR_INTERVAL_MS;

    #[test]
    fn a_quiet_hook_is_written_at_once_whatever_the_urgency() {
        for urgency in [Urgency::Routine, Urgency::Transition, Urgency::TurnOff] {
            assert_eq!(write_due(urgency, None, 1_000_000), Ok(()));
            assert_eq!(write_due(urgency, Some(1_000_000 - INTERVAL), 1_000_000), Ok(()));
        }
    }

    #[test]
    fn inside_the_interval_a_transition_waits_for_its_end_and_a_turn_off_does_not() {
        let last = 1_000_000;
        assert_eq!(write_due(Urgency::Routine, Some(last), last + 1), Err(last + INTERVAL));
        assert_eq!(
            write_due(Urgency::Transition, Some(last), last + 1),
            Err(last + INTERVAL)
        );
        assert_eq!(write_due(Urgency::TurnOff, Some(last), last + 1), Ok(()));
    }

    #[test]
    fn a_hook_flipping_every_100_ms_for_a_minute_costs_one_write_per_interval() {
        let mut mirrored = None;
        let mut writes = 0;
        for now in (0..60_000).step_by(100) {
            let urgency = Urgency::Transition;
            if write_due(urgency, mirrored, now).is_ok() {
                mirrored = Some(now);
                writes += 1;
            }
        }
        assert_eq!(writes, 60_000 / INTERVAL);
    }
}
