//! What travels: the events stream's entry format ([`stream_entry`]), the
//! envelope POSTed to receivers ([`envelope`]) and its signatures
//! ([`signing`]), and the W3C trace context it carries ([`trace_context`]).

pub mod envelope;
pub mod signing;
pub mod stream_entry;
pub mod trace_context;
