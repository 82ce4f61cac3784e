//! The built helm and the chart: `helm template` (no cluster needed), other
//! commands against the test control plane, and the rendered documents.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use super::{
    cluster::{env, tools_bin_dir},
    repo_root,
};

/// The chart, relative to the repository.
pub const CHART: &str = "charts/outbound-webhooks";

/// The Kubernetes version charts are rendered for (the test control plane's).
const KUBE_VERSION: &str = "1.36.3";

/// Runs helm with `args` in the repository, against the test control plane;
/// returns (success, stdout and stderr).
pub fn helm(args: &[&str]) -> (bool, String) {
    run(args, Some(&env().kubeconfig))
}

fn run(args: &[&str], kubeconfig: Option<&Path>) -> (bool, String) {
    let binary = tools_bin_dir().join("helm");
    let mut command = Command::new(&binary);
    command.args(args).current_dir(repo_root()).stdin(Stdio::null());
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "running {}: {e} (install it with scripts/install-tools.sh)",
            binary.display()
        )
    });
    let text = crate::printed(&out);
    (out.status.success(), text)
}

/// `helm template RELEASE` of the chart for namespace `ns`, with `extra`
/// flags (`-f FILE`, `--set K=V`); fails the test when helm does.
pub fn template(release: &str, ns: &str, extra: &[&str]) -> String {
    let (ok, out) = try_template(release, ns, extra);
    assert!(ok, "helm template {} failed:\n{out}", extra.join(" "));
    out
}

/// `helm template` as [`template`], returning (success, output) instead of
/// failing, for the refusals.
pub fn try_template(release: &str, ns: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        ns,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

/// The objects of rendered manifests.
pub fn documents(manifests: &str) -> Vec<serde_json::Value> {
    manifests
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect()
}
