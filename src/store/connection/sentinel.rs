//! Following the primary behind Sentinel: [`SentinelConn`] is one
//! connection to it, switched at a fail-over; [`PrimaryWatch`] learns of
//! the switch for every connection of a target (the sentinels'
//! `+switch-master`, a poll, failed commands).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use futures::StreamExt;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
};
use tokio::{
    sync::{Notify, watch},
    task::AbortHandle,
};
use tokio_util::sync::CancellationToken;

use super::{ConnectError, RedisTarget, redact};

/// The fewest time between two look-ups of the Sentinel primary, so a burst
/// of failing commands asks the sentinels once.
const SENTINEL_RESOLVE_EVERY: Duration = Duration::from_millis(250);
/// How often the sentinels are asked for the primary besides their
/// announcements and failed commands: the bound on following a switch
/// whose announcement was missed. A forced fail-over (`SENTINEL FAILOVER`)
/// leaves the old primary answering, and writable, until Sentinel
/// reconfigures it (about 10 s); what is written there meanwhile is lost.
const SENTINEL_POLL_EVERY: Duration = Duration::from_millis(500);

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
    pub(super) async fn connect(target: &RedisTarget) -> Result<Self, ConnectError> {
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
    pub(super) async fn query_blocking(&self, cmd: &Cmd) -> RedisResult<Option<Value>> {
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
pub(super) struct PrimaryWatch {
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
    pub(super) async fn start(target: &RedisTarget) -> Result<Arc<PrimaryWatch>, ConnectError> {
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
    pub(super) fn ended(&self) -> bool {
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
