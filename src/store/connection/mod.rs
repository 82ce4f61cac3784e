//! Connections to Redis as users run it: one node (`redis://` or
//! `rediss://`), a primary behind Sentinel, or a Cluster. Every command
//! goes through [`RedisConn`], which the rest of the crate uses like any
//! redis-rs async connection.
//!
//! redis-rs follows MOVED/ASK and fail-overs on a Cluster, and reconnects a
//! single node by itself; what it does not do is follow a Sentinel
//! fail-over on a long-lived connection (its connection manager reconnects
//! to the address it started with, the old primary). [`SentinelConn`]
//! adds that: every connection a [`RedisTarget`] opens follows one
//! [`PrimaryWatch`], which learns of a switch from the sentinels'
//! `+switch-master` announcements, a poll, and failed commands; a blocking
//! read ([`RedisConn::query_blocking`]) is abandoned at the switch.

pub mod args;
pub mod retry;
mod sentinel;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{
    Cmd, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
};

use self::sentinel::PrimaryWatch;
pub use self::sentinel::SentinelConn;

/// How the deployment runs Redis (`--redis-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One node (`redis://` or `rediss://`).
    #[default]
    Standalone,
    /// A primary with replicas behind Sentinel; the URL lists the sentinels.
    Sentinel,
    /// A Redis Cluster; the URL lists seed nodes.
    Cluster,
}

/// Connecting to Redis failed, or the Redis flags do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// The CA file could not be read.
    #[error("reading --redis-ca-file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed: retrying would not help.
    #[error(
        "TLS handshake with Redis at {target} failed: {message} (is --redis-ca-file the CA that signed the server's certificate, and does the certificate name this host?)"
    )]
    Tls {
        /// The (redacted) target.
        target: String,
        /// The TLS error.
        message: String,
    },
    /// Redis refused or could not be reached.
    #[error("connecting to Redis at {target}: {source}")]
    Redis {
        /// The (redacted) target.
        target: String,
        /// The Redis error.
        source: RedisError,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (Redis not up yet), as
    /// opposed to a configuration or certificate error.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Redis { .. })
    }
}

/// Where and how to connect: what the Redis flags say.
#[derive(Clone)]
pub struct RedisTarget {
    mode: RedisMode,
    urls: Vec<String>,
    master_name: Option<String>,
    ca_pem: Option<Vec<u8>>,
    /// With Sentinel: the watch every connection of this target (and its
    /// clones) follows, while any of them lives.
    primary_watch: Arc<tokio::sync::Mutex<Weak<PrimaryWatch>>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

/// How long a command may take before the connection is treated as broken;
/// above the longest XREADGROUP block the dispatcher uses.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the Cluster client sends a command again by itself (after a
/// redirection, a fail-over error or a dropped connection).
const CLUSTER_RESENDS: u32 = 6;
impl RedisTarget {
    /// Checks the flags together and reads the CA file.
    pub fn new(
        mode: RedisMode,
        url: &str,
        master_name: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ConnectError> {
        let urls = split_urls(url)?;
        let tls = urls.iter().any(|u| u.starts_with("rediss://"));
        let ca_pem = match ca_file {
            Some(path) if !tls => {
                return Err(ConnectError::Config(format!(
                    "--redis-ca-file {} is set but --redis-url does not use rediss:// (TLS)",
                    path.display()
                )));
            }
            Some(path) => Some(std::fs::read(path).map_err(|source| ConnectError::CaFile {
                path: path.display().to_string(),
                source,
            })?),
            None => None,
        };
        let master_name = master_name.map(str::to_string).filter(|m| !m.is_empty());
        match mode {
            RedisMode::Sentinel if master_name.is_none() => {
                return Err(ConnectError::Config(
                    "--redis-mode sentinel needs --redis-master-name (Sentinel's name of the primary)".into(),
                ));
            }
            RedisMode::Standalone if urls.len() > 1 => {
                return Err(ConnectError::Config(
                    "--redis-url lists several nodes: use --redis-mode sentinel or cluster, or give one URL".into(),
                ));
            }
            _ => {}
        }
        Ok(RedisTarget {
            mode,
            urls,
            master_name,
            ca_pem,
            primary_watch: Arc::new(tokio::sync::Mutex::new(Weak::new())),
        })
    }

    /// The target's [`PrimaryWatch`], started by the first connection (or
    /// again when the runtime that ran it is gone).
    async fn primary_watch(&self) -> Result<Arc<PrimaryWatch>, ConnectError> {
        let mut slot = self.primary_watch.lock().await;
        if let Some(watch) = slot.upgrade()
            && !watch.ended()
        {
            return Ok(watch);
        }
        let watch = PrimaryWatch::start(self).await?;
        *slot = Arc::downgrade(&watch);
        Ok(watch)
    }

    /// The mode.
    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    /// The target for messages, passwords redacted.
    pub fn describe(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        match (self.mode, &self.master_name) {
            (RedisMode::Sentinel, Some(name)) => format!("sentinel {} (master {name})", urls.join(",")),
            (RedisMode::Cluster, _) => format!("cluster {}", urls.join(",")),
            _ => urls.join(","),
        }
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    fn manager_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2))
    }

    fn error(&self, source: RedisError) -> ConnectError {
        let target = self.describe();
        match tls_failure(&source) {
            Some(message) => ConnectError::Tls { target, message },
            None => ConnectError::Redis { target, source },
        }
    }

    /// Opens a connection that reconnects by itself (and, with Sentinel,
    /// follows the primary).
    pub async fn connect(&self) -> Result<RedisConn, ConnectError> {
        self.connect_with_resends(CLUSTER_RESENDS).await
    }

    /// Like [`RedisTarget::connect`], but a command is never sent again by
    /// the connection itself: redis-rs's Cluster client re-sends one after
    /// a dropped connection, which for an `XADD` can append twice without
    /// telling. For `publish`, which retries itself and says when an
    /// append may have landed twice ([`crate::store::connection::retry`]).
    pub async fn connect_without_resends(&self) -> Result<RedisConn, ConnectError> {
        self.connect_with_resends(0).await
    }

    async fn connect_with_resends(&self, cluster_resends: u32) -> Result<RedisConn, ConnectError> {
        match self.mode {
            RedisMode::Standalone => {
                let client = self.client_for(&self.urls[0])?;
                let manager = ConnectionManager::new_with_config(client, Self::manager_config())
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(RedisConn::Single(manager))
            }
            RedisMode::Sentinel => Ok(RedisConn::Sentinel(SentinelConn::connect(self).await?)),
            RedisMode::Cluster => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(self.urls.clone())
                    .response_timeout(RESPONSE_TIMEOUT)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(cluster_resends);
                if let Some(certs) = self.certificates() {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| self.error(e))?;
                let conn = client.get_async_connection().await.map_err(|e| self.error(e))?;
                Ok(RedisConn::Cluster(conn))
            }
        }
    }

    fn client_for(&self, url: &str) -> Result<redis::Client, ConnectError> {
        let opened = match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        };
        opened.map_err(|e| ConnectError::Config(format!("parsing --redis-url {}: {e}", redact(url))))
    }
}

/// One connection to Redis in any mode; cheap to clone (clones share it).
#[derive(Clone)]
pub enum RedisConn {
    /// A single node.
    Single(ConnectionManager),
    /// The primary named by Sentinel.
    Sentinel(SentinelConn),
    /// A Cluster.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Sends a blocking command (`XREADGROUP ... BLOCK`). With Sentinel it
    /// is abandoned, `Ok(None)`, as soon as the sentinels name another
    /// primary, so the caller sends it again at once, there; a read
    /// blocked on the old primary would otherwise wait out its block (a
    /// forced fail-over leaves the old primary a writable master). After a
    /// block that ran out (`Nil`) the node's `ROLE` is checked, and the
    /// sentinels asked if it is no longer a primary.
    pub async fn query_blocking(&mut self, cmd: &Cmd) -> RedisResult<Option<Value>> {
        match self {
            RedisConn::Sentinel(c) => c.query_blocking(cmd).await,
            other => other
                .req_packed_command(cmd)
                .await
                .and_then(Value::extract_error)
                .map(Some),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Sentinel(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Sentinel(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The TLS error inside `error`, if the failure was the handshake.
fn tls_failure(error: &RedisError) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        source = e.source();
    }
    let text = error.to_string();
    (text.contains("certificate") || text.contains("InvalidCertificate")).then_some(text)
}

/// `--redis-url` as a list: `redis://[user:pass@]h1:p1,h2:p2` (later
/// elements may be bare `host:port` and take the first one's scheme,
/// credentials and database) or a comma-separated list of full URLs.
pub fn split_urls(url: &str) -> Result<Vec<String>, ConnectError> {
    let parts: Vec<&str> = url.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let Some(first) = parts.first() else {
        return Err(ConnectError::Config("--redis-url is empty".into()));
    };
    let base = url::Url::parse(first)
        .map_err(|e| ConnectError::Config(format!("parsing --redis-url {}: {e}", redact(first))))?;
    if !matches!(base.scheme(), "redis" | "rediss") {
        return Err(ConnectError::Config(format!(
            "--redis-url must start with redis:// or rediss://, not {}://",
            base.scheme()
        )));
    }
    let mut urls = vec![first.to_string()];
    for part in &parts[1..] {
        if part.contains("://") {
            urls.push(part.to_string());
            continue;
        }
        let (host, port) = part
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| ConnectError::Config(format!("--redis-url: {part:?} is not host:port")))?;
        let mut url = base.clone();
        url.set_host(Some(host.trim_start_matches('[').trim_end_matches(']')))
            .map_err(|e| ConnectError::Config(format!("--redis-url: {part:?}: {e}")))?;
        url.set_port(Some(port))
            .map_err(|()| ConnectError::Config(format!("--redis-url: {part:?}: bad port")))?;
        urls.push(url.to_string());
    }
    Ok(urls)
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_list_takes_the_first_urls_scheme_and_credentials() {
        let urls = split_urls("rediss://:s3cret@10.0.0.1:26379,10.0.0.2:26380, redis://h3:1").unwrap();
        assert_eq!(
            urls,
            [
                "rediss://:s3cret@10.0.0.1:26379",
                "rediss://:s3cret@10.0.0.2:26380",
                "redis://h3:1"
            ]
        );
        assert!(split_urls("http://x:1").is_err());
        assert!(split_urls("redis://a:1,nonsense").is_err());
    }

    #[test]
    fn flags_that_do_not_fit_are_refused_with_the_flag_named() {
        let err = RedisTarget::new(RedisMode::Sentinel, "redis://a:26379", None, None).unwrap_err();
        assert!(err.to_string().contains("--redis-master-name"), "{err}");
        let err = RedisTarget::new(RedisMode::Standalone, "redis://a:1,b:2", None, None).unwrap_err();
        assert!(err.to_string().contains("--redis-mode"), "{err}");
        let err = RedisTarget::new(
            RedisMode::Standalone,
            "redis://a:1",
            None,
            Some(std::path::Path::new("/nonexistent-ca.pem")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("rediss://"), "{err}");
    }

    #[test]
    fn descriptions_never_show_the_password() {
        let target = RedisTarget::new(RedisMode::Cluster, "redis://:hunter22@a:1,b:2", None, None).unwrap();
        let shown = format!("{} {target:?}", target.describe());
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
