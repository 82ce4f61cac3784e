//! The stream shards a dispatcher serves, one [`Store`] each, and the shard
//! count kept in Redis so that every dispatcher and producer agrees on it.

use redis::{AsyncCommands, aio::ConnectionLike};

use super::{Context, Keys, Store, StoreError};
use crate::{
    store::connection::{ConnectError, RedisTarget},
    store::shard::{shard_of, shard_prefix},
};

/// Every shard's store.
#[derive(Clone)]
pub struct Shards {
    stores: Vec<Store>,
}

/// The shard count in Redis is not this dispatcher's.
#[derive(Debug, thiserror::Error)]
pub enum ShardCountError {
    /// Another count is stored.
    #[error(
        "Redis holds {stored} stream shard(s) under prefix {prefix:?} (key {key}), but this dispatcher was started with --shards {wanted}: start every dispatcher with --shards {stored}. To change the count, either drain (stop producers, wait until outbound_webhooks_stream_lag and outbound_webhooks_tasks_scheduled are 0, stop every dispatcher, DEL {key}, start them with the new count) or run the new count under a new --redis-prefix (docs/src/redis.md#changing-the-shard-count)"
    )]
    Mismatch {
        /// The count Redis holds.
        stored: usize,
        /// The count of `--shards`.
        wanted: usize,
        /// The prefix.
        prefix: String,
        /// The key holding the count.
        key: String,
    },
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Shards {
    /// Connects to every shard: one shared connection, and one connection
    /// per shard for its blocking reads.
    pub async fn connect(target: &RedisTarget, prefix: &str, count: usize) -> Result<Shards, ConnectError> {
        let conn = target.connect().await?;
        let mut stores = Vec::with_capacity(count);
        for k in 0..count.max(1) {
            let prefix = shard_prefix(prefix, k).map_err(|e| ConnectError::Config(e.to_string()))?;
            stores.push(Store::new(conn.clone(), target.connect().await?, Keys::new(&prefix)));
        }
        Ok(Shards { stores })
    }

    /// Connects to every shard the dispatchers use under `prefix` (the
    /// stored count), over one connection: for the commands, which never
    /// block on a read. `unstored` says what a missing count means.
    pub async fn connect_as_stored(
        target: &RedisTarget,
        prefix: &str,
        unstored: WhenUnstored,
    ) -> Result<Shards, ConnectError> {
        let mut conn = target.connect().await?;
        let stored = stored_shard_count(&mut conn, prefix)
            .await
            .map_err(|source| ConnectError::Redis {
                target: target.describe(),
                source,
            })?;
        let count = match (stored, unstored) {
            (Some(count), _) => count,
            (None, WhenUnstored::OneShard) => 1,
            (None, WhenUnstored::Refuse) => {
                return Err(ConnectError::Config(
                    NoShardCount {
                        key: Keys::new(prefix).shard_count(),
                    }
                    .to_string(),
                ));
            }
        };
        let mut stores = Vec::with_capacity(count);
        for k in 0..count {
            let prefix = shard_prefix(prefix, k).map_err(|e| ConnectError::Config(e.to_string()))?;
            stores.push(Store::new(conn.clone(), conn.clone(), Keys::new(&prefix)));
        }
        Ok(Shards { stores })
    }

    /// The same shards, storing tasks within `budgets`.
    pub fn with_budgets(self, budgets: &crate::dispatcher::org_budget::OrgBudgets) -> Shards {
        Shards {
            stores: self
                .stores
                .into_iter()
                .map(|s| s.with_budgets(budgets.clone()))
                .collect(),
        }
    }

    /// The store of `org`'s shard.
    pub fn for_org(&self, org: &str) -> &Store {
        &self.stores[shard_of(org, self.stores.len())]
    }

    /// Every shard's store, shard 0 first.
    pub fn all(&self) -> &[Store] {
        &self.stores
    }

    /// Shard `k`'s store.
    pub fn get(&self, k: usize) -> &Store {
        &self.stores[k]
    }

    /// Stores the shard count if Redis holds none (the first dispatcher, or
    /// Redis lost it in a flush or a restart without persistence); refuses
    /// another one. Returns whether this call wrote it.
    pub async fn agree_on_count(&self) -> Result<bool, ShardCountError> {
        let first = &self.stores[0];
        let key = first.keys.shard_count();
        let wanted = self.stores.len();
        let mut conn = first.conn.clone();
        let wrote: bool = redis::cmd("SET")
            .arg(&key)
            .arg(wanted)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|set| set.is_some())
            .context(|| format!("storing the shard count in {key}"))?;
        if wrote {
            return Ok(true);
        }
        let stored = stored_shard_count(&mut conn, first.keys.prefix())
            .await
            .context(|| format!("reading the shard count from {key}"))?;
        match stored {
            Some(stored) if stored != wanted => Err(ShardCountError::Mismatch {
                stored,
                wanted,
                prefix: first.keys.prefix().to_string(),
                key,
            }),
            _ => Ok(false),
        }
    }
}

/// What a command makes of a missing shard count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnstored {
    /// One shard: for reading (before any dispatcher ran there is only
    /// shard 0's keys to read).
    OneShard,
    /// Refuse with [`NoShardCount`]: for what writes to a shard.
    Refuse,
}

/// Redis holds no shard count, so no shard can be chosen for an org.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Redis holds no stream shard count at {key}: the dispatchers write it when they start, and again when they find it missing (after a Redis flush or a restart without persistence); start a dispatcher with this --redis-prefix, or check the prefix"
)]
pub struct NoShardCount {
    /// The key that should hold it.
    pub key: String,
}

/// The shard count the dispatchers stored under `prefix`; `None` when
/// Redis holds none (no dispatcher ran yet, or Redis lost it and no
/// dispatcher has written it again yet).
pub async fn stored_shard_count<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
) -> Result<Option<usize>, redis::RedisError> {
    let stored: Option<String> = conn.get(Keys::new(prefix).shard_count()).await?;
    Ok(parse_shard_count(stored.as_deref()))
}

/// The shard count in the stored text; `None` when missing (or not a count).
pub fn parse_shard_count(stored: Option<&str>) -> Option<usize> {
    stored.and_then(|s| s.trim().parse::<usize>().ok()).filter(|n| *n >= 1)
}
