//! What an attempt goes out through and comes back as: the outbound
//! client with its destination checks ([`Outbound`]), parsed destination
//! URLs ([`UrlCache`]), and the classified answer ([`Attempt`],
//! [`Outcome`]). It holds no shared state of the dispatcher, so the shared
//! context can own it without importing the attempt loop back.

use std::{net::IpAddr, sync::Arc, time::Duration};

use crate::address_filter::AddressFilter;
use crate::dispatcher::attempt::{
    attempts_log::AttemptKind,
    dns::Resolver,
    http_client::{BuildError, HttpClient, Target},
    resolve_error::ResolveError,
};

/// Most response-body bytes read (only for the failure message).
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// The outbound HTTP client with what it checks destinations against.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The client (no redirects, filtered DNS, the explicit proxy if any).
    pub client: HttpClient,
    /// Which addresses may be reached.
    pub filter: Arc<AddressFilter>,
    /// The process's resolver (the client's too).
    pub resolver: Resolver,
    /// Requests go through `--proxy`: the proxy, not our resolver, resolves
    /// the destination, so it is resolved and checked here first.
    pub proxied: bool,
}

/// Builds the shared HTTP client on `resolver`, trusting `extra_roots`
/// besides the system's CAs.
pub fn outbound(
    filter: Arc<AddressFilter>,
    resolver: Resolver,
    proxy: Option<&str>,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Outbound, BuildError> {
    Ok(Outbound {
        client: HttpClient::new(filter.clone(), resolver.clone(), proxy, extra_roots)?,
        filter,
        resolver,
        proxied: proxy.is_some(),
    })
}

/// Resolves the target's host name by `deadline` and refuses it unless
/// every address it resolves to is allowed (with a proxy the connection is
/// not ours to check, so one refused address refuses the destination).
pub(crate) async fn check_resolved(
    outbound: &Outbound,
    target: &Target,
    deadline: tokio::time::Instant,
) -> Result<(), Attempt> {
    let host = target.host.as_str();
    let addresses = outbound.resolver.lookup(host, deadline).await.map_err(|e| {
        let kind = match e {
            ResolveError::Refused { .. } => AttemptKind::RefusedAddress,
            _ => AttemptKind::ConnectionFailed,
        };
        Attempt::failed(kind, e.to_string())
    })?;
    for address in addresses.iter() {
        outbound.filter.check(*address).map_err(|why| {
            Attempt::failed(
                AttemptKind::RefusedAddress,
                format!("refused destination {host}: {why}"),
            )
        })?;
    }
    Ok(())
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// 410 Gone: the receiver revoked the subscription.
    Gone,
    /// Anything else: another status, timeout, refused, network error.
    Failed,
}

/// Classifies an HTTP status code.
pub fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        _ => Outcome::Failed,
    }
}

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// How it ended.
    pub outcome: Outcome,
    /// The answer's status code, when an answer came.
    pub status: Option<u16>,
    /// `Retry-After` of a 429/503 answer.
    pub retry_after: Option<Duration>,
    /// For people: what happened (`status.delivery`'s last failure
    /// message; an answer's message quotes the start of its body).
    pub message: String,
    /// The attempts log's outcome.
    pub kind: AttemptKind,
    /// The attempts log's error text: `message` without any response body.
    pub log_error: Option<String>,
}

impl Attempt {
    /// A failure without an answer; the log records `message` as it is.
    pub fn failed(kind: AttemptKind, message: String) -> Self {
        Attempt {
            outcome: Outcome::Failed,
            status: None,
            retry_after: None,
            log_error: Some(message.clone()),
            message,
            kind,
        }
    }
}

/// The IP of a URL host that is an IP literal.
pub(crate) fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Parsed destination URLs by their text: parsing one costs more than the
/// rest of preparing an attempt, and a hook sends to the same URL each time.
#[derive(Debug, Default)]
pub struct UrlCache {
    parsed: std::sync::Mutex<std::collections::HashMap<String, Arc<Target>>>,
}

impl UrlCache {
    /// Most URLs kept; past it the cache starts over (URLs of deleted or
    /// edited hooks go with it).
    const MAX: usize = 20_000;

    /// `url` parsed.
    pub fn parse(&self, url: &str) -> Result<Arc<Target>, String> {
        let mut parsed = self.parsed.lock().expect("URL cache lock");
        if let Some(u) = parsed.get(url) {
            return Ok(u.clone());
        }
        let u = Arc::new(Target::parse(url)?);
        if parsed.len() >= Self::MAX {
            parsed.clear();
        }
        parsed.insert(url.to_string(), u.clone());
        Ok(u)
    }
}
