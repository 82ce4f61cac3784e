//! Scenario 2: latency from just before `XADD` to the receiver's arrival
//! (same process, same clock), publishing at a steady rate into one running
//! dispatcher: at 1,000 events/s (the target) and at half of 1a's rate.

use std::{
    collections::HashMap,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use outbound_webhooks::dispatcher::store::Keys;

use crate::{
    Env, Error, load,
    processes::Dispatcher,
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
    Ok(Latency {
        rate,
        sent: total,
        arrived: millis.len(),
        p50: percentile(&millis, 50.0),
        p99: percentile(&millis, 99.0),
        p999: percentile(&millis, 99.9),
        max: millis.last().copied().unwrap_or(f64::NAN),
        worst_at_s,
    })
}

/// Scenario 2 with its rows; `max_rate` is 1a's dispatcher deliveries/s.
pub async fn scenario_2(env: &Env, report: &mut Report, max_rate: f64) -> Result<(), Error> {
    eprintln!("bench: scenario 2: latency at 1,000 events/s and at half the measured max");
    let dispatcher = Dispatcher::start(env, PREFIX, "dispatcher-latency", &[]).await?;
    let seconds = 10.0 * scale(1000) as f64 / 1000.0;
    for rate in [1000.0, (max_rate / 2.0).round()] {
        let (stored_before, direct_before) = (dispatcher.metric(STORED).await, dispatcher.metric(DIRECT).await);
        let l = latency(env, rate, seconds).await?;
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
            format!("target <= 20 ms: {}", verdict(l.p99 <= 20.0))
        } else {
            String::new()
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
    }
    Ok(())
}
