//! Entries read from the stream and not yet acknowledged ("held"), with
//! when each was read or last renewed: they bound how far the consumer
//! reads ahead, and the acker renews the old ones so no other replica
//! reclaims them while their first attempts run. Also how many of their
//! first attempts are parked, waiting for a slot of their hook's lane.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::clock::now_ms;
use crate::store::RawEntry;

/// How much the consumer may hold before it reads on.
#[derive(Clone, Copy, Debug)]
pub struct HoldLimit {
    /// Entries.
    pub entries: usize,
    /// Bytes of entries.
    pub bytes: usize,
    /// First attempts parked for their hook's lane.
    pub parked: usize,
}

/// The held entries of this replica.
#[derive(Debug, Default)]
pub struct HeldEntries {
    /// (Shard, entry id) -> (Unix ms it was read or last renewed, its size).
    held: Mutex<HashMap<(usize, String), (i64, usize)>>,
    /// The sizes of the held entries, summed.
    bytes: std::sync::atomic::AtomicUsize,
    /// First attempts spawned and waiting to start or for a slot of their
    /// hook's lane (shared with their [`Parked`] guards).
    parked: Arc<AtomicUsize>,
    released: Arc<Notify>,
}

/// A first attempt's place among the parked ones, taken before its task
/// is spawned (a spawned task may not run before the consumer reads
/// again) and moved into it; dropping it leaves.
#[derive(Debug)]
pub struct Parked {
    parked: Arc<AtomicUsize>,
    released: Arc<Notify>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.parked.fetch_sub(1, Ordering::Relaxed);
        self.released.notify_waiters();
    }
}

impl HeldEntries {
    /// Holds the entries of `shard` not held yet; returns them.
    pub fn hold(&self, shard: usize, entries: Vec<RawEntry>) -> Vec<RawEntry> {
        let now = now_ms();
        let mut held = self.held.lock().expect("held entries lock");
        entries
            .into_iter()
            .filter(|e| {
                let key = (shard, e.id.clone());
                if held.contains_key(&key) {
                    return false;
                }
                let size = e.size();
                held.insert(key, (now, size));
                self.bytes.fetch_add(size, Ordering::Relaxed);
                true
            })
            .collect()
    }

    /// Forgets entries (acknowledged, or left pending to be read again).
    pub fn release(&self, shard: usize, ids: &[String]) {
        let mut held = self.held.lock().expect("held entries lock");
        for id in ids {
            if let Some((_, size)) = held.remove(&(shard, id.clone())) {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
            }
        }
        drop(held);
        self.released.notify_waiters();
    }

    /// How many entries are held.
    pub fn count(&self) -> usize {
        self.held.lock().expect("held entries lock").len()
    }

    /// Counts a first attempt as parked until the returned guard is dropped.
    pub fn park(&self) -> Parked {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked {
            parked: self.parked.clone(),
            released: self.released.clone(),
        }
    }

    /// How many first attempts wait to start or for their hook's lane.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// The sizes of the held entries, summed.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The held entries of `shard` read (or renewed) before `before_ms`.
    pub fn since(&self, shard: usize, before_ms: i64) -> Vec<String> {
        let held = self.held.lock().expect("held entries lock");
        held.iter()
            .filter(|((s, _), (at, _))| *s == shard && *at < before_ms)
            .map(|((_, id), _)| id.clone())
            .collect()
    }

    /// Notes that `ids` of `shard` were renewed at `now`.
    pub fn mark_touched(&self, shard: usize, ids: &[String], now: i64) {
        let mut held = self.held.lock().expect("held entries lock");
        for id in ids {
            if let Some((at, _)) = held.get_mut(&(shard, id.clone())) {
                *at = now;
            }
        }
    }

    /// Waits until fewer than `limit.entries` entries and `limit.bytes`
    /// bytes are held and fewer than `limit.parked` first attempts are
    /// parked, or `shutdown`.
    pub async fn wait_for_room(&self, limit: HoldLimit, shutdown: &CancellationToken) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let room = self.count() < limit.entries && self.bytes() < limit.bytes && self.parked() < limit.parked;
            if room || shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = released => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Waits until nothing is held, re-checking at least every 100 ms.
    pub async fn wait_until_empty(&self) {
        while self.count() > 0 {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.count() == 0 {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), released).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMIT: HoldLimit = HoldLimit {
        entries: 10,
        bytes: 1 << 20,
        parked: 2,
    };

    #[tokio::test]
    async fn the_consumer_reads_on_only_once_parked_first_attempts_start() {
        let held = HeldEntries::default();
        let shutdown = CancellationToken::new();
        let _first = held.park();
        let second = held.park();
        let waiting = tokio::time::timeout(Duration::from_millis(50), held.wait_for_room(LIMIT, &shutdown));
        assert!(waiting.await.is_err(), "two parked of two allowed: no room");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), held.wait_for_room(LIMIT, &shutdown))
            .await
            .expect("one parked of two: room");
        assert_eq!(held.parked(), 1);
    }
}
