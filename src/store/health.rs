//! One hook's delivery health in Redis (`health:{uid}`): failures in a row,
//! last success and failure, the disable record, when status was mirrored.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{AttemptsBatch, Context, Store, StoreError};

/// Health of a hook nobody delivered to for this long expires (deleted
/// hooks must not leave keys behind forever).
const HEALTH_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// Health figures of one hook as kept in Redis.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Failed requests in a row.
    pub consecutive_failures: i64,
    /// Unix ms of the first failure of the current run of failures (or the
    /// first since the hook was re-enabled).
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
    /// Events of this hook not stored because its org's bytes in Redis
    /// reached the budget (`org_over_budget`), ever.
    pub over_budget_events: i64,
    /// Unix ms of the last of them.
    pub over_budget_last_ms: Option<i64>,
    /// The org's budget (bytes) at that time.
    pub over_budget_bytes: Option<i64>,
    /// Events the hook's filter failed on (evaluation errors), ever.
    pub filter_error_events: i64,
    /// Unix ms of the last of them.
    pub filter_error_last_ms: Option<i64>,
    /// The last error (short: cut where it was made).
    pub filter_error_message: Option<String>,
}

impl Store {
    /// Records successful requests of several hooks (UID, Unix ms) and
    /// `attempts` for the attempts log in one round trip; returns, per
    /// hook, the failures in a row before it.
    pub async fn record_successes(
        &self,
        successes: &[(String, i64)],
        attempts: &AttemptsBatch<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        if successes.is_empty() && (attempts.records.is_empty() || attempts.keep == 0) {
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
        attempts.add_to(&mut pipe, &self.keys);
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
            .hset_nx(&key, "first_failure_ms", now_ms)
            .ignore()
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
        Ok(count)
    }

    /// Stores the disable record JSON of a hook.
    pub async fn set_disable_record(&self, uid: &str, json: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .hset(self.keys.health(uid), "disabled", json)
            .await
            .context(|| format!("storing the disable record of hook {uid}"))?;
        Ok(())
    }

    /// Clears the disable record of a re-enabled hook, and the start of its
    /// run of failures with it: the next failure starts the turn-off clock
    /// again (the count goes on until a success).
    pub async fn clear_disable_record(&self, uid: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .hdel(self.keys.health(uid), &["disabled", "first_failure_ms"])
            .await
            .context(|| format!("clearing the disable record of hook {uid}"))?;
        Ok(())
    }

    /// Notes that `events` events of hook `uid` were not stored at `now_ms`
    /// because its org reached its budget of `budget` bytes.
    pub async fn record_over_budget(&self, uid: &str, events: u64, budget: u64, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.health(uid);
        let _: () = redis::pipe()
            .atomic()
            .hincr(&key, "over_budget_events", events)
            .ignore()
            .hset_multiple(
                &key,
                &[("over_budget_last_ms", now_ms), ("over_budget_bytes", budget as i64)],
            )
            .ignore()
            .expire(&key, HEALTH_TTL_SECONDS)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("noting events of hook {uid} over its org's budget"))?;
        Ok(())
    }

    /// Notes that hook `uid`'s filter failed on `events` events, the last
    /// at `now_ms` with `message`.
    pub async fn record_filter_errors(
        &self,
        uid: &str,
        events: u64,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.health(uid);
        let _: () = redis::pipe()
            .atomic()
            .hincr(&key, "filter_error_events", events)
            .ignore()
            .hset(&key, "filter_error_last_ms", now_ms)
            .ignore()
            .hset(&key, "filter_error_message", message)
            .ignore()
            .expire(&key, HEALTH_TTL_SECONDS)
            .ignore()
            .query_async(&mut conn)
            .await
            .context(|| format!("noting filter errors of hook {uid}"))?;
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
            over_budget_events: int("over_budget_events").unwrap_or(0),
            over_budget_last_ms: int("over_budget_last_ms"),
            over_budget_bytes: int("over_budget_bytes"),
            filter_error_events: int("filter_error_events").unwrap_or(0),
            filter_error_last_ms: int("filter_error_last_ms"),
            filter_error_message: map.get("filter_error_message").cloned(),
        })
    }
}
