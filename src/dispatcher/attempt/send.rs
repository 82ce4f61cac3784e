//! One HTTP attempt: the signed request through the [`Outbound`] client
//! (no redirects, no environment proxies, filtered DNS), its metrics,
//! logs and attempts-log record, and the classification of the answer.

use std::{sync::Arc, time::Duration};

use http::header::{LOCATION, RETRY_AFTER};
use http_body_util::BodyExt;

use crate::contract::retry_schedule::parse_retry_after;
use crate::dispatcher::{
    acks::AckItem,
    attempt::attempts_log::{AttemptKind, AttemptRecord, error_text},
    attempt::error_text::{Destination, explain},
    attempt::headers::request_headers,
    attempt::http_client::{CONNECT_TIMEOUT, Target},
    attempt::outbound::{Attempt, MAX_RESPONSE_BYTES, Outbound, Outcome, check_resolved, classify, literal_ip},
    attempt::spans::AttemptSpan,
    clock::now_ms,
    context::Shared,
    metrics::status_class,
    view::cached_objects::{CachedHook, CachedSecret},
};
use crate::store::Task;
use crate::wire::trace_context::AttemptTrace;

/// POSTs `body` with `headers` to `url`, waiting at most `timeout`.
pub async fn send(
    outbound: &Outbound,
    url: Result<Arc<Target>, String>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
    timeout: Duration,
) -> Attempt {
    let target = match url {
        Ok(u) => u,
        Err(e) => return Attempt::failed(AttemptKind::NotSent, format!("invalid URL: {e}")),
    };
    // One deadline for DNS, the connection, the answer and the bounded body
    // read, so an attempt never outlasts the task's lease (timeout + margin).
    let deadline = tokio::time::Instant::now() + timeout;
    match literal_ip(&target.host) {
        Some(ip) => {
            if let Err(why) = outbound.filter.check(ip) {
                return Attempt::failed(AttemptKind::RefusedAddress, format!("refused destination: {why}"));
            }
        }
        None if outbound.proxied => {
            if let Err(refused) = check_resolved(outbound, &target, deadline).await {
                return refused;
            }
        }
        None => {}
    }
    let response = match outbound.client.post(&target, headers, body, deadline).await {
        Ok(r) => r,
        Err(e) => {
            // The texts name the host and port, never the URL (its query
            // may hold a token).
            let to = Destination {
                host: &target.host,
                port: target.port,
            };
            let (kind, message) = explain(&e, to, timeout, CONNECT_TIMEOUT);
            return Attempt::failed(kind, message);
        }
    };
    let (response, mut body) = response.into_parts();
    let status = response.status;
    let retry_after = if matches!(status.as_u16(), 429 | 503) {
        response
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
    } else {
        None
    };
    // Read only a little of the body: enough for a message, bounded so a
    // receiver cannot make us buffer a huge answer.
    let mut excerpt = Vec::new();
    let body_read = tokio::time::timeout_at(deadline, async {
        while excerpt.len() < MAX_RESPONSE_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers carry no text for the message.
                    if let Some(chunk) = frame.data_ref() {
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BYTES - excerpt.len())])
                    }
                }
                _ => break,
            }
        }
    })
    .await;
    drop(body_read);
    let outcome = classify(status.as_u16());
    let mut message = format!("HTTP {status}");
    // The log's text stops here: no header value, no body.
    let log_error = match outcome {
        Outcome::Delivered => None,
        _ if status.is_redirection() => Some(format!("{message} (redirect not followed)")),
        _ => Some(message.clone()),
    };
    if let Some(location) = response.headers.get(LOCATION).and_then(|v| v.to_str().ok())
        && status.is_redirection()
    {
        message.push_str(&format!(" (redirect to {location} not followed)"));
    }
    let text: String = String::from_utf8_lossy(&excerpt)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if outcome != Outcome::Delivered && !text.trim().is_empty() {
        message.push_str(": ");
        message.push_str(text.trim());
    }
    Attempt {
        outcome,
        status: Some(status.as_u16()),
        retry_after,
        message,
        kind: match outcome {
            Outcome::Delivered => AttemptKind::Delivered,
            Outcome::Gone => AttemptKind::Gone,
            Outcome::Failed => AttemptKind::Failed,
        },
        log_error,
    }
}

/// Sends one attempt of `task` to `hook`, signed with the hook's Secret as
/// cached now (`signing`, the one cached when the attempt was scheduled, if
/// it left the cache since), with its metrics and logs; returns it and when
/// it ended (Unix ms).
pub async fn send_signed(
    shared: &Shared,
    hook: &CachedHook,
    task: &Task,
    signing: &CachedSecret,
    attempt_number: u32,
) -> (Attempt, i64) {
    let timeout = Duration::from_secs(hook.spec.timeout_seconds.clamp(1, 30) as u64);
    // The attempt's own span in the event's trace (the producer's, or one
    // derived from the event id, so all its attempts share it).
    let trace = AttemptTrace::new(&task.event_id, task.trace.as_ref().map(|t| t.traceparent.as_str()));
    let span_start = shared.spans.as_ref().map(|_| std::time::SystemTime::now());
    let started = std::time::Instant::now();
    let attempt = match request_headers(&shared.secrets, hook, task, signing, &trace) {
        Ok(headers) => {
            send(
                &shared.http,
                shared.urls.parse(&hook.spec.url),
                headers,
                task.body.clone(),
                timeout,
            )
            .await
        }
        Err(message) => Attempt::failed(AttemptKind::NotSent, message),
    };
    let elapsed = started.elapsed();
    shared.metrics.attempt_duration.observe(elapsed.as_secs_f64());
    let outcome_label = match attempt.outcome {
        Outcome::Delivered => "delivered",
        Outcome::Gone => "gone",
        Outcome::Failed => "failed",
    };
    if attempt.outcome == Outcome::Delivered && attempt.status.is_some_and(|s| (200..300).contains(&s)) {
        shared.metrics.delivered_2xx.inc();
    } else {
        shared
            .metrics
            .attempts
            .get_or_create(&vec![
                ("outcome", outcome_label.to_string()),
                ("status_class", status_class(attempt.status)),
            ])
            .inc();
    }
    // Successes are routine (debug); failures are what on-call reads (info).
    if attempt.outcome == Outcome::Delivered {
        tracing::debug!(
            hook = %task.hook, event = %task.event_id, attempt = attempt_number, status = attempt.status,
            elapsed_ms = elapsed.as_millis() as u64, trace_id = %trace.trace_id_hex(), "delivered"
        );
    } else {
        tracing::info!(
            hook = %task.hook, event = %task.event_id, attempt = attempt_number, outcome = outcome_label,
            status = attempt.status, elapsed_ms = elapsed.as_millis() as u64, message = %attempt.message,
            trace_id = %trace.trace_id_hex(), "delivery attempt failed"
        );
    }
    if let (Some(spans), Some(start)) = (&shared.spans, span_start)
        && spans.samples(&trace)
    {
        spans.record(AttemptSpan {
            trace,
            tracestate: task.trace.as_ref().and_then(|t| t.tracestate.clone()),
            hook: task.hook.clone(),
            event_id: task.event_id.clone(),
            event: task.event.clone(),
            attempt: attempt_number,
            status: attempt.status,
            outcome: attempt.kind.as_str(),
            error: attempt.log_error.as_deref().map(error_text),
            start,
            end: start + elapsed,
        });
    }
    let done_ms = now_ms();
    if shared.config.attempts_log_size > 0 {
        let record = AttemptRecord {
            at_ms: done_ms,
            event_id: task.event_id.clone(),
            event: task.event.clone(),
            attempt: attempt_number,
            outcome: attempt.kind,
            code: attempt.status,
            duration_ms: elapsed.as_millis() as u64,
            error: attempt.log_error.as_deref().map(error_text),
            trace_id: Some(trace.trace_id_hex()),
        };
        // Written with the acker's next batch of the hook's shard: no round
        // trip of its own.
        let _ = shared.acks.send(AckItem::Attempt {
            org: task.org.clone(),
            uid: task.uid.clone(),
            record,
        });
    }
    (attempt, done_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_delivers_and_410_revokes() {
        assert_eq!(classify(200), Outcome::Delivered);
        assert_eq!(classify(204), Outcome::Delivered);
        assert_eq!(classify(302), Outcome::Failed);
        assert_eq!(classify(400), Outcome::Failed);
        assert_eq!(classify(410), Outcome::Gone);
        assert_eq!(classify(500), Outcome::Failed);
    }

    #[test]
    fn ip_literals_are_recognised() {
        let u = |s: &str| Target::parse(s).unwrap().host;
        assert_eq!(
            literal_ip(&u("http://127.0.0.1:8/x")),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip(&u("http://[::1]:8/x")), Some("::1".parse().unwrap()));
        assert_eq!(
            literal_ip(&u("http://[::ffff:127.0.0.1]/")),
            Some("::ffff:127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip(&u("http://localhost/")), None);
    }
}
