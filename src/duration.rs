//! The one grammar of every duration flag (`--task-lease`,
//! `--lease-duration`, `--retry-schedule`'s delays, `--retry-timeout`, ...):
//!
//! - one or more `<whole number><unit>` pieces, units `ms`, `s`, `m`, `h`,
//!   without spaces: `250ms`, `30s`, `1m30s`, `168h`;
//! - or a bare whole number, meaning seconds: `90` is `90s`.
//!
//! No fractions, signs or days: Go's `time.ParseDuration` without them, as
//! Kubernetes users write durations. Hand-written because the maintained
//! parsers accept more than this (jiff's friendly format reads `1 hour` and
//! ISO 8601, humantime reads `2days`), and each flag would then take
//! another set of spellings than the others.

use std::time::Duration;

/// Parses a duration in the grammar above; the error names the input.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?}: number too large"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a whole number, like 30s or 1m30s"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let piece = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m or h)")),
        };
        total = piece
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("{text:?}: too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_compounds_and_bare_seconds_parse() {
        let d = |t: &str| parse_duration(t);
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(d("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(d(" 90 "), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn anything_else_is_refused_naming_the_input() {
        for bad in [
            "",
            "x",
            "1d",
            "1.5s",
            "-1h",
            "1 h",
            "s",
            "1hour",
            "PT1H",
            "99999999999999999999h",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(bad.trim()), "{err}");
        }
    }
}
