//! The built kubectl against the test control plane, as a user would run it,
//! and readers of what it prints.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Output, Stdio},
};

use base64::Engine as _;
use serde_json::Value;

use super::cluster::env;

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

/// `kubectl apply -n NS -f -` of a YAML (or JSON) document.
pub fn apply_yaml(namespace: &str, yaml: &str) -> KubectlOutput {
    kubectl_with_input(&["apply", "-n", namespace, "-f", "-"], Some(yaml))
}

/// `kubectl apply` of a document, failing the test unless it succeeds.
pub fn apply_ok(namespace: &str, document: &str) {
    let out = apply_yaml(namespace, document);
    assert!(
        out.success,
        "applying into {namespace}: {}{}\n{document}",
        out.stdout, out.stderr
    );
}

/// A server-side apply of `document` (with its namespace in the metadata)
/// to the status subresource under `field_manager`, as the controller or
/// the dispatcher writes status; `force` takes fields from other managers.
pub fn apply_status(field_manager: &str, force: bool, document: &Value) {
    let manager = format!("--field-manager={field_manager}");
    let mut args = vec!["apply", "--server-side", "--subresource=status", &manager];
    if force {
        args.push("--force-conflicts");
    }
    args.extend(["-f", "-"]);
    let out = kubectl_with_input(&args, Some(&document.to_string()));
    assert!(
        out.success,
        "applying status as {field_manager}: {}{}\n{document}",
        out.stdout, out.stderr
    );
}

/// `kubectl get KIND NAME -o json`, or None when it does not exist.
pub fn get_json(namespace: &str, kind: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
    if !out.success {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

/// `kubectl get KIND NAME -o jsonpath=PATH`, failing unless it succeeds.
pub fn jsonpath(namespace: &str, kind: &str, name: &str, path: &str) -> String {
    kubectl_ok(&["get", kind, name, "-n", namespace, "-o", &format!("jsonpath={path}")])
}

/// The decoded data of a Secret, or None when it does not exist.
pub fn secret_data(namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let json = get_json(namespace, "secret", name)?;
    Some(
        json["data"]
            .as_object()
            .map(|data| {
                data.iter()
                    .map(|(k, v)| {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap_or_default())
                            .expect("Secret data is base64");
                        (k.clone(), String::from_utf8_lossy(&bytes).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The holder of a Lease in `default` (empty when there is none).
pub fn lease_holder(lease: &str) -> String {
    lease_holder_in("default", lease)
}

/// The holder of a Lease in `namespace` (empty when there is none).
pub fn lease_holder_in(namespace: &str, lease: &str) -> String {
    let out = kubectl(&[
        "get",
        "lease",
        lease,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    if out.success { out.stdout } else { String::new() }
}

/// `kubectl describe owh HOOK`.
pub fn describe(namespace: &str, hook: &str) -> String {
    kubectl_ok(&["describe", "owh", hook, "-n", namespace])
}

/// Waits until `kubectl describe owh HOOK` shows every one of `texts`
/// (Event reasons, say); returns the text.
pub fn wait_described(namespace: &str, hook: &str, texts: &[&str]) -> String {
    super::wait_for(
        &format!("{texts:?} in kubectl describe owh/{hook}"),
        std::time::Duration::from_secs(15),
        || {
            let text = describe(namespace, hook);
            if texts.iter().all(|t| text.contains(t)) {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
}

/// Waits until an `events.k8s.io` Event about the hook with `reason` and a
/// note containing `text` exists; returns the note (in full: `describe`
/// cuts long ones).
pub fn wait_event(namespace: &str, hook: &str, reason: &str, text: &str) -> String {
    super::wait_for(
        &format!("an Event {reason} on owh/{hook} saying {text:?}"),
        std::time::Duration::from_secs(15),
        || {
            let list = kubectl_ok(&["get", "events.events.k8s.io", "-n", namespace, "-o", "json"]);
            let list: Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["reason"] == reason && e["regarding"]["name"] == hook)
                .map(|e| e["note"].as_str().unwrap_or_default().to_string())
                .find(|note| note.contains(text))
                .ok_or_else(|| format!("{} Events", list["items"].as_array().map_or(0, Vec::len)))
        },
    )
}

/// Writes one manifest per `(file name, document)` into a temporary folder
/// and applies the folder at once, as `kubectl apply -f DIR` does.
pub fn apply_folder(namespace: &str, documents: impl IntoIterator<Item = (String, String)>) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (file, document) in documents {
        std::fs::write(dir.path().join(file), document).expect("writing a manifest");
    }
    kubectl_ok(&["apply", "-n", namespace, "-f", dir.path().to_str().expect("utf-8 path")]);
}

/// One row of a `kubectl get` table, by column header; a column is read
/// from where its header starts, so an empty cell stays empty.
pub fn table_row(table: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let mut lines = table.lines();
    let header = lines.next()?;
    let starts: Vec<(usize, &str)> = header
        .match_indices(|c: char| !c.is_whitespace())
        .filter(|(i, _)| *i == 0 || header.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| (i, header[i..].split_whitespace().next().unwrap_or_default()))
        .collect();
    let row = lines.find(|l| l.split_whitespace().next() == Some(name))?;
    Some(
        starts
            .iter()
            .enumerate()
            .map(|(n, (start, title))| {
                let end = starts.get(n + 1).map(|(s, _)| *s).unwrap_or(row.len()).min(row.len());
                let cell = row.get((*start).min(row.len())..end).unwrap_or_default();
                (title.to_string(), cell.trim().to_string())
            })
            .collect(),
    )
}

/// `kubectl get owh NAME -n NS` as a row by column header.
pub fn owh_row(namespace: &str, name: &str) -> BTreeMap<String, String> {
    let table = kubectl_ok(&["get", "owh", name, "-n", namespace]);
    table_row(&table, name).unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

/// One Kubernetes Event as `kubectl get events` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    /// `Normal` or `Warning`.
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// The note (`message` in the core view).
    pub message: String,
}

/// The Events of `namespace` about the object named `name`.
pub fn events_about(namespace: &str, name: &str) -> Vec<SeenEvent> {
    let selector = format!("involvedObject.name={name}");
    let list: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &selector,
        "-o",
        "json",
    ]))
    .expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| SeenEvent {
                    type_: e["type"].as_str().unwrap_or_default().to_string(),
                    reason: e["reason"].as_str().unwrap_or_default().to_string(),
                    message: e["message"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}
