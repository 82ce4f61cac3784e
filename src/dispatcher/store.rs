//! Everything the dispatcher keeps in Redis, behind one type.
//!
//! Keys (all under the prefix, whose hash tag keeps them in one Cluster slot
//! so the Lua scripts may touch them together):
//! - `events`: the stream producers append to, read by the consumer group
//!   [`GROUP`].
//! - `dead-letter`: a stream of deliveries and entries given up on.
//! - `task:{hook uid}:{event id}`: one durable delivery task (a hash).
//! - `due`: sorted set of task members by due time (Unix ms). A claim moves
//!   the score to the end of the lease, so a claimer that dies simply lets
//!   the lease run out and the task comes due again.
//! - `due:{hook uid}`: the same, per hook, and `hooks-due`: each hook by its
//!   earliest due time. Claims walk `hooks-due` and skip a hook at its
//!   concurrency limit in one step, so a slow hook's backlog never hides
//!   other hooks' due tasks.
//! - `hook-tasks:{hook uid}`: the members of one hook's tasks, to dead-letter
//!   them together when the hook is turned off.
//! - `health:{hook uid}`: consecutive failures, last success/failure, the
//!   disable record, when status was last mirrored.

use std::{collections::HashMap, sync::LazyLock};

use redis::{AsyncCommands, Script, Value, aio::ConnectionManager, streams::StreamId};

/// Health of a hook nobody delivered to for this long expires (deleted
/// hooks must not leave keys behind forever).
const HEALTH_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// The consumer group every dispatcher replica joins.
pub const GROUP: &str = "dispatchers";

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StoreError {
    what: String,
    #[source]
    source: redis::RedisError,
}

impl StoreError {
    /// Whether Redis lost the consumer group (e.g. after FLUSHALL).
    pub fn is_no_group(&self) -> bool {
        self.source.code() == Some("NOGROUP") || self.source.to_string().contains("NOGROUP")
    }
}

trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for redis::RedisResult<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError { what: what(), source })
    }
}

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (e.g. `{outbound-webhooks}:`).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The events stream.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// The dead-letter stream.
    pub fn dead_letter(&self) -> String {
        format!("{}dead-letter", self.prefix)
    }
    /// The sorted set of tasks by due time.
    pub fn due(&self) -> String {
        format!("{}due", self.prefix)
    }
    /// One task's hash.
    pub fn task(&self, member: &str) -> String {
        format!("{}task:{member}", self.prefix)
    }
    /// The set of one hook's task members.
    pub fn hook_tasks(&self, uid: &str) -> String {
        format!("{}hook-tasks:{uid}", self.prefix)
    }
    /// One hook's delivery health.
    pub fn health(&self, uid: &str) -> String {
        format!("{}health:{uid}", self.prefix)
    }
}

/// The member naming a task in `due` and `hook-tasks`: `{hook uid}:{event id}`.
pub fn task_member(uid: &str, event_id: &str) -> String {
    format!("{uid}:{event_id}")
}

/// A new task to store for one matching hook.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// The hook's `namespace/name`.
    pub hook: String,
    /// The hook's UID.
    pub uid: String,
    /// The event id.
    pub event_id: String,
    /// The event name.
    pub event: String,
    /// The org.
    pub org: String,
    /// The envelope bytes (shared, not copied, between an event's hooks).
    pub body: bytes::Bytes,
    /// When it comes due (Unix ms); `None`: at once. A task stored by the
    /// attempt that is running it is due at that attempt's lease end.
    pub due_ms: Option<i64>,
}

/// A stored task as read back.
#[derive(Clone, Debug, Default)]
pub struct Task {
    /// `{uid}:{event id}`.
    pub member: String,
    /// The hook's `namespace/name`.
    pub hook: String,
    /// The hook's UID.
    pub uid: String,
    /// The event id.
    pub event_id: String,
    /// The event name.
    pub event: String,
    /// The org.
    pub org: String,
    /// The envelope bytes.
    pub body: bytes::Bytes,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms of the first attempt (0 before it).
    pub first_attempt_ms: i64,
    /// Unix ms the task was stored.
    pub created_ms: i64,
}

/// Health figures of one hook as kept in Redis.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Failed requests in a row.
    pub consecutive_failures: i64,
    /// Unix ms of the first failure of the current run of failures.
    pub first_failure_ms: Option<i64>,
    /// Unix ms of the last success.
    pub last_success_ms: Option<i64>,
    /// Unix ms of the last failure.
    pub last_failure_ms: Option<i64>,
    /// HTTP status of the last failure.
    pub last_status: Option<i32>,
    /// Message of the last failure.
    pub last_message: Option<String>,
    /// The disable record as JSON, if the dispatcher turned the hook off.
    pub disabled: Option<String>,
    /// Unix ms status was last mirrored.
    pub mirrored_ms: Option<i64>,
}

/// Queue sizes, for the gauges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// Entries in the events stream.
    pub stream_length: i64,
    /// Entries read by the group and not acknowledged.
    pub pending: i64,
    /// Entries not yet read by the group.
    pub lag: i64,
    /// Tasks in `due` (waiting, retrying or leased).
    pub tasks_scheduled: i64,
    /// Entries in the dead-letter stream.
    pub dead_letters: i64,
}

/// A dead letter as read back for `dead-letter list|replay`.
#[derive(Clone, Debug, Default)]
pub struct DeadLetter {
    /// Stream entry id in the dead-letter stream.
    pub id: String,
    /// All fields.
    pub fields: HashMap<String, Vec<u8>>,
}

impl DeadLetter {
    /// A field as text (lossy), empty when absent.
    pub fn text(&self, field: &str) -> String {
        self.fields
            .get(field)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

/// Lua shared by the scripts that keep `due`, `due:{uid}` and `hooks-due`
/// in step; prepended to each of them (KEYS[1] is always `due`).
const DUE_PRELUDE: &str = r#"
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - 3)
local function uid_of(m) return string.match(m, '^([^:]+):') or m end
-- due:{uid} mirrors `due` per hook; hooks-due holds each hook's earliest score
local function set_due(uid, m, score)
  redis.call('ZADD', KEYS[1], score, m)
  redis.call('ZADD', prefix .. 'due:' .. uid, score, m)
end
local function unset_due(uid, m)
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', prefix .. 'due:' .. uid, m)
end
local function reindex(uid)
  local first = redis.call('ZRANGE', prefix .. 'due:' .. uid, 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', prefix .. 'hooks-due', first[2], uid)
  else redis.call('ZREM', prefix .. 'hooks-due', uid) end
end
"#;

const ROUTE_SCRIPT: &str = r#"
-- KEYS: events, due; ARGV: group, now, prefix, entry count E, E entry ids,
-- then 8 per task: member, hook, uid, event id, event, org, body, due.
-- Stores the tasks not stored yet, then acknowledges the entries.
local due_key = KEYS[2]
local prefix = ARGV[3]
local function reindex(uid)
  local first = redis.call('ZRANGE', prefix .. 'due:' .. uid, 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', prefix .. 'hooks-due', first[2], uid)
  else redis.call('ZREM', prefix .. 'hooks-due', uid) end
end
local ne = tonumber(ARGV[4])
local b0 = 4 + ne
local n = (#ARGV - b0) / 8
for i = 0, n - 1 do
  local b = b0 + i * 8
  local member = ARGV[b + 1]
  local tk = prefix .. 'task:' .. member
  if redis.call('EXISTS', tk) == 0 then
    redis.call('HSET', tk, 'hook', ARGV[b + 2], 'uid', ARGV[b + 3], 'event_id', ARGV[b + 4],
      'event', ARGV[b + 5], 'org', ARGV[b + 6], 'body', ARGV[b + 7],
      'attempts', 0, 'first_attempt_ms', 0, 'created_ms', ARGV[2])
    redis.call('ZADD', due_key, ARGV[b + 8], member)
    redis.call('ZADD', prefix .. 'due:' .. ARGV[b + 3], ARGV[b + 8], member)
    reindex(ARGV[b + 3])
    redis.call('SADD', prefix .. 'hook-tasks:' .. ARGV[b + 3], member)
  end
end
if ne > 0 then return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + ne)) end
return 0
"#;

const CLAIM_SCRIPT: &str = r#"
-- KEYS: due; ARGV: now, lease ms, max, default per-hook capacity, then uid/capacity pairs
-- Walks the hooks that have something due (hooks-due, by earliest due time)
-- and takes from each hook's own due set only what its capacity allows, so a
-- hook at its limit with a long backlog costs one skip, never a scan of its
-- backlog: a slow hook holds back only its own tasks.
local now = tonumber(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local default_cap = tonumber(ARGV[4])
local caps = {}
for i = 5, #ARGV, 2 do caps[ARGV[i]] = tonumber(ARGV[i + 1]) end
local out = {}
local hooks = redis.call('ZRANGEBYSCORE', prefix .. 'hooks-due', '-inf', now, 'LIMIT', 0, 5000)
for _, uid in ipairs(hooks) do
  if #out >= max then break end
  local cap = caps[uid] or default_cap
  if cap > 0 then
    local take = math.min(cap, max - #out)
    local due = redis.call('ZRANGEBYSCORE', prefix .. 'due:' .. uid, '-inf', now, 'LIMIT', 0, take)
    for _, m in ipairs(due) do
      set_due(uid, m, lease_until)
      table.insert(out, m)
    end
    reindex(uid)
  end
end
return out
"#;

const EXTEND_SCRIPT: &str = r#"
-- KEYS: due; ARGV: member, claimed score, new score
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') == tonumber(ARGV[2]) then
  local uid = uid_of(ARGV[1])
  set_due(uid, ARGV[1], ARGV[3])
  reindex(uid)
  return 1
end
return 0
"#;

const RESCHEDULE_SCRIPT: &str = r#"
-- KEYS: due; ARGV: prefix, member, claimed score, next due, attempts, first attempt ms, last error
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or '-1') ~= tonumber(ARGV[3]) then return 0 end
local uid = uid_of(ARGV[2])
local tk = ARGV[1] .. 'task:' .. ARGV[2]
if redis.call('EXISTS', tk) == 0 then unset_due(uid, ARGV[2]) reindex(uid) return 0 end
redis.call('HSET', tk, 'attempts', ARGV[5], 'first_attempt_ms', ARGV[6], 'last_error', ARGV[7])
set_due(uid, ARGV[2], ARGV[4])
reindex(uid)
return 1
"#;

const FINISH_SCRIPT: &str = r#"
-- KEYS: due; ARGV: prefix, member, uid
redis.call('DEL', ARGV[1] .. 'task:' .. ARGV[2])
unset_due(uid_of(ARGV[2]), ARGV[2])
reindex(uid_of(ARGV[2]))
redis.call('SREM', ARGV[1] .. 'hook-tasks:' .. ARGV[3], ARGV[2])
return 1
"#;

const DEAD_LETTER_SCRIPT: &str = r#"
-- KEYS: due, dead-letter; ARGV: prefix, claimed score ('' = any), reason, now, uid, members...
local moved = 0
for i = 6, #ARGV do
  local m = ARGV[i]
  local ok = true
  if ARGV[2] ~= '' then
    ok = tonumber(redis.call('ZSCORE', KEYS[1], m) or '-1') == tonumber(ARGV[2])
  end
  local tk = ARGV[1] .. 'task:' .. m
  if ok and redis.call('EXISTS', tk) == 1 then
    local f = redis.call('HGETALL', tk)
    local args = {'reason', ARGV[3], 'failed_at_ms', ARGV[4]}
    for j = 1, #f, 2 do
      if f[j] ~= 'first_attempt_ms' and f[j] ~= 'created_ms' then
        table.insert(args, f[j]); table.insert(args, f[j + 1])
      end
    end
    redis.call('XADD', KEYS[2], '*', unpack(args))
    redis.call('DEL', tk)
    moved = moved + 1
  end
  if ok then
    unset_due(uid_of(m), m)
    reindex(uid_of(m))
    redis.call('SREM', ARGV[1] .. 'hook-tasks:' .. ARGV[5], m)
  end
end
return moved
"#;

const REPLAY_SCRIPT: &str = r#"
-- KEYS: due, dead-letter; ARGV: prefix, dead letter id, now, member, hook, uid, event id, event, org, body
local tk = ARGV[1] .. 'task:' .. ARGV[4]
redis.call('HSET', tk, 'hook', ARGV[5], 'uid', ARGV[6], 'event_id', ARGV[7], 'event', ARGV[8],
  'org', ARGV[9], 'body', ARGV[10], 'attempts', 0, 'first_attempt_ms', 0, 'created_ms', ARGV[3])
set_due(ARGV[6], ARGV[4], ARGV[3])
reindex(ARGV[6])
redis.call('SADD', ARGV[1] .. 'hook-tasks:' .. ARGV[6], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
"#;

/// The dispatcher's Redis state, over a reconnecting connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    // Blocking XREADGROUP gets its own connection: on a shared multiplexed
    // connection it would hold up every other command for the block time.
    blocking: ConnectionManager,
    keys: Keys,
}

fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

// Each script is hashed (SHA-1) once per process, not once per call: the
// hashing showed up as ~10% of the dispatcher's instructions per delivery.
static ROUTE: LazyLock<Script> = LazyLock::new(|| Script::new(ROUTE_SCRIPT));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{CLAIM_SCRIPT}")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{EXTEND_SCRIPT}")));
static RESCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{RESCHEDULE_SCRIPT}")));
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{FINISH_SCRIPT}")));
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{DEAD_LETTER_SCRIPT}")));
static REPLAY: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{DUE_PRELUDE}{REPLAY_SCRIPT}")));

/// Converts a stream entry's fields to bytes.
pub fn entry_fields(entry: &StreamId) -> HashMap<String, Vec<u8>> {
    entry.map.iter().map(|(k, v)| (k.clone(), bytes_of(v))).collect()
}

/// A stream entry as read: its id and fields (none when it was trimmed).
#[derive(Clone, Debug, Default)]
pub struct RawEntry {
    /// The stream entry id.
    pub id: String,
    /// Field name -> bytes.
    pub fields: HashMap<String, Vec<u8>>,
}

impl From<StreamId> for RawEntry {
    fn from(entry: StreamId) -> Self {
        let fields = entry.map.into_iter().map(|(k, v)| (k, owned_bytes(v))).collect();
        RawEntry { id: entry.id, fields }
    }
}

fn owned_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b,
        other => bytes_of(&other),
    }
}

fn owned_text(value: Value) -> String {
    String::from_utf8(owned_bytes(value)).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Collects the entries of an XREADGROUP reply (RESP2 arrays or a RESP3 map
/// of stream -> entries), taking the reply apart without copying it.
pub fn read_reply_entries(reply: Value, out: &mut Vec<RawEntry>) {
    let entry_lists: Vec<Value> = match reply {
        // RESP2: [[name, entries], ...]
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        // RESP3: {name: entries, ...}
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        _ => return,
    };
    for entries in entry_lists {
        let Value::Array(entries) = entries else { continue };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            let Some(id) = parts.next() else { continue };
            let mut fields = HashMap::new();
            match parts.next() {
                Some(Value::Array(kv)) => {
                    let mut kv = kv.into_iter();
                    while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                        fields.insert(owned_text(k), owned_bytes(v));
                    }
                }
                Some(Value::Map(kv)) => {
                    for (k, v) in kv {
                        fields.insert(owned_text(k), owned_bytes(v));
                    }
                }
                _ => {}
            }
            out.push(RawEntry {
                id: owned_text(id),
                fields,
            });
        }
    }
}

impl Store {
    /// Connects to `url`; the connection reconnects by itself after Redis restarts.
    pub async fn connect(url: &str, prefix: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).context(|| format!("parsing the Redis URL {}", redact(url)))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(10)))
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(std::time::Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .context(|| format!("connecting to Redis at {}", redact(url)))?;
        let blocking = ConnectionManager::new_with_config(client, config)
            .await
            .context(|| format!("connecting to Redis at {}", redact(url)))?;
        Ok(Store {
            conn,
            blocking,
            keys: Keys::new(prefix),
        })
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Creates the consumer group (from `0`, with the stream) unless it exists.
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.events())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e).context(|| format!("creating consumer group {GROUP} on {}", self.keys.events())),
        }
    }

    /// Reads entries for `consumer`: new ones (`>`) or its own pending ones (`0`).
    pub async fn read_entries(
        &self,
        consumer: &str,
        from: &str,
        count: usize,
        block_ms: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let mut conn = self.blocking.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(count);
        if from == ">" {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS").arg(self.keys.events()).arg(from);
        // Taken apart by hand: redis-rs's StreamReadReply deep-copies the
        // whole reply before converting it, every field of every entry.
        let reply: Value = cmd
            .query_async(&mut conn)
            .await
            .context(|| format!("reading {} as consumer {consumer}", self.keys.events()))?;
        let mut out = Vec::new();
        read_reply_entries(reply, &mut out);
        Ok(out)
    }

    /// Claims entries pending longer than `min_idle_ms` on any consumer
    /// (e.g. a replica that died); acknowledges ones trimmed meanwhile.
    pub async fn autoclaim(&self, consumer: &str, min_idle_ms: u64) -> Result<Vec<RawEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let mut start = "0-0".to_string();
        let mut out = Vec::new();
        for _ in 0..10 {
            let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(self.keys.events())
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&start)
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await
                .context(|| format!("reclaiming idle entries of {}", self.keys.events()))?;
            if !reply.deleted_ids.is_empty() {
                let _: i64 = conn
                    .xack(self.keys.events(), GROUP, &reply.deleted_ids)
                    .await
                    .context(|| "acknowledging trimmed entries".to_string())?;
            }
            out.extend(reply.claimed.into_iter().map(RawEntry::from));
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        Ok(out)
    }

    /// Stores the tasks not stored yet and acknowledges `entry_ids`, in
    /// one atomic step (either may be empty).
    pub async fn store_tasks_and_ack(
        &self,
        entry_ids: &[String],
        tasks: &[NewTask],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if entry_ids.is_empty() && tasks.is_empty() {
            return Ok(());
        }
        let script: &Script = &ROUTE;
        let mut inv = script.key(self.keys.events());
        inv.key(self.keys.due())
            .arg(GROUP)
            .arg(now_ms)
            .arg(self.keys.prefix())
            .arg(entry_ids.len());
        for id in entry_ids {
            inv.arg(id);
        }
        for t in tasks {
            inv.arg(task_member(&t.uid, &t.event_id))
                .arg(&t.hook)
                .arg(&t.uid)
                .arg(&t.event_id)
                .arg(&t.event)
                .arg(&t.org)
                .arg(&t.body[..])
                .arg(t.due_ms.unwrap_or(now_ms));
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.context(|| {
            format!(
                "storing {} delivery task(s) and acknowledging {} entries",
                tasks.len(),
                entry_ids.len()
            )
        })?;
        Ok(())
    }

    /// Claims `ids` for `consumer` again, resetting their idle time (they
    /// are still being worked on here).
    pub async fn touch_entries(&self, consumer: &str, ids: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(self.keys.events()).arg(GROUP).arg(consumer).arg(0);
        for id in ids {
            cmd.arg(id);
        }
        cmd.arg("JUSTID");
        let _: Vec<String> = cmd
            .query_async(&mut conn)
            .await
            .context(|| format!("renewing {} held entries", ids.len()))?;
        Ok(())
    }

    /// Dead-letters a malformed entry and acknowledges it, atomically.
    pub async fn dead_letter_entry(
        &self,
        entry_id: &str,
        fields: &HashMap<String, Vec<u8>>,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut items: Vec<(String, Vec<u8>)> = vec![
            ("reason".into(), reason.as_bytes().to_vec()),
            ("entry_id".into(), entry_id.as_bytes().to_vec()),
            ("failed_at_ms".into(), now_ms.to_string().into_bytes()),
        ];
        for (k, v) in fields {
            // Keep the original fields under their own names, prefixed so they
            // cannot collide with ours; cap their size so a 1 MiB+ entry is not copied.
            let mut v = v.clone();
            v.truncate(64 * 1024);
            items.push((format!("entry.{k}"), v));
        }
        pipe.xadd(self.keys.dead_letter(), "*", &items).ignore();
        pipe.xack(self.keys.events(), GROUP, &[entry_id]).ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .context(|| format!("dead-lettering malformed entry {entry_id}"))
    }

    /// Claims up to `max` due tasks with a lease ending at `now + lease_ms`,
    /// at most `capacity(uid)` per hook. Returns the members and the lease end.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        max: usize,
        default_capacity: usize,
        capacities: &HashMap<String, usize>,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let script: &Script = &CLAIM;
        let mut inv = script.key(self.keys.due());
        inv.arg(now_ms).arg(lease_ms).arg(max).arg(default_capacity);
        for (uid, cap) in capacities {
            inv.arg(uid).arg(*cap);
        }
        let mut conn = self.conn.clone();
        let members: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .context(|| "claiming due delivery tasks".to_string())?;
        Ok((members, now_ms + lease_ms))
    }

    /// Moves the lease end of a claimed task; false when the claim was lost.
    pub async fn extend_lease(&self, member: &str, claimed: i64, until: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = EXTEND
            .key(self.keys.due())
            .arg(member)
            .arg(claimed)
            .arg(until)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("extending the lease of task {member}"))?;
        Ok(done == 1)
    }

    /// Reads a task; `None` when it no longer exists.
    pub async fn load_task(&self, member: &str) -> Result<Option<Task>, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn
            .hgetall(self.keys.task(member))
            .await
            .context(|| format!("reading task {member}"))?;
        if map.is_empty() {
            return Ok(None);
        }
        let text = |k: &str| {
            map.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        Ok(Some(Task {
            member: member.to_string(),
            hook: text("hook"),
            uid: text("uid"),
            event_id: text("event_id"),
            event: text("event"),
            org: text("org"),
            body: bytes::Bytes::from(map.get("body").cloned().unwrap_or_default()),
            attempts: text("attempts").parse().unwrap_or(0),
            first_attempt_ms: text("first_attempt_ms").parse().unwrap_or(0),
            created_ms: text("created_ms").parse().unwrap_or(0),
        }))
    }

    /// Drops a member whose task hash is gone.
    pub async fn forget_member(&self, member: &str) -> Result<(), StoreError> {
        // A stale `hooks-due` entry left behind heals at the next claim.
        let uid = member.split(':').next().unwrap_or(member);
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .zrem(self.keys.due(), member)
            .ignore()
            .zrem(format!("{}due:{uid}", self.keys.prefix()), member)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("removing task {member}"))?;
        Ok(())
    }

    /// Schedules the next attempt, if this replica still holds the claim.
    #[allow(clippy::too_many_arguments)]
    pub async fn reschedule(
        &self,
        task: &Task,
        claimed: i64,
        next_due_ms: i64,
        attempts: u32,
        first_attempt_ms: i64,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = RESCHEDULE
            .key(self.keys.due())
            .arg(self.keys.prefix())
            .arg(&task.member)
            .arg(claimed)
            .arg(next_due_ms)
            .arg(attempts)
            .arg(first_attempt_ms)
            .arg(last_error)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("rescheduling task {}", task.member))?;
        Ok(done == 1)
    }

    /// Removes a delivered (or abandoned) task.
    pub async fn finish(&self, task: &Task) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = FINISH
            .key(self.keys.due())
            .arg(self.keys.prefix())
            .arg(&task.member)
            .arg(&task.uid)
            .invoke_async(&mut conn)
            .await
            .context(|| format!("removing delivered task {}", task.member))?;
        Ok(())
    }

    /// Moves tasks to the dead-letter stream with `reason`. With `claimed`,
    /// only while this replica still holds that claim. Returns how many moved.
    pub async fn dead_letter_tasks(
        &self,
        uid: &str,
        members: &[String],
        claimed: Option<i64>,
        reason: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let script: &Script = &DEAD_LETTER;
        let mut inv = script.key(self.keys.due());
        inv.key(self.keys.dead_letter())
            .arg(self.keys.prefix())
            .arg(claimed.map(|c| c.to_string()).unwrap_or_default())
            .arg(reason)
            .arg(now_ms)
            .arg(uid);
        for m in members {
            inv.arg(m);
        }
        inv.invoke_async(&mut conn)
            .await
            .context(|| format!("dead-lettering {} task(s) of hook {uid}", members.len()))
    }

    /// Every pending task member of one hook.
    pub async fn hook_task_members(&self, uid: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.keys.hook_tasks(uid))
            .await
            .context(|| format!("listing tasks of hook {uid}"))
    }

    /// Records successful requests of several hooks (UID, Unix ms) in one
    /// round trip; returns, per hook, the failures in a row before it.
    pub async fn record_successes(&self, successes: &[(String, i64)]) -> Result<Vec<i64>, StoreError> {
        if successes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (uid, at_ms) in successes {
            let key = self.keys.health(uid);
            pipe.hget(&key, "consecutive_failures")
                .hset_multiple(&key, &[("consecutive_failures", 0), ("last_success_ms", *at_ms)])
                .ignore()
                .hdel(&key, "first_failure_ms")
                .ignore()
                .expire(&key, HEALTH_TTL_SECONDS)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let previous: Vec<Option<i64>> = pipe
            .query_async(&mut conn)
            .await
            .context(|| format!("recording successes of {} hook(s)", successes.len()))?;
        Ok(previous.into_iter().map(|p| p.unwrap_or(0)).collect())
    }

    /// Records a failed request; returns the failures in a row including it.
    pub async fn record_failure(
        &self,
        uid: &str,
        now_ms: i64,
        status: Option<u16>,
        message: &str,
    ) -> Result<i64, StoreError> {
        let key = self.keys.health(uid);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hincr(&key, "consecutive_failures", 1)
            .hset_multiple(
                &key,
                &[
                    ("last_failure_ms", now_ms.to_string()),
                    ("last_status", status.map(|s| s.to_string()).unwrap_or_default()),
                    ("last_message", message.to_string()),
                ],
            )
            .ignore()
            .expire(&key, HEALTH_TTL_SECONDS)
            .ignore();
        let (count,): (i64,) = pipe
            .query_async(&mut conn)
            .await
            .context(|| format!("recording a failure of hook {uid}"))?;
        if count == 1 {
            let _: i64 = conn
                .hset(&key, "first_failure_ms", now_ms)
                .await
                .context(|| format!("recording the first failure of hook {uid}"))?;
        }
        Ok(count)
    }

    /// Stores (or with `None` clears) the disable record JSON of a hook.
    pub async fn set_disable_record(&self, uid: &str, record: Option<&str>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.health(uid);
        let result: redis::RedisResult<i64> = match record {
            Some(json) => conn.hset(&key, "disabled", json).await,
            None => conn.hdel(&key, "disabled").await,
        };
        result.context(|| format!("storing the disable record of hook {uid}"))?;
        Ok(())
    }

    /// Notes that status was mirrored at `now_ms`.
    pub async fn set_mirrored(&self, uid: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .hset(self.keys.health(uid), "mirrored_ms", now_ms)
            .await
            .context(|| format!("noting the status mirror of hook {uid}"))?;
        Ok(())
    }

    /// Reads one hook's health.
    pub async fn health(&self, uid: &str) -> Result<Health, StoreError> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = conn
            .hgetall(self.keys.health(uid))
            .await
            .context(|| format!("reading the health of hook {uid}"))?;
        let int = |k: &str| map.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok(Health {
            consecutive_failures: int("consecutive_failures").unwrap_or(0),
            first_failure_ms: int("first_failure_ms"),
            last_success_ms: int("last_success_ms"),
            last_failure_ms: int("last_failure_ms"),
            last_status: int("last_status").map(|s| s as i32),
            last_message: map.get("last_message").cloned(),
            disabled: map.get("disabled").cloned(),
            mirrored_ms: int("mirrored_ms"),
        })
    }

    /// Reads dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_all(self.keys.dead_letter())
            .await
            .context(|| format!("reading {}", self.keys.dead_letter()))?;
        Ok(reply
            .ids
            .iter()
            .map(|e| DeadLetter {
                id: e.id.clone(),
                fields: entry_fields(e),
            })
            .collect())
    }

    /// Puts a dead-lettered delivery back as a fresh task (attempt 1 now).
    pub async fn replay(&self, letter: &DeadLetter, now_ms: i64) -> Result<(), StoreError> {
        let uid = letter.text("uid");
        let event_id = letter.text("event_id");
        let mut conn = self.conn.clone();
        let _: i64 = REPLAY
            .key(self.keys.due())
            .key(self.keys.dead_letter())
            .arg(self.keys.prefix())
            .arg(&letter.id)
            .arg(now_ms)
            .arg(task_member(&uid, &event_id))
            .arg(letter.text("hook"))
            .arg(&uid)
            .arg(&event_id)
            .arg(letter.text("event"))
            .arg(letter.text("org"))
            .arg(letter.fields.get("body").cloned().unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .context(|| format!("replaying dead letter {}", letter.id))?;
        Ok(())
    }

    /// Trims the events stream below its oldest unacknowledged entry.
    /// Returns how many entries were removed.
    pub async fn trim_events(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let events = self.keys.events();
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = conn.xinfo_groups(&events).await;
        let Ok(groups) = groups else {
            return Ok(0); // no stream yet
        };
        let Some(group) = groups.groups.iter().find(|g| g.name == GROUP) else {
            return Ok(0);
        };
        if groups.groups.len() > 1 {
            // Another group (not ours) may still need older entries.
            return Ok(0);
        }
        let pending: redis::streams::StreamPendingReply = conn
            .xpending(&events, GROUP)
            .await
            .context(|| format!("reading pending entries of {events}"))?;
        let threshold = match pending {
            redis::streams::StreamPendingReply::Data(d) => d.start_id,
            _ => group.last_delivered_id.clone(),
        };
        if threshold == "0-0" {
            return Ok(0);
        }
        // In steps of at most TRIM_STEP entries (whole stream nodes), so
        // Redis frees a backlog's memory a little at a time between other
        // clients' commands instead of stalling them all at once; then one
        // exact trim of what is left in the first node.
        const TRIM_STEP: usize = 1000;
        let mut removed = 0;
        for _ in 0..100_000 {
            let n: i64 = redis::cmd("XTRIM")
                .arg(&events)
                .arg("MINID")
                .arg("~")
                .arg(&threshold)
                .arg("LIMIT")
                .arg(TRIM_STEP)
                .query_async(&mut conn)
                .await
                .context(|| format!("trimming {events} below {threshold}"))?;
            removed += n;
            if n == 0 {
                break;
            }
        }
        let n: i64 = redis::cmd("XTRIM")
            .arg(&events)
            .arg("MINID")
            .arg(&threshold)
            .query_async(&mut conn)
            .await
            .context(|| format!("trimming {events} below {threshold}"))?;
        Ok(removed + n)
    }

    /// Keeps dead letters younger than `max_age_ms` and at most `max_count`.
    pub async fn trim_dead_letters(&self, now_ms: i64, max_age_ms: i64, max_count: usize) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.dead_letter();
        let min_id = format!("{}-0", (now_ms - max_age_ms).max(0));
        redis::pipe()
            .cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(&min_id)
            .ignore()
            .cmd("XTRIM")
            .arg(&key)
            .arg("MAXLEN")
            .arg(max_count)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .context(|| format!("trimming {key}"))
    }

    /// Removes consumers other than `me` that hold nothing and were idle
    /// longer than `idle_ms`. Returns their names.
    pub async fn remove_idle_consumers(&self, me: &str, idle_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let events = self.keys.events();
        let reply: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
            conn.xinfo_consumers(&events, GROUP).await;
        let Ok(reply) = reply else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for c in reply.consumers {
            if c.name != me && c.pending == 0 && c.idle as u64 > idle_ms {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&events)
                    .arg(GROUP)
                    .arg(&c.name)
                    .query_async(&mut conn)
                    .await
                    .context(|| format!("removing idle consumer {}", c.name))?;
                removed.push(c.name);
            }
        }
        Ok(removed)
    }

    /// Queue sizes for the gauges.
    pub async fn sizes(&self) -> Result<Sizes, StoreError> {
        let mut conn = self.conn.clone();
        let (stream_length, tasks_scheduled, dead_letters): (i64, i64, i64) = redis::pipe()
            .xlen(self.keys.events())
            .zcard(self.keys.due())
            .xlen(self.keys.dead_letter())
            .query_async(&mut conn)
            .await
            .context(|| "reading queue sizes".to_string())?;
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
            conn.xinfo_groups(self.keys.events()).await;
        let group = groups.ok().and_then(|g| g.groups.into_iter().find(|g| g.name == GROUP));
        Ok(Sizes {
            stream_length,
            pending: group.as_ref().map(|g| g.pending as i64).unwrap_or(0),
            lag: group.and_then(|g| g.lag).map(|l| l as i64).unwrap_or(0),
            tasks_scheduled,
            dead_letters,
        })
    }

    /// Redis's `maxmemory-policy`, when the server lets us read it.
    pub async fn maxmemory_policy(&self) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let pairs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await
            .context(|| "reading maxmemory-policy".to_string())?;
        Ok(pairs.get(1).cloned().unwrap_or_default())
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xreadgroup_replies_are_taken_apart_in_both_protocols() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("org"), bulk("acme"), bulk("data"), bulk("{}")]),
            ]),
            // An entry trimmed while pending: no fields.
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("events"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("events"), entries)]);
        for reply in [resp2, resp3] {
            let mut out = Vec::new();
            read_reply_entries(reply, &mut out);
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].id, "1-0");
            assert_eq!(out[0].fields.get("org").map(Vec::as_slice), Some(&b"acme"[..]));
            assert_eq!(out[0].fields.get("data").map(Vec::as_slice), Some(&b"{}"[..]));
            assert_eq!(out[1].id, "2-0");
            assert!(out[1].fields.is_empty());
        }
        let mut out = Vec::new();
        read_reply_entries(Value::Nil, &mut out);
        assert!(out.is_empty());
    }
}
