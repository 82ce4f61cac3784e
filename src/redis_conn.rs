//! Connections to Redis as users run it: one node (`redis://` or
//! `rediss://`), a primary behind Sentinel, or a Cluster. Every command
//! goes through [`RedisConn`], which the rest of the crate uses like any
//! redis-rs async connection.
//!
//! redis-rs follows MOVED/ASK and fail-overs on a Cluster, and reconnects a
//! single node by itself; what it does not do is follow a Sentinel
//! fail-over on a long-lived connection (its connection manager reconnects
//! to the address it started with, the old primary). [`SentinelConn`]
//! adds that: on a connection error or a `READONLY` reply it asks the
//! sentinels for the primary again and switches to it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{
    Cmd, ConnectionAddr, IntoConnectionInfo, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};

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
/// The fewest time between two look-ups of the Sentinel primary, so a burst
/// of failing commands asks the sentinels once.
const SENTINEL_RESOLVE_EVERY: Duration = Duration::from_millis(250);

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
        })
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
    /// append may have landed twice ([`crate::redis_retry`]).
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

    fn sentinel_client(&self) -> Result<SentinelClient, ConnectError> {
        let bad = |e: RedisError| ConnectError::Config(format!("parsing --redis-url {}: {e}", self.describe()));
        let first = self.urls[0].as_str().into_connection_info().map_err(bad)?;
        let mut addrs = Vec::new();
        for url in &self.urls {
            addrs.push(url.as_str().into_connection_info().map_err(bad)?.addr().clone());
        }
        let tls = matches!(addrs[0], ConnectionAddr::TcpTls { .. });
        let name = self.master_name.as_deref().unwrap_or_default();
        let settings = first.redis_settings();
        let mut builder = SentinelClientBuilder::new(addrs, name, SentinelServerType::Master)
            .map_err(bad)?
            .set_client_to_redis_db(settings.db());
        // One set of credentials, the URL's, for the primary and the sentinels.
        if let Some(user) = settings.username() {
            builder = builder
                .set_client_to_redis_username(user)
                .set_client_to_sentinel_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder
                .set_client_to_redis_password(password)
                .set_client_to_sentinel_password(password);
        }
        if tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some(certs) = self.certificates() {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
        builder.build().map_err(bad)
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

/// A connection to the primary Sentinel names, switched to the new primary
/// after a fail-over.
#[derive(Clone)]
pub struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    target: RedisTarget,
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary's connection, its address, and when the primary was
    /// last looked up.
    current: Mutex<Primary>,
}

struct Primary {
    conn: ConnectionManager,
    addr: String,
    checked: Instant,
}

/// How often the sentinels are asked whether the primary moved, besides
/// after a failed command: a forced fail-over (`SENTINEL FAILOVER`) leaves
/// the old primary answering, and writable, until Sentinel reconfigures it
/// (about 10 s); what is written there meanwhile is lost.
const SENTINEL_POLL_EVERY: Duration = Duration::from_millis(500);

impl SentinelConn {
    async fn connect(target: &RedisTarget) -> Result<Self, ConnectError> {
        let mut sentinels = target.sentinel_client()?;
        let client = sentinels.async_get_client().await.map_err(|e| target.error(e))?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, RedisTarget::manager_config())
            .await
            .map_err(|e| target.error(e))?;
        let inner = Arc::new(SentinelInner {
            target: target.clone(),
            sentinels: tokio::sync::Mutex::new(sentinels),
            current: Mutex::new(Primary {
                conn,
                addr,
                checked: Instant::now(),
            }),
        });
        // The watch ends with the last clone of the connection.
        let watched = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SENTINEL_POLL_EVERY).await;
                let Some(inner) = watched.upgrade() else { break };
                SentinelConn { inner }.check_primary().await;
            }
        });
        Ok(SentinelConn { inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Primary> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> ConnectionManager {
        self.lock().conn.clone()
    }

    /// After an error that may mean a fail-over: looks the primary up again
    /// (at most every [`SENTINEL_RESOLVE_EVERY`]).
    async fn follow_primary(&self, error: &RedisError) {
        if may_be_failover(error) && self.lock().checked.elapsed() >= SENTINEL_RESOLVE_EVERY {
            self.check_primary().await;
        }
    }

    /// Asks the sentinels for the primary; connects to it when it moved.
    async fn check_primary(&self) {
        let mut sentinels = self.inner.sentinels.lock().await;
        let found = sentinels.async_get_client().await;
        self.lock().checked = Instant::now();
        let client = match found {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "asking Sentinel for the primary");
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        if addr == self.lock().addr {
            return;
        }
        match ConnectionManager::new_with_config(client, RedisTarget::manager_config()).await {
            Ok(conn) => {
                tracing::info!(target = %self.inner.target.describe(), primary = %addr, "the primary moved; connected to the new one");
                let mut current = self.lock();
                current.conn = conn;
                current.addr = addr;
            }
            Err(e) => tracing::warn!(error = %e, primary = %addr, "connecting to the new primary Sentinel names"),
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.current();
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.follow_primary(e).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.current();
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                self.follow_primary(e).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current().get_db()
    }
}

/// Errors after which the primary may have moved: the connection broke, or
/// the node we reached is a replica now.
fn may_be_failover(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING" | "UNBLOCKED"))
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
