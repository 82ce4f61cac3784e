//! The signed request headers of one attempt, and the Secret values they
//! need (signing token, header values) from the dispatcher's cache.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{routing::signing_secret, store::Task};
use crate::{
    resource::{OutboundWebhook, WEBHOOK_SECRET_LABEL},
    secret_values::{self, ValueProblem},
    signing,
};

/// The event name (Kustomer).
pub const KUSTOMER_EVENT: &str = "x-kustomer-webhook-event";
/// Lowercase hex HMAC-SHA256 of the body (Kustomer).
pub const KUSTOMER_SIGNATURE: &str = "x-kustomer-webhook-signature";
/// The event id, stable across retries (Standard Webhooks).
pub const WEBHOOK_ID: &str = "webhook-id";
/// Unix seconds of this attempt (Standard Webhooks).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` (Standard Webhooks).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// One value of a cached Secret, if `usable` accepts it (as it
/// would be used).
pub fn secret_value(
    secrets: &Store<Secret>,
    namespace: &str,
    name: &str,
    key: &str,
    usable: fn(&[u8]) -> Result<&str, ValueProblem>,
) -> Option<String> {
    let secret = secrets.get(&ObjectRef::new(name).within(namespace))?;
    let bytes = secret.data.as_ref()?.get(key)?;
    usable(&bytes.0).ok().map(str::to_string)
}

/// The signing token of a hook from the Secret cache, if usable.
pub fn token_of(secrets: &Store<Secret>, hook: &OutboundWebhook) -> Option<String> {
    let (name, key) = signing_secret(hook)?;
    secret_value(
        secrets,
        &hook.namespace().unwrap_or_default(),
        &name,
        &key,
        secret_values::signing_token,
    )
}

/// Headers of one attempt; errors name what is missing (never a value).
pub fn request_headers(
    secrets: &Store<Secret>,
    hook: &OutboundWebhook,
    task: &Task,
    token: &str,
) -> Result<HeaderMap, String> {
    let ns = hook.namespace().unwrap_or_default();
    let timestamp = jiff::Timestamp::now().as_second();
    let mut headers = HeaderMap::new();
    for h in &hook.spec.headers {
        let value = match (&h.value, &h.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => secret_value(
                secrets,
                &ns,
                &from.secret_key_ref.name,
                &from.secret_key_ref.key,
                secret_values::header_value,
            )
            .ok_or_else(|| {
                format!(
                    "header {} needs key {} of Secret {ns}/{} (labelled {WEBHOOK_SECRET_LABEL}=true), which is missing or unusable",
                    h.name, from.secret_key_ref.key, from.secret_key_ref.name
                )
            })?,
            (None, None) => continue,
        };
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("header name {:?} is invalid", h.name))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of header {} is not a valid header value", h.name))?;
        headers.insert(name, value);
    }
    let sig = |s: String| HeaderValue::from_str(&s).expect("hex and base64 are valid header values");
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        KUSTOMER_EVENT,
        HeaderValue::from_str(&task.event).map_err(|_| "bad event name".to_string())?,
    );
    headers.insert(KUSTOMER_SIGNATURE, sig(signing::kustomer_signature(token, &task.body)));
    headers.insert(
        WEBHOOK_ID,
        HeaderValue::from_str(&task.event_id).map_err(|_| "event id is not a valid header value".to_string())?,
    );
    headers.insert(WEBHOOK_TIMESTAMP, sig(timestamp.to_string()));
    headers.insert(
        WEBHOOK_SIGNATURE,
        sig(signing::standard_webhooks_signature(
            token,
            &task.event_id,
            timestamp,
            &task.body,
        )),
    );
    Ok(headers)
}
