//! The OutboundWebhook API on a real kube-apiserver, driven with the built
//! kubectl as a user would: examples apply, bad manifests are refused at
//! apply time with messages that name the problem, defaults are filled in.

use outbound_webhooks_test_kit as support;

use serde_json::{Value, json};
use support::{apply_yaml, hooks::hook_with_spec, kubectl, kubectl_ok, namespace};

fn hook(name: &str, spec: Value) -> String {
    hook_with_spec(name, spec).to_string()
}

fn valid_spec() -> Value {
    json!({
        "url": "https://hooks.example.com/kustomer",
        "events": ["kustomer.conversation.create"],
    })
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

fn header(name: &str, value: &str) -> Value {
    json!([{"name": name, "value": value}])
}

#[test]
fn every_example_applies_and_kubectl_shows_the_columns() {
    let ns = namespace("examples");
    let examples = support::repo_root().join("examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&examples).expect("reading examples/") {
        let path = entry.expect("examples/ entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let path = path.to_str().expect("utf-8 path").to_string();
        kubectl_ok(&["apply", "-n", &ns, "-f", &path]);
        applied += 1;
    }
    assert!(
        applied >= 5,
        "expected at least five example manifests, found {applied}"
    );

    let table = kubectl_ok(&["get", "owh", "-n", &ns]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "URL", "READY", "STATUS", "FAILURES", "AGE"],
        "table was:\n{table}"
    );
    assert!(
        table.contains("https://hooks.ecomm.example/kustomer"),
        "table was:\n{table}"
    );

    let by_category = kubectl_ok(&["get", "webhooks", "-n", &ns, "-o", "name"]);
    assert!(
        by_category.contains("outboundwebhook.outboundwebhooks.io/ecomm-store"),
        "{by_category}"
    );
}

#[test]
fn kubectl_explain_shows_the_field_documentation() {
    let text = kubectl_ok(&["explain", "owh.spec.events"]);
    assert!(text.contains("Trigger events"), "explain printed:\n{text}");
    assert!(
        text.contains("kustomer.conversation.create"),
        "explain printed:\n{text}"
    );
    let text = kubectl_ok(&["explain", "owh.spec.timeoutSeconds"]);
    assert!(text.contains("1 to 30"), "explain printed:\n{text}");
}

#[test]
fn a_valid_hook_round_trips_with_defaults_filled_in() {
    let ns = namespace("round-trip");
    let out = apply_yaml(&ns, &hook("minimal", valid_spec()));
    assert!(out.success, "{}", out.stderr);
    let stored: Value = serde_json::from_str(&kubectl_ok(&["get", "owh", "minimal", "-n", &ns, "-o", "json"]))
        .expect("kubectl -o json prints JSON");
    assert_eq!(stored["spec"]["enabled"], json!(true));
    assert_eq!(stored["spec"]["timeoutSeconds"], json!(10));
    assert_eq!(stored["spec"]["url"], json!("https://hooks.example.com/kustomer"));
    assert_eq!(stored["spec"]["events"], json!(["kustomer.conversation.create"]));

    let typed: outbound_webhooks::OutboundWebhook =
        serde_json::from_value(stored).expect("the stored object deserializes into the Rust type");
    assert!(typed.spec.enabled);
    assert_eq!(typed.spec.timeout_seconds, 10);
}

#[test]
fn invalid_manifests_are_refused_at_apply_time_with_a_message_naming_the_problem() {
    let ns = namespace("invalid");
    let all_events: Vec<&str> = outbound_webhooks::EventName::ALL.iter().map(|e| e.as_str()).collect();
    let mut eleven_events = all_events.clone();
    eleven_events.push("kustomer.user.update");
    let eleven_headers: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("X-Custom-{i}"), "value": "v"}))
        .collect();

    let no_url = {
        let mut spec = valid_spec();
        spec.as_object_mut().expect("object").remove("url");
        spec
    };
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("no url", no_url, vec!["spec.url", "Required value"]),
        (
            "malformed url",
            with(valid_spec(), "url", json!("https://exa mple.com/hook")),
            vec!["spec.url", "url must be a valid absolute URL"],
        ),
        (
            "not a url at all",
            with(valid_spec(), "url", json!("hooks dot example")),
            vec!["spec.url", "url must be a valid absolute URL"],
        ),
        (
            "relative url",
            with(valid_spec(), "url", json!("/path")),
            vec!["spec.url", "url must start with https://"],
        ),
        (
            "ftp url",
            with(valid_spec(), "url", json!("ftp://files.example.com/hook")),
            vec!["spec.url", "url must start with https://"],
        ),
        (
            "url with user info",
            with(valid_spec(), "url", json!("https://user:pw@host.example.com/")),
            vec!["spec.url", "url must not contain user info"],
        ),
        (
            "url longer than 2048",
            with(
                valid_spec(),
                "url",
                json!(format!("https://hooks.example.com/{}", "a".repeat(2048))),
            ),
            vec!["spec.url", "Too long", "2048"],
        ),
        (
            "empty events",
            with(valid_spec(), "events", json!([])),
            vec!["spec.events", "at least 1 items"],
        ),
        (
            "unknown event",
            with(valid_spec(), "events", json!(["kustomer.order.create"])),
            vec!["spec.events[0]", "Unsupported value: \"kustomer.order.create\""],
        ),
        (
            "duplicate events",
            with(
                valid_spec(),
                "events",
                json!(["kustomer.team.create", "kustomer.team.create"]),
            ),
            vec!["spec.events[1]", "Duplicate value: \"kustomer.team.create\""],
        ),
        (
            "more than 10 events",
            with(valid_spec(), "events", json!(eleven_events)),
            vec!["spec.events", "must have at most 10 items"],
        ),
        (
            "display name longer than 255",
            with(valid_spec(), "name", json!("n".repeat(256))),
            vec!["spec.name", "Too long", "255"],
        ),
        (
            "header named Content-Type",
            with(valid_spec(), "headers", header("Content-Type", "text/plain")),
            vec!["spec.headers[0].name", "header name is reserved: Host, Content-Type"],
        ),
        (
            "header named host, any case",
            with(valid_spec(), "headers", header("HOST", "evil.example")),
            vec!["spec.headers[0].name", "header name is reserved: Host, Content-Type"],
        ),
        (
            "header named X-Kustomer-Webhook-Signature",
            with(
                valid_spec(),
                "headers",
                header("X-Kustomer-Webhook-Signature", "forged"),
            ),
            vec!["spec.headers[0].name", "X-Kustomer-Webhook-* and webhook-* headers"],
        ),
        (
            "header named webhook-id",
            with(valid_spec(), "headers", header("webhook-id", "forged")),
            vec!["spec.headers[0].name", "X-Kustomer-Webhook-* and webhook-* headers"],
        ),
        (
            "header name with a space",
            with(valid_spec(), "headers", header("X Custom", "v")),
            vec!["spec.headers[0].name", "header name must be an HTTP token"],
        ),
        (
            "header value with a line break",
            with(valid_spec(), "headers", header("X-Custom", "a\r\nX-Injected: yes")),
            vec!["spec.headers[0].value", "must not contain control characters"],
        ),
        (
            "header with both value and valueFrom",
            with(
                valid_spec(),
                "headers",
                json!([{"name": "Authorization", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            ),
            vec!["spec.headers[0]", "a header needs exactly one of value and valueFrom"],
        ),
        (
            "header with neither value nor valueFrom",
            with(valid_spec(), "headers", json!([{"name": "Authorization"}])),
            vec!["spec.headers[0]", "a header needs exactly one of value and valueFrom"],
        ),
        (
            "timeoutSeconds 0",
            with(valid_spec(), "timeoutSeconds", json!(0)),
            vec!["spec.timeoutSeconds", "greater than or equal to 1"],
        ),
        (
            "timeoutSeconds 31",
            with(valid_spec(), "timeoutSeconds", json!(31)),
            vec!["spec.timeoutSeconds", "less than or equal to 30"],
        ),
        (
            "more than 10 headers",
            with(valid_spec(), "headers", json!(eleven_headers)),
            vec!["spec.headers", "must have at most 10 items"],
        ),
        (
            "enabled is not a boolean",
            with(valid_spec(), "enabled", json!("yes")),
            vec!["spec.enabled", "must be of type boolean"],
        ),
    ];
    assert!(cases.len() >= 18);

    let mut failures = Vec::new();
    for (i, (what, spec, expected)) in cases.iter().enumerate() {
        let name = format!("invalid-{i}");
        let out = apply_yaml(&ns, &hook(&name, spec.clone()));
        if out.success {
            failures.push(format!("{what}: accepted, but must be refused"));
            continue;
        }
        for needle in expected {
            if !out.stderr.contains(needle) {
                failures.push(format!(
                    "{what}: message lacks {needle:?}; kubectl said: {}",
                    out.stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Nothing of the refused manifests was stored.
    let stored = kubectl(&["get", "owh", "-n", &ns, "-o", "name"]);
    assert!(
        stored.success && stored.stdout.trim().is_empty(),
        "stored: {}",
        stored.stdout
    );
}

#[test]
fn valid_edge_cases_are_accepted() {
    let ns = namespace("valid-edges");
    let all_events: Vec<&str> = outbound_webhooks::EventName::ALL.iter().map(|e| e.as_str()).collect();
    let ten_headers: Vec<Value> = (0..10)
        .map(|i| json!({"name": format!("X-Custom-{i}"), "value": "v"}))
        .collect();
    let cases = vec![
        ("all ten events", with(valid_spec(), "events", json!(all_events))),
        ("ten headers", with(valid_spec(), "headers", json!(ten_headers))),
        (
            "http url (the controller decides)",
            with(valid_spec(), "url", json!("http://hooks.example.com/x")),
        ),
        (
            "url with port, path and query",
            with(valid_spec(), "url", json!("https://hooks.example.com:8443/a/b?c=d")),
        ),
        (
            "display name of 255",
            with(valid_spec(), "name", json!("n".repeat(255))),
        ),
        ("timeout 1", with(valid_spec(), "timeoutSeconds", json!(1))),
        ("timeout 30", with(valid_spec(), "timeoutSeconds", json!(30))),
        (
            "header value with a tab",
            with(valid_spec(), "headers", header("X-Tabbed", "a\tb")),
        ),
    ];
    for (i, (what, spec)) in cases.into_iter().enumerate() {
        let out = apply_yaml(&ns, &hook(&format!("valid-{i}"), spec));
        assert!(out.success, "{what}: refused: {}", out.stderr);
    }
}
