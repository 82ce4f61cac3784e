//! The controller's part of a hook's status, computed without I/O: the
//! `Accepted`, `SecretReady`, `Ready` and `Delivering` conditions, `observedGeneration`,
//! `secretName` and `specDisabledGeneration`, plus the Events that a change
//! between two such statuses deserves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    contract::auto_disable,
    contract::conditions::{self, accepted, ready, secret_ready},
    contract::resource::{DisableReason, OutboundWebhook, OutboundWebhookStatus, REENABLE_ANNOTATION},
};

use super::{acceptance::Ineligible, delivering::condition as delivering_condition};

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

    // Delivering's Failing and Recovered Events are paced per hook, see
    // `delivering_events`.
    events
}

#[cfg(test)]
mod tests;
