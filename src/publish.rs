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
//! [`RedisTarget::connect_without_resends`](crate::redis_conn::RedisTarget::connect_without_resends).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    dispatcher::store::{Keys, NoShardCount, parse_shard_count},
    event_name::EventName,
    redis_retry::{Failed, query_retrying},
    shard::{shard_of, shard_prefix},
    stream_entry::{MAX_ENTRY_BYTES, new_event_id, parse_entry},
};

/// The default key prefix (the hash tag keeps every key in one Cluster slot).
pub const DEFAULT_PREFIX: &str = "{outbound-webhooks}:";

/// How long publishing keeps trying by default before it reports why not.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a missing shard count is read again.
const SHARD_COUNT_POLL: Duration = Duration::from_millis(100);

/// How publishing behaves.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// How long one publish keeps trying: through transient Redis errors
    /// (a fail-over), and while Redis holds no shard count (after a flush,
    /// until a dispatcher writes it again).
    pub retry_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
        }
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
    /// The dispatcher would dead-letter this entry.
    #[error("refused: {0}")]
    Refused(#[from] crate::stream_entry::MalformedEntry),
    /// The prefix has no hash tag.
    #[error("{0}")]
    Prefix(String),
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
    let window = Window::new(options);
    let shards = shard_count(conn, prefix, &window).await?;
    publish_sharded(conn, prefix, shards, event, &window).await
}

/// One publish's time to keep trying.
struct Window {
    started: Instant,
    deadline: Instant,
}

impl Window {
    fn new(options: &PublishOptions) -> Self {
        let started = Instant::now();
        Window {
            started,
            deadline: started + options.retry_timeout,
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
    let answer = query_retrying::<_, String>(conn, &xadd, window.deadline)
        .await
        .map_err(|failed| {
            let what = format!("appending event {event_id} to {stream}");
            PublishError::redis(what, failed, window.started, true)
        })?;
    if answer.maybe_repeated {
        tracing::warn!(
            event = %event_id, %stream, attempts = answer.attempts,
            "appended after an attempt whose connection broke, which may have landed too: the event may be in the stream twice (same id; receivers deduplicate by webhook-id)"
        );
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
        let mut huge = ok;
        huge.data = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_ENTRY_BYTES));
        assert!(matches!(entry_fields(&huge), Err(PublishError::TooLarge(_))));
    }
}
