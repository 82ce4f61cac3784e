//! Upkeep every `--maintenance-interval`: writes the shard count again if
//! Redis lost it, trims the events stream and the dead letters, removes
//! idle consumers, and sets the queue-size gauges.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    clock::{ms, now_ms, pause},
    context::Shared,
};
use crate::store::{Shards, Sizes, Store};

/// Runs until `shutdown`.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut last_consumer_sweep = now_ms();
    while pause(&shutdown, shared.config.maintenance_interval).await {
        let sweep_consumers = now_ms() - last_consumer_sweep > ms(shared.config.idle_consumer_timeout).min(60_000);
        if sweep_consumers {
            last_consumer_sweep = now_ms();
        }
        keep_shard_count(&shared.shards).await;
        let mut total = Sizes::default();
        let mut sized = true;
        for (shard, store) in shared.shards.all().iter().enumerate() {
            export_memory(&shared, shard, store).await;
            match upkeep_shard(&shared, store, sweep_consumers).await {
                Some(sizes) => total.add(&sizes),
                None => sized = false,
            }
        }
        if sized {
            shared.metrics.stream_length.set(total.stream_length);
            shared.metrics.stream_pending.set(total.pending);
            shared.metrics.stream_lag.set(total.lag);
            shared.metrics.tasks_scheduled.set(total.tasks_scheduled);
            shared.metrics.dead_letter_length.set(total.dead_letters);
        }
    }
}

/// Writes the shard count again when Redis lost it (a flush, a restart
/// without persistence): producers refuse to pick a shard without it.
pub(super) async fn keep_shard_count(shards: &Shards) {
    match shards.agree_on_count().await {
        Ok(true) => tracing::warn!(
            count = shards.all().len(),
            "Redis had lost the shard count (a flush, or a restart without persistence); wrote it again"
        ),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "checking the shard count"),
    }
}

/// Sets the shard's memory gauges (left as they were when Redis does not
/// answer).
async fn export_memory(shared: &Shared, shard: usize, store: &Store) {
    match store.memory().await {
        Ok(memory) => {
            let labels = vec![("shard", shard.to_string())];
            let m = &shared.metrics;
            m.redis_stored_bytes.get_or_create(&labels).set(memory.stored_bytes);
            m.redis_used_memory.get_or_create(&labels).set(memory.used_memory);
            m.redis_maxmemory.get_or_create(&labels).set(memory.maxmemory);
        }
        Err(e) => tracing::debug!(error = %e, shard, "reading Redis memory"),
    }
}

/// One shard's upkeep; its queue sizes, `None` when they could not be read.
async fn upkeep_shard(shared: &Shared, s: &Store, sweep_consumers: bool) -> Option<Sizes> {
    match s.trim_events().await {
        Ok(n) if n > 0 => tracing::debug!(removed = n, "trimmed the events stream"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "trimming the events stream"),
    }
    match s
        .trim_dead_letters(
            ms(shared.config.dead_letter_max_age),
            shared.config.dead_letter_max_count,
        )
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            shared.metrics.dead_letters_trimmed.inc_by(n as u64);
            tracing::info!(
                deleted = n,
                max_age = ?shared.config.dead_letter_max_age,
                max_per_hook = shared.config.dead_letter_max_count,
                "retention deleted dead letters"
            );
        }
        Err(e) => tracing::warn!(error = %e, "trimming dead letters"),
    }
    if sweep_consumers {
        match s
            .remove_idle_consumers(
                &shared.config.consumer_name,
                shared.config.idle_consumer_timeout.as_millis() as u64,
            )
            .await
        {
            Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed idle consumers"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "removing idle consumers"),
        }
    }
    match s.sizes().await {
        Ok(sizes) => Some(sizes),
        Err(e) => {
            tracing::debug!(error = %e, "reading queue sizes");
            None
        }
    }
}
