//! Scenario 5: the footprint of a dispatcher whose caches hold 50,000 hooks
//! (10,000 namespaces x 5, seeded in bulk with their Secrets and status,
//! plus those of the other scenarios): seeding time, time until its caches
//! synced (`/readyz`), idle RSS and RSS per hook (over a dispatcher started
//! before the seeding). Its per-delivery rows come with 1a and 1b.
//!
//! `BENCH_FOOTPRINT_COMPARE` (space-separated paths of other
//! `outbound-webhooks` binaries, or scripts that exec one) measures each of
//! them too, on the same hooks: a before/after pair costs one seeding.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    Env, Error,
    processes::{Dispatcher, ProcStats},
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

/// One dispatcher's start-up and idle figures.
struct Measured {
    synced_in: Duration,
    idle: ProcStats,
}

/// Starts `binary`, times it until ready (its caches synced) and reads its
/// RSS once it settled.
async fn measure(env: &Env, binary: &Path, log_name: &str) -> Result<Measured, Error> {
    let started = Instant::now();
    let dispatcher = Dispatcher::start_binary(env, binary, "{bench-fp}:", log_name, &[]).await?;
    let synced_in = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let idle = dispatcher.stats();
    drop(dispatcher);
    Ok(Measured { synced_in, idle })
}

/// Seeds the hooks and measures the dispatcher (and each binary of
/// `BENCH_FOOTPRINT_COMPARE`) with them cached.
pub async fn scenario_5(env: &Env, report: &mut Report, hooks_already: usize) -> Result<(), Error> {
    let mut binaries = vec![("", env.dispatcher_binary.clone())];
    let compare = std::env::var("BENCH_FOOTPRINT_COMPARE").unwrap_or_default();
    binaries.extend(compare.split_whitespace().map(|p| (p, PathBuf::from(p))));

    // Before the seeding: what a dispatcher takes with (almost) no hooks.
    let empty = measure(env, &env.dispatcher_binary, "dispatcher-fp-empty").await?;

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
        let m = measure(env, binary, &format!("dispatcher-fp-{i}")).await?;
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
    }
    Ok(())
}
