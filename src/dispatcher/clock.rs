//! Time as the dispatcher reads it: this replica's wall clock in Unix ms
//! (for logs, records and ages; leases and due times use Redis's clock,
//! in the scripts), durations in ms, and sleeps that end at shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Now, in Unix ms.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A duration in whole ms.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Sleeps unless shutdown comes first; returns false on shutdown.
pub async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}
