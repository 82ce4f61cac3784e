//! The bytes of retried bodies this replica holds at once
//! (`--max-retry-body-bytes`): a claimed task holds room for its body from
//! its claim until its attempt settles, also while the attempt waits for a
//! slow receiver after giving its in-flight slot up ([`super::slots`]).
//!
//! The claimer cannot see a body's size before claiming it, so each claim
//! counts as the largest body ([`LARGEST_BODY`]); once the task is loaded,
//! its room shrinks to its body's size. What does not fit stays due in
//! Redis, where the org's byte budget already bounds it. One hook holds at
//! most `--max-in-flight-per-hook` of the claims, so a hook of big bodies
//! leaves room for others.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stream_entry::MAX_ENTRY_BYTES;

/// The largest body a task may have: its entry's fields (at most
/// [`MAX_ENTRY_BYTES`]) in the envelope, plus under 1 KiB of the envelope's
/// own names, org and time.
pub const LARGEST_BODY: usize = MAX_ENTRY_BYTES + 1024;

/// The semaphore counts KiB (a permit count must fit a `u32`).
const UNIT: usize = 1024;

/// [`LARGEST_BODY`] in units.
const LARGEST_UNITS: usize = LARGEST_BODY.div_ceil(UNIT);

/// The smallest budget: one largest body.
pub const MIN_BYTES: usize = LARGEST_UNITS * UNIT;

/// The room for retried bodies.
#[derive(Clone, Debug)]
pub struct RetryBodies {
    room: Arc<Semaphore>,
}

impl RetryBodies {
    /// A budget of `bytes` (at least [`MIN_BYTES`]).
    pub fn new(bytes: usize) -> Self {
        RetryBodies {
            room: Arc::new(Semaphore::new((bytes / UNIT).max(LARGEST_UNITS))),
        }
    }

    /// Room for at most `max` claims at the largest size: a `shares`-th
    /// (rounded up) of what is free, so each shard's claimer gets some.
    /// `None` when not even one fits.
    pub fn reserve(&self, max: usize, shares: usize) -> Option<Reservation> {
        let fit = (self.room.available_permits() / LARGEST_UNITS).div_ceil(shares.max(1));
        let count = fit.min(max);
        if count == 0 {
            return None;
        }
        let units = u32::try_from(count * LARGEST_UNITS).ok()?;
        let permit = self.room.clone().try_acquire_many_owned(units).ok()?;
        Some(Reservation { permit })
    }

    /// Returns once one claim at the largest size fits.
    pub async fn wait_for_room(&self) {
        // Taken and given back at once: the claimer reserves what is free
        // in its next round. The semaphore is never closed.
        let _ = self.room.acquire_many(LARGEST_UNITS as u32).await;
    }

    /// Bytes free now (for the metrics and tests).
    pub fn available(&self) -> usize {
        self.room.available_permits() * UNIT
    }
}

/// Room reserved for one round of claims.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// How many claims it holds room for.
    pub fn count(&self) -> usize {
        self.permit.num_permits() / LARGEST_UNITS
    }

    /// The room of one claimed task; `None` when none is left.
    pub fn take(&mut self) -> Option<BodyRoom> {
        let permit = self.permit.split(LARGEST_UNITS)?;
        Some(BodyRoom { permit })
    }
}

/// The room one claimed task's body holds until dropped.
#[derive(Debug)]
pub struct BodyRoom {
    permit: OwnedSemaphorePermit,
}

impl BodyRoom {
    /// Shrinks the room to a body of `bytes`, giving the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT).max(1);
        if let Some(rest) = self.permit.num_permits().checked_sub(keep).filter(|n| *n > 0) {
            drop(self.permit.split(rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_count_as_the_largest_body_until_loaded() {
        let bodies = RetryBodies::new(4 * MIN_BYTES);
        let mut round = bodies.reserve(10, 1).expect("room");
        assert_eq!(round.count(), 4);
        assert!(bodies.reserve(10, 1).is_none(), "nothing left");
        let mut one = round.take().expect("a task's room");
        assert_eq!(round.count(), 3);
        drop(round);
        assert_eq!(bodies.available(), 3 * MIN_BYTES);
        one.shrink_to(2000);
        assert_eq!(bodies.available(), 4 * MIN_BYTES - 2 * UNIT);
        drop(one);
        assert_eq!(bodies.available(), 4 * MIN_BYTES);
    }

    #[test]
    fn each_shard_reserves_its_share_of_what_is_free() {
        let bodies = RetryBodies::new(10 * MIN_BYTES);
        assert_eq!(bodies.reserve(100, 4).expect("room").count(), 3);
        assert_eq!(bodies.reserve(2, 4).expect("room").count(), 2);
        // Below one largest body the budget still admits one claim.
        assert_eq!(RetryBodies::new(10).reserve(5, 1).expect("room").count(), 1);
    }
}
