//! The dispatcher's flags ([`DispatcherArgs`], each with an
//! `OUTBOUND_WEBHOOKS_<FLAG>` environment twin) and the [`Config`] they
//! become.

use std::{net::SocketAddr, time::Duration};

use crate::dispatcher::{
    attempt::attempts_log::DEFAULT_LOG_SIZE,
    org_budget::{DEFAULT_ORG_MAX_STORED_BYTES, parse_size},
};
use crate::{
    address_filter::{AddressFilter, InvalidCidr},
    contract::retry_schedule::{DEFAULT_RETRY_SCHEDULE, RetrySchedule},
    plumbing::duration::parse_duration,
    store::connection::args::RedisArgs,
    store::connection::{ConnectError, RedisTarget},
};

/// Everything the dispatcher is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where `/metrics`, `/healthz`, `/readyz` listen.
    pub http_addr: SocketAddr,
    /// Where Redis is and how it runs.
    pub redis: RedisTarget,
    /// The key prefix (of shard 0).
    pub redis_prefix: String,
    /// The number of stream shards.
    pub shards: usize,
    /// Delays between attempts.
    pub retry_schedule: RetrySchedule,
    /// Non-public destinations that may be reached anyway.
    pub allow_destination_cidrs: Vec<ipnet::IpNet>,
    /// This replica's consumer name.
    pub consumer_name: String,
    /// Attempts in flight on this replica.
    pub max_in_flight: usize,
    /// Attempts in flight per hook on this replica.
    pub max_in_flight_per_hook: usize,
    /// Lease of a claimed task (extended when a hook's timeout needs more).
    pub task_lease: Duration,
    /// Stream entries pending this long on another consumer are reclaimed.
    pub reclaim_idle: Duration,
    /// Consumers holding nothing and idle this long are removed.
    pub idle_consumer_timeout: Duration,
    /// Dead letters older than this are trimmed.
    pub dead_letter_max_age: Duration,
    /// At most this many dead letters are kept per hook.
    pub dead_letter_max_count: usize,
    /// How often retention and gauges run.
    pub maintenance_interval: Duration,
    /// How often due tasks are polled when idle.
    pub poll_interval: Duration,
    /// An explicit outbound proxy; environment proxies are ignored.
    pub proxy: Option<String>,
    /// DNS servers asked instead of those of `/etc/resolv.conf`.
    pub dns_servers: Vec<SocketAddr>,
    /// A PEM bundle of CAs trusted for https:// destinations besides the
    /// system's.
    pub destination_ca_file: Option<std::path::PathBuf>,
    /// Attempts kept per hook in the attempts log (0: no log).
    pub attempts_log_size: usize,
    /// Bytes an org may hold in Redis (tasks and dead letters) unless its
    /// Namespace says otherwise.
    pub org_max_stored_bytes: u64,
    /// Bytes of retried bodies held in memory at once.
    pub max_retry_body_bytes: usize,
    /// The OpenTelemetry collector's OTLP/HTTP base URL; `None`: no spans.
    pub otlp_endpoint: Option<String>,
}

/// Flags of `outbound-webhooks dispatcher`.
#[derive(clap::Args, Clone, Debug)]
pub struct DispatcherArgs {
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Delays after attempts 1..N-1 (comma-separated, e.g. 30s,1m,1m30s or 50ms).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_RETRY_SCHEDULE", default_value = DEFAULT_RETRY_SCHEDULE)]
    pub retry_schedule: RetrySchedule,
    /// Comma-separated CIDRs that may be reached although not public (e.g. 127.0.0.0/8).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ALLOW_DESTINATION_CIDR", default_value = "")]
    pub allow_destination_cidr: String,
    /// This replica's name in the consumer group; defaults to the host name.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// Attempts in flight at once on this replica.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Attempts in flight at once per hook on this replica.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_IN_FLIGHT_PER_HOOK", default_value_t = 16)]
    pub max_in_flight_per_hook: usize,
    /// Lease of a claimed task; extended to the hook's timeout plus 5s when shorter.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_TASK_LEASE", default_value = "45s", value_parser = parse_duration)]
    pub task_lease: Duration,
    /// Stream entries pending this long on another (dead) consumer are reclaimed.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_RECLAIM_IDLE", default_value = "1m", value_parser = parse_duration)]
    pub reclaim_idle: Duration,
    /// Consumers holding nothing and idle this long are removed from the group.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_IDLE_CONSUMER_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_consumer_timeout: Duration,
    /// Dead letters older than this are deleted.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DEAD_LETTER_MAX_AGE", default_value = "168h", value_parser = parse_duration)]
    pub dead_letter_max_age: Duration,
    /// At most this many dead letters are kept per hook (its oldest go first).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DEAD_LETTER_MAX_COUNT", default_value_t = 10_000)]
    pub dead_letter_max_count: usize,
    /// How often the stream and dead letters are trimmed.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAINTENANCE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub maintenance_interval: Duration,
    /// How often due tasks are polled when nothing wakes the claimer.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_POLL_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Send deliveries through this proxy; proxy environment variables are ignored.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_PROXY")]
    pub proxy: Option<String>,
    /// DNS server (ADDR:PORT) to ask instead of those of /etc/resolv.conf;
    /// repeatable, or comma-separated.
    #[arg(long = "dns-server", env = "OUTBOUND_WEBHOOKS_DNS_SERVER", value_delimiter = ',')]
    pub dns_servers: Vec<SocketAddr>,
    /// PEM bundle of CAs to trust for https:// destinations besides the
    /// system's (receivers with a private CA).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_DESTINATION_CA_FILE")]
    pub destination_ca_file: Option<std::path::PathBuf>,
    /// Number of stream shards orgs are spread over (each under its own hash
    /// tag, so a Redis Cluster spreads them over its nodes). Stored in Redis
    /// by the first dispatcher; every dispatcher must use the same.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: u16,
    /// Attempts kept per hook in the attempts log (`outbound-webhooks
    /// attempts`); 0 turns the log off.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ATTEMPTS_LOG_SIZE", default_value_t = DEFAULT_LOG_SIZE)]
    pub attempts_log_size: usize,
    /// Bytes one org may hold in Redis (stored and waiting tasks, dead
    /// letters), e.g. 64Mi or 1Gi; the Namespace annotation
    /// outboundwebhooks.io/max-stored-bytes overrides it for its org.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ORG_MAX_STORED_BYTES", default_value = DEFAULT_ORG_MAX_STORED_BYTES, value_parser = parse_size)]
    pub org_max_stored_bytes: u64,
    /// Bytes of retried bodies held in memory at once, e.g. 64Mi (at least
    /// 2Mi); a claimed retry counts as 1 MiB until its body is loaded.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_RETRY_BODY_BYTES", default_value = DEFAULT_MAX_RETRY_BODY_BYTES, value_parser = parse_retry_body_bytes)]
    pub max_retry_body_bytes: usize,
    /// Export one span per attempt to this OpenTelemetry collector (its
    /// OTLP/HTTP base URL, e.g. http://otel-collector:4318; spans go to
    /// /v1/traces). Falls back to OTEL_EXPORTER_OTLP_ENDPOINT; unset: no
    /// spans are exported.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The standard OpenTelemetry variable `--otlp-endpoint` falls back to.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The OTLP endpoint: the flag, else `fallback` (the standard variable);
/// empty counts as unset; anything else must be an http(s) URL.
fn otlp_endpoint(flag: Option<String>, fallback: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(endpoint) = flag.or(fallback).filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    match url::Url::parse(endpoint.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(endpoint.trim().to_string())),
        _ => Err(ConfigError::OtlpEndpoint(endpoint)),
    }
}

/// The default `--max-retry-body-bytes`. With the held stream entries
/// (32 MiB, about twice that with their envelopes) and the bodies being
/// written to Redis (16 MiB, twice that in copies), bodies take at most
/// about 160 MiB of the chart's 256 MiB memory limit; the rest is for the
/// caches, connections and the allocator's slack
/// (docs/src/tenant-bounds.md#retried-bodies-in-memory has the measured peak).
pub const DEFAULT_MAX_RETRY_BODY_BYTES: &str = "64Mi";

/// Parses `--max-retry-body-bytes`: a size as [`parse_size`] reads them,
/// at least room for one largest body.
fn parse_retry_body_bytes(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s).map_err(|e| e.to_string())?;
    let bytes = usize::try_from(bytes).map_err(|_| format!("{s:?} is too large"))?;
    if bytes < crate::dispatcher::retry::bodies::MIN_BYTES {
        return Err(format!("{s:?} is below 2Mi (room for one 1 MiB body)"));
    }
    Ok(bytes)
}

/// The dispatcher's flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--allow-destination-cidr` is wrong.
    #[error(transparent)]
    Cidr(#[from] InvalidCidr),
    /// The Redis flags are wrong.
    #[error(transparent)]
    Redis(#[from] ConnectError),
    /// `--otlp-endpoint` (or OTEL_EXPORTER_OTLP_ENDPOINT) is not a URL.
    #[error("--otlp-endpoint (or {OTEL_ENDPOINT_ENV}) {0:?} is not an http:// or https:// URL")]
    OtlpEndpoint(String),
}

impl DispatcherArgs {
    /// The configuration these flags give; `consumer_name` defaults to the
    /// host name.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        Ok(Config {
            http_addr: self.http_addr,
            redis: self.redis.target()?,
            redis_prefix: self.redis.redis_prefix,
            shards: usize::from(self.shards),
            retry_schedule: self.retry_schedule,
            allow_destination_cidrs: AddressFilter::parse_list(&self.allow_destination_cidr)?,
            consumer_name: self
                .consumer_name
                .unwrap_or_else(|| crate::plumbing::process::host_name("dispatcher")),
            max_in_flight: self.max_in_flight.max(1),
            max_in_flight_per_hook: self.max_in_flight_per_hook.max(1),
            task_lease: self.task_lease,
            reclaim_idle: self.reclaim_idle,
            idle_consumer_timeout: self.idle_consumer_timeout,
            dead_letter_max_age: self.dead_letter_max_age,
            dead_letter_max_count: self.dead_letter_max_count,
            maintenance_interval: self.maintenance_interval,
            poll_interval: self.poll_interval,
            proxy: self.proxy,
            dns_servers: self.dns_servers,
            destination_ca_file: self.destination_ca_file,
            attempts_log_size: self.attempts_log_size,
            org_max_stored_bytes: self.org_max_stored_bytes,
            max_retry_body_bytes: self.max_retry_body_bytes,
            otlp_endpoint: otlp_endpoint(self.otlp_endpoint, std::env::var(OTEL_ENDPOINT_ENV).ok())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DispatcherArgs,
    }

    #[test]
    fn dns_servers_are_repeatable_and_comma_separated() {
        let cli = Cli::try_parse_from([
            "dispatcher",
            "--redis-url",
            "redis://redis:6379",
            "--dns-server",
            "127.0.0.1:5353,10.0.0.10:53",
            "--dns-server",
            "[fd00::10]:53",
        ])
        .unwrap();
        let servers: Vec<String> = cli.args.dns_servers.iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["127.0.0.1:5353", "10.0.0.10:53", "[fd00::10]:53"]);
        assert!(Cli::try_parse_from(["dispatcher", "--redis-url", "redis://r", "--dns-server", "10.0.0.10"]).is_err());
    }

    #[test]
    fn the_otlp_endpoint_falls_back_to_the_standard_variable() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(otlp_endpoint(None, None).unwrap(), None);
        assert_eq!(otlp_endpoint(some(""), None).unwrap(), None);
        assert_eq!(
            otlp_endpoint(some("http://a:4318"), some("http://b:4318")).unwrap(),
            some("http://a:4318")
        );
        assert_eq!(
            otlp_endpoint(None, some("https://b:4318")).unwrap(),
            some("https://b:4318")
        );
        for bad in ["b:4318", "grpc://b:4317", "not a url"] {
            let e = otlp_endpoint(some(bad), None).unwrap_err().to_string();
            assert!(e.contains("--otlp-endpoint"), "{e}");
        }
    }

    #[test]
    fn the_org_budget_takes_sizes_and_defaults_to_64_mib() {
        let parse = |more: &[&str]| {
            let mut args = vec!["dispatcher", "--redis-url", "redis://r"];
            args.extend_from_slice(more);
            Cli::try_parse_from(args).map(|c| c.args.org_max_stored_bytes)
        };
        assert_eq!(parse(&[]).unwrap(), 64 << 20);
        assert_eq!(parse(&["--org-max-stored-bytes", "1Gi"]).unwrap(), 1 << 30);
        assert_eq!(parse(&["--org-max-stored-bytes", "1000"]).unwrap(), 1000);
        assert!(parse(&["--org-max-stored-bytes", "64MB"]).is_err());
        let retry = |v: &str| {
            Cli::try_parse_from([
                "dispatcher",
                "--redis-url",
                "redis://r:6379",
                "--max-retry-body-bytes",
                v,
            ])
            .map(|c| c.args.max_retry_body_bytes)
        };
        assert_eq!(retry("64Mi").unwrap(), 64 << 20);
        let short = retry("1Mi").expect_err("1Mi refused").to_string();
        assert!(short.contains("below 2Mi"), "{short}");
    }
}
