//! A real OpenTelemetry Collector (tools/otelcol, built by
//! `scripts/install-tools.sh`): an OTLP/HTTP receiver on a free loopback
//! port and contrib's file exporter writing every span it receives to a
//! file as OTLP JSON lines, which [`Collector::spans`] reads back.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    cluster::tools_bin_dir,
    process::{ChildProcess, free_port},
    unique_suffix,
};

/// One span as the collector exported it.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// 32 lowercase hex.
    pub trace_id: String,
    /// 16 lowercase hex.
    pub span_id: String,
    /// 16 lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// OTLP span kind (3: client).
    pub kind: i64,
    /// Attributes, each value as text (ints as their decimal digits).
    pub attributes: HashMap<String, String>,
    /// The resource's attributes (e.g. `service.name`).
    pub resource: HashMap<String, String>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i64,
    /// The line's span object as the collector wrote it.
    pub raw: Value,
}

impl ExportedSpan {
    /// An attribute's value, empty when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// A running collector; killed on drop.
pub struct Collector {
    process: Option<ChildProcess>,
    /// Where its OTLP/HTTP receiver listens.
    pub port: u16,
    dir: PathBuf,
    spans_path: PathBuf,
}

fn attributes(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?.to_string();
            let value = kv["value"].as_object()?.values().next()?;
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((key, text))
        })
        .collect()
}

/// The spans of OTLP JSON lines (one `{"resourceSpans": [...]}` per line).
pub fn parse_spans(text: &str) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The file exporter may be caught mid-line: a partial last line is
        // read again on the next poll.
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
            let resource = attributes(&rs["resource"]["attributes"]);
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                    spans.push(ExportedSpan {
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                        name: text("name"),
                        kind: s["kind"].as_i64().unwrap_or_default(),
                        attributes: attributes(&s["attributes"]),
                        resource: resource.clone(),
                        status_code: s["status"]["code"].as_i64().unwrap_or_default(),
                        raw: s.clone(),
                    });
                }
            }
        }
    }
    spans
}

impl Collector {
    /// Starts the collector and waits until its receiver answers.
    pub fn start() -> Collector {
        let binary = tools_bin_dir().join("otelcol");
        assert!(
            binary.exists(),
            "otelcol is not installed in {}: run scripts/install-tools.sh (it builds the OpenTelemetry Collector of tools/otelcol once)",
            binary.parent().map(|d| d.display().to_string()).unwrap_or_default()
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("owh-otelcol-{}-{}", std::process::id(), unique_suffix()));
        std::fs::create_dir_all(&dir).expect("creating the collector's directory");
        let spans_path = dir.join("spans.jsonl");
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {spans}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"#,
            spans = spans_path.display()
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("writing the collector's config");
        let mut command = Command::new(&binary);
        command.arg("--config").arg(&config_path);
        let process = ChildProcess::start("OpenTelemetry Collector", command, Some(&dir.join("collector.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut collector = Collector {
            process: Some(process),
            port,
            dir,
            spans_path,
        };
        collector.wait_ready(Duration::from_secs(30));
        collector
    }

    /// The OTLP/HTTP base URL (what `--otlp-endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if post_empty_traces(self.port) == Some(200) {
                return;
            }
            let process = self.process.as_mut().expect("running");
            if let Some(status) = process.exit_status() {
                panic!(
                    "the collector exited ({status}) before it was ready; {}",
                    process.log_tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the collector was not ready after {timeout:?}; {}",
                process.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every span exported so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        std::fs::read_to_string(&self.spans_path)
            .map(|text| parse_spans(&text))
            .unwrap_or_default()
    }

    /// Waits until `count` spans pass `filter`; returns them. Fails after
    /// `timeout`, saying how many came.
    pub fn wait_for_spans(
        &self,
        what: &str,
        count: usize,
        timeout: Duration,
        filter: impl Fn(&ExportedSpan) -> bool,
    ) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<ExportedSpan> = self.spans().into_iter().filter(&filter).collect();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {count} spans after {timeout:?}; the collector's log:\n{}",
                spans.len(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(30))
            .unwrap_or_else(|| "(stopped)".into())
    }

    /// Stops it (its port is then closed).
    pub fn stop(&mut self) {
        self.process = None;
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.process = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POSTs an empty OTLP/JSON request to `/v1/traces`; the status code.
fn post_empty_traces(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let body = "{}";
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_lines_become_spans() {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"00f067aa0ba902b8","name":"t","kind":3,"attributes":[{"key":"a","value":{"intValue":"5"}}],"status":{"code":2}}]}]}]}"#;
        let spans = parse_spans(&format!("{line}\n{line}\n{{\"partial"));
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].span_id, "00f067aa0ba902b7");
        assert_eq!(spans[0].attr("a"), "5");
        assert_eq!(spans[0].resource["service.name"], "x");
        assert_eq!((spans[0].kind, spans[0].status_code), (3, 2));
    }
}
