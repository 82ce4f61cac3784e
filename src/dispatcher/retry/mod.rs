//! Stage 6: deliveries stored as tasks (retries, deliveries not attempted
//! at once, waiting tasks) come back here.
//!
//! - [`claimer`]: leases due tasks within the slots, lanes and [`bodies`]
//!   (the bytes of retried bodies held) and runs one attempt each;
//! - [`waker`]: wakes the tasks waiting for a hook when it or its Secrets
//!   change; [`wake`] wakes the claimers themselves.

pub(crate) mod bodies;
pub(crate) mod claimer;
pub(crate) mod wake;
pub(crate) mod waker;
