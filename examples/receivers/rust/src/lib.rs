//! Signature verification for outbound-webhooks (Kustomer-compatible)
//! deliveries, kept apart from the HTTP server so it can be tested alone.
//!
//! A receiver holds one token, or during a rotation two (the new and the
//! previous one); a request is accepted when any of its signatures matches
//! any token:
//! - `X-Kustomer-Webhook-Signature`: lowercase hex HMAC-SHA256 of the exact
//!   body bytes, keyed with a token (its UTF-8 bytes);
//! - `webhook-signature` (Standard Webhooks): space-separated `v1,<base64
//!   HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">` entries, one
//!   per token the sender signs with, same key.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `webhook-timestamp` may be from now (Standard Webhooks): an older
/// delivery is refused as a possible replay.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

fn mac(token: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes a key of any length")
}

/// True when `signature` (the `X-Kustomer-Webhook-Signature` header: lowercase
/// hex HMAC-SHA256) signs `body` (the raw request body, exactly as received)
/// with one of `tokens`.
pub fn verify_signature(tokens: &[&str], body: &[u8], signature: Option<&str>) -> bool {
    let Some(signature) = signature else {
        return false;
    };
    if signature.len() != 64 || !signature.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    let Ok(received) = hex::decode(signature) else {
        return false;
    };
    // Every token is tried, so the time does not tell which one matched.
    tokens.iter().fold(false, |matched, token| {
        let mut mac = mac(token);
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&received).is_ok() || matched
    })
}

/// The `webhook-signature` part of a request.
#[derive(Clone, Copy, Debug)]
pub struct StandardWebhooks<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp` (Unix seconds).
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

/// True when one `v1,` entry of the `webhook-signature` header signs
/// `{id}.{timestamp}.{body}` with one of `tokens`, and the timestamp is within
/// [`TOLERANCE_SECONDS`] of `now` (Unix seconds).
pub fn verify_standard_webhooks(tokens: &[&str], body: &[u8], headers: StandardWebhooks<'_>, now: i64) -> bool {
    let (Some(id), Some(timestamp), Some(signature)) = (headers.id, headers.timestamp, headers.signature) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if !timestamp.bytes().all(|c| c.is_ascii_digit()) || (now - ts).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let received: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    tokens.iter().fold(false, |matched, token| {
        received.iter().fold(matched, |matched, sig| {
            let mut mac = mac(token);
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(sig).is_ok() || matched
        })
    })
}
