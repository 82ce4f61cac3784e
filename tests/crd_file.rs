//! The committed CRD must be exactly what the Rust types generate.

mod support;

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = outbound_webhooks::crd_yaml::crd_yaml().expect("rendering the CRD");
    let committed = support::read_repo_file("crds/outboundwebhooks.io_outboundwebhooks.yaml");
    assert!(
        generated == committed,
        "crds/outboundwebhooks.io_outboundwebhooks.yaml is stale: regenerate it with\n  \
         cargo run -- crd > crds/outboundwebhooks.io_outboundwebhooks.yaml"
    );
}
