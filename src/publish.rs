//! The producer side: append one event to the events stream.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use outbound_webhooks::{EventName, publish::{NewEvent, publish}};
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! // Reconnects after a dropped connection, so a retry can succeed.
//! let mut conn = redis::aio::ConnectionManager::new(client).await?;
//! let event = NewEvent::new("acme", EventName::ConversationCreate, serde_json::json!({"type": "conversation"}))?;
//! let published = publish(&mut conn, "{outbound-webhooks}:", &event).await?;
//! println!("event {} is entry {}", published.event_id, published.entry_id);
//! # Ok(()) }
//! ```
//!
//! Never with `MAXLEN`: trimming is the dispatcher's job, because a capped
//! XADD can drop entries no dispatcher has read yet.
//!
//! A transient Redis error (a fail-over: `CLUSTERDOWN`, `TRYAGAIN`,
//! `READONLY`, `MASTERDOWN`, `LOADING`, a refused or dropped connection) is
//! retried until [`PublishOptions::retry_timeout`]. An append whose
//! connection broke after it was sent may have landed: appended again, the
//! event may be in the stream twice (same id), which [`Published`] says
//! and a warning logs. Give a connection that does not re-send commands by
//! itself, or such a repeat goes unreported: a redis-rs Cluster connection
//! built with `retries(0)`, or
//! [`RedisTarget::connect_without_resends`](crate::store::connection::RedisTarget::connect_without_resends).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    contract::event_name::EventName,
    store::connection::retry::{Failed, Failure, Request, query_retrying, request_retrying},
    store::shard::{shard_of, shard_prefix},
    store::{Keys, NoShardCount, parse_shard_count},
    wire::stream_entry::{MAX_ENTRY_BYTES, new_event_id, parse_entry},
    wire::trace_context::{self, TRACEPARENT, TRACESTATE, TraceContextError},
};

/// The default key prefix (the hash tag keeps every key in one Cluster slot).
pub const DEFAULT_PREFIX: &str = "{outbound-webhooks}:";

/// How long publishing keeps trying by default before it reports why not.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`PublishOptions::wait_timeout`].
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest [`PublishOptions::wait_timeout`]: below the connections'
/// response timeout (10 s), so a slow `WAIT` is never taken for a dropped
/// connection (which would append the event again).
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a missing shard count is read again.
const SHARD_COUNT_POLL: Duration = Duration::from_millis(100);

/// How publishing behaves.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// How long one publish keeps trying: through transient Redis errors
    /// (a fail-over), and while Redis holds no shard count (after a flush,
    /// until a dispatcher writes it again).
    pub retry_timeout: Duration,
    /// Replicas that must hold the entry before a publish returns (Redis
    /// `WAIT`, sent with the `XADD` in one round trip, on the same
    /// connection); 0, the default, waits for none. Redis replicates
    /// asynchronously: without it, an entry the primary acknowledged can
    /// be lost if the primary dies before a replica has it.
    pub wait_replicas: u32,
    /// How long `WAIT` waits for [`PublishOptions::wait_replicas`]
    /// (more than 0, at most [`MAX_WAIT_TIMEOUT`]); fewer by then fails the
    /// publish with [`PublishError::NotReplicated`].
    pub wait_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }
}

impl PublishOptions {
    /// Refuses options that do not fit together: a `WAIT` with no timeout
    /// would block for ever (Redis reads 0 as "no timeout"), and one
    /// longer than [`MAX_WAIT_TIMEOUT`] would outlast the connection's
    /// response timeout.
    pub fn check(&self) -> Result<(), PublishError> {
        if self.wait_replicas > 0 && (self.wait_timeout.is_zero() || self.wait_timeout > MAX_WAIT_TIMEOUT) {
            return Err(PublishError::Options(format!(
                "the wait for replicas (--wait-timeout) must be more than 0 and at most {MAX_WAIT_TIMEOUT:?}, not {:?}",
                self.wait_timeout
            )));
        }
        Ok(())
    }
}

/// An event to publish.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The org (namespace) whose hooks receive it.
    pub org: String,
    /// The trigger event name.
    pub name: EventName,
    /// The `data` object, serialized.
    pub data: String,
    /// The `changes` object, serialized, when any.
    pub changes: Option<String>,
    /// The event id; a new 24-hex id when `None`.
    pub id: Option<String>,
    /// Creation time; the stream entry's time when `None`.
    pub created_at: Option<jiff::Timestamp>,
    /// The one hook (a name within `org`) to deliver to, whatever its
    /// subscribed events: a test event. `None`: every subscribed hook.
    pub hook: Option<String>,
    /// The producer's W3C `traceparent` (version 00 form): the receiver's
    /// `traceparent` header continues this trace.
    pub traceparent: Option<String>,
    /// The producer's W3C `tracestate`, passed through to the receiver
    /// (only with a `traceparent`).
    pub tracestate: Option<String>,
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `data` or `changes` is not a JSON object.
    #[error("{field} must be a JSON object")]
    NotAnObject {
        /// `data` or `changes`.
        field: &'static str,
    },
    /// The entry would exceed 1 MiB.
    #[error("the event is {0} bytes; entries are limited to 1 MiB")]
    TooLarge(usize),
    /// The `traceparent` or `tracestate` is not W3C Trace Context (the
    /// dispatcher would ignore it).
    #[error("invalid {field}: {source}", field = .source.field())]
    TraceContext {
        /// What is wrong with it.
        #[from]
        source: TraceContextError,
    },
    /// The dispatcher would dead-letter this entry.
    #[error("refused: {0}")]
    Refused(#[from] crate::wire::stream_entry::MalformedEntry),
    /// The prefix has no hash tag.
    #[error("{0}")]
    Prefix(String),
    /// [`PublishOptions`] that do not fit together.
    #[error("{0}")]
    Options(String),
    /// The event was appended, but fewer replicas than
    /// [`PublishOptions::wait_replicas`] acknowledged it in time: it is in
    /// the stream (and will be delivered unless a fail-over loses it).
    #[error(
        "event {event_id} was appended to {stream} as entry {entry_id}, but only {acknowledged} of the {wanted} replica(s) asked for (--wait-replicas) acknowledged it within {timeout:?} (--wait-timeout): it may not survive a fail-over. Publishing it again with the same id (--id) keeps it safe, and may deliver it twice if both copies survive (receivers deduplicate by webhook-id)"
    )]
    NotReplicated {
        /// The event id.
        event_id: String,
        /// The stream it was appended to.
        stream: String,
        /// Its stream entry id.
        entry_id: String,
        /// Replicas that acknowledged it.
        acknowledged: i64,
        /// Replicas asked for.
        wanted: u32,
        /// How long `WAIT` waited.
        timeout: Duration,
    },
    /// Redis held no shard count for as long as publishing kept trying.
    #[error("{source} (waited {waited:.1?})")]
    NoShardCount {
        /// The key that should hold it.
        source: NoShardCount,
        /// How long publishing waited for it.
        waited: Duration,
    },
    /// Redis failed: at once when retrying cannot help, otherwise at the
    /// end of the retry timeout.
    #[error("{what}: {source}{}", retry_note(*.attempts, *.waited, *.maybe_appended))]
    Redis {
        /// What failed, naming the key.
        what: String,
        /// The last attempt's error.
        source: redis::RedisError,
        /// Attempts made.
        attempts: u32,
        /// From the first attempt to giving up.
        waited: Duration,
        /// An attempt may have appended the event all the same.
        maybe_appended: bool,
    },
}

fn retry_note(attempts: u32, waited: Duration, maybe_appended: bool) -> String {
    let mut note = String::new();
    if attempts > 1 {
        note = format!(" (still failing after {attempts} attempts in {waited:.1?}; --retry-timeout)");
    }
    if maybe_appended {
        note.push_str(
            "; an attempt whose connection broke may have been appended all the same: publishing again with the same event id (--id) is safe (receivers deduplicate by webhook-id)",
        );
    }
    note
}

impl PublishError {
    /// `failed` as the error of `what`; `appending` when it was the XADD
    /// (an attempt of a read appends nothing, whatever became of it).
    fn redis(what: String, failed: Failed, started: Instant, appending: bool) -> Self {
        PublishError::Redis {
            what,
            source: failed.error,
            attempts: failed.attempts,
            waited: started.elapsed(),
            maybe_appended: appending && failed.maybe_applied,
        }
    }
}

/// What was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stream entry id.
    pub entry_id: String,
    /// The event id receivers see as `id` and `webhook-id`.
    pub event_id: String,
    /// Appends sent (more than one after transient errors).
    pub attempts: u32,
    /// An earlier append whose connection broke may have landed too: the
    /// event may be in the stream twice, with the same id.
    pub possibly_duplicated: bool,
}

impl NewEvent {
    /// An event with the given `data` object, a fresh id, and no changes.
    pub fn new(org: &str, name: EventName, data: serde_json::Value) -> Result<Self, PublishError> {
        if !data.is_object() {
            return Err(PublishError::NotAnObject { field: "data" });
        }
        Ok(NewEvent::with_data(org, name, data.to_string()))
    }

    /// An event whose `data` is JSON text, kept byte for byte (key order
    /// included) once checked to be an object.
    pub fn from_json_text(org: &str, name: EventName, data: &str) -> Result<Self, PublishError> {
        let data = data.trim();
        if !is_json_object(data) {
            return Err(PublishError::NotAnObject { field: "data" });
        }
        Ok(NewEvent::with_data(org, name, data.to_string()))
    }

    fn with_data(org: &str, name: EventName, data: String) -> Self {
        NewEvent {
            org: org.to_string(),
            name,
            data,
            changes: None,
            id: None,
            created_at: None,
            hook: None,
            traceparent: None,
            tracestate: None,
        }
    }

    /// Adds `changes` as JSON text, kept byte for byte once checked to be an object.
    pub fn with_changes_text(mut self, changes: &str) -> Result<Self, PublishError> {
        let changes = changes.trim();
        if !is_json_object(changes) {
            return Err(PublishError::NotAnObject { field: "changes" });
        }
        self.changes = Some(changes.to_string());
        Ok(self)
    }

    /// Adds a `changes` object.
    pub fn with_changes(mut self, changes: serde_json::Value) -> Result<Self, PublishError> {
        if !changes.is_object() {
            return Err(PublishError::NotAnObject { field: "changes" });
        }
        self.changes = Some(changes.to_string());
        Ok(self)
    }
}

fn is_json_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    )
}

/// Refuses a `traceparent` or `tracestate` that is not W3C Trace Context:
/// the dispatcher would ignore it, and the producer would never learn why
/// its trace stops.
pub fn check_trace_context(event: &NewEvent) -> Result<(), TraceContextError> {
    if event.tracestate.is_some() && event.traceparent.is_none() {
        return Err(TraceContextError::StateWithoutParent);
    }
    if let Some(parent) = &event.traceparent {
        trace_context::parse_traceparent(parent)?;
    }
    if let Some(state) = &event.tracestate {
        trace_context::check_tracestate(state)?;
    }
    Ok(())
}

/// The stream fields of `event` (a new id when it has none), checked with
/// the dispatcher's own parser: what it would dead-letter is refused here.
pub fn entry_fields(event: &NewEvent) -> Result<Vec<(&'static str, String)>, PublishError> {
    for (field, text) in [("data", Some(&event.data)), ("changes", event.changes.as_ref())] {
        if let Some(text) = text
            && !is_json_object(text)
        {
            return Err(PublishError::NotAnObject { field });
        }
    }
    let mut fields: Vec<(&'static str, String)> = vec![
        ("org", event.org.clone()),
        ("name", event.name.as_str().to_string()),
        ("data", event.data.clone()),
        ("id", event.id.clone().unwrap_or_else(new_event_id)),
    ];
    if let Some(changes) = &event.changes {
        fields.push(("changes", changes.clone()));
    }
    if let Some(at) = event.created_at {
        fields.push(("createdAt", at.to_string()));
    }
    if let Some(hook) = &event.hook {
        fields.push(("hook", hook.clone()));
    }
    check_trace_context(event)?;
    if let Some(parent) = &event.traceparent {
        fields.push((TRACEPARENT, parent.clone()));
    }
    if let Some(state) = &event.tracestate {
        fields.push((TRACESTATE, state.clone()));
    }
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENTRY_BYTES {
        return Err(PublishError::TooLarge(size));
    }
    let as_read: HashMap<String, Vec<u8>> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    parse_entry("0-1", &as_read)?;
    Ok(fields)
}

/// Appends `event` to the events stream of its org's shard under
/// `prefix`, reading the shard count the dispatchers stored (one GET more;
/// [`Publisher`] reads it once), with the default [`PublishOptions`].
pub async fn publish<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
    event: &NewEvent,
) -> Result<Published, PublishError> {
    publish_with(conn, prefix, event, &PublishOptions::default()).await
}

/// [`publish`] with `options`.
pub async fn publish_with<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
    event: &NewEvent,
    options: &PublishOptions,
) -> Result<Published, PublishError> {
    options.check()?;
    let window = Window::new(options);
    let shards = shard_count(conn, prefix, &window).await?;
    publish_sharded(conn, prefix, shards, event, &window).await
}

/// One publish's time to keep trying.
struct Window {
    started: Instant,
    deadline: Instant,
    /// `WAIT numreplicas timeout` after the append, when asked for.
    wait: Option<(u32, Duration)>,
}

impl Window {
    fn new(options: &PublishOptions) -> Self {
        let started = Instant::now();
        Window {
            started,
            deadline: started + options.retry_timeout,
            wait: (options.wait_replicas > 0).then_some((options.wait_replicas, options.wait_timeout)),
        }
    }
}

/// The shard count the dispatchers stored, waiting for it while Redis
/// holds none, until the window's deadline.
///
/// Why wait, then refuse: guessing (one shard) would put the events of
/// every org of another shard on shard 0, whose consumers dead-letter
/// them `wrong_shard`: accepted, and not delivered. A producer wants its
/// event delivered or to be told it was not. After a Redis flush or a
/// restart without persistence the dispatchers write the count again
/// within about a second, so waiting rides that out as a fail-over is;
/// a count still missing at the deadline means no dispatcher runs under
/// this prefix (none deployed yet, or a mistyped `--redis-prefix`), which
/// the producer must hear about rather than write where no one reads.
async fn shard_count<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
    window: &Window,
) -> Result<usize, PublishError> {
    let key = Keys::new(prefix).shard_count();
    let mut get = redis::cmd("GET");
    get.arg(&key);
    loop {
        let stored: Option<String> = query_retrying(conn, &get, window.deadline)
            .await
            .map_err(|failed| {
                PublishError::redis(
                    format!("reading the shard count from {key}"),
                    failed,
                    window.started,
                    false,
                )
            })?
            .value;
        match parse_shard_count(stored.as_deref()) {
            Some(count) => return Ok(count),
            None if Instant::now() + SHARD_COUNT_POLL < window.deadline => {
                tokio::time::sleep(SHARD_COUNT_POLL).await;
            }
            None => {
                return Err(PublishError::NoShardCount {
                    source: NoShardCount { key },
                    waited: window.started.elapsed(),
                });
            }
        }
    }
}

/// Publishes many events over one connection, reading the shard count
/// once. The count only changes with the procedure of
/// docs/src/redis.md#changing-the-shard-count, which stops producers first.
pub struct Publisher<C> {
    conn: C,
    prefix: String,
    shards: usize,
    options: PublishOptions,
}

impl<C: redis::aio::ConnectionLike + Send + Sync> Publisher<C> {
    /// A publisher under `prefix` (reads the shard count) with the default
    /// [`PublishOptions`].
    pub async fn new(conn: C, prefix: &str) -> Result<Self, PublishError> {
        Publisher::with_options(conn, prefix, PublishOptions::default()).await
    }

    /// A publisher under `prefix` with `options` (reads the shard count).
    pub async fn with_options(mut conn: C, prefix: &str, options: PublishOptions) -> Result<Self, PublishError> {
        options.check()?;
        let shards = shard_count(&mut conn, prefix, &Window::new(&options)).await?;
        Ok(Publisher {
            conn,
            prefix: prefix.to_string(),
            shards,
            options,
        })
    }

    /// Appends `event` to its org's shard.
    pub async fn publish(&mut self, event: &NewEvent) -> Result<Published, PublishError> {
        let window = Window::new(&self.options);
        publish_sharded(&mut self.conn, &self.prefix, self.shards, event, &window).await
    }
}

/// The events stream `org`'s events go to, among `shards` shards under `prefix`.
pub fn stream_of(prefix: &str, shards: usize, org: &str) -> Result<String, PublishError> {
    let k = shard_of(org, shards);
    let shard_prefix = shard_prefix(prefix, k).map_err(|e| PublishError::Prefix(e.to_string()))?;
    Ok(Keys::new(&shard_prefix).events())
}

async fn publish_sharded<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    prefix: &str,
    shards: usize,
    event: &NewEvent,
    window: &Window,
) -> Result<Published, PublishError> {
    // The id is chosen once: a retried append carries the same one.
    let fields = entry_fields(event)?;
    let event_id = fields
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let stream = stream_of(prefix, shards, &event.org)?;
    let mut xadd = redis::cmd("XADD");
    xadd.arg(&stream).arg("*").arg(&fields);
    let failed = |failed: Failed| {
        let what = format!("appending event {event_id} to {stream}");
        // With a WAIT, an error reply may be the WAIT's, after the append.
        let waited = window.wait.is_some() && failed.failure == Failure::Permanent;
        let mut error = PublishError::redis(what, failed, window.started, true);
        if let PublishError::Redis { maybe_appended, .. } = &mut error {
            *maybe_appended |= waited;
        }
        error
    };
    let (answer, acknowledged) = match window.wait {
        None => {
            let answer = query_retrying::<_, String>(conn, &xadd, window.deadline)
                .await
                .map_err(failed)?;
            (answer, None)
        }
        Some((replicas, timeout)) => {
            // One round trip, one connection: `WAIT` counts the replicas
            // that hold every write this connection sent, so it must
            // follow the `XADD` there (on a Cluster the pipeline goes to
            // the node of the stream's slot; on Sentinel, to one primary
            // even if a switch comes between the two). The deadline leaves
            // the last attempt its whole wait, so a slow WAIT is not taken
            // for a lost answer and appended again.
            let mut pipeline = redis::pipe();
            pipeline.add_command(xadd.clone());
            pipeline
                .cmd("WAIT")
                .arg(replicas)
                .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
            let answer =
                request_retrying::<_, (String, i64)>(conn, Request::Pipeline(&pipeline), window.deadline + timeout)
                    .await
                    .map_err(failed)?;
            let (entry_id, acknowledged) = answer.value;
            let answer = crate::store::connection::retry::Answer {
                value: entry_id,
                attempts: answer.attempts,
                maybe_repeated: answer.maybe_repeated,
            };
            (answer, Some((acknowledged, replicas, timeout)))
        }
    };
    if answer.maybe_repeated {
        tracing::warn!(
            event = %event_id, %stream, attempts = answer.attempts,
            "appended after an attempt whose connection broke, which may have landed too: the event may be in the stream twice (same id; receivers deduplicate by webhook-id)"
        );
    }
    if let Some((acknowledged, wanted, timeout)) = acknowledged
        && acknowledged < i64::from(wanted)
    {
        return Err(PublishError::NotReplicated {
            event_id,
            stream,
            entry_id: answer.value,
            acknowledged,
            wanted,
            timeout,
        });
    }
    Ok(Published {
        entry_id: answer.value,
        event_id,
        attempts: answer.attempts,
        possibly_duplicated: answer.maybe_repeated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_for_replicas_needs_a_timeout_above_zero_and_within_bounds() {
        let wait = |replicas, ms| PublishOptions {
            wait_replicas: replicas,
            wait_timeout: Duration::from_millis(ms),
            ..PublishOptions::default()
        };
        assert!(PublishOptions::default().check().is_ok());
        assert!(wait(1, 1000).check().is_ok());
        assert!(wait(0, 0).check().is_ok(), "no wait, no timeout needed");
        for bad in [wait(1, 0), wait(2, 5001)] {
            let message = bad.check().unwrap_err().to_string();
            assert!(message.contains("--wait-timeout"), "{message}");
        }
    }

    #[test]
    fn what_the_dispatcher_would_dead_letter_is_refused_before_the_stream() {
        let ok = NewEvent::from_json_text("acme", EventName::ConversationCreate, r#"{"id":"c1"}"#).expect("an event");
        let fields = entry_fields(&ok).expect("a valid event");
        assert!(fields.iter().any(|(k, v)| *k == "id" && v.len() == 24));

        let mut bad_org = ok.clone();
        bad_org.org = "Acme!".into();
        let mut bad_id = ok.clone();
        bad_id.id = Some("has space".into());
        let mut long_id = ok.clone();
        long_id.id = Some("a".repeat(129));
        let mut bad_hook = ok.clone();
        bad_hook.hook = Some("acme/ecomm".into());
        let mut good_hook = ok.clone();
        good_hook.hook = Some("ecomm-store".into());
        assert!(
            entry_fields(&good_hook)
                .expect("a test event")
                .contains(&("hook", "ecomm-store".to_string()))
        );
        for (event, code) in [
            (bad_org, "bad_org"),
            (bad_id, "bad_id"),
            (long_id, "bad_id"),
            (bad_hook, "bad_hook"),
        ] {
            match entry_fields(&event) {
                Err(PublishError::Refused(m)) => assert_eq!(m.code(), code),
                other => panic!("{code}: {other:?}"),
            }
        }
        let mut huge = ok.clone();
        huge.data = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_ENTRY_BYTES));
        assert!(matches!(entry_fields(&huge), Err(PublishError::TooLarge(_))));

        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = ok.clone();
        traced.traceparent = Some(parent.into());
        traced.tracestate = Some("vendor=abc".into());
        let fields = entry_fields(&traced).expect("a valid trace context");
        assert!(fields.contains(&("traceparent", parent.to_string())));
        assert!(fields.contains(&("tracestate", "vendor=abc".to_string())));
        let mut bad_parent = ok.clone();
        bad_parent.traceparent = Some("00-abc".into());
        let mut bad_state = traced.clone();
        bad_state.tracestate = Some("no value".into());
        let mut lone_state = ok.clone();
        lone_state.tracestate = Some("a=b".into());
        for (event, field) in [
            (bad_parent, "traceparent"),
            (bad_state, "tracestate"),
            (lone_state, "tracestate"),
        ] {
            let message = entry_fields(&event).expect_err("refused").to_string();
            assert!(message.starts_with(&format!("invalid {field}: ")), "{message}");
        }
    }
}
