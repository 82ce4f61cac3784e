//! outbound-webhooks: a Kubernetes operator for Kustomer-style outbound
//! webhooks.

pub mod crd_yaml;
pub mod event_name;
pub mod resource;

pub use event_name::EventName;
pub use resource::{OutboundWebhook, OutboundWebhookSpec, OutboundWebhookStatus};
