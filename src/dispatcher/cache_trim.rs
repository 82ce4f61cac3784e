//! What the dispatcher's caches keep of each object: only what routing,
//! signing, custom headers and status mirroring read. With tens of
//! thousands of hooks cached, everything else (the controller's condition
//! messages, labels, `kubectl apply`'s copy of the object in an annotation,
//! keys of a Secret no request could use) would be most of the memory.
//!
//! Each object is trimmed as the watch delivers it, before the cache holds
//! it, so nothing read here has to know which fields are gone.

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use super::cache::Cached;
use crate::{
    conditions::{ACCEPTED, SECRET_READY},
    resource::{DeliveryStatus, OutboundWebhook, REENABLE_ANNOTATION},
    secret_values,
    signing_tokens::{NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY, SigningTokens, TokenProblem},
};

/// Keeps of a hook: name, namespace, UID, generation, deletion mark, the
/// reenable annotation (the disable rule reads it), the spec but its
/// display name, the Accepted and SecretReady conditions without their
/// reason and message (routing reads type, status and generation), the
/// Secret's name, the spec-disabled generation and the disable record.
pub fn trim_hook(hook: &mut OutboundWebhook) {
    let meta = &mut hook.metadata;
    trim_meta(meta);
    meta.annotations = meta
        .annotations
        .take()
        .and_then(|mut a| a.remove_entry(REENABLE_ANNOTATION))
        .map(|entry| [entry].into());
    hook.spec.name = None;
    if let Some(status) = &mut hook.status {
        status
            .conditions
            .retain(|c| c.type_ == ACCEPTED || c.type_ == SECRET_READY);
        for c in &mut status.conditions {
            c.reason = String::new();
            c.message = String::new();
        }
        status.conditions.shrink_to_fit();
        status.delivery = status
            .delivery
            .take()
            .and_then(|d| d.disabled)
            .map(|disabled| DeliveryStatus {
                disabled: Some(disabled),
                ..Default::default()
            });
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
        let usable = |key: &str, value: &[u8]| {
            key == NEXT_TOKEN_KEY
                || key == PREVIOUS_TOKEN_KEY
                || secret_values::signing_token(value).is_ok()
                || secret_values::header_value(value).is_ok()
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
    fn cache_namespace(&self) -> &str {
        &self.namespace
    }
    fn cache_name(&self) -> &str {
        &self.name
    }
}

/// What the hook cache does not read of a hook's metadata. Nothing here
/// writes with a precondition, so the resource version goes too.
fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.self_link = None;
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
        conditions::READY,
        dispatcher::routing::{Deliverability, deliverability, signing_secret},
        resource::{DisableReason, DisableRecord, OutboundWebhookStatus},
        signing_tokens::TOKEN_KEY,
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
    fn a_trimmed_hook_routes_signs_and_stays_turned_off_as_before() {
        let full = hook();
        let mut trimmed = full.clone();
        trim_hook(&mut trimmed);
        assert_eq!(deliverability(&trimmed), deliverability(&full));
        assert_eq!(deliverability(&trimmed), Deliverability::TurnedOff);
        assert_eq!(signing_secret(&trimmed), signing_secret(&full));
        assert_eq!(trimmed.spec.headers, full.spec.headers);
        assert_eq!(
            trimmed.status.as_ref().unwrap().delivery.as_ref().unwrap().disabled,
            full.status.as_ref().unwrap().delivery.as_ref().unwrap().disabled
        );
        // Re-enabling still reads the annotation, which is all that is left.
        assert_eq!(
            trimmed.metadata.annotations,
            Some(BTreeMap::from([(REENABLE_ANNOTATION.into(), "7".into())]))
        );
        let status = trimmed.status.as_ref().unwrap();
        assert_eq!(status.conditions.len(), 2);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.message.is_empty() && c.reason.is_empty())
        );
        assert_eq!(trimmed.metadata.labels, None);
        // Tasks name the hook's UID: it stays.
        assert_eq!(trimmed.metadata.uid, full.metadata.uid);
        assert_eq!(trimmed.metadata.resource_version, None);
    }

    #[test]
    fn a_hook_without_annotations_or_status_stays_without() {
        let mut h = hook();
        h.metadata.annotations = Some(BTreeMap::from([("other".into(), "x".into())]));
        h.status = None;
        trim_hook(&mut h);
        assert_eq!((h.metadata.annotations, h.status), (None, None));
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
        assert_eq!((cached.cache_namespace(), cached.cache_name()), ("acme", "creds"));
        // The invalid staged token is still seen, so signing still refuses it.
        assert!(cached.tokens(TOKEN_KEY).is_err());
    }
}
