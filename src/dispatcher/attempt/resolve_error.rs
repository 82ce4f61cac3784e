//! Why our resolver gave the HTTP client no address, typed: the DNS and
//! the client produce it, the error texts read it. A leaf of its own so
//! that none of those three imports another in a circle.

use std::time::Duration;

/// Why our resolver gave the client no address: the typed error at the bottom
/// of a failed attempt's source chain.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The DNS answered without an address, or failed.
    #[error("DNS lookup of {host} failed: {reason}")]
    Lookup {
        /// The host name looked up.
        host: String,
        /// What the resolver said, short ("name not known").
        reason: String,
    },
    /// No answer before the attempt's deadline (or the query's own timeout).
    #[error("DNS lookup of {host} timed out after {}", rounded(*.after))]
    TimedOut {
        /// The host name looked up.
        host: String,
        /// How long the attempt waited for it.
        after: Duration,
    },
    /// Every address the name resolves to is refused (docs/src/contract.md#outbound-safety).
    #[error("refused destination {host}: {why}")]
    Refused {
        /// The host name.
        host: String,
        /// Why its first address is refused.
        why: String,
    },
}

/// A wait as people say it: whole seconds, or milliseconds under one.
pub(crate) fn rounded(wait: Duration) -> String {
    if wait >= Duration::from_secs(1) {
        format!("{}s", wait.as_secs_f64().round())
    } else {
        format!("{}ms", wait.as_millis())
    }
}
