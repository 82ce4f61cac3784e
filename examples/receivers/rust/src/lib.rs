//! Signature verification for outbound-webhooks (Kustomer-compatible)
//! deliveries, kept apart from the HTTP server so it can be tested alone.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// True when `signature` (the `X-Kustomer-Webhook-Signature` header: lowercase
/// hex HMAC-SHA256) signs `body` (the raw request body, exactly as received)
/// with `token` (its UTF-8 bytes are the key).
pub fn verify_signature(token: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(signature) = signature else {
        return false;
    };
    if signature.len() != 64 || !signature.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    let Ok(received) = hex::decode(signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&received).is_ok()
}
