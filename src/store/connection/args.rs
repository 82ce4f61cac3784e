//! The Redis flags shared by every subcommand that talks to Redis.

use std::path::PathBuf;

use crate::{
    publish::DEFAULT_PREFIX,
    store::connection::{ConnectError, RedisMode, RedisTarget},
};

/// `--redis-url`, `--redis-prefix`, `--redis-mode`, `--redis-master-name`
/// and `--redis-ca-file`.
#[derive(clap::Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis to use: redis://host:6379 or rediss:// (TLS); with Sentinel the
    /// sentinels and with Cluster seed nodes, comma-separated
    /// (redis://[:password@]h1:26379,h2:26379). May hold a password: its
    /// environment value is never shown by --help.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key; must hold a {hash tag}.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_PREFIX", default_value = DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// How Redis runs: one node, a primary behind Sentinel, or a Cluster.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_MODE", value_enum, default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,
    /// Sentinel's name of the primary (sentinel mode).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,
    /// PEM CA bundle to verify rediss:// servers with (default: the system roots).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The target these flags describe (the CA file read, the flags checked
    /// together, the prefix checked for a hash tag).
    pub fn target(&self) -> Result<RedisTarget, ConnectError> {
        crate::store::shard::check_prefix(&self.redis_prefix).map_err(|e| ConnectError::Config(e.to_string()))?;
        RedisTarget::new(
            self.redis_mode,
            &self.redis_url,
            self.redis_master_name.as_deref(),
            self.redis_ca_file.as_deref(),
        )
    }
}
