//! Stage 3 of an event: one attempt, from a slot to the receiver's answer.
//!
//! - [`first_attempt`]: the first attempt straight from the stream entry
//!   (a failure stores the task);
//! - [`send`]: one signed HTTP attempt, its metrics and logs, through
//!   [`outbound`] (the client, its destination checks, the answer);
//! - [`headers`]: the signed headers and the Secret values they need;
//! - [`http_client`] and [`dns`]: the outbound client and its resolver;
//! - [`error_text`]: what went wrong, in words;
//! - [`attempts_log`]: the record each attempt leaves in the hook's log;
//! - [`spans`]: each attempt's span, exported over OTLP when configured.

pub mod attempts_log;
pub mod dns;
pub mod error_text;
pub(crate) mod first_attempt;
pub mod headers;
pub mod http_client;
pub mod outbound;
pub mod resolve_error;
pub mod send;
pub mod spans;
