//! The replica's in-flight slots, split so that slow hooks cannot starve
//! healthy ones: an attempt of a hook judged slow takes a slot of the
//! **slow share** (half of `--max-in-flight`); any other attempt takes a
//! **general** slot and gives it back once it has run for [`DEMOTE_AFTER`],
//! moving to the slow share (or, when that is full, on without a slot).
//! So general slots are held only by attempts younger than
//! [`DEMOTE_AFTER`], and a healthy hook's attempt waits at most about that
//! long for one, however many hooks hang.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an attempt holds a general slot before it counts as slow.
pub const DEMOTE_AFTER: Duration = Duration::from_millis(100);

/// The general slots and the slow share.
#[derive(Debug)]
pub struct Slots {
    general: Arc<Semaphore>,
    slow: Arc<Semaphore>,
    /// Attempts running on no slot (the slow share was full when they
    /// were demoted).
    overflow: Arc<AtomicUsize>,
    total: usize,
}

/// What one attempt holds.
#[derive(Debug)]
pub enum Slot {
    /// A general slot.
    General(OwnedSemaphorePermit),
    /// A slot of the slow share.
    Slow(OwnedSemaphorePermit),
    /// No slot: demoted while the slow share was full.
    Overflow(Arc<AtomicUsize>),
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Slot::Overflow(count) = self {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Slots {
    /// `max_in_flight` general slots, half of them (at least one) also the
    /// most a slow share may hold.
    pub fn new(max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Slots {
            general: Arc::new(Semaphore::new(max_in_flight)),
            slow: Arc::new(Semaphore::new((max_in_flight / 2).max(1))),
            overflow: Arc::new(AtomicUsize::new(0)),
            total: max_in_flight,
        }
    }

    /// Waits for a slot: of the slow share when `slow`, else a general one.
    pub async fn acquire(&self, slow: bool) -> Option<Slot> {
        if slow {
            self.slow.clone().acquire_owned().await.ok().map(Slot::Slow)
        } else {
            self.general.clone().acquire_owned().await.ok().map(Slot::General)
        }
    }

    /// A slot at once if one is free, else waits at most `wait` (no timer
    /// on the common path, where a slot is free).
    pub async fn acquire_within(&self, slow: bool, wait: Duration) -> Option<Slot> {
        let free = if slow {
            self.slow.clone().try_acquire_owned().map(Slot::Slow)
        } else {
            self.general.clone().try_acquire_owned().map(Slot::General)
        };
        match free {
            Ok(slot) => Some(slot),
            Err(_) => tokio::time::timeout(wait, self.acquire(slow)).await.ok().flatten(),
        }
    }

    /// Free general slots (what the claimer may take for healthy hooks).
    pub fn general_available(&self) -> usize {
        self.general.available_permits()
    }

    /// Free slots of the slow share.
    pub fn slow_available(&self) -> usize {
        self.slow.available_permits()
    }

    /// Runs `attempt` on `slot`; a general slot is given back after
    /// [`DEMOTE_AFTER`] for one of the slow share (or none). While more
    /// than half the general slots are free no demotion is armed (a timer
    /// per attempt costs CPU on the hot path); so at most half of them are
    /// ever held by attempts older than [`DEMOTE_AFTER`].
    pub async fn run<T>(&self, slot: Slot, attempt: impl Future<Output = T>) -> T {
        tokio::pin!(attempt);
        let plenty = self.general.available_permits() > self.total / 2;
        if !matches!(slot, Slot::General(_)) || plenty {
            let result = attempt.await;
            drop(slot);
            return result;
        }
        tokio::select! {
            result = &mut attempt => {
                drop(slot);
                return result;
            }
            _ = tokio::time::sleep(DEMOTE_AFTER) => {}
        }
        let demoted = match self.slow.clone().try_acquire_owned() {
            Ok(permit) => Slot::Slow(permit),
            Err(_) => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                Slot::Overflow(self.overflow.clone())
            }
        };
        drop(slot);
        let result = attempt.await;
        drop(demoted);
        result
    }

    /// Waits until no attempt holds a slot (shutdown), or `timeout`.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.total).unwrap_or(u32::MAX);
        let slow = u32::try_from((self.total / 2).max(1)).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, async {
            let _general = self.general.acquire_many(all).await;
            let _slow = self.slow.acquire_many(slow).await;
            while self.overflow.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_attempts_give_general_slots_back_once_half_are_taken_and_slow_ones_share_half() {
        let slots = Arc::new(Slots::new(4));
        assert_eq!((slots.general_available(), slots.slow_available()), (4, 2));
        // Four hanging attempts: the first starts while more than half the
        // slots are free (no demotion armed); the other three move to the
        // slow share after DEMOTE_AFTER (two fit, one runs on no slot).
        let mut hanging = Vec::new();
        for _ in 0..4 {
            let slot = slots
                .acquire_within(false, Duration::from_millis(10))
                .await
                .expect("a slot");
            let slots = slots.clone();
            hanging.push(tokio::spawn(async move {
                slots.run(slot, tokio::time::sleep(DEMOTE_AFTER * 5)).await
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(DEMOTE_AFTER * 2).await;
        assert_eq!(slots.general_available(), 3);
        assert_eq!(slots.slow_available(), 0);
        assert_eq!(slots.overflow.load(Ordering::Relaxed), 1);
        // A healthy attempt starts at once.
        let slot = slots
            .acquire_within(false, Duration::from_millis(10))
            .await
            .expect("a slot");
        assert_eq!(slots.run(slot, async { 7 }).await, 7);
        for h in hanging {
            h.await.expect("the attempt ran");
        }
        assert_eq!(slots.overflow.load(Ordering::Relaxed), 0);
        assert!(slots.drained(Duration::from_secs(1)).await);
    }
}
