//! `outbound-webhooks publish`: appends one event to the stream.

use std::time::{Duration, Instant};

use crate::{
    EventName,
    commands::CommandError,
    plumbing::duration::parse_duration,
    publish::{DEFAULT_WAIT_TIMEOUT, NewEvent, PublishOptions, Published, check_trace_context, publish_with},
    store::connection::args::RedisArgs,
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
    /// W3C traceparent of the producer's span (00-<32 hex trace id>-<16 hex
    /// span id>-<2 hex flags>): each attempt's traceparent header continues
    /// this trace. A malformed value is refused.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_TRACEPARENT")]
    traceparent: Option<String>,
    /// W3C tracestate passed through to the receiver (only with
    /// --traceparent; at most 32 key=value members, 512 characters).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_TRACESTATE")]
    tracestate: Option<String>,
    /// How long to keep trying through transient Redis errors (a
    /// fail-over: CLUSTERDOWN, TRYAGAIN, READONLY, MASTERDOWN, LOADING, a
    /// refused or dropped connection) and while Redis holds no shard count,
    /// before failing with the last error.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_RETRY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    retry_timeout: Duration,
    /// Replicas that must hold the event before publish returns (Redis
    /// WAIT after the append); 0, the default, waits for none. Fewer within
    /// --wait-timeout fails with an error saying the event WAS appended but
    /// may not survive a fail-over.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_WAIT_REPLICAS", default_value_t = 0)]
    wait_replicas: u32,
    /// How long to wait for --wait-replicas (more than 0, at most 5s;
    /// default 1s). Only with --wait-replicas.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_WAIT_TIMEOUT", value_parser = parse_duration)]
    wait_timeout: Option<Duration>,
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
    event.traceparent = args.traceparent;
    event.tracestate = args.tracestate;
    // Checked before connecting: a wrong flag is not a Redis problem.
    check_trace_context(&event).map_err(|e| CommandError(format!("--{}: {e}", e.field())))?;
    if args.wait_timeout.is_some() && args.wait_replicas == 0 {
        return Err(CommandError(
            "--wait-timeout is set but --wait-replicas is 0: give the number of replicas to wait for".into(),
        ));
    }
    let wait_timeout = args.wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT);
    // Checked before connecting: a wrong flag is not a Redis problem.
    PublishOptions {
        retry_timeout: args.retry_timeout,
        wait_replicas: args.wait_replicas,
        wait_timeout,
    }
    .check()
    .map_err(|e| CommandError(e.to_string()))?;
    let target = args.redis.target().map_err(|e| CommandError(e.to_string()))?;
    // Connecting counts against the same deadline: a fail-over can refuse
    // it as well.
    let deadline = Instant::now() + args.retry_timeout;
    let mut conn = loop {
        match target.connect_without_resends().await {
            Ok(conn) => break conn,
            Err(e) if e.is_transient() && Instant::now() + CONNECT_PAUSE < deadline => {
                tokio::time::sleep(CONNECT_PAUSE).await;
            }
            Err(e) => return Err(CommandError(e.to_string())),
        }
    };
    let options = PublishOptions {
        retry_timeout: deadline.saturating_duration_since(Instant::now()),
        wait_replicas: args.wait_replicas,
        wait_timeout,
    };
    publish_with(&mut conn, &args.redis.redis_prefix, &event, &options)
        .await
        .map_err(|e| CommandError(e.to_string()))
}

/// The wait between two attempts to connect.
const CONNECT_PAUSE: Duration = Duration::from_millis(200);
