//! Reading the dead-letter stream page by page, and replaying a dead
//! letter as a fresh task.

use redis::AsyncCommands;

use super::{Context, Replayed, Store, StoreError, stream::entry_fields, task::DeadLetter};

/// Dead letters read per round trip by [`Store::dead_letters_after`].
pub const PAGE: usize = 500;

impl Store {
    /// Up to `count` dead letters after stream id `after` (from the start
    /// when `None`), oldest first: callers page through a long stream
    /// instead of reading all of it in one reply.
    pub async fn dead_letters_after(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let start = after.map(|id| format!("({id}")).unwrap_or_else(|| "-".to_string());
        let key = self.keys.dead_letter();
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(&key, &start, "+", count)
            .await
            .context(|| format!("reading {key}"))?;
        Ok(reply
            .ids
            .iter()
            .map(|e| DeadLetter {
                id: e.id.clone(),
                fields: entry_fields(e),
            })
            .collect())
    }

    /// Puts a dead-lettered delivery back as a fresh task (due at once, its
    /// `created_ms` field `created_ms`) for the hook it names, removing the
    /// dead letter in the same step.
    pub async fn replay(&self, letter: &DeadLetter, created_ms: i64) -> Result<Replayed, StoreError> {
        let task = letter.to_new_task();
        self.replay_as(&letter.id, &task.uid, &task, created_ms).await
    }
}
