//! The signing secret: generating one for a hook (created once, never
//! overwritten, adopted from a deleted hook of the same name), rotating it
//! (see [`crate::controller::secrets::rotation`]), or checking the one `spec.secretRef` names.
//! Decisions are pure functions; the async functions do the API calls.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::Store,
};

use crate::controller::{
    secrets::rotation::{self, Change, Decision, PROMOTED_ANNOTATION, Phase, Requested, SecretState},
    secrets::trim::cached_with,
    status::{EventNote, SecretOutcome},
};
use crate::{
    contract::conditions::secret_ready,
    contract::resource::{
        OutboundWebhook, PROMOTE_SECRET_ANNOTATION, ROTATE_SECRET_ANNOTATION, SecretKeyRef, WEBHOOK_SECRET_LABEL,
    },
    contract::secret_values,
    contract::signing_tokens::{NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY, SigningTokens, TokenProblem},
    wire::signing::standard_webhooks_secret,
};

pub use crate::contract::signing_tokens::{STANDARD_WEBHOOKS_KEY, TOKEN_KEY};

/// Most writes one reconcile makes to rotate a Secret (an expiry, a stage
/// and a promotion, plus re-reads after conflicts).
const MAX_ROTATION_WRITES: usize = 6;

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

/// The Secret to create for a hook, labelled and controlled by it. A fresh
/// token needs no rotation: the hook's current `rotate-secret` value, if
/// any, is recorded as done.
pub fn new_secret(hook: &OutboundWebhook, token: &str) -> Secret {
    let rotated = Requested::of(hook)
        .rotate
        .map(|value| BTreeMap::from([(PROMOTED_ANNOTATION.to_string(), value.to_string())]));
    Secret {
        metadata: ObjectMeta {
            name: Some(generated_secret_name(&hook.name_any())),
            namespace: hook.namespace(),
            labels: Some(BTreeMap::from([(WEBHOOK_SECRET_LABEL.to_string(), "true".to_string())])),
            owner_references: hook.controller_owner_ref(&()).map(|r| vec![r]),
            annotations: rotated,
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
    owner.kind == "OutboundWebhook" && owner.api_version.split('/').next() == Some(crate::contract::resource::API_GROUP)
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
/// `rotation_annotated`: the hook carries `rotate-secret` or
/// `promote-secret`, which act on generated Secrets only.
pub fn check_referenced(
    secret: Option<&Secret>,
    reference: &SecretKeyRef,
    namespace: &str,
    rotation_annotated: bool,
) -> SecretOutcome {
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
    let empty = BTreeMap::new();
    let tokens = match SigningTokens::read(secret.data.as_ref().unwrap_or(&empty), &reference.key) {
        Ok(tokens) => tokens,
        Err(TokenProblem::Missing(key)) => return missing_key(name, &key),
        Err(TokenProblem::Invalid { key, problem }) => {
            return SecretOutcome::Problem {
                reason: secret_ready::SECRET_INVALID,
                message: format!("key {key:?} of Secret {name} (spec.secretRef) {problem}"),
            };
        }
    };
    SecretOutcome::Referenced {
        name: name.clone(),
        rotation: referenced_rotation_note(&tokens, name, &reference.key, rotation_annotated),
    }
}

/// What `SecretReady` says of a referenced Secret's rotation keys: the user
/// rotates it, the dispatcher honours `next-token` and `previous-token`.
fn referenced_rotation_note(
    tokens: &SigningTokens<'_>,
    name: &str,
    key: &str,
    rotation_annotated: bool,
) -> Option<String> {
    let mut notes = Vec::new();
    if tokens.next.is_some() {
        notes.push(format!(
            "key {NEXT_TOKEN_KEY} is present, so webhook-signature also carries a signature by it; once receivers accept it, move it to key {key} and the old token to key {PREVIOUS_TOKEN_KEY}"
        ));
    }
    if tokens.previous.is_some() {
        notes.push(format!(
            "key {PREVIOUS_TOKEN_KEY} is present, so webhook-signature also carries a signature by it; remove it once no receiver needs it"
        ));
    }
    if rotation_annotated {
        notes.push(format!(
            "{ROTATE_SECRET_ANNOTATION} and {PROMOTE_SECRET_ANNOTATION} act on generated Secrets only: rotate Secret {name} yourself (keys {NEXT_TOKEN_KEY} and {PREVIOUS_TOKEN_KEY})"
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
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
        let secret = match cached_with(store, &namespace, &reference.name, &[&reference.key]) {
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

/// What a generated Secret the hook owns says: usable, or the key that is
/// missing or unusable (a rotation key too).
fn generated_outcome(secret: &Secret, name: &str) -> SecretOutcome {
    let empty = BTreeMap::new();
    match SigningTokens::read(secret.data.as_ref().unwrap_or(&empty), TOKEN_KEY) {
        Ok(_) => SecretOutcome::Generated {
            name: name.to_string(),
            rotation: None,
        },
        Err(TokenProblem::Missing(key)) => missing_key(name, &key),
        Err(TokenProblem::Invalid { key, problem }) => SecretOutcome::Problem {
            reason: secret_ready::SECRET_INVALID,
            message: format!("key {key:?} of Secret {name} {problem}"),
        },
    }
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
    /// The Secret kept changing under a rotation (retried with backoff).
    #[error("Secret {namespace}/{name} kept changing while rotating its token; trying again")]
    Unsettled {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
}

/// What turns an API error about Secret `namespace/name` into a
/// [`SecretError::Api`] saying what was being done.
fn api_error(action: &'static str, namespace: &str, name: &str) -> impl FnOnce(kube::Error) -> SecretError {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    move |source| SecretError::Api {
        action,
        namespace,
        name,
        source,
    }
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
    /// The Secret as this call last saw it (created, cached, read or
    /// patched), when it is the hook's and usable: what a rotation starts from.
    pub secret: Option<Secret>,
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
    let err = |action| api_error(action, &namespace, &name);
    let existing = match cached_with(store, &namespace, &name, &[TOKEN_KEY]) {
        Some(secret) => Some((*secret).clone()),
        None => {
            let token = generate_token().map_err(SecretError::Random)?;
            match api.create(&PostParams::default(), &new_secret(hook, &token)).await {
                Ok(created) => {
                    return Ok(Ensured {
                        outcome: SecretOutcome::Generated { name, rotation: None },
                        created: true,
                        adopted: false,
                        secret: Some(created),
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
            secret: None,
        });
    };
    let outcome = match ownership(&secret, hook) {
        Ownership::OwnedByHook => generated_outcome(&secret, &name),
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
            let adopted = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err("adopting"))?;
            tracing::info!(secret = %name, %namespace, "adopted the signing secret of a deleted hook of the same name, keeping its token");
            let outcome = generated_outcome(&adopted, &name);
            return Ok(Ensured {
                secret: matches!(outcome, SecretOutcome::Generated { .. }).then_some(adopted),
                outcome,
                created: false,
                adopted: true,
            });
        }
    };
    Ok(Ensured {
        secret: matches!(outcome, SecretOutcome::Generated { .. }).then_some(secret),
        outcome,
        created: false,
        adopted: false,
    })
}

/// Where the rotation of a generated Secret stands after [`rotate_generated`].
#[derive(Debug, Default)]
pub struct Rotated {
    /// The sentence `SecretReady`'s message adds (step and next command).
    pub note: Option<String>,
    /// An Event for each change made.
    pub events: Vec<EventNote>,
    /// `promote-secret` matches nothing, so nothing was promoted.
    pub refused_promote: bool,
    /// When to look again by itself: the end of the overlap.
    pub recheck: Option<Duration>,
}

/// Takes the hook's generated Secret through the rotation steps its
/// annotations ask for: each write is a merge patch carrying the Secret's
/// resourceVersion (a compare-and-swap), and decided again on the Secret
/// the API server returns; on a conflict the Secret is read again.
pub async fn rotate_generated(
    api: &Api<Secret>,
    hook: &OutboundWebhook,
    secret: Secret,
    overlap: Duration,
) -> Result<Rotated, SecretError> {
    let namespace = hook.namespace().unwrap_or_default();
    let hook_name = hook.name_any();
    let name = secret.name_any();
    let api_error = |action| api_error(action, &namespace, &name);
    let requested = Requested::of(hook);
    let mut secret = secret;
    let mut events = Vec::new();
    for _ in 0..MAX_ROTATION_WRITES {
        let now = jiff::Timestamp::now();
        let change = match rotation::decide(requested, SecretState::of(&secret), now) {
            Decision::Steady(steady) => {
                let recheck = match steady.phase {
                    Phase::Overlap { until, .. } => {
                        Some(Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO))
                    }
                    _ => None,
                };
                return Ok(Rotated {
                    note: rotation::note(&steady, &hook_name, &namespace),
                    events,
                    refused_promote: steady.unmatched_promote.is_some(),
                    recheck,
                });
            }
            Decision::Change(change) => change,
        };
        let empty = BTreeMap::new();
        let Ok(tokens) = SigningTokens::read(secret.data.as_ref().unwrap_or(&empty), TOKEN_KEY) else {
            // Reported as SecretInvalid by generated_outcome; nothing to rotate.
            return Ok(Rotated::default());
        };
        let resource_version = secret.resource_version().unwrap_or_default();
        let until = rotation::overlap_end(now, overlap);
        let patch = match change {
            Change::Stage { rotate, .. } => {
                let token = generate_token().map_err(SecretError::Random)?;
                Some(rotation::stage_patch(&resource_version, rotate, &token))
            }
            Change::Promote { rotate } => rotation::promote_patch(&resource_version, rotate, &tokens, until),
            Change::ExpirePrevious => Some(rotation::expire_patch(&resource_version)),
            Change::Cancel { .. } => Some(rotation::cancel_patch(&resource_version)),
        };
        let note = rotation::event(&change, &name, &hook_name, &namespace, until);
        let written = match patch {
            None => None,
            Some(patch) => match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(written) => Some(written),
                Err(kube::Error::Api(e)) if e.code == 409 => None,
                Err(e) => return Err(api_error("rotating the token of")(e)),
            },
        };
        secret = match written {
            Some(written) => {
                tracing::info!(hook = %hook_name, %namespace, secret = %name, step = %note.reason, "signing secret rotation step");
                events.push(note);
                written
            }
            // Changed since it was read: read it again and decide afresh.
            None => match api.get_opt(&name).await.map_err(api_error("reading"))? {
                Some(fresh) => fresh,
                None => return Ok(Rotated::default()),
            },
        };
    }
    Err(SecretError::Unsettled { namespace, name })
}

/// What the hook's generated Secret says while the hook holds no slot:
/// observed from the cache only; nothing is created or changed.
pub fn observe_generated(store: &Store<Secret>, hook: &OutboundWebhook) -> SecretOutcome {
    let namespace = hook.namespace().unwrap_or_default();
    let name = generated_secret_name(&hook.name_any());
    match cached_with(store, &namespace, &name, &[]) {
        Some(secret) if ownership(&secret, hook) == Ownership::OwnedByHook => generated_outcome(&secret, &name),
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
    let requested = Requested::of(hook);
    let annotated = requested.rotate.is_some() || requested.promote.is_some();
    if let Some(secret) = cached_with(store, &namespace, &reference.name, &[&reference.key]) {
        return Ok(check_referenced(Some(&secret), reference, &namespace, annotated));
    }
    let secret = api.get_opt(&reference.name).await.map_err(|source| SecretError::Api {
        action: "reading",
        namespace: namespace.clone(),
        name: reference.name.clone(),
        source,
    })?;
    Ok(check_referenced(secret.as_ref(), reference, &namespace, annotated))
}

#[cfg(test)]
mod tests;
