//! Scenario 4's idle row: the RSS of a dispatcher whose caches hold 10,011
//! hooks (2,000 namespaces x 5, seeded with their Secrets and status, plus
//! the 11 of the other scenarios). Its per-delivery rows come with 1a and 1b.

use std::time::{Duration, Instant};

use crate::{
    Env, Error,
    processes::Dispatcher,
    report::{Report, mib, verdict},
    scale,
    seed::{SeedHook, seed},
};

/// The target for the idle RSS.
const TARGET_BYTES: u64 = 100 * 1024 * 1024;

/// Seeds the hooks, starts a dispatcher and reads its RSS once it settled.
pub async fn idle_with_10k_hooks(env: &Env, report: &mut Report, hooks_already: usize) -> Result<(), Error> {
    let namespaces = scale(2000);
    eprintln!("bench: scenario 4: seeding {namespaces} namespaces x 5 hooks with Secrets and status");
    let seeding = Instant::now();
    let url = env.fast_url();
    let hooks: Vec<SeedHook> = (0..namespaces)
        .flat_map(|n| (1..=5).map(move |i| (n, i)))
        .map(|(n, i)| SeedHook::new(format!("fp-{n:04}"), format!("hook-{i}"), &url))
        .collect();
    let count = hooks.len();
    seed(&env.kube, hooks, 48).await?;
    let seeded_in = seeding.elapsed().as_secs_f64();
    let dispatcher = Dispatcher::start(env, "{bench-fp}:", "dispatcher-10k", &[]).await?;
    // Idle means start-up settled, not the moment /readyz first answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = dispatcher.stats();
    drop(dispatcher);
    report.row(
        "4 footprint",
        &format!("idle RSS, {} hooks cached", count + hooks_already),
        format!("{:.1} MiB", mib(idle.rss)),
        &format!(
            "target <= 100 MiB: {} (seeded in {seeded_in:.0}s)",
            verdict(idle.rss <= TARGET_BYTES)
        ),
    );
    Ok(())
}
