//! Unit tests of `status.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::contract::resource::{DeliveryStatus, DisableRecord, OutboundWebhookSpec};

fn hook(enabled: bool, generation: i64) -> OutboundWebhook {
    let spec: OutboundWebhookSpec = serde_json::from_value(serde_json::json!({
        "url": "https://example.com", "events": ["kustomer.user.create"], "enabled": enabled
    }))
    .unwrap();
    let mut hook = OutboundWebhook::new("shop", spec);
    hook.metadata.namespace = Some("acme".into());
    hook.metadata.generation = Some(generation);
    hook
}

fn accepted() -> AcceptanceOutcome {
    AcceptanceOutcome::Accepted {
        limit: 5,
        limit_problem: None,
    }
}

fn generated() -> SecretOutcome {
    SecretOutcome::Generated {
        name: "shop-webhook-secret".into(),
        rotation: None,
    }
}

fn time(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(secs).unwrap())
}

fn ready(status: &ControllerStatus) -> (String, String) {
    let c = status.condition(conditions::READY).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn with_record(mut hook: OutboundWebhook, reason: DisableReason, token: &str, at_generation: i64) -> OutboundWebhook {
    hook.status = Some(OutboundWebhookStatus {
        delivery: Some(DeliveryStatus {
            disabled: Some(DisableRecord {
                reason,
                at: time(100),
                message: "HTTP 500 from receiver".into(),
                reenable_token: token.into(),
                generation: at_generation,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    hook
}

#[test]
fn an_accepted_enabled_hook_with_its_secret_is_active() {
    let h = hook(true, 3);
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    assert_eq!(ready(&s), ("True".into(), "Active".into()));
    assert_eq!(s.observed_generation, Some(3));
    assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
    assert_eq!(s.secret_name.as_deref(), Some("shop-webhook-secret"));
    assert_eq!(s.spec_disabled_generation, None);
}

#[test]
fn a_rotation_step_keeps_secret_ready_true_and_adds_to_its_message() {
    let h = hook(true, 1);
    let rotating = SecretOutcome::Generated {
        name: "shop-webhook-secret".into(),
        rotation: Some("next token staged by outboundwebhooks.io/rotate-secret=v2".into()),
    };
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &rotating, &time(1));
    let c = s.condition(conditions::SECRET_READY).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "SecretGenerated"));
    assert_eq!(
        c.message,
        "the signing token is in Secret shop-webhook-secret, keys token and standard-webhooks-secret; next token staged by outboundwebhooks.io/rotate-secret=v2"
    );
    assert_eq!(ready(&s), ("True".into(), "Active".into()));
    let before = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    assert!(
        transition_events(&before, &s).is_empty(),
        "the step's Event comes from the rotation"
    );
}

#[test]
fn precedence_not_accepted_before_disabled_before_secret_before_revoked() {
    let limit = AcceptanceOutcome::OrgLimitExceeded {
        limit: 5,
        accepted: 5,
        limit_problem: None,
    };
    let missing = SecretOutcome::Problem {
        reason: secret_ready::SECRET_NOT_FOUND,
        message: "gone".into(),
    };
    let prev = ControllerStatus::default();
    let disabled = with_record(hook(false, 2), DisableReason::Revoked, "", 2);
    let s = desired_status(&disabled, &prev, &limit, &missing, &time(1));
    assert_eq!(ready(&s).1, "NotAccepted");
    let message = &s.condition(conditions::ACCEPTED).unwrap().message;
    assert!(message.contains("allows 5") && message.contains("has 5"), "{message}");
    let s = desired_status(&disabled, &prev, &accepted(), &missing, &time(1));
    assert_eq!(ready(&s).1, "DisabledBySpec");
    let enabled = with_record(hook(true, 2), DisableReason::Revoked, "", 2);
    let s = desired_status(&enabled, &prev, &accepted(), &missing, &time(1));
    assert_eq!(ready(&s).1, "SecretNotReady");
    let s = desired_status(&enabled, &prev, &accepted(), &generated(), &time(1));
    assert_eq!(ready(&s).1, "Revoked");
}

#[test]
fn an_auto_disabled_hook_says_what_failed_and_how_to_re_enable() {
    let h = with_record(hook(true, 4), DisableReason::AutoDisabled, "", 4);
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    let c = s.condition(conditions::READY).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "AutoDisabled"));
    assert!(c.message.contains("HTTP 500 from receiver"), "{}", c.message);
    assert!(
        c.message
            .contains("kubectl annotate owh/shop -n acme outboundwebhooks.io/reenable=\"$(date +%s)\" --overwrite"),
        "{}",
        c.message
    );
}

#[test]
fn a_changed_reenable_annotation_clears_the_record() {
    let mut h = with_record(hook(true, 4), DisableReason::AutoDisabled, "", 4);
    h.metadata.annotations = Some(BTreeMap::from([(REENABLE_ANNOTATION.into(), "1700000000".into())]));
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    assert_eq!(ready(&s).1, "Active");
}

#[test]
fn spec_disabled_generation_records_the_latest_disabled_generation_and_clears_the_record() {
    let h = with_record(hook(false, 5), DisableReason::AutoDisabled, "", 4);
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    assert_eq!(s.spec_disabled_generation, Some(5));
    assert_eq!(ready(&s).1, "DisabledBySpec");
    // Back to enabled at generation 6: the value is kept, the record is stale.
    let mut h = with_record(hook(true, 6), DisableReason::AutoDisabled, "", 4);
    h.status.as_mut().unwrap().spec_disabled_generation = Some(5);
    let s2 = desired_status(&h, &s, &accepted(), &generated(), &time(2));
    assert_eq!(s2.spec_disabled_generation, Some(5));
    assert_eq!(ready(&s2).1, "Active");
}

#[test]
fn last_transition_time_is_kept_while_the_status_does_not_change() {
    let h = hook(true, 1);
    let first = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    let again = desired_status(&h, &first, &accepted(), &generated(), &time(50));
    assert_eq!(first, again, "nothing but time changed, so nothing changes");
    let h2 = hook(false, 2);
    let disabled = desired_status(&h2, &first, &accepted(), &generated(), &time(60));
    let ready_condition = disabled.condition(conditions::READY).unwrap();
    assert_eq!(ready_condition.last_transition_time, time(60));
    let accepted_condition = disabled.condition(conditions::ACCEPTED).unwrap();
    assert_eq!(accepted_condition.last_transition_time, time(1));
    assert_eq!(accepted_condition.observed_generation, Some(2));
}

#[test]
fn from_status_ignores_foreign_conditions_and_sorts() {
    let h = hook(true, 1);
    let s = desired_status(&h, &ControllerStatus::default(), &accepted(), &generated(), &time(1));
    let mut conditions = s.conditions.clone();
    conditions.reverse();
    conditions.push(Condition {
        type_: "Other".into(),
        status: "True".into(),
        reason: "X".into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: time(0),
    });
    let stored = OutboundWebhookStatus {
        conditions,
        observed_generation: Some(1),
        secret_name: Some("shop-webhook-secret".into()),
        ..Default::default()
    };
    assert_eq!(ControllerStatus::from_status(Some(&stored)), s);
}

#[test]
fn events_follow_transitions_only() {
    let h = hook(true, 1);
    let none = ControllerStatus::default();
    let active = desired_status(&h, &none, &accepted(), &generated(), &time(1));
    let reasons = |evs: Vec<EventNote>| evs.into_iter().map(|e| e.reason).collect::<Vec<_>>();
    assert_eq!(reasons(transition_events(&none, &active)), ["Accepted"]);
    assert!(transition_events(&active, &active).is_empty());

    let waiting = desired_status(
        &h,
        &active,
        &AcceptanceOutcome::OrgLimitExceeded {
            limit: 2,
            accepted: 2,
            limit_problem: None,
        },
        &generated(),
        &time(2),
    );
    assert_eq!(reasons(transition_events(&active, &waiting)), ["OrgLimitExceeded"]);

    let off = with_record(hook(true, 1), DisableReason::AutoDisabled, "", 1);
    let auto = desired_status(&off, &active, &accepted(), &generated(), &time(3));
    assert_eq!(reasons(transition_events(&active, &auto)), ["AutoDisabled"]);
    assert_eq!(reasons(transition_events(&auto, &active)), ["ReEnabled"]);

    let disabled = desired_status(&hook(false, 2), &active, &accepted(), &generated(), &time(4));
    assert_eq!(reasons(transition_events(&active, &disabled)), ["DisabledBySpec"]);
}

fn with_failures(mut hook: OutboundWebhook, failures: i64) -> OutboundWebhook {
    hook.status = Some(OutboundWebhookStatus {
        delivery: Some(DeliveryStatus {
            consecutive_failures: Some(failures),
            last_success_time: Some(time(10)),
            last_failure_time: (failures > 0).then(|| time(20)),
            ..Default::default()
        }),
        ..Default::default()
    });
    hook
}

fn delivering(status: &ControllerStatus) -> (String, String) {
    let c = status.condition(conditions::DELIVERING).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn a_failing_hook_is_delivering_false_and_stays_ready() {
    let none = ControllerStatus::default();
    let fresh = desired_status(&hook(true, 1), &none, &accepted(), &generated(), &time(1));
    assert_eq!(delivering(&fresh), ("True".into(), "NoAttemptsYet".into()));
    let failing = desired_status(
        &with_failures(hook(true, 1), 3),
        &fresh,
        &accepted(),
        &generated(),
        &time(2),
    );
    assert_eq!(delivering(&failing), ("False".into(), "Failing".into()));
    assert_eq!(ready(&failing), ("True".into(), "Active".into()));
    let c = failing.condition(conditions::DELIVERING).unwrap();
    assert_eq!(c.observed_generation, Some(1));
    assert_eq!(c.last_transition_time, time(2));
    assert!(c.message.starts_with("3 attempts failed in a row"), "{}", c.message);
    let recovered = desired_status(
        &with_failures(hook(true, 1), 0),
        &failing,
        &accepted(),
        &generated(),
        &time(3),
    );
    assert_eq!(delivering(&recovered), ("True".into(), "Succeeding".into()));
    assert_eq!(ready(&recovered), ("True".into(), "Active".into()));
}

#[test]
fn delivering_keeps_its_transition_time_while_the_count_grows_and_nothing_changes_while_requests_succeed() {
    let none = ControllerStatus::default();
    let three = desired_status(
        &with_failures(hook(true, 1), 3),
        &none,
        &accepted(),
        &generated(),
        &time(2),
    );
    let five = desired_status(
        &with_failures(hook(true, 1), 5),
        &three,
        &accepted(),
        &generated(),
        &time(9),
    );
    let c = five.condition(conditions::DELIVERING).unwrap();
    assert_eq!(c.last_transition_time, time(2));
    assert!(c.message.starts_with("5 attempts"), "{}", c.message);

    let ok = desired_status(
        &with_failures(hook(true, 1), 0),
        &five,
        &accepted(),
        &generated(),
        &time(10),
    );
    let mut later = with_failures(hook(true, 1), 0);
    if let Some(d) = later.status.as_mut().and_then(|s| s.delivery.as_mut()) {
        d.last_success_time = Some(time(500));
    }
    let again = desired_status(&later, &ok, &accepted(), &generated(), &time(600));
    assert_eq!(ok, again, "a newer lastSuccessTime alone needs no write");
}

#[test]
fn delivering_changes_are_left_to_the_paced_delivering_events() {
    let none = ControllerStatus::default();
    let active = desired_status(&hook(true, 1), &none, &accepted(), &generated(), &time(1));
    let three = desired_status(
        &with_failures(hook(true, 1), 3),
        &active,
        &accepted(),
        &generated(),
        &time(2),
    );
    assert!(transition_events(&active, &three).is_empty());
    let ok = desired_status(
        &with_failures(hook(true, 1), 0),
        &three,
        &accepted(),
        &generated(),
        &time(4),
    );
    assert!(transition_events(&three, &ok).is_empty());
}
