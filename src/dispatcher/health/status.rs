//! Mirroring delivery health into `status.delivery` under the dispatcher's
//! own field manager (server-side apply of that subtree only).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use crate::dispatcher::view::cached_objects::CachedHook;
use crate::store::Health;
use crate::{
    contract::resource::{DeliveryStatus, DisableRecord, FilterErrors, LastFailure, OutboundWebhook, OverBudget},
    contract::retry_schedule::RetrySchedule,
};

/// The field manager of every status write of the dispatcher.
pub const FIELD_MANAGER: &str = "outbound-webhooks-dispatcher";

/// How often, at most, one hook's health is mirrored (transitions go at once).
pub const MIRROR_INTERVAL_MS: i64 = 15_000;

fn time(ms: i64) -> Option<Time> {
    jiff::Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The disable record to keep: Redis's (fresh) or the hook's own (survives
/// a flushed Redis), and only while the shared predicate says it still
/// turns the hook off; a re-enabled hook's record is dropped.
pub fn effective_record(hook: &CachedHook, from_redis: Option<DisableRecord>) -> Option<DisableRecord> {
    let record = from_redis.or_else(|| hook.disabled.clone())?;
    hook.turned_off_by(&record).then_some(record)
}

/// The `status.delivery` to apply. `schedule` is this dispatcher's retry
/// schedule: the turn-off estimate and the attempt count come from here,
/// where `--retry-schedule` is set, rather than from a copy of the flag in
/// the controller that could silently differ.
///
/// The estimate is `failingSince` plus the schedule's span: a hook turns off
/// when an event first tried after the last success fails every attempt,
/// and no such event was first tried before the run's first failure. Jitter
/// and `Retry-After` move it, hence "about".
pub fn delivery_status(health: &Health, record: Option<DisableRecord>, schedule: &RetrySchedule) -> DeliveryStatus {
    let failing_since = health.first_failure_ms.filter(|_| health.consecutive_failures > 0);
    let span_ms = i64::try_from(schedule.total().as_millis()).unwrap_or(i64::MAX);
    DeliveryStatus {
        consecutive_failures: Some(health.consecutive_failures),
        last_success_time: health.last_success_ms.and_then(time),
        last_failure_time: health.last_failure_ms.and_then(time),
        last_failure: health.last_message.as_ref().map(|message| LastFailure {
            status_code: health.last_status,
            message: message.clone(),
        }),
        failing_since: failing_since.and_then(time),
        estimated_turn_off_time: failing_since.and_then(|since| time(since.saturating_add(span_ms))),
        attempts_per_event: Some(i64::from(schedule.attempts())),
        disabled: record,
        over_budget: (health.over_budget_events > 0).then(|| OverBudget {
            events: health.over_budget_events,
            last_time: health.over_budget_last_ms.and_then(time),
            budget_bytes: health.over_budget_bytes,
        }),
        filter_errors: (health.filter_error_events > 0).then(|| FilterErrors {
            events: health.filter_error_events,
            last_time: health.filter_error_last_ms.and_then(time),
            message: health.filter_error_message.clone().unwrap_or_default(),
        }),
    }
}

/// How often [`apply`] looks again when the hook changed between its read
/// and its write.
const APPLY_TRIES: usize = 3;

/// Applies `delivery` to the status of hook `namespace/name` while that
/// name belongs to the hook of UID `uid`; false (nothing written) when it
/// does not, e.g. deleted and re-created while the cache lagged, so one
/// hook's record never lands on its successor.
///
/// A UID in the patch is no precondition for a status write (the API
/// server takes a custom resource's metadata from the stored object), so
/// the hook is read, its UID compared, and the apply carries the read
/// resourceVersion, which the API server does check: a hook changed or
/// re-created in between makes it refuse, and the hook is read again.
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    delivery: &DeliveryStatus,
) -> Result<bool, kube::Error> {
    let api: Api<OutboundWebhook> = Api::namespaced(client.clone(), namespace);
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(current) = api.get_opt(name).await? else {
            return Ok(false);
        };
        if current.metadata.uid.as_deref() != Some(uid) {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "apiVersion": "outboundwebhooks.io/v1alpha1",
            "kind": "OutboundWebhook",
            "metadata": {"name": name, "resourceVersion": current.metadata.resource_version},
            "status": {"delivery": delivery},
        });
        match api
            .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            // Forced, so a conflict is the resourceVersion's: changed meanwhile.
            Err(kube::Error::Api(status)) if status.is_conflict() && tries < APPLY_TRIES => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contract::resource::{DisableReason, REENABLE_ANNOTATION};

    fn record(token: &str) -> DisableRecord {
        DisableRecord {
            reason: DisableReason::AutoDisabled,
            at: Time(jiff::Timestamp::UNIX_EPOCH),
            message: "HTTP 500".into(),
            reenable_token: token.into(),
            generation: 1,
        }
    }

    fn hook(annotation: Option<&str>) -> CachedHook {
        CachedHook::new(full_hook(annotation))
    }

    fn full_hook(annotation: Option<&str>) -> OutboundWebhook {
        let spec =
            serde_json::from_value(serde_json::json!({"url": "https://x.example", "events": ["kustomer.user.create"]}))
                .unwrap();
        let mut h = OutboundWebhook::new("h", spec);
        h.metadata.generation = Some(1);
        h.metadata.annotations = annotation.map(|a| BTreeMap::from([(REENABLE_ANNOTATION.to_string(), a.to_string())]));
        h
    }

    #[test]
    fn a_fresh_record_is_kept_until_the_hook_is_re_enabled() {
        assert_eq!(effective_record(&hook(None), Some(record(""))), Some(record("")));
        assert_eq!(effective_record(&hook(Some("1")), Some(record(""))), None);
    }

    #[test]
    fn the_record_in_status_survives_a_flushed_redis() {
        let mut h = full_hook(None);
        h.status = Some(crate::contract::resource::OutboundWebhookStatus {
            delivery: Some(DeliveryStatus {
                disabled: Some(record("")),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(effective_record(&CachedHook::new(h), None), Some(record("")));
    }

    #[test]
    fn health_maps_to_status_fields() {
        let health = Health {
            consecutive_failures: 3,
            first_failure_ms: Some(1_000),
            last_failure_ms: Some(5_000),
            last_status: Some(500),
            last_message: Some("HTTP 500".into()),
            ..Default::default()
        };
        let schedule: RetrySchedule = "1s,2s".parse().unwrap();
        let d = delivery_status(&health, None, &schedule);
        assert_eq!(d.consecutive_failures, Some(3));
        assert_eq!(d.last_failure.unwrap().status_code, Some(500));
        assert!(d.last_success_time.is_none());
        assert_eq!(d.failing_since, time(1_000));
        assert_eq!(
            d.estimated_turn_off_time,
            time(4_000),
            "the first failure plus the schedule's span"
        );
        assert_eq!(d.attempts_per_event, Some(3));
    }

    #[test]
    fn a_hook_that_succeeds_has_no_failing_since_or_estimate() {
        let health = Health {
            consecutive_failures: 0,
            first_failure_ms: Some(1_000),
            last_success_ms: Some(9_000),
            ..Default::default()
        };
        let d = delivery_status(&health, None, &RetrySchedule::default());
        assert_eq!((d.failing_since, d.estimated_turn_off_time), (None, None));
        assert_eq!(d.attempts_per_event, Some(10));
    }
}
