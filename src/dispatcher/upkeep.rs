//! Upkeep every `--maintenance-interval`: trims the events stream and the
//! dead letters, removes idle consumers, and sets the queue-size gauges.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::context::{Shared, ms, now_ms, pause};

/// Runs until `shutdown`.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut last_consumer_sweep = now_ms();
    while pause(&shutdown, shared.config.maintenance_interval).await {
        let s = &shared.store;
        match s.trim_events().await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "trimmed the events stream"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "trimming the events stream"),
        }
        match s
            .trim_dead_letters(
                now_ms(),
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
        if now_ms() - last_consumer_sweep > ms(shared.config.idle_consumer_timeout).min(60_000) {
            last_consumer_sweep = now_ms();
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
            Ok(sizes) => {
                shared.metrics.stream_length.set(sizes.stream_length);
                shared.metrics.stream_pending.set(sizes.pending);
                shared.metrics.stream_lag.set(sizes.lag);
                shared.metrics.tasks_scheduled.set(sizes.tasks_scheduled);
                shared.metrics.dead_letter_length.set(sizes.dead_letters);
            }
            Err(e) => tracing::debug!(error = %e, "reading queue sizes"),
        }
    }
}
