//! Entries read from the stream and not yet acknowledged ("held"), with
//! when each was read or last renewed: they bound how far the consumer
//! reads ahead, and the acker renews the old ones so no other replica
//! reclaims them while their first attempts run.

use std::{
    collections::HashMap,
    sync::{Mutex, atomic::Ordering},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::clock::now_ms;
use crate::store::RawEntry;

/// The held entries of this replica.
#[derive(Debug, Default)]
pub struct HeldEntries {
    /// (Shard, entry id) -> (Unix ms it was read or last renewed, its size).
    held: Mutex<HashMap<(usize, String), (i64, usize)>>,
    /// The sizes of the held entries, summed.
    bytes: std::sync::atomic::AtomicUsize,
    released: Notify,
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

    /// Waits until fewer than `limit` entries and fewer than `limit_bytes`
    /// bytes are held, or `shutdown`.
    pub async fn wait_for_room(&self, limit: usize, limit_bytes: usize, shutdown: &CancellationToken) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if (self.count() < limit && self.bytes() < limit_bytes) || shutdown.is_cancelled() {
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
