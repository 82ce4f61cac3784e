//! The control plane shared by one test binary: started by
//! `scripts/control-plane.sh` on first use and kept for the life of the
//! binary. We hold the script's stdin, so every process it started, and its
//! state directory, goes away with the tests even when they are killed.
//! Each test takes a namespace and a Redis key prefix of its own.

use std::{path::PathBuf, sync::OnceLock};

use super::{control_plane::ControlPlane, kubectl::kubectl_ok, repo_root, unique_suffix};

/// The shared control plane of this test binary.
pub struct TestEnv {
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub redis_url: String,
    /// Where the built kubectl, helm, etcd, kube-apiserver and
    /// kube-controller-manager live.
    pub bin_dir: PathBuf,
    _control_plane: ControlPlane,
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
    let control_plane = ControlPlane::start(&repo_root(), &state, &[], None).unwrap_or_else(|e| panic!("{e}"));
    TestEnv {
        kubeconfig: control_plane.kubeconfig.clone(),
        redis_url: control_plane.redis_url.clone(),
        bin_dir,
        _control_plane: control_plane,
    }
}

/// Creates a fresh namespace named after the test; returns its name.
pub fn namespace(test: &str) -> String {
    let name = namespace_name(test);
    kubectl_ok(&["create", "namespace", &name]);
    name
}

/// Creates a fresh namespace named after the test whose org is stream
/// shard `shard` of `shards`; returns its name.
pub fn namespace_in_shard(test: &str, shard: usize, shards: usize) -> String {
    let name = std::iter::repeat_with(|| namespace_name(test))
        .find(|name| outbound_webhooks::store::shard::shard_of(name, shards) == shard)
        .expect("an endless supply of names");
    kubectl_ok(&["create", "namespace", &name]);
    name
}

/// A fresh namespace name after the test (at most 63 characters).
fn namespace_name(test: &str) -> String {
    let name = format!("{}-{}", test.replace('_', "-"), unique_suffix());
    let skip = name.chars().count().saturating_sub(63);
    let name: String = name.chars().skip(skip).collect();
    name.trim_start_matches('-').to_string()
}

/// A Redis key prefix of this test's own, with a hash tag like the default.
pub fn redis_prefix(test: &str) -> String {
    format!("{{owh-{test}-{}}}:", unique_suffix())
}
