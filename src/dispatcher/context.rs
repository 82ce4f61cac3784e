//! What every loop of the dispatcher shares, composed of parts each
//! defined in a file of its own that imports nothing back: the caches
//! (`view/`), the outbound client (`attempt/outbound.rs`), the slots and
//! lanes (`capacity/`), the claimers' wake-ups (`retry/wake.rs`), the
//! mirror's handle (`health/requests.rs`), the acker's items (`acks.rs`).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    Config,
    acks::AckItem,
    attempt::outbound::{Outbound, UrlCache},
    attempt::spans::SpanSink,
    capacity::lanes::Lanes,
    capacity::slots::Slots,
    health::requests::MirrorHandle,
    intake::held::HeldEntries,
    metrics::Metrics,
    org_budget::OrgBudgets,
    retry::{bodies::RetryBodies, wake::ClaimerWake},
    view::cache::Cache,
    view::cached_objects::{CachedHook, CachedSecret},
    view::limits::HookLimits,
};
use crate::store::{Shards, Store};

/// The dispatcher's shared state.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Redis: each shard's store.
    pub shards: Shards,
    /// Cached hooks (all namespaces).
    pub hooks: Arc<Cache<CachedHook>>,
    /// The limits of the cached hooks that set one, by UID.
    pub limits: Arc<HookLimits>,
    /// Cached Secrets labelled for the operator.
    pub secrets: Arc<Cache<CachedSecret>>,
    /// The outbound HTTP client and its destination checks.
    pub http: Outbound,
    /// The Kubernetes client (status writes).
    pub kube: kube::Client,
    /// The metrics.
    pub metrics: Metrics,
    /// To the status mirror.
    pub mirror: MirrorHandle,
    /// Per-hook slots.
    pub lanes: Lanes,
    /// Parsed destination URLs.
    pub urls: UrlCache,
    /// The replica's in-flight slots (general, and the slow share).
    pub slots: Slots,
    /// Wakes each shard's claimer (a slot freed, a task stored).
    pub claimers: ClaimerWake,
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
    /// Where attempt spans go (`--otlp-endpoint`); `None`: not exported.
    pub spans: Option<SpanSink>,
}

impl Shared {
    /// The store of the shard `org`'s events, tasks and hooks live in.
    pub fn store_for(&self, org: &str) -> &Store {
        self.shards.for_org(org)
    }
}
