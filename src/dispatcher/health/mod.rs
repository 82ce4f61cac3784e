//! Stage 7: each hook's delivery health, from Redis to its status.
//!
//! - [`mirror`]: writes it to `status.delivery`, paced per hook, as the
//!   loops ask ([`requests`]);
//! - [`status`]: the server-side apply of that subtree.

pub(crate) mod mirror;
pub(crate) mod requests;
pub mod status;
