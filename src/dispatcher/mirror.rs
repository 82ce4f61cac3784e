//! The status mirror: writes hooks' delivery health from Redis to
//! `status.delivery`, at most once per hook every
//! [`status::MIRROR_INTERVAL_MS`] and at once on a transition.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    context::{MirrorRequest, Shared, now_ms},
    status,
    store::StoreError,
};
use crate::resource::DisableRecord;

/// Runs until `shutdown`, then flushes what is left.
pub async fn run(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<MirrorRequest>,
    shutdown: CancellationToken,
) {
    // uid -> (namespace/name, urgent)
    let mut dirty: HashMap<String, (String, bool)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some(MirrorRequest { uid, hook, urgent }) => {
                    let e = dirty.entry(uid).or_insert((hook, false));
                    e.1 |= urgent;
                    if !urgent { continue; }
                }
                None => break,
            },
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let uids: Vec<String> = dirty.keys().cloned().collect();
        for uid in uids {
            let (hook_name, urgent) = dirty[&uid].clone();
            match mirror_one(&shared, &uid, &hook_name, urgent).await {
                Ok(true) => {
                    dirty.remove(&uid);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(hook = %hook_name, error = %e, "mirroring delivery status; will retry"),
            }
        }
    }
    // Flush what is left on shutdown (best effort).
    while let Ok(MirrorRequest { uid, hook, .. }) = requests.try_recv() {
        dirty.entry(uid).or_insert((hook, true));
    }
    for (uid, (hook_name, _)) in dirty {
        let _ = mirror_one(&shared, &uid, &hook_name, true).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing status.delivery: {0}")]
    Kube(#[from] kube::Error),
}

/// Mirrors one hook; false when it is not yet time (rate limit).
async fn mirror_one(shared: &Shared, uid: &str, hook_name: &str, urgent: bool) -> Result<bool, MirrorError> {
    let Some((ns, name)) = hook_name.split_once('/') else {
        return Ok(true);
    };
    let Some(hook) = shared.hooks.get(ns, name) else {
        return Ok(true);
    };
    if hook.uid() != Some(uid) {
        return Ok(true);
    }
    let store = shared.store_for(ns);
    let health = store.health(uid).await?;
    let now = now_ms();
    if !urgent && health.mirrored_ms.is_some_and(|m| now - m < status::MIRROR_INTERVAL_MS) {
        return Ok(false);
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
        store.set_mirrored(uid, now).await?;
    } else {
        tracing::info!(hook = %hook_name, %uid, "not mirroring delivery status: the hook of that name has another UID now");
    }
    Ok(true)
}
