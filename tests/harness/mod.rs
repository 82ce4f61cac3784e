//! Helpers of the dispatcher's end-to-end tests: a scripted HTTP receiver on
//! loopback, a stand-in for the controller (hook, Secret and conditions), the
//! dispatcher as a child process, and publishing.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{
    self, apply_yaml, kubectl_ok, kubectl_with_input,
    process::{ChildProcess, free_port, http_get},
    wait_for,
};

// ---------------------------------------------------------------- receiver

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, small body.
    Status(u16),
    /// This status and these headers.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Never answer (until the client gives up).
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Request path.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: HashMap<String, String>,
    /// Exact body bytes.
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn event_id(&self) -> &str {
        self.header("webhook-id")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

type Script = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// A loopback HTTP receiver that records every request and answers per a
/// script `(request, nth request with this webhook-id) -> Reply`.
pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("receiver runtime")
    })
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::Status(200))
    }

    /// A receiver answering per `script`.
    pub fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let script: Script = Arc::new(script);
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a receiver port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let recorded = requests.clone();
        let handler = move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let script = script.clone();
            let recorded = recorded.clone();
            async move {
                let received = Received {
                    at: Instant::now(),
                    path: uri.path().to_string(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body: body.to_vec(),
                };
                let nth = {
                    let mut all = recorded.lock().unwrap();
                    all.push(received.clone());
                    all.iter().filter(|r| r.event_id() == received.event_id()).count()
                };
                // Scripts may block (sleep to play a slow receiver): off the
                // shared runtime, so one test's slow receiver never delays
                // another test's.
                let reply = tokio::task::spawn_blocking(move || script(&received, nth))
                    .await
                    .expect("the receiver script panicked");
                let (status, extra) = match reply {
                    Reply::Status(s) => (s, vec![]),
                    Reply::WithHeaders(s, h) => (s, h),
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (200, vec![])
                    }
                };
                let mut response = axum::response::Response::builder().status(status);
                for (k, v) in extra {
                    response = response.header(k, v);
                }
                response.body(axum::body::Body::from("receiver says so")).unwrap()
            }
        };
        runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = axum::Router::new().fallback(handler);
            axum::serve(listener, app).await.expect("serving the receiver");
        });
        Receiver { port, requests }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests carrying this event id.
    pub fn requests_for(&self, event_id: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.event_id() == event_id)
            .collect()
    }

    /// Waits until `n` requests carry this event id; returns them.
    pub fn wait_for_event(&self, event_id: &str, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(&format!("{n} request(s) for event {event_id}"), timeout, || {
            let got = self.requests_for(event_id);
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far", got.len()))
            }
        })
    }
}

// ---------------------------------------------------------------- the controller's part

/// A hook set up as the controller would leave it.
#[derive(Clone, Debug)]
pub struct TestHook {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub token: String,
}

impl TestHook {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// The Standard Webhooks secret of its token.
    pub fn whsec(&self) -> String {
        outbound_webhooks::signing::standard_webhooks_secret(&self.token)
    }
    /// The hook as JSON.
    pub fn get(&self) -> Value {
        let out = kubectl_ok(&["get", "owh", &self.name, "-n", &self.namespace, "-o", "json"]);
        serde_json::from_str(&out).expect("kubectl printed JSON")
    }
    /// `status.delivery`, or null.
    pub fn delivery(&self) -> Value {
        self.get()["status"]["delivery"].clone()
    }
}

/// 64 lowercase hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

/// Creates a hook subscribed to `events` with extra spec fields, its signing
/// Secret, and accepted conditions, as the controller would.
pub fn create_hook(namespace: &str, name: &str, url: &str, events: &[&str], extra_spec: Value) -> TestHook {
    let mut spec = json!({"url": url, "events": events});
    if let Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    let manifest = json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": name},
        "spec": spec,
    });
    let out = apply_yaml(namespace, &manifest.to_string());
    assert!(out.success, "applying hook {name}: {}{}", out.stdout, out.stderr);
    let token = new_token();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{name}-webhook-secret"), "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
        "stringData": {"token": token, "standard-webhooks-secret": outbound_webhooks::signing::standard_webhooks_secret(&token)},
    });
    let out = apply_yaml(namespace, &secret.to_string());
    assert!(
        out.success,
        "creating the Secret of {name}: {}{}",
        out.stdout, out.stderr
    );
    accept(namespace, name, true);
    let uid = kubectl_ok(&["get", "owh", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"]);
    TestHook {
        namespace: namespace.into(),
        name: name.into(),
        uid,
        token,
    }
}

/// Writes the controller's conditions for the hook's current generation
/// (Accepted = `accepted`, SecretReady True) under the controller's field manager.
pub fn accept(namespace: &str, name: &str, accepted: bool) {
    let generation = kubectl_ok(&[
        "get",
        "owh",
        name,
        "-n",
        namespace,
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    let generation: i64 = generation.trim().parse().expect("generation is a number");
    write_conditions(namespace, name, generation, accepted);
}

/// Writes conditions for a given generation (may be stale on purpose).
pub fn write_conditions(namespace: &str, name: &str, generation: i64, accepted: bool) {
    write_controller_status(namespace, name, generation, accepted, None);
}

/// Writes the controller's status fields, including `specDisabledGeneration`
/// when given (the controller records it when it sees `enabled: false`).
pub fn write_controller_status(
    namespace: &str,
    name: &str,
    generation: i64,
    accepted: bool,
    spec_disabled_generation: Option<i64>,
) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": "set by the test",
               "observedGeneration": generation, "lastTransitionTime": now})
    };
    let status = json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": name, "namespace": namespace},
        "status": {
            "observedGeneration": generation,
            "secretName": format!("{name}-webhook-secret"),
            "specDisabledGeneration": spec_disabled_generation,
            "conditions": [
                if accepted { cond("Accepted", "True", "Accepted") } else { cond("Accepted", "False", "OrgLimitExceeded") },
                cond("SecretReady", "True", "SecretGenerated"),
                if accepted { cond("Ready", "True", "Active") } else { cond("Ready", "False", "NotAccepted") },
            ],
        },
    });
    let out = kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--subresource=status",
            "--field-manager=outbound-webhooks-controller",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&status.to_string()),
    );
    assert!(
        out.success,
        "writing conditions of {namespace}/{name}: {}{}",
        out.stdout, out.stderr
    );
}

// ---------------------------------------------------------------- the dispatcher process

/// A dispatcher child process; killed on drop, and exits by itself when the
/// test binary dies (its stdin closes).
pub struct Dispatcher {
    process: ChildProcess,
    /// Port of /metrics, /healthz, /readyz.
    pub http_port: u16,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

/// Arguments every test dispatcher gets (later duplicates win).
pub fn base_args(redis_url: &str, prefix: &str, consumer: &str) -> Vec<String> {
    [
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--consumer-name",
        consumer,
        "--allow-destination-cidr",
        "127.0.0.0/8",
        "--task-lease",
        "10s",
        "--reclaim-idle",
        "3s",
        "--maintenance-interval",
        "300ms",
        "--poll-interval",
        "50ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `base_args` with `more` (`--flag value` pairs) added; a flag given in
/// `more` replaces the base value.
pub fn args(redis_url: &str, prefix: &str, consumer: &str, more: &[&str]) -> Vec<String> {
    let mut a = base_args(redis_url, prefix, consumer);
    for pair in more.chunks(2) {
        match a.iter().position(|s| s == pair[0]) {
            Some(i) if pair.len() == 2 => a[i + 1] = pair[1].to_string(),
            _ => a.extend(pair.iter().map(|s| s.to_string())),
        }
    }
    a
}

impl Dispatcher {
    /// Starts `outbound-webhooks dispatcher` with `args` and waits until it serves.
    pub fn start(args: Vec<String>) -> Dispatcher {
        Dispatcher::start_with_env(args, vec![])
    }

    /// Like [`Dispatcher::start`], with extra environment variables.
    pub fn start_with_env(args: Vec<String>, envs: Vec<(String, String)>) -> Dispatcher {
        Dispatcher::launch(args, envs, true)
    }

    /// Starts without waiting for readiness.
    pub fn start_unready(args: Vec<String>, envs: Vec<(String, String)>) -> Dispatcher {
        Dispatcher::launch(args, envs, false)
    }

    fn launch(args: Vec<String>, envs: Vec<(String, String)>, wait_ready: bool) -> Dispatcher {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("dispatcher.log");
        let (process, http_port) = Dispatcher::spawn(&args, &envs, &log_path, wait_ready);
        Dispatcher {
            process,
            http_port,
            log_path,
            _dir: dir,
            args,
            envs,
        }
    }

    fn spawn(args: &[String], envs: &[(String, String)], log_path: &Path, wait: bool) -> (ChildProcess, u16) {
        let http_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_outbound-webhooks"));
        command
            .arg("--exit-on-stdin-close")
            .arg("dispatcher")
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(args)
            .env("KUBECONFIG", &support::env().kubeconfig)
            .env("RUST_LOG", "info,outbound_webhooks=debug")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .envs(envs.iter().map(|(k, v)| (k, v)));
        let mut process = ChildProcess::start("dispatcher", command, Some(log_path)).unwrap_or_else(|e| panic!("{e}"));
        if wait {
            // Ready once its caches are synced and it consumes the stream.
            process
                .wait_ready(http_port, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (process, http_port)
    }

    /// GET one of the ops endpoints: (status code, body); None when nothing listens.
    pub fn ops_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path)
    }

    /// The value of one metric line (`name{labels}` exactly), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.ops_get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// SIGTERM; waits up to `timeout` for the exit and returns its success.
    pub fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        self.process.terminate(timeout).map(|status| status.success())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL, no goodbyes.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again with the same arguments (after [`Dispatcher::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let (process, http_port) = Dispatcher::spawn(&self.args, &self.envs, &self.log_path, true);
        self.process = process;
        self.http_port = http_port;
    }
}

// ---------------------------------------------------------------- publishing and Redis

/// A sync Redis connection to `url`.
pub fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_connection()
        .expect("connecting to Redis")
}

/// Publishes an event with XADD (as a producer would); returns its id.
pub fn publish(url: &str, prefix: &str, org: &str, event: &str, data: &Value) -> String {
    let id = outbound_webhooks::stream_entry::new_event_id();
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}events"))
        .arg("*")
        .arg("org")
        .arg(org)
        .arg("name")
        .arg(event)
        .arg("data")
        .arg(data.to_string())
        .arg("id")
        .arg(&id)
        .query(&mut redis(url))
        .expect("XADD");
    id
}

/// Appends raw fields to the events stream; returns the entry id.
pub fn xadd_raw(url: &str, prefix: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("{prefix}events")).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(&mut redis(url)).expect("XADD")
}

/// Runs the binary with `args`; returns stdout, failing on error.
pub fn run_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_outbound-webhooks"))
        .args(args)
        .output()
        .expect("running outbound-webhooks");
    assert!(
        out.status.success(),
        "outbound-webhooks {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dead-letter list [--hook]` lines (id, hook, event id, event, reason; tab-separated).
pub fn dead_letters(url: &str, prefix: &str, hook: Option<&str>) -> Vec<String> {
    let mut args = vec!["dead-letter", "list", "--redis-url", url, "--redis-prefix", prefix];
    if let Some(h) = hook {
        args.extend(["--hook", h]);
    }
    run_cli(&args).lines().map(str::to_string).collect()
}

/// Runs the Node verifier (the seed's Kustomer check and the npm
/// `standardwebhooks` library) on a received request.
pub fn verify_signatures(hook: &TestHook, request: &Received) -> Result<(), String> {
    use base64::Engine;
    let dir = support::repo_root().join("tests/verifiers");
    assert!(
        dir.join("node_modules/standardwebhooks").exists(),
        "the signature verifiers are not installed: run `npm ci --prefix tests/verifiers` (scripts/test.sh does)"
    );
    let input = json!({
        "token": hook.token,
        "standardWebhooksSecret": hook.whsec(),
        "body": base64::engine::general_purpose::STANDARD.encode(&request.body),
        "headers": request.headers,
    });
    let mut child = Command::new("node")
        .arg(dir.join("verify.js"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (install Node.js 20: apt-get install -y nodejs npm)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim() == "ok" {
        Ok(())
    } else {
        Err(text)
    }
}

// ---------------------------------------------------------------- an own redis-server

/// A redis-server of the test's own (for restarts and odd configurations;
/// the shared one must not be disturbed). It runs under a small shell that
/// stops it when its stdin closes, so it dies with the test binary too.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<(Child, std::process::ChildStdin)>,
}

impl RedisServer {
    /// Starts redis-server on a free port with extra arguments.
    pub fn start(extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid"#)
            .arg("sh")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install -y redis-server)");
        let stdin = child.stdin.take().expect("piped stdin");
        self.child = Some((child, stdin));
        let url = self.url();
        wait_for("redis-server to answer", Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .map_err(|e| e.to_string())
        });
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Shuts down cleanly (SHUTDOWN: Redis writes out its AOF) and starts
    /// again on the same port and directory after `down_for`.
    pub fn restart(&mut self, down_for: Duration) {
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut redis(&self.url()));
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `base_args` without the loopback allow-list.
pub fn args_without_allow_list(redis_url: &str, prefix: &str, consumer: &str, more: &[&str]) -> Vec<String> {
    let mut a = args(redis_url, prefix, consumer, more);
    if !more.contains(&"--allow-destination-cidr")
        && let Some(i) = a.iter().position(|s| s == "--allow-destination-cidr")
    {
        a.drain(i..i + 2);
    }
    a
}

/// XLEN of the events stream.
pub fn stream_length(url: &str, prefix: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(format!("{prefix}events"))
        .query(&mut redis(url))
        .expect("XLEN")
}
