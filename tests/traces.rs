//! W3C trace context end to end and one OTLP span per attempt
//! (docs/src/contract.md#filters-rate-limits-and-traces): real API server,
//! Redis, receivers and a real OpenTelemetry Collector (tools/otelcol).

use outbound_webhooks_test_kit as support;

use std::time::{Duration, Instant};

use outbound_webhooks::wire::trace_context::{derived_trace_id, parse_traceparent};
use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    otel_collector::{Collector, ExportedSpan},
    receiver::{Receiver, Reply},
    redis::{xadd_backlog, xadd_raw},
    wait_for,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// (trace id, parent id, flags) of a `traceparent` header.
fn sent(header: &str) -> (String, String, u8) {
    let p = parse_traceparent(header).unwrap_or_else(|e| panic!("traceparent {header:?}: {e}"));
    (hex::encode(p.trace_id), hex::encode(p.parent_id), p.flags)
}

#[test]
fn a_producers_trace_continues_at_the_receiver_and_each_attempt_is_a_span_of_it() {
    let test = DeliveryTest::new("traced");
    let collector = Collector::start();
    // The first attempt of each event fails, the second succeeds.
    let receiver = Receiver::start(|_, nth| Reply::Status(if nth == 1 { 500 } else { 200 }));
    let hook = test.hook_to(&receiver, json!({}));
    let d = test.dispatcher(&["--retry-schedule", "200ms", "--otlp-endpoint", &collector.endpoint()]);

    // Not sampled by the producer: the header still carries its trace,
    // but no span is recorded.
    let quiet_parent = format!("00-{TRACE_ID}-{PRODUCER_SPAN}-00");
    test.publish_cli("{}", &["--id", "quiet-1", "--traceparent", &quiet_parent]);
    let quiet = receiver.wait_for_event("quiet-1", 2, Duration::from_secs(30));
    for r in &quiet {
        let (trace, parent, flags) = sent(r.header("traceparent"));
        assert_eq!((trace.as_str(), flags), (TRACE_ID, 0));
        assert_ne!(parent, PRODUCER_SPAN);
    }

    let parent = format!("00-{TRACE_ID}-{PRODUCER_SPAN}-01");
    let out = test.publish_cli(
        r#"{"id":"c1"}"#,
        &[
            "--id",
            "traced-1",
            "--traceparent",
            &parent,
            "--tracestate",
            "vendor=abc,other=1",
        ],
    );
    assert!(out.starts_with("traced-1 "), "{out}");
    let requests = receiver.wait_for_event("traced-1", 2, Duration::from_secs(30));
    let mut header_spans = Vec::new();
    for r in &requests {
        let (trace, span, flags) = sent(r.header("traceparent"));
        assert_eq!(trace, TRACE_ID, "the producer's trace id");
        assert_ne!(span, PRODUCER_SPAN, "the attempt's own span, not the producer's");
        assert_eq!(flags, 1);
        assert_eq!(r.header("tracestate"), "vendor=abc,other=1");
        header_spans.push(span);
    }
    assert_ne!(header_spans[0], header_spans[1], "each attempt has a span of its own");

    // One span per attempt, in the producer's trace, child of its span.
    let spans = collector.wait_for_spans("the attempts' spans", 2, Duration::from_secs(30), |s| {
        s.attr("webhook.event.id") == "traced-1"
    });
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let by_attempt = |n: &str| -> &ExportedSpan {
        spans
            .iter()
            .find(|s| s.attr("webhook.attempt") == n)
            .unwrap_or_else(|| panic!("no span of attempt {n}: {spans:#?}"))
    };
    let (first, second) = (by_attempt("1"), by_attempt("2"));
    for (s, header_span, code, outcome) in [
        (first, &header_spans[0], "500", "failed"),
        (second, &header_spans[1], "200", "delivered"),
    ] {
        assert_eq!(s.trace_id, TRACE_ID);
        assert_eq!(&s.span_id, header_span, "the span id the receiver saw");
        assert_eq!(s.parent_span_id, PRODUCER_SPAN);
        assert_eq!(s.name, "webhook.attempt");
        assert_eq!(s.kind, 3, "client");
        assert_eq!(s.attr("webhook.hook.namespace"), test.ns);
        assert_eq!(s.attr("webhook.hook.name"), "h");
        assert_eq!(s.attr("webhook.event.name"), CREATE);
        assert_eq!(s.attr("http.response.status_code"), code);
        assert_eq!(s.attr("webhook.outcome"), outcome);
        assert_eq!(s.resource["service.name"], "outbound-webhooks-dispatcher");
        assert_eq!(s.raw["traceState"], "vendor=abc,other=1");
    }
    assert_eq!((first.status_code, second.status_code), (2, 0), "error, then unset");
    eprintln!(
        "an attempt's span as the collector wrote it: {}",
        serde_json::to_string(&first.raw).unwrap()
    );
    assert!(
        collector
            .spans()
            .iter()
            .all(|s| s.attr("webhook.event.id") != "quiet-1"),
        "a producer that did not sample gets no span"
    );

    // The attempts log and the attempt's log line carry the trace id.
    let log = test.attempts_json(&hook, 10);
    let traced: Vec<_> = log.iter().filter(|r| r["eventId"] == "traced-1").collect();
    assert_eq!(traced.len(), 2, "{log:#?}");
    assert!(traced.iter().all(|r| r["traceId"] == TRACE_ID), "{traced:#?}");
    wait_for("the failed attempt's log line", Duration::from_secs(10), || {
        let text = d.log();
        text.lines()
            .find(|l| l.contains("delivery attempt failed") && l.contains("traced-1") && l.contains(TRACE_ID))
            .map(|_| ())
            .ok_or_else(|| "no log line with the trace id yet".to_string())
    });
    assert_eq!(
        d.metric("outbound_webhooks_spans_dropped_total{reason=\"queue_full\"}"),
        Some(0.0)
    );
}

#[test]
fn a_bad_traceparent_is_refused_by_publish_and_ignored_and_counted_by_the_dispatcher() {
    let test = DeliveryTest::new("bad-trace");
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));

    // publish refuses it, before anything reaches the stream.
    let (ok, _, stderr) = test.try_publish_cli("{}", &["--traceparent", "00-abc-def-01"]);
    assert!(!ok);
    assert!(stderr.contains("--traceparent") && stderr.contains("W3C"), "{stderr}");
    let (ok, _, stderr) = test.try_publish_cli(
        "{}",
        &[
            "--traceparent",
            &format!("00-{TRACE_ID}-{PRODUCER_SPAN}-01"),
            "--tracestate",
            "no value",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("--tracestate"), "{stderr}");
    assert_eq!(support::redis::stream_length(&test.redis_url, &test.prefix), 0);

    // A producer writing the stream itself: delivered as if it gave none.
    let d = test.dispatcher(&[]);
    xadd_raw(
        &test.redis_url,
        &test.prefix,
        &[
            ("org", &test.ns),
            ("name", CREATE),
            ("data", "{}"),
            ("id", "bad-trace-1"),
            ("traceparent", "00-ZZZ-not-a-traceparent"),
            ("tracestate", "a=b"),
        ],
    );
    let request = receiver
        .wait_for_event("bad-trace-1", 1, Duration::from_secs(30))
        .remove(0);
    let (trace, _, flags) = sent(request.header("traceparent"));
    assert_eq!(
        trace,
        hex::encode(derived_trace_id("bad-trace-1")),
        "a trace of the event's own"
    );
    assert_eq!(flags, 1);
    assert_eq!(
        request.header("tracestate"),
        "",
        "a tracestate without a valid traceparent is dropped"
    );
    assert_eq!(
        d.metric("outbound_webhooks_trace_context_invalid_total{field=\"traceparent\"}"),
        Some(1.0)
    );
    assert!(test.dead_letters(None).is_empty(), "never a dead letter");
}

const EVENTS: usize = 2000;

/// Delivers `EVENTS` events through a dispatcher started with `flags`;
/// the seconds from the first XADD to the last delivery, and its peak RSS.
fn drain(name: &str, flags: &[&str]) -> (f64, u64, support::dispatcher::Dispatcher) {
    let test = DeliveryTest::new(name);
    let receiver = Receiver::ok();
    test.hook_to(&receiver, json!({}));
    let d = test.dispatcher(flags);
    let started = Instant::now();
    xadd_backlog(&mut test.redis(), &test.prefix, &test.ns, CREATE, EVENTS, |i| {
        format!("{{\"n\":{i}}}")
    });
    wait_for("the events to be delivered", Duration::from_secs(180), || {
        let got = receiver.requests().len();
        if got >= EVENTS {
            Ok(())
        } else {
            Err(format!("{got} of {EVENTS}"))
        }
    });
    let took = started.elapsed().as_secs_f64();
    let peak = d.peak_rss();
    eprintln!(
        "{name}: {EVENTS} events in {took:.2}s ({:.0}/s), VmHWM {:.1} MiB",
        EVENTS as f64 / took,
        peak as f64 / 1048576.0
    );
    (took, peak, d)
}

/// The dispatcher's memory bound for this test (measured: about 73 MiB
/// with tracing off or on): 2,000 small events and at most 4,096 queued
/// spans (about 1 MiB) stay well below it.
const MAX_RSS: u64 = 128 << 20;
/// What tracing may add to the peak: the span queue and one batch.
const TRACING_RSS: u64 = 16 << 20;

#[test]
fn with_the_collector_down_delivery_keeps_its_pace_and_memory_stays_bounded() {
    // The collector's port, closed: as after the collector stopped.
    let mut collector = Collector::start();
    let endpoint = collector.endpoint();
    collector.stop();

    // A collector that takes connections and never answers: every export
    // waits for its timeout.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let hanging = format!("http://{}", black_hole.local_addr().expect("its address"));

    // Tracing off before and after the others, the faster run the
    // baseline: the first runs share the machine with the other tests.
    let (off_before, off_rss, _off) = drain("pace-off", &[]);
    let (on, on_rss, d) = drain("pace-down", &["--otlp-endpoint", &endpoint]);
    let (hung, hung_rss, _hung) = drain("pace-hung", &["--otlp-endpoint", &hanging]);
    let (off_after, _, _) = drain("pace-off-again", &[]);
    let off = off_before.min(off_after);
    for (what, took, rss) in [("down", on, on_rss), ("not answering", hung, hung_rss)] {
        assert!(
            took <= off * 1.5 + 1.0,
            "with the collector {what} {EVENTS} events took {took:.2}s, without tracing {off:.2}s"
        );
        assert!(
            rss < MAX_RSS && rss <= off_rss + TRACING_RSS,
            "with the collector {what} VmHWM {rss} bytes, without tracing {off_rss}"
        );
    }
    drop(black_hole);
    // Every span was tried and dropped, counted; none waited on delivery.
    wait_for("every span to be dropped and counted", Duration::from_secs(30), || {
        let failed = d
            .metric("outbound_webhooks_spans_dropped_total{reason=\"export_failed\"}")
            .unwrap_or(0.0);
        let full = d
            .metric("outbound_webhooks_spans_dropped_total{reason=\"queue_full\"}")
            .unwrap_or(0.0);
        if failed + full >= EVENTS as f64 {
            Ok(())
        } else {
            Err(format!("{failed} failed to export, {full} over the queue"))
        }
    });
    assert!(
        d.log().contains("exporting attempt spans failed"),
        "the failure is logged"
    );
}
