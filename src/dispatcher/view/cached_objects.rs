//! What the dispatcher's caches keep of each object: only what routing,
//! signing, custom headers and status mirroring read. With tens of
//! thousands of hooks cached, everything else (the controller's condition
//! messages, labels, `kubectl apply`'s copy of the object in an annotation,
//! keys of a Secret no request could use) would be most of the memory.
//!
//! Each object is converted as the watch delivers it, before the cache
//! holds it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::dispatcher::view::cache::Cached;
use crate::store::HookLimit;
use crate::{
    contract::auto_disable,
    contract::conditions::{self, ACCEPTED, SECRET_READY},
    contract::filter::{Filter, InvalidFilter},
    contract::resource::{DisableRecord, OutboundWebhook, OutboundWebhookSpec, REENABLE_ANNOTATION},
    contract::secret_values,
    contract::signing_tokens::{NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY, SigningTokens, TokenProblem},
};

/// What the cache keeps of a hook: what routing, signing, custom headers,
/// turning off and status mirroring read. Not an `OutboundWebhook`: its
/// metadata, status and conditions as Kubernetes types would be most of
/// each cached hook's memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedHook {
    namespace: Box<str>,
    name: Box<str>,
    uid: Option<Box<str>>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The reenable annotation's value (the disable rule reads it).
    pub reenable: Option<Box<str>>,
    /// The spec, but its display name.
    pub spec: OutboundWebhookSpec,
    /// The `Accepted` condition.
    pub accepted: Option<Seen>,
    /// The `SecretReady` condition.
    pub secret_ready: Option<Seen>,
    /// `status.secretName`.
    pub secret_name: Option<Box<str>>,
    /// `status.specDisabledGeneration`.
    pub spec_disabled_generation: Option<i64>,
    /// `status.delivery.disabled`.
    pub disabled: Option<DisableRecord>,
    /// `spec.filter` compiled (or why it does not compile): compiled once
    /// per filter text, when the hook is cached, and kept while later
    /// versions of the hook carry the same text.
    pub filter: Option<Arc<CompiledFilter>>,
}

/// A hook's compiled filter, or why it does not compile (the controller
/// then refuses the hook: `InvalidFilter`).
pub type CompiledFilter = Result<Filter, InvalidFilter>;

/// What routing reads of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its status is `True`.
    pub is_true: bool,
    /// The generation it was set for.
    pub observed_generation: Option<i64>,
}

impl CachedHook {
    /// The Secret name and key holding the signing token (borrowed: this is
    /// looked up for every attempt).
    pub fn signing_secret(&self) -> Option<(&str, &str)> {
        if let Some(r) = &self.spec.secret_ref {
            return Some((&r.name, &r.key));
        }
        let name = self.secret_name.as_deref()?;
        Some((name, crate::contract::signing_tokens::TOKEN_KEY))
    }

    /// The hook as cached.
    pub fn new(hook: OutboundWebhook) -> Self {
        CachedHook::after(hook, None)
    }

    /// The hook as cached, replacing `previous` (the cached version of the
    /// same hook, if any): its compiled filter is reused when the text is
    /// the same, so a status write does not compile the filter again.
    pub fn after(hook: OutboundWebhook, previous: Option<&CachedHook>) -> Self {
        let filter = hook.spec.filter.as_deref().map(|source| {
            previous
                .and_then(|p| p.filter.as_ref().filter(|_| p.spec.filter.as_deref() == Some(source)))
                .cloned()
                .unwrap_or_else(|| Arc::new(Filter::compile(source)))
        });
        let seen = |type_: &str| {
            conditions::find(&hook, type_).map(|c| Seen {
                is_true: c.status == "True",
                observed_generation: c.observed_generation,
            })
        };
        let (accepted, secret_ready) = (seen(ACCEPTED), seen(SECRET_READY));
        let OutboundWebhook {
            metadata,
            mut spec,
            status,
            ..
        } = hook;
        spec.name = None;
        let status = status.unwrap_or_default();
        CachedHook {
            namespace: metadata.namespace.unwrap_or_default().into(),
            name: metadata.name.unwrap_or_default().into(),
            uid: metadata.uid.map(String::into_boxed_str),
            generation: metadata.generation,
            deleting: metadata.deletion_timestamp.is_some(),
            reenable: metadata
                .annotations
                .and_then(|mut a| a.remove(REENABLE_ANNOTATION))
                .map(String::into_boxed_str),
            spec,
            accepted,
            secret_ready,
            secret_name: status.secret_name.map(String::into_boxed_str),
            spec_disabled_generation: status.spec_disabled_generation,
            disabled: status.delivery.and_then(|d| d.disabled),
            filter,
        }
    }

    /// Its UID (tasks name it).
    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// Whether the hook sets `spec.rateLimit` or `spec.maxConcurrentRequests`
    /// (its deliveries then go through the claimer, which holds them to
    /// those across replicas).
    pub fn has_limits(&self) -> bool {
        HookLimit::of(&self.spec).is_some()
    }

    /// `namespace/name`, as tasks and logs name the hook.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `record` turns it off now (the rule of [`auto_disable`]).
    pub fn turned_off_by(&self, record: &DisableRecord) -> bool {
        auto_disable::turns_off(record, self.reenable.as_deref(), self.spec_disabled_generation)
    }
}

impl Cached for CachedHook {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// What the cache keeps of a labelled Secret: its namespace, name and the
/// keys a request could use (values usable as a signing token or as a
/// header value, and the rotation keys whatever they hold: an invalid
/// `next-token` stops signing, so it must stay seen). A key dropped here
/// is one the dispatcher would refuse as "missing or unusable" anyway, so
/// no outcome changes. Not a `Secret`: its metadata and a `BTreeMap` node
/// for a few keys would be most of each cached Secret's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedSecret {
    namespace: Box<str>,
    name: Box<str>,
    data: Box<[SecretEntry]>,
}

/// One key of a cached Secret and its value.
type SecretEntry = (Box<str>, Box<[u8]>);

impl CachedSecret {
    /// The Secret as cached.
    pub fn new(secret: Secret) -> Self {
        // Every usable value is at most a header value plus its line break:
        // a tenant's 1 MiB value is never held.
        let usable = |key: &str, value: &[u8]| {
            value.len() <= secret_values::MAX_HEADER_VALUE_BYTES + 2
                && (key == NEXT_TOKEN_KEY
                    || key == PREVIOUS_TOKEN_KEY
                    || secret_values::signing_token(value).is_ok()
                    || secret_values::header_value(value).is_ok())
        };
        let data = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, value)| usable(key, &value.0))
            .map(|(key, value)| (key.into_boxed_str(), value.0.into_boxed_slice()))
            .collect();
        CachedSecret {
            namespace: secret.metadata.namespace.unwrap_or_default().into(),
            name: secret.metadata.name.unwrap_or_default().into(),
            data,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    /// The signing tokens under `token_key` (see [`SigningTokens::read`]).
    pub fn tokens(&self, token_key: &str) -> Result<SigningTokens<'_>, TokenProblem> {
        SigningTokens::read_with(|key| self.get(key), token_key)
    }
}

impl Cached for CachedSecret {
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        ByteString,
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
    };

    use super::*;
    use crate::{
        contract::conditions::READY,
        contract::resource::{DeliveryStatus, DisableReason, OutboundWebhookStatus},
        contract::signing_tokens::TOKEN_KEY,
        dispatcher::intake::routing::{Deliverability, deliverability},
    };

    fn condition(type_: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: "True".into(),
            observed_generation: Some(2),
            reason: "Because".into(),
            message: "a long message for people".into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn hook() -> OutboundWebhook {
        let spec = serde_json::from_value(serde_json::json!({
            "name": "Display name", "url": "https://x.example", "events": ["kustomer.user.create"],
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "auth"}}}],
        }))
        .unwrap();
        let mut h = OutboundWebhook::new("h", spec);
        h.metadata.namespace = Some("acme".into());
        h.metadata.uid = Some("uid-1".into());
        h.metadata.generation = Some(2);
        h.metadata.resource_version = Some("12345".into());
        h.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        h.metadata.annotations = Some(BTreeMap::from([
            (REENABLE_ANNOTATION.into(), "7".into()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{...}".repeat(1000),
            ),
        ]));
        h.status = Some(OutboundWebhookStatus {
            conditions: vec![condition(ACCEPTED), condition(SECRET_READY), condition(READY)],
            observed_generation: Some(2),
            secret_name: Some("h-webhook-secret".into()),
            spec_disabled_generation: Some(1),
            delivery: Some(DeliveryStatus {
                consecutive_failures: Some(3),
                disabled: Some(DisableRecord {
                    reason: DisableReason::AutoDisabled,
                    at: Time(jiff::Timestamp::UNIX_EPOCH),
                    message: "HTTP 500".into(),
                    reenable_token: "7".into(),
                    generation: 2,
                }),
                ..Default::default()
            }),
        });
        h
    }

    #[test]
    fn a_cached_hook_routes_signs_and_stays_turned_off_as_the_hook_would() {
        let full = hook();
        let cached = CachedHook::new(full.clone());
        // The controller's view of the same hook, through the shared rule.
        assert!(crate::contract::auto_disable::is_auto_disabled(&full));
        assert_eq!(deliverability(&cached), Deliverability::TurnedOff);
        assert_eq!(cached.signing_secret(), Some(("h-webhook-secret", TOKEN_KEY)));
        assert_eq!(cached.spec.headers, full.spec.headers);
        assert_eq!(cached.spec.name, None);
        assert_eq!(
            cached.disabled.as_ref(),
            full.status
                .as_ref()
                .unwrap()
                .delivery
                .as_ref()
                .unwrap()
                .disabled
                .as_ref()
        );
        assert_eq!(cached.reenable.as_deref(), Some("7"));
        let seen = Some(Seen {
            is_true: true,
            observed_generation: Some(2),
        });
        assert_eq!((cached.accepted, cached.secret_ready), (seen, seen));
        // Tasks name the hook's UID.
        assert_eq!(cached.uid(), Some("uid-1"));
        assert_eq!(cached.key(), "acme/h");

        // Re-enabled (the annotation moved on): no longer off, for both.
        let mut reenabled = full.clone();
        reenabled
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REENABLE_ANNOTATION.into(), "8".into());
        assert!(!crate::contract::auto_disable::is_auto_disabled(&reenabled));
        assert_eq!(deliverability(&CachedHook::new(reenabled)), Deliverability::Deliverable);
    }

    #[test]
    fn the_filter_is_compiled_once_per_text() {
        let mut h = hook();
        assert_eq!(CachedHook::new(h.clone()).filter, None);
        h.spec.filter = Some("event.data.priority == 'urgent'".into());
        let first = CachedHook::new(h.clone());
        assert!(first.filter.as_deref().is_some_and(Result::is_ok));
        // A status change: the same program.
        h.metadata.resource_version = Some("12346".into());
        let second = CachedHook::after(h.clone(), Some(&first));
        assert!(Arc::ptr_eq(
            first.filter.as_ref().unwrap(),
            second.filter.as_ref().unwrap()
        ));
        // A new text: compiled again; one that does not compile says why.
        h.spec.filter = Some("evnt.x".into());
        let third = CachedHook::after(h, Some(&second));
        assert_eq!(
            third.filter.as_deref(),
            Some(&Err(InvalidFilter::UnknownVariable("evnt".into())))
        );
    }

    #[test]
    fn a_hook_without_annotations_or_status_is_cached_without() {
        let mut h = hook();
        h.metadata.annotations = Some(BTreeMap::from([("other".into(), "x".into())]));
        h.status = None;
        let cached = CachedHook::new(h);
        assert_eq!(cached.reenable, None);
        assert_eq!(
            (cached.accepted, cached.secret_ready, &cached.disabled),
            (None, None, &None)
        );
        assert_eq!(deliverability(&cached), Deliverability::Lagging);
    }

    #[test]
    fn a_secret_keeps_its_tokens_and_header_values_and_drops_what_no_request_could_use() {
        let token = "t".repeat(64);
        let mut blob = vec![0u8; 1024 * 1024];
        blob[0] = 0xff;
        let mut secret = Secret {
            data: Some(BTreeMap::from([
                (TOKEN_KEY.to_string(), ByteString(token.clone().into_bytes())),
                (NEXT_TOKEN_KEY.to_string(), ByteString(b"too-short".to_vec())),
                ("auth".to_string(), ByteString(b"Bearer abc\n".to_vec())),
                ("keystore".to_string(), ByteString(blob)),
                // Too long for a token, and no header value spans lines.
                (
                    "ca.crt".to_string(),
                    ByteString(format!("-----BEGIN\n{}\n-----END\n", "A".repeat(600)).into_bytes()),
                ),
            ])),
            ..Default::default()
        };
        secret.metadata.namespace = Some("acme".into());
        secret.metadata.name = Some("creds".into());
        secret.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        let cached = CachedSecret::new(secret);
        let keys: Vec<&str> = cached.data.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["auth", NEXT_TOKEN_KEY, TOKEN_KEY]);
        assert_eq!(cached.get("auth"), Some(&b"Bearer abc\n"[..]));
        assert_eq!((cached.namespace(), cached.name()), ("acme", "creds"));
        // The invalid staged token is still seen, so signing still refuses it.
        assert!(cached.tokens(TOKEN_KEY).is_err());
    }
}
