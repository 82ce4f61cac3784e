//! The attempts log of each hook (`attempts:{uid}`): a list of compact JSON
//! records, newest first, capped at `--attempts-log-size`. Written in the
//! acker's success pipeline ([`Store::record_successes`]), read by
//! `outbound-webhooks attempts`.

use std::collections::HashMap;

use super::{Context, Keys, Store, StoreError};
use crate::dispatcher::attempt::attempts_log::AttemptRecord;

/// The log of a hook nobody attempted for this long expires (deleted hooks
/// must not leave keys behind forever).
const ATTEMPTS_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// Attempt records to add, per hook UID (oldest first), and how many each
/// hook keeps (0: none are written).
#[derive(Clone, Copy, Debug)]
pub struct AttemptsBatch<'a> {
    /// UID -> encoded records, oldest first.
    pub records: &'a HashMap<String, Vec<String>>,
    /// Records kept per hook.
    pub keep: usize,
}

impl AttemptsBatch<'_> {
    /// Adds the batch to `pipe`: per hook one LPUSH of its newest `keep`
    /// records (the newest ends up first), one LTRIM, one EXPIRE.
    pub(super) fn add_to(&self, pipe: &mut redis::Pipeline, keys: &Keys) {
        if self.keep == 0 {
            return;
        }
        for (uid, records) in self.records {
            let newest = &records[records.len().saturating_sub(self.keep)..];
            if newest.is_empty() {
                continue;
            }
            let key = keys.attempts(uid);
            pipe.lpush(&key, newest)
                .ignore()
                .ltrim(&key, 0, self.keep as isize - 1)
                .ignore()
                .expire(&key, ATTEMPTS_TTL_SECONDS)
                .ignore();
        }
    }
}

impl Store {
    /// Hook `uid`'s newest `limit` attempt records, newest first (records
    /// that do not decode are skipped).
    pub async fn attempts(&self, uid: &str, limit: usize) -> Result<Vec<AttemptRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.keys.attempts(uid))
            .arg(0)
            .arg(limit as isize - 1)
            .query_async(&mut conn)
            .await
            .context(|| format!("reading the attempts log of hook {uid}"))?;
        Ok(raw.iter().filter_map(|r| AttemptRecord::decode(r)).collect())
    }
}
