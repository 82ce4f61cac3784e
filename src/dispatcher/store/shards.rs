//! The stream shards a dispatcher serves, one [`Store`] each, and the shard
//! count kept in Redis so that every dispatcher and producer agrees on it.

use redis::{AsyncCommands, aio::ConnectionLike};

use super::{Context, Keys, Store, StoreError};
use crate::{
    redis_conn::{ConnectError, RedisTarget},
    shard::{shard_of, shard_prefix},
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
        "Redis holds {stored} stream shard(s) under prefix {prefix:?} (key {key}), but this dispatcher was started with --shards {wanted}: start every dispatcher with --shards {stored}. To change the count, either drain (stop producers, wait until outbound_webhooks_stream_lag and outbound_webhooks_tasks_scheduled are 0, stop every dispatcher, DEL {key}, start them with the new count) or run the new count under a new --redis-prefix (README \"Changing the shard count\")"
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
    /// block on a read.
    pub async fn connect_as_stored(target: &RedisTarget, prefix: &str) -> Result<Shards, ConnectError> {
        let mut conn = target.connect().await?;
        let count = stored_shard_count(&mut conn, prefix)
            .await
            .map_err(|source| ConnectError::Redis {
                target: target.describe(),
                source,
            })?;
        let mut stores = Vec::with_capacity(count);
        for k in 0..count {
            let prefix = shard_prefix(prefix, k).map_err(|e| ConnectError::Config(e.to_string()))?;
            stores.push(Store::new(conn.clone(), conn.clone(), Keys::new(&prefix)));
        }
        Ok(Shards { stores })
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

    /// Stores the shard count if Redis holds none yet; refuses another one.
    pub async fn agree_on_count(&self) -> Result<(), ShardCountError> {
        let first = &self.stores[0];
        let key = first.keys.shard_count();
        let wanted = self.stores.len();
        let mut conn = first.conn.clone();
        let _: bool = redis::cmd("SET")
            .arg(&key)
            .arg(wanted)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|set| set.is_some())
            .context(|| format!("storing the shard count in {key}"))?;
        let stored = stored_shard_count(&mut conn, first.keys.prefix())
            .await
            .context(|| format!("reading the shard count from {key}"))?;
        if stored != wanted {
            return Err(ShardCountError::Mismatch {
                stored,
                wanted,
                prefix: first.keys.prefix().to_string(),
                key,
            });
        }
        Ok(())
    }
}

/// The shard count producers must use under `prefix`: what the dispatchers
/// stored, 1 when none has run yet (one shard is the unsharded layout).
pub async fn stored_shard_count<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
) -> Result<usize, redis::RedisError> {
    let stored: Option<String> = conn.get(Keys::new(prefix).shard_count()).await?;
    Ok(stored.and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(1).max(1))
}
