//! Checks `verify_signature` against the shared vectors in ../test-vectors.json.

use outbound_webhooks_receiver::verify_signature;
use serde_json::Value;

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn shared_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../test-vectors.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let body = base64_decode(c["bodyBase64"].as_str().unwrap());
        assert_eq!(
            c["body"].as_str().unwrap().as_bytes(),
            &body[..],
            "{name}: body and bodyBase64 differ"
        );
        let signature = c["signature"].as_str().unwrap();
        let header = (!signature.is_empty()).then_some(signature);
        let got = verify_signature(c["token"].as_str().unwrap(), &body, header);
        assert_eq!(got, c["valid"].as_bool().unwrap(), "{name}");
    }
}
