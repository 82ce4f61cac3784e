//! The image users deploy: `scripts/build-image.sh` (run by `scripts/test.sh`
//! before the tests, cached by the binary's hash) builds it without a
//! daemon; here its root filesystem runs the controller and the dispatcher
//! the way the chart's pods run them, and delivers one signed event over
//! HTTPS to a receiver whose CA comes the way the chart documents
//! (`dispatcher.destinationCa`).
//!
//! `podman run` is refused on these machines (crun cannot set rlimits
//! without CAP_SYS_RESOURCE), so each pod is a chroot: the image's layers
//! unpacked, what the kubelet would mount written in (the ServiceAccount
//! token, /etc/hosts and /etc/resolv.conf, the Secret volumes of the pod
//! spec), the root bind-mounted read-only in a mount namespace of its own
//! (`readOnlyRootFilesystem`), then `chroot --userspec` with the pod's
//! `runAsUser`/`runAsGroup`, the image's entrypoint, and only the arguments
//! and environment of the Deployment `helm template` renders (plus the
//! `KUBERNETES_SERVICE_*` variables every pod gets). The processes share
//! the host's network (pods would each have their own), so each render
//! gets its own `metricsPort`.

use outbound_webhooks_test_kit as support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use base64::Engine as _;
use outbound_webhooks::{
    contract::conditions::{self, ready},
    controller::secrets::secret::TOKEN_KEY,
};
use serde_json::{Value, json};
use support::{
    delivery_test::DeliveryTest,
    helm::{CHART, helm, template},
    hooks::{generated_secret, hook_yaml, wait_condition},
    kubectl::apply_ok,
    kubectl_ok, kubectl_with_input, namespace,
    process::{ChildProcess, free_port, tail},
    redis_topologies::make_test_pki,
    repo_root, unique_suffix, wait_for,
};

/// Where the binary sits in both images (Containerfile and Dockerfile).
const ENTRYPOINT: &str = "/usr/local/bin/outbound-webhooks";
/// The system CA bundle in both images.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// The repository the test gives the chart for the built image.
const REPOSITORY: &str = "localhost/outbound-webhooks";

/// The built image: its digest, config and layers.
struct Image {
    digest: String,
    config: Value,
    /// The layer archives, lowest first.
    layers: Vec<PathBuf>,
    _unpacked: tempfile::TempDir,
}

/// The image `scripts/build-image.sh` wrote (into `target/image`, or
/// `OUTBOUND_WEBHOOKS_IMAGE_DIR`), copied out of its OCI archive once.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = std::env::var_os("OUTBOUND_WEBHOOKS_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/image"));
        let archive = dir.join("outbound-webhooks.oci.tar");
        let digest = std::fs::read_to_string(dir.join("digest")).unwrap_or_else(|e| {
            panic!(
                "no built image in {} ({e}): run scripts/build-image.sh (scripts/test.sh does)",
                dir.display()
            )
        });
        let reference = format!("oci-archive:{}", archive.display());
        let skopeo = |args: &[&str]| {
            let out = Command::new("skopeo")
                .args(args)
                .output()
                .expect("running skopeo (apt-get install -y skopeo; scripts/build-image.sh installs it)");
            assert!(
                out.status.success(),
                "skopeo {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let config: Value =
            serde_json::from_slice(&skopeo(&["inspect", "--config", &reference])).expect("the image config is JSON");
        let unpacked = tempfile::tempdir().expect("a temp dir");
        let layout = unpacked.path().join("image");
        skopeo(&["copy", "--quiet", &reference, &format!("dir:{}", layout.display())]);
        let manifest: Value = serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).expect("manifest"))
            .expect("the manifest is JSON");
        let layers = manifest["layers"]
            .as_array()
            .expect("the manifest lists layers")
            .iter()
            .map(|l| {
                let digest = l["digest"].as_str().expect("a layer digest");
                layout.join(digest.trim_start_matches("sha256:"))
            })
            .collect();
        Image {
            digest: digest.trim().to_string(),
            config,
            layers,
            _unpacked: unpacked,
        }
    })
}

/// A fresh root filesystem of the image in `dir`.
fn unpack_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("creating the rootfs dir");
    for layer in &image().layers {
        let out = Command::new("tar")
            .arg("-xf")
            .arg(layer)
            .arg("-C")
            .arg(dir)
            .output()
            .expect("running tar");
        assert!(
            out.status.success(),
            "unpacking a layer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes `content` at `path` inside `rootfs`, readable by everyone (as
/// the kubelet's projected volumes are, with the pod's fsGroup).
fn put(rootfs: &Path, path: &str, content: &[u8]) {
    let file = rootfs.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("creating a mount point");
    std::fs::write(&file, content).expect("writing into the rootfs");
}

/// The decoded value of a Secret's or ConfigMap's key in `ns`.
fn object_value(ns: &str, kind: &str, name: &str, key: &str) -> Vec<u8> {
    let json: Value =
        serde_json::from_str(&kubectl_ok(&["get", kind, name, "-n", ns, "-o", "json"])).expect("kubectl printed JSON");
    if kind == "secret" {
        let encoded = json["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}/{name} has no {key}"));
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("Secret data is base64")
    } else {
        json["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}/{name} has no {key}"))
            .as_bytes()
            .to_vec()
    }
}

/// The rendered Deployment of `component`.
fn deployment(manifests: &str, component: &str) -> Value {
    support::helm::documents(manifests)
        .into_iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .unwrap_or_else(|| panic!("no {component} Deployment rendered"))
}

/// One pod of a rendered Deployment, run from the image's root filesystem.
struct Pod {
    process: ChildProcess,
    ops_port: u16,
    _dir: tempfile::TempDir,
}

impl Pod {
    /// Runs the first container of `deployment` (rendered for release
    /// namespace `ns`) as the kubelet would: see the module documentation.
    fn start(name: &str, deployment: &Value, ns: &str, ops_port: u16) -> Pod {
        let env_ = support::env();
        let dir = tempfile::tempdir().expect("a temp dir");
        let rootfs = dir.path().join("rootfs");
        unpack_rootfs(&rootfs);
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let pod_name = format!("{name}-0");

        // The kubelet's part: the ServiceAccount token and the cluster CA,
        // /etc/hosts and /etc/resolv.conf, the pod's volumes.
        let sa = pod["serviceAccountName"].as_str().expect("a ServiceAccount");
        let token = kubectl_ok(&["create", "token", sa, "-n", ns]);
        let kubeconfig: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&env_.kubeconfig).expect("the admin kubeconfig"))
                .expect("the kubeconfig is YAML");
        let cluster = &kubeconfig["clusters"][0]["cluster"];
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster["certificate-authority-data"].as_str().expect("the cluster CA"))
            .expect("base64");
        let server = url::Url::parse(cluster["server"].as_str().expect("the server URL")).expect("a URL");
        let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
        put(&rootfs, &format!("{sa_dir}/token"), token.trim().as_bytes());
        put(&rootfs, &format!("{sa_dir}/ca.crt"), &ca);
        put(&rootfs, &format!("{sa_dir}/namespace"), ns.as_bytes());
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            put(&rootfs, file, &std::fs::read(file).unwrap_or_default());
        }
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
                .expect("a mount's volume");
            let (kind, object, items) = if volume["secret"].is_object() {
                ("secret", &volume["secret"]["secretName"], &volume["secret"]["items"])
            } else {
                ("configmap", &volume["configMap"]["name"], &volume["configMap"]["items"])
            };
            let object = object.as_str().expect("the volume's object");
            for item in items.as_array().expect("the chart mounts items") {
                let key = item["key"].as_str().expect("an item key");
                let path = format!(
                    "{}/{}",
                    mount["mountPath"].as_str().expect("a mountPath"),
                    item["path"].as_str().expect("an item path")
                );
                put(&rootfs, &path, &object_value(ns, kind, object, key));
            }
        }

        // Only the rendered environment, and what every pod gets.
        let mut environment: BTreeMap<String, String> = BTreeMap::new();
        environment.insert(
            "KUBERNETES_SERVICE_HOST".into(),
            server.host_str().expect("a host").to_string(),
        );
        environment.insert(
            "KUBERNETES_SERVICE_PORT".into(),
            server.port().expect("the API server's port").to_string(),
        );
        for e in container["env"].as_array().into_iter().flatten() {
            let key = e["name"].as_str().expect("an env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if e["valueFrom"]["secretKeyRef"].is_object() {
                let r = &e["valueFrom"]["secretKeyRef"];
                let bytes = object_value(
                    ns,
                    "secret",
                    r["name"].as_str().expect("a name"),
                    r["key"].as_str().expect("a key"),
                );
                String::from_utf8(bytes).expect("a UTF-8 Secret value")
            } else {
                match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod_name.clone(),
                    Some("metadata.namespace") => ns.to_string(),
                    other => panic!("env {key} from {other:?}: teach the test how the kubelet fills it"),
                }
            };
            environment.insert(key, value);
        }

        let security = &pod["securityContext"];
        let user = format!(
            "{}:{}",
            security["runAsUser"].as_u64().expect("the chart sets runAsUser"),
            security["runAsGroup"].as_u64().expect("the chart sets runAsGroup")
        );
        assert_eq!(
            image().config["config"]["User"].as_str(),
            Some(user.as_str()),
            "the image's USER is the chart's runAsUser:runAsGroup"
        );
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"],
            json!(true),
            "the chart sets a read-only root"
        );
        assert!(
            container["command"].is_null(),
            "the chart relies on the image's entrypoint"
        );
        let entrypoint: Vec<String> = serde_json::from_value(image().config["config"]["Entrypoint"].clone())
            .expect("the image has an entrypoint");
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("the container's args");

        // A mount namespace of its own: the root read-only, then the
        // chroot as the pod's user.
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"root=$1; user=$2; shift 2
mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" && exec chroot --userspec="$user" "$root" "$@""#,
            )
            .arg("sh")
            .arg(&rootfs)
            .arg(&user)
            .args(&entrypoint)
            .args(&args)
            .env_clear()
            .envs(&environment);
        let log = dir.path().join(format!("{name}.log"));
        let process = ChildProcess::start(name, command, Some(&log)).expect("starting the pod");
        Pod {
            process,
            ops_port,
            _dir: dir,
        }
    }

    fn wait_ready(&mut self) {
        let port = self.ops_port;
        if let Err(e) = self.process.wait_ready(port, Duration::from_secs(60)) {
            panic!("{e}\n{}", tail(&self.process.log(), 30));
        }
    }
}

/// A receiver over HTTPS: the Python example receiver (`examples/receivers/
/// python`, which verifies the signatures) behind TLS with a certificate of
/// the test CA. Prints `verified ID ...` per event it accepted.
fn https_receiver(port: u16, pki: &Path, token: &str, log: &Path) -> ChildProcess {
    let script = r#"
import ssl, sys
sys.path.insert(0, sys.argv[1])
import receiver
receiver.Handler.tokens = receiver.load_tokens()
server = receiver.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), receiver.Handler)
server.daemon_threads = True
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[3], sys.argv[4])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"#;
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("examples/receivers/python"))
        .arg(port.to_string())
        .arg(pki.join("server.crt"))
        .arg(pki.join("server.key"))
        .env("WEBHOOK_TOKEN", token);
    let process = ChildProcess::start("HTTPS receiver", command, Some(log)).expect("starting python3");
    wait_for("the HTTPS receiver listening", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("listening") { Ok(()) } else { Err(text) }
    });
    process
}

#[test]
fn the_image_runs_both_processes_as_the_chart_runs_them_and_delivers_over_https() {
    let image = image();
    let tenant = DeliveryTest::new("image");
    let system = namespace("image-system");
    let release = format!("img{}", unique_suffix());
    let pki = tempfile::tempdir().expect("a temp dir");
    make_test_pki(pki.path());
    let ca = std::fs::read_to_string(pki.path().join("ca.crt")).expect("the test CA");
    let created = kubectl_with_input(
        &[
            "create",
            "secret",
            "generic",
            "receiver-ca",
            "-n",
            &system,
            "--from-file=ca.crt=/dev/stdin",
        ],
        Some(&ca),
    );
    assert!(created.success, "creating the receivers' CA Secret: {}", created.stderr);
    let receiver_port = free_port();
    let (controller_port, dispatcher_port) = (free_port(), free_port());

    // The values a user gives for the built image, a private-CA receiver
    // and this test's Redis prefix and tenant namespace.
    let values = |metrics_port: u16| -> PathBuf {
        let values = json!({
            "image": {"repository": REPOSITORY, "digest": image.digest},
            "redis": {"url": tenant.redis_url, "prefix": tenant.prefix},
            "dispatcher": {
                "destinationCa": {"secret": {"name": "receiver-ca"}},
                "allowDestinationCidrs": ["127.0.0.0/8"],
            },
            "controller": {"extraArgs": [format!("--watch-namespace={}", tenant.ns)]},
            "crds": {"install": false},
            "metricsPort": metrics_port,
        });
        let path = pki.path().join(format!("values-{metrics_port}.yaml"));
        std::fs::write(&path, serde_yaml_ng::to_string(&values).expect("YAML")).expect("writing values");
        path
    };
    let (controller_values, dispatcher_values) = (values(controller_port), values(dispatcher_port));
    let (controller_values, dispatcher_values) = (
        controller_values.to_string_lossy().into_owned(),
        dispatcher_values.to_string_lossy().into_owned(),
    );

    // The ServiceAccounts, RBAC and the Redis Secret, as a user installs them.
    let (ok, out) = helm(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &system,
        "-f",
        &controller_values,
    ]);
    assert!(ok, "helm install failed:\n{out}");

    let controller = deployment(&template(&release, &system, &["-f", &controller_values]), "controller");
    let dispatcher = deployment(&template(&release, &system, &["-f", &dispatcher_values]), "dispatcher");
    for d in [&controller, &dispatcher] {
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            json!(format!("{REPOSITORY}@{}", image.digest)),
            "the chart pulls the built image by digest"
        );
    }

    let mut controller_pod = Pod::start("controller", &controller, &system, controller_port);
    controller_pod.wait_ready();
    let url = format!("https://127.0.0.1:{receiver_port}/hook");
    apply_ok(&tenant.ns, &hook_yaml("crm", &url, json!({})));
    wait_condition(
        &tenant.ns,
        "crm",
        conditions::READY,
        "True",
        ready::ACTIVE,
        Duration::from_secs(60),
    );
    let token = generated_secret(&tenant.ns, "crm")
        .and_then(|s| s.get(TOKEN_KEY).cloned())
        .expect("the controller from the image generated the signing Secret");

    let receiver_log = pki.path().join("receiver.log");
    let _receiver = https_receiver(receiver_port, pki.path(), &token, &receiver_log);
    let mut dispatcher_pod = Pod::start("dispatcher", &dispatcher, &system, dispatcher_port);
    dispatcher_pod.wait_ready();

    let id = tenant.publish(&json!({"from": "the image"}));
    wait_for(
        "the event verified by the HTTPS receiver",
        Duration::from_secs(60),
        || {
            let received = std::fs::read_to_string(&receiver_log).unwrap_or_default();
            if received.contains(&format!("verified {id} ")) {
                Ok(())
            } else {
                Err(format!(
                    "receiver:\n{}\ndispatcher:\n{}",
                    tail(&received, 10),
                    tail(&dispatcher_pod.process.log(), 20)
                ))
            }
        },
    );
    for pod in [&controller_pod, &dispatcher_pod] {
        let log = pod.process.log();
        assert!(
            !log.to_lowercase().contains("read-only file system") && !log.to_lowercase().contains("forbidden"),
            "the {} wrote to its root or was refused something:\n{}",
            pod.process.name(),
            tail(&log, 30)
        );
    }
}

/// The image scripts/build-image.sh builds and the Dockerfile's give the
/// same layout: entrypoint, user and CA bundle path.
#[test]
fn the_dockerfile_and_the_containerfile_agree_on_entrypoint_user_and_ca_bundle() {
    let root = repo_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect("reading a build file");
    let docker = read("Dockerfile");
    let container = read("scripts/image/Containerfile");
    let script = read("scripts/build-image.sh");
    // The last stage of the Dockerfile is what users run.
    let final_stage = docker.rsplit_once("\nFROM ").map(|(_, s)| s).expect("a final stage");
    let directive = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.trim().to_string()))
    };
    let entrypoint = format!("[\"{ENTRYPOINT}\"]");
    for (what, text) in [("Dockerfile", final_stage), ("Containerfile", container.as_str())] {
        assert_eq!(directive(text, "ENTRYPOINT"), Some(entrypoint.clone()), "{what}");
        assert_eq!(directive(text, "USER").as_deref(), Some("65532:65532"), "{what}");
    }
    assert!(
        final_stage
            .lines()
            .any(|l| l.starts_with("COPY ") && l.ends_with(&format!(" {ENTRYPOINT}"))),
        "the Dockerfile copies the binary to the entrypoint"
    );
    assert!(
        final_stage
            .lines()
            .any(|l| l.starts_with("COPY ") && l.ends_with(&format!(" /{CA_BUNDLE}"))),
        "the Dockerfile puts the CA bundle at /{CA_BUNDLE}"
    );
    assert!(
        script.contains(&format!("\"$rootfs{ENTRYPOINT}\"")),
        "build-image.sh puts the binary at the entrypoint"
    );
    assert!(
        script.contains(&format!("\"$rootfs/{CA_BUNDLE}\"")),
        "build-image.sh puts the CA bundle at /{CA_BUNDLE}"
    );
}

/// What the built image holds: the CA bundle (a dispatcher without one
/// refuses to start) and nothing writable by its user.
#[test]
fn the_built_image_carries_a_ca_bundle_and_its_user_owns_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    unpack_rootfs(dir.path());
    let bundle = std::fs::read_to_string(dir.path().join(CA_BUNDLE)).unwrap_or_default();
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 10,
        "the image's /{CA_BUNDLE} holds the system roots"
    );
    let out = Command::new("find")
        .arg(dir.path())
        .args(["-uid", "65532", "-o", "-perm", "-o+w", "-not", "-type", "l"])
        .output()
        .expect("running find");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "files owned by or writable for the image's user:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
