//! The test kit: the real parts every test binary and the benchmark start
//! (tests import it as `support`: `use outbound_webhooks_test_kit as support;`).
//!
//! - [`cluster`]: the real control plane shared by this test binary (started
//!   once by `scripts/control-plane.sh`), a namespace and a Redis prefix per test.
//! - [`process`], [`control_plane`]: one child-process guard and the control
//!   plane script, std only (the benchmark package includes both files).
//! - [`kubectl`]: the built kubectl (and kube-rs) against that control plane.
//! - [`hooks`]: hook manifests, the controller's part played by a test
//!   (Secret, conditions), condition and Secret readers.
//! - [`controller`], [`dispatcher`]: the real binaries as child processes.
//! - [`helm`]: the built helm, the chart rendered with `helm template`.
//! - [`receiver`]: a scripted HTTP receiver on loopback.
//! - [`tls_receiver`]: an HTTPS receiver on loopback (HTTP/1.1 and HTTP/2, a throwaway CA).
//! - [`dns_server`]: a DNS server on loopback with a live and a dead zone.
//! - [`redis`]: publishing, raw stream entries, key lengths, a redis-server of a test's own.
//! - [`redis_topologies`]: a TLS Redis, a Sentinel group and a Redis Cluster of a test's own.
//! - [`delivery_test`]: one dispatcher test's namespace, prefix, hooks and dispatchers.
//! - [`otel_collector`]: a real OpenTelemetry Collector that writes the spans it receives to a file.
//!
//! Each test takes its own namespace and Redis key prefix, so tests run in
//! parallel.

pub mod cluster;
pub mod control_plane;
pub mod controller;
pub mod delivery_test;
pub mod dispatcher;
pub mod dns_server;
pub mod helm;
pub mod hooks;
pub mod kubectl;
pub mod otel_collector;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod redis_topologies;
pub mod tls_receiver;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

// The helpers nearly every binary calls, at the top (not every binary calls each).
#[allow(unused_imports)]
pub use cluster::{env, namespace, redis_prefix};
#[allow(unused_imports)]
pub use kubectl::{apply_yaml, kubectl, kubectl_ok, kubectl_with_input};

/// The event most tests publish and subscribe to.
pub const CREATE: &str = "kustomer.conversation.create";

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    // This crate lives in `test-kit/` of the repository.
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent().unwrap_or(kit).to_path_buf()
}

/// The `outbound-webhooks` binary cargo built for this test run: beside
/// the test binary's `deps/` folder (cargo builds a package's binaries
/// before its integration tests). Cargo's `CARGO_BIN_EXE_*` is only set
/// when compiling the tests themselves, not this crate.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_outbound-webhooks") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe.parent().expect("the test binary's folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join(format!("outbound-webhooks{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with cargo test, which builds it",
        binary.display()
    );
    binary
}

/// What a finished command printed, stdout then stderr, as text.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads a file of the repository.
pub fn read_repo_file(path: impl AsRef<Path>) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Fails unless the repository file at `path` is exactly the CRD the Rust
/// types generate; `hint` says how to fix it.
pub fn assert_is_the_generated_crd(path: &str, hint: &str) {
    let generated = outbound_webhooks::contract::crd_yaml::crd_yaml().expect("rendering the CRD");
    let committed = read_repo_file(path);
    assert!(generated == committed, "{path} is stale: {hint}");
}

/// A short random suffix for names that must not collide between tests.
pub fn unique_suffix() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

/// Polls `check` until it returns `Ok`, or fails after `timeout` with the
/// last observation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
