//! Rotating a generated signing secret without downtime, as pure decisions.
//!
//! Two hook annotations drive it, so a GitOps tool can: `rotate-secret=V`
//! stages a next token (`next-token`); `promote-secret=V`, the same value,
//! makes it the token and keeps the old one as `previous-token` until
//! `--rotation-overlap` has passed, when it is removed. What was done is
//! recorded on the Secret itself (the annotations below), so each step
//! happens once however often the hook is reconciled, and a controller
//! restart between the steps changes nothing: [`decide`] is a function of
//! the hook's annotations, the Secret and the time. The writes it asks for
//! ([`stage_patch`] and the others) carry the Secret's resourceVersion, so a
//! decision taken on a stale copy is refused by the API server instead of
//! applied.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use jiff::{SignedDuration, Timestamp, Unit};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use crate::controller::status::{EventNote, Severity};
use crate::{
    contract::resource::{OutboundWebhook, PROMOTE_SECRET_ANNOTATION, ROTATE_SECRET_ANNOTATION},
    contract::signing_tokens::{
        NEXT_STANDARD_WEBHOOKS_KEY, NEXT_TOKEN_KEY, PREVIOUS_STANDARD_WEBHOOKS_KEY, PREVIOUS_TOKEN_KEY,
        STANDARD_WEBHOOKS_KEY, SigningTokens, TOKEN_KEY,
    },
    wire::signing::standard_webhooks_secret,
};

/// Secret annotation: the `rotate-secret` value whose token is in `next-token`.
pub const STAGED_ANNOTATION: &str = "outboundwebhooks.io/rotation-staged";
/// Secret annotation: the `rotate-secret` value promoted last (or the one the
/// hook carried when the Secret was generated).
pub const PROMOTED_ANNOTATION: &str = "outboundwebhooks.io/rotation-promoted";
/// Secret annotation: when `previous-token` is removed (RFC 3339).
pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "outboundwebhooks.io/previous-token-expires";

/// Longest part of an annotation value quoted in a message or an Event.
const SHOWN_CHARS: usize = 64;

/// What the hook's annotations ask for (an empty value counts as none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested<'a> {
    /// `outboundwebhooks.io/rotate-secret`.
    pub rotate: Option<&'a str>,
    /// `outboundwebhooks.io/promote-secret`.
    pub promote: Option<&'a str>,
}

impl<'a> Requested<'a> {
    /// Reads the two annotations of a hook.
    pub fn of(hook: &'a OutboundWebhook) -> Self {
        let get = |key: &str| {
            hook.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        Requested {
            rotate: get(ROTATE_SECRET_ANNOTATION),
            promote: get(PROMOTE_SECRET_ANNOTATION),
        }
    }
}

/// Where a generated Secret stands in a rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecretState<'a> {
    /// It has a `next-token` key.
    pub has_next: bool,
    /// The `rotate-secret` value that staged it.
    pub staged: Option<&'a str>,
    /// The `rotate-secret` value promoted last.
    pub promoted: Option<&'a str>,
    /// It has a `previous-token` key.
    pub has_previous: bool,
    /// When `previous-token` is to be removed.
    pub previous_expires: Option<Timestamp>,
}

impl<'a> SecretState<'a> {
    /// Reads the rotation keys and annotations of a Secret.
    pub fn of(secret: &'a Secret) -> Self {
        let annotation = |key: &str| {
            secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .map(String::as_str)
        };
        let has = |key: &str| secret.data.as_ref().is_some_and(|d| d.contains_key(key));
        SecretState {
            has_next: has(NEXT_TOKEN_KEY),
            staged: annotation(STAGED_ANNOTATION),
            promoted: annotation(PROMOTED_ANNOTATION),
            has_previous: has(PREVIOUS_TOKEN_KEY),
            previous_expires: annotation(PREVIOUS_EXPIRES_ANNOTATION).and_then(|t| t.parse().ok()),
        }
    }
}

/// A write the rotation needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// Put a fresh token in `next-token` for this `rotate-secret` value,
    /// replacing a token staged for another value, if any.
    Stage {
        /// The `rotate-secret` value.
        rotate: &'a str,
        /// The value whose staged token this one replaces (`Some("")` for
        /// a `next-token` of unknown origin).
        replaces: Option<&'a str>,
    },
    /// `next-token` becomes `token`; `token` becomes `previous-token`.
    Promote {
        /// The `rotate-secret` (and `promote-secret`) value.
        rotate: &'a str,
    },
    /// The overlap ended: remove `previous-token`.
    ExpirePrevious,
    /// `rotate-secret` was removed (or set back to the value promoted last)
    /// while a token was staged: remove `next-token`.
    Cancel {
        /// The value that had staged it, if known.
        staged: Option<&'a str>,
    },
}

/// A rotation step that needs no write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase<'a> {
    /// One token.
    Idle,
    /// A next token is staged; waiting for `promote-secret` with this value.
    Staged {
        /// The `rotate-secret` value.
        rotate: &'a str,
    },
    /// Promoted; the previous token still signs `webhook-signature`.
    Overlap {
        /// The value promoted, if recorded.
        promoted: Option<&'a str>,
        /// When `previous-token` is removed.
        until: Timestamp,
    },
}

/// The step the rotation is in when nothing needs writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steady<'a> {
    /// The step.
    pub phase: Phase<'a>,
    /// A `promote-secret` value that matches no staged token (and is not the
    /// value promoted last): nothing is promoted, and the message says so.
    pub unmatched_promote: Option<&'a str>,
}

/// What the rotation needs: a write, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Write this, then decide again on the written Secret.
    Change(Change<'a>),
    /// Nothing to write.
    Steady(Steady<'a>),
}

/// The next rotation step of a generated Secret. One change at a time; an
/// expired previous token goes first.
pub fn decide<'a>(requested: Requested<'a>, state: SecretState<'a>, now: Timestamp) -> Decision<'a> {
    if state.has_previous && state.previous_expires.is_none_or(|until| until <= now) {
        return Decision::Change(Change::ExpirePrevious);
    }
    let staged = state.staged.filter(|_| state.has_next);
    let unmatched_promote = requested.promote.filter(|p| Some(*p) != state.promoted);
    let settled = |unmatched_promote| {
        let phase = match state.previous_expires.filter(|_| state.has_previous) {
            Some(until) => Phase::Overlap {
                promoted: state.promoted,
                until,
            },
            None => Phase::Idle,
        };
        Decision::Steady(Steady {
            phase,
            unmatched_promote,
        })
    };
    match requested.rotate {
        Some(rotate) if staged == Some(rotate) => {
            if requested.promote == Some(rotate) {
                Decision::Change(Change::Promote { rotate })
            } else {
                Decision::Steady(Steady {
                    phase: Phase::Staged { rotate },
                    unmatched_promote,
                })
            }
        }
        Some(rotate) if state.promoted == Some(rotate) => {
            if state.has_next {
                Decision::Change(Change::Cancel { staged })
            } else {
                settled(unmatched_promote)
            }
        }
        Some(rotate) => Decision::Change(Change::Stage {
            rotate,
            replaces: state.has_next.then_some(staged.unwrap_or("")),
        }),
        None if state.has_next => Decision::Change(Change::Cancel { staged }),
        None => settled(unmatched_promote),
    }
}

/// When the overlap of a promotion made at `now` ends, to the second.
pub fn overlap_end(now: Timestamp, overlap: Duration) -> Timestamp {
    let overlap = SignedDuration::try_from(overlap).unwrap_or(SignedDuration::MAX);
    now.checked_add(overlap)
        .unwrap_or(Timestamp::MAX)
        .round(Unit::Second)
        .unwrap_or(Timestamp::MAX)
}

fn encoded(value: &str) -> Value {
    Value::String(STANDARD.encode(value))
}

/// The merge patch of [`Change::Stage`]: `token` staged as `next-token`.
pub fn stage_patch(resource_version: &str, rotate: &str, token: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {STAGED_ANNOTATION: rotate},
        },
        "data": {
            NEXT_TOKEN_KEY: encoded(token),
            NEXT_STANDARD_WEBHOOKS_KEY: encoded(&standard_webhooks_secret(token)),
        },
    })
}

/// The merge patch of [`Change::Promote`]: the staged token becomes the
/// token, the token the previous one until `until`. None when no token is
/// staged (the decision was taken on another copy).
pub fn promote_patch(
    resource_version: &str,
    rotate: &str,
    tokens: &SigningTokens<'_>,
    until: Timestamp,
) -> Option<Value> {
    let next = tokens.next?;
    Some(json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {
                STAGED_ANNOTATION: null,
                PROMOTED_ANNOTATION: rotate,
                PREVIOUS_EXPIRES_ANNOTATION: until.to_string(),
            },
        },
        "data": {
            TOKEN_KEY: encoded(next),
            STANDARD_WEBHOOKS_KEY: encoded(&standard_webhooks_secret(next)),
            PREVIOUS_TOKEN_KEY: encoded(tokens.token),
            PREVIOUS_STANDARD_WEBHOOKS_KEY: encoded(&standard_webhooks_secret(tokens.token)),
            NEXT_TOKEN_KEY: null,
            NEXT_STANDARD_WEBHOOKS_KEY: null,
        },
    }))
}

/// The merge patch of [`Change::ExpirePrevious`].
pub fn expire_patch(resource_version: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {PREVIOUS_EXPIRES_ANNOTATION: null},
        },
        "data": {PREVIOUS_TOKEN_KEY: null, PREVIOUS_STANDARD_WEBHOOKS_KEY: null},
    })
}

/// The merge patch of [`Change::Cancel`].
pub fn cancel_patch(resource_version: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {STAGED_ANNOTATION: null},
        },
        "data": {NEXT_TOKEN_KEY: null, NEXT_STANDARD_WEBHOOKS_KEY: null},
    })
}

/// An annotation value as quoted in messages: at most 64 characters, no
/// control characters.
fn shown(value: &str) -> String {
    let mut text: String = value
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().nth(SHOWN_CHARS).is_some() {
        text.push_str("...");
    }
    text
}

/// `kubectl annotate owh/NAME -n NS outboundwebhooks.io/promote-secret=VALUE --overwrite`.
pub fn promote_command(hook_name: &str, namespace: &str, value: &str) -> String {
    format!(
        "kubectl annotate owh/{hook_name} -n {namespace} {PROMOTE_SECRET_ANNOTATION}={} --overwrite",
        shown(value)
    )
}

/// The sentence `SecretReady`'s message adds for this step, if any: which
/// step, and the next command.
pub fn note(steady: &Steady<'_>, hook_name: &str, namespace: &str) -> Option<String> {
    let step = match steady.phase {
        Phase::Idle => None,
        Phase::Staged { rotate } => Some(format!(
            "next token staged by {ROTATE_SECRET_ANNOTATION}={} (key {NEXT_TOKEN_KEY}); webhook-signature carries a signature by each token; update receivers to accept both, then: {}",
            shown(rotate),
            promote_command(hook_name, namespace, rotate)
        )),
        Phase::Overlap { promoted, until } => Some(format!(
            "{}; the previous token (key {PREVIOUS_TOKEN_KEY}) still signs webhook-signature until {until}, then it is removed",
            match promoted {
                Some(value) => format!("promoted {ROTATE_SECRET_ANNOTATION}={}", shown(value)),
                None => "promoted a new token".to_string(),
            }
        )),
    };
    let refused = steady.unmatched_promote.map(|promote| match steady.phase {
        Phase::Staged { rotate } => format!(
            "{PROMOTE_SECRET_ANNOTATION}={} does not match the staged {ROTATE_SECRET_ANNOTATION}={}, so nothing was promoted",
            shown(promote),
            shown(rotate)
        ),
        _ => format!(
            "{PROMOTE_SECRET_ANNOTATION}={} matches no staged token, so nothing was promoted; stage one first with {ROTATE_SECRET_ANNOTATION}=<new value>",
            shown(promote)
        ),
    });
    match (step, refused) {
        (Some(step), Some(refused)) => Some(format!("{step}; {refused}")),
        (step, refused) => step.or(refused),
    }
}

/// The Event that marks a change made on Secret `secret_name`.
pub fn event(change: &Change<'_>, secret_name: &str, hook_name: &str, namespace: &str, until: Timestamp) -> EventNote {
    let (reason, note) = match *change {
        Change::Stage { rotate, replaces } => (
            "SecretRotationStaged",
            format!(
                "{}staged a next token for {ROTATE_SECRET_ANNOTATION}={} in Secret {secret_name} (key {NEXT_TOKEN_KEY}); webhook-signature now carries a signature by each token. Once receivers accept both: {}",
                match replaces {
                    Some("") => "replaced the staged token: ".to_string(),
                    Some(old) => format!("replaced the token staged for {}: ", shown(old)),
                    None => String::new(),
                },
                shown(rotate),
                promote_command(hook_name, namespace, rotate)
            ),
        ),
        Change::Promote { rotate } => (
            "SecretPromoted",
            format!(
                "promoted the token staged for {ROTATE_SECRET_ANNOTATION}={} in Secret {secret_name}: it signs X-Kustomer-Webhook-Signature now; the previous token (key {PREVIOUS_TOKEN_KEY}) also signs webhook-signature until {until}",
                shown(rotate)
            ),
        ),
        Change::ExpirePrevious => (
            "PreviousSecretExpired",
            format!(
                "the rotation overlap ended: removed the previous token (key {PREVIOUS_TOKEN_KEY}) from Secret {secret_name}; only the current token signs now"
            ),
        ),
        Change::Cancel { staged } => (
            "SecretRotationCancelled",
            format!(
                "{ROTATE_SECRET_ANNOTATION} no longer asks for the staged token{}: removed it (key {NEXT_TOKEN_KEY}) from Secret {secret_name}",
                staged.map(|s| format!(" of {}", shown(s))).unwrap_or_default()
            ),
        ),
    };
    EventNote {
        severity: Severity::Normal,
        reason: reason.into(),
        note,
    }
}

#[cfg(test)]
mod tests;
