//! outbound-webhooks: a Kubernetes operator for Kustomer-style outbound
//! webhooks.

pub mod address_filter;
pub mod auto_disable;
pub mod commands;
pub mod conditions;
pub mod controller;
pub mod crd_yaml;
pub mod dispatcher;
pub mod duration;
pub mod envelope;
pub mod event_name;
pub mod ops_server;
pub mod process;
pub mod publish;
pub mod redis_args;
pub mod redis_conn;
pub mod redis_retry;
pub mod resource;
pub mod retry_schedule;
pub mod secret_values;
pub mod shard;
pub mod signing;
pub mod signing_tokens;
pub mod stream_entry;
pub mod telemetry;

pub use event_name::EventName;
pub use resource::{OutboundWebhook, OutboundWebhookSpec, OutboundWebhookStatus};
