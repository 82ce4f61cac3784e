//! W3C Trace Context (docs/src/contract.md#filters-rate-limits-and-traces):
//! the `traceparent` and `tracestate` a producer may give with an event,
//! their validation, and the `traceparent` each attempt sends.
//!
//! Pure functions: the dispatcher ignores (and counts) a value they refuse,
//! `publish` refuses it before anything reaches the stream.

use sha2::{Digest, Sha256};

/// The `traceparent` stream field and header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` stream field and header name.
pub const TRACESTATE: &str = "tracestate";

/// Most list members a `tracestate` may have (W3C).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Most characters a `tracestate` may have (W3C).
pub const MAX_TRACESTATE_CHARS: usize = 512;

/// The sampled bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The producer's span id (never all zero).
    pub parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Whether the producer recorded its span (the sampled flag).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Why a `traceparent` or `tracestate` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceContextError {
    /// Not `VV-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-PPPPPPPPPPPPPPPP-FF`.
    #[error(
        "traceparent must be 00-<32 lowercase hex trace id>-<16 lowercase hex parent id>-<2 hex flags> (W3C Trace Context)"
    )]
    Format,
    /// Version `ff` is invalid by the W3C rules.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace id is all zero.
    #[error("traceparent trace id is all zero")]
    ZeroTraceId,
    /// The parent id is all zero.
    #[error("traceparent parent id is all zero")]
    ZeroParentId,
    /// More than [`MAX_TRACESTATE_CHARS`] characters.
    #[error("tracestate is longer than {MAX_TRACESTATE_CHARS} characters")]
    StateTooLong,
    /// More than [`MAX_TRACESTATE_MEMBERS`] list members.
    #[error("tracestate has more than {MAX_TRACESTATE_MEMBERS} list members")]
    StateTooManyMembers,
    /// A list member is not `key=value` in the W3C syntax.
    #[error("tracestate member {0:?} is not key=value (W3C Trace Context)")]
    StateMember(String),
    /// A `tracestate` without a valid `traceparent` means nothing (W3C).
    #[error("tracestate is given without traceparent")]
    StateWithoutParent,
}

impl TraceContextError {
    /// The field it is about (a metric label value).
    pub fn field(&self) -> &'static str {
        match self {
            TraceContextError::Format
            | TraceContextError::Version
            | TraceContextError::ZeroTraceId
            | TraceContextError::ZeroParentId => TRACEPARENT,
            _ => TRACESTATE,
        }
    }
}

fn lower_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Parses a `traceparent`: version 00 exactly as W3C defines it (55
/// characters); a later version (not `ff`) is read by its version-00
/// prefix, as the specification asks of a version-00 reader.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, TraceContextError> {
    let b = value.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err(TraceContextError::Format);
    }
    let version = lower_hex::<1>(&b[..2]).ok_or(TraceContextError::Format)?[0];
    if version == 0xff {
        return Err(TraceContextError::Version);
    }
    // Version 00 has exactly these fields; a later one may add fields
    // after a dash.
    if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return Err(TraceContextError::Format);
    }
    let trace_id = lower_hex::<16>(&b[3..35]).ok_or(TraceContextError::Format)?;
    let parent_id = lower_hex::<8>(&b[36..52]).ok_or(TraceContextError::Format)?;
    let flags = lower_hex::<1>(&b[53..55]).ok_or(TraceContextError::Format)?[0];
    if trace_id == [0; 16] {
        return Err(TraceContextError::ZeroTraceId);
    }
    if parent_id == [0; 8] {
        return Err(TraceContextError::ZeroParentId);
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

fn is_key(key: &str) -> bool {
    let simple = |k: &str, max: usize| {
        let b = k.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        // A multi-tenant key: tenant@system.
        Some((tenant, system)) => {
            simple(tenant, 241) && simple(system, 14) && system.as_bytes()[0].is_ascii_lowercase()
        }
        None => simple(key, 256) && key.as_bytes()[0].is_ascii_lowercase(),
    }
}

fn is_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        // Printable ASCII except ',' and '=', the last not a space.
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

/// Checks a `tracestate` (W3C): at most 512 characters and 32 list members,
/// each `key=value`; empty members (extra commas, spaces) are allowed.
pub fn check_tracestate(value: &str) -> Result<(), TraceContextError> {
    if value.len() > MAX_TRACESTATE_CHARS {
        return Err(TraceContextError::StateTooLong);
    }
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS {
            return Err(TraceContextError::StateTooManyMembers);
        }
        let ok = member.split_once('=').is_some_and(|(k, v)| is_key(k) && is_value(v));
        if !ok {
            let shown: String = member.chars().take(40).collect();
            return Err(TraceContextError::StateMember(shown));
        }
    }
    Ok(())
}

/// A producer's trace context as an event carries it, both checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerTrace {
    /// The producer's `traceparent`, as given.
    pub traceparent: String,
    /// Its `tracestate`, when given and valid.
    pub tracestate: Option<String>,
}

/// What the dispatcher makes of an entry's `traceparent` and `tracestate`
/// fields: the context to carry, and what it ignored (a metric's reason).
pub fn read_fields(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> (Option<ProducerTrace>, Option<TraceContextError>) {
    let Some(parent) = traceparent else {
        return match tracestate {
            Some(_) => (None, Some(TraceContextError::StateWithoutParent)),
            None => (None, None),
        };
    };
    if let Err(e) = parse_traceparent(parent) {
        return (None, Some(e));
    }
    let (tracestate, problem) = match tracestate.map(|s| (s, check_tracestate(s))) {
        Some((s, Ok(()))) if !s.trim().is_empty() => (Some(s.to_string()), None),
        Some((_, Err(e))) => (None, Some(e)),
        _ => (None, None),
    };
    (
        Some(ProducerTrace {
            traceparent: parent.to_string(),
            tracestate,
        }),
        problem,
    )
}

/// The trace of an event published without a `traceparent`: the first 16
/// bytes of SHA-256 of its id, so every attempt (and every replica) puts
/// the event's attempts in one trace with nothing stored.
pub fn derived_trace_id(event_id: &str) -> [u8; 16] {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// The trace id (32 hex) of event `event_id`'s attempts: the producer's
/// when its `traceparent` is valid, else the derived one.
pub fn event_trace_id_hex(event_id: &str, producer: Option<&str>) -> String {
    let trace_id = producer
        .and_then(|p| parse_traceparent(p).ok())
        .map_or_else(|| derived_trace_id(event_id), |p| p.trace_id);
    hex::encode(trace_id)
}

/// A new random span id (never all zero).
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The trace context of one attempt: whose trace it is in, its own span,
/// and the producer's span it descends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTrace {
    /// The event's trace (the producer's, or derived from the event id).
    pub trace_id: [u8; 16],
    /// This attempt's span id: the parent id the receiver sees.
    pub span_id: [u8; 8],
    /// The producer's span, when it gave a `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The flags sent: the producer's, or sampled for a new trace.
    pub flags: u8,
}

impl AttemptTrace {
    /// A new span for one attempt of event `event_id`, under the
    /// producer's `traceparent` when it gave a valid one.
    pub fn new(event_id: &str, producer: Option<&str>) -> AttemptTrace {
        let span_id = new_span_id();
        match producer.and_then(|p| parse_traceparent(p).ok()) {
            Some(p) => AttemptTrace {
                trace_id: p.trace_id,
                span_id,
                parent_id: Some(p.parent_id),
                flags: p.flags,
            },
            None => AttemptTrace {
                trace_id: derived_trace_id(event_id),
                span_id,
                parent_id: None,
                flags: SAMPLED,
            },
        }
    }

    /// Whether the attempt's span is recorded: the producer's sampled
    /// flag (a parent-based decision), always for a new trace.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex characters (logs, attempts log).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header this attempt sends (version 00).
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        out.push_str(&hex::encode(self.trace_id));
        out.push('-');
        out.push_str(&hex::encode(self.span_id));
        out.push('-');
        out.push_str(&hex::encode([self.flags]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_version_00_traceparent_parses() {
        let p = parse_traceparent(GOOD).unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.parent_id), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        assert!(p.sampled());
        assert!(!parse_traceparent(&GOOD.replace("-01", "-00")).unwrap().sampled());
    }

    #[test]
    fn malformed_traceparents_are_refused_with_their_reason() {
        use TraceContextError::*;
        let cases = [
            ("", Format),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", Format),
            // Uppercase hex is not W3C.
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", Format),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", Format),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Format),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", Format),
            // Version 00 has nothing after the flags.
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", Format),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", Format),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Version),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ZeroTraceId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ZeroParentId),
            ("é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", Format),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value), Err(want), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_prefix() {
        let p = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").unwrap();
        assert_eq!(p.flags, 1);
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok());
        assert_eq!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            Err(TraceContextError::Format)
        );
    }

    #[test]
    fn tracestate_follows_the_w3c_limits() {
        for good in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            " rojo=1 , congo=2,,",
            "tenant@vendor=v",
            "a1_-*/=x y",
            "",
        ] {
            assert_eq!(check_tracestate(good), Ok(()), "{good:?}");
        }
        for bad in [
            "novalue",
            "=v",
            "Upper=v",
            "k=",
            "k=a,b",
            "k=v=w",
            "1@@x=v",
            "t@Vendor=v",
        ] {
            assert!(
                matches!(check_tracestate(bad), Err(TraceContextError::StateMember(_))),
                "{bad:?}"
            );
        }
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(check_tracestate(&members[..32].join(",")), Ok(()));
        assert_eq!(
            check_tracestate(&members.join(",")),
            Err(TraceContextError::StateTooManyMembers)
        );
        let long = format!("k={}", "v".repeat(511));
        assert_eq!(check_tracestate(&long), Err(TraceContextError::StateTooLong));
    }

    #[test]
    fn entry_fields_keep_what_is_valid_and_say_what_was_ignored() {
        assert_eq!(read_fields(None, None), (None, None));
        let (trace, problem) = read_fields(Some(GOOD), Some("a=b"));
        assert_eq!(trace.unwrap().tracestate.as_deref(), Some("a=b"));
        assert_eq!(problem, None);
        // A bad tracestate is dropped, the traceparent kept.
        let (trace, problem) = read_fields(Some(GOOD), Some("bad"));
        assert_eq!(trace.unwrap().tracestate, None);
        assert!(matches!(problem, Some(TraceContextError::StateMember(_))));
        // A bad traceparent takes its tracestate with it.
        let (trace, problem) = read_fields(Some("00-x"), Some("a=b"));
        assert_eq!((trace, problem), (None, Some(TraceContextError::Format)));
        assert_eq!(
            read_fields(None, Some("a=b")),
            (None, Some(TraceContextError::StateWithoutParent))
        );
    }

    #[test]
    fn attempts_keep_the_producers_trace_with_a_span_of_their_own() {
        let a = AttemptTrace::new("e1", Some(GOOD));
        let b = AttemptTrace::new("e1", Some(GOOD));
        assert_eq!(hex::encode(a.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(a.parent_id.map(hex::encode).as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(a.span_id, b.span_id);
        let header = a.header();
        assert_eq!(header.len(), 55);
        let sent = parse_traceparent(&header).unwrap();
        assert_eq!((sent.trace_id, sent.parent_id, sent.flags), (a.trace_id, a.span_id, 1));
        // Not sampled by the producer: the flags say so, no span is recorded.
        let quiet = AttemptTrace::new("e1", Some(&GOOD.replace("-01", "-00")));
        assert!(!quiet.sampled());
        assert!(quiet.header().ends_with("-00"));
    }

    #[test]
    fn events_without_a_traceparent_get_a_trace_stable_per_event() {
        let a = AttemptTrace::new("evt-1", None);
        let b = AttemptTrace::new("evt-1", Some("not a traceparent"));
        assert_eq!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert_ne!(a.trace_id, AttemptTrace::new("evt-2", None).trace_id);
        assert_eq!((a.parent_id, a.flags), (None, SAMPLED));
        assert_eq!(parse_traceparent(&a.header()).unwrap().trace_id, a.trace_id);
        assert_eq!(a.trace_id_hex().len(), 32);
        assert_eq!(event_trace_id_hex("evt-1", None), a.trace_id_hex());
        assert_eq!(
            event_trace_id_hex("evt-1", Some(GOOD)),
            AttemptTrace::new("evt-1", Some(GOOD)).trace_id_hex()
        );
    }
}
