//! What the loops hand the acker ([`super::acker`]): settled entries,
//! successes and attempt records. Its own file so that the shared context
//! can hold the channel without importing the acker's loop, which reads
//! the context.

use crate::{dispatcher::attempt::attempts_log::AttemptRecord, store::NewTask};

/// Work for the acker.
#[derive(Debug)]
pub enum AckItem {
    /// An entry whose deliveries are settled: store `tasks` (deliveries not
    /// attempted yet) and acknowledge it.
    Entry {
        /// The shard whose stream holds it.
        shard: usize,
        /// The stream entry id.
        id: String,
        /// Tasks still to store.
        tasks: Vec<NewTask>,
    },
    /// A request to a hook succeeded.
    Success {
        /// The hook's org (namespace), which says its shard.
        org: String,
        /// The hook's UID.
        uid: String,
        /// The hook's `namespace/name`.
        hook: String,
        /// Unix ms of the success.
        at_ms: i64,
    },
    /// An attempt for the attempts log.
    Attempt {
        /// The hook's org (namespace), which says its shard.
        org: String,
        /// The hook's UID.
        uid: String,
        /// What happened.
        record: AttemptRecord,
    },
}
