//! `spec.filter` end to end (docs/src/filters.md): real API server, Redis,
//! controller, dispatchers and receivers.

use outbound_webhooks_test_kit as support;

use std::{collections::BTreeSet, time::Duration};

use outbound_webhooks::contract::conditions::{ACCEPTED, DELIVERING, accepted};
use serde_json::json;
use support::{
    CREATE,
    controller::{ControllerProcess, unique_lease},
    delivery_test::DeliveryTest,
    hooks::{SOON, create_hook, hook_manifest, wait_active, wait_condition},
    kubectl::{apply_ok, get_json},
    kubectl_ok,
    receiver::Receiver,
    wait_for,
};

const UPDATE: &str = "kustomer.conversation.update";

/// The contract's example filter (docs/src/contract.md#filters-rate-limits-and-traces).
const SPEC_EXAMPLE: &str = "event.name == 'kustomer.conversation.update' && event.data.attributes.priority == 'urgent'";

const NO_MATCH: &str = r#"outbound_webhooks_events_filtered_total{reason="no_match"}"#;
const ERROR: &str = r#"outbound_webhooks_events_filtered_total{reason="error"}"#;

const DEADLINE: Duration = Duration::from_secs(30);

fn conversation(priority: &str) -> serde_json::Value {
    json!({"type": "conversation", "id": "c1", "attributes": {"priority": priority, "status": "open"}})
}

#[test]
fn only_the_events_the_spec_example_matches_arrive_and_the_rest_are_counted_no_match() {
    let test = DeliveryTest::new("filter-match");
    let receiver = Receiver::ok();
    create_hook(
        &test.ns,
        "urgent-updates",
        &receiver.url("/"),
        &[CREATE, UPDATE],
        json!({"filter": SPEC_EXAMPLE}),
    );
    let d = test.dispatcher(&[]);

    // 10 events: every mix of name and priority; 3 match.
    let mixes = [
        (UPDATE, "urgent"),
        (UPDATE, "low"),
        (CREATE, "urgent"),
        (CREATE, "low"),
        (UPDATE, "urgent"),
        (UPDATE, "normal"),
        (CREATE, "urgent"),
        (UPDATE, "URGENT"),
        (CREATE, "normal"),
        (UPDATE, "urgent"),
    ];
    let mut expected = BTreeSet::new();
    for (name, priority) in mixes {
        let id = test.publish_event(name, &conversation(priority));
        if name == UPDATE && priority == "urgent" {
            expected.insert(id);
        }
    }
    assert_eq!(expected.len(), 3);
    // Entries are routed in order: once this last matching event and the
    // three before it arrived, every other event was routed and kept back.
    let sentinel = test.publish_event(UPDATE, &conversation("urgent"));
    expected.insert(sentinel.clone());
    for id in &expected {
        receiver.wait_for_event(id, 1, DEADLINE);
    }
    let arrived: BTreeSet<String> = receiver.requests().iter().map(|r| r.event_id().to_string()).collect();
    assert_eq!(arrived, expected, "exactly the matching events arrive");
    assert_eq!(receiver.requests().len(), 4, "each once");
    wait_for("7 events counted no_match", DEADLINE, || match d.metric(NO_MATCH) {
        Some(7.0) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(d.metric(ERROR), Some(0.0));
}

#[test]
fn invalid_filters_are_refused_with_the_compilers_message_in_kubectl_get_wide() {
    let ns = support::namespace("filter-invalid");
    let lease = unique_lease("filter-invalid");
    let mut controller = ControllerProcess::scoped("filter-invalid", &ns, &lease, &[]);
    controller.wait_ready(DEADLINE);
    let url = "https://hooks.example.com/in";
    for (name, filter) in [
        ("syntax", "event.name == "),
        ("unknown", "evnt.name == 'kustomer.conversation.update'"),
        ("fine", SPEC_EXAMPLE),
    ] {
        apply_ok(
            &ns,
            &hook_manifest(name, url, &[CREATE], json!({"filter": filter})).to_string(),
        );
    }
    wait_active(&ns, "fine", SOON);
    let syntax = wait_condition(&ns, "syntax", ACCEPTED, "False", accepted::INVALID_FILTER, SOON);
    assert!(
        syntax.message.starts_with("spec.filter: filter does not parse: 1:"),
        "{}",
        syntax.message
    );
    let unknown = wait_condition(&ns, "unknown", ACCEPTED, "False", accepted::INVALID_FILTER, SOON);
    assert_eq!(
        unknown.message,
        "spec.filter: filter reads an unknown variable \"evnt\": the only variable is event"
    );

    // What a person sees.
    let table = kubectl_ok(&["get", "owh", "-n", &ns, "-o", "wide"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
            .to_string()
    };
    let syntax_row = row("syntax");
    assert!(syntax_row.contains("NotAccepted"), "{table}");
    assert!(
        syntax_row.contains("not accepted: spec.filter: filter does not parse: 1:"),
        "{table}"
    );
    let unknown_row = row("unknown");
    assert!(
        unknown_row.contains("not accepted: spec.filter: filter reads an unknown variable \"evnt\""),
        "{table}"
    );
    assert!(row("fine").contains("Active"), "{table}");
}

#[test]
fn a_filter_reading_a_missing_field_counts_an_error_delivers_nothing_and_the_delivering_message_says_so() {
    let test = DeliveryTest::new("filter-error");
    let lease = unique_lease("filter-error");
    let mut controller = ControllerProcess::scoped("filter-error", &test.ns, &lease, &["--allow-http"]);
    controller.wait_ready(DEADLINE);
    let filtered = Receiver::ok();
    let plain = Receiver::ok();
    apply_ok(
        &test.ns,
        &hook_manifest(
            "filtered",
            &filtered.url("/"),
            &[CREATE],
            json!({"filter": "event.data.attributes.priority == 'urgent'"}),
        )
        .to_string(),
    );
    apply_ok(
        &test.ns,
        &hook_manifest("plain", &plain.url("/"), &[CREATE], json!({})).to_string(),
    );
    wait_active(&test.ns, "filtered", SOON);
    wait_active(&test.ns, "plain", SOON);
    let d = test.dispatcher(&[]);

    // No `attributes`: the filter fails on it.
    let id = test.publish(&json!({"type": "conversation", "id": "c1"}));
    // The hook without a filter gets it: the event was routed.
    plain.wait_for_event(&id, 1, DEADLINE);
    wait_for("1 event counted error", DEADLINE, || match d.metric(ERROR) {
        Some(1.0) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(d.metric(NO_MATCH), Some(0.0));
    assert!(
        filtered.requests().is_empty(),
        "nothing is delivered to the filtered hook"
    );

    let message = wait_for("the Delivering message names the error", DEADLINE, || {
        let json = get_json(&test.ns, "owh", "filtered").ok_or("no hook")?;
        let message = json["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == DELIVERING))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string();
        if message.contains("the filter failed on 1 event") && message.contains("No such key: attributes") {
            Ok(message)
        } else {
            Err(message)
        }
    });
    assert!(
        message.starts_with("no request has been sent to the receiver yet"),
        "{message}"
    );
    let errors = get_json(&test.ns, "owh", "filtered").unwrap()["status"]["delivery"]["filterErrors"].clone();
    assert_eq!(errors["events"], 1, "{errors}");
    assert_eq!(errors["message"], "No such key: attributes", "{errors}");
    assert!(filtered.requests().is_empty());
}

#[test]
fn a_test_event_reaches_a_filtered_hook_although_the_filter_rejects_it() {
    let test = DeliveryTest::new("filter-test-event");
    let receiver = Receiver::ok();
    create_hook(
        &test.ns,
        "h",
        &receiver.url("/"),
        &[CREATE],
        json!({"filter": "event.data.attributes.priority == 'urgent'"}),
    );
    let d = test.dispatcher(&[]);

    // The same event, ordinary: filtered out.
    let ordinary = test.publish(&conversation("low"));
    wait_for("the ordinary event counted no_match", DEADLINE, || {
        match d.metric(NO_MATCH) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // As a test event (`publish --hook`): delivered.
    let out = test.publish_cli(&conversation("low").to_string(), &["--hook", "h"]);
    let test_event = out.split_whitespace().next().unwrap().to_string();
    receiver.wait_for_event(&test_event, 1, DEADLINE);
    assert!(receiver.requests_for(&ordinary).is_empty());
    assert_eq!(d.metric(NO_MATCH), Some(1.0), "the test event was not filtered");
}
