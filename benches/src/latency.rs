//! Scenario 2: latency from just before `XADD` to the receiver's arrival
//! (same process, same clock), publishing at a steady rate into one running
//! dispatcher: at 1,000 events/s (the target) and at half of 1a's rate.

use std::{
    collections::HashMap,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use outbound_webhooks::store::Keys;

use crate::{
    Env, Error, load,
    processes::{Dispatcher, own_stats, redis_cpu_seconds},
    report::{Report, percentile, verdict},
    scale,
};

/// One latency run's figures, in ms unless named otherwise.
struct Latency {
    /// Events published per second.
    rate: f64,
    sent: usize,
    arrived: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// Seconds into the run at which the slowest event was sent.
    worst_at_s: f64,
    /// Where the events slower than [`SLOW_MS`] were sent: "N in W windows
    /// of 100 ms; worst: at 9.4 s (230, max 51 ms), ...".
    slow_windows: String,
    /// What Redis's slow log and latency monitor saw.
    redis: String,
}

/// An event slower than this counts towards the tail's windows.
const SLOW_MS: f64 = 5.0;

/// Groups the (sent at, took) pairs slower than [`SLOW_MS`] into windows of
/// 100 ms by when they were sent: one pause shows as one window with many
/// events, a steady tail as many windows with few.
fn slow_windows(samples: &[(f64, f64)]) -> String {
    let mut windows: HashMap<u64, (usize, f64)> = HashMap::new();
    let mut slow = 0;
    for &(at_s, took_ms) in samples.iter().filter(|(_, took)| *took > SLOW_MS) {
        slow += 1;
        let w = windows.entry((at_s * 10.0) as u64).or_default();
        w.0 += 1;
        w.1 = w.1.max(took_ms);
    }
    let mut worst: Vec<(u64, (usize, f64))> = windows.iter().map(|(k, v)| (*k, *v)).collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1.0));
    let top: Vec<String> = worst
        .iter()
        .take(3)
        .map(|(w, (n, max))| format!("at {:.1} s ({n}, max {max:.0} ms)", *w as f64 / 10.0))
        .collect();
    format!(
        "{slow} events > {SLOW_MS} ms in {} windows of 100 ms; worst: {}",
        windows.len(),
        if top.is_empty() {
            "none".to_string()
        } else {
            top.join(", ")
        }
    )
}

/// Turns on Redis's slow log (commands over 1 ms) and latency monitor
/// (events over 2 ms), emptied, so a run shows what stalled Redis.
async fn redis_watch(conn: &mut redis::aio::MultiplexedConnection) -> Result<(), Error> {
    redis::pipe()
        .cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000)
        .ignore()
        .cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg(2)
        .ignore()
        .cmd("SLOWLOG")
        .arg("RESET")
        .ignore()
        .cmd("LATENCY")
        .arg("RESET")
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// What Redis's slow log and latency monitor saw since [`redis_watch`].
async fn redis_stalls(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let slow: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(3)
        .query_async(conn)
        .await
        .unwrap_or_default();
    let slow_len: i64 = redis::cmd("SLOWLOG").arg("LEN").query_async(conn).await.unwrap_or(0);
    // SLOWLOG GET: [id, time, micros, [command, args...], ...]
    let commands: Vec<String> = slow
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let micros = match fields.get(2)? {
                redis::Value::Int(n) => *n,
                _ => return None,
            };
            let name = match fields.get(3)? {
                redis::Value::Array(args) => match args.first()? {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
                    _ => return None,
                },
                _ => return None,
            };
            Some(format!("{name} {:.1} ms", micros as f64 / 1000.0))
        })
        .collect();
    let latest: Vec<(String, i64, i64, i64)> = redis::cmd("LATENCY")
        .arg("LATEST")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let events: Vec<String> = latest
        .iter()
        .map(|(event, _, _, max)| format!("{event} max {max} ms"))
        .collect();
    format!(
        "slow log: {slow_len} over 1 ms{}{}; latency monitor: {}",
        if commands.is_empty() { "" } else { ", latest " },
        commands.join(", "),
        if events.is_empty() {
            "no event over 2 ms".to_string()
        } else {
            events.join(", ")
        }
    )
}

const PREFIX: &str = "{bench-lat}:";
const ORG: &str = "bench-one";
/// The first-delivery counters by path: a first attempt sent straight from
/// the stream, or stored as a task first (which costs more round trips).
const STORED: &str = "outbound_webhooks_first_deliveries_total{path=\"stored\"}";
const DIRECT: &str = "outbound_webhooks_first_deliveries_total{path=\"direct\"}";

/// Publishes at `rate` events/s for `seconds` into a running dispatcher and
/// measures XADD (just before sending) to arrival at the receiver.
async fn latency(env: &Env, rate: f64, seconds: f64) -> Result<Latency, Error> {
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = Keys::new(PREFIX).events();
    let total = (rate * seconds).round() as usize;
    env.receiver.arrivals.lock().expect("arrivals lock").clear();
    env.receiver.recording.store(true, Relaxed);
    redis_watch(&mut conn).await?;
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(total);
    let t0 = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
        load::publish(&mut conn, &stream, ORG, |id| {
            sent.insert(id.to_string(), Instant::now());
        })
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.receiver.arrivals.lock().expect("arrivals lock").len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.receiver.recording.store(false, Relaxed);
    let arrivals = std::mem::take(&mut *env.receiver.arrivals.lock().expect("arrivals lock"));
    let mut millis: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    // When (seconds into the run) the slowest event was sent: to tell one
    // pause from a steady tail, and to line it up with periodic work.
    let started = t0.into_std();
    let worst_at_s = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| (at.duration_since(*s), s.duration_since(started))))
        .max_by_key(|(took, _)| *took)
        .map(|(_, when)| when.as_secs_f64())
        .unwrap_or(f64::NAN);
    millis.sort_by(f64::total_cmp);
    let samples: Vec<(f64, f64)> = arrivals
        .iter()
        .filter_map(|(id, at)| {
            let s = sent.get(id)?;
            Some((
                s.duration_since(started).as_secs_f64(),
                at.duration_since(*s).as_secs_f64() * 1000.0,
            ))
        })
        .collect();
    let redis = redis_stalls(&mut conn).await;
    Ok(Latency {
        rate,
        sent: total,
        arrived: millis.len(),
        p50: percentile(&millis, 50.0),
        p99: percentile(&millis, 99.0),
        p999: percentile(&millis, 99.9),
        max: millis.last().copied().unwrap_or(f64::NAN),
        worst_at_s,
        slow_windows: slow_windows(&samples),
        redis,
    })
}

/// Scenario 2 with its rows; `max_rate` is 1a's dispatcher deliveries/s.
pub async fn scenario_2(env: &Env, report: &mut Report, max_rate: f64) -> Result<(), Error> {
    eprintln!("bench: scenario 2: latency at 1,000 events/s and at half the measured max");
    let dispatcher = Dispatcher::start(env, PREFIX, "dispatcher-latency", &[]).await?;
    let seconds = 10.0 * scale(1000) as f64 / 1000.0;
    // BENCH_LATENCY_RATES="1000,3000,6000" measures other rates (to find
    // where the tail starts) instead of 1,000/s and half the max.
    let rates: Vec<f64> = match std::env::var("BENCH_LATENCY_RATES") {
        Ok(list) => list.split(',').filter_map(|r| r.trim().parse().ok()).collect(),
        Err(_) => vec![1000.0, (max_rate / 2.0).round()],
    };
    let mut conn = env.redis.clone();
    for rate in rates {
        let (stored_before, direct_before) = (dispatcher.metric(STORED).await, dispatcher.metric(DIRECT).await);
        let (ours_before, own_before) = (dispatcher.stats(), own_stats());
        let redis_before = redis_cpu_seconds(&mut conn).await;
        let started = std::time::Instant::now();
        let l = latency(env, rate, seconds).await?;
        let wall = started.elapsed().as_secs_f64();
        let cores = format!(
            "dispatcher {:.2}, bench (loader + receiver) {:.2}, redis-server {:.2}",
            (dispatcher.stats().cpu_seconds - ours_before.cpu_seconds) / wall,
            (own_stats().cpu_seconds - own_before.cpu_seconds) / wall,
            (redis_cpu_seconds(&mut conn).await - redis_before) / wall,
        );
        let (stored, direct) = (
            dispatcher.metric(STORED).await - stored_before,
            dispatcher.metric(DIRECT).await - direct_before,
        );
        let name = format!("2 latency at {:.0} events/s", l.rate);
        report.row(
            &name,
            "p50 XADD->arrival",
            format!("{:.2} ms", l.p50),
            &format!("{} of {} arrived", l.arrived, l.sent),
        );
        let note = if rate == 1000.0 {
            format!("target <= 2 ms: {}", verdict(l.p99 <= 2.0))
        } else {
            format!("target at half the max <= 5 ms: {}", verdict(l.p99 <= 5.0))
        };
        report.row(&name, "p99", format!("{:.2} ms", l.p99), &note);
        report.row(
            &name,
            "p99.9",
            format!("{:.2} ms", l.p999),
            &format!("max {:.1} ms, sent {:.1} s into the run", l.max, l.worst_at_s),
        );
        report.row(
            &name,
            "first deliveries direct / stored as tasks",
            format!("{direct:.0} / {stored:.0}"),
            "stored: the hook looked slow or a slot did not free up in time",
        );
        report.row(
            &name,
            "where the tail was",
            l.slow_windows.clone(),
            "by when the event was sent",
        );
        report.row(&name, "Redis stalls", l.redis.clone(), "SLOWLOG, LATENCY LATEST");
        report.row(&name, "cores used (of 2)", cores, "CPU seconds per second of the run");
    }
    Ok(())
}
