//! Each org's budget of bytes in Redis (docs/src/tenant-bounds.md#redis-bytes-per-org): the
//! default of `--org-max-stored-bytes`, overridden per namespace by the
//! annotation [`ANNOTATION`] on the Namespace. The scripts count and
//! enforce (`route.lua`); this holds the numbers they are given.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

/// The Namespace annotation that sets its org's budget (a size such as
/// `256Mi`, see [`parse_size`]).
pub const ANNOTATION: &str = "outboundwebhooks.io/max-stored-bytes";

/// The default of `--org-max-stored-bytes`.
pub const DEFAULT_ORG_MAX_STORED_BYTES: &str = "64Mi";

/// The `reason` of a task not stored because its org's bytes in Redis
/// reached its budget (also how its dead letter's reason starts).
pub const ORG_OVER_BUDGET: &str = "org_over_budget";

/// A size is not a number of bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a size: give bytes, or a number with Ki, Mi, Gi, Ti (or k, M, G, T), e.g. 64Mi")]
pub struct InvalidSize(pub String);

/// Parses a size: plain bytes (`1048576`) or a number with a binary
/// (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix, as
/// Kubernetes quantities write them.
pub fn parse_size(text: &str) -> Result<u64, InvalidSize> {
    let invalid = || InvalidSize(text.to_string());
    let trimmed = text.trim();
    let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    number.checked_mul(unit).ok_or_else(invalid)
}

/// Each org's budget: a default and the orgs whose Namespace sets its own.
/// Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct OrgBudgets {
    default: u64,
    overrides: Arc<RwLock<HashMap<String, u64>>>,
}

/// A budget no org reaches: what stores outside the dispatcher (the
/// commands, tests) are given.
const UNBOUNDED: u64 = 1 << 62;

impl OrgBudgets {
    /// Every org gets `default` bytes unless its Namespace says otherwise.
    pub fn new(default: u64) -> OrgBudgets {
        OrgBudgets {
            default,
            overrides: Arc::default(),
        }
    }

    /// No bound.
    pub fn unbounded() -> OrgBudgets {
        OrgBudgets::new(UNBOUNDED)
    }

    /// The budget of `org`.
    pub fn for_org(&self, org: &str) -> u64 {
        let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        overrides.get(org).copied().unwrap_or(self.default)
    }

    /// Sets (or with `None` removes) the budget `org`'s Namespace gives.
    pub fn set(&self, org: &str, bytes: Option<u64>) {
        let mut overrides = self.overrides.write().unwrap_or_else(|e| e.into_inner());
        match bytes {
            Some(bytes) => overrides.insert(org.to_string(), bytes),
            None => overrides.remove(org),
        };
    }

    /// Replaces every override at once (after a full list of Namespaces).
    fn replace_all(&self, all: HashMap<String, u64>) {
        *self.overrides.write().unwrap_or_else(|e| e.into_inner()) = all;
    }
}

/// The budget a Namespace's annotation sets, if it sets a valid one; an
/// invalid value is logged and the default applies.
fn budget_of(ns: &PartialObjectMeta<Namespace>) -> Option<(String, u64)> {
    let name = ns.metadata.name.clone()?;
    let text = ns.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    match parse_size(text) {
        Ok(bytes) => Some((name, bytes)),
        Err(e) => {
            tracing::warn!(namespace = %name, annotation = ANNOTATION, error = %e, "ignoring the Namespace's byte budget; the default --org-max-stored-bytes applies");
            None
        }
    }
}

/// Keeps `budgets` in step with the Namespaces' annotations until the
/// process ends; `synced` turns true after the first full list. Only the
/// metadata is watched and only the annotated Namespaces are held, one
/// number each: Namespaces are the platform's, not a tenant's, to create.
pub fn watch_namespaces(kube: kube::Client, budgets: OrgBudgets) -> watch::Receiver<bool> {
    let (synced_tx, synced) = watch::channel(false);
    let stream = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(kube),
        watcher::Config::default(),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut relist: Option<HashMap<String, u64>> = None;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(ns)) => {
                    if let (Some(all), Some((name, bytes))) = (relist.as_mut(), budget_of(&ns)) {
                        all.insert(name, bytes);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    budgets.replace_all(relist.take().unwrap_or_default());
                    synced_tx.send_replace(true);
                }
                Ok(watcher::Event::Apply(ns)) => {
                    if let Some(name) = ns.metadata.name.as_deref() {
                        budgets.set(name, budget_of(&ns).map(|(_, bytes)| bytes));
                    }
                }
                Ok(watcher::Event::Delete(ns)) => {
                    if let Some(name) = ns.metadata.name.as_deref() {
                        budgets.set(name, None);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching Namespaces (their byte budgets)"),
            }
        }
    });
    synced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_quantities_with_a_suffix() {
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500k"), Ok(500_000));
        assert_eq!(parse_size("2M"), Ok(2_000_000));
        for bad in ["", "Mi", "64MB", "-1", "1.5Gi", "99999999999999999999", "20000000Ti"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_namespace_overrides_the_default_for_its_org_alone() {
        let budgets = OrgBudgets::new(100);
        budgets.set("acme", Some(5));
        assert_eq!((budgets.for_org("acme"), budgets.for_org("other")), (5, 100));
        budgets.set("acme", None);
        assert_eq!(budgets.for_org("acme"), 100);
    }
}
