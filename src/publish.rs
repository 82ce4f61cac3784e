//! The producer side: append one event to the events stream.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use outbound_webhooks::{EventName, publish::{NewEvent, publish}};
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let event = NewEvent::new("acme", EventName::ConversationCreate, serde_json::json!({"type": "conversation"}))?;
//! let published = publish(&mut conn, "{outbound-webhooks}:", &event).await?;
//! println!("event {} is entry {}", published.event_id, published.entry_id);
//! # Ok(()) }
//! ```
//!
//! Never with `MAXLEN`: trimming is the dispatcher's job, because a capped
//! XADD can drop entries no dispatcher has read yet.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    dispatcher::store::{Keys, NoShardCount, stored_shard_count},
    event_name::EventName,
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
    /// How long to keep trying while Redis holds no shard count (after a
    /// flush, until a dispatcher writes it again).
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
    #[error("{source} (waited {waited:?})")]
    NoShardCount {
        /// The key that should hold it.
        source: NoShardCount,
        /// How long publishing waited for it.
        waited: Duration,
    },
    /// Redis refused the XADD.
    #[error("appending to {stream}: {source}")]
    Redis {
        /// The events stream key.
        stream: String,
        /// The Redis error.
        source: redis::RedisError,
    },
}

/// What was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The stream entry id.
    pub entry_id: String,
    /// The event id receivers see as `id` and `webhook-id`.
    pub event_id: String,
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
    let shards = shard_count(conn, prefix, options).await?;
    publish_sharded(conn, prefix, shards, event).await
}

/// The shard count the dispatchers stored, waiting for it while Redis
/// holds none, up to `options.retry_timeout`.
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
    options: &PublishOptions,
) -> Result<usize, PublishError> {
    let started = Instant::now();
    let key = Keys::new(prefix).shard_count();
    loop {
        match stored_shard_count(conn, prefix).await {
            Ok(Some(count)) => return Ok(count),
            Ok(None) if started.elapsed() + SHARD_COUNT_POLL < options.retry_timeout => {
                tokio::time::sleep(SHARD_COUNT_POLL).await;
            }
            Ok(None) => {
                return Err(PublishError::NoShardCount {
                    source: NoShardCount { key },
                    waited: started.elapsed(),
                });
            }
            Err(source) => return Err(PublishError::Redis { stream: key, source }),
        }
    }
}

/// Publishes many events over one connection, reading the shard count
/// once. The count only changes with the procedure in README ("Changing
/// the shard count"), which stops producers first.
pub struct Publisher<C> {
    conn: C,
    prefix: String,
    shards: usize,
}

impl<C: redis::aio::ConnectionLike + Send + Sync> Publisher<C> {
    /// A publisher under `prefix` (reads the shard count) with the default
    /// [`PublishOptions`].
    pub async fn new(conn: C, prefix: &str) -> Result<Self, PublishError> {
        Publisher::with_options(conn, prefix, PublishOptions::default()).await
    }

    /// A publisher under `prefix` with `options` (reads the shard count).
    pub async fn with_options(mut conn: C, prefix: &str, options: PublishOptions) -> Result<Self, PublishError> {
        let shards = shard_count(&mut conn, prefix, &options).await?;
        Ok(Publisher {
            conn,
            prefix: prefix.to_string(),
            shards,
        })
    }

    /// Appends `event` to its org's shard.
    pub async fn publish(&mut self, event: &NewEvent) -> Result<Published, PublishError> {
        publish_sharded(&mut self.conn, &self.prefix, self.shards, event).await
    }
}

/// The events stream `org`'s events go to, among `shards` shards under `prefix`.
pub fn stream_of(prefix: &str, shards: usize, org: &str) -> Result<String, PublishError> {
    let k = shard_of(org, shards);
    let shard_prefix = shard_prefix(prefix, k).map_err(|e| PublishError::Prefix(e.to_string()))?;
    Ok(Keys::new(&shard_prefix).events())
}

async fn publish_sharded<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    prefix: &str,
    shards: usize,
    event: &NewEvent,
) -> Result<Published, PublishError> {
    let fields = entry_fields(event)?;
    let event_id = fields
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let stream = stream_of(prefix, shards, &event.org)?;
    let entry_id: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&fields)
        .query_async(conn)
        .await
        .map_err(|source| PublishError::Redis {
            stream: stream.clone(),
            source,
        })?;
    Ok(Published { entry_id, event_id })
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
