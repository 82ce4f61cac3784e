//! The contract with users: the `OutboundWebhook` resource and its CRD,
//! its conditions and reasons, the trigger event names, the retry policy,
//! when a hook is turned off, and the keys of the Secrets it reads.

pub mod auto_disable;
pub mod conditions;
pub mod crd_yaml;
pub mod event_name;
pub mod filter;
pub mod resource;
pub mod retry_schedule;
pub mod secret_values;
pub mod signing_tokens;
