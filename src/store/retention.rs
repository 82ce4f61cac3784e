//! Upkeep of what Redis holds: trimming the events stream below its oldest
//! unacknowledged entry, dead-letter retention, removing idle consumers,
//! and the queue sizes behind the gauges.

use std::sync::LazyLock;

use redis::AsyncCommands;

use super::{Context, GROUP, Store, StoreError};

/// Most dead letters one retention script call deletes.
pub const TRIM_BUDGET: usize = 1000;

/// What a shard holds against the memory of the Redis node that holds it,
/// for the gauges (docs/src/tenant-bounds.md#redis-bytes-per-org: an alert fires before Redis is
/// full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// The orgs' bytes on this shard, as the scripts count them (task
    /// bodies and fields, dead letters).
    pub stored_bytes: i64,
    /// Redis's `used_memory` on the node.
    pub used_memory: i64,
    /// Redis's `maxmemory` on the node (0: no limit).
    pub maxmemory: i64,
}

/// Reads `used_memory` and `maxmemory` from `INFO memory` output.
fn parse_info_memory(info: &str) -> (i64, i64) {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':')?.parse().ok())
            .unwrap_or(0)
    };
    (field("used_memory"), field("maxmemory"))
}

/// Hashed once per process, like the other scripts.
static MEMORY: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("scripts/memory.lua")));

/// Queue sizes, for the gauges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// Entries in the events stream.
    pub stream_length: i64,
    /// Entries read by the group and not acknowledged.
    pub pending: i64,
    /// Entries not yet read by the group.
    pub lag: i64,
    /// Tasks in `due` (waiting, retrying or leased).
    pub tasks_scheduled: i64,
    /// Entries in the dead-letter stream.
    pub dead_letters: i64,
}

impl Sizes {
    /// Adds another shard's sizes.
    pub fn add(&mut self, other: &Sizes) {
        self.stream_length += other.stream_length;
        self.pending += other.pending;
        self.lag += other.lag;
        self.tasks_scheduled += other.tasks_scheduled;
        self.dead_letters += other.dead_letters;
    }
}

impl Store {
    /// Trims the events stream below its oldest unacknowledged entry.
    /// Returns how many entries were removed.
    pub async fn trim_events(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let events = self.keys.events();
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = conn.xinfo_groups(&events).await;
        let Ok(groups) = groups else {
            return Ok(0); // no stream yet
        };
        let Some(group) = groups.groups.iter().find(|g| g.name == GROUP) else {
            return Ok(0);
        };
        if groups.groups.len() > 1 {
            // Another group (not ours) may still need older entries.
            return Ok(0);
        }
        let pending: redis::streams::StreamPendingReply = conn
            .xpending(&events, GROUP)
            .await
            .context(|| format!("reading pending entries of {events}"))?;
        let threshold = match pending {
            redis::streams::StreamPendingReply::Data(d) => d.start_id,
            _ => group.last_delivered_id.clone(),
        };
        if threshold == "0-0" {
            return Ok(0);
        }
        // In steps of at most TRIM_STEP entries (whole stream nodes), so
        // Redis frees a backlog's memory a little at a time between other
        // clients' commands instead of stalling them all at once; then one
        // exact trim of what is left in the first node.
        const TRIM_STEP: usize = 1000;
        let mut removed = 0;
        for _ in 0..100_000 {
            let n: i64 = redis::cmd("XTRIM")
                .arg(&events)
                .arg("MINID")
                .arg("~")
                .arg(&threshold)
                .arg("LIMIT")
                .arg(TRIM_STEP)
                .query_async(&mut conn)
                .await
                .context(|| format!("trimming {events} below {threshold}"))?;
            removed += n;
            if n == 0 {
                break;
            }
        }
        let n: i64 = redis::cmd("XTRIM")
            .arg(&events)
            .arg("MINID")
            .arg(&threshold)
            .query_async(&mut conn)
            .await
            .context(|| format!("trimming {events} below {threshold}"))?;
        Ok(removed + n)
    }

    /// Keeps dead letters younger than `max_age_ms` (by Redis's clock)
    /// and, **per hook**, at most `max_count_per_hook` (one tenant's flood
    /// never pushes out another's), deleting at most [`TRIM_BUDGET`] per
    /// script call.
    /// Returns how many were deleted.
    pub async fn trim_dead_letters(&self, max_age_ms: i64, max_count_per_hook: usize) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let mut deleted = 0;
        loop {
            let (accounted, n) = self.trim_letters_by_age(max_age_ms, TRIM_BUDGET).await?;
            deleted += n;
            if accounted < TRIM_BUDGET as i64 {
                break;
            }
        }
        let mut cursor = 0u64;
        loop {
            let (next, uids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(self.keys.dead_hooks())
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .context(|| format!("listing {}", self.keys.dead_hooks()))?;
            for uid in uids {
                loop {
                    let (removed, n) = self
                        .trim_hook_dead_letters(&uid, max_age_ms, max_count_per_hook, TRIM_BUDGET)
                        .await?;
                    deleted += n;
                    if removed < TRIM_BUDGET as i64 {
                        break;
                    }
                }
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Removes consumers other than `me` that hold nothing and were idle
    /// longer than `idle_ms`. Returns their names.
    pub async fn remove_idle_consumers(&self, me: &str, idle_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let events = self.keys.events();
        let reply: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
            conn.xinfo_consumers(&events, GROUP).await;
        let Ok(reply) = reply else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for c in reply.consumers {
            if c.name != me && c.pending == 0 && c.idle as u64 > idle_ms {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&events)
                    .arg(GROUP)
                    .arg(&c.name)
                    .query_async(&mut conn)
                    .await
                    .context(|| format!("removing idle consumer {}", c.name))?;
                removed.push(c.name);
            }
        }
        Ok(removed)
    }

    /// Queue sizes for the gauges.
    pub async fn sizes(&self) -> Result<Sizes, StoreError> {
        let mut conn = self.conn.clone();
        let (stream_length, tasks_scheduled, dead_letters): (i64, i64, i64) = redis::pipe()
            .xlen(self.keys.events())
            .zcard(self.keys.due())
            .xlen(self.keys.dead_letter())
            .query_async(&mut conn)
            .await
            .context(|| "reading queue sizes".to_string())?;
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
            conn.xinfo_groups(self.keys.events()).await;
        let group = groups.ok().and_then(|g| g.groups.into_iter().find(|g| g.name == GROUP));
        Ok(Sizes {
            stream_length,
            pending: group.as_ref().map(|g| g.pending as i64).unwrap_or(0),
            lag: group.and_then(|g| g.lag).map(|l| l as i64).unwrap_or(0),
            tasks_scheduled,
            dead_letters,
        })
    }

    /// This shard's stored bytes and its node's memory.
    pub async fn memory(&self) -> Result<Memory, StoreError> {
        let mut conn = self.conn.clone();
        let (stored, info): (String, String) = MEMORY
            .key(self.keys.org_bytes())
            .invoke_async(&mut conn)
            .await
            .context(|| "reading stored bytes and INFO memory".to_string())?;
        let (used_memory, maxmemory) = parse_info_memory(&info);
        Ok(Memory {
            stored_bytes: stored.parse().unwrap_or(0),
            used_memory,
            maxmemory,
        })
    }

    /// Redis's `maxmemory-policy`, when the server lets us read it.
    pub async fn maxmemory_policy(&self) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let pairs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .context(|| "reading maxmemory-policy".to_string())?;
        Ok(pairs.get(1).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_info_memory;

    #[test]
    fn info_memory_gives_used_memory_and_maxmemory_not_their_look_alikes() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:2000000\r\nmaxmemory:67108864\r\nmaxmemory_human:64.00M\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(parse_info_memory(info), (1_048_576, 67_108_864));
        assert_eq!(parse_info_memory(""), (0, 0));
    }
}
