//! Test support for the controller: the real binary as a child process
//! (killed when its guard drops, and exiting by itself when the test binary
//! dies, because it watches its stdin), plus kubectl-based readers of hooks,
//! conditions and Secrets.

#![allow(dead_code)]

use std::{
    path::Path,
    process::{Command, ExitStatus},
    time::Duration,
};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{
    self, kubectl, kubectl_ok,
    process::{ChildProcess, free_port, http_get},
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
        ControllerProcess::start_as(identity, &support::env().kubeconfig, "default", args)
    }

    /// Like [`ControllerProcess::start`], with another kubeconfig (e.g. one
    /// that impersonates a ServiceAccount) and its Lease in `lease_namespace`.
    pub fn start_as(identity: &str, kubeconfig: &Path, lease_namespace: &str, args: &[&str]) -> ControllerProcess {
        let http_port = free_port();
        let log_dir = tempfile::tempdir().expect("a log directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbound-webhooks"));
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

    /// Waits until /readyz answers 200 (it leads and its caches are synced).
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.process
            .wait_ready(self.http_port, timeout)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// An OutboundWebhook manifest.
pub fn hook_yaml(name: &str, url: &str, extra_spec: Value) -> String {
    let mut spec = json!({
        "url": url,
        "events": ["kustomer.conversation.create"],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

/// Applies a hook with an https URL and no extras.
pub fn apply_hook(namespace: &str, name: &str) {
    let out = support::apply_yaml(namespace, &hook_yaml(name, "https://hooks.example.com/in", json!({})));
    assert!(out.success, "applying {name}: {}", out.stderr);
}

/// `kubectl get KIND NAME -o json`, or None when it does not exist.
pub fn get_json(namespace: &str, kind: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
    if !out.success {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

/// A condition of a hook: (status, reason, message, observedGeneration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

/// The hook's condition of the given type.
pub fn condition(namespace: &str, hook: &str, type_: &str) -> Option<Cond> {
    let json = get_json(namespace, "owh", hook)?;
    condition_of(&json, type_)
}

/// The condition of the given type in a hook's JSON.
pub fn condition_of(json: &Value, type_: &str) -> Option<Cond> {
    json["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| Cond {
            status: c["status"].as_str().unwrap_or_default().to_string(),
            reason: c["reason"].as_str().unwrap_or_default().to_string(),
            message: c["message"].as_str().unwrap_or_default().to_string(),
            observed_generation: c["observedGeneration"].as_i64(),
            last_transition_time: c["lastTransitionTime"].as_str().unwrap_or_default().to_string(),
        })
}

/// Waits until the hook's condition has this status and reason for its
/// current generation; returns it.
pub fn wait_condition(namespace: &str, hook: &str, type_: &str, status: &str, reason: &str, timeout: Duration) -> Cond {
    support::wait_for(
        &format!("{namespace}/{hook} {type_}={status}/{reason}"),
        timeout,
        || {
            let json = get_json(namespace, "owh", hook).ok_or("no such hook")?;
            let generation = json["metadata"]["generation"].as_i64();
            match condition_of(&json, type_) {
                Some(c) if c.status == status && c.reason == reason && c.observed_generation == generation => Ok(c),
                other => Err(format!("{other:?} (generation {generation:?})")),
            }
        },
    )
}

/// The decoded data of a Secret, or None when it does not exist.
pub fn secret_data(namespace: &str, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
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

/// The token of a hook's generated Secret, waiting for it to exist.
pub fn wait_token(namespace: &str, hook: &str, timeout: Duration) -> String {
    support::wait_for(&format!("the token of {namespace}/{hook}"), timeout, || {
        secret_data(namespace, &format!("{hook}-webhook-secret"))
            .and_then(|d| d.get("token").cloned())
            .ok_or_else(|| "no Secret yet".to_string())
    })
}

/// Every hook of a namespace: name -> (creation time, its Accepted
/// condition, whether that condition is for the current generation).
pub fn accepted_conditions(namespace: &str) -> std::collections::BTreeMap<String, (String, Option<Cond>, bool)> {
    let list: Value = serde_json::from_str(&kubectl_ok(&["get", "owh", "-n", namespace, "-o", "json"])).expect("JSON");
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|hook| {
                    let c = condition_of(hook, "Accepted");
                    let current = c
                        .as_ref()
                        .is_some_and(|c| c.observed_generation == hook["metadata"]["generation"].as_i64());
                    (
                        hook["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                        (
                            hook["metadata"]["creationTimestamp"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            c,
                            current,
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The hook's UID.
pub fn uid(namespace: &str, hook: &str) -> String {
    kubectl_ok(&["get", "owh", hook, "-n", namespace, "-o", "jsonpath={.metadata.uid}"])
}
