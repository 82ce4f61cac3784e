//! Unit tests of `rotation.rs`.

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
        message.contains(
            "promote-secret=v9 does not match the staged outboundwebhooks.io/rotate-secret=v2, so nothing was promoted"
        ),
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
