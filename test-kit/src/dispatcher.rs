//! The real `outbound-webhooks dispatcher` as a child process (killed on
//! drop, exiting by itself when the test binary dies), its arguments, and
//! the CLI next to it (`publish`, `dead-letter`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::{
    cluster::env,
    process::{ChildProcess, free_port, http_get, metric},
};

/// A dispatcher child process; killed on drop, and exits by itself when the
/// test binary dies (its stdin closes).
pub struct Dispatcher {
    process: ChildProcess,
    /// Port of /metrics, /healthz, /readyz.
    pub http_port: u16,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// A command the binary runs under (e.g. `faketime -f +20s`); its
    /// process is then the one [`Dispatcher::pid`] and the kills see.
    pub wrapper: Vec<String>,
}

/// Arguments every test dispatcher gets (later duplicates win).
pub fn base_args(redis_url: &str, prefix: &str, consumer: &str) -> Vec<String> {
    [
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--consumer-name",
        consumer,
        "--allow-destination-cidr",
        "127.0.0.0/8",
        "--task-lease",
        "10s",
        "--reclaim-idle",
        "3s",
        "--maintenance-interval",
        "300ms",
        "--poll-interval",
        "50ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `base_args` with `more` (`--flag value` pairs) added; a flag given in
/// `more` replaces the base value.
pub fn args(redis_url: &str, prefix: &str, consumer: &str, more: &[&str]) -> Vec<String> {
    let mut a = base_args(redis_url, prefix, consumer);
    for pair in more.chunks(2) {
        match a.iter().position(|s| s == pair[0]) {
            Some(i) if pair.len() == 2 => a[i + 1] = pair[1].to_string(),
            _ => a.extend(pair.iter().map(|s| s.to_string())),
        }
    }
    a
}

impl Dispatcher {
    /// Starts `outbound-webhooks dispatcher` with `args` and waits until it serves.
    pub fn start(args: Vec<String>) -> Dispatcher {
        Dispatcher::start_with_env(args, vec![])
    }

    /// Like [`Dispatcher::start`], with extra environment variables.
    pub fn start_with_env(args: Vec<String>, envs: Vec<(String, String)>) -> Dispatcher {
        Dispatcher::launch(args, envs, vec![], true)
    }

    /// Starts without waiting for readiness.
    pub fn start_unready(args: Vec<String>, envs: Vec<(String, String)>) -> Dispatcher {
        Dispatcher::launch(args, envs, vec![], false)
    }

    /// Like [`Dispatcher::start`], the binary run under `wrapper` (a
    /// command and its arguments, e.g. `faketime -f +20s`).
    pub fn start_wrapped(wrapper: &[&str], args: Vec<String>) -> Dispatcher {
        Dispatcher::launch(args, vec![], wrapper.iter().map(|s| s.to_string()).collect(), true)
    }

    fn launch(args: Vec<String>, envs: Vec<(String, String)>, wrapper: Vec<String>, wait_ready: bool) -> Dispatcher {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("dispatcher.log");
        let (process, http_port) = Dispatcher::spawn(&wrapper, &args, &envs, &log_path, wait_ready);
        Dispatcher {
            process,
            http_port,
            log_path,
            _dir: dir,
            args,
            envs,
            wrapper,
        }
    }

    fn spawn(
        wrapper: &[String],
        args: &[String],
        envs: &[(String, String)],
        log_path: &Path,
        wait: bool,
    ) -> (ChildProcess, u16) {
        let http_port = free_port();
        let binary = crate::binary();
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("--exit-on-stdin-close")
            .arg("dispatcher")
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(args)
            .env("KUBECONFIG", &env().kubeconfig)
            .env("RUST_LOG", "info,outbound_webhooks=debug")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .envs(envs.iter().map(|(k, v)| (k, v)));
        let mut process = ChildProcess::start("dispatcher", command, Some(log_path)).unwrap_or_else(|e| panic!("{e}"));
        if wait {
            // Ready once its caches are synced and it consumes the stream.
            process
                .wait_ready(http_port, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (process, http_port)
    }

    /// Waits until the dispatcher exits by itself (a start-up refusal);
    /// `None` when it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// The log of a dispatcher that must refuse to start: waits up to 30 s
    /// for it to exit, fails the test (saying `why`) unless it exited with
    /// an error.
    pub fn refusal_log(&mut self, why: &str) -> String {
        let status = self
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{why}: the dispatcher still runs after 30 s"));
        assert!(!status.success(), "{why}: the dispatcher exited successfully");
        self.log()
    }

    /// GET one of the ops endpoints: (status code, body); None when nothing listens.
    pub fn ops_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// The value of one metric line (`name{labels}` exactly), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(self.http_port, series)
    }

    /// SIGTERM; waits up to `timeout` for the exit and returns its success.
    pub fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        self.process.terminate(timeout).map(|status| status.success())
    }

    /// The log so far.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        super::process::peak_rss(self.pid())
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL, no goodbyes.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again with the same arguments (after [`Dispatcher::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let (process, http_port) = Dispatcher::spawn(&self.wrapper, &self.args, &self.envs, &self.log_path, true);
        self.process = process;
        self.http_port = http_port;
    }
}

/// `base_args` without the loopback allow-list.
pub fn args_without_allow_list(redis_url: &str, prefix: &str, consumer: &str, more: &[&str]) -> Vec<String> {
    let mut a = args(redis_url, prefix, consumer, more);
    if !more.contains(&"--allow-destination-cidr")
        && let Some(i) = a.iter().position(|s| s == "--allow-destination-cidr")
    {
        a.drain(i..i + 2);
    }
    a
}

/// Runs the binary with `args`: (success, stdout, stderr).
pub fn try_cli(args: &[&str]) -> (bool, String, String) {
    // `dead-letter replay` and `attempts` read hooks through Kubernetes, as a user's would.
    let out = Command::new(crate::binary())
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .output()
        .expect("running outbound-webhooks");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args`; returns stdout, failing on error.
pub fn run_cli(args: &[&str]) -> String {
    let (ok, stdout, stderr) = try_cli(args);
    assert!(ok, "outbound-webhooks {} failed: {stdout}{stderr}", args.join(" "));
    stdout
}

/// `dead-letter list [--hook]` lines (id, hook, event id, event, reason; tab-separated).
pub fn dead_letters(url: &str, prefix: &str, hook: Option<&str>) -> Vec<String> {
    let mut args = vec!["dead-letter", "list", "--redis-url", url, "--redis-prefix", prefix];
    if let Some(h) = hook {
        args.extend(["--hook", h]);
    }
    run_cli(&args).lines().map(str::to_string).collect()
}
