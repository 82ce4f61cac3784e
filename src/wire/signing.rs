//! Request signatures: Kustomer's hex HMAC and Standard Webhooks' `v1,` one.
//!
//! Both use the same key, the token's UTF-8 bytes, so one Secret serves
//! receivers written for either scheme. While a rotation has two tokens
//! valid, `webhook-signature` carries one `v1,` signature per token,
//! space-separated, as the Standard Webhooks libraries expect.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(token: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length")
}

/// `X-Kustomer-Webhook-Signature`: lowercase hex HMAC-SHA256 of the exact body.
pub fn kustomer_signature(token: &str, body: &[u8]) -> String {
    let mut mac = mac(token);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn standard_webhooks_signature(token: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    standard_webhooks_signatures([token], id, timestamp, body)
}

/// `webhook-signature` signed by each of `tokens`: `v1,<by first> v1,<by second>`.
/// The header is built in one string, sized for two signatures.
pub fn standard_webhooks_signatures<'a>(
    tokens: impl IntoIterator<Item = &'a str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    // "v1," + 44 base64 characters + a separating space.
    const ONE: usize = 48;
    let timestamp = timestamp.to_string();
    let mut header = String::with_capacity(2 * ONE);
    for token in tokens {
        let mut mac = mac(token);
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), &mut header);
    }
    header
}

/// The Standard Webhooks secret string for a token: `whsec_` + base64 of its bytes.
pub fn standard_webhooks_secret(token: &str) -> String {
    format!("whsec_{}", STANDARD.encode(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomer_signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            kustomer_signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_webhooks_signature_matches_the_reference_example() {
        // The example of the Standard Webhooks reference libraries: secret
        // whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, i.e. key = base64-decoded bytes.
        // We sign with the token's UTF-8 bytes; build the token whose bytes are that key.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}");
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(expected, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_webhooks_signature_signs_id_timestamp_and_body() {
        let token = "a".repeat(64);
        let sig = standard_webhooks_signature(&token, "evt1", 1_700_000_000, b"{}");
        let mut mac = mac(&token);
        mac.update(b"evt1.1700000000.{}");
        assert_eq!(sig, format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
        assert_ne!(sig, standard_webhooks_signature(&token, "evt1", 1_700_000_001, b"{}"));
    }

    #[test]
    fn two_tokens_give_two_space_separated_signatures_in_order() {
        let (old, new) = ("o".repeat(64), "n".repeat(64));
        let header = standard_webhooks_signatures([old.as_str(), new.as_str()], "evt1", 1_700_000_000, b"{}");
        let by_old = standard_webhooks_signature(&old, "evt1", 1_700_000_000, b"{}");
        let by_new = standard_webhooks_signature(&new, "evt1", 1_700_000_000, b"{}");
        assert_eq!(header, format!("{by_old} {by_new}"));
        assert_eq!(header.len(), 2 * 47 + 1);
    }

    #[test]
    fn secret_string_is_whsec_and_base64_of_the_token() {
        assert_eq!(standard_webhooks_secret("abc"), "whsec_YWJj");
    }
}
