//! Retrying one Redis command through a fail-over, within a deadline, and
//! knowing whether a failed attempt may still have taken effect.
//!
//! Redis answers `CLUSTERDOWN`, `TRYAGAIN`, `READONLY`, `MASTERDOWN`,
//! `LOADING`, `MOVED` or `ASK` without running the command, and a refused
//! connection never carried it: retrying those cannot repeat it. A
//! connection that drops or times out after the command was written leaves
//! it unknown whether Redis ran it: a retry may run it twice, which the
//! caller hears about ([`Answer::maybe_repeated`]).
//!
//! The connection must not re-send commands itself, or it repeats them
//! without telling: redis-rs's Cluster client does after a dropped
//! connection unless built with `retries(0)`
//! ([`crate::redis_conn::RedisTarget::connect_without_resends`]).

use std::time::{Duration, Instant};

use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, aio::ConnectionLike};

/// What a failed attempt says about the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Redis refused it or never got it: retrying cannot repeat it.
    NotApplied,
    /// The connection broke or timed out once it may have been sent: Redis
    /// may have run it.
    MaybeApplied,
    /// Retrying will not help (a wrong type, a refused password, ...).
    Permanent,
}

/// How `error` left the command.
pub fn failure_of(error: &RedisError) -> Failure {
    let refused_by_redis = matches!(
        error.code(),
        Some("CLUSTERDOWN" | "TRYAGAIN" | "READONLY" | "MASTERDOWN" | "LOADING" | "MOVED" | "ASK")
    );
    if refused_by_redis || error.is_connection_refusal() || error.kind() == ErrorKind::ClusterConnectionNotFound {
        Failure::NotApplied
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
        Failure::MaybeApplied
    } else {
        Failure::Permanent
    }
}

/// A command's answer after retries.
#[derive(Debug)]
pub struct Answer<T> {
    /// What Redis answered.
    pub value: T,
    /// Attempts made, the answered one included.
    pub attempts: u32,
    /// An earlier attempt may have run too.
    pub maybe_repeated: bool,
}

/// A command that failed for good or until the deadline.
#[derive(Debug)]
pub struct Failed {
    /// The last attempt's error.
    pub error: RedisError,
    /// How it left the command.
    pub failure: Failure,
    /// Attempts made.
    pub attempts: u32,
    /// An attempt (this one or an earlier) may have run.
    pub maybe_applied: bool,
}

/// The first wait between attempts, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(1000);
/// The least time the first attempt gets, however close the deadline:
/// a command is always sent once.
const FIRST_ATTEMPT_AT_LEAST: Duration = Duration::from_secs(1);

/// What [`query_retrying`] sends: one command, or a pipeline whose
/// commands go together on one connection (on a Cluster, to the node of
/// the first command with a key).
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// One command.
    Cmd(&'a Cmd),
    /// Several, in one round trip.
    Pipeline(&'a Pipeline),
}

impl Request<'_> {
    async fn send<C, T>(self, conn: &mut C) -> redis::RedisResult<T>
    where
        C: ConnectionLike + Send + Sync,
        T: FromRedisValue,
    {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipeline(pipeline) => pipeline.query_async(conn).await,
        }
    }
}

/// Sends `cmd` until Redis answers, an error is [`Failure::Permanent`], or
/// `deadline` passes (an attempt still waiting then counts as
/// [`Failure::MaybeApplied`]).
pub async fn query_retrying<C, T>(conn: &mut C, cmd: &Cmd, deadline: Instant) -> Result<Answer<T>, Failed>
where
    C: ConnectionLike + Send + Sync,
    T: FromRedisValue,
{
    request_retrying(conn, Request::Cmd(cmd), deadline).await
}

/// [`query_retrying`] for a command or a pipeline.
pub async fn request_retrying<C, T>(conn: &mut C, request: Request<'_>, deadline: Instant) -> Result<Answer<T>, Failed>
where
    C: ConnectionLike + Send + Sync,
    T: FromRedisValue,
{
    let mut attempts = 0;
    let mut maybe_applied = false;
    let mut pause = FIRST_PAUSE;
    let mut last_error: Option<RedisError> = None;
    loop {
        attempts += 1;
        let mut left = deadline.saturating_duration_since(Instant::now());
        if attempts == 1 {
            left = left.max(FIRST_ATTEMPT_AT_LEAST);
        }
        let error = match tokio::time::timeout(left, request.send::<C, T>(conn)).await {
            Ok(Ok(value)) => {
                return Ok(Answer {
                    value,
                    attempts,
                    maybe_repeated: maybe_applied && attempts > 1,
                });
            }
            Ok(Err(error)) => error,
            Err(_) => {
                // Name what failed before, not only the waiting (e.g. a
                // connection that is being re-established to a dead node).
                let before = last_error
                    .as_ref()
                    .map(|e| format!("; the attempt before failed with: {e}"))
                    .unwrap_or_default();
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within the retry deadline{before}"),
                ))
            }
        };
        let failure = failure_of(&error);
        maybe_applied |= failure == Failure::MaybeApplied;
        let left = deadline.saturating_duration_since(Instant::now());
        if failure == Failure::Permanent || left.is_zero() {
            return Err(Failed {
                error,
                failure,
                attempts,
                maybe_applied,
            });
        }
        tracing::debug!(%error, ?failure, attempts, "Redis command failed; trying again");
        last_error = Some(error);
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_cannot_have_run_and_broken_connections_may_have() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(failure_of(&refused), Failure::NotApplied);
        let not_found = RedisError::from((ErrorKind::ClusterConnectionNotFound, "no connection"));
        assert_eq!(failure_of(&not_found), Failure::NotApplied);
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::TimedOut,
        ] {
            let dropped = RedisError::from(std::io::Error::from(kind));
            assert_eq!(failure_of(&dropped), Failure::MaybeApplied, "{kind:?}");
        }
        let wrong_type = RedisError::from((ErrorKind::UnexpectedReturnType, "not a string"));
        assert_eq!(failure_of(&wrong_type), Failure::Permanent);
        let reply = |text: &str| {
            redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
                .and_then(redis::Value::extract_error)
                .expect_err("an error reply")
        };
        for text in [
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down",
            "LOADING Redis is loading the dataset in memory",
            "MOVED 3999 127.0.0.1:6381",
        ] {
            assert_eq!(failure_of(&reply(text)), Failure::NotApplied, "{text}");
        }
        assert_eq!(
            failure_of(&reply(
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            )),
            Failure::Permanent
        );
    }
}
