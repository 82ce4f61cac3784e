//! `outbound-webhooks dispatcher`: from the events stream to signed
//! deliveries.
//!
//! The path of one event, folder by folder:
//! 1. [`intake::consumer`] reads it from the stream (one consumer group,
//!    each shard's [`crate::store::Store`]) and holds the entry ([`intake::held`]);
//! 2. [`intake::routing`] picks the hooks it goes to from the caches
//!    ([`view`]);
//! 3. [`attempt::first_attempt`] sends it to each hook at once, within the
//!    hook's lane and an in-flight slot ([`capacity`]): [`attempt::send`]
//!    signs it ([`attempt::headers`]) and posts it
//!    ([`attempt::http_client`], [`attempt::dns`]);
//! 4. [`settle`] does what the outcome says: finish, reschedule (a failed
//!    first attempt becomes a stored task), wait, dead-letter, or turn the
//!    hook off;
//! 5. [`acker`] acknowledges the entry once each hook got it or holds a
//!    task, and records successes and the attempts log in batches;
//! 6. [`retry::claimer`] leases the stored tasks when due and runs them
//!    through 3 and 4 again ([`retry::waker`] wakes waiting ones);
//! 7. [`health::mirror`] writes each hook's delivery health to its status.
//!
//! Beside the path: [`crate::store`] (everything kept in Redis and its scripts),
//! [`upkeep`] (trimming, idle consumers), [`org_budget`] (bytes per org),
//! [`config`] (flags), [`context`] (what the loops share) and [`metrics`].

// The stages of one event, in the order it travels (see above).
pub mod intake;

pub mod attempt;

mod settle;

mod acker;

mod retry;

pub mod health;

// What the stages share.
mod accounting;
mod acks;
mod capacity;
mod clock;
mod config;
mod context;
pub mod metrics;
pub mod org_budget;
mod upkeep;
pub mod view;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::config::{Config, DispatcherArgs};
use self::{
    capacity::lanes::Lanes,
    capacity::slots::Slots,
    context::Shared,
    intake::held::HeldEntries,
    metrics::Metrics,
    retry::waker::Changed,
    view::cache::{Cache, Cached},
    view::cached_objects::{CachedHook, CachedSecret},
    view::limits::HookLimits,
};
use crate::{
    address_filter::AddressFilter,
    contract::resource::{OutboundWebhook, WEBHOOK_SECRET_LABEL},
    plumbing::ops_server::{self, Readiness},
    store::connection::ConnectError,
    store::{ShardCountError, Shards, StoreError},
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
    Dns(#[from] attempt::dns::BuildError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[from] attempt::http_client::BuildError),
    /// The ops endpoints failed.
    #[error(transparent)]
    Ops(#[from] ops_server::OpsServerError),
    /// `--otlp-endpoint` cannot be used.
    #[error(transparent)]
    Spans(#[from] attempt::spans::SpansError),
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
        Some(path) => attempt::http_client::read_ca_file(path).map_err(|source| DispatcherError::DestinationCa {
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
    crate::plumbing::process::cancel_on_signal(&shutdown);
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
            .page_size(crate::contract::resource::SECRET_LIST_PAGE_SIZE),
    )
    .default_backoff();
    // Every change wakes the tasks waiting for the hooks it concerns.
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let limits = Arc::new(HookLimits::default());
    let limits_fed = limits.clone();
    let previous = hooks.clone();
    feed_cache(
        hook_stream,
        hooks.clone(),
        // The cached version of the same hook lends its compiled filter.
        move |h| {
            let before = previous.get(
                h.metadata.namespace.as_deref().unwrap_or_default(),
                h.metadata.name.as_deref().unwrap_or_default(),
            );
            Arc::new(CachedHook::after(h, before.as_deref()))
        },
        (changes_tx.clone(), Changed::hook),
        move |event| limits_fed.apply(event),
        "watching OutboundWebhooks",
    );
    feed_cache(
        secret_stream,
        secrets.clone(),
        |s| Arc::new(CachedSecret::new(s)),
        (changes_tx, Changed::secret),
        |_| {},
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
    let resolver = attempt::dns::Resolver::new(&config.dns_servers)?;
    let http = attempt::outbound::outbound(filter, resolver, config.proxy.as_deref(), &destination_ca)?;
    // Attempt spans: nothing is built without an endpoint.
    let (spans, span_export) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (sink, export) = attempt::spans::start(endpoint, &metrics)?;
            tracing::info!(endpoint = %attempt::spans::traces_url(endpoint), "exporting one span per attempt over OTLP");
            (Some(sink), Some(export))
        }
        None => (None, None),
    };
    let (mirror_tx, mirror_rx) = health::requests::MirrorHandle::channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let shard_count = shards.all().len();
    let shared = Arc::new(Shared {
        shards,
        hooks,
        limits,
        secrets,
        http,
        kube,
        metrics,
        mirror: mirror_tx,
        lanes: Lanes::new(config.max_in_flight_per_hook),
        urls: attempt::outbound::UrlCache::default(),
        slots: Slots::new(config.max_in_flight),
        claimers: retry::wake::ClaimerWake::new(shard_count),
        acks: acks_tx,
        held: HeldEntries::default(),
        shutdown: shutdown.clone(),
        budgets,
        retry_bodies: retry::bodies::RetryBodies::new(config.max_retry_body_bytes),
        spans,
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
        readers.push(tokio::spawn(intake::consumer::run(
            shared.clone(),
            shard,
            shutdown.clone(),
        )));
        readers.push(tokio::spawn(retry::claimer::run(
            shared.clone(),
            shard,
            shutdown.clone(),
        )));
    }
    // The acker and the mirror outlive the attempts, so their outcomes
    // still reach Redis and status.
    let acker_stop = CancellationToken::new();
    let acker = tokio::spawn(acker::run(shared.clone(), acks_rx, acker_stop.clone()));
    let mirror_stop = CancellationToken::new();
    let mirror = tokio::spawn(health::mirror::run(shared.clone(), mirror_rx, mirror_stop.clone()));
    let upkeep = tokio::spawn(upkeep::run(shared.clone(), shutdown.clone()));
    let waker = tokio::spawn(retry::waker::run(shared.clone(), changes_rx, shutdown.clone()));

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
    // The attempts are over: their spans still queued go out (bounded).
    if let Some(export) = span_export {
        export.flush_and_stop().await;
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

/// Where a cache's changes go, and what an object changes.
type ChangeFeed<V> = (mpsc::UnboundedSender<Changed>, fn(&V) -> Option<Changed>);

/// Drives a watch into its cache (each object as `cached` makes it) and
/// to `observe`, sending what each applied object changes to the waker.
fn feed_cache<K: Send + 'static, V: Cached + Send + Sync + 'static>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    cache: Arc<Cache<V>>,
    cached: impl Fn(K) -> Arc<V> + Send + 'static,
    (changes, change): ChangeFeed<V>,
    observe: impl Fn(&watcher::Event<Arc<V>>) + Send + 'static,
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
                observe(&event);
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
