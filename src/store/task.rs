//! A delivery task's Redis hash and a dead letter's fields: the field names
//! live here only (the scripts get them as arguments).

use std::collections::HashMap;

use crate::wire::trace_context::{ProducerTrace, TRACEPARENT, TRACESTATE};

/// Field names of a task hash and of a dead letter.
pub mod field {
    /// The hook's `namespace/name`.
    pub const HOOK: &str = "hook";
    /// The hook's UID.
    pub const UID: &str = "uid";
    /// The event id.
    pub const EVENT_ID: &str = "event_id";
    /// The event name.
    pub const EVENT: &str = "event";
    /// The org.
    pub const ORG: &str = "org";
    /// The envelope bytes.
    pub const BODY: &str = "body";
    /// Attempts made so far.
    pub const ATTEMPTS: &str = "attempts";
    /// Unix ms of the first attempt (0 before it).
    pub const FIRST_ATTEMPT_MS: &str = "first_attempt_ms";
    /// Unix ms the task was stored.
    pub const CREATED_MS: &str = "created_ms";
    /// The last attempt's error.
    pub const LAST_ERROR: &str = "last_error";
    /// Dead letters: why it was given up on.
    pub const REASON: &str = "reason";
    /// Dead letters: when (Unix ms).
    pub const FAILED_AT_MS: &str = "failed_at_ms";
    /// The events-stream entry id the event came from (tasks and their
    /// dead letters; malformed entries' dead letters too). It tells an
    /// entry read again from a second entry reusing the event id.
    pub const ENTRY_ID: &str = "entry_id";
    /// Tasks: the size (bytes of its other fields' names and values) its
    /// org's count holds for it; absent in tasks stored before it (0).
    pub const BYTES: &str = "bytes";
    /// Dead letters of malformed entries: what precedes each original field.
    pub const ENTRY_PREFIX: &str = "entry.";
    /// The producer's W3C `traceparent`, when it gave one: retries stay in
    /// its trace.
    pub const TRACEPARENT: &str = super::TRACEPARENT;
    /// The producer's `tracestate`, when it gave one with its traceparent.
    pub const TRACESTATE: &str = super::TRACESTATE;
}

/// The fields of a task hash as stored, in the order [`NewTask::values`]
/// gives their values. `route.lua` reads the first as the task's source
/// entry id. The last [`OPTIONAL_STORED_FIELDS`] are stored only when not
/// empty (most events carry no trace context).
pub const STORED_FIELDS: [&str; 12] = [
    field::ENTRY_ID,
    field::HOOK,
    field::UID,
    field::EVENT_ID,
    field::EVENT,
    field::ORG,
    field::BODY,
    field::ATTEMPTS,
    field::FIRST_ATTEMPT_MS,
    field::CREATED_MS,
    field::TRACEPARENT,
    field::TRACESTATE,
];

/// How many of the last [`STORED_FIELDS`] are left out when empty.
pub const OPTIONAL_STORED_FIELDS: usize = 2;

/// The pairs of [`STORED_FIELDS`] and `values` to store: an optional field
/// only when it has a value.
pub fn stored_pairs(values: [&[u8]; 12]) -> impl Iterator<Item = (&'static str, &[u8])> {
    STORED_FIELDS
        .into_iter()
        .zip(values)
        .enumerate()
        .filter(|(i, (_, v))| *i < STORED_FIELDS.len() - OPTIONAL_STORED_FIELDS || !v.is_empty())
        .map(|(_, pair)| pair)
}

/// Task fields a dead letter leaves out (they mean nothing after it).
pub const NOT_IN_DEAD_LETTERS: [&str; 3] = [field::FIRST_ATTEMPT_MS, field::CREATED_MS, field::BYTES];

/// Task fields the dead letter of a task refused at its org's budget
/// leaves out: its body too, which is what did not fit.
pub const NOT_IN_REFUSED_LETTERS: [&str; 4] = [field::BODY, field::FIRST_ATTEMPT_MS, field::CREATED_MS, field::BYTES];

/// What a task delivers, to which hook: the part of a task that is the
/// same whether it is new, stored or dead-lettered.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// The hook's `namespace/name`.
    pub hook: String,
    /// The hook's UID.
    pub uid: String,
    /// The event id.
    pub event_id: String,
    /// The event name.
    pub event: String,
    /// The org.
    pub org: String,
    /// The envelope bytes (shared, not copied, between an event's hooks).
    pub body: bytes::Bytes,
    /// The events-stream entry id it came from (empty when unknown: a
    /// dead letter written before this field existed).
    pub entry_id: String,
    /// The producer's trace context, when it gave one (checked when the
    /// entry was read).
    pub trace: Option<ProducerTrace>,
}

/// The trace context stored in `fields` (a task hash or a dead letter).
fn trace_of(fields: &HashMap<String, Vec<u8>>) -> Option<ProducerTrace> {
    let text = |k: &str| {
        fields
            .get(k)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(ProducerTrace {
        traceparent: text(field::TRACEPARENT)?,
        tracestate: text(field::TRACESTATE),
    })
}

/// A new task to store for one matching hook.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// What it delivers.
    pub delivery: Delivery,
    /// Ms from its storing (Redis's clock) until it comes due; 0: at once.
    /// A task stored by the attempt that is running it is due at that
    /// attempt's lease end.
    pub due_in_ms: i64,
}

impl std::ops::Deref for NewTask {
    type Target = Delivery;
    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

impl NewTask {
    /// The task's member in the due sets.
    pub fn member(&self) -> String {
        super::keys::task_member(&self.uid, &self.event_id)
    }

    /// The values of [`STORED_FIELDS`], for a task stored at `now_ms`
    /// (its decimal digits) with no attempt made. Borrowed, not copied:
    /// the body may be 1 MiB, and each copy made while storing a failed
    /// attempt's task counts against the dispatcher's memory limit.
    pub fn values<'a>(&'a self, now_ms: &'a str) -> [&'a [u8]; 12] {
        let trace = self.trace.as_ref();
        [
            self.entry_id.as_bytes(),
            self.hook.as_bytes(),
            self.uid.as_bytes(),
            self.event_id.as_bytes(),
            self.event.as_bytes(),
            self.org.as_bytes(),
            &self.body,
            b"0",
            b"0",
            now_ms.as_bytes(),
            trace.map_or(b"", |t| t.traceparent.as_bytes()),
            trace.and_then(|t| t.tracestate.as_deref()).map_or(b"", str::as_bytes),
        ]
    }
}

/// A stored task as read back.
#[derive(Clone, Debug, Default)]
pub struct Task {
    /// `{uid}:{event id}`.
    pub member: String,
    /// What it delivers.
    pub delivery: Delivery,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms of the first attempt (0 before it).
    pub first_attempt_ms: i64,
    /// Unix ms the task was stored.
    pub created_ms: i64,
}

impl std::ops::Deref for Task {
    type Target = Delivery;
    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

impl Task {
    /// Decodes a task hash (`HGETALL`); `None` when it is empty (gone).
    pub fn decode(member: &str, mut map: HashMap<String, Vec<u8>>) -> Option<Task> {
        if map.is_empty() {
            return None;
        }
        let text = |map: &HashMap<String, Vec<u8>>, k: &str| {
            map.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        Some(Task {
            member: member.to_string(),
            attempts: text(&map, field::ATTEMPTS).parse().unwrap_or(0),
            first_attempt_ms: text(&map, field::FIRST_ATTEMPT_MS).parse().unwrap_or(0),
            created_ms: text(&map, field::CREATED_MS).parse().unwrap_or(0),
            delivery: Delivery {
                hook: text(&map, field::HOOK),
                uid: text(&map, field::UID),
                event_id: text(&map, field::EVENT_ID),
                event: text(&map, field::EVENT),
                org: text(&map, field::ORG),
                entry_id: text(&map, field::ENTRY_ID),
                trace: trace_of(&map),
                body: bytes::Bytes::from(map.remove(field::BODY).unwrap_or_default()),
            },
        })
    }

    /// The same delivery as a task to store, due `due_in_ms` after it is
    /// stored.
    pub fn to_new(&self, due_in_ms: i64) -> NewTask {
        NewTask {
            delivery: self.delivery.clone(),
            due_in_ms,
        }
    }
}

/// What an attempt changes in its task's hash when it is rescheduled.
pub fn attempt_fields(attempts: u32, first_attempt_ms: i64, last_error: &str) -> [(&'static str, String); 3] {
    [
        (field::ATTEMPTS, attempts.to_string()),
        (field::FIRST_ATTEMPT_MS, first_attempt_ms.to_string()),
        (field::LAST_ERROR, last_error.to_string()),
    ]
}

/// A dead letter as read back for `dead-letter list|replay`.
#[derive(Clone, Debug, Default)]
pub struct DeadLetter {
    /// Stream entry id in the dead-letter stream.
    pub id: String,
    /// All fields.
    pub fields: HashMap<String, Vec<u8>>,
}

impl DeadLetter {
    /// A field as text (lossy), empty when absent.
    pub fn text(&self, field: &str) -> String {
        self.fields
            .get(field)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// The hook's `namespace/name`; empty for a malformed entry.
    pub fn hook(&self) -> String {
        self.text(field::HOOK)
    }

    /// The event name, also of a malformed entry (its original `name`).
    pub fn event(&self) -> String {
        let event = self.text(field::EVENT);
        if event.is_empty() {
            self.text(&format!("{}name", field::ENTRY_PREFIX))
        } else {
            event
        }
    }

    /// Whether it is a delivery (it names a hook) rather than a malformed entry.
    pub fn is_delivery(&self) -> bool {
        !self.hook().is_empty() && !self.text(field::UID).is_empty()
    }

    /// The fields of the stream entry it was made of (none for a
    /// delivery), under their own names.
    pub fn entry(&self) -> HashMap<String, Vec<u8>> {
        self.fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(field::ENTRY_PREFIX)?.to_string(), v.clone())))
            .collect()
    }

    /// The delivery as a task to store again.
    pub fn to_new_task(&self) -> NewTask {
        NewTask {
            delivery: Delivery {
                hook: self.hook(),
                uid: self.text(field::UID),
                event_id: self.text(field::EVENT_ID),
                event: self.text(field::EVENT),
                org: self.text(field::ORG),
                body: bytes::Bytes::from(self.fields.get(field::BODY).cloned().unwrap_or_default()),
                entry_id: self.text(field::ENTRY_ID),
                trace: trace_of(&self.fields),
            },
            due_in_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_task_decodes_to_what_was_stored() {
        let new = NewTask {
            delivery: Delivery {
                hook: "acme/shop".into(),
                uid: "u1".into(),
                event_id: "e1".into(),
                event: "kustomer.conversation.create".into(),
                org: "acme".into(),
                body: bytes::Bytes::from_static(b"{\"id\":\"e1\"}"),
                entry_id: "1-0".into(),
                trace: None,
            },
            due_in_ms: 0,
        };
        let stored = |new: &NewTask| -> HashMap<String, Vec<u8>> {
            stored_pairs(new.values("42"))
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        let map = stored(&new);
        // No trace context given: nothing stored for it.
        assert!(!map.contains_key(field::TRACEPARENT) && !map.contains_key(field::TRACESTATE));
        let task = Task::decode(&new.member(), map).expect("a task");
        assert_eq!(task.member, "u1:e1");
        assert_eq!((task.hook.as_str(), task.uid.as_str()), ("acme/shop", "u1"));
        assert_eq!(task.event_id, "e1");
        assert_eq!(task.entry_id, "1-0");
        assert_eq!(&task.body[..], b"{\"id\":\"e1\"}");
        assert_eq!((task.attempts, task.first_attempt_ms, task.created_ms), (0, 0, 42));
        assert_eq!(task.trace, None);
        assert!(Task::decode("u1:e1", HashMap::new()).is_none());
        // The producer's trace context is kept with the task (retries stay
        // in its trace).
        let traced = ProducerTrace {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("a=b".into()),
        };
        let mut with_trace = new.clone();
        with_trace.delivery.trace = Some(traced.clone());
        let task = Task::decode("u1:e1", stored(&with_trace)).expect("a task");
        assert_eq!(task.trace, Some(traced.clone()));
        with_trace.delivery.trace = Some(ProducerTrace {
            tracestate: None,
            ..traced
        });
        let map = stored(&with_trace);
        assert!(map.contains_key(field::TRACEPARENT) && !map.contains_key(field::TRACESTATE));
    }
}
