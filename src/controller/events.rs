//! Kubernetes Events, published off the reconcile path: a reconcile hands
//! its hook's Events to a bounded queue and goes on, and a publisher sends
//! them a few at a time through kube-runtime's `Recorder` (which keeps the
//! series of repeated Events). A hook's Events stay in the order they were
//! queued; a full queue makes reconciles wait (nothing is dropped), and on
//! shutdown what is queued is sent before the Lease is released, for a
//! bounded time.

use std::time::Duration;

use futures::{SinkExt, StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use super::status::{EventNote, Severity};

/// Hooks whose Events may wait in the queue before reconciles wait too:
/// room for a burst of 10,000 new hooks (under 1 KiB each).
const QUEUE_CAPACITY: usize = 16_384;
/// Recorders, each for the objects whose reference hashes to it. The
/// Recorder scans its whole cache (every Event of the last 6 minutes) under
/// a write lock on each publish; split, each scan is 1/16 as long. An
/// object always lands on the same one, so its series stay whole.
const RECORDERS: usize = 16;
/// Event writes in flight: few, so that a burst of new hooks leaves the API
/// server to the writes that make them Ready (Secrets and status).
const PUBLISHERS: usize = 4;
/// How long shutdown waits for the queued Events.
const DRAIN: Duration = Duration::from_secs(5);

/// One hook's Events, in order.
struct Batch {
    regarding: ObjectReference,
    notes: Vec<EventNote>,
}

/// Where reconciles put Events (cheap to clone).
#[derive(Clone)]
pub struct EventQueue {
    sender: mpsc::Sender<Batch>,
}

impl EventQueue {
    /// Queues the Events of the object `regarding`, waiting only while the
    /// queue is full; they are gone only if the publisher has stopped.
    pub async fn publish(&self, regarding: ObjectReference, notes: Vec<EventNote>) {
        if notes.is_empty() {
            return;
        }
        let reasons: Vec<String> = notes.iter().map(|n| n.reason.clone()).collect();
        if self.sender.clone().send(Batch { regarding, notes }).await.is_err() {
            tracing::warn!(?reasons, "the Event publisher has stopped; Events not published");
        }
    }
}

/// The queue and the publisher that empties it: run the publisher until
/// `stop` is cancelled, after which it sends what is queued (for up to
/// [`DRAIN`]) and ends. `published` counts the Events sent.
/// `recorder` makes each of the Recorders.
pub fn queue(
    recorder: impl Fn() -> Recorder,
    published: Counter,
    stop: CancellationToken,
) -> (EventQueue, impl Future<Output = ()>) {
    let (sender, mut receiver) = mpsc::channel::<Batch>(QUEUE_CAPACITY);
    let recorders: Vec<Recorder> = (0..RECORDERS).map(|_| recorder()).collect();
    let publisher = async move {
        let send = |batch: Batch| {
            let recorder = &recorders[recorder_of(&batch.regarding)];
            publish_batch(recorder, &published, batch)
        };
        (&mut receiver)
            .take_until(stop.cancelled())
            .for_each_concurrent(PUBLISHERS, send)
            .await;
        receiver.close();
        if tokio::time::timeout(DRAIN, receiver.for_each_concurrent(PUBLISHERS, send))
            .await
            .is_err()
        {
            tracing::warn!("shutting down with Events still queued; they are not published");
        }
    };
    (EventQueue { sender }, publisher)
}

/// Which of the Recorders publishes about `regarding`.
fn recorder_of(regarding: &ObjectReference) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut hasher);
    (hasher.finish() % RECORDERS as u64) as usize
}

async fn publish_batch(recorder: &Recorder, published: &Counter, batch: Batch) {
    for note in batch.notes {
        let event = Event {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.clone(),
            note: Some(note.note),
            action: "Reconcile".into(),
            secondary: None,
        };
        match recorder.publish(&event, &batch.regarding).await {
            Ok(()) => {
                published.inc();
            }
            Err(e) => tracing::warn!(
                error = %e,
                reason = %note.reason,
                hook = ?batch.regarding.name,
                namespace = ?batch.regarding.namespace,
                "publishing an Event failed"
            ),
        }
    }
}
