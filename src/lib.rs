//! outbound-webhooks: a Kubernetes operator for Kustomer-style outbound
//! webhooks.

pub mod auto_disable;
pub mod conditions;
pub mod controller;
pub mod crd_yaml;
pub mod event_name;
pub mod ops_server;
pub mod resource;
pub mod telemetry;

pub use event_name::EventName;
pub use resource::{OutboundWebhook, OutboundWebhookSpec, OutboundWebhookStatus};
