//! `outbound-webhooks controller`: the reconciler of OutboundWebhooks.
//!
//! Wiring only: flags, leader election, the caches (one watch per kind:
//! hooks, labelled Secrets, Namespaces) and the triggers that re-reconcile a
//! namespace's hooks when a slot may have freed up or its limit changed. The
//! decisions live in [`acceptance`], [`status`], [`delivering`] and [`secret`].

pub mod acceptance;
pub mod delivering;
pub mod delivering_events;
pub mod events;
pub mod hook_index;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod rotation;
pub mod secret;
pub mod secret_trim;
pub mod status;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use self::hook_index::HookIndex;

/// Least time between two lists of the labelled Secrets.
const SECRET_RELIST_INTERVAL: Duration = Duration::from_secs(60);
use crate::{
    ops_server::{self, Readiness},
    resource::{MAX_WEBHOOKS_ANNOTATION, OutboundWebhook, SECRET_LIST_PAGE_SIZE, WEBHOOK_SECRET_LABEL},
};

/// Flags of `outbound-webhooks controller`; each has an
/// `OUTBOUND_WEBHOOKS_<FLAG>` environment twin.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// How many OutboundWebhooks each namespace may have accepted (the
    /// Namespace annotation outboundwebhooks.io/max-webhooks overrides it).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_MAX_WEBHOOKS_PER_NAMESPACE", default_value_t = 5)]
    pub max_webhooks_per_namespace: usize,
    /// Accept http:// destinations (refused with InsecureURL otherwise).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ALLOW_HTTP")]
    pub allow_http: bool,
    /// Duration of the leader Lease, in whole seconds (e.g. 15s, 3s).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "OUTBOUND_WEBHOOKS_LEASE_NAME",
        default_value = "outbound-webhooks-controller"
    )]
    pub lease_name: String,
    /// Namespace of the leader Lease; defaults to the namespace of the
    /// in-cluster ServiceAccount or the kubeconfig context.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Reconcile only the hooks of this namespace (default: all namespaces).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// How long a token rotated out by `promote-secret` still signs
    /// webhook-signature (whole seconds, e.g. 24h, 90m, 5s).
    #[arg(long, env = "OUTBOUND_WEBHOOKS_ROTATION_OVERLAP", default_value = "24h", value_parser = parse_rotation_overlap)]
    pub rotation_overlap: Duration,
    /// How many hooks are reconciled at once. A new hook waits on a few API
    /// calls in a row, so slots, not CPU, bound how fast a burst of new
    /// hooks becomes Ready.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// This replica's name in the Lease; defaults to the host name (the
    /// Pod name) plus a random suffix.
    #[arg(long, env = "OUTBOUND_WEBHOOKS_IDENTITY")]
    pub identity: Option<String>,
    /// Shut down (releasing the Lease) when standard input closes; set from
    /// the binary's global `--exit-on-stdin-close`.
    #[arg(skip)]
    pub exit_on_stdin_close: bool,
}

/// Reconciles at once unless `--concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// Parses a duration such as `15s`, `1m`, `24h` or `3` (seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let signed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 15s or 1m: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

/// Parses a rotation overlap such as `24h` or `5s`: whole seconds, at least 1 s.
pub fn parse_rotation_overlap(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: the rotation overlap must be whole seconds, at least 1s"
        ));
    }
    Ok(duration)
}

/// Parses a lease duration such as `15s`, `1m` or `3` (seconds); at least 2 s.
pub fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(2) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: the lease duration must be whole seconds, at least 2s"
        ));
    }
    Ok(duration)
}

/// The controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No Kubernetes client configuration was usable.
    #[error("loading the Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Client(kube::Error),
    /// The ops endpoints could not be served.
    #[error(transparent)]
    OpsServer(#[from] ops_server::OpsServerError),
    /// Leadership was lost; the process exits so it never writes as a follower.
    #[error(transparent)]
    Leadership(#[from] leader::LeaderError),
    /// The ops endpoints stopped while leading.
    #[error("the ops endpoints stopped")]
    OpsStopped,
    /// A cache could not be filled.
    #[error("waiting for the {0} cache: the watch stopped")]
    Cache(&'static str),
}

/// Runs the controller until SIGTERM/SIGINT (or stdin closes, when asked).
pub async fn run(args: ControllerArgs) -> Result<(), ControllerError> {
    let client = kube::Client::try_default().await.map_err(ControllerError::Client)?;
    let shutdown = CancellationToken::new();
    spawn_shutdown_triggers(&shutdown, args.exit_on_stdin_close);

    let ops_shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let mut ops = tokio::spawn(ops_server::serve(
        args.http_addr,
        Arc::new(registry),
        readiness.clone(),
        // Stopped last, after the Lease is released, so /metrics and
        // /healthz answer for the whole shutdown.
        ops_shutdown.clone().cancelled_owned(),
    ));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut elector = leader::Elector::new(
        client.clone(),
        &lease_namespace,
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    tracing::info!(%identity, lease = %args.lease_name, namespace = %lease_namespace, "waiting to become the leader");
    tokio::select! {
        () = elector.acquire(|lease_readable| readiness.set(lease_readable)) => {}
        () = shutdown.cancelled() => {
            ops_shutdown.cancel();
            return finish_ops(ops).await;
        }
        result = &mut ops => return ops_ended(result),
    }
    metrics.leader.set(1);
    readiness.set(false);
    tracing::info!(%identity, "became the leader; reconciling");

    let work = run_controller(
        client,
        &args,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
        &identity,
    );
    let outcome = tokio::select! {
        result = work => result,
        lost = elector.keep_renewing() => Err(ControllerError::Leadership(lost)),
        result = &mut ops => ops_ended(result).and(Err(ControllerError::OpsStopped)),
    };
    metrics.leader.set(0);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "stopping");
    }
    // Hand over at once, unless the Lease is someone else's already.
    if !matches!(outcome, Err(ControllerError::Leadership(_))) {
        match elector.release().await {
            Ok(()) => tracing::info!("released the leader Lease"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the leader Lease failed; another replica takes over when it expires")
            }
        }
    }
    shutdown.cancel();
    ops_shutdown.cancel();
    outcome?;
    finish_ops(ops).await
}

/// How the ops server task ended (early, only a bind failure ends it).
fn ops_ended(
    result: Result<Result<(), ops_server::OpsServerError>, tokio::task::JoinError>,
) -> Result<(), ControllerError> {
    match result {
        Ok(result) => Ok(result?),
        Err(e) => {
            tracing::warn!(error = %e, "the ops server task ended abnormally");
            Ok(())
        }
    }
}

async fn finish_ops(
    ops: tokio::task::JoinHandle<Result<(), ops_server::OpsServerError>>,
) -> Result<(), ControllerError> {
    ops_ended(ops.await)
}

fn default_identity() -> String {
    let host = crate::process::host_name("outbound-webhooks-controller");
    let mut bytes = [0u8; 4];
    // A failing OS random source only makes the suffix predictable.
    let _ = getrandom::fill(&mut bytes);
    format!("{host}-{}", hex::encode(bytes))
}

fn spawn_shutdown_triggers(shutdown: &CancellationToken, exit_on_stdin_close: bool) {
    crate::process::cancel_on_signal(shutdown);
    if exit_on_stdin_close {
        let token = shutdown.clone();
        // A plain thread: a blocking read would hold up the runtime's shutdown.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
            tracing::info!("standard input closed: shutting down");
            token.cancel();
        });
    }
}

fn scoped<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

fn hooks_in_namespace(hooks: &HookIndex, namespace: &str) -> Vec<ObjectRef<OutboundWebhook>> {
    hooks
        .in_namespace(namespace)
        .iter()
        .map(|h| ObjectRef::from_obj(&**h))
        .collect()
}

/// The hooks a labelled Secret matters to: its controlling hook, hooks that
/// name it in `spec.secretRef` or a header, and the hook whose generated
/// name it has (a conflict may have cleared).
fn hooks_using_secret(hooks: &HookIndex, secret: &Secret) -> Vec<ObjectRef<OutboundWebhook>> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    let name = secret.name_any();
    let mut refs: Vec<ObjectRef<OutboundWebhook>> = secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "OutboundWebhook")
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect();
    if let Some(hook) = name.strip_suffix("-webhook-secret") {
        refs.push(ObjectRef::new(hook).within(&namespace));
    }
    refs.extend(
        hooks
            .in_namespace(&namespace)
            .iter()
            .filter(|h| {
                h.spec.secret_ref.as_ref().is_some_and(|r| r.name == name)
                    || h.spec
                        .headers
                        .iter()
                        .any(|hd| hd.value_from.as_ref().is_some_and(|v| v.secret_key_ref.name == name))
            })
            .map(|h| ObjectRef::from_obj(&**h)),
    );
    refs
}

async fn run_controller(
    client: kube::Client,
    args: &ControllerArgs,
    metrics: metrics::Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
    identity: &str,
) -> Result<(), ControllerError> {
    let scope = args.watch_namespace.as_deref();
    let (trigger_tx, trigger_rx) = mpsc::unbounded::<ObjectRef<OutboundWebhook>>();

    // Hooks. Triggers are sent after the reflector has applied the event,
    // so a re-reconciled neighbour never decides from a cache that still
    // holds a deleted hook.
    let (hooks, hooks_writer) = reflector::store::<OutboundWebhook>();
    // Labelled Secrets, trimmed to what hooks use (see `secret_trim`); the
    // watch is re-listed once the hooks are known, and again (at most once
    // a minute) when a hook needs a key a trimmed Secret lacks.
    let (secrets, secrets_writer) = reflector::store::<Secret>();
    let secret_relist = Arc::new(tokio::sync::Notify::new());
    let index = HookIndex::new(hooks.clone());
    let written: Arc<Mutex<HashMap<String, (status::ControllerStatus, std::time::Instant)>>> = Arc::default();
    let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let delivering_events = delivering_events::DeliveringEvents::default();
    let hook_events = {
        let delivering_events = delivering_events.clone();
        let (hooks, index) = (hooks.clone(), index.clone());
        let (written, failures) = (written.clone(), failures.clone());
        let tx = trigger_tx.clone();
        let readiness = readiness.clone();
        let gauges = metrics.hooks.clone();
        let (secrets, secret_relist) = (secrets.clone(), secret_relist.clone());
        let mut accepted_before: HashMap<ObjectRef<OutboundWebhook>, bool> = HashMap::new();
        reflector::reflector(
            hooks_writer,
            // managedFields are not read here and are often the largest part
            // of a cached object (10,000 hooks peaked at 263 MiB with them).
            watcher(scoped(client.clone(), scope), watcher::Config::default())
                .default_backoff()
                .modify(|h: &mut OutboundWebhook| h.managed_fields_mut().clear()),
        )
        .map_ok(move |event| {
            index.apply(&event);
            let fan_out = |namespace: Option<String>| {
                for r in hooks_in_namespace(&index, namespace.as_deref().unwrap_or_default()) {
                    let _ = tx.unbounded_send(r);
                }
            };
            match &event {
                watcher::Event::Apply(hook) | watcher::Event::InitApply(hook) => {
                    gauges.observe(hook);
                    if readiness.is_ready() && secret_trim::misses(&secrets, hook) {
                        secret_relist.notify_one();
                    }
                    let accepted = status::ControllerStatus::from_status(hook.status.as_ref()).is_accepted();
                    let before = accepted_before.insert(ObjectRef::from_obj(hook), accepted);
                    // Losing a slot frees one for a waiting neighbour.
                    if before == Some(true) && !accepted {
                        fan_out(hook.namespace());
                    }
                }
                watcher::Event::Delete(hook) => {
                    accepted_before.remove(&ObjectRef::from_obj(hook));
                    gauges.forget(&hook.namespace().unwrap_or_default(), &hook.name_any());
                    let uid = hook.uid().unwrap_or_default();
                    written.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
                    failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
                    delivering_events.forget(&uid);
                    fan_out(hook.namespace());
                }
                watcher::Event::InitDone => {
                    // The last cache to fill: the hook cache waits until
                    // the Namespace and Secret caches are ready.
                    if !readiness.is_ready() {
                        tracing::info!("caches synced");
                        readiness.set(true);
                        // The Secrets were listed before any hook was known.
                        secret_relist.notify_one();
                    }
                    // After a re-list, deletions during the gap are silent.
                    gauges.retain(|namespace, name| hooks.get(&ObjectRef::new(name).within(namespace)).is_some());
                    for hook in hooks.state() {
                        let _ = tx.unbounded_send(ObjectRef::from_obj(&*hook));
                    }
                }
                watcher::Event::Init => {}
            }
            event
        })
        .applied_objects()
    };

    // Namespaces: the limit annotation.
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let namespace_config = match scope {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let namespace_events = {
        let index = index.clone();
        let tx = trigger_tx.clone();
        let mut limit_before: HashMap<String, Option<String>> = HashMap::new();
        reflector::reflector(
            namespaces_writer,
            watcher(Api::<Namespace>::all(client.clone()), namespace_config).default_backoff(),
        )
        .try_for_each(move |event| {
            let mut changed = |ns: &Namespace, annotation: Option<String>| {
                let name = ns.name_any();
                if limit_before.insert(name.clone(), annotation.clone()) != Some(annotation) {
                    for r in hooks_in_namespace(&index, &name) {
                        let _ = tx.unbounded_send(r);
                    }
                }
            };
            match &event {
                watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) => {
                    changed(ns, ns.annotations().get(MAX_WEBHOOKS_ANNOTATION).cloned());
                }
                watcher::Event::Delete(ns) => {
                    limit_before.remove(&ns.name_any());
                }
                _ => {}
            }
            std::future::ready(Ok(()))
        })
    };

    // Labelled Secrets only, never every Secret of the cluster.
    let secret_events = {
        let index = index.clone();
        let tx = trigger_tx.clone();
        let watches = {
            let (client, index) = (client.clone(), index.clone());
            let scope = scope.map(str::to_string);
            let mut lists = 0u32;
            futures::stream::repeat_with(move || {
                lists += 1;
                let started = std::time::Instant::now();
                let relist = secret_relist.clone();
                // The first list (before any hook was known) is replaced at
                // once; after that a re-list costs the API server a list of
                // every labelled Secret, so at most one a minute whatever
                // tenants do, and the current watch runs on meanwhile.
                let immediate = lists == 1;
                let ended = async move {
                    relist.notified_owned().await;
                    if !immediate {
                        tokio::time::sleep(SECRET_RELIST_INTERVAL.saturating_sub(started.elapsed())).await;
                    }
                };
                let index = index.clone();
                watcher(
                    scoped(client.clone(), scope.as_deref()),
                    watcher::Config::default()
                        .labels(&format!("{WEBHOOK_SECRET_LABEL}=true"))
                        .page_size(SECRET_LIST_PAGE_SIZE),
                )
                .default_backoff()
                .modify(move |s: &mut Secret| secret_trim::trim(s, &index))
                .take_until(ended)
            })
            .flatten()
        };
        reflector::reflector(secrets_writer, watches).try_for_each(move |event| {
            if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s) = &event {
                for r in hooks_using_secret(&index, s) {
                    let _ = tx.unbounded_send(r);
                }
            }
            std::future::ready(Ok(()))
        })
    };
    drop(trigger_tx);
    let side_watches = tokio::spawn(async move {
        // default_backoff retries forever, so these end only on shutdown.
        let (a, b) = futures::join!(namespace_events, secret_events);
        if let Err(e) = a.and(b) {
            tracing::error!(error = %e, "a watch stopped");
        }
    });

    // Decide only from fully synced caches.
    tokio::select! {
        result = async {
            namespaces.wait_until_ready().await.map_err(|_| ControllerError::Cache("Namespace"))?;
            secrets.wait_until_ready().await.map_err(|_| ControllerError::Cache("Secret"))
        } => result?,
        () = shutdown.cancelled() => {
            side_watches.abort();
            return Ok(());
        }
    }

    let events_stop = CancellationToken::new();
    let (events, publish_events) = events::queue(
        || {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: reconcile::FIELD_MANAGER.to_string(),
                    instance: Some(identity.to_string()),
                },
            )
        },
        metrics.events_published.clone(),
        events_stop.clone(),
    );
    let context = Arc::new(reconcile::Context {
        client: client.clone(),
        hooks: index,
        secrets,
        namespaces,
        default_limit: args.max_webhooks_per_namespace,
        allow_http: args.allow_http,
        rotation_overlap: args.rotation_overlap,
        events,
        metrics,
        written,
        failures,
        delivering_events,
    });

    let token = shutdown.clone();
    let reconciling = async {
        Controller::for_stream(hook_events, hooks)
            .with_config(ControllerConfig::default().concurrency(args.concurrency))
            .reconcile_on(trigger_rx)
            .graceful_shutdown_on(async move { token.cancelled().await })
            .run(reconcile::reconcile, reconcile::error_policy, context)
            .for_each(|result| {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile did not complete");
                }
                std::future::ready(())
            })
            .await;
        // The reconciles have finished: what they queued is sent, then the
        // publisher ends.
        events_stop.cancel();
    };
    // Not spawned: losing the lead drops this future, and with it the
    // publisher, so a follower never writes an Event.
    futures::join!(reconciling, publish_events);
    side_watches.abort();
    readiness.set(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(namespace: &str, name: &str, spec: serde_json::Value) -> OutboundWebhook {
        let mut spec_json = serde_json::json!({"url": "https://example.com", "events": ["kustomer.user.create"]});
        if let (Some(base), Some(extra)) = (spec_json.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        let mut hook = OutboundWebhook::new(name, serde_json::from_value(spec_json).expect("spec"));
        hook.metadata.namespace = Some(namespace.into());
        hook
    }

    fn store_of(hooks: Vec<OutboundWebhook>) -> HookIndex {
        let mut writer = reflector::store::Writer::<OutboundWebhook>::default();
        for hook in hooks {
            writer.apply_watcher_event(&watcher::Event::Apply(hook));
        }
        HookIndex::new(writer.as_reader())
    }

    fn names(refs: Vec<ObjectRef<OutboundWebhook>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn a_namespace_maps_to_its_own_hooks_only() {
        let store = store_of(vec![
            hook("acme", "a", serde_json::json!({})),
            hook("acme", "b", serde_json::json!({})),
            hook("other", "c", serde_json::json!({})),
        ]);
        assert_eq!(names(hooks_in_namespace(&store, "acme")), ["a", "b"]);
    }

    #[test]
    fn a_secret_maps_to_its_owner_its_namesake_and_the_hooks_that_read_it() {
        let store = store_of(vec![
            hook("acme", "byo", serde_json::json!({"secretRef": {"name": "shared"}})),
            hook(
                "acme",
                "header",
                serde_json::json!({"headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "shared", "key": "k"}}}]}),
            ),
            hook("acme", "unrelated", serde_json::json!({})),
            hook("other", "byo", serde_json::json!({"secretRef": {"name": "shared"}})),
        ]);
        let secret = |name: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("acme".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let refs = hooks_using_secret(&store, &secret("shared"));
        assert!(refs.iter().all(|r| r.namespace.as_deref() == Some("acme")));
        assert_eq!(names(refs), ["byo", "header"]);
        assert_eq!(
            names(hooks_using_secret(&store, &secret("shop-webhook-secret"))),
            ["shop"]
        );
    }

    #[test]
    fn rotation_overlaps_parse_in_whole_seconds_of_at_least_one() {
        assert_eq!(parse_rotation_overlap("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_rotation_overlap("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_rotation_overlap("90"), Ok(Duration::from_secs(90)));
        assert!(parse_rotation_overlap("0s").is_err());
        assert!(parse_rotation_overlap("1.5s").is_err());
        assert!(parse_rotation_overlap("-1h").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn concurrency_defaults_to_64_and_must_be_at_least_one() {
        use clap::Parser;
        let parse = |extra: &[&str]| Cli::try_parse_from([&["controller"], extra].concat()).map(|c| c.args.concurrency);
        assert_eq!(parse(&[]).ok(), Some(DEFAULT_CONCURRENCY));
        assert_eq!(parse(&["--concurrency", "8"]).ok(), Some(8));
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--concurrency", "many"]).is_err());
    }

    #[test]
    fn lease_durations_parse_in_whole_seconds() {
        assert_eq!(parse_lease_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_lease_duration("20"), Ok(Duration::from_secs(20)));
        assert!(parse_lease_duration("1s").is_err());
        assert!(parse_lease_duration("2.5s").is_err());
        assert!(parse_lease_duration("soon").is_err());
    }
}
