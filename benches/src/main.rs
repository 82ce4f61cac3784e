//! The delivery-path benchmark of outbound-webhooks.
//!
//! One process drives everything: it starts the control plane (etcd,
//! kube-apiserver, Redis) through `scripts/control-plane.sh`, first runs the
//! controller scenario (the real controller process against 10,000 hooks
//! created at once), then runs a fast hyper receiver in-process, seeds hooks
//! with their Secrets and the controller's status (server-side apply, as the
//! controller would), fills Redis streams, starts dispatcher processes, runs
//! the baselines and prints a table. Every child stops when this process
//! ends (their stdin closes).
//!
//! Usage: `outbound-webhooks-bench REPO_DIR OUTBOUND_WEBHOOKS_BINARY`
//! (`benches/run.sh` does the build and passes both).
//!
//! This file is the wiring: the scenarios live in `controller_scenario`
//! (6), `throughput` (1a, 1b, 3), `latency` (2), `features` (7: filters and
//! tracing), `fleet` (8: 1,000 HTTPS hosts with latency, its receivers in
//! `tls_receiver`) and `footprint` (5, the
//! idle footprint with 50,000 hooks); what they start in `processes` and `receiver`; what they load in
//! `seed` and `load`; what they compare with in `baselines`.

// Shared with the tests (the test kit).
use outbound_webhooks_test_kit::{control_plane, process};

mod apiserver_metrics;
mod baselines;
mod controller_report;
mod controller_scenario;
mod features;
mod fleet;
mod footprint;
mod latency;
mod load;
mod processes;
mod receiver;
mod report;
mod seed;
mod shards;
mod throughput;
mod tls_receiver;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use kube::Client;

use crate::{
    control_plane::ControlPlane,
    processes::start_control_plane,
    receiver::{ReceiverState, start_receiver},
    report::Report,
    seed::{SeedHook, seed},
};

/// Every error of the bench ends the run with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The event every seeded hook subscribes to and every loader publishes.
pub const EVENT: &str = "kustomer.conversation.create";
/// The signing token of every seeded hook (baseline A signs with it too).
pub const TOKEN: &str = "6b2f0c8e4a1d9e7f3c5b8a0d2e4f6a8c1b3d5e7f9a0c2e4b6d8f0a1c3e5b7d9f";

/// Scale factor (env `BENCH_SCALE`, default 1): multiplies event counts.
pub fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * factor).round().max(1.0) as usize
}

/// `VAR` set to something other than empty or `0`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `VAR` set at all, even to `0` (how `BENCH_ONLY_1A` and `BENCH_SKIP_10K`
/// have always been read; `BENCH_SKIP_FOOTPRINT` is read the same way).
fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok()
}

/// What the dispatcher scenarios share: the control plane's addresses, the
/// binary, the clients and the receiver.
pub struct Env {
    /// Where logs and results go.
    pub state: PathBuf,
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// The `outbound-webhooks` binary.
    pub dispatcher_binary: PathBuf,
    /// The kube client.
    pub kube: Client,
    /// The shared Redis connection (loaders, baselines, INFO).
    pub redis: redis::aio::MultiplexedConnection,
    /// The fast receiver's port.
    pub receiver_port: u16,
    /// The fast receiver's counters.
    pub receiver: Arc<ReceiverState>,
}

impl Env {
    /// The receiver's path that answers at once.
    pub fn fast_url(&self) -> String {
        format!("http://127.0.0.1:{}/fast", self.receiver_port)
    }

    /// The receiver's path that answers after 5 s.
    pub fn slow_url(&self) -> String {
        format!("http://127.0.0.1:{}/slow", self.receiver_port)
    }
}

/// The hooks of scenarios 1a (bench-one x1), 1b (bench-five x5) and 3
/// (bench-iso, 4 fast + 1 slow).
fn scenario_hooks(env: &Env) -> Vec<SeedHook> {
    let fast = env.fast_url();
    let mut hooks = vec![SeedHook::new("bench-one", "hook-1", &fast)];
    hooks.extend((1..=5).map(|i| SeedHook::new("bench-five", format!("hook-{i}"), &fast)));
    hooks.extend((1..=4).map(|i| SeedHook::new("bench-iso", format!("fast-{i}"), &fast)));
    hooks.push(SeedHook::new("bench-iso", "slow-1", &env.slow_url()));
    hooks.extend(shards::ORGS.iter().map(|org| SeedHook::new(*org, "hook-1", &fast)));
    hooks.extend(features::hooks(&fast));
    hooks
}

async fn run(repo: PathBuf, binary: PathBuf) -> Result<(), Error> {
    let bench_started = Instant::now();
    let state = std::env::temp_dir().join(format!("outbound-webhooks-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    eprintln!("bench: state and logs in {}", state.display());
    eprintln!("bench: starting the control plane (etcd, kube-apiserver, redis-server)");
    let cp = start_control_plane(&repo, &state)?;
    let kube_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let kube = Client::try_from(kube_config)?;
    let mut report = Report::default();

    // First, before any hook is seeded: the controller would reconcile the
    // seeded hooks too (and their Secrets, which no hook controls). It is
    // stopped, and its hooks deleted, before the dispatcher scenarios.
    let only_controller = env_flag("BENCH_ONLY_CONTROLLER");
    let only_footprint = env_flag("BENCH_ONLY_FOOTPRINT");
    let only_fleet = env_set("BENCH_ONLY_FLEET");
    let only_features = env_set("BENCH_ONLY_FEATURES");
    if only_controller
        || !(env_set("BENCH_ONLY_1A")
            || only_footprint
            || only_fleet
            || only_features
            || env_flag("BENCH_SKIP_CONTROLLER"))
    {
        let clean_up = !only_controller;
        controller_scenario::controller_scenario(&kube, &binary, &cp.kubeconfig, &state, &mut report, clean_up).await?;
        let _ = report.write_partial(&state);
    }
    if only_controller {
        finish(report, cp, &state, bench_started);
        return Ok(());
    }

    let redis_client = redis::Client::open(cp.redis_url.as_str())?;
    let redis = redis_client.get_multiplexed_async_connection().await?;
    let (receiver_port, receiver, receiver_runtime) = start_receiver()?;
    // The receiver lives until the process exits (dropping a runtime inside
    // another one's async context would panic).
    std::mem::forget(receiver_runtime);
    let env = Env {
        state: state.clone(),
        kubeconfig: cp.kubeconfig.clone(),
        redis_url: cp.redis_url.clone(),
        dispatcher_binary: binary,
        kube,
        redis,
        receiver_port,
        receiver,
    };

    if only_fleet {
        fleet::scenario_8(&env, &mut report).await?;
        finish(report, cp, &state, bench_started);
        return Ok(());
    }
    if only_footprint {
        footprint::scenario_5(&env, &mut report, 0).await?;
        finish(report, cp, &state, bench_started);
        return Ok(());
    }

    eprintln!("bench: seeding hooks (bench-one x1, bench-five x5, bench-iso 4 fast + 1 slow)");
    let hooks = scenario_hooks(&env);
    let seeded = hooks.len();
    seed(&env.kube, hooks, 8).await?;

    if only_features {
        features::scenario_7(&env, &mut report).await?;
        finish(report, cp, &state, bench_started);
        return Ok(());
    }
    if let Some(rate) = std::env::var("BENCH_ONLY_LATENCY")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        latency::scenario_2(&env, &mut report, 2.0 * rate).await?;
        finish(report, cp, &state, bench_started);
        return Ok(());
    }
    let one = throughput::scenario_1a(&env, &mut report).await?;
    if env_set("BENCH_ONLY_1A") {
        finish(report, cp, &state, bench_started);
        return Ok(());
    }
    let rate_1b = throughput::scenario_1b(&env, &mut report, &one).await?;
    let _ = report.write_partial(&state);
    latency::scenario_2(&env, &mut report, one.rate.max(1.0)).await?;
    let _ = report.write_partial(&state);
    throughput::scenario_3(&env, &mut report, rate_1b).await?;
    let _ = report.write_partial(&state);
    shards::scenario_shards(&env, &mut report).await?;
    let _ = report.write_partial(&state);
    if !env_set("BENCH_SKIP_FEATURES") {
        features::scenario_7(&env, &mut report).await?;
        let _ = report.write_partial(&state);
    }
    if !env_set("BENCH_SKIP_FLEET") {
        fleet::scenario_8(&env, &mut report).await?;
        let _ = report.write_partial(&state);
    }
    if !(env_set("BENCH_SKIP_FOOTPRINT") || env_set("BENCH_SKIP_10K")) {
        footprint::scenario_5(&env, &mut report, seeded).await?;
    }
    finish(report, cp, &state, bench_started);
    Ok(())
}

/// Prints the table and stops the control plane.
fn finish(report: Report, cp: ControlPlane, state: &Path, bench_started: Instant) {
    report.print();
    eprintln!("bench: finished in {:.0}s", bench_started.elapsed().as_secs_f64());
    // The script removes the cluster's data (etcd, Redis) as it stops; logs
    // and results stay.
    drop(cp);
    let _ = report.write_partial(state);
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: outbound-webhooks-bench REPO_DIR OUTBOUND_WEBHOOKS_BINARY");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        // Ctrl-C ends `run`, whose drops stop every child.
        tokio::select! {
            r = run(args[1].clone().into(), args[2].clone().into()) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
