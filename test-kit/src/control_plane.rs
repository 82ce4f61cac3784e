//! The real control plane, started by `scripts/control-plane.sh STATE_DIR`:
//! etcd, kube-apiserver, kube-controller-manager (only ClusterRole
//! aggregation) and redis-server on free loopback ports, with the CRD
//! applied. The script prints one `READY kubeconfig=... redis=...
//! apiserver=...` line and then runs until its stdin closes, when it stops
//! everything it started and removes STATE_DIR.
//!
//! Std only, blocking; besides this file it needs only [`crate::process`]
//! (the benchmark uses both).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::process::ChildProcess;

/// How long dropping a [`ControlPlane`] lets the script stop its processes.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running control plane; stopped (and its state directory removed) on drop.
pub struct ControlPlane {
    /// Kubeconfig of the admin user (system:masters).
    pub kubeconfig: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// `https://127.0.0.1:PORT`.
    pub apiserver_url: String,
    /// The script's state directory (removed when it stops).
    pub state_dir: PathBuf,
    process: ChildProcess,
}

impl ControlPlane {
    /// Runs `REPO/scripts/control-plane.sh STATE_DIR EXTRA...` and waits for
    /// its `READY` line. Its output goes to `log_path`, or to the caller's
    /// stderr without one.
    pub fn start(
        repo: &Path,
        state_dir: &Path,
        extra: &[&str],
        log_path: Option<&Path>,
    ) -> Result<ControlPlane, String> {
        let mut command = Command::new("bash");
        command
            .arg(repo.join("scripts/control-plane.sh"))
            .arg(state_dir)
            .args(extra);
        let (mut process, stdout) = ChildProcess::start_reading_stdout("control plane", command, log_path)?;
        process.set_stop_grace(STOP_GRACE);
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading the control plane's output: {e}"))?;
            let Some(fields) = line.strip_prefix("READY ") else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split_whitespace()
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_string)
                    .ok_or_else(|| format!("the control plane's READY line lacks {key}: {line}"))
            };
            return Ok(ControlPlane {
                kubeconfig: PathBuf::from(field("kubeconfig")?),
                redis_url: field("redis")?,
                apiserver_url: field("apiserver")?,
                state_dir: state_dir.to_path_buf(),
                process,
            });
        }
        let status = process.wait_exit(Duration::from_secs(5));
        Err(format!(
            "the control plane stopped before it was ready ({status:?}); {}",
            process.log_tail(40)
        ))
    }

    /// The script's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
