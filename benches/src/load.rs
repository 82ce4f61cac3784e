//! The loaders: events as a producer appends them to a prefix's events
//! stream, pre-filled in pipelined batches or published one at a time.
//!
//! Event ids count up from one process-wide counter, so no two events of a
//! run share an id, whichever stream they went to (scenario 2 matches
//! arrivals to sends by it).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use outbound_webhooks::store::Keys;
use serde_json::json;

use crate::{EVENT, Error};

static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

/// A fresh event: its id and its `data` (a realistic conversation object).
fn next_event() -> (String, String) {
    let n = NEXT_EVENT.fetch_add(1, Relaxed);
    let id = format!("be{n:022x}");
    // Numbered one past the id, as the bench always sent it: the same
    // bytes keep runs of different versions comparable.
    let data = json!({"type": "conversation", "id": format!("c{:023x}", NEXT_EVENT.load(Relaxed)),
           "attributes": {"name": "Order 1234 is late", "channels": ["email"], "priority": 3, "status": "open"}})
    .to_string();
    (id, data)
}

/// The XADD of one event for `org` to `stream`.
fn xadd(stream: &str, org: &str, id: &str, data: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("*")
        .arg("org")
        .arg(org)
        .arg("name")
        .arg(EVENT)
        .arg("data")
        .arg(data)
        .arg("id")
        .arg(id);
    cmd
}

/// Appends `n` events for `org` to the events stream of `prefix`, 1,000 per pipeline.
pub async fn fill(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    org: &str,
    n: usize,
) -> Result<(), Error> {
    fill_stream(conn, &Keys::new(prefix).events(), org, n).await
}

/// Appends `n` events for `org` to `stream`, 1,000 per pipeline.
pub async fn fill_stream(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    org: &str,
    n: usize,
) -> Result<(), Error> {
    fill_turns(conn, stream, &[org], n).await
}

/// Appends `per_org` events for each of `orgs` to the events stream of
/// `prefix`, the orgs taking turns (as many tenants publishing at once).
pub async fn fill_interleaved(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    orgs: &[&str],
    per_org: usize,
) -> Result<(), Error> {
    fill_turns(conn, &Keys::new(prefix).events(), orgs, per_org).await
}

/// Appends `per_org` events for each of `orgs` to `stream`, the orgs
/// taking turns, 1,000 per pipeline.
async fn fill_turns(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    orgs: &[&str],
    per_org: usize,
) -> Result<(), Error> {
    let all: Vec<&str> = (0..per_org).flat_map(|_| orgs.iter().copied()).collect();
    for batch in all.chunks(1000) {
        let mut pipe = redis::pipe();
        for org in batch {
            let (id, data) = next_event();
            pipe.add_command(xadd(stream, org, &id, &data)).ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok(())
}

/// Publishes one event for `org` to `stream`; calls `before_send` with its
/// id just before the XADD goes out (where scenario 2 starts its clock).
pub async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    org: &str,
    before_send: impl FnOnce(&str),
) -> Result<(), Error> {
    let (id, data) = next_event();
    before_send(&id);
    let _: String = xadd(stream, org, &id, &data).query_async(conn).await?;
    Ok(())
}
