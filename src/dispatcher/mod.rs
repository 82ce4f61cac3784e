//! `outbound-webhooks dispatcher`: from the events stream to signed
//! deliveries.
//!
//! Loops sharing the stream shards' [`store::Store`]s (Redis) and two caches (hooks and
//! labelled Secrets), each in a file of its own:
//! - the **consumer** ([`consumer`]) reads the stream in the consumer
//!   group, routes each entry ([`routing`]) and runs the first attempts
//!   straight away ([`first_attempt`]), holding the entry ([`held`]) until
//!   each matching hook got it or has a stored task;
//! - the **acker** ([`acker`]) acknowledges settled entries and records
//!   successes in batches;
//! - the **claimer** ([`claimer`]) leases due tasks (retries, and
//!   deliveries stored before a first attempt) within the global and
//!   per-hook bounds ([`lanes`]) and runs one attempt per task;
//! - one attempt is [`attempt`] (with the signed [`headers`]); what its
//!   outcome does (reschedule, dead-letter, turn off) is [`settle`];
//! - the **mirror** ([`mirror`]) writes delivery health to status
//!   ([`status`]); **upkeep** ([`upkeep`]) trims and removes idle
//!   consumers; the **waker** ([`waker`]) wakes tasks waiting for a hook
//!   when it or its Secrets change.

mod acker;
pub mod attempt;
pub mod attempt_error;
pub mod attempts_log;
pub mod cache;
pub mod cached_objects;
mod claimer;
mod config;
mod consumer;
mod context;
pub mod dns;
mod first_attempt;
pub mod headers;
mod held;
pub mod http_client;
mod lanes;
pub mod metrics;
mod mirror;
pub mod org_budget;
mod retry_bodies;
pub mod routing;
mod settle;
mod slots;
pub mod status;
pub mod store;
mod upkeep;
mod waker;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::config::{Config, DispatcherArgs};
use self::{
    cache::{Cache, Cached},
    cached_objects::{CachedHook, CachedSecret},
    context::Shared,
    held::HeldEntries,
    lanes::Lanes,
    metrics::Metrics,
    slots::Slots,
    store::{ShardCountError, Shards, StoreError},
    waker::Changed,
};
use crate::{
    address_filter::AddressFilter,
    ops_server::{self, Readiness},
    redis_conn::ConnectError,
    resource::{OutboundWebhook, WEBHOOK_SECRET_LABEL},
};

/// The dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// Kubernetes client configuration failed.
    #[error("connecting to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Redis could not be used at start-up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Redis flags or certificates are wrong.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Redis holds another shard count.
    #[error(transparent)]
    ShardCount(#[from] ShardCountError),
    /// The DNS resolver could not be built.
    #[error(transparent)]
    Dns(#[from] dns::BuildError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[from] http_client::BuildError),
    /// The ops endpoints failed.
    #[error(transparent)]
    Ops(#[from] ops_server::OpsServerError),
    /// `--destination-ca-file` cannot be read.
    #[error("reading --destination-ca-file {path}: {source}")]
    DestinationCa {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the dispatcher until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DispatcherError> {
    // Read first: a wrong file fails the start at once, not after Redis and
    // the caches.
    let destination_ca = match &config.destination_ca_file {
        Some(path) => http_client::read_ca_file(path).map_err(|source| DispatcherError::DestinationCa {
            path: path.display().to_string(),
            source,
        })?,
        None => Vec::new(),
    };
    let kube = kube::Client::try_default().await?;
    // Redis may come up after us (or be restarting): wait for it instead of
    // crash-looping; a configuration or certificate error is final.
    let shards = loop {
        match Shards::connect(&config.redis, &config.redis_prefix, config.shards).await {
            Ok(shards) => break shards,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "connecting to Redis; retrying in 2s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let budgets = org_budget::OrgBudgets::new(config.org_max_stored_bytes);
    let shards = shards.with_budgets(&budgets);
    if shards.agree_on_count().await? {
        tracing::info!(count = shards.all().len(), "stored the shard count");
    }
    match shards.get(0).maxmemory_policy().await {
        Ok(policy) if policy == "noeviction" => {}
        Ok(policy) => tracing::warn!(
            %policy,
            "Redis maxmemory-policy is {policy:?}, not \"noeviction\": under memory pressure Redis would silently evict delivery tasks; set maxmemory-policy noeviction"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not read Redis maxmemory-policy; make sure it is \"noeviction\" or tasks may be evicted"
        ),
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    crate::process::cancel_on_signal(&shutdown);
    let ops = {
        let shutdown = shutdown.clone();
        tokio::spawn(ops_server::serve(
            config.http_addr,
            Arc::new(registry),
            readiness.clone(),
            async move { shutdown.cancelled().await },
        ))
    };

    // Caches: hooks (all namespaces) and only the labelled Secrets, each
    // object trimmed to what the dispatcher reads.
    let hooks = Arc::new(Cache::<CachedHook>::default());
    let hook_stream = watcher(Api::<OutboundWebhook>::all(kube.clone()), watcher::Config::default()).default_backoff();
    let secrets = Arc::new(Cache::<CachedSecret>::default());
    let secret_stream = watcher(
        Api::<Secret>::all(kube.clone()),
        watcher::Config::default()
            .labels(&format!("{WEBHOOK_SECRET_LABEL}=true"))
            .page_size(crate::resource::SECRET_LIST_PAGE_SIZE),
    )
    .default_backoff();
    // Every change wakes the tasks waiting for the hooks it concerns.
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    feed_cache(
        hook_stream,
        hooks.clone(),
        |h| Arc::new(CachedHook::new(h)),
        changes_tx.clone(),
        Changed::hook,
        "watching OutboundWebhooks",
    );
    feed_cache(
        secret_stream,
        secrets.clone(),
        |s| Arc::new(CachedSecret::new(s)),
        changes_tx,
        Changed::secret,
        "watching labelled Secrets",
    );
    let mut budgets_synced = org_budget::watch_namespaces(kube.clone(), budgets.clone());
    tokio::select! {
        () = async {
            tokio::join!(hooks.wait_until_ready(), secrets.wait_until_ready(), async {
                let _ = budgets_synced.wait_for(|synced| *synced).await;
            });
        } => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(hooks = hooks.len(), secrets = secrets.len(), "caches synced");

    let filter = Arc::new(AddressFilter::new(config.allow_destination_cidrs.clone()));
    let resolver = dns::Resolver::new(&config.dns_servers)?;
    let http = attempt::outbound(filter, resolver, config.proxy.as_deref(), &destination_ca)?;
    let (mirror_tx, mirror_rx) = mpsc::unbounded_channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let shard_count = shards.all().len();
    let shared = Arc::new(Shared {
        shards,
        hooks,
        secrets,
        http,
        kube,
        metrics,
        mirror: mirror_tx,
        lanes: Lanes::new(config.max_in_flight_per_hook),
        urls: attempt::UrlCache::default(),
        slots: Slots::new(config.max_in_flight),
        wake: (0..shard_count).map(|_| Notify::new()).collect(),
        claim_backlog: (0..shard_count).map(|_| AtomicBool::new(true)).collect(),
        acks: acks_tx,
        held: HeldEntries::default(),
        shutdown: shutdown.clone(),
        budgets,
        retry_bodies: retry_bodies::RetryBodies::new(config.max_retry_body_bytes),
        config,
    });
    for store in shared.shards.all() {
        if let Err(e) = store.ensure_group().await {
            tracing::warn!(error = %e, "creating the consumer group; will retry");
        }
    }
    readiness.set(true);
    tracing::info!(consumer = %shared.config.consumer_name, "dispatching");

    // One consumer and one claimer per shard, so one shard's backlog never
    // delays another's.
    let mut readers = Vec::new();
    for shard in 0..shared.shards.all().len() {
        readers.push(tokio::spawn(consumer::run(shared.clone(), shard, shutdown.clone())));
        readers.push(tokio::spawn(claimer::run(shared.clone(), shard, shutdown.clone())));
    }
    // The acker and the mirror outlive the attempts, so their outcomes
    // still reach Redis and status.
    let acker_stop = CancellationToken::new();
    let acker = tokio::spawn(acker::run(shared.clone(), acks_rx, acker_stop.clone()));
    let mirror_stop = CancellationToken::new();
    let mirror = tokio::spawn(mirror::run(shared.clone(), mirror_rx, mirror_stop.clone()));
    let upkeep = tokio::spawn(upkeep::run(shared.clone(), shutdown.clone()));
    let waker = tokio::spawn(waker::run(shared.clone(), changes_rx, shutdown.clone()));

    shutdown.cancelled().await;
    tracing::info!("stopping: no new claims, finishing in-flight attempts");
    readiness.set(false);
    for reader in readers {
        let _ = reader.await;
    }
    // Wait for in-flight attempts: they finish, reschedule or let their
    // lease lapse; then for held entries to be acknowledged.
    let drained = shared.slots.drained(Duration::from_secs(40)).await
        && tokio::time::timeout(Duration::from_secs(5), shared.held.wait_until_empty())
            .await
            .is_ok();
    if !drained {
        tracing::warn!(
            "in-flight attempts did not finish in time; their leases will lapse and another replica retries them"
        );
    }
    acker_stop.cancel();
    let _ = acker.await;
    mirror_stop.cancel();
    let _ = mirror.await;
    let _ = upkeep.await;
    let _ = waker.await;
    let _ = ops.await;
    tracing::info!("stopped");
    Ok(())
}

/// Drives a watch into its cache (each object as `cached` makes it),
/// sending what each applied object changes to the waker.
fn feed_cache<K: Send + 'static, V: Cached + Send + Sync + 'static>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    cache: Arc<Cache<V>>,
    cached: fn(K) -> Arc<V>,
    changes: mpsc::UnboundedSender<Changed>,
    change: fn(&V) -> Option<Changed>,
    what: &'static str,
) {
    tokio::spawn(stream.for_each(move |r| {
        match r {
            Ok(event) => {
                let event = match event {
                    watcher::Event::Apply(o) => watcher::Event::Apply(cached(o)),
                    watcher::Event::Delete(o) => watcher::Event::Delete(cached(o)),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitApply(o) => watcher::Event::InitApply(cached(o)),
                    watcher::Event::InitDone => watcher::Event::InitDone,
                };
                cache.apply(&event);
                if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = &event
                    && let Some(c) = change(o)
                {
                    let _ = changes.send(c);
                }
            }
            Err(e) => tracing::warn!(error = %e, "{what}"),
        }
        futures::future::ready(())
    }));
}
