//! One span per delivery attempt, exported over OTLP/HTTP protobuf to an
//! OpenTelemetry collector (`--otlp-endpoint`,
//! docs/src/contract.md#filters-rate-limits-and-traces).
//!
//! The delivery path only puts an [`AttemptSpan`] into a bounded queue
//! ([`SpanSink::record`], never waiting: a full queue drops the span and
//! counts it). One task batches the queue and exports each batch with the
//! `opentelemetry-otlp` exporter over the dispatcher's own hyper and rustls
//! stack, so a collector that is down or slow costs the deliveries nothing
//! but dropped spans. Without an endpoint nothing here is built.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use opentelemetry::{
    Context, InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanExporter, SpanLinks},
};
use prometheus_client::metrics::counter::Counter;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{attempt::http_client::tls_config, metrics::Metrics};
use crate::wire::trace_context::AttemptTrace;

/// The span's name.
pub const SPAN_NAME: &str = "webhook.attempt";
/// Spans waiting for the exporter at most; more are dropped (counted).
/// About 300 bytes each: the queue holds at most about 1 MiB.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans per export request at most.
pub const MAX_BATCH: usize = 512;
/// How long a batch waits to fill before it is sent.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// One export request's limit (connection, request and answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, how long the spans still queued may take to be sent.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// A failing collector is logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What one attempt leaves for its span (built into the exporter's
/// `SpanData` by the export task, not on the delivery path).
#[derive(Clone, Debug)]
pub struct AttemptSpan {
    /// The attempt's trace context (its span id is the header's).
    pub trace: AttemptTrace,
    /// The producer's `tracestate`, when given.
    pub tracestate: Option<String>,
    /// The hook's `namespace/name`.
    pub hook: String,
    /// The event id.
    pub event_id: String,
    /// The event name.
    pub event: String,
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// The answer's status code, when one came.
    pub status: Option<u16>,
    /// How it ended (the attempts log's outcome label).
    pub outcome: &'static str,
    /// What went wrong, when it failed (no body).
    pub error: Option<String>,
    /// When the attempt started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
}

/// The delivery path's end of the span queue.
#[derive(Clone, Debug)]
pub struct SpanSink {
    tx: mpsc::Sender<AttemptSpan>,
    sampler: Sampler,
    queue_full: Counter,
}

impl SpanSink {
    /// Whether the attempt's span is recorded: a parent-based sampler (the
    /// producer's sampled flag; a new trace is always sampled).
    pub fn samples(&self, trace: &AttemptTrace) -> bool {
        let trace_id = TraceId::from_bytes(trace.trace_id);
        let parent = trace.parent_id.map(|parent| {
            Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(parent),
                TraceFlags::new(trace.flags),
                true,
                TraceState::NONE,
            ))
        });
        let result = self
            .sampler
            .should_sample(parent.as_ref(), trace_id, SPAN_NAME, &SpanKind::Client, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }

    /// Queues `span` for export; drops it (counted) when the queue is full.
    pub fn record(&self, span: AttemptSpan) {
        if self.tx.try_send(span).is_err() {
            self.queue_full.inc();
        }
    }
}

/// The export task: stop it with [`SpanExport::flush_and_stop`].
#[derive(Debug)]
pub struct SpanExport {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SpanExport {
    /// Sends what is still queued (within a few seconds) and stops.
    pub async fn flush_and_stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The OTLP endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpansError {
    /// The TLS configuration could not be built.
    #[error("building TLS for the OTLP endpoint: {0}")]
    Tls(#[from] rustls::Error),
    /// The exporter refused its configuration.
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The traces URL.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The URL spans are POSTed to: the base endpoint plus `/v1/traces`, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read by every OpenTelemetry SDK.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Builds the exporter for `endpoint` (the collector's base URL) and starts
/// the export task.
pub fn start(endpoint: &str, metrics: &Metrics) -> Result<(SpanSink, SpanExport), SpansError> {
    let url = traces_url(endpoint);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(&[])?)
        .https_or_http()
        .enable_http1()
        .build();
    let client = OtlpHttp {
        client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| SpansError::Exporter {
            endpoint: url.clone(),
            source,
        })?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("outbound-webhooks-dispatcher")
            .build(),
    );
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let drop_counter = |reason: &str| {
        metrics
            .spans_dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .clone()
    };
    let sink = SpanSink {
        tx,
        sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        queue_full: drop_counter("queue_full"),
    };
    let stop = CancellationToken::new();
    let exporting = Exporting {
        exporter,
        scope: InstrumentationScope::builder("outbound-webhooks")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
        url,
        exported: metrics.spans_exported.clone(),
        failed: drop_counter("export_failed"),
        last_failure_log: None,
    };
    let task = tokio::spawn(exporting.run(rx, stop.clone()));
    Ok((sink, SpanExport { stop, task }))
}

/// The export task's state.
struct Exporting {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    url: String,
    exported: Counter,
    failed: Counter,
    last_failure_log: Option<tokio::time::Instant>,
}

impl Exporting {
    async fn run(mut self, mut rx: mpsc::Receiver<AttemptSpan>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let got = tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                _ = stop.cancelled() => 0,
            };
            if got == 0 {
                break;
            }
            // Let a batch fill for a moment: one request per many attempts.
            let until = tokio::time::Instant::now() + BATCH_DELAY;
            while batch.len() < MAX_BATCH && !stop.is_cancelled() {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            self.export(std::mem::take(&mut batch)).await;
        }
        // Shutting down: what is queued, within SHUTDOWN_FLUSH.
        rx.close();
        let flush = async {
            while let Ok(span) = rx.try_recv() {
                batch.push(span);
                if batch.len() == MAX_BATCH {
                    self.export(std::mem::take(&mut batch)).await;
                }
            }
            self.export(batch).await;
        };
        if tokio::time::timeout(SHUTDOWN_FLUSH, flush).await.is_err() {
            tracing::warn!(endpoint = %self.url, "spans still queued at shutdown were not exported in time");
        }
    }

    async fn export(&mut self, batch: Vec<AttemptSpan>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let spans: Vec<SpanData> = batch.into_iter().map(|s| span_data(s, &self.scope)).collect();
        let result = tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), self.exporter.export(spans)).await;
        match result {
            Ok(Ok(())) => {
                self.exported.inc_by(n);
                self.last_failure_log = None;
            }
            failure => {
                self.failed.inc_by(n);
                let now = tokio::time::Instant::now();
                if self.last_failure_log.is_none_or(|at| now - at >= FAILURE_LOG_EVERY) {
                    self.last_failure_log = Some(now);
                    let error = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(
                        endpoint = %self.url, spans = n, %error,
                        "exporting attempt spans failed; they are dropped (counted in outbound_webhooks_spans_dropped_total), deliveries go on"
                    );
                }
            }
        }
    }
}

/// The OTLP span of one attempt.
pub fn span_data(s: AttemptSpan, scope: &InstrumentationScope) -> SpanData {
    let (namespace, name) = s.hook.split_once('/').unwrap_or(("", s.hook.as_str()));
    let mut attributes = vec![
        KeyValue::new("webhook.hook.namespace", namespace.to_string()),
        KeyValue::new("webhook.hook.name", name.to_string()),
        KeyValue::new("webhook.event.id", s.event_id),
        KeyValue::new("webhook.event.name", s.event),
        KeyValue::new("webhook.attempt", i64::from(s.attempt)),
        KeyValue::new("webhook.outcome", s.outcome),
        KeyValue::new("http.request.method", "POST"),
    ];
    if let Some(code) = s.status {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    let trace_state = s
        .tracestate
        .as_deref()
        .and_then(|t| t.parse::<TraceState>().ok())
        .unwrap_or(TraceState::NONE);
    let t = s.trace;
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(t.trace_id),
            SpanId::from_bytes(t.span_id),
            TraceFlags::new(t.flags),
            false,
            trace_state,
        ),
        parent_span_id: t.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: t.parent_id.is_some(),
        span_kind: SpanKind::Client,
        name: Cow::Borrowed(SPAN_NAME),
        start_time: s.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // OpenTelemetry's HTTP client convention: an error when no answer
        // came or it was not a success, unset otherwise.
        status: match s.error {
            Some(e) if s.outcome != "delivered" => Status::error(e),
            _ if s.outcome != "delivered" => Status::error(s.outcome),
            _ => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The exporter's HTTP client: hyper with the dispatcher's rustls (no
/// second TLS stack, nothing blocking on a tokio worker).
struct OtlpHttp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for OtlpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpHttp")
    }
}

/// Most bytes of a collector's answer read (it is a small protobuf).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for OtlpHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        tokio::time::timeout(EXPORT_TIMEOUT, exchange)
            .await
            .map_err(|_| HttpError::from("the OTLP request timed out"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (SpanSink, mpsc::Receiver<AttemptSpan>) {
        let (tx, rx) = mpsc::channel(1);
        let sink = SpanSink {
            tx,
            sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            queue_full: Counter::default(),
        };
        (sink, rx)
    }

    #[test]
    fn the_producers_sampled_flag_decides_and_new_traces_are_sampled() {
        let (sink, _rx) = sink();
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(sink.samples(&AttemptTrace::new("e", Some(sampled))));
        assert!(!sink.samples(&AttemptTrace::new("e", Some(&sampled.replace("-01", "-00")))));
        assert!(sink.samples(&AttemptTrace::new("e", None)));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (sink, _rx) = sink();
        let span = AttemptSpan {
            trace: AttemptTrace::new("e", None),
            tracestate: None,
            hook: "acme/shop".into(),
            event_id: "e".into(),
            event: "kustomer.user.create".into(),
            attempt: 1,
            status: Some(200),
            outcome: "delivered",
            error: None,
            start: SystemTime::now(),
            end: SystemTime::now(),
        };
        sink.record(span.clone());
        sink.record(span.clone());
        sink.record(span.clone());
        assert_eq!(sink.queue_full.get(), 2);
        let data = span_data(span.clone(), &InstrumentationScope::builder("t").build());
        assert_eq!(data.span_context.span_id(), SpanId::from_bytes(span.trace.span_id));
        assert_eq!(data.parent_span_id, SpanId::INVALID);
        assert_eq!(data.span_kind, SpanKind::Client);
        let attr = |k: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("webhook.hook.namespace").as_deref(), Some("acme"));
        assert_eq!(attr("webhook.hook.name").as_deref(), Some("shop"));
        assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
    }
}
