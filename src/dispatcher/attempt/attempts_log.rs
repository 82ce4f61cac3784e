//! The attempts log (docs/src/contract.md#attempts-log): one record per attempt, kept per
//! hook in Redis (`attempts:{uid}`, newest first, capped at
//! `--attempts-log-size`), read by `outbound-webhooks attempts`.
//!
//! A record holds what on-call needs to see what happened, and never a body
//! (request or response), a header value or a token.

use serde::{Deserialize, Serialize};

/// Most characters of an error text a record keeps.
pub const MAX_ERROR_CHARS: usize = 300;

/// The default `--attempts-log-size`.
pub const DEFAULT_LOG_SIZE: usize = 100;

/// How one attempt ended, finer than the attempt's `Outcome` (`outbound.rs`): what the
/// log's OUTCOME column shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// A 2xx answer.
    Delivered,
    /// Another answer (3xx, 4xx, 5xx except 410).
    Failed,
    /// 410 Gone: the receiver revoked the subscription.
    Gone,
    /// No answer within the hook's timeout (or no connection within the
    /// client's connect timeout).
    Timeout,
    /// The destination's address is not allowed (docs/src/contract.md#outbound-safety).
    RefusedAddress,
    /// DNS, connection or TLS failure.
    ConnectionFailed,
    /// Not sent: the URL or a header could not be used.
    NotSent,
}

impl AttemptKind {
    /// The label, as in the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Delivered => "delivered",
            AttemptKind::Failed => "failed",
            AttemptKind::Gone => "gone",
            AttemptKind::Timeout => "timeout",
            AttemptKind::RefusedAddress => "refused_address",
            AttemptKind::ConnectionFailed => "connection_failed",
            AttemptKind::NotSent => "not_sent",
        }
    }
}

/// One attempt as stored (compact field names: a hook keeps up to
/// `--attempts-log-size` of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unix ms the attempt ended.
    #[serde(rename = "t")]
    pub at_ms: i64,
    /// The event id.
    #[serde(rename = "id")]
    pub event_id: String,
    /// The event name.
    #[serde(rename = "ev")]
    pub event: String,
    /// The attempt number (1 for the first).
    #[serde(rename = "n")]
    pub attempt: u32,
    /// How it ended.
    #[serde(rename = "o")]
    pub outcome: AttemptKind,
    /// The answer's status code, when an answer came.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// How long it took, in ms.
    #[serde(rename = "ms")]
    pub duration_ms: u64,
    /// What went wrong (no response body), when it failed.
    #[serde(rename = "err", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The W3C trace id the attempt was sent in (32 hex; absent in records
    /// written before it).
    #[serde(rename = "tr", default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl AttemptRecord {
    /// The record's JSON, as stored.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an attempt record serializes")
    }

    /// A stored record; `None` for anything else (it is skipped).
    pub fn decode(json: &[u8]) -> Option<AttemptRecord> {
        serde_json::from_slice(json).ok()
    }
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters, control characters dropped.
pub fn error_text(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_compactly() {
        let r = AttemptRecord {
            at_ms: 1_795_773_600_123,
            event_id: "e1".into(),
            event: "kustomer.conversation.create".into(),
            attempt: 2,
            outcome: AttemptKind::RefusedAddress,
            code: None,
            duration_ms: 3,
            error: Some("refused destination x: loopback".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let json = r.encode();
        assert_eq!(
            json,
            r#"{"t":1795773600123,"id":"e1","ev":"kustomer.conversation.create","n":2,"o":"refused_address","ms":3,"err":"refused destination x: loopback","tr":"4bf92f3577b34da6a3ce929d0e0e4736"}"#
        );
        assert_eq!(AttemptRecord::decode(json.as_bytes()), Some(r));
        assert_eq!(AttemptRecord::decode(b"not json"), None);
    }

    #[test]
    fn error_texts_are_bounded_and_single_line() {
        assert_eq!(error_text("a\nb"), "ab");
        assert_eq!(error_text(&"x".repeat(1000)).len(), MAX_ERROR_CHARS);
    }
}
