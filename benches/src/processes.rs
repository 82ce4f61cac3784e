//! The bench's own processes, on top of the child-process guard and the
//! control plane shared with the tests (`test-kit/src/process.rs`,
//! `test-kit/src/control_plane.rs`): the dispatchers (optionally under a
//! wrapper such as valgrind) and the controller, and what the bench reads
//! about processes from `/proc` and Redis.
//!
//! The shared helpers block (std only); their waits run in
//! `block_in_place`, so they hold up only the driver's own task (the
//! receiver has a runtime of its own), and Ctrl-C takes effect once a wait
//! returns.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    Env, Error,
    control_plane::ControlPlane,
    process::{ChildProcess, free_port},
};

/// How long a stopped child may take to exit after its stdin closes: a
/// dispatcher under valgrind writes its profile then, which a kill would lose.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Starts `command` (one of our binaries, its subcommand and options given)
/// with its ops server on a free port, logging to `log`, and waits until
/// `/readyz` answers; returns it and its ops port.
fn start_ours(
    name: &str,
    mut command: Command,
    kubeconfig: &Path,
    rust_log: &str,
    log: &Path,
    ready_within: Duration,
) -> Result<(ChildProcess, u16), Error> {
    let http_port = free_port();
    command
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log);
    let mut process = ChildProcess::start(name, command, Some(log))?;
    process.set_stop_grace(STOP_GRACE);
    tokio::task::block_in_place(|| process.wait_ready(http_port, ready_within))?;
    Ok((process, http_port))
}

/// Starts the control plane with its data under `state/cluster` (which the
/// script removes when it stops) and its log in `state/control-plane.out`;
/// returns once the script prints `READY`.
pub fn start_control_plane(repo: &Path, state: &Path) -> Result<ControlPlane, Error> {
    let log = state.join("control-plane.out");
    Ok(ControlPlane::start(repo, &state.join("cluster"), &[], Some(&log))?)
}

/// /proc figures of a process: CPU seconds (user + system), RSS and peak RSS in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// System CPU seconds alone.
    pub system_seconds: f64,
    /// `VmRSS` in bytes.
    pub rss: u64,
    /// `VmHWM` in bytes.
    pub peak_rss: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; zeros for a process that is gone.
pub fn proc_stats(pid: u32) -> ProcStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3 of proc(5); utime 14, stime 15.
    let tick = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu_seconds = (tick(11) + tick(12)) as f64 / ticks_per_second;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    ProcStats {
        cpu_seconds,
        system_seconds: tick(12) as f64 / ticks_per_second,
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
    }
}

/// The stats of this process (the bench: receiver, loaders, baseline A).
pub fn own_stats() -> ProcStats {
    proc_stats(std::process::id())
}

/// Pids of processes named `comm` whose command line mentions `marker`
/// (the cluster's state dir, so only this run's control plane matches).
pub fn pids_of(comm: &str, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// CPU seconds of `pids` together (NaN when none was found).
pub fn cpu_of(pids: &[u32]) -> f64 {
    if pids.is_empty() {
        return f64::NAN;
    }
    pids.iter().map(|&pid| proc_stats(pid).cpu_seconds).sum()
}

/// CPU seconds redis-server has used (user + system, from INFO cpu): it is
/// not our child (the control plane script starts it), so /proc would need
/// its pid first.
pub async fn redis_cpu_seconds(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Redis's calls per command (`INFO commandstats`), e.g. `xreadgroup` -> 1234.
pub async fn redis_command_calls(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands called most between two [`redis_command_calls`], per
/// 1,000 of `per`: "evalsha 12.0, xreadgroup 10.1, ...".
pub fn busiest_commands(before: &HashMap<String, u64>, after: &HashMap<String, u64>, per: u64, top: usize) -> String {
    let mut calls: Vec<(&String, u64)> = after
        .iter()
        .map(|(name, n)| (name, n.saturating_sub(before.get(name).copied().unwrap_or(0))))
        .filter(|(_, n)| *n > 0)
        .collect();
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    calls
        .iter()
        .take(top)
        .map(|(name, n)| format!("{name} {:.1}", *n as f64 * 1000.0 / per.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running `outbound-webhooks dispatcher` on its own key prefix.
pub struct Dispatcher {
    process: ChildProcess,
    http_port: u16,
}

impl Dispatcher {
    /// Starts one on `prefix` with `extra` arguments, its log in
    /// `state/{log_name}.log`, and waits until it is ready.
    pub async fn start(env: &Env, prefix: &str, log_name: &str, extra: &[&str]) -> Result<Dispatcher, Error> {
        Dispatcher::start_binary(env, &env.dispatcher_binary, prefix, log_name, extra).await
    }

    /// [`Dispatcher::start`] with another `outbound-webhooks` binary (or a
    /// script that execs one), to compare builds on the same data.
    pub async fn start_binary(
        env: &Env,
        binary: &Path,
        prefix: &str,
        log_name: &str,
        extra: &[&str],
    ) -> Result<Dispatcher, Error> {
        // BENCH_DISPATCHER_WRAPPER (e.g. "valgrind --tool=callgrind") runs the
        // dispatcher under a profiler.
        let wrapper = std::env::var("BENCH_DISPATCHER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(["--exit-on-stdin-close", "dispatcher"])
            .args(["--redis-url", &env.redis_url, "--redis-prefix", prefix])
            .args(["--consumer-name", "bench", "--allow-destination-cidr", "127.0.0.0/8"])
            .args(extra);
        let log = env.state.join(format!("{log_name}.log"));
        // Under valgrind start-up takes minutes.
        let ready_within = Duration::from_secs(300);
        let (process, http_port) = start_ours("dispatcher", command, &env.kubeconfig, "warn", &log, ready_within)?;
        Ok(Dispatcher { process, http_port })
    }

    /// Its CPU and memory now.
    pub fn stats(&self) -> ProcStats {
        proc_stats(self.process.pid())
    }

    /// The value of one series (`name{labels}` exactly) on its `/metrics`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let body = match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The real `outbound-webhooks controller`, its Lease in `default` (as the
/// tests run it), its ops server on a free port, its log in the state dir.
pub struct ControllerProc {
    process: ChildProcess,
    http_port: u16,
}

impl ControllerProc {
    /// Starts it and waits until it leads with synced caches (its `/readyz`).
    /// Env `BENCH_CONTROLLER_ARGS` adds flags (e.g. `--concurrency 32`).
    pub async fn start(binary: &Path, kubeconfig: &Path, log: &Path) -> Result<ControllerProc, Error> {
        let mut command = Command::new(binary);
        command
            .args(["--exit-on-stdin-close", "--log-format", "json", "controller"])
            .args([
                "--lease-namespace",
                "default",
                "--lease-name",
                "outbound-webhooks-bench",
            ])
            .args(["--lease-duration", "15s", "--identity", "bench-controller"])
            .args(
                std::env::var("BENCH_CONTROLLER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            );
        let ready_within = Duration::from_secs(120);
        let (process, http_port) = start_ours("controller", command, kubeconfig, "info", log, ready_within)?;
        Ok(ControllerProc { process, http_port })
    }

    /// Its CPU and memory now.
    pub fn stats(&self) -> ProcStats {
        proc_stats(self.process.pid())
    }

    /// Its exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exit_status()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Its unlabelled Prometheus samples (name -> value).
    pub async fn metrics(&self) -> Result<HashMap<String, f64>, Error> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
            .collect())
    }

    /// SIGTERM, then up to `grace` for it to release its Lease and exit
    /// (killed after that); its exit status and how long it took.
    pub fn terminate(&mut self, grace: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let sent = Instant::now();
        let status = tokio::task::block_in_place(|| self.process.terminate(grace))?;
        Some((status, sent.elapsed()))
    }
}
