//! Test support for the controller: the real binary as a child process
//! (killed when its guard drops, and exiting by itself when the test binary
//! dies, because it watches its stdin), plus kubectl-based readers of hooks,
//! conditions and Secrets.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{self, kubectl, kubectl_ok};

/// One running `outbound-webhooks controller`.
pub struct ControllerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    log: tempfile::NamedTempFile,
    /// Where its /metrics, /healthz and /readyz listen.
    pub http_addr: SocketAddr,
    /// Its identity in the Lease.
    pub identity: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

impl ControllerProcess {
    /// Starts the controller with `args` (besides the test defaults).
    pub fn start(identity: &str, args: &[&str]) -> ControllerProcess {
        ControllerProcess::start_as(identity, &support::env().kubeconfig, "default", args)
    }

    /// Like [`ControllerProcess::start`], with another kubeconfig (e.g. one
    /// that impersonates a ServiceAccount) and its Lease in `lease_namespace`.
    pub fn start_as(identity: &str, kubeconfig: &Path, lease_namespace: &str, args: &[&str]) -> ControllerProcess {
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_outbound-webhooks"))
            .arg("controller")
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--identity", identity, "--lease-namespace", lease_namespace])
            .arg("--exit-on-stdin-close")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,outbound_webhooks=debug,kube=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopening the log file"))
            .spawn()
            .expect("starting the controller binary");
        let stdin = child.stdin.take();
        ControllerProcess {
            child,
            stdin,
            log,
            http_addr,
            identity: identity.to_string(),
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Closes its stdin, as the death of the test binary would.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the controller") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on its ops server: (status code, body), or None when it
    /// does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.http_addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Waits until /readyz answers 200 (it leads and its caches are synced).
    pub fn wait_ready(&self, timeout: Duration) {
        support::wait_for("the controller's /readyz", timeout, || match self.http_get("/readyz") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}; logs:\n{}", self.logs())),
        });
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
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
