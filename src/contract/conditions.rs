//! Condition types and reasons of the contract
//! (docs/src/contract.md#status-and-conditions), and small readers of them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::contract::resource::OutboundWebhook;

/// Condition type: the hook holds a slot of its namespace and its spec is usable.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: the signing secret exists and is usable.
pub const SECRET_READY: &str = "SecretReady";
/// Condition type: the summary; True when the hook receives events.
pub const READY: &str = "Ready";
/// Condition type: whether requests to the receiver succeed (from
/// `status.delivery`; it never changes `Ready`).
pub const DELIVERING: &str = "Delivering";

/// Reasons of the `Accepted` condition.
pub mod accepted {
    /// True: the hook holds a slot.
    pub const ACCEPTED: &str = "Accepted";
    /// False: the namespace already has its limit of accepted hooks.
    pub const ORG_LIMIT_EXCEEDED: &str = "OrgLimitExceeded";
    /// False: an http:// URL while the operator does not allow it.
    pub const INSECURE_URL: &str = "InsecureURL";
    /// False: the spec passed the API server but cannot be served.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// False: `spec.filter` does not compile (the compiler's message).
    pub const INVALID_FILTER: &str = "InvalidFilter";
}

/// Reasons of the `SecretReady` condition.
pub mod secret_ready {
    /// True: the controller generated the signing secret.
    pub const SECRET_GENERATED: &str = "SecretGenerated";
    /// True: `spec.secretRef` names a usable secret.
    pub const SECRET_REFERENCED: &str = "SecretReferenced";
    /// False: the Secret or its key does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// False: a same-named Secret belongs to something else.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// False: the Secret lacks the `outboundwebhooks.io/webhook-secret` label.
    pub const SECRET_NOT_LABELLED: &str = "SecretNotLabelled";
    /// False: a value the hook needs cannot be used as it is (a token not
    /// UTF-8 or of the wrong length, a header value with control characters).
    pub const SECRET_INVALID: &str = "SecretInvalid";
}

/// Reasons of the `Ready` condition.
pub mod ready {
    /// True: the hook receives events.
    pub const ACTIVE: &str = "Active";
    /// False: `Accepted` is False.
    pub const NOT_ACCEPTED: &str = "NotAccepted";
    /// False: `spec.enabled` is false.
    pub const DISABLED_BY_SPEC: &str = "DisabledBySpec";
    /// False: `SecretReady` is False.
    pub const SECRET_NOT_READY: &str = "SecretNotReady";
    /// False: the receiver answered 410 Gone.
    pub const REVOKED: &str = "Revoked";
    /// False: the endpoint kept failing.
    pub const AUTO_DISABLED: &str = "AutoDisabled";
}

/// Reasons of the `Delivering` condition.
pub mod delivering {
    /// True: the last request succeeded.
    pub const SUCCEEDING: &str = "Succeeding";
    /// True: no request was ever made.
    pub const NO_ATTEMPTS_YET: &str = "NoAttemptsYet";
    /// False: the last request failed (`consecutiveFailures` > 0).
    pub const FAILING: &str = "Failing";
}

/// The condition of the given type, if the hook has one.
pub fn find<'a>(hook: &'a OutboundWebhook, type_: &str) -> Option<&'a Condition> {
    hook.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition is True and was set for the hook's current generation.
pub fn is_true_for_current_generation(hook: &OutboundWebhook, type_: &str) -> bool {
    find(hook, type_).is_some_and(|c| c.status == "True" && c.observed_generation == hook.metadata.generation)
}
