//! HTTPS delivery over real sockets: the dispatcher trusts a private CA
//! (`--destination-ca-file`), resolves the hook's host name with its own
//! resolver (`--dns-server`, a DNS server on loopback) and negotiates the
//! HTTP version by ALPN. To a receiver offering HTTP/2, every event arrives
//! exactly once, over HTTP/2, all on one TLS connection, signed so that the
//! third-party verifiers accept it. To a receiver offering only HTTP/1.1,
//! every event arrives once over HTTP/1.1, signed as well.
//!
//! Over HTTP/2 the per-request headers (webhook-id, webhook-timestamp, the
//! signatures, traceparent) are marked sensitive so that HPACK sends them as
//! never-indexed literals (`attempt/headers.rs`); these tests show that they
//! still arrive intact and verify. The encoding itself is not observed here
//! (the HTTP/2 server does not report it).

use outbound_webhooks_test_kit as support;

use std::{collections::HashMap, time::Duration};

use http::Version;
use serde_json::json;
use support::{
    delivery_test::DeliveryTest,
    dns_server::{DnsServer, LIVE_ZONE},
    hooks::TestHook,
    receiver::{Received, verify_signatures},
    tls_receiver::{H2_AND_HTTP1, HTTP1_ONLY, TlsReceiver},
};

/// Events each test publishes.
const EVENTS: usize = 20;

/// Within this, a published event has arrived.
const ARRIVAL: Duration = Duration::from_secs(30);

/// A hook on `https://h.<LIVE_ZONE>:PORT/in` and a dispatcher that resolves
/// it with `dns` and trusts `receiver`'s CA.
fn https_setup(
    name: &str,
    dns: &DnsServer,
    receiver: &TlsReceiver,
) -> (DeliveryTest, TestHook, support::dispatcher::Dispatcher) {
    let test = DeliveryTest::new(name);
    let hook = test.hook("h", &receiver.url(&format!("h.{LIVE_ZONE}"), "/in"), json!({}));
    let ca_file = receiver.ca_file().to_str().expect("a UTF-8 temporary path");
    let dispatcher = test.dispatcher(&["--dns-server", &dns.address(), "--destination-ca-file", ca_file]);
    (test, hook, dispatcher)
}

/// Waits for each event; fails unless each arrived exactly once, at `/in`,
/// with its own id in `webhook-id` and in the envelope, and nothing else
/// arrived. Returns the requests in `ids`' order.
fn arrived_once_each(receiver: &TlsReceiver, ids: &[String]) -> Vec<Received> {
    let got: Vec<Received> = ids
        .iter()
        .map(|id| receiver.wait_for_event(id, 1, ARRIVAL).remove(0))
        .collect();
    // Anything sent twice would come about now (the receiver answers 200,
    // so nothing is retried); give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        *seen.entry(request.event_id().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(receiver.requests().len(), ids.len(), "requests: {seen:?}");
    for (id, request) in ids.iter().zip(&got) {
        assert_eq!(request.path, "/in");
        assert_eq!(request.event_id(), id);
        assert_eq!(request.json()["id"], id.as_str());
    }
    got
}

#[test]
fn events_over_https_and_http2_arrive_once_each_signed_and_on_one_connection() {
    let dns = DnsServer::start();
    let receiver = TlsReceiver::start(H2_AND_HTTP1);
    let (test, hook, _d) = https_setup("https-h2", &dns, &receiver);

    // The first event makes the connection alone: until a connection has
    // negotiated HTTP/2, the client's pool cannot know it may share it, so
    // requests sent meanwhile each open their own (17 handshakes for 19
    // events published back to back to a freshly started dispatcher). The
    // others, published back to back, then share it (HTTP/2 multiplexes).
    let first = test.publish(&json!({ "n": 0 }));
    receiver.wait_for_event(&first, 1, ARRIVAL);
    let mut ids = vec![first];
    ids.extend((1..EVENTS).map(|n| test.publish(&json!({ "n": n }))));
    let got = arrived_once_each(&receiver, &ids);

    assert_eq!(
        receiver.versions(),
        HashMap::from([(Version::HTTP_2, EVENTS)]),
        "every request over HTTP/2"
    );
    for request in [&got[0], &got[EVENTS - 1]] {
        verify_signatures(&hook, request).expect("the Node verifiers accept the signatures");
    }
    assert_eq!(
        (
            receiver.tls_handshakes(),
            receiver.h2_connections(),
            receiver.failed_handshakes()
        ),
        (1, 1, 0),
        "(TLS handshakes, HTTP/2 connections, failed handshakes): one connection for all {EVENTS} events"
    );
    assert!(
        dns.queries_for(&format!("h.{LIVE_ZONE}")) >= 1,
        "the name was resolved by --dns-server"
    );
}

#[test]
fn a_receiver_without_http2_gets_http1_over_tls() {
    let dns = DnsServer::start();
    let receiver = TlsReceiver::start(HTTP1_ONLY);
    let (test, hook, _d) = https_setup("https-h1", &dns, &receiver);

    let ids: Vec<String> = (0..EVENTS).map(|n| test.publish(&json!({ "n": n }))).collect();
    let got = arrived_once_each(&receiver, &ids);

    assert_eq!(
        receiver.versions(),
        HashMap::from([(Version::HTTP_11, EVENTS)]),
        "every request over HTTP/1.1"
    );
    for request in [&got[0], &got[EVENTS - 1]] {
        verify_signatures(&hook, request).expect("the Node verifiers accept the signatures");
    }
    assert_eq!(receiver.h2_connections(), 0);
    assert!(receiver.tls_handshakes() >= 1);
    assert_eq!(receiver.failed_handshakes(), 0);
}
