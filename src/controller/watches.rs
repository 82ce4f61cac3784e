//! The controller's three watches (hooks, Namespaces, labelled Secrets)
//! and the triggers each sends: which hooks to reconcile again when an
//! object changes, as named functions ([`hooks_in_namespace`],
//! [`hooks_using_secret`], [`HookWatch::on_event`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, TryStreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher,
    },
};

use super::{delivering::events::DeliveringEvents, hook_index::HookIndex, metrics::HookGauges, secrets::trim, status};
use crate::{
    contract::resource::{MAX_WEBHOOKS_ANNOTATION, OutboundWebhook, SECRET_LIST_PAGE_SIZE, WEBHOOK_SECRET_LABEL},
    plumbing::ops_server::Readiness,
};

/// Least time between two lists of the labelled Secrets.
const SECRET_RELIST_INTERVAL: Duration = Duration::from_secs(60);

/// Where the watches send the hooks to reconcile again.
pub type Triggers = mpsc::UnboundedSender<ObjectRef<OutboundWebhook>>;

/// What the controller remembers per hook UID besides the cache, forgotten
/// when the hook is deleted (so a tenant's deleted hooks hold nothing).
#[derive(Clone, Default)]
pub struct PerHook {
    /// The last status written and when (paces status writes).
    pub written: Arc<Mutex<HashMap<String, (status::ControllerStatus, Instant)>>>,
    /// Consecutive reconcile failures (the retry backoff).
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
    /// The Failing/Recovered Events published (paces them).
    pub delivering_events: DeliveringEvents,
}

impl PerHook {
    fn forget(&self, uid: &str) {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.delivering_events.forget(uid);
    }
}

/// An `Api` of the watched namespace, or of all.
pub fn scoped<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The hooks of a namespace: a slot may have freed up, or its limit changed.
pub fn hooks_in_namespace(hooks: &HookIndex, namespace: &str) -> Vec<ObjectRef<OutboundWebhook>> {
    hooks
        .in_namespace(namespace)
        .iter()
        .map(|h| ObjectRef::from_obj(&**h))
        .collect()
}

/// The hooks a labelled Secret matters to: its controlling hook, hooks that
/// name it in `spec.secretRef` or a header, and the hook whose generated
/// name it has (a conflict may have cleared).
pub fn hooks_using_secret(hooks: &HookIndex, secret: &Secret) -> Vec<ObjectRef<OutboundWebhook>> {
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

/// The hook watch: what it updates and whom it triggers.
pub struct HookWatch {
    /// Hooks by namespace, updated before any trigger is sent.
    pub index: HookIndex,
    /// The hook cache (the reflector's reader).
    pub hooks: reflector::Store<OutboundWebhook>,
    /// The labelled Secrets' cache (a hook needing a key it lacks asks for a re-list).
    pub secrets: reflector::Store<Secret>,
    /// Asks the Secret watch to list again.
    pub secret_relist: Arc<tokio::sync::Notify>,
    /// Set once every cache has synced.
    pub readiness: Readiness,
    /// The per-hook gauges.
    pub gauges: HookGauges,
    /// Per-hook memory, forgotten at deletion.
    pub per_hook: PerHook,
    /// Where triggers go.
    pub triggers: Triggers,
}

impl HookWatch {
    /// The hook watch of `scope` (one namespace or all) feeding `writer`:
    /// triggers are sent after the reflector has applied the event, so a
    /// re-reconciled neighbour never decides from a cache that still holds
    /// a deleted hook.
    pub fn events(
        self,
        client: kube::Client,
        scope: Option<&str>,
        writer: reflector::store::Writer<OutboundWebhook>,
    ) -> impl Stream<Item = Result<OutboundWebhook, watcher::Error>> + use<> {
        reflector::reflector(
            writer,
            // managedFields are not read here and are often the largest part
            // of a cached object (10,000 hooks peaked at 263 MiB with them).
            watcher(scoped(client, scope), watcher::Config::default())
                .default_backoff()
                .modify(|h: &mut OutboundWebhook| h.managed_fields_mut().clear()),
        )
        .map_ok({
            // Whether each hook was accepted, to fan out to its neighbours
            // when it loses its slot.
            let mut accepted_before = HashMap::new();
            move |event| {
                self.on_event(&mut accepted_before, &event);
                event
            }
        })
        .applied_objects()
    }

    /// What one hook event triggers.
    fn on_event(
        &self,
        accepted_before: &mut HashMap<ObjectRef<OutboundWebhook>, bool>,
        event: &watcher::Event<OutboundWebhook>,
    ) {
        self.index.apply(event);
        let fan_out = |namespace: Option<String>| {
            for r in hooks_in_namespace(&self.index, namespace.as_deref().unwrap_or_default()) {
                let _ = self.triggers.unbounded_send(r);
            }
        };
        match event {
            watcher::Event::Apply(hook) | watcher::Event::InitApply(hook) => {
                self.gauges.observe(hook);
                if self.readiness.is_ready() && trim::misses(&self.secrets, hook) {
                    self.secret_relist.notify_one();
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
                self.gauges
                    .forget(&hook.namespace().unwrap_or_default(), &hook.name_any());
                self.per_hook.forget(&hook.uid().unwrap_or_default());
                fan_out(hook.namespace());
            }
            watcher::Event::InitDone => {
                // The last cache to fill: the hook cache waits until
                // the Namespace and Secret caches are ready.
                if !self.readiness.is_ready() {
                    tracing::info!("caches synced");
                    self.readiness.set(true);
                    // The Secrets were listed before any hook was known.
                    self.secret_relist.notify_one();
                }
                // After a re-list, deletions during the gap are silent.
                let hooks = &self.hooks;
                self.gauges
                    .retain(|namespace, name| hooks.get(&ObjectRef::new(name).within(namespace)).is_some());
                for hook in hooks.state() {
                    let _ = self.triggers.unbounded_send(ObjectRef::from_obj(&*hook));
                }
            }
            watcher::Event::Init => {}
        }
    }
}

/// What the Namespace and Secret watches read from and send to.
#[derive(Clone)]
pub struct Watching {
    /// The API client.
    pub client: kube::Client,
    /// The namespace watched, or all.
    pub scope: Option<String>,
    /// Hooks by namespace, to map an object to the hooks it matters to.
    pub index: HookIndex,
    /// Where triggers go.
    pub triggers: Triggers,
}

/// The Namespace watch (the limit annotation): a changed limit triggers
/// the namespace's hooks.
pub fn namespace_events(
    on: Watching,
    writer: reflector::store::Writer<Namespace>,
) -> impl Future<Output = Result<(), watcher::Error>> + use<> {
    let (index, triggers) = (on.index, on.triggers);
    let config = match on.scope.as_deref() {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let mut limit_before: HashMap<String, Option<String>> = HashMap::new();
    reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(on.client), config).default_backoff(),
    )
    .try_for_each(move |event| {
        match &event {
            watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) => {
                let name = ns.name_any();
                let annotation = ns.annotations().get(MAX_WEBHOOKS_ANNOTATION).cloned();
                if limit_before.insert(name.clone(), annotation.clone()) != Some(annotation) {
                    for r in hooks_in_namespace(&index, &name) {
                        let _ = triggers.unbounded_send(r);
                    }
                }
            }
            watcher::Event::Delete(ns) => {
                limit_before.remove(&ns.name_any());
            }
            _ => {}
        }
        std::future::ready(Ok(()))
    })
}

/// The watch of labelled Secrets only (never every Secret of the cluster),
/// trimmed to what hooks use ([`trim`]). It lists again once the
/// hooks are known, and again (at most once a minute) when `relist` is
/// notified because a hook needs a key a trimmed Secret lacks.
pub fn secret_events(
    on: Watching,
    writer: reflector::store::Writer<Secret>,
    relist: Arc<tokio::sync::Notify>,
) -> impl Future<Output = Result<(), watcher::Error>> + use<> {
    let Watching {
        client, scope, index, ..
    } = on.clone();
    let triggers = on.triggers;
    let watches = {
        let index = index.clone();
        let mut lists = 0u32;
        futures::stream::repeat_with(move || {
            lists += 1;
            let started = Instant::now();
            let relist = relist.clone();
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
            .modify(move |s: &mut Secret| trim::trim(s, &index))
            .take_until(ended)
        })
        .flatten()
    };
    reflector::reflector(writer, watches).try_for_each(move |event| {
        if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s) = &event {
            for r in hooks_using_secret(&index, s) {
                let _ = triggers.unbounded_send(r);
            }
        }
        std::future::ready(Ok(()))
    })
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
}
