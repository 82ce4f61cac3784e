//! Stage 7: each hook's delivery health, from Redis to its status.
//!
//! - [`mirror`]: writes it to `status.delivery`, paced per hook;
//! - [`status`]: the server-side apply of that subtree.

pub(crate) mod mirror;
pub mod status;
