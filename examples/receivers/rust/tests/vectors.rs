//! Checks the verify functions against the shared vectors in ../test-vectors.json.

use base64::{Engine, engine::general_purpose::STANDARD};
use outbound_webhooks_receiver::{StandardWebhooks, verify_signature, verify_standard_webhooks};
use serde_json::Value;

#[test]
fn shared_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../test-vectors.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let body = STANDARD.decode(c["bodyBase64"].as_str().unwrap()).unwrap();
        assert_eq!(
            c["body"].as_str().unwrap().as_bytes(),
            &body[..],
            "{name}: body and bodyBase64 differ"
        );
        let tokens: Vec<&str> = match c["tokens"].as_array() {
            Some(list) => list.iter().map(|t| t.as_str().unwrap()).collect(),
            None => vec![c["token"].as_str().unwrap()],
        };
        let signature = c["signature"].as_str().unwrap();
        let header = (!signature.is_empty()).then_some(signature);
        let got = if c["header"] == "webhook-signature" {
            let timestamp = c["webhookTimestamp"].as_i64().unwrap();
            let now = c["now"].as_i64().unwrap_or(timestamp);
            let timestamp = timestamp.to_string();
            let headers = StandardWebhooks {
                id: c["webhookId"].as_str(),
                timestamp: Some(&timestamp),
                signature: header,
            };
            verify_standard_webhooks(&tokens, &body, headers, now)
        } else {
            verify_signature(&tokens, &body, header)
        };
        assert_eq!(got, c["valid"].as_bool().unwrap(), "{name}");
    }
}
