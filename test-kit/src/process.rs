//! One child process of a test or of the benchmark: the controller, a
//! dispatcher or the control-plane script. Its stdout and stderr go to a log
//! file (or stderr stays the caller's), its stdin stays open for its life
//! (our binaries run with `--exit-on-stdin-close`, so they die with the
//! process that started them even when that one is killed), it is ready once
//! `GET /readyz` on its ops port answers 200, and it is killed on drop.
//!
//! Std only and nothing outside this file, blocking calls (the benchmark
//! uses it too).

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A free port on loopback (nothing listens on it once this returns), for
/// a child process to listen on.
///
/// Taken below Linux's ephemeral range (32768-60999), never from it: a port
/// the kernel hands out for `bind(0)` is also what it hands out as the
/// source port of outgoing connections, so with many tests connecting at
/// once another connection could take it before the child binds it (seen
/// in CI as "Address already in use"). Each port is handed out once per
/// process.
pub fn free_port() -> u16 {
    use std::sync::{
        Mutex,
        atomic::{AtomicU16, Ordering},
    };
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    // Start at a place of this process's own, so test binaries run one
    // after another do not walk the same ports.
    let span = u32::from(LAST - FIRST);
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % span) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) as u32 % span;
        let port = FIRST + offset as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {LAST}")
}

/// `GET path` on `127.0.0.1:port`: (status code, body), or None when nothing
/// answers. HTTP/1.0, so the body is never chunked.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of one series (`name{labels}` exactly) on the /metrics of the
/// ops server at `port`, if it is there.
pub fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Peak resident memory of process `pid` so far (`VmHWM`), in bytes; 0
/// when it cannot be read.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A started child process; see the module documentation.
pub struct ChildProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log_path: Option<PathBuf>,
    stop_grace: Duration,
}

impl ChildProcess {
    /// Starts `command` (its stdin piped and held, stdout and stderr
    /// appended to `log_path`; without a log, stdout is discarded and stderr
    /// is the caller's). `name` says what it is in messages.
    pub fn start(name: &str, command: Command, log_path: Option<&Path>) -> Result<ChildProcess, String> {
        ChildProcess::spawn(name, command, log_path, false).map(|(process, _)| process)
    }

    /// Like [`ChildProcess::start`], with its stdout piped to the caller
    /// instead of the log (to read a line such as the control plane's `READY`).
    pub fn start_reading_stdout(
        name: &str,
        command: Command,
        log_path: Option<&Path>,
    ) -> Result<(ChildProcess, ChildStdout), String> {
        let (process, stdout) = ChildProcess::spawn(name, command, log_path, true)?;
        Ok((process, stdout.expect("piped stdout")))
    }

    fn spawn(
        name: &str,
        mut command: Command,
        log_path: Option<&Path>,
        read_stdout: bool,
    ) -> Result<(ChildProcess, Option<ChildStdout>), String> {
        let log = match log_path {
            Some(path) => Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("opening the log of the {name} at {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let stdout = match (&log, read_stdout) {
            (_, true) => Stdio::piped(),
            (Some(log), false) => log
                .try_clone()
                .map_err(|e| format!("the log of the {name}: {e}"))?
                .into(),
            (None, false) => Stdio::null(),
        };
        let stderr = match log {
            Some(log) => log.into(),
            None => Stdio::inherit(),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting the {name} ({:?}): {e}", command.get_program()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let process = ChildProcess {
            name: name.to_string(),
            child,
            stdin,
            log_path: log_path.map(Path::to_path_buf),
            stop_grace: Duration::ZERO,
        };
        Ok((process, stdout))
    }

    /// What it is, as given to [`ChildProcess::start`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it logs, if it has a log of its own.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// Everything it logged so far (empty without a log).
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of its log, introduced for an error message.
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.log_path {
            Some(path) => format!("the end of its log ({}):\n{}", path.display(), tail(&self.log(), lines)),
            None => "its output is above".to_string(),
        }
    }

    /// How long dropping it waits, after closing its stdin, for it to exit
    /// by itself before killing it (zero by default; a process that cleans
    /// up after itself, like the control-plane script, needs time).
    pub fn set_stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }

    /// Its exit status, if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `GET /readyz` on `ops_port` answers 200; fails at once
    /// when it exits first, and after `timeout` otherwise, quoting its log.
    pub fn wait_ready(&mut self, ops_port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = http_get(ops_port, "/readyz");
            if matches!(answer, Some((200, _))) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "the {} exited ({status}) before it was ready; {}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} was not ready after {timeout:?} (last /readyz answer: {answer:?}); {}",
                    self.name,
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`...) with kill(1).
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .map_err(|e| format!("running kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -s {signal} {} failed ({status})", self.pid()))
        }
    }

    /// Closes its stdin, as the death of its parent would.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; kills it when it
    /// does not exit in time (and returns None).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit_status().is_none() {
            let _ = self.signal("TERM");
        }
        let status = self.wait_exit(timeout);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// SIGKILL, no goodbyes; waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its stdin, waits up to `grace` for it to exit, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        self.close_stdin();
        if self.wait_exit(grace).is_none() {
            self.kill();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop(self.stop_grace);
        if std::thread::panicking() && self.log_path.is_some() {
            eprintln!("--- {} log ---\n{}", self.name, tail(&self.log(), 80));
        }
    }
}
