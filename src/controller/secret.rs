//! The signing secret: generating one for a hook (created once, never
//! overwritten, adopted from a deleted hook of the same name) or checking the
//! one `spec.secretRef` names. Decisions are pure functions; the two async
//! functions at the bottom do the API calls.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::{ObjectRef, Store},
};

use super::status::SecretOutcome;
use crate::{
    conditions::secret_ready,
    resource::{OutboundWebhook, SecretKeyRef, WEBHOOK_SECRET_LABEL},
    secret_values,
    signing::standard_webhooks_secret,
};

/// Key of the hex token (the HMAC key, as UTF-8 bytes).
pub const TOKEN_KEY: &str = "token";
/// Key of the same token in Standard Webhooks form (`whsec_` + base64).
pub const STANDARD_WEBHOOKS_KEY: &str = "standard-webhooks-secret";

/// The name of the Secret generated for a hook.
pub fn generated_secret_name(hook_name: &str) -> String {
    format!("{hook_name}-webhook-secret")
}

/// A fresh token: 32 bytes of the OS CSPRNG as 64 lowercase hex characters.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The Secret to create for a hook, labelled and controlled by it.
pub fn new_secret(hook: &OutboundWebhook, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(generated_secret_name(&hook.name_any())),
            namespace: hook.namespace(),
            labels: Some(BTreeMap::from([(WEBHOOK_SECRET_LABEL.to_string(), "true".to_string())])),
            owner_references: hook.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), token.to_string()),
            (STANDARD_WEBHOOKS_KEY.to_string(), standard_webhooks_secret(token)),
        ])),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

/// How an existing Secret with the generated name relates to the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// The hook controls it.
    OwnedByHook,
    /// A deleted hook of the same name controls it: adopt it with its token
    /// (a delete-and-recreate must not wait for garbage collection).
    AdoptFromDeletedHook,
    /// Something else (or nobody) owns it: leave it alone.
    Conflict(String),
}

fn is_hook_owner(owner: &OwnerReference) -> bool {
    owner.kind == "OutboundWebhook" && owner.api_version.split('/').next() == Some(crate::resource::API_GROUP)
}

/// Classifies an existing Secret named like the hook's generated one.
pub fn ownership(secret: &Secret, hook: &OutboundWebhook) -> Ownership {
    let name = secret.name_any();
    let controller = secret.owner_references().iter().find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if is_hook_owner(owner) && owner.name == hook.name_any() => {
            if Some(&owner.uid) == hook.uid().as_ref() {
                Ownership::OwnedByHook
            } else {
                // Only one object of a name exists at a time, so an owner of
                // this name with another UID is a deleted hook.
                Ownership::AdoptFromDeletedHook
            }
        }
        Some(owner) => Ownership::Conflict(format!(
            "Secret {name} already exists and is controlled by {} {}; it is left untouched. Delete or rename it, or set spec.secretRef to use your own secret",
            owner.kind, owner.name
        )),
        None => Ownership::Conflict(format!(
            "Secret {name} already exists and is not controlled by this hook; it is left untouched. Delete or rename it, or set spec.secretRef to use it as the signing secret"
        )),
    }
}

fn has_label(secret: &Secret) -> bool {
    secret.labels().get(WEBHOOK_SECRET_LABEL).is_some_and(|v| v == "true")
}

fn missing_key(secret_name: &str, key: &str) -> SecretOutcome {
    SecretOutcome::Problem {
        reason: secret_ready::SECRET_NOT_FOUND,
        message: format!("Secret {secret_name} has no key {key:?}"),
    }
}

/// Checks a Secret named by `spec.secretRef`; `None` when it does not exist.
pub fn check_referenced(secret: Option<&Secret>, reference: &SecretKeyRef, namespace: &str) -> SecretOutcome {
    let name = &reference.name;
    let Some(secret) = secret else {
        return SecretOutcome::Problem {
            reason: secret_ready::SECRET_NOT_FOUND,
            message: format!("Secret {name} (spec.secretRef) does not exist in namespace {namespace}"),
        };
    };
    if !has_label(secret) {
        return SecretOutcome::Problem {
            reason: secret_ready::SECRET_NOT_LABELLED,
            message: format!(
                "Secret {name} (spec.secretRef) lacks the label {WEBHOOK_SECRET_LABEL}=true, so the operator may not read it; run: kubectl label secret {name} {WEBHOOK_SECRET_LABEL}=true -n {namespace}"
            ),
        };
    }
    let Some(ByteString(token)) = secret.data.as_ref().and_then(|d| d.get(&reference.key)) else {
        return missing_key(name, &reference.key);
    };
    if let Err(problem) = secret_values::signing_token(token) {
        return SecretOutcome::Problem {
            reason: secret_ready::SECRET_INVALID,
            message: format!("key {:?} of Secret {name} (spec.secretRef) {problem}", reference.key),
        };
    }
    SecretOutcome::Referenced { name: name.clone() }
}

/// Checks a Secret a header's `valueFrom` reads; `None` when it does not
/// exist. Err carries the `SecretReady` reason and message.
pub fn check_header_secret(
    secret: Option<&Secret>,
    header: &str,
    reference: &SecretKeyRef,
    namespace: &str,
) -> Result<(), (&'static str, String)> {
    let name = &reference.name;
    let Some(secret) = secret else {
        return Err((
            secret_ready::SECRET_NOT_FOUND,
            format!("Secret {name} (header {header}) does not exist in namespace {namespace}"),
        ));
    };
    if !has_label(secret) {
        return Err((
            secret_ready::SECRET_NOT_LABELLED,
            format!(
                "Secret {name} (header {header}) lacks the label {WEBHOOK_SECRET_LABEL}=true, so the operator may not read it; run: kubectl label secret {name} {WEBHOOK_SECRET_LABEL}=true -n {namespace}"
            ),
        ));
    }
    let Some(ByteString(value)) = secret.data.as_ref().and_then(|d| d.get(&reference.key)) else {
        return Err((
            secret_ready::SECRET_NOT_FOUND,
            format!("Secret {name} (header {header}) has no key {:?}", reference.key),
        ));
    };
    if let Err(problem) = secret_values::header_value(value) {
        return Err((
            secret_ready::SECRET_INVALID,
            format!("key {:?} of Secret {name} (header {header}) {problem}", reference.key),
        ));
    }
    Ok(())
}

/// The first problem with the Secrets the hook's headers read, if any.
pub async fn check_header_secrets(
    api: &Api<Secret>,
    store: &Store<Secret>,
    hook: &OutboundWebhook,
) -> Result<Option<(&'static str, String)>, SecretError> {
    let namespace = hook.namespace().unwrap_or_default();
    for header in &hook.spec.headers {
        let Some(source) = &header.value_from else {
            continue;
        };
        let reference = &source.secret_key_ref;
        let secret = match store.get(&ObjectRef::new(&reference.name).within(&namespace)) {
            Some(secret) => Some((*secret).clone()),
            None => api.get_opt(&reference.name).await.map_err(|source| SecretError::Api {
                action: "reading",
                namespace: namespace.clone(),
                name: reference.name.clone(),
                source,
            })?,
        };
        if let Err(problem) = check_header_secret(secret.as_ref(), &header.name, reference, &namespace) {
            return Ok(Some(problem));
        }
    }
    Ok(None)
}

fn has_token(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .is_some_and(|ByteString(t)| !t.is_empty())
}

/// The API call that failed while handling a Secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// An API request failed (transient: retried with backoff).
    #[error("{action} Secret {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The OS random source failed.
    #[error("reading the OS random source for a new token: {0}")]
    Random(getrandom::Error),
}

/// The result of making sure a hook's generated Secret exists.
#[derive(Debug)]
pub struct Ensured {
    /// What the `SecretReady` condition should say.
    pub outcome: SecretOutcome,
    /// Whether this call created the Secret (worth an Event).
    pub created: bool,
    /// Whether this call adopted it from a deleted hook.
    pub adopted: bool,
}

/// Makes sure the accepted hook's generated Secret exists and is its own:
/// a plain create (never an apply of `data`, so a token is never
/// overwritten), then, if one exists, adoption or a conflict.
pub async fn ensure_generated(
    api: &Api<Secret>,
    store: &Store<Secret>,
    hook: &OutboundWebhook,
) -> Result<Ensured, SecretError> {
    let namespace = hook.namespace().unwrap_or_default();
    let name = generated_secret_name(&hook.name_any());
    let err = |action: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| SecretError::Api {
            action,
            namespace,
            name,
            source,
        }
    };
    let existing = match store.get(&ObjectRef::new(&name).within(&namespace)) {
        Some(secret) => Some((*secret).clone()),
        None => {
            let token = generate_token().map_err(SecretError::Random)?;
            match api.create(&PostParams::default(), &new_secret(hook, &token)).await {
                Ok(_) => {
                    return Ok(Ensured {
                        outcome: SecretOutcome::Generated { name },
                        created: true,
                        adopted: false,
                    });
                }
                // Either our cache lags behind or the Secret is not labelled;
                // read it to find out whose it is.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get_opt(&name).await.map_err(err("reading"))?,
                Err(e) => return Err(err("creating")(e)),
            }
        }
    };
    let Some(secret) = existing else {
        // Deleted between the create and the read: the next pass creates it.
        return Ok(Ensured {
            outcome: SecretOutcome::Problem {
                reason: secret_ready::SECRET_NOT_FOUND,
                message: format!("Secret {name} is being replaced"),
            },
            created: false,
            adopted: false,
        });
    };
    let outcome = match ownership(&secret, hook) {
        Ownership::OwnedByHook if has_token(&secret) => SecretOutcome::Generated { name },
        Ownership::OwnedByHook => missing_key(&name, TOKEN_KEY),
        Ownership::Conflict(message) => SecretOutcome::Problem {
            reason: secret_ready::SECRET_CONFLICT,
            message,
        },
        Ownership::AdoptFromDeletedHook => {
            let mut owners: Vec<OwnerReference> = secret
                .owner_references()
                .iter()
                .filter(|o| o.controller != Some(true))
                .cloned()
                .collect();
            owners.extend(hook.controller_owner_ref(&()));
            // The resourceVersion makes this a compare-and-swap: a Secret
            // changed meanwhile is re-examined on the next pass.
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": secret.resource_version(),
                    "labels": {WEBHOOK_SECRET_LABEL: "true"},
                    "ownerReferences": owners,
                }
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err("adopting"))?;
            tracing::info!(secret = %name, %namespace, "adopted the signing secret of a deleted hook of the same name, keeping its token");
            return Ok(Ensured {
                outcome: if has_token(&secret) {
                    SecretOutcome::Generated { name }
                } else {
                    missing_key(&name, TOKEN_KEY)
                },
                created: false,
                adopted: true,
            });
        }
    };
    Ok(Ensured {
        outcome,
        created: false,
        adopted: false,
    })
}

/// What the hook's generated Secret says while the hook holds no slot:
/// observed from the cache only; nothing is created or changed.
pub fn observe_generated(store: &Store<Secret>, hook: &OutboundWebhook) -> SecretOutcome {
    let namespace = hook.namespace().unwrap_or_default();
    let name = generated_secret_name(&hook.name_any());
    match store.get(&ObjectRef::new(&name).within(&namespace)) {
        Some(secret) if ownership(&secret, hook) == Ownership::OwnedByHook && has_token(&secret) => {
            SecretOutcome::Generated { name }
        }
        _ => SecretOutcome::Problem {
            reason: secret_ready::SECRET_NOT_FOUND,
            message: format!("Secret {name} is generated once the hook is accepted"),
        },
    }
}

/// Checks the Secret `spec.secretRef` names: from the cache of labelled
/// Secrets, else one read to tell a missing Secret from an unlabelled one.
pub async fn check_reference(
    api: &Api<Secret>,
    store: &Store<Secret>,
    hook: &OutboundWebhook,
    reference: &SecretKeyRef,
) -> Result<SecretOutcome, SecretError> {
    let namespace = hook.namespace().unwrap_or_default();
    if let Some(secret) = store.get(&ObjectRef::new(&reference.name).within(&namespace)) {
        return Ok(check_referenced(Some(&secret), reference, &namespace));
    }
    let secret = api.get_opt(&reference.name).await.map_err(|source| SecretError::Api {
        action: "reading",
        namespace: namespace.clone(),
        name: reference.name.clone(),
        source,
    })?;
    Ok(check_referenced(secret.as_ref(), reference, &namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::OutboundWebhookSpec;

    fn hook(uid: &str) -> OutboundWebhook {
        let spec: OutboundWebhookSpec = serde_json::from_value(serde_json::json!({
            "url": "https://example.com", "events": ["kustomer.user.create"]
        }))
        .unwrap();
        let mut hook = OutboundWebhook::new("shop", spec);
        hook.metadata.namespace = Some("acme".into());
        hook.metadata.uid = Some(uid.into());
        hook
    }

    fn secret(labelled: bool, data: &[(&str, &[u8])], owners: Vec<OwnerReference>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("shop-webhook-secret".into()),
                labels: labelled.then(|| BTreeMap::from([(WEBHOOK_SECRET_LABEL.to_string(), "true".to_string())])),
                owner_references: Some(owners),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_is_64_lowercase_hex_and_fresh_each_time() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn the_standard_webhooks_form_is_whsec_and_base64_of_the_token_bytes() {
        assert_eq!(standard_webhooks_secret("abc"), "whsec_YWJj");
    }

    #[test]
    fn a_new_secret_is_labelled_named_and_controlled_by_the_hook() {
        let h = hook("uid-1");
        let s = new_secret(&h, "00ff");
        assert_eq!(s.metadata.name.as_deref(), Some("shop-webhook-secret"));
        assert!(has_label(&s));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.kind, "OutboundWebhook");
        let data = s.string_data.unwrap();
        assert_eq!(data[TOKEN_KEY], "00ff");
        assert_eq!(data[STANDARD_WEBHOOKS_KEY], standard_webhooks_secret("00ff"));
    }

    #[test]
    fn ownership_tells_own_adoptable_and_foreign_secrets_apart() {
        let h = hook("uid-2");
        let owned_by = |uid: &str, name: &str, kind: &str| {
            let mut r = hook(uid).controller_owner_ref(&()).unwrap();
            r.name = name.into();
            r.kind = kind.into();
            secret(true, &[], vec![r])
        };
        assert_eq!(
            ownership(&owned_by("uid-2", "shop", "OutboundWebhook"), &h),
            Ownership::OwnedByHook
        );
        assert_eq!(
            ownership(&owned_by("uid-1", "shop", "OutboundWebhook"), &h),
            Ownership::AdoptFromDeletedHook
        );
        assert!(matches!(
            ownership(&owned_by("uid-1", "other", "OutboundWebhook"), &h),
            Ownership::Conflict(_)
        ));
        assert!(matches!(
            ownership(&owned_by("uid-1", "shop", "Deployment"), &h),
            Ownership::Conflict(_)
        ));
        let Ownership::Conflict(message) = ownership(&secret(false, &[], vec![]), &h) else {
            panic!("an unowned Secret is a conflict");
        };
        assert!(message.contains("left untouched"), "{message}");
    }

    #[test]
    fn header_secrets_must_exist_be_labelled_and_have_the_key() {
        let reference = SecretKeyRef {
            name: "creds".into(),
            key: "auth".into(),
        };
        let check = |s: Option<&Secret>| check_header_secret(s, "Authorization", &reference, "acme");
        assert_eq!(check(None).unwrap_err().0, "SecretNotFound");
        let (reason, message) = check(Some(&secret(false, &[("auth", b"x")], vec![]))).unwrap_err();
        assert_eq!(reason, "SecretNotLabelled");
        assert!(
            message.contains("header Authorization") && message.contains("kubectl label secret creds"),
            "{message}"
        );
        assert_eq!(
            check(Some(&secret(true, &[("other", b"x")], vec![]))).unwrap_err().0,
            "SecretNotFound"
        );
        assert!(check(Some(&secret(true, &[("auth", b"x")], vec![]))).is_ok());
    }

    #[test]
    fn referenced_secrets_must_exist_be_labelled_and_hold_16_to_512_bytes() {
        let reference = SecretKeyRef {
            name: "mine".into(),
            key: "token".into(),
        };
        let reason = |o: SecretOutcome| match o {
            SecretOutcome::Problem { reason, message } => (reason, message),
            other => ("ok", format!("{other:?}")),
        };
        assert_eq!(reason(check_referenced(None, &reference, "acme")).0, "SecretNotFound");
        let (r, message) = reason(check_referenced(
            Some(&secret(false, &[("token", &[b'a'; 32])], vec![])),
            &reference,
            "acme",
        ));
        assert_eq!(r, "SecretNotLabelled");
        assert!(
            message.contains("kubectl label secret mine outboundwebhooks.io/webhook-secret=true -n acme"),
            "{message}"
        );
        assert_eq!(
            reason(check_referenced(
                Some(&secret(true, &[("other", &[b'a'; 32])], vec![])),
                &reference,
                "acme"
            ))
            .0,
            "SecretNotFound"
        );
        let (r, message) = reason(check_referenced(
            Some(&secret(true, &[("token", &[b'a'; 15])], vec![])),
            &reference,
            "acme",
        ));
        assert_eq!(r, "SecretInvalid");
        assert!(
            message.contains("15 bytes") && message.contains("16 to 512"),
            "{message}"
        );
        assert_eq!(
            reason(check_referenced(
                Some(&secret(true, &[("token", &[b'a'; 513])], vec![])),
                &reference,
                "acme"
            ))
            .0,
            "SecretInvalid"
        );
        for len in [16, 512] {
            let ok = check_referenced(
                Some(&secret(true, &[("token", &vec![b'a'; len])], vec![])),
                &reference,
                "acme",
            );
            assert_eq!(ok, SecretOutcome::Referenced { name: "mine".into() });
        }
    }
}
