//! Scenario 5: the footprint of a dispatcher whose caches hold 50,000 hooks
//! (10,000 namespaces x 5, seeded in bulk with their Secrets and status,
//! plus those of the other scenarios): seeding time, time until its caches
//! synced (`/readyz`), idle RSS and RSS per hook (over a dispatcher started
//! before the seeding), then its CPU per 1,000 deliveries for one org's
//! events published live with all of them cached (routing must look at
//! the org's hooks, not at every hook cached). Its per-delivery rows of
//! drained backlogs come with 1a and 1b.
//!
//! `BENCH_FOOTPRINT_COMPARE` (space-separated paths of other
//! `outbound-webhooks` binaries, or scripts that exec one) measures each of
//! them too, on the same hooks: a before/after pair costs one seeding.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use outbound_webhooks::store::Keys;

use crate::{
    Env, Error,
    load::publish,
    processes::{Dispatcher, ProcStats},
    receiver::wait_count,
    report::{Report, mib, verdict},
    scale,
    seed::{SeedHook, seed},
};

/// The target for the idle RSS.
const TARGET_BYTES: u64 = 200 * 1024 * 1024;
/// Namespaces seeded, 5 hooks each.
const NAMESPACES: usize = 10_000;
/// Seeding requests in flight: the API server, not the bench, is the limit.
const SEED_CONCURRENCY: usize = 128;
/// Idle means start-up settled (the waker's first pass, the first
/// upkeep), not the moment `/readyz` first answers.
const SETTLE: Duration = Duration::from_secs(5);

/// The prefix the scenario's dispatchers read.
const PREFIX: &str = "{bench-fp}:";
/// The org whose events are published live (its 5 seeded hooks take each).
const LIVE_ORG: &str = "fp-00000";
/// Events published live, one XADD at a time (small batches: a batch's
/// routing cost is paid per event).
const LIVE_EVENTS: usize = 3_000;
/// Their rate (events/s).
const LIVE_RATE: f64 = 300.0;

/// One dispatcher's start-up and idle figures, and its live deliveries.
struct Measured {
    synced_in: Duration,
    idle: ProcStats,
    live: Option<Live>,
}

/// Deliveries of events published live with the seeded hooks cached.
struct Live {
    delivered: u64,
    expected: u64,
    cpu_per_1000: f64,
}

/// Starts `binary`, times it until ready (its caches synced), reads its
/// RSS once it settled and, with `live`, publishes [`LIVE_EVENTS`] for
/// [`LIVE_ORG`] and measures its CPU until they all arrived.
async fn measure(env: &Env, binary: &Path, log_name: &str, live: bool) -> Result<Measured, Error> {
    let started = Instant::now();
    let dispatcher = Dispatcher::start_binary(env, binary, PREFIX, log_name, &[]).await?;
    let synced_in = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let idle = dispatcher.stats();
    let live = if live {
        Some(publish_live(env, &dispatcher).await?)
    } else {
        None
    };
    drop(dispatcher);
    Ok(Measured { synced_in, idle, live })
}

async fn publish_live(env: &Env, dispatcher: &Dispatcher) -> Result<Live, Error> {
    let stream = Keys::new(PREFIX).events();
    let mut conn = env.redis.clone();
    let start = env.receiver.fast.load(Relaxed);
    let before = dispatcher.stats();
    let t0 = tokio::time::Instant::now();
    for i in 0..LIVE_EVENTS {
        publish(&mut conn, &stream, LIVE_ORG, |_| {}).await?;
        tokio::time::sleep_until(t0 + Duration::from_secs_f64((i + 1) as f64 / LIVE_RATE)).await;
    }
    let expected = 5 * LIVE_EVENTS as u64;
    let (delivered, _) = wait_count(&env.receiver.fast, start, expected, Duration::from_secs(60)).await;
    let after = dispatcher.stats();
    Ok(Live {
        delivered,
        expected,
        cpu_per_1000: (after.cpu_seconds - before.cpu_seconds) / (delivered.max(1) as f64 / 1000.0),
    })
}

/// Seeds the hooks and measures the dispatcher (and each binary of
/// `BENCH_FOOTPRINT_COMPARE`) with them cached.
pub async fn scenario_5(env: &Env, report: &mut Report, hooks_already: usize) -> Result<(), Error> {
    let mut binaries = vec![("", env.dispatcher_binary.clone())];
    let compare = std::env::var("BENCH_FOOTPRINT_COMPARE").unwrap_or_default();
    binaries.extend(compare.split_whitespace().map(|p| (p, PathBuf::from(p))));

    // Before the seeding: what a dispatcher takes with (almost) no hooks.
    let empty = measure(env, &env.dispatcher_binary, "dispatcher-fp-empty", false).await?;

    let namespaces = scale(NAMESPACES);
    eprintln!("bench: scenario 5: seeding {namespaces} namespaces x 5 hooks with Secrets and status");
    let seeding = Instant::now();
    let url = env.fast_url();
    let hooks: Vec<SeedHook> = (0..namespaces)
        .flat_map(|n| (1..=5).map(move |i| (n, i)))
        .map(|(n, i)| SeedHook::new(format!("fp-{n:05}"), format!("hook-{i}"), &url))
        .collect();
    let count = hooks.len();
    seed(&env.kube, hooks, SEED_CONCURRENCY).await?;
    let seeded_in = seeding.elapsed().as_secs_f64();
    report.row(
        "5 footprint",
        &format!("seeding {count} hooks + Secrets + status ({namespaces} namespaces)"),
        format!("{seeded_in:.0} s"),
        &format!(
            "{:.0} hooks/s, 3 writes each, {SEED_CONCURRENCY} in flight",
            count as f64 / seeded_in
        ),
    );

    let cached = count + hooks_already;
    for (i, (label, binary)) in binaries.iter().enumerate() {
        let m = measure(env, binary, &format!("dispatcher-fp-{i}"), true).await?;
        let per_hook = m.idle.rss.saturating_sub(empty.idle.rss) as f64 / count as f64;
        let which = if label.is_empty() {
            String::new()
        } else {
            format!(" [{label}]")
        };
        report.row(
            "5 footprint",
            &format!("idle RSS, {cached} hooks cached{which}"),
            format!("{:.1} MiB", mib(m.idle.rss)),
            &format!(
                "target <= 200 MiB: {}; {:.2} KiB per hook over {:.1} MiB with none; peak {:.1} MiB",
                verdict(m.idle.rss <= TARGET_BYTES),
                per_hook / 1024.0,
                mib(empty.idle.rss),
                mib(m.idle.peak_rss),
            ),
        );
        report.row(
            "5 footprint",
            &format!("start until caches synced (/readyz){which}"),
            format!("{:.1} s", m.synced_in.as_secs_f64()),
            &format!("{:.1} s of CPU until idle", m.idle.cpu_seconds),
        );
        if let Some(live) = &m.live {
            report.row(
                "5 footprint",
                &format!("dispatcher CPU s per 1,000 deliveries, one org's events live, all cached{which}"),
                format!("{:.3}", live.cpu_per_1000),
                &format!(
                    "{LIVE_EVENTS} events at {LIVE_RATE:.0}/s for the 5 hooks of {LIVE_ORG}; {} of {} delivered",
                    live.delivered, live.expected
                ),
            );
        }
    }
    Ok(())
}
