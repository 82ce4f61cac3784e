//! Test support: one real control plane (etcd, kube-apiserver,
//! kube-controller-manager with only role aggregation, redis-server) per
//! test binary, started by `scripts/control-plane.sh`, and helpers to
//! drive it the way a user would (the built kubectl) or through kube-rs.
//!
//! Each test takes its own namespace and Redis key prefix, so tests run in
//! parallel. The script runs until its stdin closes; we hold the write end
//! for the life of the test binary, so every process it started, and its
//! state directory, goes away with the tests even when they are killed.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

pub mod control_plane;
pub mod process;

/// The shared control plane of this test binary.
pub struct TestEnv {
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// Where the built kubectl, helm, etcd, kube-apiserver and
    /// kube-controller-manager live.
    pub bin_dir: PathBuf,
    _control_plane: control_plane::ControlPlane,
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory `scripts/install-tools.sh` links the tools into.
pub fn tools_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OUTBOUND_WEBHOOKS_TOOLS_DIR") {
        return PathBuf::from(dir).join("bin");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    cache.join("outbound-webhooks/tools/bin")
}

/// Starts the control plane on first use; later calls return the same one.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(start)
}

fn start() -> TestEnv {
    let bin_dir = tools_bin_dir();
    for tool in ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"] {
        assert!(
            bin_dir.join(tool).exists(),
            "{tool} is not installed in {}: run scripts/install-tools.sh (it builds the test tools once)",
            bin_dir.display()
        );
    }
    let state = std::env::temp_dir().join(format!("owh-test-{}-{}", std::process::id(), unique_suffix()));
    // No log file: the script's `[control-plane]` lines go to our stderr,
    // and it removes its state directory (a log in it would go too).
    let control_plane =
        control_plane::ControlPlane::start(&repo_root(), &state, &[], None).unwrap_or_else(|e| panic!("{e}"));
    TestEnv {
        kubeconfig: control_plane.kubeconfig.clone(),
        redis_url: control_plane.redis_url.clone(),
        bin_dir,
        _control_plane: control_plane,
    }
}

/// A short random suffix for names that must not collide between tests.
pub fn unique_suffix() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

/// A kube-rs client for the admin user, bound to the calling test's runtime.
pub async fn client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&env().kubeconfig).expect("reading the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("loading the test kubeconfig");
    kube::Client::try_from(config).expect("building a client")
}

/// The result of one kubectl run.
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    fn from(output: Output) -> Self {
        KubectlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs the built kubectl against the test cluster, optionally feeding stdin.
pub fn kubectl_with_input(args: &[&str], input: Option<&str>) -> KubectlOutput {
    use std::io::Write;
    let env = env();
    let mut child = Command::new(env.bin_dir.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).expect("writing kubectl's stdin");
    }
    KubectlOutput::from(child.wait_with_output().expect("waiting for kubectl"))
}

/// Runs the built kubectl against the test cluster.
pub fn kubectl(args: &[&str]) -> KubectlOutput {
    kubectl_with_input(args, None)
}

/// Runs kubectl and fails the test, with its output, unless it succeeds.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.success,
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// `kubectl apply -n NS -f -` of a YAML document.
pub fn apply_yaml(namespace: &str, yaml: &str) -> KubectlOutput {
    kubectl_with_input(&["apply", "-n", namespace, "-f", "-"], Some(yaml))
}

/// Creates a fresh namespace named after the test; returns its name.
pub fn namespace(test: &str) -> String {
    let name = format!("{}-{}", test.replace('_', "-"), unique_suffix());
    let name: String = name
        .chars()
        .rev()
        .take(63)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let name = name.trim_start_matches('-').to_string();
    kubectl_ok(&["create", "namespace", &name]);
    name
}

/// A Redis key prefix of this test's own, with a hash tag like the default.
pub fn redis_prefix(test: &str) -> String {
    format!("{{owh-{test}-{}}}:", unique_suffix())
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the
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

/// Reads a file of the repository.
pub fn read_repo_file(path: impl AsRef<Path>) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
