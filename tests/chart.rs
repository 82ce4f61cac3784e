//! The Helm chart: lints clean, renders objects the real API server accepts
//! (default values and every option on), and its RBAC grants each identity
//! exactly what it needs, checked with `kubectl auth can-i`.

mod support;

use std::process::{Command, Stdio};

use support::{kubectl, kubectl_ok, kubectl_with_input, namespace};

const CHART: &str = "charts/outbound-webhooks";
const ALL_OPTIONS: &str = "tests/fixtures/chart-all-options.yaml";

fn helm(args: &[&str]) -> (bool, String) {
    let env = support::env();
    let out = Command::new(env.bin_dir.join("helm"))
        .args(args)
        .current_dir(support::repo_root())
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("running helm (install it with scripts/install-tools.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn template(release: &str, ns: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        ns,
        "--kube-version",
        "1.36.3",
    ];
    args.extend_from_slice(extra);
    let (ok, out) = helm(&args);
    assert!(ok, "helm template {} failed:\n{out}", extra.join(" "));
    out
}

#[test]
fn helm_lint_is_clean_with_defaults_and_with_every_option() {
    for extra in [vec![], vec!["-f", ALL_OPTIONS]] {
        let mut args = vec!["lint", CHART, "--strict"];
        args.extend(extra.iter().copied());
        let (ok, out) = helm(&args);
        assert!(
            ok && !out.contains("[ERROR]") && !out.contains("[WARNING]"),
            "helm lint {extra:?}:\n{out}"
        );
    }
}

#[test]
fn the_chart_copy_of_the_crd_is_the_generated_one() {
    let generated = outbound_webhooks::crd_yaml::crd_yaml().expect("rendering the CRD");
    let in_chart = support::read_repo_file("charts/outbound-webhooks/files/outboundwebhooks.io_outboundwebhooks.yaml");
    assert!(
        generated == in_chart,
        "charts/outbound-webhooks/files/ has a stale CRD: copy crds/outboundwebhooks.io_outboundwebhooks.yaml there"
    );
}

#[test]
fn rendered_objects_pass_server_side_dry_run_with_defaults_and_every_option() {
    kubectl_ok(&[
        "apply",
        "-f",
        &support::repo_root()
            .join("tests/fixtures/servicemonitor-crd.yaml")
            .to_string_lossy(),
    ]);
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);
    for (name, extra) in [("defaults", vec![]), ("all-options", vec!["-f", ALL_OPTIONS])] {
        let ns = namespace(&format!("chart-{name}"));
        let manifests = template("owh", &ns, &extra);
        for kind in [
            "Deployment",
            "ServiceAccount",
            "ClusterRole",
            "CustomResourceDefinition",
            "Service",
        ] {
            assert!(
                manifests.contains(&format!("kind: {kind}\n")),
                "{name}: no {kind} rendered"
            );
        }
        if name == "all-options" {
            for kind in ["ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget", "Secret"] {
                assert!(
                    manifests.contains(&format!("kind: {kind}\n")),
                    "{name}: no {kind} rendered"
                );
            }
        }
        let out = kubectl_with_input(&["apply", "--dry-run=server", "-n", &ns, "-f", "-"], Some(&manifests));
        assert!(
            out.success,
            "{name}: the API server refused the rendered chart:\n{}{}",
            out.stdout, out.stderr
        );
    }
}

#[test]
fn deployments_are_hardened_and_probe_the_ops_endpoints() {
    let manifests = template("owh", "owh-system", &[]);
    let docs: Vec<serde_json::Value> = manifests
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d["kind"] == "Deployment")
        .collect();
    assert_eq!(docs.len(), 2, "expected the controller and dispatcher Deployments");
    for d in docs {
        let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert!(c["resources"]["requests"].is_object(), "{name}: no resource requests");
    }
}

fn can_i(verb_and_resource: &[&str], ns: Option<&str>, who: &str) -> bool {
    let mut args = vec!["auth", "can-i"];
    args.extend_from_slice(verb_and_resource);
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    } else {
        args.push("--all-namespaces");
    }
    let as_arg = format!("--as={who}");
    args.push(&as_arg);
    let out = kubectl(&args);
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {}: {other} {}", args.join(" "), out.stderr),
    }
}

#[test]
fn rbac_grants_each_identity_what_it_needs_and_nothing_more() {
    let system = namespace("chart-rbac-system");
    let tenant = namespace("chart-rbac-tenant");
    let other = namespace("chart-rbac-other");
    let release = format!("rbac{}", support::unique_suffix());
    let manifests = template(&release, &system, &["--set", "crds.install=false"]);
    let out = kubectl_with_input(&["apply", "-n", &system, "-f", "-"], Some(&manifests));
    assert!(out.success, "applying the chart's objects: {}", out.stderr);

    let fullname = format!("{release}-outbound-webhooks");
    let controller = format!("system:serviceaccount:{system}:{fullname}-controller");
    let dispatcher = format!("system:serviceaccount:{system}:{fullname}-dispatcher");
    let lease = format!("leases/{fullname}-controller");

    let mut wrong = Vec::new();
    let mut expect = |who: &str, label: &str, args: &[&str], ns: Option<&str>, want: bool| {
        if can_i(args, ns, who) != want {
            wrong.push(format!("{label}: {} in {ns:?} should be {want}", args.join(" ")));
        }
    };
    // The controller.
    for args in [
        &["list", "outboundwebhooks.outboundwebhooks.io"][..],
        &["watch", "outboundwebhooks.outboundwebhooks.io"],
        &["watch", "secrets"],
        &["watch", "namespaces"],
    ] {
        expect(&controller, "controller", args, None, true);
    }
    expect(
        &controller,
        "controller",
        &["patch", "outboundwebhooks.outboundwebhooks.io", "--subresource=status"],
        Some(&tenant),
        true,
    );
    expect(&controller, "controller", &["create", "secrets"], Some(&tenant), true);
    expect(&controller, "controller", &["patch", "secrets"], Some(&tenant), true);
    expect(
        &controller,
        "controller",
        &["create", "events.events.k8s.io"],
        Some(&tenant),
        true,
    );
    expect(&controller, "controller", &["update", &lease], Some(&system), true);
    expect(
        &controller,
        "controller",
        &["create", "leases.coordination.k8s.io"],
        Some(&system),
        true,
    );
    for args in [
        &["patch", "outboundwebhooks.outboundwebhooks.io"][..],
        &["delete", "outboundwebhooks.outboundwebhooks.io"],
        &["update", "secrets"],
        &["delete", "secrets"],
        &["update", "namespaces"],
        &["create", "pods"],
    ] {
        expect(&controller, "controller", args, Some(&tenant), false);
    }
    expect(
        &controller,
        "controller",
        &["update", "leases/someone-else"],
        Some(&system),
        false,
    );
    expect(&controller, "controller", &["update", &lease], Some(&other), false);

    // The dispatcher.
    expect(
        &dispatcher,
        "dispatcher",
        &["watch", "outboundwebhooks.outboundwebhooks.io"],
        None,
        true,
    );
    expect(&dispatcher, "dispatcher", &["watch", "secrets"], None, true);
    expect(
        &dispatcher,
        "dispatcher",
        &["patch", "outboundwebhooks.outboundwebhooks.io", "--subresource=status"],
        Some(&tenant),
        true,
    );
    for args in [
        &["patch", "outboundwebhooks.outboundwebhooks.io"][..],
        &["create", "secrets"],
        &["update", "secrets"],
        &["create", "events.events.k8s.io"],
        &["watch", "namespaces"],
    ] {
        expect(&dispatcher, "dispatcher", args, Some(&tenant), false);
    }
    expect(&dispatcher, "dispatcher", &["update", &lease], Some(&system), false);

    // Tenants: the aggregated roles, bound in the tenant namespace (no
    // controller-manager runs here to aggregate them into admin/edit/view,
    // so they are bound directly; their labels are checked below).
    kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "-n",
        &tenant,
        &format!("--clusterrole={fullname}-admin"),
        "--user=alice",
    ]);
    kubectl_ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "-n",
        &tenant,
        &format!("--clusterrole={fullname}-view"),
        "--user=bob",
    ]);
    for verb in ["create", "update", "patch", "delete", "get", "list"] {
        expect(
            "alice",
            "tenant admin",
            &[verb, "outboundwebhooks.outboundwebhooks.io"],
            Some(&tenant),
            true,
        );
    }
    expect(
        "alice",
        "tenant admin",
        &["patch", "outboundwebhooks.outboundwebhooks.io", "--subresource=status"],
        Some(&tenant),
        false,
    );
    expect(
        "alice",
        "tenant admin",
        &["create", "outboundwebhooks.outboundwebhooks.io"],
        Some(&other),
        false,
    );
    expect(
        "bob",
        "tenant viewer",
        &["list", "outboundwebhooks.outboundwebhooks.io"],
        Some(&tenant),
        true,
    );
    for verb in ["create", "update", "delete"] {
        expect(
            "bob",
            "tenant viewer",
            &[verb, "outboundwebhooks.outboundwebhooks.io"],
            Some(&tenant),
            false,
        );
    }
    expect(
        "bob",
        "tenant viewer",
        &["patch", "outboundwebhooks.outboundwebhooks.io", "--subresource=status"],
        Some(&tenant),
        false,
    );
    assert!(wrong.is_empty(), "RBAC is off:\n{}", wrong.join("\n"));

    let labels = kubectl_ok(&[
        "get",
        "clusterrole",
        &format!("{fullname}-admin"),
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("\"rbac.authorization.k8s.io/aggregate-to-admin\":\"true\""),
        "{labels}"
    );
    let labels = kubectl_ok(&[
        "get",
        "clusterrole",
        &format!("{fullname}-view"),
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("aggregate-to-view\":\"true\"") && labels.contains("aggregate-to-edit\":\"true\""),
        "{labels}"
    );
}
