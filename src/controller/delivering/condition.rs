//! The `Delivering` condition, computed without I/O from the dispatcher's
//! `status.delivery`: whether requests to the receiver succeed and, while
//! they fail, since when, the last error and when the hook turns off.
//!
//! The messages depend on nothing but `status.delivery`, and the True ones
//! on nothing that changes while requests succeed, so a healthy hook whose
//! `lastSuccessTime` moves costs no status write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    contract::conditions::delivering,
    contract::resource::{DeliveryStatus, FilterErrors, OverBudget},
};

/// Longest quote of a last error without an HTTP status (the whole text is
/// in `status.delivery.lastFailure.message`).
const MAX_QUOTED_ERROR_CHARS: usize = 200;

/// What the `Delivering` condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True unless the last request failed.
    pub ok: bool,
    /// `Succeeding`, `NoAttemptsYet` or `Failing`.
    pub reason: &'static str,
    /// For people; never contains a secret value.
    pub message: String,
}

/// The `Delivering` condition of a hook whose dispatcher wrote `delivery`;
/// `turned_off` says whether the dispatcher's turn-off is in force (then the
/// message points at `Ready` instead of predicting the turn-off).
pub fn verdict(delivery: Option<&DeliveryStatus>, turned_off: bool) -> Verdict {
    let mut verdict = requests_verdict(delivery, turned_off);
    if let Some(over) = delivery.and_then(|d| d.over_budget.as_ref()) {
        verdict.message.push_str(&over_budget_note(over));
    }
    if let Some(errors) = delivery.and_then(|d| d.filter_errors.as_ref()) {
        verdict.message.push_str(&filter_errors_note(errors));
    }
    verdict
}

/// What status says of events `spec.filter` failed on: not delivered
/// (they count as not matching), so they add to any verdict on requests.
fn filter_errors_note(errors: &FilterErrors) -> String {
    let events = if errors.events == 1 {
        "the filter failed on 1 event".to_string()
    } else {
        format!("the filter failed on {} events", errors.events)
    };
    let quoted: String = errors.message.chars().take(MAX_QUOTED_ERROR_CHARS).collect();
    let mut note = format!("; {events} (not delivered, counted as no match)");
    if let Some(last) = &errors.last_time {
        note.push_str(&format!(", the last at {}", last.0.strftime("%F %H:%M:%SZ")));
    }
    note.push_str(&format!(": {quoted}"));
    note
}

/// What status says of events not kept at the org's budget of bytes in
/// Redis: they were never attempted, so they add to any verdict on requests.
fn over_budget_note(over: &OverBudget) -> String {
    let events = if over.events == 1 {
        "1 event was".to_string()
    } else {
        format!("{} events were", over.events)
    };
    let mut note = format!("; {events} not kept (org_over_budget): the org's bytes in Redis reached its budget");
    if let Some(bytes) = over.budget_bytes {
        note.push_str(&format!(" of {}", size(bytes)));
    }
    if let Some(last) = &over.last_time {
        note.push_str(&format!(", the last at {}", last.0.strftime("%F %H:%M:%SZ")));
    }
    note.push_str(" (see outbound-webhooks dead-letter list; events waiting on this org's hooks hold the bytes)");
    note
}

/// `64Mi` for whole binary units, else bytes.
fn size(bytes: i64) -> String {
    for (unit, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes > 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// The verdict on requests to the receiver alone.
fn requests_verdict(delivery: Option<&DeliveryStatus>, turned_off: bool) -> Verdict {
    let failures = delivery.and_then(|d| d.consecutive_failures).unwrap_or(0);
    let Some(delivery) = delivery.filter(|_| failures > 0) else {
        let attempted = delivery.is_some_and(|d| d.last_success_time.is_some() || d.last_failure_time.is_some());
        return if attempted {
            Verdict {
                ok: true,
                reason: delivering::SUCCEEDING,
                message: "the last request to the receiver succeeded".into(),
            }
        } else {
            Verdict {
                ok: true,
                reason: delivering::NO_ATTEMPTS_YET,
                message: "no request has been sent to the receiver yet".into(),
            }
        };
    };

    let mut message = if failures == 1 {
        "1 attempt failed".to_string()
    } else {
        format!("{failures} attempts failed in a row")
    };
    if let Some(since) = &delivery.failing_since {
        message.push_str(&format!(" since {}", clock(since)));
    }
    if let Some(last) = &delivery.last_failure {
        match last.status_code {
            Some(code) => message.push_str(&format!(" (last: HTTP {code})")),
            None if !last.message.is_empty() => {
                let quoted: String = last.message.chars().take(MAX_QUOTED_ERROR_CHARS).collect();
                message.push_str(&format!(" (last: {quoted})"));
            }
            None => {}
        }
    }
    if turned_off {
        message.push_str("; the hook is turned off (see the Ready condition)");
    } else {
        let attempts = match delivery.attempts_per_event {
            Some(n) => format!("all {n} attempts"),
            None => "every attempt".to_string(),
        };
        message.push_str(&format!("; the hook turns off if an event fails {attempts}"));
        if let Some(at) = &delivery.estimated_turn_off_time {
            message.push_str(&format!(", at about {}", about(at, delivery.failing_since.as_ref())));
        }
        message.push_str(" unless a delivery succeeds");
    }
    Verdict {
        ok: false,
        reason: delivering::FAILING,
        message,
    }
}

/// `10:02:11Z`: the run of failures is at most the retry schedule's span
/// old, so the time of day says when; `lastTransitionTime` has the date.
fn clock(time: &Time) -> String {
    time.0.strftime("%H:%M:%SZ").to_string()
}

/// `11:22Z`, with the date when it falls on another (UTC) day than `since`.
fn about(at: &Time, since: Option<&Time>) -> String {
    let same_day = since.is_none_or(|s| s.0.strftime("%F").to_string() == at.0.strftime("%F").to_string());
    if same_day {
        at.0.strftime("%H:%MZ").to_string()
    } else {
        at.0.strftime("%F %H:%MZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::resource::LastFailure;

    fn time(text: &str) -> Option<Time> {
        Some(Time(text.parse().unwrap()))
    }

    fn failing(failures: i64, status_code: Option<i32>, message: &str) -> DeliveryStatus {
        DeliveryStatus {
            consecutive_failures: Some(failures),
            last_success_time: time("2026-11-27T09:58:00Z"),
            last_failure_time: time("2026-11-27T10:20:45Z"),
            last_failure: Some(LastFailure {
                status_code,
                message: message.into(),
            }),
            failing_since: time("2026-11-27T10:02:11Z"),
            estimated_turn_off_time: time("2026-11-27T11:22:11.250Z"),
            attempts_per_event: Some(10),
            disabled: None,
            over_budget: None,
            filter_errors: None,
        }
    }

    #[test]
    fn filter_errors_are_said_with_the_last_error() {
        let quiet = DeliveryStatus {
            filter_errors: Some(FilterErrors {
                events: 3,
                last_time: time("2026-11-27T10:21:00Z"),
                message: "No such key: priority".into(),
            }),
            ..DeliveryStatus::default()
        };
        let v = verdict(Some(&quiet), false);
        assert_eq!((v.ok, v.reason), (true, "NoAttemptsYet"));
        assert_eq!(
            v.message,
            "no request has been sent to the receiver yet; the filter failed on 3 events (not delivered, counted as no match), the last at 2026-11-27 10:21:00Z: No such key: priority"
        );
    }

    #[test]
    fn events_not_kept_at_the_org_budget_are_said_whatever_the_requests_did() {
        let over = OverBudget {
            events: 12,
            last_time: time("2026-11-27T10:21:00Z"),
            budget_bytes: Some(64 << 20),
        };
        let quiet = DeliveryStatus {
            over_budget: Some(over.clone()),
            ..DeliveryStatus::default()
        };
        let v = verdict(Some(&quiet), false);
        assert_eq!((v.ok, v.reason), (true, "NoAttemptsYet"));
        assert_eq!(
            v.message,
            "no request has been sent to the receiver yet; 12 events were not kept (org_over_budget): the org's bytes in Redis reached its budget of 64Mi, the last at 2026-11-27 10:21:00Z (see outbound-webhooks dead-letter list; events waiting on this org's hooks hold the bytes)"
        );
        let mut failing = failing(3, Some(500), "HTTP 500");
        failing.over_budget = Some(OverBudget {
            events: 1,
            last_time: None,
            budget_bytes: Some(1_000_000),
        });
        let v = verdict(Some(&failing), false);
        assert!(v.message.ends_with("; 1 event was not kept (org_over_budget): the org's bytes in Redis reached its budget of 1000000 bytes (see outbound-webhooks dead-letter list; events waiting on this org's hooks hold the bytes)"), "{}", v.message);
    }

    #[test]
    fn a_run_of_failures_says_how_many_since_when_the_last_error_and_when_the_hook_turns_off() {
        let v = verdict(
            Some(&failing(7, Some(503), "HTTP 503 Service Unavailable: down")),
            false,
        );
        assert_eq!((v.ok, v.reason), (false, "Failing"));
        assert_eq!(
            v.message,
            "7 attempts failed in a row since 10:02:11Z (last: HTTP 503); the hook turns off if an event fails all 10 attempts, at about 11:22Z unless a delivery succeeds"
        );
    }

    #[test]
    fn one_failure_without_an_answer_quotes_the_error() {
        let v = verdict(Some(&failing(1, None, "no answer within 10s (timeoutSeconds)")), false);
        assert_eq!(
            v.message,
            "1 attempt failed since 10:02:11Z (last: no answer within 10s (timeoutSeconds)); the hook turns off if an event fails all 10 attempts, at about 11:22Z unless a delivery succeeds"
        );
        let long = "x".repeat(1000);
        let v = verdict(Some(&failing(2, None, &long)), false);
        assert!(
            v.message.contains(&format!("(last: {})", "x".repeat(200))),
            "{}",
            v.message
        );
        assert!(!v.message.contains(&"x".repeat(201)), "{}", v.message);
    }

    #[test]
    fn a_turn_off_on_another_day_carries_its_date() {
        let mut d = failing(3, Some(500), "HTTP 500");
        d.failing_since = time("2026-11-27T23:30:00Z");
        d.estimated_turn_off_time = time("2026-11-28T00:50:00Z");
        let v = verdict(Some(&d), false);
        assert!(
            v.message.contains("since 23:30:00Z") && v.message.contains("at about 2026-11-28 00:50Z unless"),
            "{}",
            v.message
        );
    }

    #[test]
    fn missing_figures_leave_their_part_out() {
        let d = DeliveryStatus {
            consecutive_failures: Some(4),
            ..Default::default()
        };
        assert_eq!(
            verdict(Some(&d), false).message,
            "4 attempts failed in a row; the hook turns off if an event fails every attempt unless a delivery succeeds"
        );
    }

    #[test]
    fn a_turned_off_hook_points_at_ready_instead_of_predicting() {
        let v = verdict(Some(&failing(10, Some(500), "HTTP 500")), true);
        assert_eq!((v.ok, v.reason), (false, "Failing"));
        assert_eq!(
            v.message,
            "10 attempts failed in a row since 10:02:11Z (last: HTTP 500); the hook is turned off (see the Ready condition)"
        );
    }

    #[test]
    fn no_delivery_status_or_no_request_is_no_attempts_yet() {
        assert_eq!(verdict(None, false).reason, "NoAttemptsYet");
        let d = DeliveryStatus {
            consecutive_failures: Some(0),
            attempts_per_event: Some(10),
            ..Default::default()
        };
        let v = verdict(Some(&d), false);
        assert_eq!((v.ok, v.reason), (true, "NoAttemptsYet"));
    }

    #[test]
    fn zero_failures_after_requests_is_succeeding_whatever_the_times() {
        let mut d = failing(0, Some(500), "HTTP 500");
        d.failing_since = None;
        d.estimated_turn_off_time = None;
        let v = verdict(Some(&d), false);
        assert_eq!((v.ok, v.reason), (true, "Succeeding"));
        d.last_success_time = time("2026-11-27T12:00:00Z");
        assert_eq!(verdict(Some(&d), false), v, "a newer success changes nothing");
    }
}
