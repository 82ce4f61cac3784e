//! The consumer: reads the events stream in the consumer group (its own
//! pending entries first, then new ones; entries a dead replica left
//! pending are reclaimed), routes each entry to the matching hooks and
//! starts their first attempts straight away ([`crate::dispatcher::attempt::first_attempt`]),
//! holding the entry until each hook got the event or has a stored task.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::dispatcher::{
    accounting::count_duplicate,
    attempt::first_attempt::{self, PendingEntry},
    attempt::headers::{header_secret_problem, signing_secret_of},
    clock::{ms, now_ms, pause},
    context::Shared,
    health::requests::Urgency,
    intake::held::HoldLimit,
    intake::routing::{NO_SUCH_HOOK, Route, route},
    metrics::EventOutcome,
    upkeep,
    view::cached_objects::CachedHook,
};
use crate::store::{self, Delivery, RawEntry, Store, StoreError, Task, WRONG_SHARD};
use crate::{
    store::shard::shard_of,
    wire::envelope,
    wire::stream_entry::{Event, MAX_ENTRY_BYTES, entry_id_millis, parse_entry},
};

/// Most entries held (read, not yet acknowledged) at once: bounds how far
/// the consumer reads ahead of the receivers (memory is bounded by
/// [`MAX_HELD_BYTES`]). Large enough for a fleet of receivers answering in
/// 200 ms to keep thousands of first attempts in flight
/// (docs/src/performance.md, scenario 8).
const MAX_HELD: usize = 2048;
/// Most first attempts parked at once (spawned, waiting to run or for a
/// slot of their hook's lane): beyond it the consumer reads no further.
/// A backlog for a few hooks then waits in the stream rather than as thousands of parked tasks, each
/// with its timer (1a drained with 2,048 parked used 15-20% more CPU per
/// delivery than with 300 held; benches/README.md, issue 24), while a
/// fleet whose hooks each have a few attempts in flight still holds
/// [`MAX_HELD`] entries.
const MAX_PARKED: usize = 256;
/// What the consumer holds at most before it reads on.
const LIMIT: HoldLimit = HoldLimit {
    entries: MAX_HELD,
    bytes: MAX_HELD_BYTES,
    parked: MAX_PARKED,
};
/// Entries read per XREADGROUP.
const READ_COUNT: usize = 100;
/// Most bytes of entries held at once (entries may be up to 1 MiB): with
/// the envelopes built from them, what the consumer holds stays well
/// under the chart's 256 MiB limit.
const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;

/// How many entries to read next so that what is held stays within
/// [`MAX_HELD_BYTES`]: from the free room and the sizes seen lately
/// (assumed the largest allowed until entries have been seen, so a first
/// read of a backlog of 1 MiB entries is bounded too).
#[derive(Debug)]
struct ReadBudget {
    average_bytes: usize,
}

impl ReadBudget {
    fn new() -> Self {
        ReadBudget {
            average_bytes: MAX_ENTRY_BYTES,
        }
    }

    fn count(&self, held_count: usize, held_bytes: usize) -> usize {
        let by_count = MAX_HELD.saturating_sub(held_count);
        let by_bytes = MAX_HELD_BYTES.saturating_sub(held_bytes) / self.average_bytes.max(256);
        by_count.min(by_bytes).clamp(1, READ_COUNT)
    }

    fn saw(&mut self, entries: &[RawEntry]) {
        if let Some(largest) = entries.iter().map(RawEntry::size).max() {
            // The largest of a batch, weighed in quickly and let go slowly.
            self.average_bytes = if largest > self.average_bytes {
                largest
            } else {
                (self.average_bytes * 7 + largest) / 8
            };
        }
    }
}

/// Reads shard `shard`'s stream until `shutdown`.
pub async fn run(shared: Arc<Shared>, shard: usize, shutdown: CancellationToken) {
    let consumer = shared.config.consumer_name.clone();
    let store = shared.shards.get(shard).clone();
    // First our own pending entries (a restart with the same name), walked
    // with a cursor, then new ones.
    let mut pending_cursor = Some("0".to_string());
    let mut last_reclaim = 0i64;
    // Where the walk over other consumers' idle entries goes on from.
    let mut reclaim_cursor = "0-0".to_string();
    let mut budget = ReadBudget::new();
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        shared.held.wait_for_room(LIMIT, &shutdown).await;
        if shutdown.is_cancelled() {
            break;
        }
        let result = async {
            if reclaim_cursor != "0-0" || now_ms() - last_reclaim > ms(shared.config.reclaim_idle) / 2 {
                last_reclaim = now_ms();
                let count = budget.count(shared.held.count(), shared.held.bytes());
                let (reclaimed, next) = store
                    .autoclaim(
                        &consumer,
                        shared.config.reclaim_idle.as_millis() as u64,
                        &reclaim_cursor,
                        count,
                    )
                    .await?;
                reclaim_cursor = next;
                budget.saw(&reclaimed);
                let reclaimed = shared.held.hold(shard, reclaimed);
                if !reclaimed.is_empty() {
                    tracing::info!(
                        count = reclaimed.len(),
                        "reclaimed entries left pending by another consumer"
                    );
                }
                handle_entries(&shared, &store, shard, reclaimed).await?;
            }
            if shared.held.bytes() >= MAX_HELD_BYTES {
                return Ok(());
            }
            let room = budget.count(shared.held.count(), shared.held.bytes());
            let from = pending_cursor.as_deref().unwrap_or(">");
            let Some(entries) = store.read_entries(&consumer, from, room, 1000).await? else {
                // Sentinel switched primaries: read there at once, our own
                // pending entries first (a read whose answer the switch
                // cut off left its entries pending to us).
                tracing::info!(shard, "the primary moved; reading the stream there");
                pending_cursor = Some("0".to_string());
                return Ok(());
            };
            budget.saw(&entries);
            if pending_cursor.is_some() {
                pending_cursor = entries.last().map(|e| e.id.clone());
            }
            let entries = shared.held.hold(shard, entries);
            handle_entries(&shared, &store, shard, entries).await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) if e.is_no_group() => {
                tracing::warn!(error = %e, "the consumer group is gone (Redis lost its data?); recreating it from 0");
                if let Err(e) = store.ensure_group().await {
                    tracing::warn!(error = %e, "recreating the consumer group");
                }
                // Whatever lost the group lost the shard count with it.
                upkeep::keep_shard_count(&shared.shards).await;
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
async fn handle_entries(
    shared: &Arc<Shared>,
    store: &Store,
    shard: usize,
    entries: Vec<RawEntry>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    // Each of the batch's orgs' hooks, read once per batch (an org's
    // events in a batch see the same hooks).
    let mut by_org: HashMap<String, Vec<Arc<CachedHook>>> = HashMap::new();
    for entry in &entries {
        if let Some(org) = entry.fields.get("org").and_then(|o| std::str::from_utf8(o).ok())
            && !by_org.contains_key(org)
        {
            by_org.insert(org.to_string(), shared.hooks.in_namespace(org));
        }
    }
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let mut routed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        match route_entry(shared, store, shard, &by_org, entry).await {
            Ok(Some(entry)) => routed.push(entry),
            Ok(None) => {}
            Err(e) => {
                // Not routed: release them, so they are read again.
                shared.held.release(shard, &ids[i..]);
                release_routed(shared, shard, &routed);
                return Err(e);
            }
        }
    }
    // Which of the routed deliveries a hook already holds as a task, in
    // one round trip for the batch: before any first attempt, so an event
    // id reused while its first task is held is not sent again.
    let members: Vec<String> = routed.iter().flat_map(RoutedEntry::members).collect();
    let held = match store.held_tasks(&members).await {
        Ok(held) => held,
        Err(e) => {
            release_routed(shared, shard, &routed);
            return Err(e);
        }
    };
    let mut held = held.into_iter();
    let mut filter_errors = FilterErrors::default();
    for mut entry in routed {
        for reason in &entry.route.filtered {
            shared.metrics.count_filtered(reason, 1);
        }
        for (hook, error) in std::mem::take(&mut entry.route.filter_errors) {
            filter_errors.note(&hook, &entry.event.id, error);
        }
        start_deliveries(shared, shard, entry, &mut held);
    }
    filter_errors.record(shared, store).await;
    Ok(())
}

/// The filter errors of a batch, per hook: one health write per hook and
/// batch, however many of its events failed.
#[derive(Default)]
struct FilterErrors {
    /// Hook UID -> (`namespace/name`, events, the last error).
    by_hook: HashMap<String, (String, u64, String)>,
}

impl FilterErrors {
    fn note(&mut self, hook: &CachedHook, event_id: &str, error: String) {
        tracing::info!(hook = %hook.key(), event = %event_id, %error, "event not delivered: the hook's filter failed on it");
        let uid = hook.uid().unwrap_or_default().to_string();
        let entry = self
            .by_hook
            .entry(uid)
            .or_insert_with(|| (hook.key(), 0, String::new()));
        entry.1 += 1;
        entry.2 = error;
    }

    /// Notes each hook's errors on its health, which the status mirror
    /// shows in the Delivering condition.
    async fn record(self, shared: &Shared, store: &Store) {
        let now = now_ms();
        for (uid, (hook, events, error)) in self.by_hook {
            match store.record_filter_errors(&uid, events, &error, now).await {
                Ok(()) => shared.mirror.request(&uid, &hook, Urgency::Transition),
                Err(e) => tracing::warn!(%hook, error = %e, "noting filter errors on the hook's health"),
            }
        }
    }
}

/// An entry routed to its hooks, not yet delivered.
struct RoutedEntry {
    id: String,
    event: Event,
    route: Route,
    routed_ms: i64,
}

impl RoutedEntry {
    /// The task members of its hooks, waiting ones first, as
    /// [`start_deliveries`] walks them.
    fn members(&self) -> impl Iterator<Item = String> + '_ {
        self.route
            .wait
            .iter()
            .chain(&self.route.deliver)
            .map(|hook| store::task_member(hook.uid().unwrap_or_default(), &self.event.id))
    }
}

fn release_routed(shared: &Shared, shard: usize, routed: &[RoutedEntry]) {
    let ids: Vec<String> = routed.iter().map(|r| r.id.clone()).collect();
    shared.held.release(shard, &ids);
}

/// Parses and routes one entry; `None` when it was dead-lettered instead.
async fn route_entry(
    shared: &Arc<Shared>,
    store: &Store,
    shard: usize,
    by_org: &HashMap<String, Vec<Arc<CachedHook>>>,
    entry: RawEntry,
) -> Result<Option<RoutedEntry>, StoreError> {
    let RawEntry { id: entry_id, fields } = entry;
    let event = match parse_entry(&entry_id, &fields) {
        Ok(event) => event,
        Err(malformed) => {
            let reason = malformed.to_string();
            dead_letter_entry(shared, store, shard, &entry_id, &fields, malformed.code(), &reason).await?;
            return Ok(None);
        }
    };
    if let Some(ignored) = &event.trace_ignored {
        // Delivered all the same, as if the producer gave no trace context.
        shared.metrics.trace_context_invalid(ignored.field()).inc();
        tracing::debug!(event = %event.id, entry = %entry_id, reason = %ignored, "trace context ignored");
    }
    let shards = shared.shards.all().len();
    let home = shard_of(&event.org, shards);
    if home != shard {
        // A producer that XADDs itself with another shard formula or count:
        // its tasks would live apart from the org's other keys.
        let reason = format!(
            "{WRONG_SHARD}: org {} belongs to shard {home} of {shards}, not {shard} (docs/src/redis.md#stream-shards gives the formula; `dead-letter replay` moves it there)",
            event.org
        );
        dead_letter_entry(shared, store, shard, &entry_id, &fields, WRONG_SHARD, &reason).await?;
        return Ok(None);
    }
    let route = route(by_org.get(&event.org).into_iter().flatten(), &event);
    Ok(Some(RoutedEntry {
        id: entry_id,
        event,
        route,
        routed_ms: now_ms(),
    }))
}

/// Whether a hook's delivery of an entry goes ahead, given the task the
/// hook holds for the event id (from [`Store::held_tasks`]).
fn goes_ahead(shared: &Shared, hook: &CachedHook, event: &Event, entry_id: &str, held: Option<Option<String>>) -> bool {
    match held {
        None => true,
        // This very entry read again (a restart, a reclaim) after its task
        // was stored, or a task older than the entry field: the task
        // delivers it.
        Some(None) => false,
        Some(Some(from)) if from == entry_id => false,
        Some(Some(from)) => {
            count_duplicate(shared, &hook.key(), &event.id, entry_id, &from);
            false
        }
    }
}

/// Counts the entry's drops and starts its deliveries: stored tasks for
/// hooks that wait, first attempts for the rest.
fn start_deliveries(
    shared: &Arc<Shared>,
    shard: usize,
    entry: RoutedEntry,
    held: &mut impl Iterator<Item = Option<Option<String>>>,
) {
    let RoutedEntry {
        id: entry_id,
        event,
        route: routed,
        routed_ms: now,
    } = entry;
    for reason in &routed.dropped {
        shared.metrics.count_events(EventOutcome::Dropped(reason), 1);
        if *reason == "turned_off" {
            shared.metrics.dropped_events.inc();
        }
        if *reason == NO_SUCH_HOOK {
            tracing::warn!(
                event = %event.id, org = %event.org, hook = event.hook.as_deref().unwrap_or_default(), %reason,
                "event for one hook dropped: the org has no hook of that name"
            );
        } else {
            tracing::info!(event = %event.id, org = %event.org, %reason, "event dropped for a hook that does not take it");
        }
    }
    let body = bytes::Bytes::from(envelope::build(&event));
    let pending = PendingEntry::new(shard, &entry_id, routed.deliver.len() + routed.wait.len());
    let task_for = |hook: &CachedHook| {
        let uid = hook.uid().unwrap_or_default();
        Task {
            member: store::task_member(uid, &event.id),
            delivery: Delivery {
                hook: hook.key(),
                uid: uid.to_string(),
                event_id: event.id.clone(),
                event: event.name.as_str().to_string(),
                org: event.org.clone(),
                body: body.clone(),
                entry_id: entry_id.clone(),
                trace: event.trace.clone(),
            },
            attempts: 0,
            first_attempt_ms: 0,
            created_ms: now,
        }
    };
    // Hooks whose conditions lag or whose Secret is not ready: a stored
    // task, which the claimer turns into a waiting one.
    for hook in &routed.wait {
        if goes_ahead(shared, hook, &event, &entry_id, held.next().flatten()) {
            pending.store_later(task_for(hook).to_new(0));
        }
        pending.close_one(shared);
    }
    for hook in &routed.deliver {
        if !goes_ahead(shared, hook, &event, &entry_id, held.next().flatten()) {
            pending.close_one(shared);
            continue;
        }
        let task = task_for(hook);
        let lane = shared.lanes.lane(&task.uid);
        // A hook whose slots are all busy with slow attempts gets a stored
        // task instead: its entry is not held, and other hooks' events not
        // held back behind it. So does one whose Secrets are not usable:
        // the claimer makes the task wait for them.
        // So does a hook with a rate or concurrency limit: the claimer
        // holds its tasks to the limit across replicas (store/limits.rs).
        match signing_secret_of(&shared.secrets, hook) {
            Some(signing)
                if !lane.is_slow(now)
                    && !hook.has_limits()
                    && !shared.shutdown.is_cancelled()
                    && header_secret_problem(&shared.secrets, hook).is_none() =>
            {
                tokio::spawn(first_attempt::run(
                    shared.clone(),
                    shared.held.park(),
                    pending.clone(),
                    hook.clone(),
                    task,
                    signing,
                    lane,
                ));
            }
            _ => {
                pending.store_later(task.to_new(0));
                pending.close_one(shared);
            }
        }
    }
    pending.close_one(shared);
    shared.metrics.entries.inc();
    tracing::debug!(entry = %entry_id, event = %event.id, hooks = routed.deliver.len(), lag_ms = now - entry_id_millis(&entry_id).unwrap_or(now), "routed");
}

/// Dead-letters an entry no hook can take, with its reason.
async fn dead_letter_entry(
    shared: &Shared,
    store: &Store,
    shard: usize,
    entry_id: &str,
    fields: &HashMap<String, Vec<u8>>,
    code: &'static str,
    reason: &str,
) -> Result<(), StoreError> {
    tracing::warn!(entry = %entry_id, %reason, "stream entry dead-lettered");
    // A malformed entry's fields are evidence only; a wrong shard's entry
    // is kept whole, as `dead-letter replay` appends it to its org's shard.
    let field_cap = if code == WRONG_SHARD {
        MAX_ENTRY_BYTES
    } else {
        store::MALFORMED_FIELD_CAP
    };
    shared
        .metrics
        .dead_letters
        .get_or_create(&vec![("reason", code.to_string())])
        .inc();
    store
        .dead_letter_entry(entry_id, fields, reason, field_cap, now_ms())
        .await?;
    // A malformed entry matches no hook: counted once.
    shared.metrics.count_events(EventOutcome::DeadLettered(code), 1);
    shared.held.release(shard, &[entry_id.to_string()]);
    Ok(())
}
