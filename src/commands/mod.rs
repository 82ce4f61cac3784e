//! The short-lived subcommands (`publish`, `dead-letter`, `attempts`):
//! their flags and what they do, so `main.rs` only parses and dispatches.

pub mod attempts;
pub mod dead_letter;
pub mod publish;

use std::fmt::Display;

use kube::{Api, ResourceExt};

use crate::contract::resource::OutboundWebhook;

/// A subcommand failed; the message is printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl CommandError {
    /// `context: error`.
    pub fn context(context: &str, error: impl Display) -> Self {
        CommandError(format!("{context}: {error}"))
    }
}

/// The UID of hook `namespace/name` now, if it exists and is not being
/// deleted.
pub async fn hook_uid(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<String>, CommandError> {
    let api: Api<OutboundWebhook> = Api::namespaced(client.clone(), namespace);
    let hook = api
        .get_opt(name)
        .await
        .map_err(|e| CommandError::context(&format!("looking up OutboundWebhook {namespace}/{name}"), e))?;
    Ok(hook
        .filter(|h| h.metadata.deletion_timestamp.is_none())
        .and_then(|h| h.uid()))
}
