//! `outbound-webhooks dead-letter list|replay`: shows dead letters and puts
//! them back for delivery, paging through the stream.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
};

use crate::{
    commands::{CommandError, hook_uid},
    dispatcher::org_budget::ORG_OVER_BUDGET,
    store::connection::args::RedisArgs,
    store::{DEAD_LETTER_PAGE, DeadLetter, Replayed, Shards, WRONG_SHARD, WhenUnstored, task::field},
    wire::stream_entry::{entry_id_millis, parse_entry},
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

/// The hooks dead letters are replayed to: each `namespace/name` resolved
/// once to the hook that carries the name now (after a delete and
/// re-apply, a new UID), or to nothing.
struct CurrentHooks {
    client: kube::Client,
    by_name: HashMap<String, Option<String>>,
}

impl CurrentHooks {
    /// The UID of the hook named `key` (`namespace/name`) now, if any.
    async fn uid(&mut self, key: &str) -> Result<Option<String>, CommandError> {
        if let Some(uid) = self.by_name.get(key) {
            return Ok(uid.clone());
        }
        let Some((namespace, name)) = key.split_once('/') else {
            return Ok(None);
        };
        let uid = hook_uid(&self.client, namespace, name).await?;
        self.by_name.insert(key.to_string(), uid.clone());
        Ok(uid)
    }
}

/// Runs the command, writing its lines to `out`. `replay` stores each
/// dead letter as a new task of the hook that carries its hook's name now,
/// removing the dead letter in the same step; dead letters whose hook name
/// no hook carries, or whose hook holds a live task for the event, stay,
/// and the command says so. A dead letter another replay took meanwhile is
/// skipped, so replays running at once deliver each event once.
pub async fn run(command: DeadLetterCommand, out: &mut impl Write) -> Result<(), CommandError> {
    let (args, replay) = match command {
        DeadLetterCommand::List(a) => (a, false),
        DeadLetterCommand::Replay(a) => (a, true),
    };
    let target = args.redis.target().map_err(|e| CommandError(e.to_string()))?;
    // Replay picks an org's shard, so it needs the count; a listing
    // before any dispatcher ran reads shard 0.
    let unstored = if replay {
        WhenUnstored::Refuse
    } else {
        WhenUnstored::OneShard
    };
    let shards = Shards::connect_as_stored(&target, &args.redis.redis_prefix, unstored)
        .await
        .map_err(|e| CommandError(e.to_string()))?;
    let mut current = if replay {
        let client = kube::Client::try_default().await.map_err(|e| {
            CommandError::context(
                "replay resolves hook names through Kubernetes (in-cluster or KUBECONFIG)",
                e,
            )
        })?;
        Some(CurrentHooks {
            client,
            by_name: HashMap::new(),
        })
    } else {
        None
    };
    let write_error = |e: std::io::Error| CommandError::context("writing the output", e);
    let now = jiff::Timestamp::now().as_millisecond();
    let mut replayed = 0;
    let mut moved = 0;
    let mut unreadable = 0;
    let mut bodiless = 0;
    let mut kept: BTreeMap<String, usize> = BTreeMap::new();
    let mut held = Vec::new();
    for (shard, store) in shards.all().iter().enumerate() {
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
                let Some(current) = current.as_mut() else {
                    writeln!(out, "{}", list_line(letter)).map_err(write_error)?;
                    continue;
                };
                if !letter.is_delivery() {
                    // A malformed entry has nothing to deliver it to; one
                    // on a wrong shard goes to its org's shard.
                    if letter.text(field::REASON).starts_with(WRONG_SHARD) {
                        if move_to_home_shard(&shards, shard, letter).await? {
                            moved += 1;
                        } else {
                            unreadable += 1;
                        }
                    }
                    continue;
                }
                if !letter.fields.contains_key(field::BODY) {
                    // Refused at its org's budget: nothing to deliver.
                    bodiless += 1;
                    continue;
                }
                let hook = letter.hook();
                let Some(uid) = current.uid(&hook).await? else {
                    *kept.entry(hook).or_default() += 1;
                    continue;
                };
                let mut task = letter.to_new_task();
                let was_for = std::mem::replace(&mut task.delivery.uid, uid);
                let outcome = store
                    .replay_as(&letter.id, &was_for, &task, now)
                    .await
                    .map_err(|e| CommandError(e.to_string()))?;
                match outcome {
                    Replayed::Stored => replayed += 1,
                    // Another replay running at the same time took it.
                    Replayed::Gone => {}
                    Replayed::TaskHeld => held.push(letter.id.clone()),
                }
            }
        }
    }
    if !replay {
        return Ok(());
    }
    for (hook, count) in &kept {
        writeln!(
            out,
            "no OutboundWebhook {hook} exists now: its {count} dead letter(s) stay (re-create it, then replay again)"
        )
        .map_err(write_error)?;
    }
    if !held.is_empty() {
        writeln!(
            out,
            "{} dead letter(s) stay: their hook holds a live task for the same event, which delivers it ({})",
            held.len(),
            held.join(", ")
        )
        .map_err(write_error)?;
    }
    if bodiless > 0 {
        writeln!(
            out,
            "{bodiless} dead letter(s) stay: they were refused at their org's budget of bytes in Redis ({ORG_OVER_BUDGET}) without their bodies; publish those events again"
        )
        .map_err(write_error)?;
    }
    if unreadable > 0 {
        writeln!(
            out,
            "{unreadable} entry(ies) dead-lettered on a wrong shard were not kept whole (dead-lettered by an older version) and stay: publish them again"
        )
        .map_err(write_error)?;
    }
    writeln!(out, "replayed {replayed} dead letter(s)").map_err(write_error)?;
    if moved > 0 {
        writeln!(
            out,
            "moved {moved} entry(ies) dead-lettered on a wrong shard to their org's shard"
        )
        .map_err(write_error)?;
    }
    if let Some(hook) = &args.hook
        && replayed == 0
        && kept.contains_key(hook)
    {
        return Err(CommandError(format!(
            "no OutboundWebhook {hook} exists now; nothing was replayed"
        )));
    }
    Ok(())
}

/// Appends the entry of `letter` (dead-lettered on shard `shard`, not its
/// org's) to its org's shard's stream, where the consumers route it as any
/// new entry, then deletes the dead letter; false when the entry cannot
/// be read back whole.
///
/// The two steps touch two shards (two Cluster slots), so they cannot be
/// one atomic step: the append leaves a marker on the target shard, so a
/// replay that stopped between them, run again within
/// [`MOVED_MARKER_TTL`](crate::store::MOVED_MARKER_TTL), only deletes the dead letter. Run again after
/// that, it would append the entry a second time (the same event id, which
/// receivers deduplicate by `webhook-id`).
async fn move_to_home_shard(shards: &Shards, shard: usize, letter: &DeadLetter) -> Result<bool, CommandError> {
    let mut entry = letter.entry();
    let entry_id = letter.text(field::ENTRY_ID);
    let Ok(event) = parse_entry(&entry_id, &entry) else {
        // Cut to the cap of malformed entries (written before wrong-shard
        // entries were kept whole): not safe to deliver.
        return Ok(false);
    };
    // The event keeps the time it was first appended.
    if !entry.contains_key("createdAt")
        && let Some(at) = entry_id_millis(&entry_id).and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
    {
        entry.insert("createdAt".into(), at.to_string().into_bytes());
    }
    let home = shards.for_org(&event.org);
    let error = |e| CommandError(format!("moving dead letter {} to its org's shard: {e}", letter.id));
    home.append_moved(shard, &letter.id, &entry).await.map_err(error)?;
    shards.get(shard).remove_entry_letter(&letter.id).await.map_err(error)?;
    Ok(true)
}
