//! Seeding through kube: namespaces, and hooks with what the controller
//! would have given them (their labelled Secret and a Ready status), so the
//! dispatcher scenarios run without a controller reconciling under them.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
};
use outbound_webhooks::{
    OutboundWebhook,
    contract::conditions,
    contract::resource::WEBHOOK_SECRET_LABEL,
    controller::{reconcile, secrets::secret},
    wire::signing,
};
use serde_json::json;

use crate::{EVENT, Error, TOKEN};

/// The field manager of what the bench applies in its own name.
const FIELD_MANAGER: &str = "outbound-webhooks-bench";

/// Creates the hook, its labelled Secret and the controller's status
/// (Accepted, SecretReady, Ready for the current generation).
async fn seed_hook(kube: &Client, hook: &SeedHook) -> Result<(), Error> {
    let (ns, name, url) = (hook.namespace.as_str(), hook.name.as_str(), hook.url.as_str());
    let mut spec = json!({"url": url, "events": [EVENT]});
    if let Some(filter) = &hook.filter {
        spec["filter"] = json!(filter);
    }
    if let Some(serde_json::Value::Object(extra)) = &hook.extra_spec {
        for (k, v) in extra {
            spec[k] = v.clone();
        }
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let hooks: Api<OutboundWebhook> = Api::namespaced(kube.clone(), ns);
    let api_version = OutboundWebhook::api_version(&());
    let kind = OutboundWebhook::kind(&());
    let secret_name = secret::generated_secret_name(name);
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), ns);
    // The hook and its Secret at once: the status write waits for the hook only.
    let (hook, _) = futures::try_join!(
        async {
            hooks
                .patch(
                    name,
                    &apply,
                    &Patch::Apply(json!({
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": {"name": name, "namespace": ns},
                        "spec": spec,
                    })),
                )
                .await
                .map_err(|e| Error::from(format!("applying hook {ns}/{name}: {e}")))
        },
        async {
            secrets
                .patch(
                    &secret_name,
                    &apply,
                    &Patch::Apply(json!({
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": secret_name, "namespace": ns,
                                     "labels": {WEBHOOK_SECRET_LABEL: "true"}},
                        "stringData": {secret::TOKEN_KEY: TOKEN,
                                       secret::STANDARD_WEBHOOKS_KEY: signing::standard_webhooks_secret(TOKEN)},
                    })),
                )
                .await
                .map_err(|e| Error::from(format!("applying the Secret of {ns}/{name}: {e}")))
        },
    )?;
    let generation = hook.metadata.generation.unwrap_or(1);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cond = |type_: &str, reason: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": "seeded by the benchmark",
               "observedGeneration": generation, "lastTransitionTime": now})
    };
    // In the controller's name, so the fields are the ones it would own.
    hooks
        .patch_status(
            name,
            &PatchParams::apply(reconcile::FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": ns},
                "status": {
                    "observedGeneration": generation,
                    "secretName": secret_name,
                    "conditions": [
                        cond(conditions::ACCEPTED, conditions::accepted::ACCEPTED),
                        cond(conditions::SECRET_READY, conditions::secret_ready::SECRET_GENERATED),
                        cond(conditions::READY, conditions::ready::ACTIVE),
                    ],
                },
            })),
        )
        .await
        .map_err(|e| format!("writing the status of {ns}/{name}: {e}"))?;
    Ok(())
}

/// One hook to seed.
pub struct SeedHook {
    /// Its namespace (the org).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where it delivers.
    pub url: String,
    /// Its `spec.filter`, if any.
    pub filter: Option<String>,
    /// More spec fields (a JSON object), if any.
    pub extra_spec: Option<serde_json::Value>,
}

impl SeedHook {
    /// A hook `namespace/name` delivering to `url`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, url: &str) -> SeedHook {
        SeedHook {
            namespace: namespace.into(),
            name: name.into(),
            url: url.to_string(),
            filter: None,
            extra_spec: None,
        }
    }

    /// The same hook with more spec fields (`extra`, a JSON object).
    pub fn with_spec(self, extra: &str) -> SeedHook {
        SeedHook {
            extra_spec: serde_json::from_str(extra).ok(),
            ..self
        }
    }

    /// The same hook with `spec.filter`.
    pub fn with_filter(self, filter: &str) -> SeedHook {
        SeedHook {
            filter: Some(filter.to_string()),
            ..self
        }
    }
}

/// Seeds `hooks` and their namespaces with `concurrency` requests in flight.
pub async fn seed(kube: &Client, hooks: Vec<SeedHook>, concurrency: usize) -> Result<(), Error> {
    let namespaces: Vec<String> = {
        let mut n: Vec<String> = hooks.iter().map(|h| h.namespace.clone()).collect();
        n.dedup();
        n
    };
    apply_namespaces(kube, namespaces, concurrency).await?;
    futures::stream::iter(hooks)
        .map(|h| async move { seed_hook(kube, &h).await })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates (or leaves alone) `namespaces`, `concurrency` requests in flight.
pub async fn apply_namespaces(kube: &Client, namespaces: Vec<String>, concurrency: usize) -> Result<(), Error> {
    let ns_api: Api<Namespace> = Api::all(kube.clone());
    futures::stream::iter(namespaces)
        .map(|ns| {
            let ns_api = ns_api.clone();
            async move {
                ns_api
                    .patch(
                        &ns,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from(format!("applying namespace {ns}: {e}")))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
