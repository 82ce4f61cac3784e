//! Per-hook concurrency on this replica: one lane (a semaphore) per hook,
//! shared by first attempts straight from the stream and by claimed tasks,
//! plus what tells a slow hook from a busy fast one.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dispatcher::clock::now_ms;

/// A saturated lane whose attempts take longer than this on average is slow.
const SLOW_ATTEMPT_MS: i64 = 50;
/// A saturated lane that released nothing for this long is slow (before its
/// first attempts have finished and given it an average).
const STALLED_MS: i64 = 100;
/// A hook whose attempts take longer than this on average, or that has
/// attempts in flight and released none for this long, is suspect: its
/// attempts take slots of the slow share. Well above what receivers across
/// the internet take (50-500 ms), so a fleet of them uses every slot, and
/// well below the timeouts of receivers that hang.
const SUSPECT_MS: i64 = 1_000;

/// One hook's lane.
#[derive(Debug)]
pub struct Lane {
    permits: Arc<Semaphore>,
    capacity: usize,
    /// Moving average of attempt durations, in ms (-1 before the first).
    average_ms: AtomicI64,
    /// When an attempt last finished (or the lane was made), Unix ms.
    last_release_ms: AtomicI64,
}

/// An attempt's hold on its lane; finishing it records the duration.
#[derive(Debug)]
pub struct LanePermit {
    lane: Arc<Lane>,
    started_ms: i64,
    _permit: OwnedSemaphorePermit,
}

impl LanePermit {
    /// Whether this permit's hook is judged slow ([`Lane::is_suspect`]),
    /// not counting this permit's own attempt.
    pub fn hook_is_slow(&self, now_ms: i64) -> bool {
        self.lane.suspect(now_ms, 1)
    }
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        let now = now_ms();
        let took = (now - self.started_ms).max(0);
        let avg = self.lane.average_ms.load(Ordering::Relaxed);
        // One slow answer weighs a fifth: enough to mark a hook that hangs
        // at once, without a single blip marking a fast one.
        let next = if avg < 0 { took } else { (avg * 4 + took) / 5 };
        self.lane.average_ms.store(next, Ordering::Relaxed);
        self.lane.last_release_ms.store(now, Ordering::Relaxed);
    }
}

impl Lane {
    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> LanePermit {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("lane semaphores are never closed");
        LanePermit {
            lane: self.clone(),
            started_ms: now_ms(),
            _permit: permit,
        }
    }

    /// A free slot now, if there is one (no waiting, no timer).
    pub fn try_acquire(self: &Arc<Self>) -> Option<LanePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(LanePermit {
            lane: self.clone(),
            started_ms: now_ms(),
            _permit: permit,
        })
    }

    /// Free slots now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Whether the hook is judged slow, so its attempts take slots of the
    /// slow share: its attempts take longer than [`SUSPECT_MS`] on
    /// average, or it has attempts in flight and none finished for that
    /// long (a hanging receiver, before any answer).
    pub fn is_suspect(&self, now_ms: i64) -> bool {
        self.suspect(now_ms, 0)
    }

    /// [`Lane::is_suspect`], not counting `own` attempts in flight (the
    /// caller's own slot says nothing about the receiver).
    fn suspect(&self, now_ms: i64, own: usize) -> bool {
        let in_flight = self.capacity.saturating_sub(self.available());
        self.average_ms.load(Ordering::Relaxed) > SUSPECT_MS
            || (in_flight > own && now_ms - self.last_release_ms.load(Ordering::Relaxed) > SUSPECT_MS)
    }

    /// Whether new work for this hook would wait on a slow receiver: every
    /// slot is busy and its attempts are slow (or nothing finished lately).
    pub fn is_slow(&self, now_ms: i64) -> bool {
        self.available() == 0
            && (self.average_ms.load(Ordering::Relaxed) > SLOW_ATTEMPT_MS
                || now_ms - self.last_release_ms.load(Ordering::Relaxed) > STALLED_MS)
    }
}

/// All lanes of this replica.
#[derive(Debug)]
pub struct Lanes {
    per_hook: usize,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

impl Lanes {
    /// Lanes of `per_hook` slots each.
    pub fn new(per_hook: usize) -> Self {
        Lanes {
            per_hook: per_hook.max(1),
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// The lane of hook `uid`, made on first use.
    pub fn lane(&self, uid: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(lane) = lanes.get(uid) {
            return lane.clone();
        }
        let lane = Arc::new(Lane {
            permits: Arc::new(Semaphore::new(self.per_hook)),
            capacity: self.per_hook,
            average_ms: AtomicI64::new(-1),
            last_release_ms: AtomicI64::new(now_ms()),
        });
        lanes.insert(uid.to_string(), lane.clone());
        lane
    }

    /// Free slots of the lanes that have fewer than all free (the others
    /// have the default, `per_hook`); a lane judged slow gets at most
    /// `slow_available` (the free slots of the slow share).
    pub fn capacities(&self, now_ms: i64, slow_available: usize) -> HashMap<String, usize> {
        let lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .iter()
            .filter(|(_, lane)| lane.available() < self.per_hook || lane.is_suspect(now_ms))
            .map(|(uid, lane)| {
                let free = lane.available();
                let free = if lane.is_suspect(now_ms) {
                    free.min(slow_available)
                } else {
                    free
                };
                (uid.clone(), free)
            })
            .collect()
    }

    /// Forgets idle lanes (hooks deleted or quiet), keeping their averages
    /// only while they are in use.
    pub fn prune(&self) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1 || lane.available() < self.per_hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_saturated_lane_with_slow_attempts_is_slow_and_a_fast_one_is_not() {
        let lanes = Lanes::new(2);
        let lane = lanes.lane("a");
        let now = now_ms();
        assert!(!lane.is_slow(now));
        let p1 = lane.acquire().await;
        let p2 = lane.acquire().await;
        // Saturated but just made: not slow yet.
        assert!(!lane.is_slow(now));
        // Nothing released for longer than STALLED_MS: slow.
        assert!(lane.is_slow(now + STALLED_MS + 1));
        drop(p1);
        assert_eq!(lanes.capacities(now_ms(), 8).get("a"), Some(&1));
        let p1 = lane.acquire().await;
        // Fast attempts and a recent release: not slow.
        assert!(!lane.is_slow(now_ms()));
        lane.average_ms.store(5_000, Ordering::Relaxed);
        assert!(lane.is_slow(now_ms()));
        drop((p1, p2));
        assert!(!lane.is_slow(now_ms()));
        // Still judged slow (its average): the claimer gives it no more
        // than the slow share's free slots.
        assert!(lane.is_suspect(now_ms()));
        assert_eq!(lanes.capacities(now_ms(), 1).get("a"), Some(&1));
        drop(lane);
        lanes.prune();
        assert!(lanes.lanes.lock().unwrap().is_empty());
    }
}
