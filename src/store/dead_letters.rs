//! Reading the dead-letter stream page by page, replaying a dead letter as
//! a fresh task, and moving an entry dead-lettered on a wrong shard to its
//! org's shard.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use redis::{AsyncCommands, Script};

use super::{
    Context, Replayed, Store, StoreError,
    stream::{MALFORMED, dead_index_member, entry_fields},
    task::DeadLetter,
};

static APPEND_MOVED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/append_moved.lua")));

/// How long the marker of a moved dead letter is kept: a replay that
/// stopped between appending the entry and deleting its dead letter,
/// run again within this time, does not append it twice.
pub const MOVED_MARKER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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

    /// Appends `entry`, dead-lettered as `letter_id` on shard `from_shard`,
    /// to this shard's events stream, unless an earlier replay did
    /// (`append_moved.lua`); returns the new entry id, `None` when it was
    /// appended already.
    pub async fn append_moved(
        &self,
        from_shard: usize,
        letter_id: &str,
        entry: &HashMap<String, Vec<u8>>,
    ) -> Result<Option<String>, StoreError> {
        let mut inv = APPEND_MOVED.key(self.keys.events());
        inv.key(self.keys.moved(from_shard, letter_id))
            .arg(MOVED_MARKER_TTL.as_secs());
        for (name, value) in entry {
            inv.arg(name).arg(value);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.context(|| {
            format!(
                "appending dead letter {letter_id} of shard {from_shard} to {}",
                self.keys.events()
            )
        })
    }

    /// Deletes the dead letter of a stream entry (not of a delivery) and
    /// its retention index entry.
    pub async fn remove_entry_letter(&self, letter_id: &str) -> Result<(), StoreError> {
        let (member, _) = dead_index_member(letter_id);
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .xdel(self.keys.dead_letter(), &[letter_id])
            .ignore()
            .zrem(self.keys.dead_index(MALFORMED), member)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("deleting dead letter {letter_id}"))?;
        Ok(())
    }
}
