//! The `OutboundWebhook` custom resource: spec, status and the generated CRD.
//!
//! Doc comments on the types become `kubectl explain` text. Validation that
//! the API server can do (bounds, enums, CEL rules) lives here, so a bad
//! manifest is refused at `kubectl apply` time with a message a person
//! understands.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::event_name::EventName;

/// API group of every resource of this operator.
pub const API_GROUP: &str = "outboundwebhooks.io";
/// Prefix of every annotation and label this operator reads or writes.
pub const LABEL_PREFIX: &str = "outboundwebhooks.io/";
/// Label a Secret must carry before the operator reads or writes it.
pub const WEBHOOK_SECRET_LABEL: &str = "outboundwebhooks.io/webhook-secret";
/// Labelled Secrets per list page, in both processes: a page is held
/// whole before its Secrets are trimmed, and a tenant's may be 1 MiB each.
pub const SECRET_LIST_PAGE_SIZE: u32 = 16;
/// Annotation whose change re-enables an auto-disabled hook.
pub const REENABLE_ANNOTATION: &str = "outboundwebhooks.io/reenable";
/// Hook annotation whose new value stages a next signing token (rotation step 1).
pub const ROTATE_SECRET_ANNOTATION: &str = "outboundwebhooks.io/rotate-secret";
/// Hook annotation that, set to the staged `rotate-secret` value, promotes
/// the next token (rotation step 2).
pub const PROMOTE_SECRET_ANNOTATION: &str = "outboundwebhooks.io/promote-secret";
/// Namespace annotation that overrides the per-namespace hook limit.
pub const MAX_WEBHOOKS_ANNOTATION: &str = "outboundwebhooks.io/max-webhooks";

/// Most trigger events one hook may subscribe to (there are ten in all).
pub const MAX_EVENTS: usize = 10;
/// Most custom headers one hook may send.
pub const MAX_HEADERS: usize = 10;
/// Default request timeout, in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10;

/// An outbound webhook: events of this namespace (the org) that match
/// `events` are POSTed as signed JSON to `url`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outboundwebhooks.io",
    version = "v1alpha1",
    kind = "OutboundWebhook",
    plural = "outboundwebhooks",
    shortname = "owh",
    category = "webhooks",
    namespaced,
    status = "OutboundWebhookStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Failures","type":"integer","jsonPath":".status.delivery.consecutiveFailures"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OutboundWebhookSpec {
    /// Display name of the hook, shown to people; defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name: Option<String>,

    /// Destination URL: an absolute https:// URL (http:// only where the
    /// operator allows it) with a host and without user info. Events are
    /// POSTed here.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self)").message("url must be a valid absolute URL, e.g. https://hooks.example.com/path"),
        validation = Rule::new("!isURL(self) || url(self).getScheme() in ['http', 'https']").message("url must start with https:// (or http://): relative URLs and other schemes are not allowed"),
        validation = Rule::new("!isURL(self) || url(self).getHostname() != ''").message("url must name a host"),
        validation = Rule::new("!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')").message("url must not contain user info (user:password@): every reader of the hook would see it; send credentials in a header from a Secret instead")
    )]
    pub url: String,

    /// Trigger events: the Kustomer event names this hook receives (1 to 10,
    /// each at most once).
    #[schemars(length(min = 1, max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<EventName>,

    /// Whether the hook receives events. Setting it to false and back to
    /// true also re-enables a hook that was turned off automatically.
    #[serde(default = "default_enabled")]
    pub enabled: bool,

    /// Custom headers sent with every request (at most 10). Reserved names
    /// (Host, Content-Type, Content-Length, User-Agent, X-Kustomer-Webhook-*,
    /// webhook-*) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<Header>,

    /// Bring your own signing secret: a key of a Secret in this namespace
    /// labelled outboundwebhooks.io/webhook-secret=true, holding a token of
    /// 16 to 512 bytes. Without it the operator generates one into
    /// <metadata.name>-webhook-secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// Seconds to wait for the receiver's answer before the attempt counts
    /// as failed (1 to 30).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: i32,

    /// A CEL expression over `event` (event.id, event.name, event.org,
    /// event.createdAt, event.data, event.changes) that must be true for
    /// the hook to get the event, e.g. `event.data.attributes.priority ==
    /// 'urgent'` (at most 1024 characters). Test events skip it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub filter: Option<String>,

    /// At most this many requests per second to the receiver, across all
    /// dispatcher replicas; events over the rate wait (they do not fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// At most this many requests in flight to the receiver at once, across
    /// all dispatcher replicas (1 to 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrent_requests: Option<i32>,
}

/// A hook's request rate: a token bucket of `burst` tokens refilled at
/// `requestsPerSecond`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second (1 to 10000).
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: i32,
    /// Requests that may go at once after a quiet spell (1 to 10000).
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: i32,
}

fn default_burst() -> i32 {
    1
}

fn default_enabled() -> bool {
    true
}

fn default_timeout_seconds() -> i32 {
    DEFAULT_TIMEOUT_SECONDS
}

/// A custom HTTP header: a literal value or one read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a header needs exactly one of value and valueFrom"))]
pub struct Header {
    /// Header name: an HTTP token (letters, digits and !#$%&'*+-.^_`|~).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(
        validation = Rule::new("self.matches('^[-!#$%&\\'*+.^_`|~0-9A-Za-z]+$')").message("header name must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~, no spaces"),
        validation = Rule::new("!(self.lowerAscii() in ['host', 'content-type', 'content-length', 'user-agent'])").message("header name is reserved: Host, Content-Type, Content-Length and User-Agent are set by the dispatcher"),
        validation = Rule::new("!self.lowerAscii().startsWith('x-kustomer-webhook-') && !self.lowerAscii().startsWith('webhook-')").message("header name is reserved: X-Kustomer-Webhook-* and webhook-* headers carry the event name and signatures")
    )]
    pub name: String,

    /// Literal header value (no control characters such as line breaks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x08\\\\x0a-\\\\x1f\\\\x7f]')").message("header value must not contain control characters such as line breaks"))]
    pub value: Option<String>,

    /// Read the header value from a key of a Secret in this namespace; the
    /// Secret must be labelled outboundwebhooks.io/webhook-secret=true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// Where a header value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key of a labelled Secret in the hook's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the hook's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "token".to_string()
}

/// Observed state. The controller writes the conditions, `observedGeneration`,
/// `secretName` and `specDisabledGeneration`; the dispatcher writes
/// `delivery`. Each under its own server-side apply field manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundWebhookStatus {
    /// Accepted, SecretReady, Ready (the summary) and Delivering, per
    /// Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The generation the controller last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Name of the Secret that holds the signing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// The latest generation at which the controller saw spec.enabled false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_disabled_generation: Option<i64>,

    /// Delivery health and the disable record, written by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
}

/// Delivery health of one hook, mirrored from Redis by the dispatcher.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// Failed requests in a row since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
    /// When a request last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// When a request last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// What the last failed request got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
    /// When the current run of failures began (its first failure, or the
    /// first since the hook was last re-enabled); absent while requests
    /// succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// While failing: when the hook turns off if nothing succeeds, estimated
    /// by the dispatcher as failingSince plus its retry schedule's span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_turn_off_time: Option<Time>,
    /// How many attempts the dispatcher makes per event (its retry schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_per_event: Option<i64>,
    /// Present when the dispatcher turned the hook off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<DisableRecord>,
    /// Present once events of this hook were not kept because its org's
    /// bytes in Redis reached their budget (`org_over_budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_budget: Option<OverBudget>,
    /// Present once `spec.filter` failed on an event (a missing field, a
    /// wrong type): such events count as not matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_errors: Option<FilterErrors>,
}

/// Events `spec.filter` failed on: each was not delivered to the hook and
/// counted `events_filtered_total{reason="error"}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilterErrors {
    /// How many events the filter failed on.
    pub events: i64,
    /// When the last of them came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Time>,
    /// The last error, e.g. `No such key: priority`.
    #[serde(default)]
    pub message: String,
}

/// Events of a hook not kept at its org's budget of bytes in Redis: each
/// was dead-lettered without its body, or dropped when even that did not
/// fit, and counted with reason `org_over_budget`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OverBudget {
    /// How many events of this hook were not kept.
    pub events: i64,
    /// When the last of them came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Time>,
    /// The org's budget then, in bytes (`--org-max-stored-bytes` or the
    /// Namespace's `outboundwebhooks.io/max-stored-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<i64>,
}

/// The outcome of the last failed request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastFailure {
    /// HTTP status code, absent when no answer came (timeout, refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// What went wrong, for people.
    #[serde(default)]
    pub message: String,
}

/// Why the dispatcher turned a hook off.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisableReason {
    /// An event failed every attempt and nothing succeeded meanwhile.
    AutoDisabled,
    /// The receiver answered 410 Gone.
    Revoked,
}

impl DisableReason {
    /// The reason as written in status and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::AutoDisabled => "AutoDisabled",
            DisableReason::Revoked => "Revoked",
        }
    }
}

/// The dispatcher's record of turning a hook off. The hook stays off while
/// the reenable annotation equals `reenableToken` and spec.enabled has not
/// been false since `generation`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisableRecord {
    /// AutoDisabled or Revoked.
    pub reason: DisableReason,
    /// When the hook was turned off.
    pub at: Time,
    /// What failed, for people.
    #[serde(default)]
    pub message: String,
    /// The reenable annotation's value at that moment (empty if none).
    #[serde(default)]
    pub reenable_token: String,
    /// The hook's metadata.generation at that moment.
    pub generation: i64,
}
