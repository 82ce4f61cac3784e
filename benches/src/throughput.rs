//! Scenarios 1a, 1b (throughput against the baselines, with the default
//! threads and again with `--worker-threads 1`) and 3 (isolation from a slow
//! hook), and their rows in scenario 4 (CPU and RSS per delivery).
//!
//! Each drain is one fresh dispatcher on a pre-filled prefix, timed from
//! `/readyz` to the last arrival, so start-up and catch-up are not mixed in.

use std::{sync::atomic::Ordering::Relaxed, time::Duration, time::Instant};

use outbound_webhooks::store::Keys;

use crate::{
    Env, Error,
    baselines::{Bodies, baseline_a, baseline_b, baseline_c, bodies_of},
    load::fill,
    processes::{Dispatcher, busiest_commands, own_stats, redis_command_calls, redis_cpu_seconds},
    receiver::wait_count,
    report::{Report, mib, verdict},
    scale,
};

/// How long 1a's and 1b's drains may take before they count what arrived.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);
/// Scenario 3's, shorter: its target is about the fast hooks only.
const ISOLATION_TIMEOUT: Duration = Duration::from_secs(60);
const FOOTPRINT: &str = "4 footprint";

/// What one dispatcher drained and what it cost.
pub struct Drain {
    redis_cpu_per_1000: f64,
    /// Share of the dispatcher's CPU spent in the kernel.
    system_share: f64,
    /// CPU of this process (the receiver) per 1,000 deliveries.
    receiver_cpu_per_1000: f64,
    delivered: u64,
    target: u64,
    seconds: f64,
    /// Deliveries per second.
    pub rate: f64,
    /// Dispatcher CPU seconds per 1,000 deliveries.
    pub cpu_per_1000: f64,
    peak_rss: u64,
    /// Redis commands called most, per 1,000 deliveries.
    redis_commands: String,
}

/// Starts a dispatcher on a pre-filled prefix and waits until `target`
/// deliveries reached the receiver (counter `fast`).
pub(crate) async fn drain(
    env: &Env,
    prefix: &str,
    name: &str,
    target: u64,
    timeout: Duration,
    extra: &[&str],
) -> Result<Drain, Error> {
    let start = env.receiver.fast.load(Relaxed);
    let dispatcher = Dispatcher::start(env, prefix, name, extra).await?;
    let before = dispatcher.stats();
    let own_before = own_stats();
    let mut conn = env.redis.clone();
    let redis_before = redis_cpu_seconds(&mut conn).await;
    let calls_before = redis_command_calls(&mut conn).await;
    let t0 = Instant::now();
    let (delivered, last) = wait_count(&env.receiver.fast, start, target, timeout).await;
    let after = dispatcher.stats();
    let own_after = own_stats();
    let redis_after = redis_cpu_seconds(&mut conn).await;
    let calls_after = redis_command_calls(&mut conn).await;
    let seconds = last.duration_since(t0).as_secs_f64().max(1e-3);
    drop(dispatcher);
    let thousands = delivered.max(1) as f64 / 1000.0;
    Ok(Drain {
        delivered,
        target,
        seconds,
        rate: delivered as f64 / seconds,
        cpu_per_1000: (after.cpu_seconds - before.cpu_seconds) / thousands,
        system_share: (after.system_seconds - before.system_seconds)
            / (after.cpu_seconds - before.cpu_seconds).max(1e-9),
        receiver_cpu_per_1000: (own_after.cpu_seconds - own_before.cpu_seconds) / thousands,
        peak_rss: after.peak_rss,
        redis_cpu_per_1000: (redis_after - redis_before) / thousands,
        redis_commands: busiest_commands(&calls_before, &calls_after, delivered, 5),
    })
}

impl Drain {
    /// "N of M in S s".
    pub(crate) fn progress(&self) -> String {
        format!("{} of {} in {:.1}s", self.delivered, self.target, self.seconds)
    }

    /// Scenario 4's dispatcher CPU row of scenario `id`.
    fn cpu_row(&self, report: &mut Report, id: &str, note: &str) {
        report.row(
            FOOTPRINT,
            &format!("CPU s per 1,000 deliveries ({id})"),
            format!("{:.3}", self.cpu_per_1000),
            note,
        );
    }

    /// Scenario 4's Redis CPU and peak RSS rows of scenario `id`.
    fn redis_and_rss_rows(&self, report: &mut Report, id: &str) {
        report.row(
            FOOTPRINT,
            &format!("redis-server CPU s per 1,000 deliveries ({id})"),
            format!("{:.3}", self.redis_cpu_per_1000),
            "INFO cpu",
        );
        report.row(
            FOOTPRINT,
            &format!("Redis calls per 1,000 deliveries ({id})"),
            self.redis_commands.clone(),
            "INFO commandstats, the 5 most called",
        );
        report.row(
            FOOTPRINT,
            &format!("peak RSS under {id}"),
            format!("{:.1} MiB", mib(self.peak_rss)),
            "VmHWM",
        );
    }
}

/// A throughput scenario: `deliveries` from prefixes `bench-{id}:` (default
/// threads) and `bench-{id}1:` (one worker thread), pre-filled by the caller.
struct Throughput {
    id: &'static str,
    /// The rows' scenario column.
    scenario: &'static str,
    deliveries: usize,
    /// Baseline A's requests in flight: the dispatcher's bound, 16 per hook
    /// (also baseline C's connections).
    concurrency: usize,
    /// The target, as a share of baseline A or of baseline C.
    target: Target,
}

/// A throughput target: the least share of one baseline.
#[derive(Clone, Copy)]
enum Target {
    OfA(f64),
    OfC(f64),
}

/// A throughput scenario's two drains between two baseline A runs.
struct AgainstBaselineA {
    scenario: &'static str,
    concurrency: usize,
    baseline_a_before: f64,
    baseline_a_after: f64,
    /// Baseline C's requests per second (wrk, as many connections).
    baseline_c: f64,
    target: Target,
    /// CPU of this process (client and receiver) per 1,000 requests of the first baseline A run.
    baseline_a_cpu_per_1000: f64,
    default_threads: Drain,
    one_thread: Drain,
}

/// Baseline A, the dispatcher, the dispatcher on one worker thread, baseline
/// A again: this machine's speed drifts by 10-20% within minutes (a shared
/// VM), so the dispatcher is compared with the mean of both baseline runs.
async fn against_baseline_a(env: &Env, bodies: &Bodies, t: Throughput) -> Result<AgainstBaselineA, Error> {
    eprintln!(
        "bench: baseline A: reqwest, concurrency {} (16 per hook)",
        t.concurrency
    );
    let own_before = own_stats();
    let baseline_a_before = baseline_a(&env.fast_url(), bodies.clone(), t.deliveries, t.concurrency).await?;
    let own_after = own_stats();
    eprintln!("bench: baseline C: wrk, {} connections", t.concurrency);
    let baseline_c = baseline_c(&env.fast_url(), bodies, t.concurrency, &env.state).await?;
    eprintln!("bench: scenario {}: dispatcher draining", t.id);
    let target = t.deliveries as u64;
    let (prefix, log) = (format!("{{bench-{}}}:", t.id), format!("dispatcher-{}", t.id));
    let default_threads = drain(env, &prefix, &log, target, DRAIN_TIMEOUT, &[]).await?;
    eprintln!("bench: scenario {} again, the dispatcher on one worker thread", t.id);
    let (prefix, log) = (
        format!("{{bench-{}1}}:", t.id),
        format!("dispatcher-{}-one-thread", t.id),
    );
    let one_thread = drain(env, &prefix, &log, target, DRAIN_TIMEOUT, &["--worker-threads", "1"]).await?;
    eprintln!("bench: baseline A again");
    let baseline_a_after = baseline_a(&env.fast_url(), bodies.clone(), t.deliveries, t.concurrency).await?;
    Ok(AgainstBaselineA {
        scenario: t.scenario,
        concurrency: t.concurrency,
        baseline_a_before,
        baseline_a_after,
        baseline_c,
        target: t.target,
        baseline_a_cpu_per_1000: (own_after.cpu_seconds - own_before.cpu_seconds) / (t.deliveries as f64 / 1000.0),
        default_threads,
        one_thread,
    })
}

impl AgainstBaselineA {
    /// Baseline A's requests per second, the mean of both runs.
    fn baseline_a(&self) -> f64 {
        (self.baseline_a_before + self.baseline_a_after) / 2.0
    }

    /// A dispatcher run's deliveries/s.
    fn deliveries_row(&self, report: &mut Report, measure: &str, d: &Drain, note: &str) {
        report.row(self.scenario, measure, format!("{:.0}", d.rate), note);
    }

    /// The dispatcher's deliveries/s and baseline A's requests/s.
    fn rate_rows(&self, report: &mut Report) {
        let d = &self.default_threads;
        self.deliveries_row(report, "dispatcher deliveries/s", d, &d.progress());
        report.row(
            self.scenario,
            &format!("baseline A (reqwest, {} in flight) req/s", self.concurrency),
            format!("{:.0}", self.baseline_a()),
            &format!(
                "mean of {:.0} before and {:.0} after the dispatcher",
                self.baseline_a_before, self.baseline_a_after
            ),
        );
        report.row(
            self.scenario,
            &format!("baseline C (wrk, {} connections) req/s", self.concurrency),
            format!("{:.0}", self.baseline_c),
            "the machine's HTTP limit: same receiver, same signed body",
        );
    }

    /// The dispatcher with `label` against baselines A and C, with the
    /// issue's target on one of them.
    fn ratio_row(&self, report: &mut Report, label: &str, d: &Drain) {
        let (a, c) = (self.baseline_a(), self.baseline_c);
        let verdict_of =
            |share: f64, base: f64| format!("target >= {:.0}%: {}", 100.0 * share, verdict(d.rate >= share * base));
        let (note_a, note_c) = match self.target {
            Target::OfA(share) => (verdict_of(share, a), String::new()),
            Target::OfC(share) => (String::new(), verdict_of(share, c)),
        };
        report.row(
            self.scenario,
            &format!("{label} / baseline A"),
            format!("{:.0}%", 100.0 * d.rate / a),
            &note_a,
        );
        report.row(
            self.scenario,
            &format!("{label} / baseline C"),
            format!("{:.0}%", 100.0 * d.rate / c.max(1.0)),
            &note_c,
        );
    }

    /// The one-thread dispatcher's deliveries/s and its ratio to baseline A.
    fn one_thread_rows(&self, report: &mut Report) {
        let d = &self.one_thread;
        let note = format!("{}; {:.3} CPU s per 1,000", d.progress(), d.cpu_per_1000);
        self.deliveries_row(report, "dispatcher, --worker-threads 1, deliveries/s", d, &note);
        self.ratio_row(report, "dispatcher, --worker-threads 1", d);
    }
}

/// Fills `n` events for `org` into each of `prefixes`.
async fn fill_each(env: &Env, prefixes: &[&str], org: &str, n: usize) -> Result<(), Error> {
    let mut conn = env.redis.clone();
    for prefix in prefixes {
        fill(&mut conn, prefix, org, n).await?;
    }
    Ok(())
}

/// What later scenarios compare with.
pub struct Scenario1a {
    /// The dispatcher's deliveries/s (scenario 2 publishes at half of it).
    pub rate: f64,
    /// Baseline B's entries/s.
    pub baseline_b: f64,
    /// Bodies of the org with one hook (baseline A of 1b sends them too).
    pub bodies: Bodies,
}

/// Scenario 1a: 100,000 events for 1 hook, with baselines A and B and its footprint rows.
pub async fn scenario_1a(env: &Env, report: &mut Report) -> Result<Scenario1a, Error> {
    let n = scale(100_000);
    eprintln!("bench: scenario 1a: filling {n} events for 1 hook");
    // Baseline B runs over a copy of the same entries (its own stream, so the
    // dispatcher's retention never sees a second group).
    fill_each(env, &["{bench-1a}:", "{bench-b}:", "{bench-1a1}:"], "bench-one", n).await?;
    let stream_b = Keys::new("{bench-b}:").events();
    let mut conn = env.redis.clone();
    let bodies = bodies_of(&mut conn, &stream_b).await?;
    let t = Throughput {
        id: "1a",
        scenario: "1a throughput, 1 hook",
        deliveries: n,
        concurrency: 16,
        target: Target::OfA(0.9),
    };
    let runs = against_baseline_a(env, &bodies, t).await?;
    eprintln!("bench: baseline B: XREADGROUP + XACK over {n} entries");
    let b_rate = baseline_b(&mut conn, &stream_b).await?;
    let d = &runs.default_threads;
    runs.rate_rows(report);
    report.row(
        runs.scenario,
        "baseline B (XREADGROUP+XACK) entries/s",
        format!("{b_rate:.0}"),
        "",
    );
    runs.ratio_row(report, "dispatcher", d);
    report.row(
        runs.scenario,
        "dispatcher / baseline B",
        format!("{:.1}%", 100.0 * d.rate / b_rate),
        "",
    );
    runs.one_thread_rows(report);
    let kernel = format!(
        "user+system, /proc/PID/stat; {:.0}% in the kernel",
        100.0 * d.system_share
    );
    d.cpu_row(report, "1a", &kernel);
    report.row(
        FOOTPRINT,
        "receiver CPU s per 1,000 deliveries (1a)",
        format!("{:.3}", d.receiver_cpu_per_1000),
        "the bench process while the dispatcher drains",
    );
    report.row(
        FOOTPRINT,
        "baseline A CPU s per 1,000 requests",
        format!("{:.3}", runs.baseline_a_cpu_per_1000),
        "reqwest client + the same receiver, one process",
    );
    d.redis_and_rss_rows(report, "1a");
    Ok(Scenario1a {
        rate: d.rate,
        baseline_b: b_rate,
        bodies,
    })
}

/// Scenario 1b: 20,000 events for an org with 5 hooks (100,000 deliveries);
/// returns the dispatcher's deliveries/s (scenario 3 compares with it).
pub async fn scenario_1b(env: &Env, report: &mut Report, one: &Scenario1a) -> Result<f64, Error> {
    let n = scale(20_000);
    eprintln!("bench: scenario 1b: filling {n} events for an org with 5 hooks");
    fill_each(env, &["{bench-1b}:", "{bench-1b1}:"], "bench-five", n).await?;
    let t = Throughput {
        id: "1b",
        scenario: "1b throughput, 5 hooks",
        deliveries: 5 * n,
        concurrency: 80,
        target: Target::OfC(0.5),
    };
    let runs = against_baseline_a(env, &one.bodies, t).await?;
    let d = &runs.default_threads;
    runs.rate_rows(report);
    runs.ratio_row(report, "dispatcher", d);
    runs.one_thread_rows(report);
    report.row(
        runs.scenario,
        "dispatcher entries/s / baseline B",
        format!("{:.1}%", 100.0 * (d.rate / 5.0) / one.baseline_b),
        "",
    );
    d.cpu_row(report, "1b", "");
    d.redis_and_rss_rows(report, "1b");
    Ok(d.rate)
}

/// Scenario 3: 4 fast hooks and one answering in 5 s; the fast hooks' rate
/// per hook against 1b's (`rate_1b`, 5 fast hooks).
pub async fn scenario_3(env: &Env, report: &mut Report, rate_1b: f64) -> Result<(), Error> {
    const SCENARIO: &str = "3 isolation, 4 fast + 1 slow";
    let n = scale(20_000);
    eprintln!("bench: scenario 3: {n} events for 4 fast hooks + 1 hook answering in 5s");
    fill_each(env, &["{bench-iso}:"], "bench-iso", n).await?;
    let target = 4 * n as u64;
    let d = drain(
        env,
        "{bench-iso}:",
        "dispatcher-isolation",
        target,
        ISOLATION_TIMEOUT,
        &[],
    )
    .await?;
    let per_fast_hook_1b = rate_1b / 5.0;
    let per_fast_hook_3 = d.rate / 4.0;
    report.row(
        SCENARIO,
        "fast deliveries/s",
        format!("{:.0}", d.rate),
        &format!("{} (timeout {}s)", d.progress(), ISOLATION_TIMEOUT.as_secs()),
    );
    report.row(
        SCENARIO,
        "per fast hook vs 1b",
        format!("{:.0}%", 100.0 * per_fast_hook_3 / per_fast_hook_1b),
        &format!("target >= 90%: {}", verdict(per_fast_hook_3 >= 0.9 * per_fast_hook_1b)),
    );
    Ok(())
}
