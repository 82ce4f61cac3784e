//! The Redis schema: every key, hash field and script the product uses,
//! behind one type, [`Store`] per stream shard ([`Shards`]), and the
//! connections to Redis in every mode ([`connection`]: one node, Sentinel,
//! Cluster; the Redis flags; retrying through a fail-over). The
//! dispatcher, `publish` and the commands all go through it; which shard
//! an org's events go to is [`shard`].
//!
//! Keys (all under the shard's prefix, built by [`Keys`]; the prefix's hash
//! tag keeps a shard's keys in one Cluster slot so the Lua scripts may touch
//! them together; shard k > 0 has `-k` inside the braces):
//! - `shards` (shard 0 only): the shard count the dispatchers use (written
//!   again by any dispatcher that finds it missing).
//! - `events`: the stream producers append to, read by the consumer group
//!   [`GROUP`].
//! - `dead-letter`: a stream of deliveries and entries given up on.
//! - `task:{hook uid}:{event id}`: one durable delivery task (a hash; field
//!   names in [`task::field`]).
//! - `due`: sorted set of task members by due time (Unix ms of Redis's own
//!   clock, `TIME`: the scripts compute and compare every due time and
//!   lease end, callers pass durations, so replicas with clocks apart never
//!   take each other's leased tasks). A claim moves the score to the end of
//!   the lease, so a claimer that dies simply lets the lease run out and the
//!   task comes due again; the score is also the claim's token, compared by
//!   every later call of that claimer.
//! - `due:{hook uid}`: the same, per hook, and `hooks-due`: each hook by its
//!   earliest due time. Claims walk `hooks-due` and skip a hook at its
//!   concurrency limit in one step, so a slow hook's backlog never hides
//!   other hooks' due tasks.
//! - `rate:{hook uid}` and `in-flight:{hook uid}`: a hook's limits across
//!   replicas (`spec.rateLimit`: the GCRA's theoretical arrival time;
//!   `spec.maxConcurrentRequests`: its claimed tasks by lease end), kept by
//!   `claim.lua` and expiring on their own (see [`limits`]).
//! - `hook-tasks:{hook uid}`: the members of one hook's tasks, to dead-letter
//!   them together when the hook is turned off.
//! - `health:{hook uid}`: consecutive failures, last success/failure, the
//!   disable record, when status was last mirrored.
//! - `moved:{shard}:{dead letter id}`: a marker, kept 7 days, that
//!   `dead-letter replay` appended that shard's dead letter of an entry on
//!   a wrong shard to this shard's stream (so it appends it once).
//! - `org-bytes`: each org's bytes on this shard (task hashes and dead
//!   letters), with `dead-letters-by-id` and `dead-letters-by-org` (each
//!   accounted dead letter's size, org and hook, by id and by org): the
//!   scripts keep them, so every path that stores or deletes a task or a
//!   dead letter keeps the count exact, and `route.lua` holds an org to
//!   its budget (`--org-max-stored-bytes`).
//! - `attempts:{hook uid}`: the hook's attempts log, a list of compact JSON
//!   records (`attempts_log::AttemptRecord`), newest first, capped at
//!   `--attempts-log-size` (LPUSH + LTRIM in the acker's batches).
//!
//! The scripts that change several of these at once are `.lua` files in
//! `scripts/`, called through the typed wrappers of [`scripts`].

mod attempts;
pub mod connection;
mod dead_letters;
mod health;
pub mod keys;
pub mod limits;
mod retention;
pub mod scripts;
pub mod shard;
mod shards;
mod stream;
pub mod task;

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::{
    dispatcher::org_budget::OrgBudgets,
    store::connection::{ConnectError, RedisConn, RedisTarget},
};

pub use self::{
    attempts::AttemptsBatch,
    dead_letters::{MOVED_MARKER_TTL, PAGE as DEAD_LETTER_PAGE},
    health::Health,
    keys::{Keys, task_member, uid_of_member},
    limits::HookLimit,
    retention::{Memory, Sizes},
    scripts::{Claim, Claimed, Duplicate, Evicted, Refused, Replayed, Rescheduled, Routed},
    shards::{NoShardCount, ShardCountError, Shards, WhenUnstored, parse_shard_count, stored_shard_count},
    stream::{MALFORMED_FIELD_CAP, RawEntry, WRONG_SHARD, entry_fields, read_reply_entries},
    task::{DeadLetter, Delivery, NewTask, Task},
};

/// The consumer group every dispatcher replica joins.
pub const GROUP: &str = "dispatchers";

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StoreError {
    what: String,
    #[source]
    source: redis::RedisError,
}

impl StoreError {
    /// Whether Redis lost the consumer group (e.g. after FLUSHALL).
    pub fn is_no_group(&self) -> bool {
        self.source.code() == Some("NOGROUP") || self.source.to_string().contains("NOGROUP")
    }
}

trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for redis::RedisResult<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError { what: what(), source })
    }
}

/// The dispatcher's Redis state of one shard, over reconnecting connections.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    // Blocking XREADGROUP gets its own connection: on a shared multiplexed
    // connection it would hold up every other command for the block time.
    blocking: RedisConn,
    keys: Keys,
    /// Each org's budget of bytes in Redis (unbounded unless set).
    budgets: OrgBudgets,
}

impl Store {
    /// The store of the shard whose keys are `keys`, over `conn` (shared by
    /// every shard) and `blocking` (this shard's own, for blocking reads).
    pub fn new(conn: RedisConn, blocking: RedisConn, keys: Keys) -> Store {
        Store {
            conn,
            blocking,
            keys,
            budgets: OrgBudgets::unbounded(),
        }
    }

    /// The same store, storing tasks within `budgets`.
    pub fn with_budgets(self, budgets: OrgBudgets) -> Store {
        Store { budgets, ..self }
    }

    /// Connects to a single shard under `prefix`: for the commands that
    /// read one shard's keys.
    pub async fn connect(target: &RedisTarget, prefix: &str) -> Result<Store, ConnectError> {
        let conn = target.connect().await?;
        Ok(Store::new(conn.clone(), conn, Keys::new(prefix)))
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads a task; `None` when it no longer exists.
    pub async fn load_task(&self, member: &str) -> Result<Option<Task>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn
            .hgetall(self.keys.task(member))
            .await
            .context(|| format!("reading task {member}"))?;
        Ok(Task::decode(member, map))
    }

    /// For each of `members`, whether its task is held and from which
    /// stream entry: `None` no task, `Some(None)` a task stored before
    /// tasks recorded their entry, `Some(Some(id))` a task from entry `id`.
    /// One round trip for a whole read batch.
    pub async fn held_tasks(&self, members: &[String]) -> Result<Vec<Option<Option<String>>>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for member in members {
            // UID is in every task hash: it tells a task from no task.
            pipe.cmd("HMGET")
                .arg(self.keys.task(member))
                .arg(task::field::UID)
                .arg(task::field::ENTRY_ID);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(Option<String>, Option<String>)> = pipe
            .query_async(&mut conn)
            .await
            .context(|| format!("looking up {} held task(s)", members.len()))?;
        Ok(replies
            .into_iter()
            .map(|(uid, entry_id)| uid.map(|_| entry_id))
            .collect())
    }

    /// Drops a member whose task hash is gone.
    pub async fn forget_member(&self, member: &str) -> Result<(), StoreError> {
        // A stale `hooks-due` entry left behind heals at the next claim.
        let uid = uid_of_member(member);
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .zrem(self.keys.due(), member)
            .ignore()
            .zrem(self.keys.hook_due(uid), member)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("removing task {member}"))?;
        Ok(())
    }

    /// Every pending task member of one hook.
    pub async fn hook_task_members(&self, uid: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.keys.hook_tasks(uid))
            .await
            .context(|| format!("listing tasks of hook {uid}"))
    }
}
