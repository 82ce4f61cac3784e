//! Scenario 6: the real controller process, 10,000 hooks created at once in
//! 2,000 namespaces (32 creates in flight, no Secrets or status seeded; env
//! `BENCH_CONTROLLER_NAMESPACES` changes the number of namespaces), timed
//! until every one is `Ready` for its generation, with what it cost the
//! controller, the API server and etcd. The rows are in `controller_report`.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use outbound_webhooks::{
    EventName, OutboundWebhook, contract::conditions, contract::resource::WEBHOOK_SECRET_LABEL,
    controller::secrets::secret,
};
use serde_json::json;

use crate::{
    Error,
    apiserver_metrics::apiserver_latencies,
    controller_report::{EventsCost, Outcome, report_rows},
    processes::{ControllerProc, cpu_of, own_stats, pids_of},
    report::Report,
    seed::apply_namespaces,
};

/// 2,000 namespaces x 5 hooks, as issue 14 asks (a platform's worth).
const DEFAULT_NAMESPACES: usize = 2_000;
/// Hooks per namespace (the default limit, so every hook is accepted).
pub const HOOKS_PER_NAMESPACE: usize = 5;
/// Creates in flight, as `kubectl apply` of a big file or Argo CD would have.
pub const CONCURRENCY: usize = 32;
/// The target: all Ready within this.
pub const TARGET: Duration = Duration::from_secs(30);
/// The target for the lag: all Ready within this after the last create.
pub const LAG_TARGET: Duration = Duration::from_secs(5);
/// How long to wait for all to be Ready before reporting how many were.
pub const DEADLINE: Duration = Duration::from_secs(180);
/// How long after all are Ready to wait for the controller's Events.
const EVENTS_DEADLINE: Duration = Duration::from_secs(120);
/// The label the scenario's hooks carry (its watch selects by it).
const LABEL: &str = "outbound-webhooks-bench/scenario";
const NAMESPACE_PREFIX: &str = "bench-ctl-";

/// Namespaces of the scenario: env `BENCH_CONTROLLER_NAMESPACES`, else 2,000.
pub fn namespace_count() -> usize {
    std::env::var("BENCH_CONTROLLER_NAMESPACES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_NAMESPACES)
}

fn namespace(n: usize) -> String {
    format!("{NAMESPACE_PREFIX}{n:04}")
}

fn selector() -> String {
    format!("{LABEL}=controller")
}

fn secret_selector() -> String {
    format!("{WEBHOOK_SECRET_LABEL}=true")
}

fn ready_for_generation(hook: &OutboundWebhook) -> bool {
    conditions::is_true_for_current_generation(hook, conditions::READY)
}

/// The `Ready` status and reason of a hook (for the summary of those not Ready).
fn ready_reason(hook: &OutboundWebhook) -> String {
    conditions::find(hook, conditions::READY)
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_else(|| "no Ready condition".into())
}

fn hook_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The `n`th hook of the scenario: an https URL and 1 to 3 of the ten events.
fn hook(ns: &str, name: &str, n: usize) -> Result<OutboundWebhook, Error> {
    let events: Vec<&str> = (0..1 + n % 3)
        .map(|k| EventName::ALL[(n + k) % EventName::ALL.len()].as_str())
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": OutboundWebhook::api_version(&()),
        "kind": OutboundWebhook::kind(&()),
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "controller"}},
        "spec": {"name": format!("Bench hook {n}"), "url": format!("https://example.com/hook-{n}"), "events": events},
    }))?)
}

/// When each hook was first seen Ready for its generation, by `namespace/name`.
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
    let config = watcher::Config::default().labels(&selector());
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

/// Creates and deletes one hook in a namespace of its own; returns how long
/// the create took.
///
/// The first OutboundWebhook write to a fresh API server takes about 2 s
/// whatever the client (the ResourceQuota admission sets up for the new
/// resource; the API server logs "quota admission added evaluator for:
/// outboundwebhooks..." as it ends). A cluster in use paid that long ago,
/// so this runs before the controller starts and is not timed.
async fn warm_up(kube: &Client) -> Result<Duration, Error> {
    let ns = format!("{NAMESPACE_PREFIX}warm-up");
    apply_namespaces(kube, vec![ns.clone()], 1).await?;
    let api: Api<OutboundWebhook> = Api::namespaced(kube.clone(), &ns);
    let started = Instant::now();
    api.create(&PostParams::default(), &hook(&ns, "warm-up", 0)?)
        .await
        .map_err(|e| format!("creating the warm-up hook: {e}"))?;
    let took = started.elapsed();
    api.delete("warm-up", &DeleteParams::default())
        .await
        .map_err(|e| format!("deleting the warm-up hook: {e}"))?;
    Ok(took)
}

/// Creates every hook of the scenario, [`CONCURRENCY`] in flight; returns
/// when each create was answered.
async fn create_hooks(kube: &Client, namespaces: &[String]) -> Result<HashMap<String, Instant>, Error> {
    let hooks: Vec<(String, String, usize)> = namespaces
        .iter()
        .enumerate()
        .flat_map(|(n, ns)| {
            (1..=HOOKS_PER_NAMESPACE).map(move |i| (ns.clone(), format!("hook-{i}"), n * HOOKS_PER_NAMESPACE + i))
        })
        .collect();
    futures::stream::iter(hooks)
        .map(|(ns, name, n)| async move {
            let hook = hook(&ns, &name, n)?;
            Api::<OutboundWebhook>::namespaced(kube.clone(), &ns)
                .create(&PostParams::default(), &hook)
                .await
                .map_err(|e| format!("creating hook {ns}/{name}: {e}"))?;
            Ok::<_, Error>((hook_key(&ns, &name), Instant::now()))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// Signing Secrets of the scenario that are as the controller must make
/// them: labelled, controlled by their hook and named after it, a 64-hex token.
fn good_secrets(secrets: &[Secret]) -> usize {
    secrets
        .iter()
        .filter(|s| {
            s.namespace().is_some_and(|ns| ns.starts_with(NAMESPACE_PREFIX))
                && s.owner_references().iter().any(|o| {
                    o.kind == OutboundWebhook::kind(&())
                        && o.controller == Some(true)
                        && s.name_any() == secret::generated_secret_name(&o.name)
                })
                && s.data
                    .as_ref()
                    .and_then(|d| d.get(secret::TOKEN_KEY))
                    .is_some_and(|t| t.0.len() == 64 && t.0.iter().all(|b| b.is_ascii_hexdigit()))
        })
        .count()
}

/// Waits (up to [`EVENTS_DEADLINE`]) until the controller has published
/// `expected` Events (each new hook deserves two: Accepted and
/// SecretGenerated); returns how many it had and when, from `t0`. Events
/// are off the path to Ready, so this shows the lag behind it.
async fn wait_for_events(controller: &ControllerProc, expected: usize, t0: Instant) -> (f64, Duration) {
    const PUBLISHED: &str = "outbound_webhooks_controller_events_published_total";
    let deadline = Instant::now() + EVENTS_DEADLINE;
    loop {
        let metrics = controller.metrics().await.unwrap_or_default();
        let published = metrics.get(PUBLISHED).copied();
        // A controller without the metric publishes its Events inline.
        let done = published.is_none_or(|n| n >= expected as f64);
        if done || Instant::now() > deadline {
            let published = published.unwrap_or(f64::NAN);
            return (published, t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes the scenario's hooks and Secrets.
async fn clean_up(kube: &Client, namespaces: Vec<String>) -> Result<(), Error> {
    futures::stream::iter(namespaces)
        .map(|ns| async move {
            Api::<OutboundWebhook>::namespaced(kube.clone(), &ns)
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .map_err(|e| format!("deleting the hooks of {ns}: {e}"))?;
            Api::<Secret>::namespaced(kube.clone(), &ns)
                .delete_collection(
                    &DeleteParams::default(),
                    &ListParams::default().labels(&secret_selector()),
                )
                .await
                .map_err(|e| format!("deleting the Secrets of {ns}: {e}"))?;
            Ok::<(), Error>(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Scenario 6: starts the real controller, creates the hooks at once (5 per
/// namespace) and measures until every one is Ready for its generation.
/// With `clean_up`, deletes the hooks and their Secrets afterwards (so the
/// dispatcher scenarios' caches do not hold them).
pub async fn controller_scenario(
    kube: &Client,
    binary: &Path,
    kubeconfig: &Path,
    state: &Path,
    report: &mut Report,
    clean_up_after: bool,
) -> Result<(), Error> {
    let namespace_count = namespace_count();
    let namespaces: Vec<String> = (0..namespace_count).map(namespace).collect();
    let total = namespace_count * HOOKS_PER_NAMESPACE;
    eprintln!("bench: scenario 6: creating {namespace_count} namespaces (not timed)");
    apply_namespaces(kube, namespaces.clone(), CONCURRENCY).await?;
    let warm_up = warm_up(kube).await?;

    eprintln!("bench: scenario 6: starting the controller");
    let log = state.join("controller.log");
    let mut controller = ControllerProc::start(binary, kubeconfig, &log).await?;
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
    let bench_before = own_stats();
    let latencies_before = apiserver_latencies(kube).await.unwrap_or_default();

    eprintln!("bench: scenario 6: creating {total} hooks, {CONCURRENCY} in flight");
    let t0 = Instant::now();
    let created_at = create_hooks(kube, &namespaces).await?;
    let all_created = t0.elapsed();
    eprintln!(
        "bench: scenario 6: all {total} created in {:.1}s; waiting for Ready",
        all_created.as_secs_f64()
    );

    let deadline = t0 + DEADLINE;
    loop {
        let ready = ready_at.lock().expect("ready lock").len();
        if ready >= total || Instant::now() > deadline {
            break;
        }
        if let Some(status) = controller.exit_status() {
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
    let bench_after = own_stats();
    let window = t0.elapsed().as_secs_f64();
    let latencies_after = apiserver_latencies(kube).await.unwrap_or_default();
    watch.abort();
    let events = wait_for_events(&controller, 2 * total, t0).await;
    let after_events = EventsCost {
        controller_cpu: controller.stats().cpu_seconds - before.cpu_seconds,
        apiserver_cpu: cpu_of(&apiserver_pids) - apiserver_before,
    };
    let ready_at = std::mem::take(&mut *ready_at.lock().expect("ready lock"));
    let metrics = controller.metrics().await.unwrap_or_default();

    // The final word from a list, not the watch.
    let listed = Api::<OutboundWebhook>::all(kube.clone())
        .list(&ListParams::default().labels(&selector()))
        .await?;
    let mut not_ready: HashMap<String, usize> = HashMap::new();
    for hook in listed.items.iter().filter(|h| !ready_for_generation(h)) {
        *not_ready.entry(ready_reason(hook)).or_default() += 1;
    }
    let secrets = Api::<Secret>::all(kube.clone())
        .list(&ListParams::default().labels(&secret_selector()))
        .await?;

    eprintln!("bench: scenario 6: stopping the controller (SIGTERM)");
    let stopped = controller.terminate(Duration::from_secs(15));
    let released = controller.log().contains("released the leader Lease");
    drop(controller);

    let outcome = Outcome {
        total,
        t0,
        warm_up,
        all_created,
        created_at,
        ready_at,
        ready_listed: listed.items.len() - not_ready.values().sum::<usize>(),
        listed: listed.items.len(),
        not_ready,
        good_secrets: good_secrets(&secrets.items),
        idle,
        before,
        after,
        window,
        apiserver_cpu: apiserver_after - apiserver_before,
        etcd_cpu: etcd_after - etcd_before,
        bench_cpu: bench_after.cpu_seconds - bench_before.cpu_seconds,
        metrics,
        latencies_before,
        latencies_after,
        namespaces: namespace_count,
        events,
        after_events,
    };
    report_rows(&outcome, report);
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

    if clean_up_after {
        eprintln!("bench: scenario 6: deleting its hooks and Secrets");
        clean_up(kube, namespaces).await?;
    }
    Ok(())
}
