//! A hook's limits as the claim script enforces them across replicas.
//!
//! Both are kept where the hook's tasks are, in its shard, and checked in
//! the same script that claims its tasks (`claim.lua`), so a limited hook
//! costs no round trip beyond the claims every task already takes:
//! - the rate is a GCRA (a token bucket kept as one timestamp,
//!   `rate:{uid}`): a claim takes as many of the hook's due tasks as there
//!   are tokens, and moves the timestamp on by one interval per task;
//! - the concurrency is the count of the hook's claimed tasks whose lease
//!   still holds (`in-flight:{uid}`, members by lease end): a task that
//!   settles changes its due time, which frees its place at the next claim.
//!
//! A hook held back by a limit leaves `hooks-due` until it may take a task
//! again (its next token; for concurrency, the earliest lease end, or as
//! soon as one of its tasks settles), so it never hides other hooks' tasks.

use crate::contract::resource::OutboundWebhookSpec;

/// The limits of one hook, as `claim.lua` reads them (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookLimit {
    /// `spec.rateLimit.requestsPerSecond`.
    pub requests_per_second: u32,
    /// `spec.rateLimit.burst`.
    pub burst: u32,
    /// `spec.maxConcurrentRequests`.
    pub max_concurrent: u32,
}

impl HookLimit {
    /// The hook's limits, `None` when it sets neither.
    pub fn of(spec: &OutboundWebhookSpec) -> Option<HookLimit> {
        let positive = |n: i32| u32::try_from(n).unwrap_or(0);
        let limit = HookLimit {
            requests_per_second: spec.rate_limit.map_or(0, |r| positive(r.requests_per_second)),
            burst: spec.rate_limit.map_or(0, |r| positive(r.burst).max(1)),
            max_concurrent: spec.max_concurrent_requests.map_or(0, positive),
        };
        (limit != HookLimit::default()).then_some(limit)
    }
}
