//! The waker: when a hook or a labelled Secret changes in the cache, the
//! tasks waiting for those hooks (conditions behind the spec, a Secret
//! missing or invalid) are made due at once, so a waiting task costs
//! nothing until something changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    context::Shared,
    view::cache::Cached,
    view::cached_objects::{CachedHook, CachedSecret},
};
use crate::store::shard::shard_of;

/// Hooks woken per script call.
const BATCH: usize = 500;
/// Changes are gathered this long before one wake-up call.
const GATHER: Duration = Duration::from_millis(100);

/// What changed in a cache.
#[derive(Debug)]
pub enum Changed {
    /// A hook.
    Hook {
        /// Its UID.
        uid: String,
        /// Its namespace (which says its shard).
        namespace: String,
    },
    /// A labelled Secret in this namespace (any hook there may use it).
    SecretIn(String),
}

impl Changed {
    /// The change a hook event makes.
    pub fn hook(hook: &CachedHook) -> Option<Changed> {
        Some(Changed::Hook {
            uid: hook.uid()?.to_string(),
            namespace: hook.namespace().to_string(),
        })
    }

    /// The change a Secret event makes.
    pub fn secret(secret: &CachedSecret) -> Option<Changed> {
        Some(Changed::SecretIn(secret.namespace().to_string()))
    }
}

/// Runs until `shutdown`.
pub async fn run(shared: Arc<Shared>, mut changes: mpsc::UnboundedReceiver<Changed>, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            c = changes.recv() => c,
            _ = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let gather = tokio::time::sleep(GATHER);
        tokio::pin!(gather);
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
                _ = &mut gather => break,
            }
        }
        // Hooks by namespace: a namespace's hooks share one shard.
        let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut secrets_in: BTreeSet<String> = BTreeSet::new();
        for change in batch {
            match change {
                Changed::Hook { uid, namespace } => {
                    by_namespace.entry(namespace).or_default().insert(uid);
                }
                Changed::SecretIn(namespace) => {
                    secrets_in.insert(namespace);
                }
            }
        }
        for namespace in secrets_in {
            let uids: Vec<String> = shared
                .hooks
                .in_namespace(&namespace)
                .iter()
                .filter_map(|h| h.uid().map(str::to_string))
                .collect();
            if !uids.is_empty() {
                by_namespace.entry(namespace).or_default().extend(uids);
            }
        }
        let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (namespace, uids) in by_namespace {
            by_shard
                .entry(shard_of(&namespace, shared.shards.all().len()))
                .or_default()
                .extend(uids);
        }
        for (shard, uids) in by_shard {
            wake_shard(&shared, shard, &uids).await;
        }
    }
}

async fn wake_shard(shared: &Shared, shard: usize, uids: &[String]) {
    for chunk in uids.chunks(BATCH) {
        match shared.shards.get(shard).wake(chunk).await {
            Ok(0) => {}
            Ok(n) => {
                shared.claimers.wake(shard);
                tracing::debug!(tasks = n, "woke waiting tasks");
            }
            // The task's own re-check (at most a minute later) covers a miss.
            Err(e) => tracing::warn!(error = %e, "waking waiting tasks"),
        }
    }
}
