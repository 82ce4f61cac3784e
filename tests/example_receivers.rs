//! The example receivers of `examples/receivers/` take real deliveries from
//! the real dispatcher: they verify and accept them, and refuse a wrong
//! secret and a tampered body with 401; during a rotation they accept a
//! delivery by any of their tokens.

use outbound_webhooks_test_kit as support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use outbound_webhooks::contract::signing_tokens::NEXT_TOKEN_KEY;
use serde_json::json;
use support::{
    CREATE,
    delivery_test::DeliveryTest,
    hooks::{accept, create_hook, new_token},
    process::ChildProcess,
    repo_root, wait_for,
};

const UPDATE: &str = "kustomer.conversation.update";

/// One example receiver as a child process, printing `verified ...` lines.
struct ExampleReceiver {
    process: ChildProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ExampleReceiver {
    fn start(language: &str, token: &str) -> ExampleReceiver {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (program, script) = match language {
            "node" => ("node", "examples/receivers/node/server.js"),
            "python" => ("python3", "examples/receivers/python/receiver.py"),
            other => panic!("no example receiver for {other}"),
        };
        let mut command = Command::new(program);
        command
            .arg(repo_root().join(script))
            .env("WEBHOOK_TOKEN", token)
            .env("PORT", "0");
        // It logs every request to stderr, so its output goes to a file that
        // is never closed under it; a line says where it listens.
        let process = ChildProcess::start(
            &format!("{language} receiver"),
            command,
            Some(&dir.path().join("output")),
        )
        .unwrap_or_else(|e| panic!("{e} ({program} must be installed)"));
        let port = wait_for(
            &format!("the {language} receiver to listen"),
            Duration::from_secs(20),
            || {
                let text = process.log();
                text.lines()
                    .find_map(|l| l.strip_prefix("listening on http://"))
                    .and_then(|addr| addr.trim().rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or(text)
            },
        );
        ExampleReceiver {
            process,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn verified(&self) -> Vec<String> {
        self.process
            .log()
            .lines()
            .filter(|l| l.starts_with("verified "))
            .map(str::to_string)
            .collect()
    }

    /// POSTs `body` with a Kustomer signature header; returns the status code.
    fn post(&self, body: &[u8], signature: &str) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to the receiver");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             X-Kustomer-Webhook-Signature: {signature}\r\nwebhook-id: tampered-1\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(body))
        .expect("sending the request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {response:?}"))
    }
}

fn real_deliveries_are_verified_and_bad_ones_refused(language: &str) {
    let test = DeliveryTest::new(&format!("receiver-{language}"));
    let ns = &test.ns;

    // The receiver knows the token of `right`; `wrong` signs with its own.
    let placeholder = "http://127.0.0.1:9/";
    let right = test.hook("right", placeholder, json!({}));
    let receiver = ExampleReceiver::start(language, &right.token);
    let out = support::kubectl(&[
        "patch",
        "owh",
        "right",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"url": receiver.url()}}).to_string(),
    ]);
    assert!(out.success, "{}", out.stderr);
    accept(ns, "right", true);
    let wrong = create_hook(ns, "wrong", &receiver.url(), &[UPDATE], json!({}));
    assert_ne!(right.token, wrong.token);

    let _dispatcher = test.dispatcher_as(language, &["--retry-schedule", "100ms"]);

    let events: Vec<String> = (0..3)
        .map(|i| test.publish(&json!({"type": "conversation", "n": i, "text": "café ☕"})))
        .collect();
    let verified = wait_for(
        "the receiver to verify three deliveries",
        Duration::from_secs(30),
        || {
            let lines = receiver.verified();
            if events.iter().all(|id| lines.iter().any(|l| l.contains(id.as_str()))) {
                Ok(lines)
            } else {
                Err(format!("{lines:?}"))
            }
        },
    );
    assert_eq!(verified.len(), 3, "each event processed once: {verified:?}");
    assert!(
        verified
            .iter()
            .all(|l| l.contains(CREATE) && l.contains(&format!("org={ns}"))),
        "{verified:?}"
    );

    // A delivery signed with another hook's secret: 401, which the
    // dispatcher records as the hook's last failure.
    test.publish_event(UPDATE, &json!({"type": "conversation"}));
    wait_for(
        "the wrong-secret delivery to fail with 401",
        Duration::from_secs(40),
        || {
            let delivery = wrong.delivery();
            if delivery["lastFailure"]["statusCode"] == json!(401) {
                Ok(())
            } else {
                Err(delivery.to_string())
            }
        },
    );

    // A tampered body under a valid signature of the original: 401.
    let body = br#"{"id":"tampered-1","name":"kustomer.conversation.create","org":"acme","data":{"amount":1}}"#;
    let signature = outbound_webhooks::wire::signing::kustomer_signature(&right.token, body);
    let tampered = br#"{"id":"tampered-1","name":"kustomer.conversation.create","org":"acme","data":{"amount":9}}"#;
    assert_eq!(receiver.post(tampered, &signature), 401, "a tampered body is refused");
    assert_eq!(receiver.post(body, &signature), 200, "the untampered body is accepted");
    let wrong_secret = outbound_webhooks::wire::signing::kustomer_signature(&new_token(), body);
    assert_eq!(receiver.post(body, &wrong_secret), 401, "a wrong secret is refused");
    assert_eq!(receiver.verified().len(), 4, "only verified deliveries were processed");
}

fn deliveries_during_a_rotation_are_accepted_by_any_listed_token(language: &str) {
    let test = DeliveryTest::new(&format!("receiver-rotation-{language}"));
    let ns = &test.ns;
    let hook = test.hook("rotating", "http://127.0.0.1:9/", json!({}));
    // Mid-rotation, as rotate-secret leaves the Secret: the token and a staged next token.
    let (old, new) = (hook.token.clone(), new_token());
    let out = support::kubectl(&[
        "patch",
        "secret",
        "rotating-webhook-secret",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"stringData": {NEXT_TOKEN_KEY: new}}).to_string(),
    ]);
    assert!(out.success, "{}", out.stderr);

    // A receiver already given only the new token accepts the real
    // deliveries: their webhook-signature carries two signatures, one by it.
    let updated = ExampleReceiver::start(language, &new);
    let out = support::kubectl(&[
        "patch",
        "owh",
        "rotating",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"spec": {"url": updated.url()}}).to_string(),
    ]);
    assert!(out.success, "{}", out.stderr);
    accept(ns, "rotating", true);
    let _dispatcher = test.dispatcher_as(language, &["--retry-schedule", "100ms"]);
    let id = test.publish(&json!({"type": "conversation"}));
    wait_for("the receiver to verify the delivery", Duration::from_secs(30), || {
        let lines = updated.verified();
        if lines.iter().any(|l| l.contains(id.as_str())) {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    });

    // A receiver given both tokens accepts the Kustomer header by either.
    let both = ExampleReceiver::start(language, &format!("{new},{old}"));
    let body = br#"{"id":"rotated-1","name":"kustomer.conversation.create","org":"acme","data":{}}"#;
    let by = |token: &str| outbound_webhooks::wire::signing::kustomer_signature(token, body);
    assert_eq!(both.post(body, &by(&old)), 200, "signed by the previous token");
    assert_eq!(both.post(body, &by(&new)), 200, "signed by the new token");
    assert_eq!(
        both.post(body, &by(&new_token())),
        401,
        "signed by a token not in the list"
    );
    assert_eq!(
        updated.post(body, &by(&old)),
        401,
        "the old token is not in that receiver's list"
    );
}

#[test]
fn the_node_receiver_verifies_real_deliveries_and_refuses_bad_ones() {
    real_deliveries_are_verified_and_bad_ones_refused("node");
}

#[test]
fn the_python_receiver_verifies_real_deliveries_and_refuses_bad_ones() {
    real_deliveries_are_verified_and_bad_ones_refused("python");
}

#[test]
fn the_node_receiver_accepts_deliveries_by_any_of_its_tokens_during_a_rotation() {
    deliveries_during_a_rotation_are_accepted_by_any_listed_token("node");
}

#[test]
fn the_python_receiver_accepts_deliveries_by_any_of_its_tokens_during_a_rotation() {
    deliveries_during_a_rotation_are_accepted_by_any_listed_token("python");
}
