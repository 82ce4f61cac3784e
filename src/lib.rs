//! outbound-webhooks: a Kubernetes operator for Kustomer-style outbound
//! webhooks.
//!
//! - [`contract`]: the resource, its conditions, events and policies;
//! - [`wire`]: the stream entry, the envelope and its signatures;
//! - [`store`]: the Redis schema and connections;
//! - [`controller`] and [`dispatcher`]: the two long-running processes;
//!   [`commands`]: the one-shot subcommands; [`publish`]: the producer
//!   library;
//! - [`plumbing`]: what every process needs; [`address_filter`]: which
//!   destination addresses may be reached.

pub mod address_filter;
pub mod commands;
pub mod contract;
pub mod controller;
pub mod dispatcher;
pub mod plumbing;
pub mod publish;
pub mod store;
pub mod wire;

pub use contract::event_name::EventName;
pub use contract::resource::{OutboundWebhook, OutboundWebhookSpec, OutboundWebhookStatus};
