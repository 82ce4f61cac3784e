//! Stage 1-2 of an event: reading it from the stream and choosing its hooks.
//!
//! - [`consumer`]: reads the events stream in the consumer group (its own
//!   pending entries first, then new ones; reclaims a dead replica's),
//!   and hands each entry's deliveries to their first attempts;
//! - [`held`]: the entries read and not yet acknowledged, bounded in count
//!   and bytes;
//! - [`routing`]: which cached hooks an event goes to, and whether each can
//!   take it now.

pub(crate) mod consumer;
pub(crate) mod held;
pub mod routing;
