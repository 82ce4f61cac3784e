//! The delivery-path benchmark of outbound-webhooks.
//!
//! One process drives everything: it starts the control plane (etcd,
//! kube-apiserver, Redis) through `scripts/control-plane.sh`, first runs the
//! controller scenario (the real controller process against 1,000 hooks
//! created at once), then runs a fast hyper receiver in-process, seeds hooks
//! with their Secrets and the controller's status (server-side apply, as the
//! controller would), fills Redis streams, starts dispatcher processes, runs
//! the baselines and prints a table. Every child stops when this process
//! ends (their stdin closes).
//!
//! Usage: `outbound-webhooks-bench REPO_DIR OUTBOUND_WEBHOOKS_BINARY`
//! (`benches/run.sh` does the build and passes both).

use std::{
    collections::HashMap,
    convert::Infallible,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use outbound_webhooks::{EventName, OutboundWebhook, conditions, envelope, signing, stream_entry::parse_entry};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

const EVENT: &str = "kustomer.conversation.create";
const TOKEN: &str = "6b2f0c8e4a1d9e7f3c5b8a0d2e4f6a8c1b3d5e7f9a0c2e4b6d8f0a1c3e5b7d9f";
const SLOW_RECEIVER: Duration = Duration::from_secs(5);

/// Scale factor (env `BENCH_SCALE`, default 1): multiplies event counts.
fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * factor).round().max(1.0) as usize
}

// ---------------------------------------------------------------- child processes

/// A child process that stops when dropped (stdin closed, then killed).
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: {} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

struct ControlPlane {
    _proc: Proc,
    kubeconfig: PathBuf,
    redis_url: String,
}

fn start_control_plane(repo: &Path, state: &Path) -> Result<ControlPlane, Error> {
    let log = std::fs::File::create(state.join("control-plane.out"))?;
    let mut child = Command::new("bash")
        .arg(repo.join("scripts/control-plane.sh"))
        .arg(state.join("cluster"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc {
        name: "control plane",
        child,
        stdin,
    };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("READY ") {
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
            };
            return Ok(ControlPlane {
                _proc: proc,
                kubeconfig: field("kubeconfig").ok_or("READY line without kubeconfig")?.into(),
                redis_url: field("redis").ok_or("READY line without redis")?,
            });
        }
    }
    Err(format!(
        "the control plane stopped before it was ready; see {}",
        state.join("control-plane.out").display()
    )
    .into())
}

/// /proc figures of a process: CPU seconds (user + system), RSS and peak RSS in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct ProcStats {
    cpu_seconds: f64,
    system_seconds: f64,
    rss: u64,
    peak_rss: u64,
}

fn proc_stats(pid: u32) -> ProcStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3 of proc(5); utime 14, stime 15.
    let tick = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu_seconds = (tick(11) + tick(12)) as f64 / ticks_per_second;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    ProcStats {
        cpu_seconds,
        system_seconds: tick(12) as f64 / ticks_per_second,
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
    }
}

struct Dispatcher {
    proc: Proc,
    http_port: u16,
}

impl Dispatcher {
    async fn start(env: &Env, prefix: &str, log_name: &str, extra: &[&str]) -> Result<Dispatcher, Error> {
        let http_port = free_port();
        let log = std::fs::File::create(env.state.join(format!("{log_name}.log")))?;
        // BENCH_DISPATCHER_WRAPPER (e.g. "valgrind --tool=callgrind") runs the
        // dispatcher under a profiler.
        let wrapper = std::env::var("BENCH_DISPATCHER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&env.dispatcher_binary);
                c
            }
            None => Command::new(&env.dispatcher_binary),
        };
        let mut child = command
            .arg("--exit-on-stdin-close")
            .arg("dispatcher")
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(["--redis-url", &env.redis_url, "--redis-prefix", prefix])
            .args(["--consumer-name", "bench", "--allow-destination-cidr", "127.0.0.0/8"])
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let stdin = child.stdin.take();
        let mut d = Dispatcher {
            proc: Proc {
                name: "dispatcher",
                child,
                stdin,
            },
            http_port,
        };
        wait_ready(
            &mut d.proc,
            d.http_port,
            &env.state.join(format!("{log_name}.log")),
            Duration::from_secs(300),
        )
        .await?;
        Ok(d)
    }
    fn stats(&self) -> ProcStats {
        proc_stats(self.proc.pid())
    }
    /// The value of one series (`name{labels}` exactly) on its `/metrics`; 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let body = match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Waits until a started process answers 200 on `/readyz`; fails at once
/// when it exits first, naming its log.
async fn wait_ready(proc: &mut Proc, http_port: u16, log: &Path, timeout: Duration) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{http_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if let Some(status) = proc.child.try_wait()? {
            return Err(format!(
                "the {} exited ({status}) before it was ready; see {}",
                proc.name,
                log.display()
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the {} was not ready in {}s; see {}",
                proc.name,
                timeout.as_secs(),
                log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ---------------------------------------------------------------- fast receiver

/// Counts arrivals per path (`/fast`, `/slow`); records (event id, arrival)
/// while `recording` is on.
#[derive(Default)]
struct ReceiverState {
    fast: AtomicU64,
    slow: AtomicU64,
    recording: AtomicBool,
    arrivals: Mutex<Vec<(String, Instant)>>,
}

async fn receive(req: Request<Incoming>, state: Arc<ReceiverState>) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let slow = req.uri().path() == "/slow";
    if state.recording.load(Relaxed) {
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        state.arrivals.lock().expect("arrivals lock").push((id, arrived));
    }
    let _ = req.into_body().collect().await;
    if slow {
        tokio::time::sleep(SLOW_RECEIVER).await;
        state.slow.fetch_add(1, Relaxed);
    } else {
        state.fast.fetch_add(1, Relaxed);
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Starts the receiver on its own runtime; returns its port and state.
fn start_receiver() -> Result<(u16, Arc<ReceiverState>, tokio::runtime::Runtime), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("receiver")
        .enable_all()
        .build()?;
    let state = Arc::new(ReceiverState::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let st = state.clone();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let st = st.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| receive(req, st.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((port, state, runtime))
}

// ---------------------------------------------------------------- seeding (playing the controller)

struct Env {
    state: PathBuf,
    kubeconfig: PathBuf,
    redis_url: String,
    dispatcher_binary: PathBuf,
    kube: Client,
    redis: redis::aio::MultiplexedConnection,
    receiver_port: u16,
    receiver: Arc<ReceiverState>,
}

/// Creates the namespace, the hook, its labelled Secret and the controller's
/// status (Accepted, SecretReady, Ready for the current generation).
async fn seed_hook(kube: &Client, ns: &str, name: &str, url: &str) -> Result<(), Error> {
    let apply = PatchParams::apply("outbound-webhooks-bench").force();
    let hooks: Api<OutboundWebhook> = Api::namespaced(kube.clone(), ns);
    let hook = hooks
        .patch(
            name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "outboundwebhooks.io/v1alpha1",
                "kind": "OutboundWebhook",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"url": url, "events": [EVENT]},
            })),
        )
        .await
        .map_err(|e| format!("applying hook {ns}/{name}: {e}"))?;
    let secret_name = format!("{name}-webhook-secret");
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), ns);
    secrets
        .patch(
            &secret_name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": ns,
                             "labels": {"outboundwebhooks.io/webhook-secret": "true"}},
                "stringData": {"token": TOKEN,
                               "standard-webhooks-secret": signing::standard_webhooks_secret(TOKEN)},
            })),
        )
        .await
        .map_err(|e| format!("applying the Secret of {ns}/{name}: {e}"))?;
    let generation = hook.metadata.generation.unwrap_or(1);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cond = |type_: &str, reason: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": "seeded by the benchmark",
               "observedGeneration": generation, "lastTransitionTime": now})
    };
    hooks
        .patch_status(
            name,
            &PatchParams::apply("outbound-webhooks-controller").force(),
            &Patch::Apply(json!({
                "apiVersion": "outboundwebhooks.io/v1alpha1",
                "kind": "OutboundWebhook",
                "metadata": {"name": name, "namespace": ns},
                "status": {
                    "observedGeneration": generation,
                    "secretName": secret_name,
                    "conditions": [cond("Accepted", "Accepted"), cond("SecretReady", "SecretGenerated"),
                                   cond("Ready", "Active")],
                },
            })),
        )
        .await
        .map_err(|e| format!("writing the status of {ns}/{name}: {e}"))?;
    Ok(())
}

/// Seeds `hooks` = (namespace, name, url) with `concurrency` requests in flight.
async fn seed(kube: &Client, hooks: Vec<(String, String, String)>, concurrency: usize) -> Result<(), Error> {
    let namespaces: Vec<String> = {
        let mut n: Vec<String> = hooks.iter().map(|h| h.0.clone()).collect();
        n.dedup();
        n
    };
    apply_namespaces(kube, namespaces, concurrency).await?;
    futures::stream::iter(hooks)
        .map(|(ns, name, url)| async move { seed_hook(kube, &ns, &name, &url).await })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- events

static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

fn next_event_id() -> String {
    format!("be{:022x}", NEXT_EVENT.fetch_add(1, Relaxed))
}

fn event_data(n: u64) -> String {
    json!({"type": "conversation", "id": format!("c{n:023x}"),
           "attributes": {"name": "Order 1234 is late", "channels": ["email"], "priority": 3, "status": "open"}})
    .to_string()
}

/// Appends `n` events for `org` to `{prefix}events`, pipelined.
async fn fill(conn: &mut redis::aio::MultiplexedConnection, prefix: &str, org: &str, n: usize) -> Result<(), Error> {
    let stream = format!("{prefix}events");
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            let id = next_event_id();
            let data = event_data(NEXT_EVENT.load(Relaxed));
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("org")
                .arg(org)
                .arg("name")
                .arg(EVENT)
                .arg("data")
                .arg(data)
                .arg("id")
                .arg(id)
                .ignore();
        }
        let () = pipe.query_async(conn).await?;
        left -= batch;
    }
    Ok(())
}

/// Waits until `counter` has grown by `target` or `timeout` passed; returns
/// how many arrived and when the last one did.
async fn wait_count(counter: &AtomicU64, start: u64, target: u64, timeout: Duration) -> (u64, Instant) {
    let deadline = Instant::now() + timeout;
    let mut last = counter.load(Relaxed);
    let mut last_at = Instant::now();
    loop {
        let now = counter.load(Relaxed);
        if now != last {
            last = now;
            last_at = Instant::now();
        }
        if now - start >= target || Instant::now() > deadline {
            return (now - start, last_at);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------- baselines

/// Baseline B: bare XREADGROUP (COUNT 100) + XACK of every entry of a stream.
/// Returns entries per second.
async fn baseline_b(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Result<f64, Error> {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("baseline-b")
        .arg("0")
        .query_async(conn)
        .await?;
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("baseline-b")
            .arg("c")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let ids: Vec<String> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).map(|i| i.id).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            break;
        }
        total += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(stream)
            .arg("baseline-b")
            .arg(&ids)
            .query_async(conn)
            .await?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The envelope bodies the dispatcher would send for every entry of `stream`.
async fn bodies_of(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if reply.ids.is_empty() {
            break;
        }
        for entry in &reply.ids {
            let fields: HashMap<String, Vec<u8>> = entry
                .map
                .iter()
                .filter_map(|(k, v)| {
                    redis::from_redis_value::<Vec<u8>>(v.clone())
                        .ok()
                        .map(|b| (k.clone(), b))
                })
                .collect();
            let event = parse_entry(&entry.id, &fields).map_err(|e| format!("entry {}: {e}", entry.id))?;
            out.push((event.id.clone(), envelope::build(&event)));
        }
        start = format!("({}", reply.ids.last().expect("non-empty").id);
    }
    Ok(out)
}

/// Baseline A: a bare reqwest loop sending `total` signed deliveries, cycling
/// over `bodies`, `concurrency` at a time. Returns requests per second.
async fn baseline_a(
    url: &str,
    bodies: Arc<Vec<(String, Vec<u8>)>>,
    total: usize,
    concurrency: usize,
) -> Result<f64, Error> {
    let client = reqwest::Client::builder()
        .user_agent("outbound-webhooks/bench")
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        return Ok::<(), reqwest::Error>(());
                    }
                    let (id, body) = &bodies[i % bodies.len()];
                    let timestamp = jiff::Timestamp::now().as_second();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-kustomer-webhook-event", EVENT)
                        .header("x-kustomer-webhook-signature", signing::kustomer_signature(TOKEN, body))
                        .header("webhook-id", id.as_str())
                        .header("webhook-timestamp", timestamp.to_string())
                        .header(
                            "webhook-signature",
                            signing::standard_webhooks_signature(TOKEN, id, timestamp, body),
                        )
                        .body(body.clone())
                        .send()
                        .await?;
                    let _ = response.bytes().await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------- scenarios

struct Drain {
    redis_cpu_per_1000: f64,
    /// Share of the dispatcher's CPU spent in the kernel.
    system_share: f64,
    /// CPU of this process (the receiver) per 1,000 deliveries.
    receiver_cpu_per_1000: f64,
    delivered: u64,
    target: u64,
    seconds: f64,
    rate: f64,
    cpu_per_1000: f64,
    peak_rss: u64,
}

/// Starts a dispatcher on a pre-filled prefix and waits until `target`
/// deliveries reached the receiver (counter `fast`).
async fn drain(
    env: &Env,
    prefix: &str,
    name: &str,
    target: u64,
    timeout: Duration,
    extra: &[&str],
) -> Result<Drain, Error> {
    let start = env.receiver.fast.load(Relaxed);
    let dispatcher = Dispatcher::start(env, prefix, name, extra).await?;
    let before = dispatcher.stats();
    let own_before = proc_stats(std::process::id());
    let mut conn = env.redis.clone();
    let redis_before = redis_cpu_seconds(&mut conn).await;
    let t0 = Instant::now();
    let (delivered, last) = wait_count(&env.receiver.fast, start, target, timeout).await;
    let after = dispatcher.stats();
    let own_after = proc_stats(std::process::id());
    let redis_after = redis_cpu_seconds(&mut conn).await;
    let seconds = last.duration_since(t0).as_secs_f64().max(1e-3);
    drop(dispatcher);
    Ok(Drain {
        delivered,
        target,
        seconds,
        rate: delivered as f64 / seconds,
        cpu_per_1000: (after.cpu_seconds - before.cpu_seconds) / (delivered.max(1) as f64 / 1000.0),
        system_share: (after.system_seconds - before.system_seconds)
            / (after.cpu_seconds - before.cpu_seconds).max(1e-9),
        receiver_cpu_per_1000: (own_after.cpu_seconds - own_before.cpu_seconds) / (delivered.max(1) as f64 / 1000.0),
        peak_rss: after.peak_rss,
        redis_cpu_per_1000: (redis_after - redis_before) / (delivered.max(1) as f64 / 1000.0),
    })
}

/// CPU seconds redis-server has used (user + system, from INFO cpu).
async fn redis_cpu_seconds(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Latency {
    rate: f64,
    sent: usize,
    arrived: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// Seconds into the run at which the slowest event was sent.
    worst_at_s: f64,
}

/// Publishes at `rate` events/s for `seconds` into a running dispatcher and
/// measures XADD (just before sending) to arrival at the receiver.
async fn latency(env: &Env, prefix: &str, org: &str, rate: f64, seconds: f64) -> Result<Latency, Error> {
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = format!("{prefix}events");
    let total = (rate * seconds).round() as usize;
    env.receiver.arrivals.lock().expect("arrivals lock").clear();
    env.receiver.recording.store(true, Relaxed);
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(total);
    let t0 = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
        let id = next_event_id();
        let data = event_data(NEXT_EVENT.load(Relaxed));
        sent.insert(id.clone(), Instant::now());
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("org")
            .arg(org)
            .arg("name")
            .arg(EVENT)
            .arg("data")
            .arg(data)
            .arg("id")
            .arg(&id)
            .query_async(&mut conn)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.receiver.arrivals.lock().expect("arrivals lock").len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.receiver.recording.store(false, Relaxed);
    let arrivals = std::mem::take(&mut *env.receiver.arrivals.lock().expect("arrivals lock"));
    let mut millis: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    // When (seconds into the run) the slowest event was sent: to tell one
    // pause from a steady tail, and to line it up with periodic work.
    let started = t0.into_std();
    let worst_at_s = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| (at.duration_since(*s), s.duration_since(started))))
        .max_by_key(|(took, _)| *took)
        .map(|(_, when)| when.as_secs_f64())
        .unwrap_or(f64::NAN);
    millis.sort_by(f64::total_cmp);
    Ok(Latency {
        rate,
        sent: total,
        arrived: millis.len(),
        p50: percentile(&millis, 50.0),
        p99: percentile(&millis, 99.0),
        p999: percentile(&millis, 99.9),
        max: millis.last().copied().unwrap_or(f64::NAN),
        worst_at_s,
    })
}

// ---------------------------------------------------------------- scenario 6: the controller

/// Scenario 6: 200 namespaces x 5 hooks created at once.
const CTL_NAMESPACES: usize = 200;
const CTL_HOOKS_PER_NAMESPACE: usize = 5;
/// Creates in flight, as `kubectl apply` of a big file or Argo CD would have.
const CTL_CONCURRENCY: usize = 32;
const CTL_TARGET: Duration = Duration::from_secs(30);
const CTL_DEADLINE: Duration = Duration::from_secs(180);
/// The label the scenario's hooks carry (its watch selects by it).
const CTL_LABEL: &str = "outbound-webhooks-bench/scenario";
const CTL_NAMESPACE_PREFIX: &str = "bench-ctl-";

fn ctl_namespace(n: usize) -> String {
    format!("{CTL_NAMESPACE_PREFIX}{n:03}")
}

/// `VAR` set to something other than empty or `0`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The real `outbound-webhooks controller`, its Lease in `default` (as the
/// tests run it), its ops server on a free port, its log in the state dir.
struct ControllerProc {
    proc: Proc,
    http_port: u16,
    log: PathBuf,
}

impl ControllerProc {
    async fn start(binary: &Path, kubeconfig: &Path, log: PathBuf) -> Result<ControllerProc, Error> {
        let http_port = free_port();
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(binary)
            .args(["--exit-on-stdin-close", "--log-format", "json", "controller"])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args([
                "--lease-namespace",
                "default",
                "--lease-name",
                "outbound-webhooks-bench",
            ])
            .args(["--lease-duration", "15s", "--identity", "bench-controller"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let stdin = child.stdin.take();
        let mut c = ControllerProc {
            proc: Proc {
                name: "controller",
                child,
                stdin,
            },
            http_port,
            log,
        };
        // /readyz answers 200 once it leads and its caches are synced.
        wait_ready(&mut c.proc, http_port, &c.log, Duration::from_secs(120)).await?;
        Ok(c)
    }

    fn stats(&self) -> ProcStats {
        proc_stats(self.proc.pid())
    }

    /// Its unlabelled Prometheus samples (name -> value).
    async fn metrics(&self) -> Result<HashMap<String, f64>, Error> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
            .collect())
    }

    /// SIGTERM, then up to `grace` for it to release its Lease and exit.
    async fn terminate(&mut self, grace: Duration) -> Result<Option<(std::process::ExitStatus, Duration)>, Error> {
        let sent = Instant::now();
        let killed = Command::new("kill")
            .args(["-s", "TERM", &self.proc.pid().to_string()])
            .status()?;
        if !killed.success() {
            return Err(format!("kill -s TERM {} failed", self.proc.pid()).into());
        }
        while sent.elapsed() < grace {
            if let Some(status) = self.proc.child.try_wait()? {
                return Ok(Some((status, sent.elapsed())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(None)
    }
}

/// Pids of processes named `comm` whose command line mentions `marker`
/// (the cluster's state dir, so only this run's control plane matches).
fn pids_of(comm: &str, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// CPU seconds of `pids` together (NaN when none was found).
fn cpu_of(pids: &[u32]) -> f64 {
    if pids.is_empty() {
        return f64::NAN;
    }
    pids.iter().map(|&pid| proc_stats(pid).cpu_seconds).sum()
}

/// The API server's request latencies from its /metrics:
/// (verb, resource[/subresource]) -> (seconds summed, requests).
type Latencies = HashMap<(String, String), (f64, f64)>;

async fn apiserver_latencies(kube: &Client) -> Result<Latencies, Error> {
    let text = kube
        .request_text(hyper::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = Latencies::new();
    for line in text.lines() {
        let (is_sum, rest) = if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_count{") {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        let entry = out.entry((label("verb"), resource)).or_default();
        if is_sum {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    Ok(out)
}

/// Mean latency in ms and number of the `verb` requests on `resource` between two scrapes.
fn mean_latency(before: &Latencies, after: &Latencies, verb: &str, resource: &str) -> (f64, f64) {
    let key = (verb.to_string(), resource.to_string());
    let (s0, n0) = before.get(&key).copied().unwrap_or_default();
    let (s1, n1) = after.get(&key).copied().unwrap_or((f64::NAN, f64::NAN));
    (1000.0 * (s1 - s0) / (n1 - n0), n1 - n0)
}

/// Whether the hook's `Ready` condition is True for its current generation.
fn ready_for_generation(hook: &OutboundWebhook) -> bool {
    let generation = hook.metadata.generation;
    hook.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == conditions::READY
                && c.status == "True"
                && c.observed_generation.is_some()
                && c.observed_generation == generation
        })
    })
}

/// The `Ready` reason of a hook (for the summary of those not Ready).
fn ready_reason(hook: &OutboundWebhook) -> String {
    hook.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_else(|| "no Ready condition".into())
}

fn hook_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The `n`th hook of the scenario: an https URL and 1 to 3 of the ten events.
fn ctl_hook(ns: &str, name: &str, n: usize) -> Result<OutboundWebhook, Error> {
    let events: Vec<&str> = (0..1 + n % 3)
        .map(|k| EventName::ALL[(n + k) % EventName::ALL.len()].as_str())
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "outboundwebhooks.io/v1alpha1",
        "kind": "OutboundWebhook",
        "metadata": {"name": name, "namespace": ns, "labels": {CTL_LABEL: "controller"}},
        "spec": {"name": format!("Bench hook {n}"), "url": format!("https://example.com/hook-{n}"), "events": events},
    }))?)
}

/// Creates (or leaves alone) `namespaces`, `concurrency` requests in flight.
async fn apply_namespaces(kube: &Client, namespaces: Vec<String>, concurrency: usize) -> Result<(), Error> {
    let ns_api: Api<Namespace> = Api::all(kube.clone());
    futures::stream::iter(namespaces)
        .map(|ns| {
            let ns_api = ns_api.clone();
            async move {
                ns_api
                    .patch(
                        &ns,
                        &PatchParams::apply("outbound-webhooks-bench").force(),
                        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from(format!("applying namespace {ns}: {e}")))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Where each hook stands, as the scenario's watch saw it: when it was
/// first Ready for its generation.
type ReadyTimes = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches the scenario's hooks and records when each first was Ready for
/// its generation; the returned receiver fires once the initial list is in.
fn watch_ready(
    kube: &Client,
) -> (
    ReadyTimes,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let ready_at: ReadyTimes = Arc::default();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let api: Api<OutboundWebhook> = Api::all(kube.clone());
    let config = watcher::Config::default().labels(&format!("{CTL_LABEL}=controller"));
    let times = ready_at.clone();
    let task = tokio::spawn(async move {
        let mut synced_tx = Some(synced_tx);
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(hook) | watcher::Event::InitApply(hook)) => {
                    if ready_for_generation(&hook) {
                        let key = hook_key(&hook.namespace().unwrap_or_default(), &hook.name_any());
                        times
                            .lock()
                            .expect("ready lock")
                            .entry(key)
                            .or_insert_with(Instant::now);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("bench: scenario 6: watch error (retrying): {e}"),
            }
        }
    });
    (ready_at, synced_rx, task)
}

/// Scenario 6: starts the real controller, creates 1,000 hooks at once in
/// 200 namespaces and measures until every one is Ready for its generation.
/// With `clean_up`, deletes the hooks and their Secrets afterwards (so the
/// dispatcher scenarios' caches do not hold them).
async fn controller_scenario(
    kube: &Client,
    binary: &Path,
    kubeconfig: &Path,
    state: &Path,
    report: &mut Report,
    clean_up: bool,
) -> Result<(), Error> {
    const SCENARIO: &str = "6 controller, 1,000 hooks";
    let namespaces: Vec<String> = (0..CTL_NAMESPACES).map(ctl_namespace).collect();
    let total = CTL_NAMESPACES * CTL_HOOKS_PER_NAMESPACE;
    eprintln!("bench: scenario 6: creating {CTL_NAMESPACES} namespaces (not timed)");
    apply_namespaces(kube, namespaces.clone(), CTL_CONCURRENCY).await?;

    // The first OutboundWebhook write to a fresh API server takes about 2 s
    // whatever the client (the ResourceQuota admission sets up for the new
    // resource; the API server logs "quota admission added evaluator for:
    // outboundwebhooks..." as it ends). A cluster in use paid that long
    // ago, so one hook is created and deleted first, in a namespace of its
    // own, before the controller starts.
    let warm_up_ns = format!("{CTL_NAMESPACE_PREFIX}warm-up");
    apply_namespaces(kube, vec![warm_up_ns.clone()], 1).await?;
    let warm_up_api: Api<OutboundWebhook> = Api::namespaced(kube.clone(), &warm_up_ns);
    let warm_up = Instant::now();
    warm_up_api
        .create(&PostParams::default(), &ctl_hook(&warm_up_ns, "warm-up", 0)?)
        .await
        .map_err(|e| format!("creating the warm-up hook: {e}"))?;
    let warm_up = warm_up.elapsed();
    warm_up_api
        .delete("warm-up", &DeleteParams::default())
        .await
        .map_err(|e| format!("deleting the warm-up hook: {e}"))?;

    eprintln!("bench: scenario 6: starting the controller");
    let log = state.join("controller.log");
    let mut controller = ControllerProc::start(binary, kubeconfig, log.clone()).await?;
    let idle = controller.stats();
    let (ready_at, synced, watch) = watch_ready(kube);
    synced
        .await
        .map_err(|_| "the scenario's watch ended before its initial list")?;

    let cluster = state.join("cluster").display().to_string();
    let apiserver_pids = pids_of("kube-apiserver", &cluster);
    let etcd_pids = pids_of("etcd", &cluster);
    let before = controller.stats();
    let (apiserver_before, etcd_before) = (cpu_of(&apiserver_pids), cpu_of(&etcd_pids));
    let bench_before = proc_stats(std::process::id());
    let latencies_before = apiserver_latencies(kube).await.unwrap_or_default();

    eprintln!("bench: scenario 6: creating {total} hooks, {CTL_CONCURRENCY} in flight");
    let hooks: Vec<(String, String, usize)> = namespaces
        .iter()
        .enumerate()
        .flat_map(|(n, ns)| {
            (1..=CTL_HOOKS_PER_NAMESPACE)
                .map(move |i| (ns.clone(), format!("hook-{i}"), n * CTL_HOOKS_PER_NAMESPACE + i))
        })
        .collect();
    let t0 = Instant::now();
    let created_at: HashMap<String, Instant> = futures::stream::iter(hooks)
        .map(|(ns, name, n)| async move {
            let hook = ctl_hook(&ns, &name, n)?;
            Api::<OutboundWebhook>::namespaced(kube.clone(), &ns)
                .create(&PostParams::default(), &hook)
                .await
                .map_err(|e| format!("creating hook {ns}/{name}: {e}"))?;
            Ok::<_, Error>((hook_key(&ns, &name), Instant::now()))
        })
        .buffer_unordered(CTL_CONCURRENCY)
        .try_collect()
        .await?;
    let all_created = t0.elapsed();
    eprintln!(
        "bench: scenario 6: all {total} created in {:.1}s; waiting for Ready",
        all_created.as_secs_f64()
    );

    let deadline = t0 + CTL_DEADLINE;
    loop {
        let ready = ready_at.lock().expect("ready lock").len();
        if ready >= total || Instant::now() > deadline {
            break;
        }
        if let Some(status) = controller.proc.child.try_wait()? {
            return Err(format!(
                "the controller exited ({status}) with {ready} of {total} hooks Ready; see {}",
                log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = controller.stats();
    let (apiserver_after, etcd_after) = (cpu_of(&apiserver_pids), cpu_of(&etcd_pids));
    let bench_after = proc_stats(std::process::id());
    let window = t0.elapsed().as_secs_f64();
    let latencies_after = apiserver_latencies(kube).await.unwrap_or_default();
    watch.abort();
    let ready_at = std::mem::take(&mut *ready_at.lock().expect("ready lock"));
    let metrics = controller.metrics().await.unwrap_or_default();

    // The final word from a list, not the watch.
    let listed = Api::<OutboundWebhook>::all(kube.clone())
        .list(&ListParams::default().labels(&format!("{CTL_LABEL}=controller")))
        .await?;
    let ready_listed = listed.items.iter().filter(|h| ready_for_generation(h)).count();
    let mut not_ready: HashMap<String, usize> = HashMap::new();
    for hook in listed.items.iter().filter(|h| !ready_for_generation(h)) {
        *not_ready.entry(ready_reason(hook)).or_default() += 1;
    }
    let secrets = Api::<Secret>::all(kube.clone())
        .list(&ListParams::default().labels("outboundwebhooks.io/webhook-secret=true"))
        .await?;
    let good_secrets = secrets
        .items
        .iter()
        .filter(|s| {
            s.namespace().is_some_and(|ns| ns.starts_with(CTL_NAMESPACE_PREFIX))
                && s.name_any().ends_with("-webhook-secret")
                && s.owner_references()
                    .iter()
                    .any(|o| o.kind == "OutboundWebhook" && o.controller == Some(true))
                && s.data
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .is_some_and(|t| t.0.len() == 64 && t.0.iter().all(|b| b.is_ascii_hexdigit()))
        })
        .count();

    eprintln!("bench: scenario 6: stopping the controller (SIGTERM)");
    let stopped = controller.terminate(Duration::from_secs(15)).await?;
    let released = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("released the leader Lease"));
    drop(controller);

    let last_ready = ready_at.values().max().map(|at| at.duration_since(t0).as_secs_f64());
    let all_ready = if ready_at.len() >= total { last_ready } else { None };
    let mut lags: Vec<f64> = ready_at
        .iter()
        .filter_map(|(key, ready)| Some(ready.saturating_duration_since(*created_at.get(key)?).as_secs_f64()))
        .collect();
    lags.sort_by(f64::total_cmp);
    let since_t0 = |at: Option<&Instant>| at.map_or(f64::NAN, |at| at.duration_since(t0).as_secs_f64());
    let first_created = since_t0(created_at.values().min());
    let first_ready = since_t0(ready_at.values().min());
    let half = {
        let mut times: Vec<f64> = ready_at
            .values()
            .map(|at| at.duration_since(t0).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        percentile(&times, 50.0)
    };

    match all_ready {
        Some(seconds) => report.row(
            SCENARIO,
            "time to all Ready",
            format!("{seconds:.1} s"),
            &format!(
                "target <= {} s: {} (first create to last Ready; half Ready at {half:.1} s)",
                CTL_TARGET.as_secs(),
                verdict(seconds <= CTL_TARGET.as_secs_f64())
            ),
        ),
        None => report.row(
            SCENARIO,
            "time to all Ready",
            format!("> {} s", CTL_DEADLINE.as_secs()),
            &format!(
                "target <= {} s: {} ({} of {total} Ready at the deadline)",
                CTL_TARGET.as_secs(),
                verdict(false),
                ready_at.len()
            ),
        ),
    }
    report.row(
        SCENARIO,
        "time to all created",
        format!("{:.1} s", all_created.as_secs_f64()),
        &format!(
            "{total} creates, {CTL_CONCURRENCY} in flight, {CTL_NAMESPACES} namespaces x {CTL_HOOKS_PER_NAMESPACE}; first answered at {first_created:.2} s, first Ready at {first_ready:.2} s"
        ),
    );
    report.row(
        SCENARIO,
        "first hook create on the fresh API server",
        format!("{:.2} s", warm_up.as_secs_f64()),
        "not timed: one hook created and deleted before the controller starts",
    );
    report.row(
        SCENARIO,
        "create to Ready per hook, p50 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} s",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0),
            lags.last().copied().unwrap_or(f64::NAN)
        ),
        "create answered -> Ready seen by a watch",
    );
    let mut reasons: Vec<String> = not_ready.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    report.row(
        SCENARIO,
        "Ready for their generation (final list)",
        format!("{ready_listed} of {}", listed.items.len()),
        &if reasons.is_empty() {
            String::new()
        } else {
            format!("not Ready: {}", reasons.join(", "))
        },
    );
    report.row(
        SCENARIO,
        "signing Secrets",
        format!("{good_secrets} of {total}"),
        "labelled, controlled by their hook, 64-hex token",
    );
    report.row(
        SCENARIO,
        "controller peak RSS",
        format!("{:.1} MiB", mib(after.peak_rss)),
        &format!("VmHWM; {:.1} MiB after its caches synced", mib(idle.rss)),
    );
    report.row(
        SCENARIO,
        "controller RSS after",
        format!("{:.1} MiB", mib(after.rss)),
        "VmRSS once all were Ready",
    );
    let metric = |name: &str| metrics.get(name).copied().unwrap_or(f64::NAN);
    let reconciles = metric("outbound_webhooks_controller_reconciles_total");
    let mean_reconcile_ms = 1000.0 * metric("outbound_webhooks_controller_reconcile_duration_seconds_sum")
        / metric("outbound_webhooks_controller_reconcile_duration_seconds_count");
    report.row(
        SCENARIO,
        "controller CPU s",
        format!("{:.2}", after.cpu_seconds - before.cpu_seconds),
        &format!(
            "over {window:.1} s; {reconciles:.0} reconciles (mean {mean_reconcile_ms:.1} ms), {:.0} status writes, {:.0} errors",
            metric("outbound_webhooks_controller_status_writes_total"),
            metric("outbound_webhooks_controller_reconcile_errors_total"),
        ),
    );
    report.row(
        SCENARIO,
        "kube-apiserver / etcd / bench CPU s",
        format!(
            "{:.1} / {:.1} / {:.1}",
            apiserver_after - apiserver_before,
            etcd_after - etcd_before,
            bench_after.cpu_seconds - bench_before.cpu_seconds
        ),
        &format!(
            "same {window:.1} s, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    );
    let calls: Vec<String> = [
        ("POST", "outboundwebhooks", "create hook"),
        ("POST", "secrets", "create Secret"),
        ("APPLY", "outboundwebhooks/status", "apply status"),
        ("POST", "events", "create Event"),
    ]
    .iter()
    .map(|(verb, resource, what)| {
        let (ms, n) = mean_latency(&latencies_before, &latencies_after, verb, resource);
        format!("{what} {ms:.0} ms (x{n:.0})")
    })
    .collect();
    report.row(
        SCENARIO,
        "API server mean latency per call",
        calls.join(", "),
        "apiserver_request_duration_seconds over the same window",
    );
    match stopped {
        Some((status, took)) => eprintln!(
            "bench: scenario 6: the controller exited ({status}) {:.1}s after SIGTERM{}",
            took.as_secs_f64(),
            if released {
                ", Lease released"
            } else {
                "; it did not log releasing its Lease"
            }
        ),
        None => eprintln!("bench: scenario 6: the controller did not exit within 15s of SIGTERM; killed"),
    }

    if clean_up {
        eprintln!("bench: scenario 6: deleting its hooks and Secrets");
        futures::stream::iter(namespaces)
            .map(|ns| async move {
                Api::<OutboundWebhook>::namespaced(kube.clone(), &ns)
                    .delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await
                    .map_err(|e| format!("deleting the hooks of {ns}: {e}"))?;
                Api::<Secret>::namespaced(kube.clone(), &ns)
                    .delete_collection(
                        &DeleteParams::default(),
                        &ListParams::default().labels("outboundwebhooks.io/webhook-secret=true"),
                    )
                    .await
                    .map_err(|e| format!("deleting the Secrets of {ns}: {e}"))?;
                Ok::<(), Error>(())
            })
            .buffer_unordered(CTL_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Report rows: (scenario, measure, value, target/note).
struct Report {
    rows: Vec<(String, String, String, String)>,
}

impl Report {
    fn row(&mut self, scenario: &str, measure: &str, value: String, note: &str) {
        println!("bench: {scenario} | {measure} | {value} | {note}");
        self.rows.push((scenario.into(), measure.into(), value, note.into()));
    }
    fn print(&self) {
        let widths = self.rows.iter().fold([8, 7, 5, 4], |w, r| {
            [
                w[0].max(r.0.len()),
                w[1].max(r.1.len()),
                w[2].max(r.2.len()),
                w[3].max(r.3.len()),
            ]
        });
        let line = |a: &str, b: &str, c: &str, d: &str| {
            println!(
                "| {a:<w0$} | {b:<w1$} | {c:>w2$} | {d:<w3$} |",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        };
        println!();
        line("scenario", "measure", "value", "note");
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(widths[0] + 2),
            "-".repeat(widths[1] + 2),
            "-".repeat(widths[2] + 1) + ":",
            "-".repeat(widths[3] + 2)
        );
        for r in &self.rows {
            line(&r.0, &r.1, &r.2, &r.3);
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

async fn run(repo: PathBuf, binary: PathBuf) -> Result<(), Error> {
    let bench_started = Instant::now();
    let state = std::env::temp_dir().join(format!("outbound-webhooks-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    eprintln!("bench: state and logs in {}", state.display());
    eprintln!("bench: starting the control plane (etcd, kube-apiserver, redis-server)");
    let cp = start_control_plane(&repo, &state)?;
    let kube_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let kube = Client::try_from(kube_config)?;
    let mut report = Report { rows: vec![] };

    // ------------------------------------------------ scenario 6: the controller
    // First, before any hook is seeded: the controller would reconcile the
    // seeded hooks too (and their Secrets, which no hook controls). It is
    // stopped, and its hooks deleted, before the dispatcher scenarios.
    let only_controller = env_flag("BENCH_ONLY_CONTROLLER");
    if only_controller || std::env::var("BENCH_ONLY_1A").is_err() {
        controller_scenario(&kube, &binary, &cp.kubeconfig, &state, &mut report, !only_controller).await?;
        let _ = writeln_partial(&state, &report);
    }
    if only_controller {
        finish(report, cp, &state, bench_started);
        return Ok(());
    }

    let redis_client = redis::Client::open(cp.redis_url.as_str())?;
    let redis = redis_client.get_multiplexed_async_connection().await?;
    let (receiver_port, receiver, receiver_runtime) = start_receiver()?;
    // The receiver lives until the process exits (dropping a runtime inside
    // another one's async context would panic).
    std::mem::forget(receiver_runtime);
    let env = Env {
        state: state.clone(),
        kubeconfig: cp.kubeconfig.clone(),
        redis_url: cp.redis_url.clone(),
        dispatcher_binary: binary,
        kube,
        redis,
        receiver_port,
        receiver,
    };
    let fast_url = format!("http://127.0.0.1:{}/fast", env.receiver_port);
    let slow_url = format!("http://127.0.0.1:{}/slow", env.receiver_port);
    let mut conn = env.redis.clone();

    eprintln!("bench: seeding hooks (bench-one x1, bench-five x5, bench-iso 4 fast + 1 slow)");
    let mut hooks = vec![("bench-one".to_string(), "hook-1".to_string(), fast_url.clone())];
    for i in 1..=5 {
        hooks.push(("bench-five".into(), format!("hook-{i}"), fast_url.clone()));
    }
    for i in 1..=4 {
        hooks.push(("bench-iso".into(), format!("fast-{i}"), fast_url.clone()));
    }
    hooks.push(("bench-iso".into(), "slow-1".into(), slow_url.clone()));
    seed(&env.kube, hooks, 8).await?;

    // ------------------------------------------------ scenario 1a: 1 hook
    let n1 = scale(100_000);
    eprintln!("bench: scenario 1a: filling {n1} events for 1 hook");
    fill(&mut conn, "bench-1a:", "bench-one", n1).await?;
    // Baseline B runs over a copy of the same entries (its own stream, so the
    // dispatcher's retention never sees a second group).
    fill(&mut conn, "bench-b:", "bench-one", n1).await?;
    fill(&mut conn, "bench-1a1:", "bench-one", n1).await?;
    let bodies = Arc::new(bodies_of(&mut conn, "bench-b:events").await?);
    // Baseline A runs before and after the dispatcher and counts their mean:
    // this machine's speed drifts by 10-20% within minutes (a shared VM).
    eprintln!("bench: baseline A: reqwest, concurrency 16 (the per-hook bound)");
    let own_before = proc_stats(std::process::id());
    let a1_first = baseline_a(&fast_url, bodies.clone(), n1, 16).await?;
    let own_after = proc_stats(std::process::id());
    eprintln!("bench: scenario 1a: dispatcher draining");
    let d1a = drain(
        &env,
        "bench-1a:",
        "dispatcher-1a",
        n1 as u64,
        Duration::from_secs(150),
        &[],
    )
    .await?;
    eprintln!("bench: scenario 1a again, the dispatcher on one worker thread");
    let d1a1 = drain(
        &env,
        "bench-1a1:",
        "dispatcher-1a-one-thread",
        n1 as u64,
        Duration::from_secs(150),
        &["--worker-threads", "1"],
    )
    .await?;
    eprintln!("bench: baseline A again");
    let a1_second = baseline_a(&fast_url, bodies.clone(), n1, 16).await?;
    let a1_rate = (a1_first + a1_second) / 2.0;
    eprintln!("bench: baseline B: XREADGROUP + XACK over {n1} entries");
    let b_rate = baseline_b(&mut conn, "bench-b:events").await?;
    let a1_cpu_per_1000 = (own_after.cpu_seconds - own_before.cpu_seconds) / (n1 as f64 / 1000.0);
    report.row(
        "1a throughput, 1 hook",
        "dispatcher deliveries/s",
        format!("{:.0}", d1a.rate),
        &format!("{} of {} in {:.1}s", d1a.delivered, d1a.target, d1a.seconds),
    );
    report.row(
        "1a throughput, 1 hook",
        "baseline A (reqwest, 16 in flight) req/s",
        format!("{a1_rate:.0}"),
        &format!("mean of {a1_first:.0} before and {a1_second:.0} after the dispatcher"),
    );
    report.row(
        "1a throughput, 1 hook",
        "baseline B (XREADGROUP+XACK) entries/s",
        format!("{b_rate:.0}"),
        "",
    );
    report.row(
        "1a throughput, 1 hook",
        "dispatcher / baseline A",
        format!("{:.0}%", 100.0 * d1a.rate / a1_rate),
        &format!("target >= 70%: {}", verdict(d1a.rate >= 0.7 * a1_rate)),
    );
    report.row(
        "1a throughput, 1 hook",
        "dispatcher / baseline B",
        format!("{:.1}%", 100.0 * d1a.rate / b_rate),
        "",
    );
    report.row(
        "1a throughput, 1 hook",
        "dispatcher, --worker-threads 1, deliveries/s",
        format!("{:.0}", d1a1.rate),
        &format!(
            "{} of {} in {:.1}s; {:.3} CPU s per 1,000",
            d1a1.delivered, d1a1.target, d1a1.seconds, d1a1.cpu_per_1000
        ),
    );
    report.row(
        "1a throughput, 1 hook",
        "dispatcher, --worker-threads 1 / baseline A",
        format!("{:.0}%", 100.0 * d1a1.rate / a1_rate),
        &format!("target >= 70%: {}", verdict(d1a1.rate >= 0.7 * a1_rate)),
    );
    report.row(
        "4 footprint",
        "CPU s per 1,000 deliveries (1a)",
        format!("{:.3}", d1a.cpu_per_1000),
        &format!(
            "user+system, /proc/PID/stat; {:.0}% in the kernel",
            100.0 * d1a.system_share
        ),
    );
    report.row(
        "4 footprint",
        "receiver CPU s per 1,000 deliveries (1a)",
        format!("{:.3}", d1a.receiver_cpu_per_1000),
        "the bench process while the dispatcher drains",
    );
    report.row(
        "4 footprint",
        "baseline A CPU s per 1,000 requests",
        format!("{a1_cpu_per_1000:.3}"),
        "reqwest client + the same receiver, one process",
    );
    report.row(
        "4 footprint",
        "redis-server CPU s per 1,000 deliveries (1a)",
        format!("{:.3}", d1a.redis_cpu_per_1000),
        "INFO cpu",
    );
    report.row(
        "4 footprint",
        "peak RSS under 1a",
        format!("{:.1} MiB", mib(d1a.peak_rss)),
        "VmHWM",
    );

    if std::env::var("BENCH_ONLY_1A").is_ok() {
        finish(report, cp, &state, bench_started);
        return Ok(());
    }

    // ------------------------------------------------ scenario 1b: 5 hooks
    let n1b = scale(20_000);
    eprintln!("bench: scenario 1b: filling {n1b} events for an org with 5 hooks");
    fill(&mut conn, "bench-1b:", "bench-five", n1b).await?;
    fill(&mut conn, "bench-1b1:", "bench-five", n1b).await?;
    eprintln!("bench: baseline A: reqwest, concurrency 80 (5 hooks x 16)");
    let a5_first = baseline_a(&fast_url, bodies.clone(), 5 * n1b, 80).await?;
    let d1b = drain(
        &env,
        "bench-1b:",
        "dispatcher-1b",
        5 * n1b as u64,
        Duration::from_secs(150),
        &[],
    )
    .await?;
    eprintln!("bench: scenario 1b again, the dispatcher on one worker thread");
    let d1b1 = drain(
        &env,
        "bench-1b1:",
        "dispatcher-1b-one-thread",
        5 * n1b as u64,
        Duration::from_secs(150),
        &["--worker-threads", "1"],
    )
    .await?;
    eprintln!("bench: baseline A again");
    let a5_second = baseline_a(&fast_url, bodies.clone(), 5 * n1b, 80).await?;
    let a5_rate = (a5_first + a5_second) / 2.0;
    report.row(
        "1b throughput, 5 hooks",
        "dispatcher deliveries/s",
        format!("{:.0}", d1b.rate),
        &format!("{} of {} in {:.1}s", d1b.delivered, d1b.target, d1b.seconds),
    );
    report.row(
        "1b throughput, 5 hooks",
        "baseline A (reqwest, 80 in flight) req/s",
        format!("{a5_rate:.0}"),
        &format!("mean of {a5_first:.0} before and {a5_second:.0} after the dispatcher"),
    );
    report.row(
        "1b throughput, 5 hooks",
        "dispatcher / baseline A",
        format!("{:.0}%", 100.0 * d1b.rate / a5_rate),
        &format!("target >= 70%: {}", verdict(d1b.rate >= 0.7 * a5_rate)),
    );
    report.row(
        "1b throughput, 5 hooks",
        "dispatcher, --worker-threads 1, deliveries/s",
        format!("{:.0}", d1b1.rate),
        &format!(
            "{} of {} in {:.1}s; {:.3} CPU s per 1,000",
            d1b1.delivered, d1b1.target, d1b1.seconds, d1b1.cpu_per_1000
        ),
    );
    report.row(
        "1b throughput, 5 hooks",
        "dispatcher, --worker-threads 1 / baseline A",
        format!("{:.0}%", 100.0 * d1b1.rate / a5_rate),
        &format!("target >= 70%: {}", verdict(d1b1.rate >= 0.7 * a5_rate)),
    );
    report.row(
        "1b throughput, 5 hooks",
        "dispatcher entries/s / baseline B",
        format!("{:.1}%", 100.0 * (d1b.rate / 5.0) / b_rate),
        "",
    );
    report.row(
        "4 footprint",
        "CPU s per 1,000 deliveries (1b)",
        format!("{:.3}", d1b.cpu_per_1000),
        "",
    );
    report.row(
        "4 footprint",
        "redis-server CPU s per 1,000 deliveries (1b)",
        format!("{:.3}", d1b.redis_cpu_per_1000),
        "INFO cpu",
    );
    report.row(
        "4 footprint",
        "peak RSS under 1b",
        format!("{:.1} MiB", mib(d1b.peak_rss)),
        "VmHWM",
    );
    let _ = writeln_partial(&state, &report);

    // ------------------------------------------------ scenario 2: latency
    let max_rate = d1a.rate.max(1.0);
    {
        eprintln!("bench: scenario 2: latency at 1,000 events/s and at half the measured max");
        let dispatcher = Dispatcher::start(&env, "bench-lat:", "dispatcher-latency", &[]).await?;
        let seconds = 10.0 * scale(1000) as f64 / 1000.0;
        const STORED: &str = "outbound_webhooks_first_deliveries_total{path=\"stored\"}";
        const DIRECT: &str = "outbound_webhooks_first_deliveries_total{path=\"direct\"}";
        for rate in [1000.0, (max_rate / 2.0).round()] {
            let (stored_before, direct_before) = (dispatcher.metric(STORED).await, dispatcher.metric(DIRECT).await);
            let l = latency(&env, "bench-lat:", "bench-one", rate, seconds).await?;
            let (stored, direct) = (
                dispatcher.metric(STORED).await - stored_before,
                dispatcher.metric(DIRECT).await - direct_before,
            );
            let name = format!("2 latency at {:.0} events/s", l.rate);
            report.row(
                &name,
                "p50 XADD->arrival",
                format!("{:.2} ms", l.p50),
                &format!("{} of {} arrived", l.arrived, l.sent),
            );
            let note = if rate == 1000.0 {
                format!("target <= 20 ms: {}", verdict(l.p99 <= 20.0))
            } else {
                String::new()
            };
            report.row(&name, "p99", format!("{:.2} ms", l.p99), &note);
            report.row(
                &name,
                "p99.9",
                format!("{:.2} ms", l.p999),
                &format!("max {:.1} ms, sent {:.1} s into the run", l.max, l.worst_at_s),
            );
            report.row(
                &name,
                "first deliveries direct / stored as tasks",
                format!("{direct:.0} / {stored:.0}"),
                "stored: the hook looked slow or a slot did not free up in time",
            );
        }
        drop(dispatcher);
    }
    let _ = writeln_partial(&state, &report);

    // ------------------------------------------------ scenario 3: isolation
    {
        let n3 = scale(20_000);
        eprintln!("bench: scenario 3: {n3} events for 4 fast hooks + 1 hook answering in 5s");
        fill(&mut conn, "bench-iso:", "bench-iso", n3).await?;
        let d3 = drain(
            &env,
            "bench-iso:",
            "dispatcher-isolation",
            4 * n3 as u64,
            Duration::from_secs(60),
            &[],
        )
        .await?;
        let per_fast_hook_1b = d1b.rate / 5.0;
        let per_fast_hook_3 = d3.rate / 4.0;
        report.row(
            "3 isolation, 4 fast + 1 slow",
            "fast deliveries/s",
            format!("{:.0}", d3.rate),
            &format!("{} of {} in {:.1}s (timeout 60s)", d3.delivered, d3.target, d3.seconds),
        );
        report.row(
            "3 isolation, 4 fast + 1 slow",
            "per fast hook vs 1b",
            format!("{:.0}%", 100.0 * per_fast_hook_3 / per_fast_hook_1b),
            &format!("target >= 90%: {}", verdict(per_fast_hook_3 >= 0.9 * per_fast_hook_1b)),
        );
    }
    let _ = writeln_partial(&state, &report);

    // ------------------------------------------------ scenario 4: 10,000 hooks idle
    if std::env::var("BENCH_SKIP_10K").is_err() {
        let namespaces = scale(2000);
        eprintln!("bench: scenario 4: seeding {namespaces} namespaces x 5 hooks with Secrets and status");
        let seeding = Instant::now();
        let mut hooks = Vec::new();
        for n in 0..namespaces {
            for i in 1..=5 {
                hooks.push((format!("fp-{n:04}"), format!("hook-{i}"), fast_url.clone()));
            }
        }
        let count = hooks.len();
        seed(&env.kube, hooks, 48).await?;
        let seeded_in = seeding.elapsed().as_secs_f64();
        let dispatcher = Dispatcher::start(&env, "bench-fp:", "dispatcher-10k", &[]).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle = dispatcher.stats();
        drop(dispatcher);
        report.row(
            "4 footprint",
            &format!("idle RSS, {} hooks cached", count + 11),
            format!("{:.1} MiB", mib(idle.rss)),
            &format!(
                "target <= 100 MiB: {} (seeded in {seeded_in:.0}s)",
                verdict(idle.rss <= 100 * 1024 * 1024)
            ),
        );
    }
    finish(report, cp, &state, bench_started);
    Ok(())
}

/// Prints the table, stops the control plane and removes its data.
fn finish(report: Report, cp: ControlPlane, state: &Path, bench_started: Instant) {
    report.print();
    eprintln!("bench: finished in {:.0}s", bench_started.elapsed().as_secs_f64());
    drop(cp);
    // The cluster's data (etcd, Redis) is large; logs and results stay.
    let _ = std::fs::remove_dir_all(state.join("cluster"));
    let _ = writeln_partial(state, &report);
}

fn writeln_partial(state: &Path, report: &Report) -> std::io::Result<()> {
    let text: String = report
        .rows
        .iter()
        .map(|r| format!("{} | {} | {} | {}\n", r.0, r.1, r.2, r.3))
        .collect();
    std::fs::write(state.join("results-so-far.txt"), text)
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: outbound-webhooks-bench REPO_DIR OUTBOUND_WEBHOOKS_BINARY");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(args[1].clone().into(), args[2].clone().into()) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
