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

use super::status::{EventNote, Severity};
use crate::{
    resource::{OutboundWebhook, PROMOTE_SECRET_ANNOTATION, ROTATE_SECRET_ANNOTATION},
    signing::standard_webhooks_secret,
    signing_tokens::{
        NEXT_STANDARD_WEBHOOKS_KEY, NEXT_TOKEN_KEY, PREVIOUS_STANDARD_WEBHOOKS_KEY, PREVIOUS_TOKEN_KEY,
        STANDARD_WEBHOOKS_KEY, SigningTokens, TOKEN_KEY,
    },
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
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn ask<'a>(rotate: Option<&'a str>, promote: Option<&'a str>) -> Requested<'a> {
        Requested { rotate, promote }
    }

    fn idle<'a>() -> SecretState<'a> {
        SecretState::default()
    }

    fn staged(value: &str) -> SecretState<'_> {
        SecretState {
            has_next: true,
            staged: Some(value),
            ..SecretState::default()
        }
    }

    fn promoted(value: &str, until: i64) -> SecretState<'_> {
        SecretState {
            promoted: Some(value),
            has_previous: true,
            previous_expires: Some(at(until)),
            ..SecretState::default()
        }
    }

    fn steady<'a>(phase: Phase<'a>, unmatched_promote: Option<&'a str>) -> Decision<'a> {
        Decision::Steady(Steady {
            phase,
            unmatched_promote,
        })
    }

    #[test]
    fn no_annotations_and_one_token_is_idle() {
        assert_eq!(decide(ask(None, None), idle(), at(100)), steady(Phase::Idle, None));
    }

    #[test]
    fn a_new_rotate_value_stages_a_token_then_waits_for_its_promotion() {
        assert_eq!(
            decide(ask(Some("v2"), None), idle(), at(100)),
            Decision::Change(Change::Stage {
                rotate: "v2",
                replaces: None
            })
        );
        assert_eq!(
            decide(ask(Some("v2"), None), staged("v2"), at(100)),
            steady(Phase::Staged { rotate: "v2" }, None)
        );
    }

    #[test]
    fn promote_with_the_staged_value_promotes() {
        assert_eq!(
            decide(ask(Some("v2"), Some("v2")), staged("v2"), at(100)),
            Decision::Change(Change::Promote { rotate: "v2" })
        );
    }

    #[test]
    fn a_promote_value_that_does_not_match_promotes_nothing_and_says_so() {
        assert_eq!(
            decide(ask(Some("v2"), Some("v3")), staged("v2"), at(100)),
            steady(Phase::Staged { rotate: "v2" }, Some("v3"))
        );
        // Without a staged token, a promote value matches nothing.
        assert_eq!(
            decide(ask(None, Some("v3")), idle(), at(100)),
            steady(Phase::Idle, Some("v3"))
        );
    }

    #[test]
    fn the_promote_value_of_the_last_rotation_is_not_a_mismatch() {
        // GitOps keeps promote-secret=v2 in the manifest while rotate-secret moves on to v3.
        let state = SecretState {
            promoted: Some("v2"),
            ..staged("v3")
        };
        assert_eq!(
            decide(ask(Some("v3"), Some("v2")), state, at(100)),
            steady(Phase::Staged { rotate: "v3" }, None)
        );
    }

    #[test]
    fn after_promotion_the_overlap_lasts_until_its_end_then_the_previous_token_goes() {
        let state = promoted("v2", 200);
        let overlap = steady(
            Phase::Overlap {
                promoted: Some("v2"),
                until: at(200),
            },
            None,
        );
        assert_eq!(decide(ask(Some("v2"), Some("v2")), state, at(100)), overlap);
        assert_eq!(decide(ask(Some("v2"), Some("v2")), state, at(199)), overlap);
        assert_eq!(
            decide(ask(Some("v2"), Some("v2")), state, at(200)),
            Decision::Change(Change::ExpirePrevious)
        );
        let done = SecretState {
            promoted: Some("v2"),
            ..idle()
        };
        assert_eq!(
            decide(ask(Some("v2"), Some("v2")), done, at(300)),
            steady(Phase::Idle, None)
        );
        // A previous token without a (readable) expiry is removed.
        let unknown = SecretState {
            has_previous: true,
            ..idle()
        };
        assert_eq!(
            decide(ask(None, None), unknown, at(1)),
            Decision::Change(Change::ExpirePrevious)
        );
    }

    #[test]
    fn a_new_rotate_value_while_one_is_staged_replaces_the_staged_token() {
        assert_eq!(
            decide(ask(Some("v3"), None), staged("v2"), at(100)),
            Decision::Change(Change::Stage {
                rotate: "v3",
                replaces: Some("v2")
            })
        );
    }

    #[test]
    fn a_rotation_during_the_overlap_stages_and_keeps_the_previous_token_until_its_end() {
        let state = promoted("v2", 200);
        assert_eq!(
            decide(ask(Some("v3"), Some("v2")), state, at(100)),
            Decision::Change(Change::Stage {
                rotate: "v3",
                replaces: None
            })
        );
    }

    #[test]
    fn removing_rotate_secret_or_setting_it_back_cancels_the_staged_token() {
        assert_eq!(
            decide(ask(None, None), staged("v2"), at(100)),
            Decision::Change(Change::Cancel { staged: Some("v2") })
        );
        let state = SecretState {
            promoted: Some("v1"),
            ..staged("v2")
        };
        assert_eq!(
            decide(ask(Some("v1"), Some("v1")), state, at(100)),
            Decision::Change(Change::Cancel { staged: Some("v2") })
        );
    }

    #[test]
    fn each_step_is_decided_once_so_replaying_a_decision_changes_nothing() {
        // Applying each change's effect and deciding again ends steady: the
        // two annotations set at once stage, then promote, then rest.
        let requested = ask(Some("v2"), Some("v2"));
        let mut state = idle();
        let mut steps = Vec::new();
        for _ in 0..5 {
            match decide(requested, state, at(100)) {
                Decision::Change(change) => {
                    steps.push(format!("{change:?}"));
                    state = match change {
                        Change::Stage { rotate, .. } => SecretState {
                            has_next: true,
                            staged: Some(rotate),
                            ..state
                        },
                        Change::Promote { rotate } => SecretState {
                            has_next: false,
                            staged: None,
                            promoted: Some(rotate),
                            has_previous: true,
                            previous_expires: Some(at(200)),
                        },
                        other => panic!("unexpected {other:?}"),
                    };
                }
                Decision::Steady(s) => {
                    assert!(matches!(s.phase, Phase::Overlap { .. }), "{s:?}");
                    break;
                }
            }
        }
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(decide(requested, state, at(150)), decide(requested, state, at(150)));
    }

    #[test]
    fn the_secret_state_is_read_from_its_keys_and_annotations() {
        let secret = Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (STAGED_ANNOTATION.to_string(), "v3".to_string()),
                    (PROMOTED_ANNOTATION.to_string(), "v2".to_string()),
                    (
                        PREVIOUS_EXPIRES_ANNOTATION.to_string(),
                        "2026-01-02T03:04:05Z".to_string(),
                    ),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (NEXT_TOKEN_KEY.to_string(), ByteString(vec![b'n'; 64])),
                (PREVIOUS_TOKEN_KEY.to_string(), ByteString(vec![b'p'; 64])),
            ])),
            ..Default::default()
        };
        assert_eq!(
            SecretState::of(&secret),
            SecretState {
                has_next: true,
                staged: Some("v3"),
                promoted: Some("v2"),
                has_previous: true,
                previous_expires: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            }
        );
    }

    #[test]
    fn patches_carry_the_resource_version_and_move_the_tokens() {
        let (old, new) = ("o".repeat(64), "n".repeat(64));
        let b64 = |s: &str| Value::String(STANDARD.encode(s));
        let stage = stage_patch("42", "v2", &new);
        assert_eq!(stage["metadata"]["resourceVersion"], "42");
        assert_eq!(stage["metadata"]["annotations"][STAGED_ANNOTATION], "v2");
        assert_eq!(stage["data"][NEXT_TOKEN_KEY], b64(&new));
        assert_eq!(
            stage["data"][NEXT_STANDARD_WEBHOOKS_KEY],
            b64(&standard_webhooks_secret(&new))
        );

        let tokens = SigningTokens {
            token: &old,
            next: Some(&new),
            previous: None,
        };
        let promote = promote_patch("43", "v2", &tokens, at(1_800_000_000)).unwrap();
        assert_eq!(promote["metadata"]["resourceVersion"], "43");
        assert_eq!(promote["data"][TOKEN_KEY], b64(&new));
        assert_eq!(
            promote["data"][STANDARD_WEBHOOKS_KEY],
            b64(&standard_webhooks_secret(&new))
        );
        assert_eq!(promote["data"][PREVIOUS_TOKEN_KEY], b64(&old));
        assert_eq!(promote["data"][NEXT_TOKEN_KEY], Value::Null);
        assert_eq!(promote["metadata"]["annotations"][PROMOTED_ANNOTATION], "v2");
        assert_eq!(promote["metadata"]["annotations"][STAGED_ANNOTATION], Value::Null);
        assert_eq!(
            promote["metadata"]["annotations"][PREVIOUS_EXPIRES_ANNOTATION],
            "2027-01-15T08:00:00Z"
        );
        let nothing_staged = SigningTokens { next: None, ..tokens };
        assert_eq!(promote_patch("43", "v2", &nothing_staged, at(1)), None);

        let expire = expire_patch("44");
        assert_eq!(expire["metadata"]["resourceVersion"], "44");
        assert_eq!(expire["data"][PREVIOUS_TOKEN_KEY], Value::Null);
        assert_eq!(expire["data"][PREVIOUS_STANDARD_WEBHOOKS_KEY], Value::Null);
        let cancel = cancel_patch("45");
        assert_eq!(cancel["metadata"]["resourceVersion"], "45");
        assert_eq!(cancel["data"][NEXT_TOKEN_KEY], Value::Null);
    }

    #[test]
    fn the_overlap_ends_after_the_flag_to_the_second() {
        let now: Timestamp = "2026-01-01T00:00:00.4Z".parse().unwrap();
        assert_eq!(
            overlap_end(now, Duration::from_secs(24 * 3600)).to_string(),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            overlap_end(now, Duration::from_secs(5)).to_string(),
            "2026-01-01T00:00:05Z"
        );
    }

    #[test]
    fn messages_name_the_step_and_the_next_command() {
        let staged = Steady {
            phase: Phase::Staged { rotate: "v2" },
            unmatched_promote: None,
        };
        let message = note(&staged, "shop", "acme").unwrap();
        assert!(
            message.contains("next token staged by outboundwebhooks.io/rotate-secret=v2"),
            "{message}"
        );
        assert!(message.contains("update receivers to accept both"), "{message}");
        assert!(
            message.ends_with("kubectl annotate owh/shop -n acme outboundwebhooks.io/promote-secret=v2 --overwrite"),
            "{message}"
        );
        let mismatch = Steady {
            unmatched_promote: Some("v9"),
            ..staged
        };
        let message = note(&mismatch, "shop", "acme").unwrap();
        assert!(
            message.contains("promote-secret=v9 does not match the staged outboundwebhooks.io/rotate-secret=v2, so nothing was promoted"),
            "{message}"
        );
        let overlap = Steady {
            phase: Phase::Overlap {
                promoted: Some("v2"),
                until: at(1_800_000_000),
            },
            unmatched_promote: None,
        };
        let message = note(&overlap, "shop", "acme").unwrap();
        assert!(
            message.contains("still signs webhook-signature until 2027-01-15T08:00:00Z"),
            "{message}"
        );
        assert_eq!(
            note(
                &Steady {
                    phase: Phase::Idle,
                    unmatched_promote: None
                },
                "shop",
                "acme"
            ),
            None
        );
        let long = "x".repeat(100);
        let message = note(
            &Steady {
                phase: Phase::Staged { rotate: &long },
                unmatched_promote: None,
            },
            "shop",
            "acme",
        )
        .unwrap();
        assert!(
            !message.contains(&long) && message.contains(&format!("{}...", "x".repeat(64))),
            "{message}"
        );
    }

    #[test]
    fn each_change_has_its_normal_event() {
        let reason = |c: Change<'_>| {
            let e = event(&c, "shop-webhook-secret", "shop", "acme", at(0));
            assert_eq!(e.severity, Severity::Normal);
            e.reason
        };
        assert_eq!(
            reason(Change::Stage {
                rotate: "v2",
                replaces: None
            }),
            "SecretRotationStaged"
        );
        assert_eq!(reason(Change::Promote { rotate: "v2" }), "SecretPromoted");
        assert_eq!(reason(Change::ExpirePrevious), "PreviousSecretExpired");
        assert_eq!(reason(Change::Cancel { staged: None }), "SecretRotationCancelled");
    }
}
