//! The waker: when a hook or a labelled Secret changes in the cache, the
//! tasks waiting for those hooks (conditions behind the spec, a Secret
//! missing or invalid) are made due at once, so a waiting task costs
//! nothing until something changes.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{Shared, now_ms};
use crate::resource::OutboundWebhook;

/// Hooks woken per script call.
const BATCH: usize = 500;
/// Changes are gathered this long before one wake-up call.
const GATHER: Duration = Duration::from_millis(100);

/// What changed in a cache.
#[derive(Debug)]
pub enum Changed {
    /// A hook (its UID).
    Hook(String),
    /// A labelled Secret in this namespace (any hook there may use it).
    SecretIn(String),
}

impl Changed {
    /// The change a hook event makes.
    pub fn hook(hook: &OutboundWebhook) -> Option<Changed> {
        hook.uid().map(Changed::Hook)
    }

    /// The change a Secret event makes.
    pub fn secret(secret: &Secret) -> Option<Changed> {
        secret.namespace().map(Changed::SecretIn)
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
        let mut uids = BTreeSet::new();
        for change in batch {
            match change {
                Changed::Hook(uid) => {
                    uids.insert(uid);
                }
                Changed::SecretIn(namespace) => uids.extend(
                    shared
                        .hooks
                        .state()
                        .iter()
                        .filter(|h| h.metadata.namespace.as_deref() == Some(namespace.as_str()))
                        .filter_map(|h| h.uid()),
                ),
            }
        }
        let uids: Vec<String> = uids.into_iter().collect();
        for chunk in uids.chunks(BATCH) {
            match shared.store.wake(chunk, now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    shared.wake.notify_one();
                    tracing::debug!(tasks = n, "woke waiting tasks");
                }
                // The task's own re-check (at most a minute later) covers a miss.
                Err(e) => tracing::warn!(error = %e, "waking waiting tasks"),
            }
        }
    }
}
