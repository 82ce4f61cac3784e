//! Each hook's limits by UID, for the claimer: it learns of a hook's due
//! tasks from Redis by UID, while the hook cache is held by namespace and
//! name. Holds only hooks that set a limit (bounded by the cached hooks),
//! fed by the hooks' watch next to the cache.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::runtime::watcher;

use crate::dispatcher::view::cached_objects::CachedHook;
use crate::store::HookLimit;

/// Limits of the cached hooks that set one, by UID.
#[derive(Debug, Default)]
pub struct HookLimits {
    by_uid: RwLock<HashMap<Box<str>, HookLimit>>,
    /// A re-list under way: the limits listed so far, swapped in when done.
    relist: RwLock<Option<HashMap<Box<str>, HookLimit>>>,
}

impl HookLimits {
    /// The limits of hook `uid`, `None` when it sets none.
    pub fn get(&self, uid: &str) -> Option<HookLimit> {
        self.by_uid.read().expect("limits lock").get(uid).copied()
    }

    /// Follows one event of the hooks' watch (as the hook cache does).
    pub fn apply(&self, event: &watcher::Event<Arc<CachedHook>>) {
        let set = |map: &mut HashMap<Box<str>, HookLimit>, hook: &CachedHook| {
            let Some(uid) = hook.uid() else { return };
            match HookLimit::of(&hook.spec) {
                Some(limit) => {
                    map.insert(uid.into(), limit);
                }
                None => {
                    map.remove(uid);
                }
            }
        };
        match event {
            watcher::Event::Apply(hook) => set(&mut self.by_uid.write().expect("limits lock"), hook),
            watcher::Event::Delete(hook) => {
                if let Some(uid) = hook.uid() {
                    self.by_uid.write().expect("limits lock").remove(uid);
                }
            }
            watcher::Event::Init => *self.relist.write().expect("limits lock") = Some(HashMap::new()),
            watcher::Event::InitApply(hook) => {
                if let Some(listed) = self.relist.write().expect("limits lock").as_mut() {
                    set(listed, hook);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relist.write().expect("limits lock").take() {
                    *self.by_uid.write().expect("limits lock") = listed;
                }
            }
        }
    }
}
