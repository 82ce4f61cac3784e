//! The signed request headers of one attempt, and the Secret values they
//! need (signing tokens, header values) from the dispatcher's cache.
//!
//! Every attempt is signed when it is sent, from the Secret as cached at that
//! moment, so a retry after a promotion already uses the new token.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::dispatcher::{
    view::cache::{Cache, Cached},
    view::cached_objects::{CachedHook, CachedSecret},
};
use crate::store::Task;
use crate::{
    contract::resource::{Header, HeaderValueSource, SecretKeyRef, WEBHOOK_SECRET_LABEL},
    contract::secret_values::{self, ValueProblem},
    contract::signing_tokens::SigningTokens,
    wire::signing,
    wire::trace_context::{AttemptTrace, TRACEPARENT, TRACESTATE},
};

/// The event name (Kustomer).
pub const KUSTOMER_EVENT: &str = "x-kustomer-webhook-event";
/// Lowercase hex HMAC-SHA256 of the body (Kustomer).
pub const KUSTOMER_SIGNATURE: &str = "x-kustomer-webhook-signature";
/// The event id, stable across retries (Standard Webhooks).
pub const WEBHOOK_ID: &str = "webhook-id";
/// Unix seconds of this attempt (Standard Webhooks).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` (Standard Webhooks),
/// one per valid token, space-separated.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// One value of a cached Secret, if `usable` accepts it (as it
/// would be used).
pub fn secret_value(
    secrets: &Cache<CachedSecret>,
    namespace: &str,
    name: &str,
    key: &str,
    usable: fn(&[u8]) -> Result<&str, ValueProblem>,
) -> Option<String> {
    let secret = secrets.get(namespace, name)?;
    usable(secret.get(key)?).ok().map(str::to_string)
}

/// The hook's signing Secret from the cache, if its tokens are usable
/// (a shared pointer into the cache: nothing is copied).
pub fn signing_secret_of(secrets: &Cache<CachedSecret>, hook: &CachedHook) -> Option<Arc<CachedSecret>> {
    let (name, key) = hook.signing_secret()?;
    let namespace = hook.namespace();
    let secret = secrets.get(namespace, name)?;
    secret.tokens(key).ok()?;
    Some(secret)
}

/// The value of header `header` from its Secret `from` in the cache; the
/// error names what is missing or unusable (never a value).
fn header_secret_value(
    secrets: &Cache<CachedSecret>,
    namespace: &str,
    header: &Header,
    from: &HeaderValueSource,
) -> Result<String, String> {
    let SecretKeyRef { name, key } = &from.secret_key_ref;
    secret_value(secrets, namespace, name, key, secret_values::header_value).ok_or_else(|| {
        format!(
            "header {} needs key {key} of Secret {namespace}/{name} (labelled {WEBHOOK_SECRET_LABEL}=true), which is missing or unusable",
            header.name
        )
    })
}

/// Why a header the hook takes from a Secret cannot be built now (the
/// Secret or its key not in the cache, or its value unusable); `None` when
/// every one can. Such a hook's events wait, like for its signing Secret
/// (docs/src/guarantees.md#hooks-whose-conditions-lag-wait): an attempt
/// without the header would be a failure the receiver never saw, and
/// enough of them would turn the hook off.
pub fn header_secret_problem(secrets: &Cache<CachedSecret>, hook: &CachedHook) -> Option<String> {
    hook.spec.headers.iter().find_map(|h| match (&h.value, &h.value_from) {
        (None, Some(from)) => header_secret_value(secrets, hook.namespace(), h, from).err(),
        _ => None,
    })
}

/// A value sent once (an id, a timestamp, a signature): marked so HTTP/2's
/// header compression (HPACK) does not index it. Indexed, each request's
/// unique values went into the connection's table, evicted the previous
/// ones and were compared with them on the next request: HPACK was 7.0%
/// of the dispatcher's profile in the fleet benchmark, 3.5% without it.
/// HTTP/1.1 ignores the mark.
fn once(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The tokens to sign with now: from the cache as it is at send time, else
/// from `fallback` (the Secret cached when the attempt was scheduled, in case
/// it left the cache since).
fn tokens_now<'a>(
    current: Option<&'a CachedSecret>,
    fallback: &'a CachedSecret,
    key: &str,
) -> Option<SigningTokens<'a>> {
    current
        .and_then(|s| s.tokens(key).ok())
        .or_else(|| fallback.tokens(key).ok())
}

/// Headers of one attempt, `trace` its W3C trace context; errors name
/// what is missing (never a value).
pub fn request_headers(
    secrets: &Cache<CachedSecret>,
    hook: &CachedHook,
    task: &Task,
    signing_fallback: &CachedSecret,
    trace: &AttemptTrace,
) -> Result<HeaderMap, String> {
    let ns = hook.namespace();
    let (secret_name, key) = hook.signing_secret().ok_or("the hook names no signing Secret yet")?;
    let current = secrets.get(ns, secret_name);
    let tokens = tokens_now(current.as_deref(), signing_fallback, key)
        .ok_or_else(|| format!("the signing Secret {ns}/{secret_name} has no usable key {key}"))?;
    let timestamp = jiff::Timestamp::now().as_second();
    let mut headers = HeaderMap::with_capacity(hook.spec.headers.len() + 8);
    for h in &hook.spec.headers {
        let value = match (&h.value, &h.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => header_secret_value(secrets, ns, h, from)?,
            (None, None) => continue,
        };
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("header name {:?} is invalid", h.name))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of header {} is not a valid header value", h.name))?;
        headers.insert(name, value);
    }
    let sig = |s: String| once(HeaderValue::from_str(&s).expect("hex and base64 are valid header values"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        KUSTOMER_EVENT,
        HeaderValue::from_str(&task.event).map_err(|_| "bad event name".to_string())?,
    );
    headers.insert(
        KUSTOMER_SIGNATURE,
        sig(signing::kustomer_signature(tokens.token, &task.body)),
    );
    headers.insert(
        WEBHOOK_ID,
        once(HeaderValue::from_str(&task.event_id).map_err(|_| "event id is not a valid header value".to_string())?),
    );
    headers.insert(WEBHOOK_TIMESTAMP, sig(timestamp.to_string()));
    // After the hook's own headers: the trace context is the event's, not
    // something a hook's spec can fake.
    headers.insert(TRACEPARENT, sig(trace.header()));
    if let Some(state) = task.trace.as_ref().and_then(|t| t.tracestate.as_deref())
        && let Ok(value) = HeaderValue::from_str(state)
    {
        headers.insert(TRACESTATE, once(value));
    }
    headers.insert(
        WEBHOOK_SIGNATURE,
        sig(signing::standard_webhooks_signatures(
            tokens.standard_webhooks_tokens(),
            &task.event_id,
            timestamp,
            &task.body,
        )),
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{ByteString, api::core::v1::Secret};

    use super::*;
    use crate::contract::signing_tokens::{NEXT_TOKEN_KEY, TOKEN_KEY};

    fn secret(entries: &[(&str, &str)]) -> CachedSecret {
        CachedSecret::new(Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn attempts_sign_with_the_secret_as_cached_at_send_time_else_the_one_scheduled_with() {
        let (old, new) = ("o".repeat(64), "n".repeat(64));
        let scheduled = secret(&[(TOKEN_KEY, &old), (NEXT_TOKEN_KEY, &new)]);
        let promoted = secret(&[(TOKEN_KEY, &new)]);
        let now = tokens_now(Some(&promoted), &scheduled, TOKEN_KEY).unwrap();
        assert_eq!((now.token, now.next), (new.as_str(), None));
        let gone = tokens_now(None, &scheduled, TOKEN_KEY).unwrap();
        assert_eq!((gone.token, gone.next), (old.as_str(), Some(new.as_str())));
        let broken = secret(&[(TOKEN_KEY, "short")]);
        assert_eq!(tokens_now(Some(&broken), &scheduled, TOKEN_KEY).unwrap().token, old);
        assert_eq!(tokens_now(Some(&broken), &broken, TOKEN_KEY), None);
    }
}
