//! What the controller's cache keeps of a labelled Secret: only the keys a
//! hook of its namespace uses, each value bounded
//! (docs/src/tenant-bounds.md#labelled-secrets: caches hold what hooks
//! use). A tenant may label any number of Secrets of up to 1 MiB each;
//! cached whole they would take the controller past its memory limit at
//! every start, and with it every tenant's reconciles.
//!
//! Kept: the signing keys of the generated Secret
//! (docs/src/contract.md#the-signing-secret; fixed names, so a Secret
//! generated or adopted needs no hook lookup), the key of every
//! `spec.secretRef` and `headers[].valueFrom` of the namespace's hooks that
//! hold or wait for a slot, and only values of at most
//! [`MAX_KEPT_VALUE_BYTES`]; of the metadata, what ownership and rotation
//! read (owner references, our own labels and annotations).
//!
//! A trimmed Secret carries [`TRIMMED_ANNOTATION`] in the cache only. A
//! trimmed Secret without a key a hook needs is a cache miss
//! ([`cached_with`]): the key was not referenced when the Secret was
//! listed, or its value is over every bound. The reconciler then reads the
//! Secret from the API server, as it does for a Secret not in the cache.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::controller::{hook_index::HookIndex, status::ControllerStatus};
use crate::{
    contract::resource::OutboundWebhook,
    contract::secret_values::MAX_HEADER_VALUE_BYTES,
    contract::signing_tokens::{
        NEXT_STANDARD_WEBHOOKS_KEY, NEXT_TOKEN_KEY, PREVIOUS_STANDARD_WEBHOOKS_KEY, PREVIOUS_TOKEN_KEY,
        STANDARD_WEBHOOKS_KEY, TOKEN_KEY,
    },
};

/// Set on a cached Secret whose keys were trimmed (never written to the API).
pub const TRIMMED_ANNOTATION: &str = "outboundwebhooks.io/cache-trimmed";

/// The largest value kept: a header value's bound plus the one trailing
/// line break (CRLF) that is removed before it is checked. A signing token
/// (at most 512 bytes) and its `whsec_` form fit as well; a longer value is
/// unusable whatever it is for, and is read from the API server when a
/// hook's condition must say so.
pub const MAX_KEPT_VALUE_BYTES: usize = MAX_HEADER_VALUE_BYTES + 2;

/// The prefix of labels and annotations the cache keeps.
const OWN_PREFIX: &str = "outboundwebhooks.io/";

/// Keys of a generated Secret (and of its rotation), kept in every Secret.
const SIGNING_KEYS: [&str; 6] = [
    TOKEN_KEY,
    STANDARD_WEBHOOKS_KEY,
    NEXT_TOKEN_KEY,
    NEXT_STANDARD_WEBHOOKS_KEY,
    PREVIOUS_TOKEN_KEY,
    PREVIOUS_STANDARD_WEBHOOKS_KEY,
];

/// Whether a hook's references count: it holds a slot or has no verdict
/// yet. A hook over the limit is not served, so its headers keep nothing
/// (a tenant's hundreds of waiting hooks cannot pin Secret values).
fn counts(hook: &OutboundWebhook) -> bool {
    let status = ControllerStatus::from_status(hook.status.as_ref());
    status.is_accepted() || status.condition(crate::contract::conditions::ACCEPTED).is_none()
}

/// The keys of Secret `name` that `hooks` (of its namespace) read.
fn referenced_keys(name: &str, hooks: &[Arc<OutboundWebhook>]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for hook in hooks.iter().filter(|h| counts(h)) {
        if let Some(reference) = hook.spec.secret_ref.as_ref().filter(|r| r.name == name) {
            keys.insert(reference.key.clone());
        }
        for header in &hook.spec.headers {
            if let Some(reference) = header.value_from.as_ref().map(|v| &v.secret_key_ref)
                && reference.name == name
            {
                keys.insert(reference.key.clone());
            }
        }
    }
    keys
}

/// Trims `secret` as the watch delivers it, before the cache holds it.
pub fn trim(secret: &mut Secret, hooks: &HookIndex) {
    let namespace = secret.namespace().unwrap_or_default();
    let referenced = referenced_keys(&secret.name_any(), &hooks.in_namespace(&namespace));
    trim_to(secret, &referenced);
}

fn trim_to(secret: &mut Secret, referenced: &BTreeSet<String>) {
    secret.managed_fields_mut().clear();
    secret.string_data = None;
    if let Some(data) = secret.data.as_mut() {
        data.retain(|key, value| {
            (SIGNING_KEYS.contains(&key.as_str()) || referenced.contains(key)) && value.0.len() <= MAX_KEPT_VALUE_BYTES
        });
    }
    // `kubectl apply` keeps a copy of the whole object in an annotation.
    secret.annotations_mut().retain(|key, _| key.starts_with(OWN_PREFIX));
    secret.labels_mut().retain(|key, _| key.starts_with(OWN_PREFIX));
    secret
        .annotations_mut()
        .insert(TRIMMED_ANNOTATION.to_string(), "true".to_string());
}

/// The cached Secret `namespace/name`, unless it is not cached or is a
/// trimmed copy without one of `keys` (then the caller reads the API).
pub fn cached_with(store: &Store<Secret>, namespace: &str, name: &str, keys: &[&str]) -> Option<Arc<Secret>> {
    let secret = store.get(&ObjectRef::new(name).within(namespace))?;
    let trimmed = secret.annotations().contains_key(TRIMMED_ANNOTATION);
    let has = |key: &&str| secret.data.as_ref().is_some_and(|d| d.contains_key(*key));
    (!trimmed || keys.iter().all(has)).then_some(secret)
}

/// Whether `hook` needs a key that a trimmed cached Secret of its namespace
/// lacks (so the cache should be re-listed with the hook's references).
pub fn misses(store: &Store<Secret>, hook: &OutboundWebhook) -> bool {
    if !counts(hook) {
        return false;
    }
    let namespace = hook.namespace().unwrap_or_default();
    let references = hook.spec.secret_ref.iter().chain(
        hook.spec
            .headers
            .iter()
            .filter_map(|h| h.value_from.as_ref().map(|v| &v.secret_key_ref)),
    );
    references.into_iter().any(|r| {
        store.get(&ObjectRef::new(&r.name).within(&namespace)).is_some()
            && cached_with(store, &namespace, &r.name, &[&r.key]).is_none()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(data: &[(&str, usize)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("acme".into());
        s.metadata.annotations = Some(BTreeMap::from([
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "x".repeat(100_000),
            ),
            ("outboundwebhooks.io/rotated-at".to_string(), "1".to_string()),
        ]));
        s.data = Some(
            data.iter()
                .map(|(k, n)| (k.to_string(), ByteString(vec![b'a'; *n])))
                .collect(),
        );
        s
    }

    fn keys(s: &Secret) -> Vec<&str> {
        s.data.as_ref().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn only_signing_and_referenced_keys_within_the_bound_are_kept() {
        let mut s = secret(&[
            ("token", 64),
            ("auth", 100),
            ("big-referenced", MAX_KEPT_VALUE_BYTES + 1),
            ("unreferenced", 10),
            ("next-token", 64),
        ]);
        trim_to(
            &mut s,
            &BTreeSet::from(["auth".to_string(), "big-referenced".to_string()]),
        );
        assert_eq!(keys(&s), ["auth", "next-token", "token"]);
        let annotations = s.annotations();
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(annotations.contains_key("outboundwebhooks.io/rotated-at"));
        assert!(annotations.contains_key(TRIMMED_ANNOTATION));
    }

    #[test]
    fn a_trimmed_secret_without_a_needed_key_is_a_cache_miss() {
        let (reader, mut writer) = {
            let (reader, writer) = kube::runtime::reflector::store::<Secret>();
            (reader, writer)
        };
        let mut s = secret(&[("token", 64), ("auth", 100)]);
        trim_to(&mut s, &BTreeSet::new());
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(s));
        assert!(cached_with(&reader, "acme", "creds", &["token"]).is_some());
        assert!(cached_with(&reader, "acme", "creds", &["auth"]).is_none());
        assert!(cached_with(&reader, "acme", "other", &[]).is_none());
    }
}
