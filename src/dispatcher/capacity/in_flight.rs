//! One attempt in flight, from its first attempt or a claimed task alike:
//! it holds its hook's lane permit and counts in the in-flight gauge;
//! dropping it gives the permit back, then wakes the claimers waiting for
//! room. One guard, so both paths count and free the same way.

use crate::dispatcher::{capacity::lanes::LanePermit, context::Shared};

/// An attempt holding its hook's lane permit (the in-flight slot itself is
/// handed to [`super::slots::Slots::run`], which may swap it for a slow one).
pub struct InFlight<'a> {
    shared: &'a Shared,
    lane: Option<LanePermit>,
}

impl<'a> InFlight<'a> {
    /// Counts an attempt starting on `lane`.
    pub fn start(shared: &'a Shared, lane: LanePermit) -> Self {
        shared.metrics.in_flight.inc();
        InFlight {
            shared,
            lane: Some(lane),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.metrics.in_flight.dec();
        // The permit goes back before the claimers look for room.
        drop(self.lane.take());
        self.shared.claimers.slot_freed();
    }
}
