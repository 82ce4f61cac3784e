//! The hooks of each namespace, by name, beside the hook cache: a
//! reconcile (the limit is per namespace) and a trigger (a Secret, a
//! Namespace, a freed slot) read one namespace's hooks instead of scanning
//! every hook in the cache, which made a burst of 10,000 new hooks cost the
//! controller time quadratic in their number.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use kube::runtime::{
    reflector::{ObjectRef, Store},
    watcher,
};

use crate::contract::resource::OutboundWebhook;

/// Names of the hooks per namespace, fed by the same watch events as the
/// cache. It may name a hook the cache no longer holds (until the next
/// re-list rebuilds it); lookups go through the cache, so such a name is
/// skipped.
#[derive(Clone)]
pub struct HookIndex {
    hooks: Store<OutboundWebhook>,
    names: Arc<RwLock<HashMap<String, BTreeSet<String>>>>,
}

impl HookIndex {
    /// An index of the hooks in `hooks` (filled from it at once).
    pub fn new(hooks: Store<OutboundWebhook>) -> Self {
        let index = HookIndex {
            hooks,
            names: Arc::default(),
        };
        index.rebuild();
        index
    }

    /// Follows one watch event, after the cache has applied it.
    pub fn apply(&self, event: &watcher::Event<OutboundWebhook>) {
        match event {
            watcher::Event::Apply(hook) | watcher::Event::InitApply(hook) => {
                if let (Some(namespace), Some(name)) = (&hook.metadata.namespace, &hook.metadata.name) {
                    self.write().entry(namespace.clone()).or_default().insert(name.clone());
                }
            }
            watcher::Event::Delete(hook) => {
                if let (Some(namespace), Some(name)) = (&hook.metadata.namespace, &hook.metadata.name) {
                    let mut names = self.write();
                    if let Some(set) = names.get_mut(namespace) {
                        set.remove(name);
                        if set.is_empty() {
                            names.remove(namespace);
                        }
                    }
                }
            }
            // A re-list replaced the cache: hooks deleted meanwhile are gone.
            watcher::Event::InitDone => self.rebuild(),
            watcher::Event::Init => {}
        }
    }

    /// The cached hooks of `namespace`, by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<OutboundWebhook>> {
        let names: Vec<String> = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|name| self.hooks.get(&ObjectRef::new(name).within(namespace)))
            .collect()
    }

    fn rebuild(&self) {
        let mut names: HashMap<String, BTreeSet<String>> = HashMap::new();
        for hook in self.hooks.state() {
            if let (Some(namespace), Some(name)) = (&hook.metadata.namespace, &hook.metadata.name) {
                names.entry(namespace.clone()).or_default().insert(name.clone());
            }
        }
        *self.write() = names;
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.names.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn hook(namespace: &str, name: &str) -> OutboundWebhook {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "outboundwebhooks.io/v1alpha1", "kind": "OutboundWebhook",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": "https://example.com", "events": ["kustomer.user.create"]},
        }))
        .unwrap()
    }

    fn names(hooks: Vec<Arc<OutboundWebhook>>) -> Vec<String> {
        hooks.iter().map(|h| h.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn follows_the_watch_and_skips_what_the_cache_no_longer_holds() {
        let mut writer = reflector::store::Writer::<OutboundWebhook>::default();
        let index = HookIndex::new(writer.as_reader());
        let step = |writer: &mut reflector::store::Writer<OutboundWebhook>, event: watcher::Event<OutboundWebhook>| {
            writer.apply_watcher_event(&event);
            index.apply(&event);
        };
        step(&mut writer, watcher::Event::Apply(hook("acme", "b")));
        step(&mut writer, watcher::Event::Apply(hook("acme", "a")));
        step(&mut writer, watcher::Event::Apply(hook("other", "c")));
        assert_eq!(names(index.in_namespace("acme")), ["a", "b"]);
        assert_eq!(names(index.in_namespace("other")), ["c"]);
        assert!(index.in_namespace("nobody").is_empty());

        step(&mut writer, watcher::Event::Delete(hook("acme", "a")));
        assert_eq!(names(index.in_namespace("acme")), ["b"]);

        // A re-list without "b": until InitDone the index still names it,
        // but the cache decides; after InitDone the index agrees.
        step(&mut writer, watcher::Event::Init);
        step(&mut writer, watcher::Event::InitApply(hook("other", "c")));
        step(&mut writer, watcher::Event::InitDone);
        assert!(index.in_namespace("acme").is_empty());
        assert_eq!(names(index.in_namespace("other")), ["c"]);
    }
}
