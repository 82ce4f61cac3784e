//! The controller's part of a hook's status, computed without I/O: the
//! `Accepted`, `SecretReady`, `Ready` and `Delivering` conditions, `observedGeneration`,
//! `secretName` and `specDisabledGeneration`, plus the Events that a change
//! between two such statuses deserves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    auto_disable,
    conditions::{self, accepted, delivering, ready, secret_ready},
    resource::{DisableReason, OutboundWebhook, OutboundWebhookStatus, REENABLE_ANNOTATION},
};

use super::{acceptance::Ineligible, delivering as delivering_condition};

/// What the limit decided for the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptanceOutcome {
    /// The hook holds a slot.
    Accepted {
        /// The namespace's limit.
        limit: usize,
        /// Why the Namespace annotation was ignored, if it was.
        limit_problem: Option<String>,
    },
    /// Every slot is taken.
    OrgLimitExceeded {
        /// The namespace's limit.
        limit: usize,
        /// How many hooks of the namespace hold a slot.
        accepted: usize,
        /// Why the Namespace annotation was ignored, if it was.
        limit_problem: Option<String>,
    },
    /// The hook cannot be served whatever the limit.
    Ineligible(Ineligible),
}

/// What the controller found about the signing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOutcome {
    /// The generated Secret exists and belongs to the hook.
    Generated {
        /// Its name.
        name: String,
        /// The rotation step and the next command, for the message.
        rotation: Option<String>,
    },
    /// `spec.secretRef` names a usable token.
    Referenced {
        /// The Secret's name.
        name: String,
        /// Its `next-token` or `previous-token`, for the message.
        rotation: Option<String>,
    },
    /// The signing secret is usable but a Secret a header reads is not.
    HeaderProblem {
        /// The signing secret's name.
        name: String,
        /// The `SecretReady` reason (`SecretNotFound`, `SecretNotLabelled`).
        reason: &'static str,
        /// For people; never contains a secret value.
        message: String,
    },
    /// No usable secret: `SecretNotFound`, `SecretConflict` or `SecretNotLabelled`.
    Problem {
        /// The `SecretReady` reason.
        reason: &'static str,
        /// For people; never contains the token.
        message: String,
    },
}

/// The fields of status the controller owns (and nothing else, so a
/// server-side apply of it never touches the dispatcher's `delivery`).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// Accepted, SecretReady, Ready, Delivering.
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret holding the signing token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The latest generation seen with `spec.enabled: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_disabled_generation: Option<i64>,
}

impl ControllerStatus {
    /// The controller-owned part of a stored status.
    pub fn from_status(status: Option<&OutboundWebhookStatus>) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        let mut conditions: Vec<Condition> = status
            .conditions
            .iter()
            .filter(|c| condition_order(&c.type_).is_some())
            .cloned()
            .collect();
        conditions.sort_by_key(|c| condition_order(&c.type_));
        ControllerStatus {
            conditions,
            observed_generation: status.observed_generation,
            secret_name: status.secret_name.clone(),
            spec_disabled_generation: status.spec_disabled_generation,
        }
    }

    /// The condition of the given type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the hook holds a slot according to this status.
    pub fn is_accepted(&self) -> bool {
        self.condition(conditions::ACCEPTED).is_some_and(|c| c.status == "True")
    }
}

/// Where a condition the controller owns goes in the list; None for others.
fn condition_order(type_: &str) -> Option<usize> {
    match type_ {
        conditions::ACCEPTED => Some(0),
        conditions::SECRET_READY => Some(1),
        conditions::READY => Some(2),
        conditions::DELIVERING => Some(3),
        _ => None,
    }
}

/// The re-enable command for one hook, exactly as a person would paste it.
pub fn reenable_command(hook: &OutboundWebhook) -> String {
    format!(
        "kubectl annotate owh/{} -n {} {REENABLE_ANNOTATION}=\"$(date +%s)\" --overwrite",
        hook.name_any(),
        hook.namespace().unwrap_or_default()
    )
}

fn with_problem(message: String, problem: &Option<String>) -> String {
    match problem {
        Some(p) => format!("{message}; note: {p}"),
        None => message,
    }
}

fn with_rotation(message: String, rotation: &Option<String>) -> String {
    match rotation {
        Some(step) => format!("{message}; {step}"),
        None => message,
    }
}

/// The status the controller wants, given what it found. `previous` keeps
/// `lastTransitionTime` of conditions whose status does not change.
pub fn desired_status(
    hook: &OutboundWebhook,
    previous: &ControllerStatus,
    acceptance: &AcceptanceOutcome,
    secret: &SecretOutcome,
    now: &Time,
) -> ControllerStatus {
    let generation = hook.metadata.generation;
    let namespace = hook.namespace().unwrap_or_default();
    let spec_disabled_generation = if hook.spec.enabled {
        previous.spec_disabled_generation
    } else {
        generation.or(previous.spec_disabled_generation)
    };

    let (is_accepted, accepted_reason, accepted_message) = match acceptance {
        AcceptanceOutcome::Accepted { limit, limit_problem } => (
            true,
            accepted::ACCEPTED,
            with_problem(
                format!("holds one of the {limit} webhook slots of namespace {namespace}"),
                limit_problem,
            ),
        ),
        AcceptanceOutcome::OrgLimitExceeded {
            limit,
            accepted: count,
            limit_problem,
        } => (
            false,
            accepted::ORG_LIMIT_EXCEEDED,
            with_problem(
                format!(
                    "namespace {namespace} allows {limit} accepted OutboundWebhooks and has {count}; this hook waits for a free slot (oldest first) and receives no events meanwhile"
                ),
                limit_problem,
            ),
        ),
        AcceptanceOutcome::Ineligible(i) => (false, i.reason, i.message.clone()),
    };

    let (secret_ok, secret_reason, secret_message, secret_name) = match secret {
        SecretOutcome::Generated { name, rotation } => (
            true,
            secret_ready::SECRET_GENERATED,
            with_rotation(
                format!("the signing token is in Secret {name}, keys token and standard-webhooks-secret"),
                rotation,
            ),
            Some(name.clone()),
        ),
        SecretOutcome::Referenced { name, rotation } => (
            true,
            secret_ready::SECRET_REFERENCED,
            with_rotation(
                format!("the signing token comes from Secret {name} (spec.secretRef)"),
                rotation,
            ),
            Some(name.clone()),
        ),
        SecretOutcome::HeaderProblem { name, reason, message } => (false, *reason, message.clone(), Some(name.clone())),
        SecretOutcome::Problem { reason, message } => (false, *reason, message.clone(), None),
    };

    // The auto-disable rule reads specDisabledGeneration, so it must see the
    // value this reconcile is about to write.
    let mut with_new_status = hook.clone();
    if let Some(status) = with_new_status.status.as_mut() {
        status.spec_disabled_generation = spec_disabled_generation;
    }
    let disable_record = auto_disable::active_disable_record(&with_new_status);
    // From the dispatcher's figures alone: a failing hook stays Ready.
    let delivering = delivering_condition::verdict(
        hook.status.as_ref().and_then(|s| s.delivery.as_ref()),
        disable_record.is_some(),
    );

    let (ready_ok, ready_reason, ready_message) = if !is_accepted {
        (false, ready::NOT_ACCEPTED, format!("not accepted: {accepted_message}"))
    } else if !hook.spec.enabled {
        (
            false,
            ready::DISABLED_BY_SPEC,
            "spec.enabled is false; set it to true to receive events again".to_string(),
        )
    } else if !secret_ok {
        (
            false,
            ready::SECRET_NOT_READY,
            format!("the signing secret is not ready: {secret_message}"),
        )
    } else if let Some(record) = disable_record {
        let what = match record.reason {
            DisableReason::Revoked => "the receiver revoked the subscription (410 Gone)",
            DisableReason::AutoDisabled => "turned off because deliveries kept failing",
        };
        let reason = match record.reason {
            DisableReason::Revoked => ready::REVOKED,
            DisableReason::AutoDisabled => ready::AUTO_DISABLED,
        };
        let last_error = if record.message.is_empty() {
            String::new()
        } else {
            format!("; last error: {}", record.message)
        };
        (
            false,
            reason,
            format!(
                "{what} at {}{last_error}. Fix the receiver, then re-enable with: {} (or set spec.enabled to false, wait for DisabledBySpec, then true)",
                record.at.0,
                reenable_command(hook)
            ),
        )
    } else {
        (true, ready::ACTIVE, "receiving events".to_string())
    };

    let make = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = previous
            .condition(type_)
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };

    ControllerStatus {
        conditions: vec![
            make(conditions::ACCEPTED, is_accepted, accepted_reason, accepted_message),
            make(conditions::SECRET_READY, secret_ok, secret_reason, secret_message),
            make(conditions::READY, ready_ok, ready_reason, ready_message),
            make(
                conditions::DELIVERING,
                delivering.ok,
                delivering.reason,
                delivering.message,
            ),
        ],
        observed_generation: generation,
        secret_name,
        spec_disabled_generation,
    }
}

/// Whether a Kubernetes Event is routine or worth a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Routine.
    Normal,
    /// Worth a look.
    Warning,
}

/// One Kubernetes Event to publish on the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub severity: Severity,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub note: String,
}

fn reason_of<'a>(status: &'a ControllerStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    status.condition(type_).map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The Events that the change from `previous` to `next` deserves:
/// acceptance gained or lost, a secret problem, disabled by spec,
/// auto-disabled or revoked, re-enabled, deliveries failing or recovered.
pub fn transition_events(previous: &ControllerStatus, next: &ControllerStatus) -> Vec<EventNote> {
    let mut events = Vec::new();
    let message = |type_: &str| next.condition(type_).map(|c| c.message.clone()).unwrap_or_default();

    let before = reason_of(previous, conditions::ACCEPTED);
    let after = reason_of(next, conditions::ACCEPTED);
    if before != after {
        match after {
            Some(("True", _)) => events.push(EventNote {
                severity: Severity::Normal,
                reason: "Accepted".into(),
                note: message(conditions::ACCEPTED),
            }),
            Some((_, reason)) => events.push(EventNote {
                severity: Severity::Warning,
                reason: reason.to_string(),
                note: message(conditions::ACCEPTED),
            }),
            None => {}
        }
    }

    let before = reason_of(previous, conditions::SECRET_READY);
    let after = reason_of(next, conditions::SECRET_READY);
    if before != after
        && let Some(("False", reason)) = after
        && reason_of(next, conditions::ACCEPTED).is_some_and(|(s, _)| s == "True")
    {
        events.push(EventNote {
            severity: Severity::Warning,
            reason: reason.to_string(),
            note: message(conditions::SECRET_READY),
        });
    }

    let before = reason_of(previous, conditions::READY).map(|(_, r)| r);
    let after = reason_of(next, conditions::READY).map(|(_, r)| r);
    if before != after {
        let was_turned_off = matches!(before, Some(ready::AUTO_DISABLED | ready::REVOKED));
        match after {
            Some(ready::DISABLED_BY_SPEC) => events.push(EventNote {
                severity: Severity::Normal,
                reason: ready::DISABLED_BY_SPEC.into(),
                note: message(conditions::READY),
            }),
            Some(reason @ (ready::AUTO_DISABLED | ready::REVOKED)) => events.push(EventNote {
                severity: Severity::Warning,
                reason: reason.to_string(),
                note: message(conditions::READY),
            }),
            _ if was_turned_off => events.push(EventNote {
                severity: Severity::Normal,
                reason: "ReEnabled".into(),
                note: format!(
                    "the hook is no longer turned off by the dispatcher; Ready is now {}",
                    after.unwrap_or("unknown")
                ),
            }),
            _ => {}
        }
    }

    // One Event per change of Delivering's status, not per failure: the
    // message changes with every mirrored count.
    let before = previous.condition(conditions::DELIVERING);
    let after = next.condition(conditions::DELIVERING);
    match (before.map(|c| c.status.as_str()), after) {
        (Some("False"), Some(now)) if now.status == "True" => events.push(EventNote {
            severity: Severity::Normal,
            reason: "Recovered".into(),
            note: format!(
                "a request to the receiver succeeded; deliveries had been failing since {}",
                before.map(|c| c.last_transition_time.0.to_string()).unwrap_or_default()
            ),
        }),
        (before, Some(now)) if now.status == "False" && before != Some("False") => events.push(EventNote {
            severity: Severity::Warning,
            reason: delivering::FAILING.into(),
            note: now.message.clone(),
        }),
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::{DeliveryStatus, DisableRecord, OutboundWebhookSpec};

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

    fn with_record(
        mut hook: OutboundWebhook,
        reason: DisableReason,
        token: &str,
        at_generation: i64,
    ) -> OutboundWebhook {
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
    fn delivering_events_mark_the_turn_to_failing_and_the_recovery_once_each() {
        let reasons = |evs: Vec<EventNote>| evs.into_iter().map(|e| (e.severity, e.reason)).collect::<Vec<_>>();
        let none = ControllerStatus::default();
        let active = desired_status(&hook(true, 1), &none, &accepted(), &generated(), &time(1));
        let three = desired_status(
            &with_failures(hook(true, 1), 3),
            &active,
            &accepted(),
            &generated(),
            &time(2),
        );
        let events = transition_events(&active, &three);
        assert_eq!(reasons(events.clone()), [(Severity::Warning, "Failing".to_string())]);
        assert!(
            events[0].note.starts_with("3 attempts failed in a row"),
            "{}",
            events[0].note
        );
        let four = desired_status(
            &with_failures(hook(true, 1), 4),
            &three,
            &accepted(),
            &generated(),
            &time(3),
        );
        assert!(
            transition_events(&three, &four).is_empty(),
            "one Event per transition, not per failure"
        );
        let ok = desired_status(
            &with_failures(hook(true, 1), 0),
            &four,
            &accepted(),
            &generated(),
            &time(4),
        );
        assert_eq!(
            reasons(transition_events(&four, &ok)),
            [(Severity::Normal, "Recovered".to_string())]
        );
        let ok_again = desired_status(
            &with_failures(hook(true, 1), 0),
            &ok,
            &accepted(),
            &generated(),
            &time(5),
        );
        assert!(transition_events(&ok, &ok_again).is_empty());
    }
}
