//! What the dispatcher sees of the cluster: its caches of hooks and
//! labelled Secrets ([`cache`]), keeping of each object only what routing,
//! signing and status need ([`cached_objects`]), and the hooks' limits
//! by UID for the claimer ([`limits`]).

pub mod cache;
pub mod cached_objects;
pub mod limits;
