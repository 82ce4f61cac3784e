//! The retry policy: delays between attempts, their jitter and `Retry-After`.

use std::{fmt, str::FromStr, time::Duration};

use crate::plumbing::duration::parse_duration;

/// The contract's default delays after attempts 1..9 (10 attempts over ~80
/// minutes; docs/src/contract.md#retry-policy).
pub const DEFAULT_RETRY_SCHEDULE: &str = "30s,1m,1m30s,2m,5m,10m,15m,15m,30m";

/// Longest delay a receiver's `Retry-After` may impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// Delays after attempts 1..N-1; N = delays + 1 attempts in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// A `--retry-schedule` value that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid retry schedule {input:?}: {problem} (expected comma-separated durations such as 30s,1m,1m30s or 50ms)"
)]
pub struct InvalidRetrySchedule {
    input: String,
    problem: String,
}

impl RetrySchedule {
    /// Total attempts per event (delays + 1).
    pub fn attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay after attempt `attempt` (1-based), `None` after the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.delays.get(index).copied()
    }

    /// The sum of all delays: how long an event can stay in retries.
    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE.parse().expect("the default schedule parses")
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| format!("{}ms", d.as_millis())).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for RetrySchedule {
    type Err = InvalidRetrySchedule;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| InvalidRetrySchedule {
            input: input.to_string(),
            problem,
        };
        if input.trim().is_empty() {
            // No delays: one attempt per event.
            return Ok(RetrySchedule { delays: Vec::new() });
        }
        let delays = input
            .split(',')
            .map(|part| parse_duration(part.trim()).map_err(&fail))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { delays })
    }
}

/// Applies up to ±10% jitter; `unit` is a uniform random number in [0, 1).
pub fn jitter(delay: Duration, unit: f64) -> Duration {
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    delay.mul_f64(factor)
}

/// Reads a `Retry-After` value (delta seconds or an HTTP date) relative to
/// `now`, capped at [`MAX_RETRY_AFTER`]. `None` when unusable.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let span = date.duration_since(now);
        if span.is_negative() {
            Duration::ZERO
        } else {
            Duration::try_from(span).ok()?
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The delay before the next attempt: the scheduled delay with jitter, or the
/// receiver's `Retry-After` when that is longer.
pub fn next_delay(scheduled: Duration, jitter_unit: f64, retry_after: Option<Duration>) -> Duration {
    let jittered = jitter(scheduled, jitter_unit);
    match retry_after {
        Some(after) => jittered.max(after.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_ten_attempts_over_eighty_minutes() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 10);
        assert_eq!(s.total(), Duration::from_secs(80 * 60));
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(30)));
        assert_eq!(s.delay_after(3), Some(Duration::from_secs(90)));
        assert_eq!(s.delay_after(9), Some(Duration::from_secs(1800)));
        assert_eq!(s.delay_after(10), None);
        assert_eq!(s.delay_after(0), None);
    }

    #[test]
    fn milliseconds_and_compound_durations_parse() {
        let s: RetrySchedule = "50ms, 1m30s,2h".parse().unwrap();
        assert_eq!(s.attempts(), 4);
        assert_eq!(s.delay_after(1), Some(Duration::from_millis(50)));
        assert_eq!(s.delay_after(2), Some(Duration::from_secs(90)));
        assert_eq!(s.delay_after(3), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_input() {
        for bad in ["x", "1d", "30s,,1m", "s", "1.5s"] {
            let err = bad.parse::<RetrySchedule>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        // The one duration grammar (crate::plumbing::duration): a bare number is seconds.
        let s: RetrySchedule = "30".parse().expect("30 seconds");
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(30)));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(90));
        assert_eq!(jitter(d, 0.5), Duration::from_secs(100));
        assert!(jitter(d, 0.999_999) <= Duration::from_secs(110));
    }

    #[test]
    fn retry_after_seconds_and_dates_are_read_and_capped() {
        let now: jiff::Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_only_lengthens_the_delay() {
        let base = Duration::from_secs(30);
        assert_eq!(next_delay(base, 0.5, Some(Duration::from_secs(2))), base);
        assert_eq!(
            next_delay(base, 0.5, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_delay(base, 0.5, Some(Duration::from_secs(99_999))),
            MAX_RETRY_AFTER
        );
    }
}
