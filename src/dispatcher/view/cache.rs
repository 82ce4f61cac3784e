//! The dispatcher's caches (hooks, labelled Secrets), held by namespace:
//! routing reads one org's few hooks per event, signing one Secret by name.
//!
//! Written here rather than kube's `reflector::Store`: that store offers
//! lookups by name and a clone of every object, so routing a batch cloned
//! all of them (50,000 `Arc`s per batch with 50,000 hooks), and its keys
//! held a second copy of every name and namespace.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use kube::runtime::watcher;
use tokio::sync::watch;

/// What a cached object is found by.
pub trait Cached {
    /// Its namespace.
    fn namespace(&self) -> &str;
    /// Its name within the namespace.
    fn name(&self) -> &str;
}

/// Objects of every namespace, fed by a watch ([`Cache::apply`]).
pub struct Cache<V> {
    state: RwLock<State<V>>,
    ready: watch::Sender<bool>,
}

struct State<V> {
    live: Namespaces<V>,
    /// A re-list under way: the objects listed so far. The live ones stay
    /// served until it is complete, as with kube's reflector.
    relist: Option<Namespaces<V>>,
}

struct Namespaces<V> {
    /// Each namespace's objects; a namespace holds a handful (5 hooks by
    /// default), so a scan of its `Vec` beats a map of maps.
    by_namespace: HashMap<Box<str>, Vec<Arc<V>>>,
    len: usize,
}

impl<V> Default for Namespaces<V> {
    fn default() -> Self {
        Namespaces {
            by_namespace: HashMap::new(),
            len: 0,
        }
    }
}

impl<V: Cached> Namespaces<V> {
    fn insert(&mut self, object: Arc<V>) {
        let objects = match self.by_namespace.get_mut(object.namespace()) {
            Some(objects) => objects,
            None => self.by_namespace.entry(object.namespace().into()).or_default(),
        };
        match objects.iter_mut().find(|o| o.name() == object.name()) {
            Some(slot) => *slot = object,
            None => {
                objects.push(object);
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, object: &V) {
        let Some(objects) = self.by_namespace.get_mut(object.namespace()) else {
            return;
        };
        let before = objects.len();
        objects.retain(|o| o.name() != object.name());
        self.len -= before - objects.len();
        if objects.is_empty() {
            self.by_namespace.remove(object.namespace());
        }
    }
}

impl<V: Cached> Default for Cache<V> {
    fn default() -> Self {
        Cache {
            state: RwLock::new(State {
                live: Namespaces::default(),
                relist: None,
            }),
            ready: watch::Sender::new(false),
        }
    }
}

impl<V: Cached> Cache<V> {
    /// Applies one watch event; the first complete list makes it ready.
    pub fn apply(&self, event: &watcher::Event<Arc<V>>) {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(object) => state.live.insert(object.clone()),
            watcher::Event::Delete(object) => state.live.remove(object),
            watcher::Event::Init => state.relist = Some(Namespaces::default()),
            watcher::Event::InitApply(object) => state.relist.get_or_insert_default().insert(object.clone()),
            watcher::Event::InitDone => {
                if let Some(listed) = state.relist.take() {
                    state.live = listed;
                }
                drop(state);
                self.ready.send_replace(true);
            }
        }
    }

    /// The object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        let state = self.read();
        let objects = state.live.by_namespace.get(namespace)?;
        objects.iter().find(|o| o.name() == name).cloned()
    }

    /// The objects of `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<V>> {
        self.read()
            .live
            .by_namespace
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().live.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`, so this cannot see it dropped.
        let _ = ready.wait_for(|r| *r).await;
    }

    // A panic while holding the lock leaves the maps consistent (each
    // change is one insert or remove), so a poisoned lock is still used.
    fn read(&self) -> RwLockReadGuard<'_, State<V>> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<V>> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Obj(&'static str, &'static str, u32);

    impl Cached for Obj {
        fn namespace(&self) -> &str {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    fn apply(cache: &Cache<Obj>, event: watcher::Event<Obj>) {
        let event = match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(Arc::new(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(Arc::new(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(Arc::new(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        };
        cache.apply(&event);
    }

    fn version(cache: &Cache<Obj>, ns: &'static str, name: &'static str) -> Option<u32> {
        cache.get(ns, name).map(|o| o.2)
    }

    #[test]
    fn a_list_replaces_the_objects_when_complete() {
        let cache = Cache::default();
        apply(&cache, watcher::Event::Init);
        apply(&cache, watcher::Event::InitApply(Obj("a", "h1", 1)));
        assert_eq!(cache.len(), 0, "nothing served before the list completes");
        apply(&cache, watcher::Event::InitApply(Obj("a", "h2", 1)));
        apply(&cache, watcher::Event::InitApply(Obj("b", "h1", 1)));
        apply(&cache, watcher::Event::InitDone);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.in_namespace("a").len(), 2);

        // A re-list: the old objects are served until it completes, then
        // only what it listed remains.
        apply(&cache, watcher::Event::Init);
        apply(&cache, watcher::Event::InitApply(Obj("a", "h1", 2)));
        assert_eq!(version(&cache, "a", "h1"), Some(1));
        assert_eq!(version(&cache, "b", "h1"), Some(1));
        apply(&cache, watcher::Event::InitDone);
        assert_eq!(version(&cache, "a", "h1"), Some(2));
        assert_eq!(cache.get("b", "h1"), None);
        assert!(cache.in_namespace("b").is_empty());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn applies_replace_by_name_and_deletes_remove() {
        let cache = Cache::default();
        apply(&cache, watcher::Event::Apply(Obj("a", "h1", 1)));
        apply(&cache, watcher::Event::Apply(Obj("a", "h1", 2)));
        apply(&cache, watcher::Event::Apply(Obj("a", "h2", 1)));
        assert_eq!(cache.len(), 2);
        assert_eq!(version(&cache, "a", "h1"), Some(2));
        apply(&cache, watcher::Event::Delete(Obj("a", "h1", 2)));
        apply(&cache, watcher::Event::Delete(Obj("a", "gone", 1)));
        apply(&cache, watcher::Event::Delete(Obj("c", "gone", 1)));
        assert_eq!(cache.get("a", "h1"), None);
        assert_eq!(cache.len(), 1);
        apply(&cache, watcher::Event::Delete(Obj("a", "h2", 1)));
        assert!(cache.is_empty());
        assert!(
            cache.read().live.by_namespace.is_empty(),
            "an emptied namespace leaves no entry"
        );
    }

    #[tokio::test]
    async fn ready_after_the_first_list() {
        let cache = Arc::new(Cache::<Obj>::default());
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await }
        });
        apply(&cache, watcher::Event::Init);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        apply(&cache, watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("ready once listed")
            .expect("no panic");
    }
}
