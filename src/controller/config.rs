//! The controller's flags and their parsers (durations in the crate's one
//! grammar, [`crate::duration`]).

use std::{net::SocketAddr, time::Duration};

use crate::duration::parse_duration;

/// Flags of `outbound-webhooks controller`; each has an
/// `OUTBOUND_WEBHOOKS_<FLAG>` environment twin.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// How many OutboundWebhooks each namespace may have accepted (the
    /// Namespace annotation outboundwebhooks.io/max-webhooks overrides it).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_WEBHOOKS_PER_NAMESPACE", default_value_t = 5)]
    pub max_webhooks_per_namespace: usize,
    /// Accept http:// destinations (refused with InsecureURL otherwise).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ALLOW_HTTP")]
    pub allow_http: bool,
    /// Duration of the leader Lease, in whole seconds (e.g. 15s, 3s).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "OUTBOUND_WEBHOOKS_LEASE_NAME",
        default_value = "outbound-webhooks-controller"
    )]
    pub lease_name: String,
    /// Namespace of the leader Lease; defaults to the namespace of the
    /// in-cluster ServiceAccount or the kubeconfig context.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Reconcile only the hooks of this namespace (default: all namespaces).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// How long a token rotated out by `promote-secret` still signs
    /// webhook-signature (whole seconds, e.g. 24h, 90m, 5s).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ROTATION_OVERLAP", default_value = "24h", value_parser = parse_rotation_overlap)]
    pub rotation_overlap: Duration,
    /// How many hooks are reconciled at once. A new hook waits on a few API
    /// calls in a row, so slots, not CPU, bound how fast a burst of new
    /// hooks becomes Ready.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// This replica's name in the Lease; defaults to the host name (the
    /// Pod name) plus a random suffix.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_IDENTITY")]
    pub identity: Option<String>,
    /// Shut down (releasing the Lease) when standard input closes; set from
    /// the binary's global `--exit-on-stdin-close`.
    #[arg(skip)]
    pub exit_on_stdin_close: bool,
}

/// Reconciles at once unless `--concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// Parses a rotation overlap such as `24h` or `5s`: whole seconds, at least 1 s.
pub fn parse_rotation_overlap(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: the rotation overlap must be whole seconds, at least 1s"
        ));
    }
    Ok(duration)
}

/// Parses a lease duration such as `15s`, `1m` or `3` (seconds); at least 2 s.
pub fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(2) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: the lease duration must be whole seconds, at least 2s"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_overlaps_parse_in_whole_seconds_of_at_least_one() {
        assert_eq!(parse_rotation_overlap("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_rotation_overlap("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_rotation_overlap("90"), Ok(Duration::from_secs(90)));
        assert!(parse_rotation_overlap("0s").is_err());
        assert!(parse_rotation_overlap("1.5s").is_err());
        assert!(parse_rotation_overlap("-1h").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn concurrency_defaults_to_64_and_must_be_at_least_one() {
        use clap::Parser;
        let parse = |extra: &[&str]| Cli::try_parse_from([&["controller"], extra].concat()).map(|c| c.args.concurrency);
        assert_eq!(parse(&[]).ok(), Some(DEFAULT_CONCURRENCY));
        assert_eq!(parse(&["--concurrency", "8"]).ok(), Some(8));
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--concurrency", "many"]).is_err());
    }

    #[test]
    fn lease_durations_parse_in_whole_seconds() {
        assert_eq!(parse_lease_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_lease_duration("20"), Ok(Duration::from_secs(20)));
        assert!(parse_lease_duration("1s").is_err());
        assert!(parse_lease_duration("2.5s").is_err());
        assert!(parse_lease_duration("soon").is_err());
    }
}
