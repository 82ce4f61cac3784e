//! The Redis flags shared by every subcommand that talks to Redis.

use crate::publish::DEFAULT_PREFIX;

/// `--redis-url` and `--redis-prefix`.
#[derive(clap::Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis to use, e.g. redis://redis:6379 (may hold a password: its
    /// environment value is never shown by --help).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key (keep a {hash tag} for Redis Cluster).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_PREFIX", default_value = DEFAULT_PREFIX)]
    pub redis_prefix: String,
}
