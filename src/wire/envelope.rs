//! The Kustomer event envelope: the exact body bytes POSTed to receivers.
//!
//! Built once per event and stored with each delivery task, so every attempt
//! sends identical bytes (signatures of different attempts differ only by
//! their timestamp).

use crate::wire::stream_entry::Event;

/// Formats Unix milliseconds as `2026-11-27T10:00:00.000Z`.
pub fn format_created_at(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// The envelope of docs/src/contract.md#the-delivery, field order as Kustomer sends it:
/// `id, name, org, partition, data, createdAt, [changes], persist`.
/// `data` and `changes` are embedded as published (already validated JSON objects).
pub fn build(event: &Event) -> Vec<u8> {
    let quote = |s: &str| serde_json::to_string(s).expect("strings always serialize");
    let mut body = String::with_capacity(event.data.len() + 256);
    body.push_str("{\"id\":");
    body.push_str(&quote(&event.id));
    body.push_str(",\"name\":");
    body.push_str(&quote(event.name.as_str()));
    body.push_str(",\"org\":");
    body.push_str(&quote(&event.org));
    body.push_str(",\"partition\":");
    body.push_str(&quote(&event.org));
    body.push_str(",\"data\":");
    body.push_str(&event.data);
    body.push_str(",\"createdAt\":");
    body.push_str(&quote(&format_created_at(event.created_at_ms)));
    if let Some(changes) = &event.changes {
        body.push_str(",\"changes\":");
        body.push_str(changes);
    }
    body.push_str(",\"persist\":true}");
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::event_name::EventName;

    fn event(changes: Option<&str>) -> Event {
        Event {
            id: "5f1e2d3c4b5a69788796a5b4".into(),
            org: "acme".into(),
            name: EventName::ConversationCreate,
            data: "{\"type\":\"conversation\",\"id\":\"c1\",\"attributes\":{\"b\":1,\"a\":\"x\"}}".into(),
            changes: changes.map(str::to_string),
            created_at_ms: 1_795_773_600_000,
            hook: None,
            trace: None,
            trace_ignored: None,
        }
    }

    #[test]
    fn envelope_bytes_are_exactly_the_spec_shape() {
        assert_eq!(
            String::from_utf8(build(&event(None))).unwrap(),
            "{\"id\":\"5f1e2d3c4b5a69788796a5b4\",\"name\":\"kustomer.conversation.create\",\"org\":\"acme\",\
             \"partition\":\"acme\",\"data\":{\"type\":\"conversation\",\"id\":\"c1\",\"attributes\":{\"b\":1,\"a\":\"x\"}},\
             \"createdAt\":\"2026-11-27T10:00:00.000Z\",\"persist\":true}"
        );
    }

    #[test]
    fn changes_come_before_persist_when_given() {
        let body = String::from_utf8(build(&event(Some("{\"x\":{\"before\":1}}")))).unwrap();
        assert!(
            body.ends_with(
                ",\"createdAt\":\"2026-11-27T10:00:00.000Z\",\"changes\":{\"x\":{\"before\":1}},\"persist\":true}"
            ),
            "{body}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["changes"]["x"]["before"], 1);
    }

    #[test]
    fn created_at_has_milliseconds() {
        assert_eq!(format_created_at(1_795_773_600_042), "2026-11-27T10:00:00.042Z");
    }
}
