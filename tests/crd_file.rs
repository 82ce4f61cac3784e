//! The committed CRD must be exactly what the Rust types generate.

use outbound_webhooks_test_kit as support;

#[test]
fn committed_crd_matches_the_rust_types() {
    support::assert_is_the_generated_crd(
        "crds/outboundwebhooks.io_outboundwebhooks.yaml",
        "regenerate it with\n  cargo run -- crd > crds/outboundwebhooks.io_outboundwebhooks.yaml",
    );
}
