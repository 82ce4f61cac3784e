//! What every loop of the dispatcher shares: configuration, the Redis
//! store, the caches, the HTTP client, the slots, and the channels to the
//! acker and the status mirror.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    Config,
    acks::AckItem,
    attempt::outbound::{Outbound, UrlCache},
    capacity::lanes::Lanes,
    capacity::slots::Slots,
    intake::held::HeldEntries,
    metrics::Metrics,
    org_budget::OrgBudgets,
    retry::bodies::RetryBodies,
    view::cache::Cache,
    view::cached_objects::{CachedHook, CachedSecret},
};
use crate::store::{Shards, Store};

/// A request to mirror one hook's health to its status.
#[derive(Clone, Debug)]
pub struct MirrorRequest {
    /// The hook's UID.
    pub uid: String,
    /// The hook's `namespace/name`.
    pub hook: String,
    /// How soon it must be written.
    pub urgency: Urgency,
}

/// How soon a hook's health must reach its status (docs/src/tenant-bounds.md#api-writes:
/// API writes per hook). Ordered: a hook's pending request keeps the
/// highest urgency asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// New figures: within the mirror interval.
    Routine,
    /// Failing or recovered: at once when the hook's last write is older
    /// than the mirror interval, else when it ends (a flapping receiver
    /// costs one write per interval, not one per flip).
    Transition,
    /// Turned off: at once, whatever the interval.
    TurnOff,
}

/// The dispatcher's shared state.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Redis: each shard's store.
    pub shards: Shards,
    /// Cached hooks (all namespaces).
    pub hooks: Arc<Cache<CachedHook>>,
    /// Cached Secrets labelled for the operator.
    pub secrets: Arc<Cache<CachedSecret>>,
    /// The outbound HTTP client and its destination checks.
    pub http: Outbound,
    /// The Kubernetes client (status writes).
    pub kube: kube::Client,
    /// The metrics.
    pub metrics: Metrics,
    /// To the status mirror.
    pub mirror: mpsc::UnboundedSender<MirrorRequest>,
    /// Per-hook slots.
    pub lanes: Lanes,
    /// Parsed destination URLs.
    pub urls: UrlCache,
    /// The replica's in-flight slots (general, and the slow share).
    pub slots: Slots,
    /// Wakes each shard's claimer (a slot freed, a task stored).
    pub wake: Vec<Notify>,
    /// Per shard: the claimer's last round saw due tasks (or no free slot),
    /// so a slot freed may let it claim more. Without it a freed slot wakes
    /// no claimer: at thousands of deliveries a second those wake-ups were
    /// each an empty claim round trip.
    pub claim_backlog: Vec<AtomicBool>,
    /// To the acker.
    pub acks: mpsc::UnboundedSender<AckItem>,
    /// Entries read and not yet acknowledged.
    pub held: HeldEntries,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Each org's budget of bytes in Redis (the stores hold a clone).
    pub budgets: OrgBudgets,
    /// Room for retried bodies (`--max-retry-body-bytes`).
    pub retry_bodies: RetryBodies,
}

impl Shared {
    /// A slot freed: wakes the claimers with a backlog ([`Shared::claim_backlog`]).
    pub fn slot_freed(&self) {
        for (w, backlog) in self.wake.iter().zip(&self.claim_backlog) {
            if backlog.load(Ordering::Relaxed) {
                w.notify_one();
            }
        }
    }

    /// Wakes one shard's claimer (a task stored there).
    pub fn wake_claimer(&self, shard: usize) {
        if let Some(w) = self.wake.get(shard) {
            w.notify_one();
        }
    }

    /// The store of the shard `org`'s events, tasks and hooks live in.
    pub fn store_for(&self, org: &str) -> &Store {
        self.shards.for_org(org)
    }

    /// Asks the mirror to write one hook's health to its status.
    pub fn request_mirror(&self, uid: &str, hook: &str, urgency: Urgency) {
        let _ = self.mirror.send(MirrorRequest {
            uid: uid.to_string(),
            hook: hook.to_string(),
            urgency,
        });
    }
}
