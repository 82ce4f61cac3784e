//! The baselines the dispatcher is measured against: what the same machine
//! does with the two halves of its work done bare.
//!
//! - A: a reqwest loop POSTing the same signed bodies to the same receiver,
//!   at the dispatcher's concurrency (the HTTP half).
//! - B: `XREADGROUP COUNT 100` + `XACK` over the same entries (the Redis half).
//! - C: `wrk` POSTing the same signed body to the same receiver over as many
//!   connections: the machine's HTTP limit (a C client with no per-request
//!   work of its own), so every throughput row is also a share of it.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Instant,
};

use outbound_webhooks::{wire::envelope, wire::signing, wire::stream_entry::parse_entry};

use crate::{EVENT, Error, TOKEN};

/// Event ids and the envelope bodies the dispatcher would send for them.
pub type Bodies = Arc<Vec<(String, Vec<u8>)>>;

/// Baseline B: bare XREADGROUP (COUNT 100) + XACK of every entry of a stream.
/// Returns entries per second.
pub async fn baseline_b(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Result<f64, Error> {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("baseline-b")
        .arg("0")
        .query_async(conn)
        .await?;
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("baseline-b")
            .arg("c")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let ids: Vec<String> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).map(|i| i.id).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            break;
        }
        total += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg("baseline-b")
            .arg(&ids)
            .query_async(conn)
            .await?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The envelope bodies the dispatcher would send for every entry of
/// `stream`, built by the crate's own parser and envelope builder.
pub async fn bodies_of(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Result<Bodies, Error> {
    first_bodies_of(conn, stream, usize::MAX).await
}

/// [`bodies_of`] the first `max` entries (at least those of one read).
pub async fn first_bodies_of(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    max: usize,
) -> Result<Bodies, Error> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    while out.len() < max {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if reply.ids.is_empty() {
            break;
        }
        for entry in &reply.ids {
            let fields: HashMap<String, Vec<u8>> = entry
                .map
                .iter()
                .filter_map(|(k, v)| {
                    redis::from_redis_value::<Vec<u8>>(v.clone())
                        .ok()
                        .map(|b| (k.clone(), b))
                })
                .collect();
            let event = parse_entry(&entry.id, &fields).map_err(|e| format!("entry {}: {e}", entry.id))?;
            out.push((event.id.clone(), envelope::build(&event)));
        }
        start = format!("({}", reply.ids.last().expect("non-empty").id);
    }
    Ok(Arc::new(out))
}

/// The headers the dispatcher sends with `body` (event `id`), signed now
/// with the bench's token, as a bare client sends them.
pub fn signed_headers(id: &str, body: &[u8]) -> [(&'static str, String); 6] {
    let timestamp = jiff::Timestamp::now().as_second();
    [
        ("content-type", "application/json".to_string()),
        ("x-kustomer-webhook-event", EVENT.to_string()),
        ("x-kustomer-webhook-signature", signing::kustomer_signature(TOKEN, body)),
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signing::standard_webhooks_signature(TOKEN, id, timestamp, body),
        ),
    ]
}

/// Baseline A: a bare reqwest loop sending `total` signed deliveries, cycling
/// over `bodies`, `concurrency` at a time. Returns requests per second.
pub async fn baseline_a(url: &str, bodies: Bodies, total: usize, concurrency: usize) -> Result<f64, Error> {
    // The dispatcher's client settings that cost or save work per request.
    let client = reqwest::Client::builder()
        .user_agent("outbound-webhooks/bench")
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        return Ok::<(), reqwest::Error>(());
                    }
                    let (id, body) = &bodies[i % bodies.len()];
                    let mut request = client.post(&url);
                    for (name, value) in signed_headers(id, body) {
                        request = request.header(name, value);
                    }
                    let response = request.body(body.clone()).send().await?;
                    let _ = response.bytes().await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// How long each baseline C run lasts.
const WRK_SECONDS: u32 = 5;

/// A Lua string literal (wrk's script language) holding `s`.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Baseline C: `wrk` with `connections` connections (two threads, one per
/// core) POSTing `bodies`' first body, signed as the dispatcher signs it, to
/// `url` for [`WRK_SECONDS`]. Returns requests per second.
pub async fn baseline_c(url: &str, bodies: &Bodies, connections: usize, state: &Path) -> Result<f64, Error> {
    let (id, body) = bodies.first().ok_or("baseline C needs a body")?;
    let body = std::str::from_utf8(body)?;
    let timestamp = jiff::Timestamp::now().as_second();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("user-agent", "outbound-webhooks/bench".to_string()),
        ("x-kustomer-webhook-event", EVENT.to_string()),
        (
            "x-kustomer-webhook-signature",
            signing::kustomer_signature(TOKEN, body.as_bytes()),
        ),
        ("webhook-id", id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signing::standard_webhooks_signature(TOKEN, id, timestamp, body.as_bytes()),
        ),
    ];
    let mut script = format!("wrk.method = \"POST\"\nwrk.body = {}\n", lua_string(body));
    for (name, value) in headers {
        script.push_str(&format!("wrk.headers[{}] = {}\n", lua_string(name), lua_string(&value)));
    }
    let path = state.join("baseline-c.lua");
    std::fs::write(&path, script)?;
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{WRK_SECONDS}s"),
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .await
        .map_err(|e| {
            format!("running wrk (baseline C; scripts/install-tools.sh installs it: apt-get install wrk): {e}")
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed: {stdout} {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    if stdout.contains("Non-2xx") || stdout.contains("Socket errors") {
        return Err(format!("wrk saw errors: {stdout}").into());
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output: {stdout}").into())
}
