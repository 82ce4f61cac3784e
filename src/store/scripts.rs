//! The Lua scripts (one `.lua` file each, in `scripts/`), each behind a
//! thin typed wrapper that fills its KEYS and ARGV in the order the file's
//! opening comment gives.

use std::{collections::HashMap, sync::LazyLock};

use redis::Script;

use crate::dispatcher::org_budget::{self, ORG_OVER_BUDGET};

use super::{
    Context, Store, StoreError,
    keys::{task_member, uid_of_member},
    limits::HookLimit,
    task::{
        NOT_IN_DEAD_LETTERS, NOT_IN_REFUSED_LETTERS, NewTask, OPTIONAL_STORED_FIELDS, STORED_FIELDS, Task,
        attempt_fields, field, stored_pairs,
    },
};

const DUE_PRELUDE: &str = include_str!("scripts/due_prelude.lua");

/// A script with the due-set and byte-count helpers in front of it (and
/// the task field names they read, from [`field`]).
fn with_prelude(body: &str) -> Script {
    Script::new(&format!(
        "local TASK_ORG, TASK_BYTES = '{}', '{}'\n{DUE_PRELUDE}\n{body}",
        field::ORG,
        field::BYTES
    ))
}

// Each script is hashed (SHA-1) once per process, not once per call: the
// hashing showed up as ~10% of the dispatcher's instructions per delivery.
static ROUTE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/route.lua")));
static DUE_HOOKS: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/due_hooks.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/claim.lua")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/extend.lua")));
static RESCHEDULE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/reschedule.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/finish.lua")));
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/dead_letter.lua")));
static TRIM_DEAD_LETTERS: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/trim_dead_letters.lua")));
static TRIM_LETTERS_BY_AGE: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/trim_letters_by_age.lua")));
static WAKE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/wake.lua")));
static REPLAY: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/replay.lua")));

/// Most task body bytes one script call carries (tasks of 1 MiB entries
/// must not make one huge call, nor a reply buffer that size).
pub const MAX_SCRIPT_BYTES: usize = 8 * 1024 * 1024;

/// Most task body bytes in the script calls of this process at once:
/// building and sending a call copies each body twice (into the command,
/// then into its wire form), so the failed first attempts of many 1 MiB
/// entries, each storing its task at the same moment, stay within about
/// 2 x this. Smaller than [`MAX_SCRIPT_BYTES`] would split nothing more and
/// only serialise; 16 MiB lets two full calls run side by side.
pub const MAX_BODY_WRITE_BYTES: usize = 16 * 1024 * 1024;

/// [`MAX_BODY_WRITE_BYTES`] in the semaphore's unit (KiB: a permit count
/// is a `u32`).
const BODY_WRITE_KIB: u32 = (MAX_BODY_WRITE_BYTES / 1024) as u32;

/// One semaphore for the whole process, not one per [`Store`]: the bound is
/// on this process's memory, whichever shard a call writes to.
static BODY_WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_WRITE_KIB as usize);

/// Waits for room to write `bytes` of bodies (a call bigger than the whole
/// room waits for all of it, so it is never stuck).
async fn body_write_room(bytes: usize) -> Option<tokio::sync::SemaphorePermit<'static>> {
    if bytes == 0 {
        return None;
    }
    let kib = u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .min(BODY_WRITE_KIB);
    // The semaphore is never closed.
    BODY_WRITES.acquire_many(kib).await.ok()
}

/// An `EVALSHA` of `script` with `keys` keys, to which the caller adds the
/// keys, then the arguments. Built by hand rather than through
/// [`redis::ScriptInvocation`], which copies every argument once more
/// (into its own lists, then into the command): for a 1 MiB body, 1 MiB
/// more per stored task.
fn evalsha(script: &Script, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs an [`evalsha`] command, loading `script` first when this Redis
/// node does not hold it yet (after a restart or a fail-over), as
/// [`redis::ScriptInvocation`] does.
async fn eval_loading<T: redis::FromRedisValue>(
    script: &Script,
    eval: &redis::Cmd,
    conn: &mut crate::store::connection::RedisConn,
) -> redis::RedisResult<T> {
    match eval.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            eval.query_async(conn).await
        }
        other => other,
    }
}

/// Which claim a task-moving call must still hold.
#[derive(Clone, Copy, Debug)]
pub enum Claim {
    /// Only while the task's due score is still this lease end.
    Held(i64),
    /// Whatever the score (a turn-off moves every task of the hook).
    Any,
}

impl Store {
    /// Stores the tasks not stored yet and acknowledges `entry_ids`
    /// (either may be empty); `created_ms` is what their `created_ms`
    /// field says. `route.lua`: one atomic step, or, when the tasks'
    /// bodies exceed [`MAX_SCRIPT_BYTES`], one step per slice of tasks with
    /// the acknowledgement in the last (a crash between them leaves the
    /// entries pending: read again, the stored tasks are kept as they are).
    /// Returns Redis's time (Unix ms) of the last step (a task of it stored
    /// with `due_in_ms` is due at that time plus `due_in_ms`) and the tasks
    /// not stored because their hook holds a task for the event id from
    /// another entry.
    pub async fn store_tasks_and_ack(
        &self,
        entry_ids: &[String],
        tasks: &[NewTask],
        created_ms: i64,
    ) -> Result<Routed, StoreError> {
        let mut all = Routed::default();
        let mut rest = tasks;
        loop {
            let mut bytes = 0;
            let take = rest
                .iter()
                .position(|t| {
                    bytes += t.body.len();
                    bytes > MAX_SCRIPT_BYTES
                })
                .unwrap_or(rest.len())
                .max(1)
                .min(rest.len());
            let (slice, after) = rest.split_at(take);
            let acknowledge: &[String] = if after.is_empty() { entry_ids } else { &[] };
            let offset = tasks.len() - rest.len();
            let routed = self.route(acknowledge, slice, created_ms).await?;
            all.now_ms = routed.now_ms;
            all.duplicates.extend(routed.duplicates.into_iter().map(|mut d| {
                d.index += offset;
                d
            }));
            all.refused.extend(routed.refused.into_iter().map(|mut r| {
                r.index += offset;
                r
            }));
            all.evicted.extend(routed.evicted);
            if after.is_empty() {
                return Ok(all);
            }
            rest = after;
        }
    }

    async fn route(&self, entry_ids: &[String], tasks: &[NewTask], created_ms: i64) -> Result<Routed, StoreError> {
        if entry_ids.is_empty() && tasks.is_empty() {
            return Ok(Routed::default());
        }
        // Room for the copies of the bodies this call makes, taken before
        // the first copy and given back when Redis has answered.
        let _room = body_write_room(tasks.iter().map(|t| t.body.len()).sum()).await;
        let keys = &self.keys;
        let mut task_keys = Vec::with_capacity(tasks.len() * 4);
        for t in tasks {
            let member = t.member();
            task_keys.extend([
                keys.task(&member),
                keys.hook_due(&t.uid),
                keys.hook_tasks(&t.uid),
                keys.dead_index(&t.uid),
            ]);
        }
        let mut eval = evalsha(&ROUTE, 8 + task_keys.len());
        eval.arg(keys.events())
            .arg(keys.due())
            .arg(keys.hooks_due())
            .arg(keys.dead_letter())
            .arg(keys.dead_hooks())
            .arg(keys.org_bytes())
            .arg(keys.dead_letters_by_id())
            .arg(keys.dead_letters_by_org())
            .arg(&task_keys);
        eval.arg(super::GROUP).arg(entry_ids.len()).arg(entry_ids);
        eval.arg(STORED_FIELDS.len())
            .arg(&STORED_FIELDS[..])
            .arg(OPTIONAL_STORED_FIELDS);
        eval.arg(2)
            .arg(field::REASON)
            .arg(format!(
                "{ORG_OVER_BUDGET}: the org's bytes in Redis reached its budget (--org-max-stored-bytes or the Namespace's {} annotation); the body was not kept",
                org_budget::ANNOTATION
            ))
            .arg(field::FAILED_AT_MS)
            .arg(created_ms)
            .arg(NOT_IN_REFUSED_LETTERS.len())
            .arg(&NOT_IN_REFUSED_LETTERS[..]);
        let created = created_ms.to_string();
        for t in tasks {
            eval.arg(t.member())
                .arg(&t.uid)
                .arg(t.due_in_ms)
                .arg(&t.org)
                .arg(self.budgets.for_org(&t.org))
                .arg(&t.values(&created)[..]);
        }
        let mut conn = self.conn.clone();
        type Reply = (i64, i64, Vec<String>, Vec<String>, Vec<String>);
        let (_acked, now_ms, flat, refused, evicted): Reply =
            eval_loading(&ROUTE, &eval, &mut conn).await.context(|| {
                format!(
                    "storing {} delivery task(s) and acknowledging {} entries",
                    tasks.len(),
                    entry_ids.len()
                )
            })?;
        let evicted: Vec<Evicted> = evicted
            .chunks_exact(3)
            .map(|e| Evicted {
                org: e[0].clone(),
                uid: e[1].clone(),
                index_member: e[2].clone(),
            })
            .collect();
        self.unindex_evicted(&evicted).await?;
        Ok(Routed {
            now_ms,
            duplicates: flat
                .chunks_exact(2)
                .filter_map(|pair| {
                    Some(Duplicate {
                        index: pair[0].parse().ok()?,
                        held_entry_id: pair[1].clone(),
                    })
                })
                .collect(),
            refused: refused
                .chunks_exact(2)
                .filter_map(|pair| {
                    Some(Refused {
                        index: pair[0].parse().ok()?,
                        dead_lettered: pair[1] == "1",
                    })
                })
                .collect(),
            evicted,
        })
    }

    /// Removes dead letters deleted at their org's budget from their
    /// hooks' `dead-index` (route.lua cannot declare those keys). Left
    /// behind by a crash, they are only stale entries that the hook's
    /// retention drops.
    async fn unindex_evicted(&self, evicted: &[Evicted]) -> Result<(), StoreError> {
        if evicted.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for e in evicted.iter().filter(|e| !e.uid.is_empty()) {
            pipe.zrem(self.keys.dead_index(&e.uid), &e.index_member).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.context(|| {
            format!(
                "unindexing {} dead letter(s) deleted at their org's budget",
                evicted.len()
            )
        })
    }

    /// Claims up to `max` due tasks (due by Redis's clock) with a lease of
    /// `lease_ms`, at most `capacity(uid)` per hook, each hook within its
    /// limits across replicas (`limit_of(uid)`, [`super::limits`]). Reads
    /// the hooks with something due from `hooks-due` (earliest first,
    /// `due_hooks.lua`), then `claim.lua` on those hooks, whose keys it
    /// declares.
    pub async fn claim(
        &self,
        lease_ms: i64,
        max: usize,
        default_capacity: usize,
        capacities: &HashMap<String, usize>,
        limit_of: impl Fn(&str) -> Option<HookLimit>,
    ) -> Result<Claimed, StoreError> {
        let mut conn = self.conn.clone();
        // Hooks at capacity 0 are skipped by the script; read enough hooks
        // that those cannot hide the rest.
        let hooks: Vec<String> = DUE_HOOKS
            .key(self.keys.hooks_due())
            .arg((max + capacities.len()).min(5000))
            .invoke_async(&mut conn)
            .await
            .context(|| "reading the hooks with due tasks".to_string())?;
        let nothing = |backlog| Claimed {
            backlog,
            ..Claimed::default()
        };
        if hooks.is_empty() {
            return Ok(nothing(false));
        }
        let mut inv = CLAIM.key(self.keys.due());
        inv.key(self.keys.hooks_due()).arg(lease_ms).arg(max);
        let mut any = false;
        for uid in &hooks {
            let cap = capacities.get(uid).copied().unwrap_or(default_capacity);
            if cap == 0 {
                continue;
            }
            any = true;
            let limit = limit_of(uid).unwrap_or_default();
            inv.key(self.keys.hook_due(uid))
                .key(self.keys.hook_waiting(uid))
                .key(self.keys.hook_rate(uid))
                .key(self.keys.hook_in_flight(uid))
                .arg(uid)
                .arg(cap)
                .arg(limit.requests_per_second)
                .arg(limit.burst)
                .arg(limit.max_concurrent);
        }
        if !any {
            return Ok(nothing(true));
        }
        let (lease_until, members, next_token_ms, held_by_rate, held_by_concurrency): (
            i64,
            Vec<String>,
            i64,
            u64,
            u64,
        ) = inv
            .invoke_async(&mut conn)
            .await
            .context(|| "claiming due delivery tasks".to_string())?;
        Ok(Claimed {
            members,
            lease_until,
            backlog: true,
            next_token_in_ms: (next_token_ms > 0).then(|| (next_token_ms - (lease_until - lease_ms)).max(0)),
            held_by_rate,
            held_by_concurrency,
        })
    }

    /// Makes the lease of a claimed task last at least `lease_ms` from now
    /// (Redis's clock). Returns the lease end now held, `None` when the
    /// claim was lost. `extend.lua`.
    pub async fn extend_lease(&self, member: &str, claimed: i64, lease_ms: i64) -> Result<Option<i64>, StoreError> {
        let uid = uid_of_member(member);
        let mut conn = self.conn.clone();
        let done: i64 = EXTEND
            .key(self.keys.due())
            .key(self.keys.hook_due(uid))
            .key(self.keys.hooks_due())
            .key(self.keys.hook_in_flight(uid))
            .arg(member)
            .arg(uid)
            .arg(claimed)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("extending the lease of task {member}"))?;
        Ok((done != 0).then_some(done))
    }

    /// Records an attempt and schedules the next one, if this replica still
    /// holds the claim. `reschedule.lua`.
    pub async fn reschedule(&self, task: &Task, claimed: i64, next: Rescheduled<'_>) -> Result<bool, StoreError> {
        let mut inv = RESCHEDULE.key(self.keys.due());
        inv.key(self.keys.hook_due(&task.uid))
            .key(self.keys.hooks_due())
            .key(self.keys.task(&task.member))
            .key(self.keys.hook_waiting(&task.uid))
            .arg(&task.member)
            .arg(&task.uid)
            .arg(claimed)
            .arg(next.due_in_ms)
            .arg(if next.waiting { "1" } else { "0" });
        for (name, value) in attempt_fields(next.attempts, next.first_attempt_ms, next.last_error) {
            inv.arg(name).arg(value);
        }
        let mut conn = self.conn.clone();
        let done: i64 = inv
            .invoke_async(&mut conn)
            .await
            .context(|| format!("rescheduling task {}", task.member))?;
        Ok(done == 1)
    }

    /// Removes a delivered (or abandoned) task. `finish.lua`.
    pub async fn finish(&self, task: &Task) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = FINISH
            .key(self.keys.due())
            .key(self.keys.hook_due(&task.uid))
            .key(self.keys.hooks_due())
            .key(self.keys.task(&task.member))
            .key(self.keys.hook_tasks(&task.uid))
            .key(self.keys.hook_waiting(&task.uid))
            .key(self.keys.org_bytes())
            .arg(&task.member)
            .arg(&task.uid)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("removing delivered task {}", task.member))?;
        Ok(())
    }

    /// Moves tasks of hook `uid` to the dead-letter stream with `reason`.
    /// Returns how many moved. `dead_letter.lua`.
    pub async fn dead_letter_tasks(
        &self,
        uid: &str,
        members: &[String],
        claim: Claim,
        reason: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut inv = DEAD_LETTER.key(self.keys.due());
        inv.key(self.keys.dead_letter())
            .key(self.keys.hook_due(uid))
            .key(self.keys.hooks_due())
            .key(self.keys.hook_tasks(uid))
            .key(self.keys.hook_waiting(uid))
            .key(self.keys.dead_index(uid))
            .key(self.keys.dead_hooks())
            .key(self.keys.org_bytes())
            .key(self.keys.dead_letters_by_id())
            .key(self.keys.dead_letters_by_org());
        match claim {
            Claim::Held(score) => inv.arg(score),
            Claim::Any => inv.arg(""),
        };
        inv.arg(uid)
            .arg(2)
            .arg(field::REASON)
            .arg(reason)
            .arg(field::FAILED_AT_MS)
            .arg(now_ms)
            .arg(NOT_IN_DEAD_LETTERS.len());
        for name in NOT_IN_DEAD_LETTERS {
            inv.arg(name);
        }
        for m in members {
            inv.key(self.keys.task(m)).arg(m);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .context(|| format!("dead-lettering {} task(s) of hook {uid}", members.len()))
    }

    /// Retention of hook `uid`'s dead letters: deletes those older than
    /// `max_age_ms` (by Redis's clock) and those beyond `max_count`, at
    /// most `budget`; returns
    /// how many index entries it removed and how many dead letters it
    /// deleted. `trim_dead_letters.lua`.
    pub async fn trim_hook_dead_letters(
        &self,
        uid: &str,
        max_age_ms: i64,
        max_count: usize,
        budget: usize,
    ) -> Result<(i64, i64), StoreError> {
        let mut conn = self.conn.clone();
        TRIM_DEAD_LETTERS
            .key(self.keys.dead_letter())
            .key(self.keys.dead_index(uid))
            .key(self.keys.dead_hooks())
            .key(self.keys.org_bytes())
            .key(self.keys.dead_letters_by_id())
            .key(self.keys.dead_letters_by_org())
            .arg(max_age_ms)
            .arg(max_count)
            .arg(budget)
            .arg(uid)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("trimming the dead letters of hook {uid}"))
    }

    /// Deletes the dead letters older than `max_age_ms` by Redis's clock,
    /// at most `budget` accounted ones; returns how many accounted ones and
    /// how many in all. `trim_letters_by_age.lua`.
    pub async fn trim_letters_by_age(&self, max_age_ms: i64, budget: usize) -> Result<(i64, i64), StoreError> {
        let mut conn = self.conn.clone();
        TRIM_LETTERS_BY_AGE
            .key(self.keys.dead_letter())
            .key(self.keys.org_bytes())
            .key(self.keys.dead_letters_by_id())
            .key(self.keys.dead_letters_by_org())
            .arg(max_age_ms)
            .arg(budget)
            .invoke_async(&mut conn)
            .await
            .context(|| "trimming dead letters by age".to_string())
    }

    /// Makes the waiting tasks of hooks `uids` due now (Redis's clock);
    /// returns how many woke. `wake.lua`.
    pub async fn wake(&self, uids: &[String]) -> Result<i64, StoreError> {
        if uids.is_empty() {
            return Ok(0);
        }
        let mut inv = WAKE.key(self.keys.due());
        inv.key(self.keys.hooks_due());
        for uid in uids {
            inv.key(self.keys.hook_due(uid))
                .key(self.keys.hook_waiting(uid))
                .arg(uid);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .context(|| format!("waking the waiting tasks of {} hook(s)", uids.len()))
    }

    /// Stores `task` as a fresh task (due `task.due_in_ms` from now by
    /// Redis's clock; `created_ms` for its `created_ms` field) and deletes
    /// dead letter `letter_id`, in one step, unless the dead letter is gone
    /// or the hook holds a live task for the event. `replay.lua`.
    /// `was_for` is the UID of the hook the dead letter was written for.
    pub async fn replay_as(
        &self,
        letter_id: &str,
        was_for: &str,
        task: &NewTask,
        created_ms: i64,
    ) -> Result<Replayed, StoreError> {
        let member = task_member(&task.uid, &task.event_id);
        let mut inv = REPLAY.key(self.keys.due());
        inv.key(self.keys.dead_letter())
            .key(self.keys.hook_due(&task.uid))
            .key(self.keys.hooks_due())
            .key(self.keys.task(&member))
            .key(self.keys.hook_tasks(&task.uid))
            .key(self.keys.dead_index(was_for))
            .key(self.keys.org_bytes())
            .key(self.keys.dead_letters_by_id())
            .key(self.keys.dead_letters_by_org())
            .arg(letter_id)
            .arg(&member)
            .arg(&task.uid)
            .arg(task.due_in_ms)
            .arg(&task.org);
        let created = created_ms.to_string();
        for (name, value) in stored_pairs(task.values(&created)) {
            inv.arg(name).arg(value);
        }
        let mut conn = self.conn.clone();
        let outcome: i64 = inv
            .invoke_async(&mut conn)
            .await
            .context(|| format!("replaying dead letter {letter_id}"))?;
        Ok(match outcome {
            1 => Replayed::Stored,
            2 => Replayed::TaskHeld,
            _ => Replayed::Gone,
        })
    }
}

/// What a claim got.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    /// The claimed task members.
    pub members: Vec<String>,
    /// Their lease end (Unix ms of Redis's clock): their score while the
    /// claim holds, which later calls compare.
    pub lease_until: i64,
    /// Some hook had due tasks when the claim looked (some may be left for
    /// lack of lane capacity): the claimer then wants waking when a slot
    /// frees.
    pub backlog: bool,
    /// A hook was held back by its rate limit with tasks due: in how many
    /// ms the first such hook gets its next token (by Redis's clock).
    pub next_token_in_ms: Option<i64>,
    /// Hooks held back by their rate limit in this claim.
    pub held_by_rate: u64,
    /// Hooks held back by their `maxConcurrentRequests` in this claim.
    pub held_by_concurrency: u64,
}

/// What [`Store::store_tasks_and_ack`] did.
#[derive(Clone, Debug, Default)]
pub struct Routed {
    /// Redis's time (Unix ms) of the last step.
    pub now_ms: i64,
    /// The tasks not stored as duplicates.
    pub duplicates: Vec<Duplicate>,
    /// The tasks not stored because their org's bytes reached its budget.
    pub refused: Vec<Refused>,
    /// Dead letters deleted to make room at their org's budget.
    pub evicted: Vec<Evicted>,
}

/// A task [`Store::store_tasks_and_ack`] did not store: its org's bytes in
/// Redis, its live tasks alone, leave no room for it ([`ORG_OVER_BUDGET`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The task's index in the tasks given.
    pub index: usize,
    /// Dead-lettered without its body; false: dropped (not even that fit).
    pub dead_lettered: bool,
}

/// A dead letter deleted to make room for a task of its org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    /// Its org.
    pub org: String,
    /// Its hook's UID (empty when unknown).
    pub uid: String,
    /// Its member in the hook's dead-index (the padded stream id).
    pub index_member: String,
}

/// What [`Store::replay_as`] did with a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Stored as a fresh task; the dead letter is deleted.
    Stored,
    /// The dead letter was gone (another replay took it); nothing changed.
    Gone,
    /// The hook holds a live task for the event, which delivers it;
    /// nothing changed, the dead letter stays.
    TaskHeld,
}

/// A task [`Store::store_tasks_and_ack`] did not store: its hook already
/// holds a task for the same event id, stored from another stream entry
/// (docs/src/contract.md#guarantees: the second is dropped and counted `duplicate_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The task's index in the tasks given.
    pub index: usize,
    /// The stream entry id of the task already held.
    pub held_entry_id: String,
}

/// The next attempt of a rescheduled task.
#[derive(Clone, Copy, Debug)]
pub struct Rescheduled<'a> {
    /// Ms from now (Redis's clock) until it comes due.
    pub due_in_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms of the first attempt.
    pub first_attempt_ms: i64,
    /// The last attempt's error (or why it waits).
    pub last_error: &'a str,
    /// It waits for its hook to become deliverable: a change of the hook
    /// wakes it before it is due ([`Store::wake`]).
    pub waiting: bool,
}
