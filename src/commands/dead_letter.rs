//! `outbound-webhooks dead-letter list|replay`: shows dead letters and puts
//! them back for delivery, paging through the stream.

use std::io::Write;

use crate::{
    commands::CommandError,
    dispatcher::store::{DEAD_LETTER_PAGE, DeadLetter, Store, task::field},
    redis_args::RedisArgs,
};

/// `dead-letter list` or `dead-letter replay`.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum DeadLetterCommand {
    /// Lists dead letters, oldest first, one per line.
    List(DeadLetterArgs),
    /// Puts dead-lettered deliveries back for delivery (after re-enabling a hook).
    Replay(DeadLetterArgs),
}

/// Flags of `dead-letter list|replay`.
#[derive(clap::Args, Clone, Debug)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Only the dead letters of this hook (NAMESPACE/NAME).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HOOK")]
    hook: Option<String>,
}

/// One line of `dead-letter list`: id, hook, event id, event, reason
/// (tab-separated, `-` for what a malformed entry lacks).
pub fn list_line(letter: &DeadLetter) -> String {
    let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    format!(
        "{}\t{}\t{}\t{}\t{}",
        letter.id,
        or_dash(letter.hook()),
        or_dash(letter.text(field::EVENT_ID)),
        or_dash(letter.event()),
        letter.text(field::REASON)
    )
}

/// Runs the command, writing its lines to `out`.
pub async fn run(command: DeadLetterCommand, out: &mut impl Write) -> Result<(), CommandError> {
    let (args, replay) = match command {
        DeadLetterCommand::List(a) => (a, false),
        DeadLetterCommand::Replay(a) => (a, true),
    };
    let store = Store::connect(&args.redis.redis_url, &args.redis.redis_prefix)
        .await
        .map_err(|e| CommandError(e.to_string()))?;
    let write_error = |e: std::io::Error| CommandError::context("writing the output", e);
    let now = jiff::Timestamp::now().as_millisecond();
    let mut replayed = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .dead_letters_after(after.as_deref(), DEAD_LETTER_PAGE)
            .await
            .map_err(|e| CommandError(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for letter in &page {
            if args.hook.as_ref().is_some_and(|h| *h != letter.hook()) {
                continue;
            }
            if !replay {
                writeln!(out, "{}", list_line(letter)).map_err(write_error)?;
            } else if letter.is_delivery() {
                // (A malformed entry has nothing to deliver it to.)
                store
                    .replay(letter, now)
                    .await
                    .map_err(|e| CommandError(e.to_string()))?;
                replayed += 1;
            }
        }
    }
    if replay {
        writeln!(out, "replayed {replayed} dead letter(s)").map_err(write_error)?;
    }
    Ok(())
}
