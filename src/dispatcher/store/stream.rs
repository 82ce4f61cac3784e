//! The events stream as the consumer group sees it: reading (new and own
//! pending entries), reclaiming a dead consumer's entries, renewing held
//! ones, and dead-lettering a malformed entry.

use std::collections::HashMap;

use redis::{AsyncCommands, Value, streams::StreamId};

use super::{Context, GROUP, Store, StoreError, task::field};

/// The retention bucket of malformed entries (they belong to no hook).
pub const MALFORMED: &str = "malformed";

/// The code of an entry dead-lettered on another shard than its org's,
/// and how its reason starts.
pub const WRONG_SHARD: &str = "wrong_shard";

/// Most bytes of each field of a malformed entry kept in its dead letter,
/// so that a 1 MiB+ entry is not copied.
pub const MALFORMED_FIELD_CAP: usize = 64 * 1024;

fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// Converts a stream entry's fields to bytes.
pub fn entry_fields(entry: &StreamId) -> HashMap<String, Vec<u8>> {
    entry.map.iter().map(|(k, v)| (k.clone(), bytes_of(v))).collect()
}

impl RawEntry {
    /// Its size: field names and values.
    pub fn size(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
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

    /// Reads entries for `consumer`: new ones (`>`) or its own pending ones
    /// (`0`). `None` when Sentinel named another primary during a blocking
    /// read, which was abandoned
    /// ([`crate::redis_conn::RedisConn::query_blocking`]).
    pub async fn read_entries(
        &self,
        consumer: &str,
        from: &str,
        count: usize,
        block_ms: usize,
    ) -> Result<Option<Vec<RawEntry>>, StoreError> {
        let mut conn = self.blocking.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(count);
        if from == ">" {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS").arg(self.keys.events()).arg(from);
        // Taken apart by hand: redis-rs's StreamReadReply deep-copies the
        // whole reply before converting it, every field of every entry.
        let reply = conn
            .query_blocking(&cmd)
            .await
            .context(|| format!("reading {} as consumer {consumer}", self.keys.events()))?;
        Ok(reply.map(|reply| {
            let mut out = Vec::new();
            read_reply_entries(reply, &mut out);
            out
        }))
    }

    /// Claims entries pending longer than `min_idle_ms` on any consumer
    /// (e.g. a replica that died); acknowledges ones trimmed meanwhile.
    ///
    /// One batch of at most `count` entries from cursor `start` (`0-0` to
    /// begin); returns them and the cursor to go on from (`0-0` when the
    /// walk is done), so a caller bounds what it holds in memory.
    pub async fn autoclaim(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        start: &str,
        count: usize,
    ) -> Result<(Vec<RawEntry>, String), StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.events())
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(start)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await
            .context(|| format!("reclaiming idle entries of {}", self.keys.events()))?;
        if !reply.deleted_ids.is_empty() {
            let _: i64 = conn
                .xack(self.keys.events(), GROUP, &reply.deleted_ids)
                .await
                .context(|| "acknowledging trimmed entries".to_string())?;
        }
        let entries = reply.claimed.into_iter().map(RawEntry::from).collect();
        Ok((entries, reply.next_stream_id))
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

    /// Dead-letters an entry no hook takes and acknowledges it, atomically,
    /// keeping each of its fields up to `field_cap` bytes.
    pub async fn dead_letter_entry(
        &self,
        entry_id: &str,
        fields: &HashMap<String, Vec<u8>>,
        reason: &str,
        field_cap: usize,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut items: Vec<(String, Vec<u8>)> = vec![
            (field::REASON.into(), reason.as_bytes().to_vec()),
            (field::ENTRY_ID.into(), entry_id.as_bytes().to_vec()),
            (field::FAILED_AT_MS.into(), now_ms.to_string().into_bytes()),
        ];
        for (k, v) in fields {
            // Keep the original fields under their own names, prefixed so they
            // cannot collide with ours.
            let mut v = v.clone();
            v.truncate(field_cap);
            items.push((format!("{}{k}", field::ENTRY_PREFIX), v));
        }
        pipe.xadd(self.keys.dead_letter(), "*", &items);
        pipe.xack(self.keys.events(), GROUP, &[entry_id]).ignore();
        let mut conn = self.conn.clone();
        let (letter_id,): (String,) = pipe
            .query_async(&mut conn)
            .await
            .context(|| format!("dead-lettering malformed entry {entry_id}"))?;
        // Indexed for retention like a hook's (a crash before this leaves
        // it to the age bound alone).
        let (member, ms) = dead_index_member(&letter_id);
        let _: () = redis::pipe()
            .zadd(self.keys.dead_index(MALFORMED), member, ms.unwrap_or(now_ms))
            .ignore()
            .sadd(self.keys.dead_hooks(), MALFORMED)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("indexing dead letter {letter_id}"))?;
        Ok(())
    }
}

/// A dead letter's member in a dead-letter index (its stream id
/// zero-padded, so ids of one millisecond sort by sequence, as
/// `index_member` in `due_prelude.lua` writes it), and its millisecond.
pub(super) fn dead_index_member(letter_id: &str) -> (String, Option<i64>) {
    let (ms, seq) = letter_id.split_once('-').unwrap_or((letter_id, "0"));
    let member = format!(
        "{:016}-{:016}",
        ms.parse::<u64>().unwrap_or(0),
        seq.parse::<u64>().unwrap_or(0)
    );
    (member, ms.parse().ok())
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
