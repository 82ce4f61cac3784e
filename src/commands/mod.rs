//! The short-lived subcommands (`publish`, `dead-letter`): their flags and
//! what they do, so `main.rs` only parses and dispatches.

pub mod dead_letter;
pub mod publish;

use std::fmt::Display;

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
