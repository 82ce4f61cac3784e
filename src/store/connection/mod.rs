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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use futures::StreamExt;
use redis::AsyncConnectionConfig;
use redis::{
    Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster_async::ClusterConnection,
};
use tokio::{
    sync::{Notify, watch},
    task::AbortHandle,
};
use tokio_util::sync::CancellationToken;

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
/// The fewest time between two look-ups of the Sentinel primary, so a burst
/// of failing commands asks the sentinels once.
const SENTINEL_RESOLVE_EVERY: Duration = Duration::from_millis(250);
/// How often the sentinels are asked for the primary besides their
/// announcements and failed commands: the bound on following a switch
/// whose announcement was missed. A forced fail-over (`SENTINEL FAILOVER`)
/// leaves the old primary answering, and writable, until Sentinel
/// reconfigures it (about 10 s); what is written there meanwhile is lost.
const SENTINEL_POLL_EVERY: Duration = Duration::from_millis(500);

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

/// A connection to the primary Sentinel names, switched to the new primary
/// as soon as the process learns of a fail-over ([`PrimaryWatch`]).
#[derive(Clone)]
pub struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    watch: Arc<PrimaryWatch>,
    current: Mutex<OnPrimary>,
    /// One reconnection at a time: clones that find the primary moved
    /// together connect once.
    switching: tokio::sync::Mutex<()>,
}

/// A connection to a primary, and the generation of the watch's answer
/// that named it.
struct OnPrimary {
    conn: ConnectionManager,
    generation: u64,
}

impl SentinelConn {
    async fn connect(target: &RedisTarget) -> Result<Self, ConnectError> {
        let watch = target.primary_watch().await?;
        let named = watch.named();
        let conn = watch.connect_to(&named).await.map_err(|e| target.error(e))?;
        Ok(SentinelConn {
            inner: Arc::new(SentinelInner {
                watch,
                current: Mutex::new(OnPrimary {
                    conn,
                    generation: named.generation,
                }),
                switching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OnPrimary> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, if it is to the primary of `generation`.
    fn at(&self, generation: u64) -> Option<ConnectionManager> {
        let current = self.lock();
        (current.generation == generation).then(|| current.conn.clone())
    }

    /// The connection to the primary the sentinels name now (a new one
    /// after a switch), with the generation that named it.
    async fn on_primary(&self) -> RedisResult<(ConnectionManager, u64)> {
        let named = self.inner.watch.named();
        if let Some(conn) = self.at(named.generation) {
            return Ok((conn, named.generation));
        }
        let _one = self.inner.switching.lock().await;
        let named = self.inner.watch.named();
        if let Some(conn) = self.at(named.generation) {
            return Ok((conn, named.generation));
        }
        let conn = self.inner.watch.connect_to(&named).await?;
        tracing::info!(target = %self.inner.watch.target.describe(), primary = %named.addr(), "the primary moved; connected to the new one");
        let mut current = self.lock();
        current.conn = conn.clone();
        current.generation = named.generation;
        Ok((conn, named.generation))
    }

    /// After an error that may mean a fail-over: asks the sentinels again
    /// (at most every [`SENTINEL_RESOLVE_EVERY`]), so a retry goes to the
    /// new primary.
    async fn after_error(&self, error: &RedisError) {
        if may_be_failover(error) {
            self.inner.watch.look_up_now().await;
        }
    }

    /// See [`RedisConn::query_blocking`].
    async fn query_blocking(&self, cmd: &Cmd) -> RedisResult<Option<Value>> {
        let (mut conn, generation) = match self.on_primary().await {
            Ok(on) => on,
            Err(e) => {
                self.after_error(&e).await;
                return Err(e);
            }
        };
        let mut named = self.inner.watch.named.subscribe();
        let reply = tokio::select! {
            reply = conn.req_packed_command(cmd) => reply.and_then(Value::extract_error),
            // Abandoning the read loses no entry. If Redis delivered
            // entries to it, they are in the group's pending list (PEL) of
            // that node under our consumer name, not acknowledged: where
            // that node is still the primary (the answer flip-flopped),
            // the consumer reads its own pending entries from `0` at once
            // (it does after every abandoned read) and any other
            // dispatcher's claimer takes them after --reclaim-idle; where
            // the new primary replicated them before its promotion, they
            // are pending or unread there, and read the same ways. Only
            // entries written to the old primary after the switch are
            // lost, with its data, when Sentinel makes it a replica: the
            // forced-fail-over loss of docs/src/redis.md#what-a-fail-over-can-lose.
            _ = named.wait_for(|n| n.generation != generation) => return Ok(None),
        };
        match reply {
            Err(e) => {
                self.after_error(&e).await;
                Err(e)
            }
            // The block ran out: the node should still be a primary. If it
            // is not (the sentinels' switch message was missed and the
            // poll has not caught up yet), ask them now.
            Ok(Value::Nil) => {
                if !is_primary(&mut conn).await {
                    self.inner.watch.look_up_now().await;
                }
                Ok(Some(Value::Nil))
            }
            Ok(value) => Ok(Some(value)),
        }
    }
}

/// Whether the node answers `ROLE` as a primary.
async fn is_primary(conn: &mut ConnectionManager) -> bool {
    let role: RedisResult<Value> = redis::cmd("ROLE").query_async(conn).await;
    let first = match role {
        Ok(Value::Array(items)) => items.into_iter().next(),
        _ => None,
    };
    match first {
        Some(Value::BulkString(role)) => role == b"master",
        Some(Value::SimpleString(role)) => role == "master",
        _ => false,
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = match self.on_primary().await {
                Ok((mut conn, _)) => conn.req_packed_command(cmd).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                self.after_error(e).await;
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
            let result = match self.on_primary().await {
                Ok((mut conn, _)) => conn.req_packed_commands(pipeline, offset, count).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                self.after_error(e).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.lock().conn.get_db()
    }
}

/// The primary the sentinels name, as the process last learned it.
#[derive(Clone, Debug)]
struct Named {
    host: String,
    port: u16,
    /// The sentinels' `config-epoch` of that answer: every fail-over makes
    /// a higher one, so an answer with a lower one is out of date.
    epoch: u64,
    /// Counts the primary's changes: a connection made for another
    /// generation is to an old primary.
    generation: u64,
}

impl Named {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One sentinel's answer: the primary's address and its config epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    host: String,
    port: u16,
    epoch: u64,
}

/// One Sentinel deployment's primary, followed for every connection a
/// [`RedisTarget`] (and its clones) opens in this process: the dispatcher's
/// command connection and its blocking readers switch together.
///
/// Three sources, so a missed one costs at most a poll: a subscription to
/// every sentinel's `+switch-master` (a switch is followed within a round
/// trip of the sentinel's message), a poll of every sentinel each
/// [`SENTINEL_POLL_EVERY`], and a look-up after any error that may mean a
/// fail-over (and after a blocking read finds its node no longer a
/// primary). Answers are ordered by the sentinels' config epoch, so a
/// sentinel that has not heard of a fail-over yet never moves us back.
struct PrimaryWatch {
    target: RedisTarget,
    /// One client per sentinel.
    sentinels: Vec<redis::Client>,
    /// A connection per sentinel for the look-ups, made when needed.
    asking: Vec<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    named: watch::Sender<Named>,
    /// Serialises look-ups; when the last one ended.
    looked_up: tokio::sync::Mutex<Instant>,
    /// Ends the watch's tasks.
    stop: CancellationToken,
    /// The poll task: a watch whose runtime is gone is started again.
    poll: Mutex<Option<AbortHandle>>,
}

/// How long a sentinel may take to answer a look-up or to connect.
const SENTINEL_ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The wait before subscribing again to a sentinel that dropped us.
const SENTINEL_RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// The sentinels' fail-over announcement.
const SWITCH_MASTER: &str = "+switch-master";

impl Drop for PrimaryWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PrimaryWatch {
    /// Asks the sentinels for the primary, then keeps following it.
    async fn start(target: &RedisTarget) -> Result<Arc<PrimaryWatch>, ConnectError> {
        let mut sentinels = Vec::with_capacity(target.urls.len());
        for url in &target.urls {
            // Sentinels have no databases: a SELECT would be refused.
            let mut url = url::Url::parse(url)
                .map_err(|e| ConnectError::Config(format!("parsing --redis-url {}: {e}", redact(url))))?;
            url.set_path("");
            sentinels.push(target.client_for(url.as_str())?);
        }
        let mut watch = PrimaryWatch {
            target: target.clone(),
            asking: sentinels.iter().map(|_| tokio::sync::Mutex::new(None)).collect(),
            sentinels,
            named: watch::Sender::new(Named {
                host: String::new(),
                port: 0,
                epoch: 0,
                generation: 0,
            }),
            looked_up: tokio::sync::Mutex::new(Instant::now()),
            stop: CancellationToken::new(),
            poll: Mutex::new(None),
        };
        let (answers, error) = watch.ask_all().await;
        let Some(best) = answers.iter().max_by_key(|a| a.epoch) else {
            let error =
                error.unwrap_or_else(|| RedisError::from((ErrorKind::Io, "no sentinel answered", target.describe())));
            return Err(target.error(error));
        };
        watch.named = watch::Sender::new(Named {
            host: best.host.clone(),
            port: best.port,
            epoch: best.epoch,
            generation: 0,
        });
        let watch = Arc::new(watch);
        let soon = Arc::new(Notify::new());
        let poll = tokio::spawn(keep_polling(Arc::downgrade(&watch), watch.stop.clone()));
        *watch.poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(poll.abort_handle());
        for (i, client) in watch.sentinels.iter().enumerate() {
            tokio::spawn(follow_switches(
                Arc::downgrade(&watch),
                i,
                client.clone(),
                soon.clone(),
                watch.stop.clone(),
            ));
        }
        tokio::spawn(look_up_when_told(Arc::downgrade(&watch), soon, watch.stop.clone()));
        Ok(watch)
    }

    /// Whether its tasks have ended (their runtime was shut down).
    fn ended(&self) -> bool {
        let poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
        poll.as_ref().is_none_or(AbortHandle::is_finished)
    }

    fn named(&self) -> Named {
        self.named.borrow().clone()
    }

    /// A connection to the primary `named`, with the first URL's scheme,
    /// credentials and database.
    async fn connect_to(&self, named: &Named) -> RedisResult<ConnectionManager> {
        let bad = |e: String| RedisError::from((ErrorKind::InvalidClientConfig, "the primary's URL", e));
        let mut url = url::Url::parse(&self.target.urls[0]).map_err(|e| bad(e.to_string()))?;
        url.set_host(Some(&named.host)).map_err(|e| bad(e.to_string()))?;
        url.set_port(Some(named.port)).map_err(|()| bad("bad port".into()))?;
        let client = self.target.client_for(url.as_str()).map_err(|e| bad(e.to_string()))?;
        ConnectionManager::new_with_config(client, RedisTarget::manager_config()).await
    }

    /// Sentinel `i`'s answer.
    async fn ask(&self, i: usize) -> RedisResult<Answer> {
        let mut slot = self.asking[i].lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(SENTINEL_ASK_TIMEOUT))
                    .set_response_timeout(Some(SENTINEL_ASK_TIMEOUT));
                self.sentinels[i]
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        let name = self.target.master_name.as_deref().unwrap_or_default();
        let reply: HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(name)
            .query_async(&mut conn)
            .await?;
        // Kept for the next look-up only once it answered.
        *slot = Some(conn);
        let field = |key: &str| reply.get(key).map(String::as_str);
        let answer = (|| {
            Some(Answer {
                host: field("ip")?.to_string(),
                port: field("port")?.parse().ok()?,
                epoch: field("config-epoch")?.parse().ok()?,
            })
        })();
        answer.ok_or_else(|| {
            RedisError::from((
                ErrorKind::Parse,
                "a sentinel's SENTINEL MASTER answer",
                format!("{reply:?}"),
            ))
        })
    }

    /// Every sentinel's answer (those that gave one), and an error if any.
    async fn ask_all(&self) -> (Vec<Answer>, Option<RedisError>) {
        let replies = futures::future::join_all((0..self.sentinels.len()).map(|i| self.ask(i))).await;
        let mut answers = Vec::new();
        let mut error = None;
        for reply in replies {
            match reply {
                Ok(answer) => answers.push(answer),
                Err(e) => error = Some(e),
            }
        }
        (answers, error)
    }

    /// Asks every sentinel and follows the newest answer. Rate-limited to
    /// one look-up every [`SENTINEL_RESOLVE_EVERY`], so a burst of
    /// failing commands asks once.
    async fn look_up_now(&self) {
        let mut last = self.looked_up.lock().await;
        if last.elapsed() < SENTINEL_RESOLVE_EVERY {
            return;
        }
        let (answers, error) = self.ask_all().await;
        if let Some(e) = error {
            tracing::debug!(error = %e, "asking a sentinel for the primary");
        }
        if let Some(best) = answers.iter().max_by_key(|a| a.epoch) {
            // Every sentinel agreeing overrules a higher epoch we saw
            // before (a deployment whose sentinels were reset).
            let unanimous = answers.len() == self.sentinels.len() && answers.iter().all(|a| a == best);
            self.follow(best, unanimous);
        }
        *last = Instant::now();
    }

    /// Moves to `answer` if it is newer than what we follow (or `overrule`).
    fn follow(&self, answer: &Answer, overrule: bool) {
        let mut moved_from = None;
        self.named.send_if_modified(|named| {
            if answer.epoch < named.epoch && !overrule {
                return false;
            }
            named.epoch = answer.epoch;
            if named.host == answer.host && named.port == answer.port {
                return false;
            }
            moved_from = Some(named.addr());
            named.host = answer.host.clone();
            named.port = answer.port;
            named.generation += 1;
            true
        });
        if let Some(old) = moved_from {
            tracing::info!(
                target = %self.target.describe(), %old, new = %format!("{}:{}", answer.host, answer.port), epoch = answer.epoch,
                "Sentinel names a new primary; every connection moves to it"
            );
        }
    }
}

/// Polls the sentinels until the watch is gone.
async fn keep_polling(watch: Weak<PrimaryWatch>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SENTINEL_POLL_EVERY) => {}
        }
        let Some(watch) = watch.upgrade() else { return };
        watch.look_up_now().await;
    }
}

/// Looks the primary up when a subscription was (re)made: a switch may
/// have been announced while it was down.
async fn look_up_when_told(watch: Weak<PrimaryWatch>, soon: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = soon.notified() => {}
        }
        let Some(watch) = watch.upgrade() else { return };
        watch.look_up_now().await;
    }
}

/// Follows sentinel `i`'s `+switch-master` announcements for our master,
/// subscribing again whenever the subscription drops.
async fn follow_switches(
    watch: Weak<PrimaryWatch>,
    i: usize,
    client: redis::Client,
    soon: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut subscribed_before = false;
    loop {
        let subscribe = async {
            let mut pubsub = tokio::time::timeout(SENTINEL_ASK_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| RedisError::from((ErrorKind::Io, "subscribing to a sentinel timed out")))??;
            pubsub.subscribe(SWITCH_MASTER).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            () = stop.cancelled() => return,
            subscribed = subscribe => subscribed,
        };
        match subscribed {
            Ok(pubsub) => {
                if subscribed_before {
                    soon.notify_one();
                }
                subscribed_before = true;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Some(watch) = watch.upgrade() else { return };
                    let ours = watch.target.master_name.as_deref().unwrap_or_default();
                    // `<name> <old ip> <old port> <new ip> <new port>`
                    if payload.split(' ').next() != Some(ours) {
                        continue;
                    }
                    // The announcing sentinel has the new configuration: its
                    // answer carries the epoch that orders it.
                    match watch.ask(i).await {
                        Ok(answer) => watch.follow(&answer, false),
                        Err(e) => {
                            tracing::debug!(error = %e, "asking the sentinel that announced a switch");
                            soon.notify_one();
                        }
                    }
                }
                tracing::debug!(
                    sentinel = i,
                    "the subscription to a sentinel's fail-over announcements dropped"
                );
            }
            Err(e) => tracing::debug!(sentinel = i, error = %e, "subscribing to a sentinel's fail-over announcements"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SENTINEL_RESUBSCRIBE_AFTER) => {}
        }
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
