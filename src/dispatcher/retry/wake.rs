//! Waking each shard's claimer: when a slot frees up (only claimers whose
//! last round saw a backlog: at thousands of deliveries a second, waking
//! every claimer at every freed slot cost an empty claim round trip each)
//! and when a task is stored on its shard.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, futures::Notified};

/// The claimers' wake-ups, one per shard.
#[derive(Debug)]
pub struct ClaimerWake {
    wake: Vec<Notify>,
    /// Per shard: the claimer's last round saw due tasks (or no free slot).
    backlog: Vec<AtomicBool>,
}

impl ClaimerWake {
    /// Wake-ups for `shards` claimers, each assumed to have a backlog.
    pub fn new(shards: usize) -> Self {
        ClaimerWake {
            wake: (0..shards).map(|_| Notify::new()).collect(),
            backlog: (0..shards).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    /// A slot freed: wakes the claimers with a backlog.
    pub fn slot_freed(&self) {
        for (w, backlog) in self.wake.iter().zip(&self.backlog) {
            if backlog.load(Ordering::Relaxed) {
                w.notify_one();
            }
        }
    }

    /// Wakes one shard's claimer (a task stored there).
    pub fn wake(&self, shard: usize) {
        if let Some(w) = self.wake.get(shard) {
            w.notify_one();
        }
    }

    /// Resolves when `shard`'s claimer is woken.
    pub fn notified(&self, shard: usize) -> Notified<'_> {
        self.wake[shard].notified()
    }

    /// Notes whether `shard`'s claimer saw a backlog in its last round.
    pub fn set_backlog(&self, shard: usize, backlog: bool) {
        if let Some(b) = self.backlog.get(shard) {
            b.store(backlog, Ordering::Relaxed);
        }
    }
}
