//! The events stream's entry format (docs/src/contract.md#publishing-events) and its
//! validation: an entry either becomes an [`Event`] or a dead-letter reason.

use std::collections::HashMap;

use crate::contract::event_name::EventName;
use crate::wire::trace_context::{self, ProducerTrace, TRACEPARENT, TRACESTATE, TraceContextError};

/// Largest entry accepted, counting field names and values.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// Longest event id accepted.
pub const MAX_ID_BYTES: usize = 128;

/// Most characters of a field value a reason quotes: a reason (and its log
/// line) stays small however large the offending field.
const EXCERPT_CHARS: usize = 100;

/// `value`, cut to [`EXCERPT_CHARS`] characters (marked when cut).
fn excerpt(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}... ({} bytes)", value.len())
    } else {
        head
    }
}

/// Whether `id` may be an event id: 1 to 128 of `[A-Za-z0-9._:-]`.
pub fn is_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A validated event, ready to be routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event id: the entry's `id` field, or derived from the entry id.
    pub id: String,
    /// The org, i.e. the namespace whose hooks receive it.
    pub org: String,
    /// The trigger event name.
    pub name: EventName,
    /// `data` exactly as published (a JSON object, surrounding whitespace trimmed).
    pub data: String,
    /// `changes` as published, when given (a JSON object).
    pub changes: Option<String>,
    /// Creation time in Unix milliseconds.
    pub created_at_ms: i64,
    /// The one hook (a name within `org`) the entry is for, whatever its
    /// subscribed events: a test event. `None`: every subscribed hook.
    pub hook: Option<String>,
    /// The producer's W3C trace context, when it gave a valid `traceparent`.
    pub trace: Option<ProducerTrace>,
    /// What of the entry's `traceparent`/`tracestate` was ignored, and
    /// why: a bad value never stops a delivery, it is counted.
    pub trace_ignored: Option<TraceContextError>,
}

/// Why an entry cannot be delivered; becomes the dead letter's `reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEntry {
    /// The entry lacks the `org` field.
    #[error("missing field org")]
    MissingOrg,
    /// The entry lacks the `name` field.
    #[error("missing field name")]
    MissingName,
    /// The entry lacks the `data` field.
    #[error("missing field data")]
    MissingData,
    /// `name` is not one of the ten trigger events.
    #[error("unknown event name {0:?}")]
    UnknownEvent(String),
    /// `data` is not a JSON object.
    #[error("data is not a JSON object: {0}")]
    DataNotObject(String),
    /// `changes` is given but not a JSON object.
    #[error("changes is not a JSON object: {0}")]
    ChangesNotObject(String),
    /// `createdAt` is not an RFC 3339 time.
    #[error("createdAt is not an RFC 3339 time: {0:?}")]
    BadCreatedAt(String),
    /// `org` is not a namespace name.
    #[error("org {0:?} is not a valid namespace name")]
    BadOrg(String),
    /// `id` is empty, too long, or has characters a header value or key
    /// should not carry.
    #[error("id must be 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ : -")]
    BadId,
    /// `hook` is not a Kubernetes object name.
    #[error("hook {0:?} is not a valid OutboundWebhook name (lowercase letters, digits, '-' and '.', at most 253)")]
    BadHook(String),
    /// A field is not UTF-8.
    #[error("field {0} is not UTF-8 text")]
    NotUtf8(String),
    /// The entry exceeds [`MAX_ENTRY_BYTES`].
    #[error("entry of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
}

/// The short, stable code of the reason (a metric label value).
impl MalformedEntry {
    /// A short machine-readable code of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            MalformedEntry::MissingOrg => "missing_org",
            MalformedEntry::MissingName => "missing_name",
            MalformedEntry::MissingData => "missing_data",
            MalformedEntry::UnknownEvent(_) => "unknown_event",
            MalformedEntry::DataNotObject(_) => "data_not_object",
            MalformedEntry::ChangesNotObject(_) => "changes_not_object",
            MalformedEntry::BadCreatedAt(_) => "bad_created_at",
            MalformedEntry::BadOrg(_) => "bad_org",
            MalformedEntry::BadId => "bad_id",
            MalformedEntry::BadHook(_) => "bad_hook",
            MalformedEntry::NotUtf8(_) => "not_utf8",
            MalformedEntry::TooLarge(_) => "too_large",
        }
    }
}

/// Unix milliseconds of a stream entry id (`<ms>-<seq>`).
pub fn entry_id_millis(entry_id: &str) -> Option<i64> {
    entry_id.split('-').next()?.parse().ok()
}

/// The event id of an entry published without `id`: 24 hex characters
/// from the entry id (11 for the milliseconds, 13 for the sequence), the
/// same on every read of that entry.
pub fn derived_event_id(entry_id: &str) -> String {
    let (ms, seq) = entry_id.split_once('-').unwrap_or((entry_id, "0"));
    let ms: u64 = ms.parse().unwrap_or_default();
    let seq: u64 = seq.parse().unwrap_or_default();
    format!("{ms:011x}{seq:013x}")
}

/// A new unique event id: 24 lowercase hex characters (like Kustomer's ids).
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    hex::encode(bytes)
}

fn is_namespace_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` may name a Kubernetes object (an RFC 1123 subdomain: at
/// most 253 characters, dot-separated labels of lowercase letters, digits
/// and '-', each starting and ending with a letter or digit).
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn json_object(text: &str) -> Result<(), String> {
    // The common case, a valid object, is checked without building a tree
    // (no allocation per key); only a failure is parsed again to say why.
    if text.starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!("got a JSON {}", json_kind(&other))),
        Err(e) => Err(e.to_string()),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Validates a raw entry (field name -> bytes) read from the stream.
pub fn parse_entry(entry_id: &str, fields: &HashMap<String, Vec<u8>>) -> Result<Event, MalformedEntry> {
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENTRY_BYTES {
        return Err(MalformedEntry::TooLarge(size));
    }
    let text = |field: &str| -> Result<Option<&str>, MalformedEntry> {
        match fields.get(field) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| MalformedEntry::NotUtf8(field.to_string())),
        }
    };
    let org = text("org")?
        .filter(|s| !s.is_empty())
        .ok_or(MalformedEntry::MissingOrg)?;
    let name = text("name")?
        .filter(|s| !s.is_empty())
        .ok_or(MalformedEntry::MissingName)?;
    let name: EventName = name.parse().map_err(|_| MalformedEntry::UnknownEvent(excerpt(name)))?;
    if !is_namespace_name(org) {
        return Err(MalformedEntry::BadOrg(excerpt(org)));
    }
    let data = text("data")?.ok_or(MalformedEntry::MissingData)?.trim();
    json_object(data).map_err(MalformedEntry::DataNotObject)?;
    let changes = match text("changes")? {
        Some(c) if !c.trim().is_empty() => {
            json_object(c.trim()).map_err(MalformedEntry::ChangesNotObject)?;
            Some(c.trim().to_string())
        }
        _ => None,
    };
    let id = match text("id")? {
        Some(id) => {
            if !is_event_id(id) {
                return Err(MalformedEntry::BadId);
            }
            id.to_string()
        }
        // Derived from the entry id so that a re-read of the same entry
        // (after a crash) yields the same event id and the same tasks.
        None => derived_event_id(entry_id),
    };
    let created_at_ms = match text("createdAt")? {
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|_| MalformedEntry::BadCreatedAt(excerpt(t)))?
            .as_millisecond(),
        None => entry_id_millis(entry_id).unwrap_or_default(),
    };
    let hook = match text("hook")? {
        Some(h) if is_object_name(h) => Some(h.to_string()),
        Some(h) => return Err(MalformedEntry::BadHook(excerpt(h))),
        None => None,
    };
    // Not a reason to refuse the entry: a bad trace context is dropped
    // (the event starts a trace of its own) and counted.
    let (trace, trace_ignored) = match (text(TRACEPARENT), text(TRACESTATE)) {
        (Ok(parent), Ok(state)) => trace_context::read_fields(parent, state),
        _ => (None, Some(TraceContextError::Format)),
    };
    Ok(Event {
        id,
        org: org.to_string(),
        name,
        data: data.to_string(),
        changes,
        created_at_ms,
        hook,
        trace,
        trace_ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_complete_entry_parses() {
        let e = parse_entry(
            "1700000000000-0",
            &entry(&[
                ("org", "acme"),
                ("name", "kustomer.conversation.create"),
                ("data", " {\"type\":\"conversation\"} "),
                ("changes", "{\"a\":1}"),
                ("id", "abc"),
                ("createdAt", "2026-11-27T10:00:00Z"),
            ]),
        )
        .unwrap();
        assert_eq!(e.id, "abc");
        assert_eq!(e.org, "acme");
        assert_eq!(e.name, EventName::ConversationCreate);
        assert_eq!(e.data, "{\"type\":\"conversation\"}");
        assert_eq!(e.changes.as_deref(), Some("{\"a\":1}"));
        assert_eq!(e.created_at_ms, 1_795_773_600_000);
        assert_eq!(e.hook, None);
    }

    #[test]
    fn the_hook_field_names_one_hook_of_the_org() {
        let with = |hook: &str| {
            parse_entry(
                "1-0",
                &entry(&[
                    ("org", "acme"),
                    ("name", "kustomer.user.create"),
                    ("data", "{}"),
                    ("hook", hook),
                ]),
            )
        };
        for good in ["ecomm-store", "a", "hook.v2", "0abc", &"a".repeat(253)] {
            assert_eq!(with(good).unwrap().hook.as_deref(), Some(good), "{good:?}");
        }
        for bad in [
            "",
            "Ecomm",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a b",
            "acme/h",
            "é",
            &"a".repeat(254),
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.code(), "bad_hook", "{bad:?}");
            assert!(err.to_string().len() < 300);
        }
    }

    #[test]
    fn defaults_come_from_the_entry_id_and_are_stable() {
        let fields = entry(&[("org", "acme"), ("name", "kustomer.user.create"), ("data", "{}")]);
        let a = parse_entry("1700000000123-7", &fields).unwrap();
        let b = parse_entry("1700000000123-7", &fields).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 24);
        assert_eq!(a.id, "18bcfe5687b0000000000007");
        assert_ne!(derived_event_id("1-23"), derived_event_id("12-3"));
        assert_eq!(a.created_at_ms, 1_700_000_000_123);
        assert_eq!(a.changes, None);
    }

    #[test]
    fn each_kind_of_malformed_entry_has_its_reason() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("name", "kustomer.user.create"), ("data", "{}")], "missing_org"),
            (vec![("org", "acme"), ("data", "{}")], "missing_name"),
            (
                vec![("org", "acme"), ("name", "kustomer.order.create"), ("data", "{}")],
                "unknown_event",
            ),
            (
                vec![("org", "acme"), ("name", "kustomer.user.create"), ("data", "[1]")],
                "data_not_object",
            ),
            (
                vec![("org", "acme"), ("name", "kustomer.user.create"), ("data", "{")],
                "data_not_object",
            ),
            (vec![("org", "acme"), ("name", "kustomer.user.create")], "missing_data"),
            (
                vec![("org", "Acme!"), ("name", "kustomer.user.create"), ("data", "{}")],
                "bad_org",
            ),
            (
                vec![
                    ("org", "acme"),
                    ("name", "kustomer.user.create"),
                    ("data", "{}"),
                    ("changes", "1"),
                ],
                "changes_not_object",
            ),
        ];
        for (pairs, code) in cases {
            let err = parse_entry("1-0", &entry(&pairs)).unwrap_err();
            assert_eq!(err.code(), code, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn ids_are_1_to_128_of_a_small_alphabet_and_reasons_stay_short() {
        assert!(is_event_id("evt_01:a-b.c"));
        assert!(is_event_id(&"a".repeat(128)));
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            assert!(!is_event_id(bad), "{bad:?}");
            let fields = entry(&[
                ("org", "acme"),
                ("name", "kustomer.user.create"),
                ("data", "{}"),
                ("id", bad),
            ]);
            assert_eq!(parse_entry("1-0", &fields).unwrap_err(), MalformedEntry::BadId);
        }
        // A 1 MiB field does not make a 1 MiB reason.
        let huge = "x".repeat(MAX_ENTRY_BYTES - 100);
        let err = parse_entry("1-0", &entry(&[("org", "acme"), ("name", &huge), ("data", "{}")])).unwrap_err();
        assert_eq!(err.code(), "unknown_event");
        assert!(err.to_string().len() < 300, "{} bytes", err.to_string().len());
        assert!(err.to_string().contains(&format!("({} bytes)", huge.len())));
    }

    #[test]
    fn entries_over_one_mebibyte_are_refused() {
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_ENTRY_BYTES));
        let err = parse_entry(
            "1-0",
            &entry(&[("org", "acme"), ("name", "kustomer.user.create"), ("data", &big)]),
        )
        .unwrap_err();
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn a_bad_trace_context_is_ignored_not_a_reason_to_refuse() {
        let base = [("org", "acme"), ("name", "kustomer.user.create"), ("data", "{}")];
        let with = |more: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(more);
            parse_entry("1-0", &entry(&pairs)).expect("delivered all the same")
        };
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = with(&[("traceparent", good), ("tracestate", "a=b")]);
        assert_eq!(e.trace.as_ref().map(|t| t.traceparent.as_str()), Some(good));
        assert_eq!(e.trace.and_then(|t| t.tracestate).as_deref(), Some("a=b"));
        assert_eq!(e.trace_ignored, None);
        let e = with(&[("traceparent", "00-zz"), ("tracestate", "a=b")]);
        assert_eq!((e.trace, e.trace_ignored), (None, Some(TraceContextError::Format)));
        let mut fields = entry(&base);
        fields.insert("traceparent".into(), vec![0xff, 0xfe]);
        let e = parse_entry("1-0", &fields).unwrap();
        assert_eq!((e.trace, e.trace_ignored), (None, Some(TraceContextError::Format)));
        let e = with(&[]);
        assert_eq!((e.trace, e.trace_ignored), (None, None));
    }

    #[test]
    fn new_event_ids_are_24_hex() {
        let id = new_event_id();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_event_id());
    }
}
