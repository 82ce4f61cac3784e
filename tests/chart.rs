//! The Helm chart: lints clean, renders objects the real API server accepts
//! (default values and every option on), `helm install`s into the test API
//! server, its RBAC grants each identity exactly what it needs (checked with
//! `kubectl auth can-i`, tenants through the built-in roles the chart's
//! roles are aggregated into), and the real controller and dispatcher do
//! their whole job with nothing but the chart's ServiceAccount identities.

use outbound_webhooks_test_kit as support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use outbound_webhooks::{
    contract::conditions::{self, ready},
    contract::resource::{PROMOTE_SECRET_ANNOTATION, ROTATE_SECRET_ANNOTATION},
    contract::signing_tokens::{NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY},
    controller::secrets::secret::TOKEN_KEY,
};
use serde_json::json;
use support::{
    controller::ControllerProcess,
    delivery_test::DeliveryTest,
    dispatcher::Dispatcher,
    helm::{CHART, documents, helm, template, try_template},
    hooks::{condition, generated_secret, hook_yaml, wait_not_ready},
    kubectl,
    kubectl::{apply_ok, lease_holder_in},
    kubectl_ok, kubectl_with_input, namespace,
    process::tail,
    receiver::Receiver,
    unique_suffix, wait_for,
};

const ALL_OPTIONS: &str = "tests/fixtures/chart-all-options.yaml";

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
    support::assert_is_the_generated_crd(
        "charts/outbound-webhooks/files/outboundwebhooks.io_outboundwebhooks.yaml",
        "copy crds/outboundwebhooks.io_outboundwebhooks.yaml there",
    );
}

#[test]
fn rendered_objects_pass_server_side_dry_run_with_defaults_and_every_option() {
    for (file, crd) in [
        ("servicemonitor-crd.yaml", "crd/servicemonitors.monitoring.coreos.com"),
        ("prometheusrule-crd.yaml", "crd/prometheusrules.monitoring.coreos.com"),
    ] {
        let path = support::repo_root().join("tests/fixtures").join(file);
        kubectl_ok(&["apply", "-f", &path.to_string_lossy()]);
        kubectl_ok(&["wait", "--for=condition=Established", crd]);
    }
    let ca_from_a_configmap = vec![
        "-f",
        ALL_OPTIONS,
        "--set",
        "redis.mode=cluster,redis.tls.caSecret.name=,redis.tls.caConfigMap.name=redis-ca",
    ];
    for (name, extra) in [
        ("defaults", vec![]),
        ("all-options", vec!["-f", ALL_OPTIONS]),
        ("ca-configmap", ca_from_a_configmap),
    ] {
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
            for kind in [
                "ServiceMonitor",
                "NetworkPolicy",
                "PodDisruptionBudget",
                "Secret",
                "PrometheusRule",
                "ConfigMap",
            ] {
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
    let docs: Vec<serde_json::Value> = documents(&manifests)
        .into_iter()
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

/// `helm install RELEASE` of the chart into `ns` (the CRD is applied by the
/// control plane already); returns the chart's full name for the release.
fn helm_install(release: &str, ns: &str) -> String {
    let (ok, out) = helm(&[
        "install",
        release,
        CHART,
        "--namespace",
        ns,
        "--set",
        "crds.install=false",
    ]);
    assert!(ok, "helm install {release} failed:\n{out}");
    format!("{release}-outbound-webhooks")
}

/// Waits until the aggregation controller has folded the chart's roles into
/// the built-in `admin`, `edit` and `view`.
fn wait_for_aggregation() {
    for role in ["admin", "edit", "view"] {
        wait_for(
            &format!("the built-in {role} role to aggregate the chart's role"),
            Duration::from_secs(60),
            || {
                let out = kubectl(&["get", "clusterrole", role, "-o", "json"]);
                if out.success && out.stdout.contains("outboundwebhooks") {
                    Ok(())
                } else {
                    Err(format!("{}{}", out.stdout, out.stderr))
                }
            },
        );
    }
}

/// Where a `kubectl auth can-i` check looks.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// `--all-namespaces` (cluster-wide grants, cluster-scoped resources).
    All,
    /// The tenant namespace (where hooks live).
    Tenant,
    /// The release namespace (the Lease).
    System,
    /// A namespace nobody was given anything in.
    Other,
}

const HOOKS: &str = "outboundwebhooks.outboundwebhooks.io";

/// Who asks: the chart's ServiceAccounts, or tenant users bound to a built-in role.
#[derive(Clone, Copy, Debug)]
enum Who {
    Controller,
    Dispatcher,
    /// Bound to the built-in `admin` in the tenant namespace.
    Admin,
    /// Bound to the built-in `edit` in the tenant namespace.
    Edit,
    /// Bound to the built-in `view` in the tenant namespace.
    View,
}

/// The verbs the binaries call: exactly these are allowed. `{lease}` is the
/// controller's own Lease (`--lease-name` in the chart's Deployment).
const ALLOWED_TO_OPERATOR: &[(Who, &str, Scope)] = &[
    // The controller: hook reflector and reconciler.
    (Who::Controller, "get HOOKS", Scope::All),
    (Who::Controller, "list HOOKS", Scope::All),
    (Who::Controller, "watch HOOKS", Scope::All),
    (Who::Controller, "patch HOOKS --subresource=status", Scope::Tenant),
    // Labelled Secrets: watched, read by name, generated, adopted (owner
    // patch), rotated (a patch of the tokens carrying the resourceVersion:
    // `patch` serves both, so rotation needs no `update`).
    (Who::Controller, "get secrets", Scope::All),
    (Who::Controller, "list secrets", Scope::All),
    (Who::Controller, "watch secrets", Scope::All),
    (Who::Controller, "create secrets", Scope::Tenant),
    (Who::Controller, "patch secrets", Scope::Tenant),
    // Namespaces: the limit annotation (a watch, field-selected when scoped).
    (Who::Controller, "list namespaces", Scope::All),
    (Who::Controller, "watch namespaces", Scope::All),
    // Events: kube-runtime's Recorder creates, then patches a series.
    (Who::Controller, "create events.events.k8s.io", Scope::Tenant),
    (Who::Controller, "patch events.events.k8s.io", Scope::Tenant),
    // Leader election: read, create, renew/release (replace) its own Lease.
    (Who::Controller, "get leases.coordination.k8s.io/{lease}", Scope::System),
    (Who::Controller, "create leases.coordination.k8s.io", Scope::System),
    (
        Who::Controller,
        "update leases.coordination.k8s.io/{lease}",
        Scope::System,
    ),
    // The dispatcher: hook and Secret reflectors, status.delivery.
    (Who::Dispatcher, "get HOOKS", Scope::All),
    (Who::Dispatcher, "list HOOKS", Scope::All),
    (Who::Dispatcher, "watch HOOKS", Scope::All),
    (Who::Dispatcher, "patch HOOKS --subresource=status", Scope::Tenant),
    (Who::Dispatcher, "get secrets", Scope::All),
    (Who::Dispatcher, "list secrets", Scope::All),
    (Who::Dispatcher, "watch secrets", Scope::All),
    (Who::Dispatcher, "list namespaces", Scope::All),
    (Who::Dispatcher, "watch namespaces", Scope::All),
];

/// Things neither binary does, refused.
const REFUSED_TO_OPERATOR: &[(Who, &str, Scope)] = &[
    (Who::Controller, "create HOOKS", Scope::Tenant),
    (Who::Controller, "update HOOKS", Scope::Tenant),
    (Who::Controller, "patch HOOKS", Scope::Tenant),
    (Who::Controller, "delete HOOKS", Scope::Tenant),
    (Who::Controller, "update HOOKS --subresource=status", Scope::Tenant),
    (Who::Controller, "get HOOKS --subresource=status", Scope::Tenant),
    // A rotation patches; it never replaces or deletes a Secret.
    (Who::Controller, "update secrets", Scope::Tenant),
    (Who::Controller, "delete secrets", Scope::Tenant),
    (Who::Controller, "get namespaces", Scope::All),
    (Who::Controller, "update namespaces", Scope::All),
    (Who::Controller, "create events", Scope::Tenant),
    (Who::Controller, "delete events.events.k8s.io", Scope::Tenant),
    (Who::Controller, "get configmaps", Scope::Tenant),
    (Who::Controller, "delete deployments.apps", Scope::System),
    (Who::Controller, "create pods", Scope::Tenant),
    (Who::Controller, "create pods --subresource=exec", Scope::Tenant),
    (
        Who::Controller,
        "update leases.coordination.k8s.io/someone-else",
        Scope::System,
    ),
    (
        Who::Controller,
        "get leases.coordination.k8s.io/someone-else",
        Scope::System,
    ),
    (
        Who::Controller,
        "patch leases.coordination.k8s.io/{lease}",
        Scope::System,
    ),
    (
        Who::Controller,
        "delete leases.coordination.k8s.io/{lease}",
        Scope::System,
    ),
    (
        Who::Controller,
        "update leases.coordination.k8s.io/{lease}",
        Scope::Other,
    ),
    (Who::Controller, "create leases.coordination.k8s.io", Scope::Other),
    (Who::Dispatcher, "create HOOKS", Scope::Tenant),
    (Who::Dispatcher, "update HOOKS", Scope::Tenant),
    (Who::Dispatcher, "patch HOOKS", Scope::Tenant),
    (Who::Dispatcher, "delete HOOKS", Scope::Tenant),
    (Who::Dispatcher, "update HOOKS --subresource=status", Scope::Tenant),
    (Who::Dispatcher, "create secrets", Scope::Tenant),
    (Who::Dispatcher, "update secrets", Scope::Tenant),
    (Who::Dispatcher, "patch secrets", Scope::Tenant),
    (Who::Dispatcher, "delete secrets", Scope::Tenant),
    (Who::Dispatcher, "create events.events.k8s.io", Scope::Tenant),
    (Who::Dispatcher, "patch namespaces", Scope::All),
    (Who::Dispatcher, "get configmaps", Scope::Tenant),
    (Who::Dispatcher, "delete deployments.apps", Scope::System),
    (Who::Dispatcher, "create pods --subresource=exec", Scope::Tenant),
    (Who::Dispatcher, "get leases.coordination.k8s.io/{lease}", Scope::System),
    (
        Who::Dispatcher,
        "update leases.coordination.k8s.io/{lease}",
        Scope::System,
    ),
    (Who::Dispatcher, "create leases.coordination.k8s.io", Scope::System),
];

/// Tenants through the built-in roles: `admin` manages hooks, `edit` and
/// `view` read them, nobody writes status, nothing reaches other namespaces.
const TENANTS: &[(Who, &str, Scope, bool)] = &[
    (Who::Admin, "get HOOKS", Scope::Tenant, true),
    (Who::Admin, "list HOOKS", Scope::Tenant, true),
    (Who::Admin, "watch HOOKS", Scope::Tenant, true),
    (Who::Admin, "create HOOKS", Scope::Tenant, true),
    (Who::Admin, "update HOOKS", Scope::Tenant, true),
    (Who::Admin, "patch HOOKS", Scope::Tenant, true),
    (Who::Admin, "delete HOOKS", Scope::Tenant, true),
    (Who::Admin, "deletecollection HOOKS", Scope::Tenant, true),
    (Who::Admin, "patch HOOKS --subresource=status", Scope::Tenant, false),
    (Who::Admin, "update HOOKS --subresource=status", Scope::Tenant, false),
    (Who::Admin, "create HOOKS", Scope::Other, false),
    (Who::Admin, "list HOOKS", Scope::Other, false),
    (Who::Edit, "get HOOKS", Scope::Tenant, true),
    (Who::Edit, "list HOOKS", Scope::Tenant, true),
    (Who::Edit, "watch HOOKS", Scope::Tenant, true),
    (Who::Edit, "create HOOKS", Scope::Tenant, false),
    (Who::Edit, "update HOOKS", Scope::Tenant, false),
    (Who::Edit, "patch HOOKS", Scope::Tenant, false),
    (Who::Edit, "delete HOOKS", Scope::Tenant, false),
    (Who::Edit, "patch HOOKS --subresource=status", Scope::Tenant, false),
    (Who::View, "get HOOKS", Scope::Tenant, true),
    (Who::View, "list HOOKS", Scope::Tenant, true),
    (Who::View, "watch HOOKS", Scope::Tenant, true),
    (Who::View, "create HOOKS", Scope::Tenant, false),
    (Who::View, "update HOOKS", Scope::Tenant, false),
    (Who::View, "delete HOOKS", Scope::Tenant, false),
    (Who::View, "patch HOOKS --subresource=status", Scope::Tenant, false),
];

/// `kubectl auth can-i` as `who`; true for yes, false for no.
fn can_i(what: &[&str], ns: Option<&str>, who: &str) -> bool {
    let mut args = vec!["auth", "can-i"];
    args.extend_from_slice(what);
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
        other => panic!("kubectl {}: {other} {}", args.join(" "), out.stderr),
    }
}

#[test]
fn rbac_grants_each_identity_what_it_needs_and_nothing_more() {
    let system = namespace("chart-rbac-system");
    let tenant = namespace("chart-rbac-tenant");
    let other = namespace("chart-rbac-other");
    let release = format!("rbac{}", unique_suffix());
    let fullname = helm_install(&release, &system);
    wait_for_aggregation();

    // Tenants get the built-in roles, as a platform would bind them.
    for (user, role) in [("alice", "admin"), ("erin", "edit"), ("victor", "view")] {
        kubectl_ok(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            "-n",
            &tenant,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]);
    }
    let identity = |who: Who| match who {
        Who::Controller => format!("system:serviceaccount:{system}:{fullname}-controller"),
        Who::Dispatcher => format!("system:serviceaccount:{system}:{fullname}-dispatcher"),
        Who::Admin => "alice".to_string(),
        Who::Edit => "erin".to_string(),
        Who::View => "victor".to_string(),
    };
    let lease = format!("{fullname}-controller");
    let rows = ALLOWED_TO_OPERATOR
        .iter()
        .map(|&(who, what, scope)| (who, what, scope, true))
        .chain(
            REFUSED_TO_OPERATOR
                .iter()
                .map(|&(who, what, scope)| (who, what, scope, false)),
        )
        .chain(TENANTS.iter().copied());
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (who, what, scope, want) in rows {
        let what = what.replace("HOOKS", HOOKS).replace("{lease}", &lease);
        let words: Vec<&str> = what.split_whitespace().collect();
        let ns = match scope {
            Scope::All => None,
            Scope::Tenant => Some(tenant.as_str()),
            Scope::System => Some(system.as_str()),
            Scope::Other => Some(other.as_str()),
        };
        checked += 1;
        if can_i(&words, ns, &identity(who)) != want {
            wrong.push(format!(
                "{who:?}: `{what}` in {scope:?} should be {}",
                if want { "allowed" } else { "refused" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC is off in {} of {checked} checks:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A copy of the admin kubeconfig whose user impersonates `user` (kube-rs
/// and kubectl both honour the `as` field).
fn kubeconfig_as(dir: &Path, name: &str, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&support::env().kubeconfig).expect("reading the admin kubeconfig");
    let mut config: serde_json::Value = serde_yaml_ng::from_str(&admin).expect("the kubeconfig is YAML");
    for entry in config["users"].as_array_mut().expect("kubeconfig users") {
        entry["user"]["as"] = json!(user);
    }
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("rendering YAML")).expect("writing a kubeconfig");
    path
}

#[test]
fn the_binaries_do_their_whole_job_as_the_charts_service_accounts() {
    let system = namespace("chart-sa-system");
    let test = DeliveryTest::new("chart-sa-tenant");
    let tenant = &test.ns;
    let release = format!("sa{}", unique_suffix());
    let fullname = helm_install(&release, &system);
    // The identities and Lease the installed Deployments run with, which
    // this test gives the binaries.
    let lease = format!("{fullname}-controller");
    for (component, flag) in [
        ("controller", Some(format!("--lease-name={lease}"))),
        ("dispatcher", None),
    ] {
        let name = format!("{fullname}-{component}");
        let deployment = kubectl_ok(&["get", "deployment", &name, "-n", &system, "-o", "json"]);
        let deployment: serde_json::Value = serde_json::from_str(&deployment).expect("kubectl printed JSON");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], json!(name), "{component} Deployment");
        if let Some(flag) = flag {
            assert!(
                pod["containers"][0]["args"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(flag))),
                "{component} Deployment lacks {flag}: {pod}"
            );
        }
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let controller_sa = format!("system:serviceaccount:{system}:{fullname}-controller");
    let dispatcher_sa = format!("system:serviceaccount:{system}:{fullname}-dispatcher");
    let controller_kubeconfig = kubeconfig_as(dir.path(), "controller", &controller_sa);
    let dispatcher_kubeconfig = kubeconfig_as(dir.path(), "dispatcher", &dispatcher_sa);

    // The impersonation takes: the API server sees the ServiceAccount.
    let whoami = Command::new(support::env().bin_dir.join("kubectl"))
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", &controller_kubeconfig)
        .output()
        .expect("running kubectl auth whoami");
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), controller_sa);

    let (receiver, healthy) = Receiver::switchable(true);

    // The controller as in the chart's Deployment: its Lease in the release
    // namespace, named after the release.
    let identity = format!("chart-sa-{}", unique_suffix());
    let mut controller = ControllerProcess::start_as(
        &identity,
        &controller_kubeconfig,
        &system,
        &[
            "--allow-http",
            "--watch-namespace",
            tenant,
            "--lease-name",
            &lease,
            "--rotation-overlap",
            "2s",
        ],
    );
    // The shared manifest subscribes to CREATE.
    apply_ok(tenant, &hook_yaml("crm", &receiver.url("/hook"), json!({})));

    // Ready: it read the hook, the Namespace and Secrets, generated the
    // Secret, wrote status, recorded Events, and leads on its Lease. A
    // refusal fails at once, naming what was refused.
    wait_for("crm Ready=True/Active", Duration::from_secs(60), || {
        refuse_forbidden("controller", &controller.logs());
        match condition(tenant, "crm", conditions::READY) {
            Some(c) if c.status == "True" && c.reason == ready::ACTIVE => Ok(()),
            other => Err(format!(
                "{other:?}; controller log tail:\n{}",
                tail(&controller.logs(), 10)
            )),
        }
    });
    controller.wait_ready(Duration::from_secs(30));
    let secret = generated_secret(tenant, "crm").expect("the controller generated the Secret");
    let token = secret.get(TOKEN_KEY).cloned().expect("the Secret has a token");
    let holder = lease_holder_in(&system, &lease);
    assert_eq!(holder, identity, "the controller holds the chart's Lease");
    wait_for("the controller's Events", Duration::from_secs(20), || {
        let events = kubectl_ok(&["get", "events.events.k8s.io", "-n", tenant, "-o", "json"]);
        if events.contains("SecretGenerated") {
            Ok(())
        } else {
            Err(events)
        }
    });

    // The dispatcher delivers, signed with the generated token.
    let dispatcher = Dispatcher::start_with_env(
        test.args("chart-sa", &["--retry-schedule", "200ms,200ms"]),
        vec![(
            "KUBECONFIG".into(),
            dispatcher_kubeconfig.to_string_lossy().into_owned(),
        )],
    );
    let first = test.publish(&json!({"n": 1}));
    let delivered = receiver.wait_for_event(&first, 1, Duration::from_secs(30));
    assert_eq!(
        delivered[0].header("x-kustomer-webhook-signature"),
        outbound_webhooks::wire::signing::kustomer_signature(&token, &delivered[0].body),
        "signed with the Secret the controller generated"
    );

    // A rotation: the controller stages, promotes and (after the overlap)
    // removes tokens by patching the Secret, with these grants only.
    let annotate = |annotation: &str| {
        kubectl_ok(&[
            "annotate",
            "owh/crm",
            "-n",
            tenant,
            &format!("{annotation}=r1"),
            "--overwrite",
        ])
    };
    let secret_where = |what: &str, check: &dyn Fn(&std::collections::BTreeMap<String, String>) -> bool| {
        wait_for(what, Duration::from_secs(30), || {
            refuse_forbidden("controller", &controller.logs());
            let data = generated_secret(tenant, "crm").ok_or("no Secret")?;
            if check(&data) {
                Ok(data)
            } else {
                Err(format!("keys {:?}", data.keys()))
            }
        })
    };
    annotate(ROTATE_SECRET_ANNOTATION);
    let next = secret_where("a staged next-token", &|d| d.contains_key(NEXT_TOKEN_KEY))[NEXT_TOKEN_KEY].clone();
    annotate(PROMOTE_SECRET_ANNOTATION);
    secret_where("the promotion", &|d| {
        d[TOKEN_KEY] == next && d.contains_key(PREVIOUS_TOKEN_KEY)
    });
    secret_where("the previous token removed", &|d| !d.contains_key(PREVIOUS_TOKEN_KEY));
    wait_for(
        "a delivery signed with the promoted token",
        Duration::from_secs(30),
        || {
            let id = test.publish(&json!({"after": "rotation"}));
            let got = receiver.wait_for_event(&id, 1, Duration::from_secs(20)).remove(0);
            if got.header("x-kustomer-webhook-signature")
                == outbound_webhooks::wire::signing::kustomer_signature(&next, &got.body)
            {
                Ok(())
            } else {
                Err("signed with the old token".to_string())
            }
        },
    );

    // Failures: the dispatcher writes status.delivery, the controller turns
    // that into AutoDisabled.
    healthy.store(false, Ordering::SeqCst);
    let second = test.publish(&json!({"n": 2}));
    receiver.wait_for_event(&second, 1, Duration::from_secs(30));
    wait_for(
        "the dispatcher's status.delivery write",
        Duration::from_secs(30),
        || {
            refuse_forbidden("dispatcher", &dispatcher.log());
            let hook = support::kubectl::get_json(tenant, "owh", "crm").expect("the hook exists");
            match hook["status"]["delivery"]["consecutiveFailures"].as_i64() {
                Some(n) if n >= 1 => Ok(()),
                _ => Err(hook["status"].to_string()),
            }
        },
    );
    wait_not_ready(tenant, "crm", ready::AUTO_DISABLED, Duration::from_secs(30));

    refuse_forbidden("controller", &controller.logs());
    refuse_forbidden("dispatcher", &dispatcher.log());
}

/// Fails the test when a log mentions `forbidden` (an RBAC refusal).
fn refuse_forbidden(who: &str, log: &str) {
    let refused: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("forbidden")).collect();
    assert!(
        refused.is_empty(),
        "the {who} was refused something with the chart's RBAC:\n{}",
        refused.join("\n")
    );
}

/// The rendered Deployment of `component` (controller or dispatcher).
fn deployment(manifests: &str, component: &str) -> serde_json::Value {
    manifests
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .unwrap_or_else(|| panic!("no {component} Deployment rendered"))
}

/// The environment of a Deployment's container: name to `value` (or to
/// the `valueFrom` object).
fn env_of(deployment: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .map(|e| {
            let value = if e["value"].is_null() {
                e["valueFrom"].clone()
            } else {
                e["value"].clone()
            };
            (e["name"].as_str().expect("env name").to_string(), value)
        })
        .collect()
}

/// The Redis settings the binaries read from the environment (docs/src/configuration.md#flags:
/// every flag has an env twin).
const REDIS_MODE: &str = "OUTBOUND_WEBHOOKS_REDIS_MODE";
const REDIS_MASTER_NAME: &str = "OUTBOUND_WEBHOOKS_REDIS_MASTER_NAME";
const REDIS_CA_FILE: &str = "OUTBOUND_WEBHOOKS_REDIS_CA_FILE";
const SHARDS: &str = "OUTBOUND_WEBHOOKS_SHARDS";
const REDIS_CA_DIR: &str = "/etc/outbound-webhooks/redis-ca";

#[test]
fn the_redis_mode_and_shard_count_reach_the_dispatcher_and_nothing_redis_reaches_the_controller() {
    for (sets, mode, shards) in [
        (None, "standalone", "1"),
        (Some("redis.mode=cluster,dispatcher.shards=6"), "cluster", "6"),
        (Some("redis.mode=standalone,dispatcher.shards=16"), "standalone", "16"),
    ] {
        let extra: Vec<&str> = sets.map(|s| vec!["--set", s]).unwrap_or_default();
        let manifests = template("owh", "owh-system", &extra);
        let dispatcher = deployment(&manifests, "dispatcher");
        let env = env_of(&dispatcher);
        assert_eq!(env.get(REDIS_MODE), Some(&json!(mode)), "{sets:?}: {env:?}");
        assert_eq!(env.get(SHARDS), Some(&json!(shards)), "{sets:?}: {env:?}");
        assert!(!env.contains_key(REDIS_MASTER_NAME), "{sets:?}: {env:?}");
        assert!(!env.contains_key(REDIS_CA_FILE), "{sets:?}: {env:?}");
        let pod = &dispatcher["spec"]["template"]["spec"];
        assert!(pod["volumes"].is_null(), "{sets:?}: no CA, no volume: {pod}");
        assert!(pod["containers"][0]["volumeMounts"].is_null(), "{sets:?}: {pod}");
        let controller = env_of(&deployment(&manifests, "controller"));
        assert!(
            controller
                .keys()
                .all(|name| !name.starts_with("OUTBOUND_WEBHOOKS_REDIS") && name != SHARDS),
            "the controller does not use Redis: {controller:?}"
        );
    }
}

#[test]
fn the_otlp_endpoint_reaches_the_dispatcher_and_its_egress_only_when_set() {
    const OTLP: &str = "OUTBOUND_WEBHOOKS_OTLP_ENDPOINT";
    let manifests = template("owh", "owh-system", &["--set", "networkPolicy.enabled=true"]);
    assert!(!env_of(&deployment(&manifests, "dispatcher")).contains_key(OTLP));
    assert!(
        !manifests.contains("port: 4318"),
        "no collector egress without an endpoint"
    );
    let manifests = template("owh", "owh-system", &["-f", ALL_OPTIONS]);
    let env = env_of(&deployment(&manifests, "dispatcher"));
    assert_eq!(
        env.get(OTLP),
        Some(&json!("http://otel-collector.observability.svc:4318")),
        "{env:?}"
    );
    assert!(!env_of(&deployment(&manifests, "controller")).contains_key(OTLP));
    assert!(manifests.contains("# The OpenTelemetry collector (attempt spans)\n    - ports:\n        - port: 4318"));
    let (ok, out) = try_template(
        "owh",
        "owh-system",
        &["--set", "dispatcher.otlpEndpoint=otel-collector:4318"],
    );
    assert!(
        !ok && out.contains("otlpEndpoint"),
        "a URL without a scheme is refused: {out}"
    );
}

#[test]
fn sentinel_mode_passes_the_master_name_and_opens_the_sentinel_port() {
    let sentinel = "redis.mode=sentinel,redis.masterName=mymaster,networkPolicy.enabled=true";
    let manifests = template("owh", "owh-system", &["--set", sentinel]);
    let env = env_of(&deployment(&manifests, "dispatcher"));
    assert_eq!(env.get(REDIS_MODE), Some(&json!("sentinel")));
    assert_eq!(env.get(REDIS_MASTER_NAME), Some(&json!("mymaster")));

    // The dispatcher's egress to Redis: the data port and, in mode sentinel
    // only, the sentinels' port.
    let redis_ports = |manifests: &str| -> Vec<serde_json::Value> {
        let policy = manifests
            .split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
            .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == "owh-outbound-webhooks-dispatcher")
            .expect("the dispatcher's NetworkPolicy");
        policy["spec"]["egress"]
            .as_array()
            .expect("egress rules")
            .iter()
            .find(|rule| rule["ports"][0]["port"] == 6379)
            .map(|rule| rule["ports"].as_array().expect("ports").clone())
            .expect("the Redis egress rule")
    };
    assert_eq!(
        redis_ports(&manifests),
        vec![json!({"port": 6379}), json!({"port": 26379})]
    );
    let other_port = template(
        "owh",
        "owh-system",
        &["--set", sentinel, "--set", "networkPolicy.redis.sentinelPort=5000"],
    );
    assert_eq!(
        redis_ports(&other_port),
        vec![json!({"port": 6379}), json!({"port": 5000})]
    );
    let standalone = template("owh", "owh-system", &["--set", "networkPolicy.enabled=true"]);
    assert_eq!(redis_ports(&standalone), vec![json!({"port": 6379})]);
}

#[test]
fn a_redis_ca_from_a_secret_or_a_configmap_is_mounted_read_only_for_the_dispatcher() {
    for (sets, source) in [
        (
            "redis.tls.caSecret.name=redis-ca",
            json!({"secret": {"secretName": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
        (
            "redis.tls.caSecret.name=managed-redis,redis.tls.caSecret.key=bundle.pem",
            json!({"secret": {"secretName": "managed-redis", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}),
        ),
        (
            "redis.tls.caConfigMap.name=redis-ca-bundle,redis.tls.caConfigMap.key=root.pem",
            json!({"configMap": {"name": "redis-ca-bundle", "items": [{"key": "root.pem", "path": "ca.crt"}]}}),
        ),
    ] {
        let manifests = template("owh", "owh-system", &["--set", sets]);
        let dispatcher = deployment(&manifests, "dispatcher");
        let pod = &dispatcher["spec"]["template"]["spec"];
        let mut expected_volume = source.clone();
        expected_volume["name"] = json!("redis-ca");
        assert_eq!(pod["volumes"], json!([expected_volume]), "{sets}");
        assert_eq!(
            pod["containers"][0]["volumeMounts"],
            json!([{"name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": true}]),
            "{sets}"
        );
        let env = env_of(&dispatcher);
        assert_eq!(
            env.get(REDIS_CA_FILE),
            Some(&json!(format!("{REDIS_CA_DIR}/ca.crt"))),
            "{sets}: {env:?}"
        );
        let controller = &deployment(&manifests, "controller")["spec"]["template"]["spec"];
        assert!(controller["volumes"].is_null(), "{sets}: the controller mounts no CA");
    }
}

#[test]
fn the_schema_refuses_sentinel_without_a_master_name_an_unknown_mode_no_shards_two_cas_and_a_prefix_without_hash_tag() {
    for (sets, at) in [
        ("redis.mode=sentinel", "at '/redis/masterName'"),
        ("redis.mode=sentinel,redis.masterName=", "at '/redis/masterName'"),
        ("redis.mode=replicated", "at '/redis/mode'"),
        ("dispatcher.shards=0", "at '/dispatcher/shards'"),
        ("dispatcher.shards=-2", "at '/dispatcher/shards'"),
        ("dispatcher.shards=1.5", "at '/dispatcher/shards'"),
        (
            "redis.tls.caSecret.name=redis-ca,redis.tls.caConfigMap.name=redis-ca",
            "at '/redis/tls/caConfigMap/name'",
        ),
        ("redis.tls.caSecret.key=", "at '/redis/tls/caSecret/key'"),
        (
            "dispatcher.destinationCa.secret.name=a,dispatcher.destinationCa.configMap.name=b",
            "at '/dispatcher/destinationCa/configMap/name'",
        ),
        ("image.digest=latest", "at '/image/digest'"),
        ("redis.prefix=outbound-webhooks:", "at '/redis/prefix'"),
        (
            "networkPolicy.redis.sentinelPort=0",
            "at '/networkPolicy/redis/sentinelPort'",
        ),
    ] {
        let (ok, out) = try_template("owh", "owh-system", &["--set", sets]);
        assert!(!ok, "helm template --set {sets} was accepted");
        assert!(
            out.contains("don't meet the specifications of the schema") && out.contains(at),
            "--set {sets}: expected the schema to refuse {at}, got:\n{out}"
        );
    }
    // What the schema accepts, the templates render.
    let (ok, out) = try_template(
        "owh",
        "owh-system",
        &[
            "--set",
            "redis.mode=sentinel,redis.masterName=mymaster,dispatcher.shards=1",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn the_templates_refuse_what_the_schema_refuses_when_it_is_skipped() {
    for (sets, message) in [
        (
            "redis.mode=sentinel",
            "set redis.masterName (Sentinel's name of the primary) with redis.mode sentinel",
        ),
        (
            "redis.tls.caSecret.name=a,redis.tls.caConfigMap.name=b",
            "set redis.tls.caSecret or redis.tls.caConfigMap, not both",
        ),
    ] {
        let (ok, out) = try_template("owh", "owh-system", &["--skip-schema-validation", "--set", sets]);
        assert!(!ok && out.contains(message), "--set {sets}:\n{out}");
    }
}

#[test]
fn no_credential_and_no_unsalted_hash_of_one_reaches_the_rendered_chart() {
    use sha2::{Digest, Sha256};
    let password = "chart-redis-password-4711";
    let url = format!("redis://:{password}@redis-master.redis:6379/0");
    let plain_hash = hex::encode(Sha256::digest(url.as_bytes()));
    let salt = "0d5e3b9a7c1f4e2d8b6a0c9e7f3d1b5a";
    for salt_set in [None, Some(salt)] {
        let mut sets = format!("redis.url={url},dispatcher.proxySecret.name=egress-proxy");
        if let Some(salt) = salt_set {
            sets.push_str(&format!(",redis.checksumSalt={salt}"));
        }
        let manifests = template("owh", "owh-system", &["--set", &sets]);
        // The chart's own Secret holds the URL (stringData); nothing else may.
        let outside_secret: String = documents(&manifests)
            .into_iter()
            .filter(|doc| doc["kind"] != "Secret")
            .map(|doc| doc.to_string())
            .collect();
        assert!(!outside_secret.contains(password), "{salt_set:?}: {outside_secret}");
        assert!(
            !manifests.contains(&plain_hash),
            "{salt_set:?}: an unsalted hash of the URL"
        );
        let dispatcher = deployment(&manifests, "dispatcher");
        let annotations = &dispatcher["spec"]["template"]["metadata"]["annotations"];
        match salt_set {
            None => assert!(annotations["checksum/redis"].is_null(), "{annotations}"),
            Some(salt) => {
                let salted = hex::encode(Sha256::digest(format!("{salt}\n{url}").as_bytes()));
                assert_eq!(annotations["checksum/redis"], json!(salted), "{annotations}");
            }
        }
        let env = env_of(&dispatcher);
        assert_eq!(
            env.get("OUTBOUND_WEBHOOKS_PROXY"),
            Some(&json!({"secretKeyRef": {"name": "egress-proxy", "key": "proxy-url"}})),
            "the proxy URL comes from a Secret: {env:?}"
        );
    }
    let defaults = env_of(&deployment(&template("owh", "owh-system", &[]), "dispatcher"));
    assert!(!defaults.contains_key("OUTBOUND_WEBHOOKS_PROXY"), "{defaults:?}");
}
