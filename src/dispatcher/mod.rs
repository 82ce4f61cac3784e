//! `outbound-webhooks dispatcher`: from the events stream to signed
//! deliveries.
//!
//! Loops sharing one [`Store`] (Redis) and two caches (hooks and labelled
//! Secrets):
//! - the **consumer** reads the stream in the consumer group, routes each
//!   entry and runs the first attempts straight away ([`direct`]), holding
//!   the entry until each matching hook got it or has a stored task;
//! - the **acker** acknowledges settled entries and records successes in
//!   batches ([`acker`]);
//! - the **claimer** leases due tasks (retries, and deliveries stored before
//!   a first attempt) within the global and per-hook bounds and runs one
//!   attempt per task;
//! - the **mirror** writes delivery health to status; **upkeep** trims,
//!   and removes idle consumers.

mod acker;
pub mod delivery;
mod direct;
mod lanes;
pub mod metrics;
pub mod routing;
pub mod status;
pub mod store;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use self::{
    acker::AckItem,
    delivery::Outcome,
    direct::PendingEntry,
    lanes::Lanes,
    metrics::{Metrics, status_class},
    routing::{Deliverability, deliverability, route},
    store::{Store, StoreError, Task},
};
use crate::{
    address_filter::AddressFilter,
    envelope,
    ops_server::{self, Readiness},
    resource::{DisableReason, DisableRecord, OutboundWebhook, REENABLE_ANNOTATION, WEBHOOK_SECRET_LABEL},
    retry_schedule::{RetrySchedule, next_delay},
    signing,
    stream_entry::{entry_id_millis, parse_entry},
};

/// Everything the dispatcher is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where `/metrics`, `/healthz`, `/readyz` listen.
    pub http_addr: SocketAddr,
    /// The Redis URL.
    pub redis_url: String,
    /// The key prefix.
    pub redis_prefix: String,
    /// Delays between attempts.
    pub retry_schedule: RetrySchedule,
    /// Non-public destinations that may be reached anyway.
    pub allow_destination_cidrs: Vec<ipnet::IpNet>,
    /// This replica's consumer name.
    pub consumer_name: String,
    /// Attempts in flight on this replica.
    pub max_in_flight: usize,
    /// Attempts in flight per hook on this replica.
    pub max_in_flight_per_hook: usize,
    /// Lease of a claimed task (extended when a hook's timeout needs more).
    pub task_lease: Duration,
    /// Stream entries pending this long on another consumer are reclaimed.
    pub reclaim_idle: Duration,
    /// Consumers holding nothing and idle this long are removed.
    pub idle_consumer_timeout: Duration,
    /// Dead letters older than this are trimmed.
    pub dead_letter_max_age: Duration,
    /// At most this many dead letters are kept.
    pub dead_letter_max_count: usize,
    /// How often retention and gauges run.
    pub maintenance_interval: Duration,
    /// How often due tasks are polled when idle.
    pub poll_interval: Duration,
    /// An explicit outbound proxy; environment proxies are ignored.
    pub proxy: Option<String>,
}

/// The dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// Kubernetes client configuration failed.
    #[error("connecting to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Redis could not be reached at start-up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The ops endpoints failed.
    #[error(transparent)]
    Ops(#[from] ops_server::OpsServerError),
    /// The caches never synced.
    #[error("the hook and Secret caches stopped before they synced")]
    CacheNeverSynced,
}

/// Mirror requests: (hook UID, namespace/name, at once?).
type MirrorRequest = (String, String, bool);

struct Shared {
    config: Config,
    store: Store,
    hooks: reflector::Store<OutboundWebhook>,
    secrets: reflector::Store<Secret>,
    http: reqwest::Client,
    filter: Arc<AddressFilter>,
    kube: kube::Client,
    metrics: Metrics,
    mirror: mpsc::UnboundedSender<MirrorRequest>,
    lanes: Lanes,
    urls: delivery::UrlCache,
    global: Arc<Semaphore>,
    wake: Notify,
    acks: mpsc::UnboundedSender<AckItem>,
    /// Entries read and not yet acknowledged, with when they were read (or
    /// last renewed), Unix ms.
    held: Mutex<HashMap<String, i64>>,
    held_released: Notify,
    shutdown: CancellationToken,
}

/// Most entries held (read, not yet acknowledged) at once: bounds memory
/// and how far the consumer reads ahead of the receivers.
const MAX_HELD: usize = 300;
/// Entries read per XREADGROUP.
const READ_COUNT: usize = 100;

impl Shared {
    /// Holds the entries not held yet; returns them.
    fn hold(&self, entries: Vec<store::RawEntry>) -> Vec<store::RawEntry> {
        let now = now_ms();
        let mut held = self.held.lock().expect("held entries lock");
        entries
            .into_iter()
            .filter(|e| {
                if held.contains_key(&e.id) {
                    return false;
                }
                held.insert(e.id.clone(), now);
                true
            })
            .collect()
    }

    /// Forgets entries (acknowledged, or left pending to be read again).
    fn release_held(&self, ids: &[String]) {
        let mut held = self.held.lock().expect("held entries lock");
        for id in ids {
            held.remove(id);
        }
        drop(held);
        self.held_released.notify_waiters();
    }

    fn held_count(&self) -> usize {
        self.held.lock().expect("held entries lock").len()
    }

    /// Held entries read (or renewed) before `before_ms`.
    fn held_since(&self, before_ms: i64) -> Vec<String> {
        let held = self.held.lock().expect("held entries lock");
        held.iter()
            .filter(|(_, at)| **at < before_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn mark_touched(&self, ids: &[String], now: i64) {
        let mut held = self.held.lock().expect("held entries lock");
        for id in ids {
            if let Some(at) = held.get_mut(id) {
                *at = now;
            }
        }
    }

    /// Waits until fewer than `limit` entries are held (or shutdown).
    async fn wait_for_room(&self, limit: usize) {
        loop {
            let released = self.held_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.held_count() < limit || self.shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = released => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the dispatcher until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DispatcherError> {
    let kube = kube::Client::try_default().await?;
    // Redis may come up after us (or be restarting): wait for it instead of
    // crash-looping.
    let store = loop {
        match Store::connect(&config.redis_url, &config.redis_prefix).await {
            Ok(store) => break store,
            Err(e) => {
                tracing::warn!(error = %e, "connecting to Redis; retrying in 2s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    match store.maxmemory_policy().await {
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
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: no new claims, finishing in-flight attempts");
            shutdown.cancel();
        });
    }
    let ops = {
        let shutdown = shutdown.clone();
        tokio::spawn(ops_server::serve(
            config.http_addr,
            Arc::new(registry),
            readiness.clone(),
            async move { shutdown.cancelled().await },
        ))
    };

    // Caches: hooks (all namespaces) and only the labelled Secrets.
    let (hooks, hook_writer) = reflector::store::<OutboundWebhook>();
    let hook_stream = watcher(Api::<OutboundWebhook>::all(kube.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|h| h.managed_fields_mut().clear())
        .reflect(hook_writer)
        .applied_objects();
    let (secrets, secret_writer) = reflector::store::<Secret>();
    let secret_stream = watcher(
        Api::<Secret>::all(kube.clone()),
        watcher::Config::default().labels(&format!("{WEBHOOK_SECRET_LABEL}=true")),
    )
    .default_backoff()
    .modify(|s| s.managed_fields_mut().clear())
    .reflect(secret_writer)
    .applied_objects();
    tokio::spawn(hook_stream.for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "watching OutboundWebhooks");
        }
    }));
    tokio::spawn(secret_stream.for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "watching labelled Secrets");
        }
    }));
    tokio::select! {
        r = async { tokio::try_join!(hooks.wait_until_ready(), secrets.wait_until_ready()) } => {
            r.map_err(|_| DispatcherError::CacheNeverSynced)?;
        }
        _ = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(
        hooks = hooks.state().len(),
        secrets = secrets.state().len(),
        "caches synced"
    );

    let filter = Arc::new(AddressFilter::new(config.allow_destination_cidrs.clone()));
    let http = delivery::client(filter.clone(), config.proxy.as_deref())?;
    let (mirror_tx, mirror_rx) = mpsc::unbounded_channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        store,
        hooks,
        secrets,
        http,
        filter,
        kube,
        metrics,
        mirror: mirror_tx,
        lanes: Lanes::new(config.max_in_flight_per_hook),
        urls: delivery::UrlCache::default(),
        global: Arc::new(Semaphore::new(config.max_in_flight)),
        wake: Notify::new(),
        acks: acks_tx,
        held: Mutex::new(HashMap::new()),
        held_released: Notify::new(),
        shutdown: shutdown.clone(),
        config,
    });
    if let Err(e) = shared.store.ensure_group().await {
        tracing::warn!(error = %e, "creating the consumer group; will retry");
    }
    readiness.set(true);
    tracing::info!(consumer = %shared.config.consumer_name, "dispatching");

    let consumer = tokio::spawn(consume(shared.clone(), shutdown.clone()));
    let claimer = tokio::spawn(claim_loop(shared.clone(), shutdown.clone()));
    // The acker and the mirror outlive the attempts, so their outcomes
    // still reach Redis and status.
    let acker_stop = CancellationToken::new();
    let acker = tokio::spawn(acker::run(shared.clone(), acks_rx, acker_stop.clone()));
    let mirror_stop = CancellationToken::new();
    let mirror = tokio::spawn(mirror_loop(shared.clone(), mirror_rx, mirror_stop.clone()));
    let upkeep = tokio::spawn(upkeep_loop(shared.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    readiness.set(false);
    let _ = consumer.await;
    let _ = claimer.await;
    // Wait for in-flight attempts: they finish, reschedule or let their
    // lease lapse; then for held entries to be acknowledged.
    let all = u32::try_from(shared.config.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(Duration::from_secs(40), async {
        let _all = shared.global.acquire_many(all).await;
        while shared.held_count() > 0 {
            let released = shared.held_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if shared.held_count() == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), released).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "in-flight attempts did not finish in time; their leases will lapse and another replica retries them"
        );
    }
    acker_stop.cancel();
    let _ = acker.await;
    mirror_stop.cancel();
    let _ = mirror.await;
    let _ = upkeep.await;
    let _ = ops.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Sleeps unless shutdown comes first; returns false on shutdown.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

// ---------------------------------------------------------------- consumer

async fn consume(shared: Arc<Shared>, shutdown: CancellationToken) {
    let consumer = shared.config.consumer_name.clone();
    // First our own pending entries (a restart with the same name), walked
    // with a cursor, then new ones.
    let mut pending_cursor = Some("0".to_string());
    let mut last_reclaim = 0i64;
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        shared.wait_for_room(MAX_HELD).await;
        if shutdown.is_cancelled() {
            break;
        }
        let result = async {
            if now_ms() - last_reclaim > ms(shared.config.reclaim_idle) / 2 {
                last_reclaim = now_ms();
                let reclaimed = shared
                    .store
                    .autoclaim(&consumer, shared.config.reclaim_idle.as_millis() as u64)
                    .await?;
                let reclaimed = shared.hold(reclaimed);
                if !reclaimed.is_empty() {
                    tracing::info!(
                        count = reclaimed.len(),
                        "reclaimed entries left pending by another consumer"
                    );
                }
                handle_entries(&shared, reclaimed).await?;
            }
            let room = MAX_HELD.saturating_sub(shared.held_count()).clamp(1, READ_COUNT);
            let from = pending_cursor.as_deref().unwrap_or(">");
            let entries = shared.store.read_entries(&consumer, from, room, 1000).await?;
            if pending_cursor.is_some() {
                pending_cursor = entries.last().map(|e| e.id.clone());
            }
            let entries = shared.hold(entries);
            handle_entries(&shared, entries).await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) if e.is_no_group() => {
                tracing::warn!(error = %e, "the consumer group is gone (Redis lost its data?); recreating it from 0");
                if let Err(e) = shared.store.ensure_group().await {
                    tracing::warn!(error = %e, "recreating the consumer group");
                }
                pending_cursor = Some("0".to_string());
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the events stream; retrying");
                pending_cursor = Some("0".to_string());
                if !pause(&shutdown, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Routes held entries; malformed ones are dead-lettered at once.
async fn handle_entries(shared: &Arc<Shared>, entries: Vec<store::RawEntry>) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    // One pass over the cached hooks per batch, keeping the batch's orgs:
    // routing then looks at an org's few hooks, not at every hook cached.
    let orgs: std::collections::HashSet<&[u8]> = entries
        .iter()
        .filter_map(|e| e.fields.get("org").map(Vec::as_slice))
        .collect();
    let mut by_org: HashMap<String, Vec<Arc<OutboundWebhook>>> = HashMap::new();
    for hook in shared.hooks.state() {
        if let Some(ns) = hook.metadata.namespace.as_deref()
            && orgs.contains(ns.as_bytes())
        {
            by_org.entry(ns.to_string()).or_default().push(hook);
        }
    }
    drop(orgs);
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    for (i, entry) in entries.into_iter().enumerate() {
        if let Err(e) = handle_entry(shared, &by_org, entry).await {
            // Not routed: release them, so they are read again.
            shared.release_held(&ids[i..]);
            return Err(e);
        }
    }
    Ok(())
}

async fn handle_entry(
    shared: &Arc<Shared>,
    by_org: &HashMap<String, Vec<Arc<OutboundWebhook>>>,
    entry: store::RawEntry,
) -> Result<(), StoreError> {
    let store::RawEntry { id: entry_id, fields } = entry;
    let now = now_ms();
    let event = match parse_entry(&entry_id, &fields) {
        Ok(event) => event,
        Err(malformed) => {
            tracing::warn!(entry = %entry_id, reason = %malformed, "malformed stream entry dead-lettered");
            shared
                .metrics
                .dead_letters
                .get_or_create(&vec![("reason", malformed.code().to_string())])
                .inc();
            shared
                .store
                .dead_letter_entry(&entry_id, &fields, &malformed.to_string(), now)
                .await?;
            shared.release_held(std::slice::from_ref(&entry_id));
            return Ok(());
        }
    };
    let routed = route(by_org.get(&event.org).into_iter().flatten(), &event.org, event.name);
    if routed.dropped_turned_off > 0 {
        shared.metrics.dropped_events.inc_by(routed.dropped_turned_off as u64);
        tracing::info!(event = %event.id, org = %event.org, count = routed.dropped_turned_off, "event dropped for turned-off hooks");
    }
    let body = bytes::Bytes::from(envelope::build(&event));
    let pending = PendingEntry::new(&entry_id, routed.deliver.len());
    for hook in &routed.deliver {
        let uid = hook.uid().unwrap_or_default();
        let task = Task {
            member: store::task_member(&uid, &event.id),
            hook: format!("{}/{}", hook.namespace().unwrap_or_default(), hook.name_any()),
            uid,
            event_id: event.id.clone(),
            event: event.name.as_str().to_string(),
            org: event.org.clone(),
            body: body.clone(),
            attempts: 0,
            first_attempt_ms: 0,
            created_ms: now,
        };
        let lane = shared.lanes.lane(&task.uid);
        // A hook whose slots are all busy with slow attempts gets a stored
        // task instead: its entry is not held, and other hooks' events not
        // held back behind it.
        match direct::token_of(&shared.secrets, hook) {
            Some(token) if !lane.is_slow(now) && !shared.shutdown.is_cancelled() => {
                tokio::spawn(direct::first_attempt(
                    shared.clone(),
                    pending.clone(),
                    hook.clone(),
                    task,
                    token,
                    lane,
                ));
            }
            _ => {
                pending.store_later(direct::new_task(&task, None));
                pending.settle_one(shared);
            }
        }
    }
    pending.settle_one(shared);
    shared.metrics.entries.inc();
    tracing::debug!(entry = %entry_id, event = %event.id, hooks = routed.deliver.len(), lag_ms = now - entry_id_millis(&entry_id).unwrap_or(now), "routed");
    Ok(())
}

// ---------------------------------------------------------------- claimer

async fn claim_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let per_hook = shared.config.max_in_flight_per_hook;
    while !shutdown.is_cancelled() {
        let free = shared.global.available_permits();
        if free == 0 {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let capacities = shared.lanes.capacities();
        let claimed = shared
            .store
            .claim(now_ms(), ms(shared.config.task_lease), free, per_hook, &capacities)
            .await;
        let (members, lease_until) = match claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming tasks; retrying");
                if !pause(&shutdown, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        if members.is_empty() {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        for member in members {
            let Ok(permit) = shared.global.clone().acquire_owned().await else {
                break;
            };
            let uid = member.split(':').next().unwrap_or_default().to_string();
            let lane = shared.lanes.lane(&uid);
            let shared = shared.clone();
            tokio::spawn(async move {
                let slot = lane.acquire().await;
                shared.metrics.in_flight.inc();
                if let Err(e) = attempt_task(&shared, &member, lease_until).await {
                    // The lease lapses and the task comes due again.
                    tracing::warn!(task = %member, error = %e, "attempt bookkeeping failed; the task will be retried after its lease");
                }
                shared.metrics.in_flight.dec();
                drop(slot);
                drop(permit);
                shared.wake.notify_one();
            });
        }
        shared.lanes.prune();
    }
}

fn hook_of(shared: &Shared, task: &Task) -> Option<Arc<OutboundWebhook>> {
    let (ns, name) = task.hook.split_once('/')?;
    let hook = shared.hooks.get(&ObjectRef::new(name).within(ns))?;
    (hook.uid().as_deref() == Some(task.uid.as_str())).then_some(hook)
}

fn secret_value(shared: &Shared, namespace: &str, name: &str, key: &str) -> Option<String> {
    let secret = shared.secrets.get(&ObjectRef::new(name).within(namespace))?;
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Headers of one attempt; errors name what is missing (never a value).
fn request_headers(shared: &Shared, hook: &OutboundWebhook, task: &Task, token: &str) -> Result<HeaderMap, String> {
    let ns = hook.namespace().unwrap_or_default();
    let timestamp = jiff::Timestamp::now().as_second();
    let mut headers = HeaderMap::new();
    for h in &hook.spec.headers {
        let value = match (&h.value, &h.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => secret_value(shared, &ns, &from.secret_key_ref.name, &from.secret_key_ref.key)
                .ok_or_else(|| {
                    format!(
                        "header {} needs key {} of Secret {ns}/{} (labelled {WEBHOOK_SECRET_LABEL}=true), which is missing",
                        h.name, from.secret_key_ref.key, from.secret_key_ref.name
                    )
                })?,
            (None, None) => continue,
        };
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("header name {:?} is invalid", h.name))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of header {} is not a valid header value", h.name))?;
        headers.insert(name, value);
    }
    let sig = |s: String| HeaderValue::from_str(&s).expect("hex and base64 are valid header values");
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-kustomer-webhook-event",
        HeaderValue::from_str(&task.event).map_err(|_| "bad event name".to_string())?,
    );
    headers.insert(
        "x-kustomer-webhook-signature",
        sig(signing::kustomer_signature(token, &task.body)),
    );
    headers.insert(
        "webhook-id",
        HeaderValue::from_str(&task.event_id).map_err(|_| "event id is not a valid header value".to_string())?,
    );
    headers.insert("webhook-timestamp", sig(timestamp.to_string()));
    headers.insert(
        "webhook-signature",
        sig(signing::standard_webhooks_signature(
            token,
            &task.event_id,
            timestamp,
            &task.body,
        )),
    );
    Ok(headers)
}

/// Runs one claimed task: deliver, reschedule, dead-letter or turn the hook off.
async fn attempt_task(shared: &Shared, member: &str, claimed: i64) -> Result<(), StoreError> {
    let store = &shared.store;
    let Some(task) = store.load_task(member).await? else {
        return store.forget_member(member).await;
    };
    let Some(hook) = hook_of(shared, &task) else {
        tracing::info!(task = %member, hook = %task.hook, "hook deleted; dropping its task");
        return store.finish(&task).await;
    };
    let now = now_ms();
    match deliverability(&hook) {
        Deliverability::Deliverable => {}
        Deliverability::TurnedOff => {
            return dead_letter(shared, &task, claimed, "hook is turned off (AutoDisabled or Revoked)").await;
        }
        Deliverability::DisabledBySpec => {
            return dead_letter(shared, &task, claimed, "hook is disabled by spec.enabled=false").await;
        }
        Deliverability::NotAccepted => {
            return wait_or_give_up(shared, &task, claimed, now, "not accepted for its current generation").await;
        }
        Deliverability::SecretNotReady => {
            return wait_or_give_up(shared, &task, claimed, now, "signing secret not ready").await;
        }
    }
    let Some(token) = direct::token_of(&shared.secrets, &hook) else {
        return wait_or_give_up(shared, &task, claimed, now, "signing secret not in the cache").await;
    };

    let timeout = Duration::from_secs(hook.spec.timeout_seconds.clamp(1, 30) as u64);
    // The lease must outlast the request, or another replica would retry meanwhile.
    let mut claimed = claimed;
    let needed = now + ms(timeout) + 5_000;
    if needed > claimed {
        if !store.extend_lease(member, claimed, needed).await? {
            return Ok(()); // someone else holds it now
        }
        claimed = needed;
    }

    let attempt_number = task.attempts + 1;
    let first_attempt_ms = if task.first_attempt_ms > 0 {
        task.first_attempt_ms
    } else {
        now
    };
    let (attempt, done_ms) = send_attempt(shared, &hook, &task, &token, attempt_number).await;
    settle(
        shared,
        &hook,
        &task,
        claimed,
        attempt,
        attempt_number,
        first_attempt_ms,
        done_ms,
    )
    .await
}

/// Sends one attempt of `task` to `hook`, with its metrics and logs;
/// returns it and when it ended (Unix ms).
async fn send_attempt(
    shared: &Shared,
    hook: &OutboundWebhook,
    task: &Task,
    token: &str,
    attempt_number: u32,
) -> (delivery::Attempt, i64) {
    let timeout = Duration::from_secs(hook.spec.timeout_seconds.clamp(1, 30) as u64);
    let started = std::time::Instant::now();
    let attempt = match request_headers(shared, hook, task, token) {
        Ok(headers) => {
            delivery::send(
                &shared.http,
                &shared.filter,
                shared.urls.parse(&hook.spec.url),
                headers,
                task.body.clone(),
                timeout,
            )
            .await
        }
        Err(message) => delivery::Attempt {
            outcome: Outcome::Failed,
            status: None,
            retry_after: None,
            message,
        },
    };
    let elapsed = started.elapsed();
    shared.metrics.attempt_duration.observe(elapsed.as_secs_f64());
    let outcome_label = match attempt.outcome {
        Outcome::Delivered => "delivered",
        Outcome::Gone => "gone",
        Outcome::Failed => "failed",
    };
    if attempt.outcome == Outcome::Delivered && attempt.status.is_some_and(|s| (200..300).contains(&s)) {
        shared.metrics.delivered_2xx.inc();
    } else {
        shared
            .metrics
            .attempts
            .get_or_create(&vec![
                ("outcome", outcome_label.to_string()),
                ("status_class", status_class(attempt.status)),
            ])
            .inc();
    }
    // Successes are routine (debug); failures are what on-call reads (info).
    if attempt.outcome == Outcome::Delivered {
        tracing::debug!(
            hook = %task.hook, event = %task.event_id, attempt = attempt_number, status = attempt.status,
            elapsed_ms = elapsed.as_millis() as u64, "delivered"
        );
    } else {
        tracing::info!(
            hook = %task.hook, event = %task.event_id, attempt = attempt_number, outcome = outcome_label,
            status = attempt.status, elapsed_ms = elapsed.as_millis() as u64, message = %attempt.message,
            "delivery attempt failed"
        );
    }
    (attempt, now_ms())
}

/// What follows an attempt of a stored task claimed until `claimed`:
/// finish, reschedule, dead-letter or turn the hook off.
#[allow(clippy::too_many_arguments)]
async fn settle(
    shared: &Shared,
    hook: &OutboundWebhook,
    task: &Task,
    claimed: i64,
    attempt: delivery::Attempt,
    attempt_number: u32,
    first_attempt_ms: i64,
    done_ms: i64,
) -> Result<(), StoreError> {
    let store = &shared.store;
    let hook_name = task.hook.clone();
    match attempt.outcome {
        Outcome::Delivered => {
            store.finish(task).await?;
            let _ = shared.acks.send(AckItem::Success {
                uid: task.uid.clone(),
                hook: hook_name,
                at_ms: done_ms,
            });
        }
        Outcome::Gone => {
            store
                .record_failure(&task.uid, done_ms, attempt.status, &attempt.message)
                .await?;
            turn_off(
                shared,
                hook,
                task,
                DisableReason::Revoked,
                &format!("the receiver answered {}: subscription revoked", attempt.message),
            )
            .await?;
        }
        Outcome::Failed => {
            let failures = store
                .record_failure(&task.uid, done_ms, attempt.status, &attempt.message)
                .await?;
            let _ = shared.mirror.send((task.uid.clone(), hook_name.clone(), failures == 1));
            match shared.config.retry_schedule.delay_after(attempt_number) {
                Some(delay) => {
                    let unit: f64 = rand::rng().random();
                    let delay = next_delay(delay, unit, attempt.retry_after);
                    store
                        .reschedule(
                            task,
                            claimed,
                            done_ms + ms(delay),
                            attempt_number,
                            first_attempt_ms,
                            &attempt.message,
                        )
                        .await?;
                }
                None => {
                    // Exhausted. Turn the hook off only when nothing succeeded
                    // since this event's first attempt: then the endpoint is
                    // down, not merely rejecting this payload.
                    let health = store.health(&task.uid).await?;
                    let succeeded_since = health.last_success_ms.is_some_and(|s| s >= first_attempt_ms);
                    if succeeded_since {
                        let reason = format!("failed all {attempt_number} attempts; last error: {}", attempt.message);
                        dead_letter(shared, task, claimed, &reason).await?;
                    } else {
                        let message = format!(
                            "event {} failed all {attempt_number} attempts and no request succeeded meanwhile; last error: {}",
                            task.event_id, attempt.message
                        );
                        turn_off(shared, hook, task, DisableReason::AutoDisabled, &message).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A hook not deliverable right now: wait (acceptance catching up) or, after
/// longer than any retry schedule, give up.
async fn wait_or_give_up(shared: &Shared, task: &Task, claimed: i64, now: i64, reason: &str) -> Result<(), StoreError> {
    let give_up_after = ms(shared.config.retry_schedule.total()) + 3_600_000;
    if now - task.created_ms > give_up_after {
        dead_letter(shared, task, claimed, &format!("hook {reason} for too long")).await
    } else {
        shared
            .store
            .reschedule(task, claimed, now + 5_000, task.attempts, task.first_attempt_ms, reason)
            .await
            .map(|_| ())
    }
}

async fn dead_letter(shared: &Shared, task: &Task, claimed: i64, reason: &str) -> Result<(), StoreError> {
    let moved = shared
        .store
        .dead_letter_tasks(
            &task.uid,
            std::slice::from_ref(&task.member),
            Some(claimed),
            reason,
            now_ms(),
        )
        .await?;
    if moved > 0 {
        shared
            .metrics
            .dead_letters
            .get_or_create(&vec![("reason", "delivery".to_string())])
            .inc();
        tracing::warn!(hook = %task.hook, event = %task.event_id, %reason, "delivery dead-lettered");
    }
    Ok(())
}

/// Writes the disable record, dead-letters the hook's pending tasks and
/// mirrors status at once.
async fn turn_off(
    shared: &Shared,
    hook: &OutboundWebhook,
    task: &Task,
    reason: DisableReason,
    message: &str,
) -> Result<(), StoreError> {
    let record = DisableRecord {
        reason,
        at: Time(jiff::Timestamp::now()),
        message: message.chars().take(1000).collect(),
        reenable_token: hook.annotations().get(REENABLE_ANNOTATION).cloned().unwrap_or_default(),
        generation: hook.metadata.generation.unwrap_or_default(),
    };
    let json = serde_json::to_string(&record).expect("the disable record serializes");
    shared.store.set_disable_record(&task.uid, Some(&json)).await?;
    shared
        .metrics
        .disabled_hooks
        .get_or_create(&vec![("reason", reason.as_str().to_string())])
        .inc();
    tracing::warn!(hook = %task.hook, reason = reason.as_str(), %message, "hook turned off");
    let mut members = shared.store.hook_task_members(&task.uid).await?;
    if !members.contains(&task.member) {
        members.push(task.member.clone());
    }
    let dl_reason = format!("hook turned off ({}): {message}", reason.as_str());
    let moved = shared
        .store
        .dead_letter_tasks(&task.uid, &members, None, &dl_reason, now_ms())
        .await?;
    shared
        .metrics
        .dead_letters
        .get_or_create(&vec![("reason", "hook_turned_off".to_string())])
        .inc_by(moved.max(0) as u64);
    let _ = shared.mirror.send((task.uid.clone(), task.hook.clone(), true));
    Ok(())
}

// ---------------------------------------------------------------- status mirror

async fn mirror_loop(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<MirrorRequest>,
    shutdown: CancellationToken,
) {
    // uid -> (namespace/name, urgent)
    let mut dirty: HashMap<String, (String, bool)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some((uid, hook, urgent)) => {
                    let e = dirty.entry(uid).or_insert((hook, false));
                    e.1 |= urgent;
                    if !urgent { continue; }
                }
                None => break,
            },
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let uids: Vec<String> = dirty.keys().cloned().collect();
        for uid in uids {
            let (hook_name, urgent) = dirty[&uid].clone();
            match mirror_one(&shared, &uid, &hook_name, urgent).await {
                Ok(true) => {
                    dirty.remove(&uid);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(hook = %hook_name, error = %e, "mirroring delivery status; will retry"),
            }
        }
    }
    // Flush what is left on shutdown (best effort).
    while let Ok((uid, hook, _)) = requests.try_recv() {
        dirty.entry(uid).or_insert((hook, true));
    }
    for (uid, (hook_name, _)) in dirty {
        let _ = mirror_one(&shared, &uid, &hook_name, true).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing status.delivery: {0}")]
    Kube(#[from] kube::Error),
}

/// Mirrors one hook; false when it is not yet time (rate limit).
async fn mirror_one(shared: &Shared, uid: &str, hook_name: &str, urgent: bool) -> Result<bool, MirrorError> {
    let Some((ns, name)) = hook_name.split_once('/') else {
        return Ok(true);
    };
    let Some(hook) = shared.hooks.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(true);
    };
    if hook.uid().as_deref() != Some(uid) {
        return Ok(true);
    }
    let health = shared.store.health(uid).await?;
    let now = now_ms();
    if !urgent && health.mirrored_ms.is_some_and(|m| now - m < status::MIRROR_INTERVAL_MS) {
        return Ok(false);
    }
    let from_redis = health
        .disabled
        .as_deref()
        .and_then(|j| serde_json::from_str::<DisableRecord>(j).ok());
    let had_redis_record = from_redis.is_some();
    let record = status::effective_record(&hook, from_redis);
    if had_redis_record && record.is_none() {
        shared.store.set_disable_record(uid, None).await?;
    }
    let delivery = status::delivery_status(&health, record);
    status::apply(&shared.kube, ns, name, &delivery).await?;
    shared.store.set_mirrored(uid, now).await?;
    Ok(true)
}

// ---------------------------------------------------------------- upkeep

async fn upkeep_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut last_consumer_sweep = now_ms();
    while pause(&shutdown, shared.config.maintenance_interval).await {
        let s = &shared.store;
        match s.trim_events().await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "trimmed the events stream"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "trimming the events stream"),
        }
        if let Err(e) = s
            .trim_dead_letters(
                now_ms(),
                ms(shared.config.dead_letter_max_age),
                shared.config.dead_letter_max_count,
            )
            .await
        {
            tracing::warn!(error = %e, "trimming dead letters");
        }
        if now_ms() - last_consumer_sweep > ms(shared.config.idle_consumer_timeout).min(60_000) {
            last_consumer_sweep = now_ms();
            match s
                .remove_idle_consumers(
                    &shared.config.consumer_name,
                    shared.config.idle_consumer_timeout.as_millis() as u64,
                )
                .await
            {
                Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed idle consumers"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "removing idle consumers"),
            }
        }
        match s.sizes().await {
            Ok(sizes) => {
                shared.metrics.stream_length.set(sizes.stream_length);
                shared.metrics.stream_pending.set(sizes.pending);
                shared.metrics.stream_lag.set(sizes.lag);
                shared.metrics.tasks_scheduled.set(sizes.tasks_scheduled);
                shared.metrics.dead_letter_length.set(sizes.dead_letters);
            }
            Err(e) => tracing::debug!(error = %e, "reading queue sizes"),
        }
    }
}
