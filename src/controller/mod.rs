//! `outbound-webhooks controller`: the reconciler of OutboundWebhooks.
//!
//! This file is the leader flow only: wait for the Lease, reconcile while
//! leading, release it. Flags are in [`config`], the watches and what they
//! trigger in [`watches`], one reconcile in [`reconcile`]; the decisions in
//! [`acceptance`], [`status`], [`delivering::condition`] and [`secrets::secret`].

pub mod acceptance;
pub mod config;
pub mod delivering;
mod error;
pub mod events;
pub mod hook_index;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod secrets;
pub mod status;
pub mod watches;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::{
    Controller,
    controller::Config as ControllerConfig,
    events::{Recorder, Reporter},
    reflector::{self, ObjectRef},
};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use self::hook_index::HookIndex;
pub use self::{
    config::{ControllerArgs, DEFAULT_CONCURRENCY},
    error::ControllerError,
};
use crate::{
    contract::resource::OutboundWebhook,
    plumbing::ops_server::{self, Readiness},
};

/// How long a shutdown waits for running reconciles and queued Events, and
/// then for the Lease's release: together well within the chart's 30 s
/// termination grace period.
const FINISH_WITHIN: Duration = Duration::from_secs(10);
/// See [`FINISH_WITHIN`].
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

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
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(FINISH_WITHIN).await;
        } => {
            // An API server that stopped answering holds requests for
            // minutes; the next leader redoes an unfinished reconcile.
            tracing::warn!("reconciles and Events did not finish within {FINISH_WITHIN:?} of the shutdown; stopping without them");
            Ok(())
        }
    };
    metrics.leader.set(0);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "stopping");
    }
    // Hand over at once, unless the Lease is someone else's already.
    if !matches!(outcome, Err(ControllerError::Leadership(_))) {
        match tokio::time::timeout(RELEASE_WITHIN, elector.release()).await {
            Ok(Ok(())) => tracing::info!("released the leader Lease"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the leader Lease failed; another replica takes over when it expires")
            }
            Err(_) => tracing::warn!(
                "releasing the leader Lease took over {RELEASE_WITHIN:?}; another replica takes over when it expires"
            ),
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
    let host = crate::plumbing::process::host_name("outbound-webhooks-controller");
    let mut bytes = [0u8; 4];
    // A failing OS random source only makes the suffix predictable.
    let _ = getrandom::fill(&mut bytes);
    format!("{host}-{}", hex::encode(bytes))
}

fn spawn_shutdown_triggers(shutdown: &CancellationToken, exit_on_stdin_close: bool) {
    crate::plumbing::process::cancel_on_signal(shutdown);
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

/// Reconciles while this replica leads: the three watches, then the
/// reconciler fed by the hook watch and every trigger.
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
    let (hooks, hooks_writer) = reflector::store::<OutboundWebhook>();
    let (secrets, secrets_writer) = reflector::store::<Secret>();
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let secret_relist = Arc::new(tokio::sync::Notify::new());
    let index = HookIndex::new(hooks.clone());
    let per_hook = watches::PerHook::default();
    let hook_events = watches::HookWatch {
        index: index.clone(),
        hooks: hooks.clone(),
        secrets: secrets.clone(),
        secret_relist: secret_relist.clone(),
        readiness: readiness.clone(),
        gauges: metrics.hooks.clone(),
        per_hook: per_hook.clone(),
        triggers: trigger_tx.clone(),
    }
    .events(client.clone(), scope, hooks_writer);
    let watching = watches::Watching {
        client: client.clone(),
        scope: scope.map(str::to_string),
        index: index.clone(),
        triggers: trigger_tx,
    };
    let namespace_events = watches::namespace_events(watching.clone(), namespaces_writer);
    let secret_events = watches::secret_events(watching, secrets_writer, secret_relist);
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
        written: per_hook.written,
        failures: per_hook.failures,
        delivering_events: per_hook.delivering_events,
        filters: Default::default(),
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
