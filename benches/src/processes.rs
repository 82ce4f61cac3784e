//! The child processes the bench starts (the control plane, dispatchers, the
//! controller) and what it reads about processes from `/proc` and Redis.
//!
//! Every child gets a piped stdin and `--exit-on-stdin-close` (the control
//! plane script stops on its own when stdin closes), so a bench that dies
//! takes its children with it.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Env, Error};

/// A child process that stops when dropped (stdin closed, then killed).
pub struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn new(name: &'static str, mut child: Child) -> Proc {
        let stdin = child.stdin.take();
        Proc { name, child, stdin }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: {} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

/// Waits until a started process answers 200 on `/readyz`; fails at once
/// when it exits first, naming its log.
async fn wait_ready(proc: &mut Proc, http_port: u16, log: &Path, timeout: Duration) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{http_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if let Some(status) = proc.try_wait()? {
            return Err(format!(
                "the {} exited ({status}) before it was ready; see {}",
                proc.name,
                log.display()
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the {} was not ready in {}s; see {}",
                proc.name,
                timeout.as_secs(),
                log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// etcd, kube-apiserver and Redis of `scripts/control-plane.sh`; stopped on drop.
pub struct ControlPlane {
    _proc: Proc,
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
}

/// Starts the control plane with its data under `state/cluster` and its log
/// in `state/control-plane.out`; returns once the script prints `READY`.
pub fn start_control_plane(repo: &Path, state: &Path) -> Result<ControlPlane, Error> {
    let log = std::fs::File::create(state.join("control-plane.out"))?;
    let mut child = Command::new("bash")
        .arg(repo.join("scripts/control-plane.sh"))
        .arg(state.join("cluster"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc::new("control plane", child);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("READY ") {
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
            };
            return Ok(ControlPlane {
                _proc: proc,
                kubeconfig: field("kubeconfig").ok_or("READY line without kubeconfig")?.into(),
                redis_url: field("redis").ok_or("READY line without redis")?,
            });
        }
    }
    Err(format!(
        "the control plane stopped before it was ready; see {}",
        state.join("control-plane.out").display()
    )
    .into())
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

/// A running `outbound-webhooks dispatcher` on its own key prefix.
pub struct Dispatcher {
    proc: Proc,
    http_port: u16,
}

impl Dispatcher {
    /// Starts one on `prefix` with `extra` arguments, its log in
    /// `state/{log_name}.log`, and waits until it is ready.
    pub async fn start(env: &Env, prefix: &str, log_name: &str, extra: &[&str]) -> Result<Dispatcher, Error> {
        let http_port = free_port();
        let log_path = env.state.join(format!("{log_name}.log"));
        let log = std::fs::File::create(&log_path)?;
        // BENCH_DISPATCHER_WRAPPER (e.g. "valgrind --tool=callgrind") runs the
        // dispatcher under a profiler.
        let wrapper = std::env::var("BENCH_DISPATCHER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&env.dispatcher_binary);
                c
            }
            None => Command::new(&env.dispatcher_binary),
        };
        let child = command
            .arg("--exit-on-stdin-close")
            .arg("dispatcher")
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(["--redis-url", &env.redis_url, "--redis-prefix", prefix])
            .args(["--consumer-name", "bench", "--allow-destination-cidr", "127.0.0.0/8"])
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut proc = Proc::new("dispatcher", child);
        // Under valgrind start-up takes minutes.
        wait_ready(&mut proc, http_port, &log_path, Duration::from_secs(300)).await?;
        Ok(Dispatcher { proc, http_port })
    }

    /// Its CPU and memory now.
    pub fn stats(&self) -> ProcStats {
        proc_stats(self.proc.pid())
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
    proc: Proc,
    http_port: u16,
}

impl ControllerProc {
    /// Starts it and waits until it leads with synced caches.
    pub async fn start(binary: &Path, kubeconfig: &Path, log: &Path) -> Result<ControllerProc, Error> {
        let http_port = free_port();
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .args(["--exit-on-stdin-close", "--log-format", "json", "controller"])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args([
                "--lease-namespace",
                "default",
                "--lease-name",
                "outbound-webhooks-bench",
            ])
            .args(["--lease-duration", "15s", "--identity", "bench-controller"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let mut proc = Proc::new("controller", child);
        // /readyz answers 200 once it leads and its caches are synced.
        wait_ready(&mut proc, http_port, log, Duration::from_secs(120)).await?;
        Ok(ControllerProc { proc, http_port })
    }

    /// Its CPU and memory now.
    pub fn stats(&self) -> ProcStats {
        proc_stats(self.proc.pid())
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.proc.try_wait()
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

    /// SIGTERM, then up to `grace` for it to release its Lease and exit.
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<(std::process::ExitStatus, Duration)>, Error> {
        let sent = Instant::now();
        let killed = Command::new("kill")
            .args(["-s", "TERM", &self.proc.pid().to_string()])
            .status()?;
        if !killed.success() {
            return Err(format!("kill -s TERM {} failed", self.proc.pid()).into());
        }
        while sent.elapsed() < grace {
            if let Some(status) = self.proc.try_wait()? {
                return Ok(Some((status, sent.elapsed())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(None)
    }
}
