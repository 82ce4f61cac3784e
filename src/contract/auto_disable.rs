//! The one rule that says whether a hook is turned off by the dispatcher.
//!
//! The controller calls it to compute `Ready`, the dispatcher to route
//! events; both must agree, so there is exactly one implementation. The
//! decision lives in status, never in `spec.enabled`, so a GitOps tool sees no
//! drift and never silently turns a hook back on.

use crate::contract::resource::{DisableRecord, OutboundWebhook, REENABLE_ANNOTATION};

/// The disable record that currently turns the hook off, if any.
///
/// A hook is off exactly when the dispatcher's disable record exists, the
/// reenable annotation still equals the record's `reenableToken` (absent
/// counts as empty), and `specDisabledGeneration` is not newer than the
/// record's `generation` (the user has not set `enabled: false` since).
pub fn active_disable_record(hook: &OutboundWebhook) -> Option<&DisableRecord> {
    let status = hook.status.as_ref()?;
    let record = status.delivery.as_ref()?.disabled.as_ref()?;
    let annotation = hook
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REENABLE_ANNOTATION))
        .map(String::as_str);
    turns_off(record, annotation, status.spec_disabled_generation).then_some(record)
}

/// The rule itself, over the three things it reads (for holders of a hook
/// in another form than `OutboundWebhook`, like the dispatcher's cache):
/// the record, the reenable annotation's value and `specDisabledGeneration`.
pub fn turns_off(
    record: &DisableRecord,
    reenable_annotation: Option<&str>,
    spec_disabled_generation: Option<i64>,
) -> bool {
    reenable_annotation.unwrap_or("") == record.reenable_token
        && spec_disabled_generation.is_none_or(|g| g <= record.generation)
}

/// Whether the dispatcher has turned the hook off (see [`active_disable_record`]).
pub fn is_auto_disabled(hook: &OutboundWebhook) -> bool {
    active_disable_record(hook).is_some()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::contract::resource::{DeliveryStatus, DisableReason, OutboundWebhookSpec, OutboundWebhookStatus};

    fn hook(
        annotation: Option<&str>,
        record: Option<(&str, i64)>,
        spec_disabled_generation: Option<i64>,
    ) -> OutboundWebhook {
        let spec: OutboundWebhookSpec = serde_json::from_value(serde_json::json!({
            "url": "https://example.com", "events": ["kustomer.user.create"]
        }))
        .unwrap();
        let mut hook = OutboundWebhook::new("h", spec);
        hook.metadata.generation = Some(7);
        hook.metadata.annotations =
            annotation.map(|a| BTreeMap::from([(REENABLE_ANNOTATION.to_string(), a.to_string())]));
        hook.status = Some(OutboundWebhookStatus {
            spec_disabled_generation,
            delivery: Some(DeliveryStatus {
                disabled: record.map(|(token, generation)| DisableRecord {
                    reason: DisableReason::AutoDisabled,
                    at: Time(jiff::Timestamp::UNIX_EPOCH),
                    message: "500".into(),
                    reenable_token: token.into(),
                    generation,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        hook
    }

    #[test]
    fn no_record_means_not_disabled() {
        assert!(!is_auto_disabled(&hook(None, None, None)));
        assert!(!is_auto_disabled(&hook(Some("x"), None, Some(3))));
    }

    #[test]
    fn record_without_annotation_disables() {
        assert!(is_auto_disabled(&hook(None, Some(("", 7)), None)));
    }

    #[test]
    fn record_with_the_same_annotation_disables() {
        assert!(is_auto_disabled(&hook(
            Some("1700000000"),
            Some(("1700000000", 7)),
            None
        )));
    }

    #[test]
    fn changed_or_added_or_removed_annotation_re_enables() {
        assert!(!is_auto_disabled(&hook(
            Some("1700000001"),
            Some(("1700000000", 7)),
            None
        )));
        assert!(!is_auto_disabled(&hook(Some("1700000000"), Some(("", 7)), None)));
        assert!(!is_auto_disabled(&hook(None, Some(("1700000000", 7)), None)));
    }

    #[test]
    fn spec_disabled_after_the_record_re_enables() {
        assert!(!is_auto_disabled(&hook(None, Some(("", 7)), Some(8))));
    }

    #[test]
    fn spec_disabled_before_or_at_the_record_does_not_re_enable() {
        assert!(is_auto_disabled(&hook(None, Some(("", 7)), Some(7))));
        assert!(is_auto_disabled(&hook(None, Some(("", 7)), Some(2))));
    }
}
