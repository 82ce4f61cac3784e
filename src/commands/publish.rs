//! `outbound-webhooks publish`: appends one event to the stream.

use crate::{
    EventName,
    commands::CommandError,
    publish::{NewEvent, Published, publish},
    redis_args::RedisArgs,
};

/// Flags of `outbound-webhooks publish`.
#[derive(clap::Args, Clone, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The org (namespace) whose hooks receive the event.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ORG")]
    org: String,
    /// The trigger event name, e.g. kustomer.conversation.create.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_EVENT")]
    event: EventName,
    /// The data object (JSON).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DATA")]
    data: String,
    /// The changes object (JSON).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CHANGES")]
    changes: Option<String>,
    /// The event id; a new 24-hex id by default.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ID")]
    id: Option<String>,
    /// Deliver to this one hook of the org (its NAME) whatever events it
    /// subscribes to, and to no other: a test event.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HOOK")]
    hook: Option<String>,
}

/// Validates and appends the event; returns what was appended.
pub async fn run(args: PublishArgs) -> Result<Published, CommandError> {
    let mut event =
        NewEvent::from_json_text(&args.org, args.event, &args.data).map_err(|e| CommandError::context("--data", e))?;
    if let Some(changes) = args.changes {
        event = event
            .with_changes_text(&changes)
            .map_err(|e| CommandError::context("--changes", e))?;
    }
    event.id = args.id;
    event.hook = args.hook;
    let target = args.redis.target().map_err(|e| CommandError(e.to_string()))?;
    let mut conn = target.connect().await.map_err(|e| CommandError(e.to_string()))?;
    publish(&mut conn, &args.redis.redis_prefix, &event)
        .await
        .map_err(|e| CommandError(e.to_string()))
}
