//! Asking the status mirror ([`super::mirror`]) to write a hook's health:
//! the request, how soon it must be written, and the handle every loop
//! holds. Its own file so that the shared context holds the handle without
//! importing the mirror's loop, which reads the context.

use tokio::sync::mpsc;

/// A request to mirror one hook's health to its status.
#[derive(Clone, Debug)]
pub struct MirrorRequest {
    /// The hook's UID.
    pub uid: String,
    /// The hook's `namespace/name`.
    pub hook: String,
    /// How soon it must be written.
    pub urgency: Urgency,
}

/// How soon a hook's health must reach its status
/// (docs/src/tenant-bounds.md#api-writes). Ordered: a hook's pending
/// request keeps the highest urgency asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// New figures: within the mirror interval.
    Routine,
    /// Failing or recovered: at once when the hook's last write is older
    /// than the mirror interval, else when it ends (a flapping receiver
    /// costs one write per interval, not one per flip).
    Transition,
    /// Turned off: at once, whatever the interval.
    TurnOff,
}

/// The loops' handle on the mirror's queue.
#[derive(Clone, Debug)]
pub struct MirrorHandle(mpsc::UnboundedSender<MirrorRequest>);

impl MirrorHandle {
    /// A handle and the queue the mirror reads.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<MirrorRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MirrorHandle(tx), rx)
    }

    /// Asks the mirror to write one hook's health to its status (a stopped
    /// mirror drops the request: the next start mirrors from Redis anyway).
    pub fn request(&self, uid: &str, hook: &str, urgency: Urgency) {
        let _ = self.0.send(MirrorRequest {
            uid: uid.to_string(),
            hook: hook.to_string(),
            urgency,
        });
    }
}
