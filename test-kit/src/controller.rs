//! The real `outbound-webhooks controller` as a child process: killed when
//! its guard drops, and exiting by itself when the test binary dies (it
//! watches its stdin).

use std::{
    path::Path,
    process::{Command, ExitStatus},
    time::Duration,
};

use super::{
    cluster::env,
    process::{ChildProcess, free_port, http_get, metric},
    unique_suffix,
};

/// One running `outbound-webhooks controller`.
pub struct ControllerProcess {
    process: ChildProcess,
    _log_dir: tempfile::TempDir,
    /// Where its /metrics, /healthz and /readyz listen.
    pub http_port: u16,
    /// Its identity in the Lease.
    pub identity: String,
}

impl ControllerProcess {
    /// Starts the controller with `args` (besides the test defaults).
    pub fn start(identity: &str, args: &[&str]) -> ControllerProcess {
        ControllerProcess::start_as(identity, &env().kubeconfig, "default", args)
    }

    /// A controller that watches only `namespace`, with a Lease of its own
    /// (3 s) in `default` named `lease`, and `extra` flags.
    pub fn scoped(identity: &str, namespace: &str, lease: &str, extra: &[&str]) -> ControllerProcess {
        let mut args = vec![
            "--watch-namespace",
            namespace,
            "--lease-name",
            lease,
            "--lease-duration",
            "3s",
        ];
        args.extend_from_slice(extra);
        ControllerProcess::start(identity, &args)
    }

    /// Like [`ControllerProcess::start`], with another kubeconfig (e.g. one
    /// that impersonates a ServiceAccount) and its Lease in `lease_namespace`.
    pub fn start_as(identity: &str, kubeconfig: &Path, lease_namespace: &str, args: &[&str]) -> ControllerProcess {
        let http_port = free_port();
        let log_dir = tempfile::tempdir().expect("a log directory");
        let mut command = Command::new(crate::binary());
        command
            .arg("controller")
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--identity", identity, "--lease-namespace", lease_namespace])
            .arg("--exit-on-stdin-close")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,outbound_webhooks=debug,kube=debug");
        let process = ChildProcess::start("controller", command, Some(&log_dir.path().join("controller.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        ControllerProcess {
            process,
            _log_dir: log_dir,
            http_port,
            identity: identity.to_string(),
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.process.log()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal (`TERM`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Closes its stdin, as the death of the test binary would.
    pub fn close_stdin(&mut self) {
        self.process.close_stdin();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// `GET path` on its ops server: (status code, body), or None when it
    /// does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// The value of one metric series (`name{labels}` exactly), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(self.http_port, series)
    }

    /// The controller's per-hook gauges of `namespace/name`: (failing,
    /// consecutive failures, turned off); None for a series it does not export.
    pub fn hook_gauges(&self, namespace: &str, name: &str) -> [Option<f64>; 3] {
        ["failing", "consecutive_failures", "turned_off"].map(|g| {
            self.metric(&format!(
                "outbound_webhooks_hook_{g}{{namespace=\"{namespace}\",name=\"{name}\"}}"
            ))
        })
    }

    /// Waits until /readyz answers 200 (it leads and its caches are synced).
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.process
            .wait_ready(self.http_port, timeout)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A Lease name of a test's own.
pub fn unique_lease(test: &str) -> String {
    format!("{test}-{}", unique_suffix())
}
