//! Hooks as tests write and read them: manifests, the controller's part
//! played by a test (signing Secret and conditions, under the controller's
//! field manager), and readers of conditions, Secrets and tokens.

use std::{collections::BTreeMap, time::Duration};

use kube::Resource as _;
use outbound_webhooks::{
    OutboundWebhook,
    contract::conditions::{self, accepted, ready, secret_ready},
    contract::resource::WEBHOOK_SECRET_LABEL,
    controller::{
        self,
        secrets::secret::{STANDARD_WEBHOOKS_KEY, TOKEN_KEY, generated_secret_name},
    },
};
use serde_json::{Value, json};

use super::{
    CREATE,
    kubectl::{apply_ok, apply_status, get_json, jsonpath, kubectl_ok, secret_data},
    wait_for,
};

/// How long the controller may take to reach a verdict in these tests.
pub const SOON: Duration = Duration::from_secs(15);

/// `outboundwebhooks.io/v1alpha1`, from the Rust type.
pub fn api_version() -> String {
    OutboundWebhook::api_version(&()).into_owned()
}

/// An OutboundWebhook manifest with exactly this spec.
pub fn hook_with_spec(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api_version(),
        "kind": OutboundWebhook::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// An OutboundWebhook manifest subscribed to `events`, with extra spec
/// fields (which replace the defaults, `events` too).
pub fn hook_manifest(name: &str, url: &str, events: &[&str], extra_spec: Value) -> Value {
    let mut spec = json!({"url": url, "events": events});
    if let Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    hook_with_spec(name, spec)
}

/// An OutboundWebhook manifest subscribed to [`CREATE`], as text.
pub fn hook_yaml(name: &str, url: &str, extra_spec: Value) -> String {
    hook_manifest(name, url, &[CREATE], extra_spec).to_string()
}

/// Applies a hook with an https URL and no extras.
pub fn apply_hook(namespace: &str, name: &str) {
    apply_ok(namespace, &hook_yaml(name, "https://hooks.example.com/in", json!({})));
}

/// A Secret labelled for the operator (the label the controller and the
/// dispatcher watch), with `string_data`.
pub fn labelled_secret(name: &str, string_data: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {WEBHOOK_SECRET_LABEL: "true"}},
        "stringData": string_data,
    })
    .to_string()
}

/// `kubectl label secret NAME outboundwebhooks.io/webhook-secret=true -n NS`,
/// the command the controller's messages quote.
pub fn label_secret_command(name: &str, namespace: &str) -> String {
    format!("kubectl label secret {name} {WEBHOOK_SECRET_LABEL}=true -n {namespace}")
}

/// A hook set up as the controller would leave it.
#[derive(Clone, Debug)]
pub struct TestHook {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub token: String,
}

impl TestHook {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// The Standard Webhooks secret of its token.
    pub fn whsec(&self) -> String {
        outbound_webhooks::wire::signing::standard_webhooks_secret(&self.token)
    }
    /// The hook as JSON.
    pub fn get(&self) -> Value {
        get_json(&self.namespace, "owh", &self.name).expect("the hook exists")
    }
    /// `status.delivery`, or null.
    pub fn delivery(&self) -> Value {
        self.get()["status"]["delivery"].clone()
    }
    /// Waits until `status.delivery` satisfies `check`; returns it.
    pub fn wait_delivery(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, Duration::from_secs(30), || {
            let delivery = self.delivery();
            if check(&delivery) {
                Ok(delivery)
            } else {
                Err(delivery.to_string())
            }
        })
    }
}

/// 64 lowercase hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

/// Creates a hook subscribed to `events` with extra spec fields, its signing
/// Secret, and accepted conditions, as the controller would.
pub fn create_hook(namespace: &str, name: &str, url: &str, events: &[&str], extra_spec: Value) -> TestHook {
    apply_ok(namespace, &hook_manifest(name, url, events, extra_spec).to_string());
    let token = new_token();
    let standard_webhooks = outbound_webhooks::wire::signing::standard_webhooks_secret(&token);
    apply_ok(
        namespace,
        &labelled_secret(
            &generated_secret_name(name),
            json!({TOKEN_KEY: token, STANDARD_WEBHOOKS_KEY: standard_webhooks}),
        ),
    );
    accept(namespace, name, true);
    TestHook {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid(namespace, name),
        token,
    }
}

/// Writes the controller's conditions for the hook's current generation
/// (Accepted = `accepted`, SecretReady True) under the controller's field manager.
pub fn accept(namespace: &str, name: &str, accepted: bool) {
    write_conditions(namespace, name, generation(namespace, name), accepted);
}

/// Writes conditions for a given generation (may be stale on purpose).
pub fn write_conditions(namespace: &str, name: &str, generation: i64, accepted: bool) {
    write_controller_status(namespace, name, generation, accepted, None);
}

/// Writes the conditions the controller writes when a hook's signing
/// Secret is gone (Accepted, SecretReady False / SecretNotFound).
pub fn write_secret_not_found(namespace: &str, name: &str) {
    let generation = generation(namespace, name);
    let conditions = [
        (conditions::ACCEPTED, "True", accepted::ACCEPTED),
        (conditions::SECRET_READY, "False", secret_ready::SECRET_NOT_FOUND),
        (conditions::READY, "False", ready::SECRET_NOT_READY),
    ];
    apply_controller_status(namespace, name, generation, &conditions, None);
}

/// Writes the controller's status fields, including `specDisabledGeneration`
/// when given (the controller records it when it sees `enabled: false`).
pub fn write_controller_status(
    namespace: &str,
    name: &str,
    generation: i64,
    is_accepted: bool,
    spec_disabled_generation: Option<i64>,
) {
    let (accepted_condition, ready_condition) = if is_accepted {
        (
            (conditions::ACCEPTED, "True", accepted::ACCEPTED),
            (conditions::READY, "True", ready::ACTIVE),
        )
    } else {
        (
            (conditions::ACCEPTED, "False", accepted::ORG_LIMIT_EXCEEDED),
            (conditions::READY, "False", ready::NOT_ACCEPTED),
        )
    };
    let conditions = [
        accepted_condition,
        (conditions::SECRET_READY, "True", secret_ready::SECRET_GENERATED),
        ready_condition,
    ];
    apply_controller_status(namespace, name, generation, &conditions, spec_disabled_generation);
}

/// Applies the controller's status: `conditions` as (type, status, reason)
/// for `generation`, under the controller's field manager.
fn apply_controller_status(
    namespace: &str,
    name: &str,
    generation: i64,
    conditions: &[(&str, &str, &str)],
    spec_disabled_generation: Option<i64>,
) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|(type_, status, reason)| {
            json!({"type": type_, "status": status, "reason": reason, "message": "set by the test",
                   "observedGeneration": generation, "lastTransitionTime": now})
        })
        .collect();
    apply_status(
        controller::reconcile::FIELD_MANAGER,
        true,
        &json!({
            "apiVersion": api_version(),
            "kind": OutboundWebhook::kind(&()),
            "metadata": {"name": name, "namespace": namespace},
            "status": {
                "observedGeneration": generation,
                "secretName": generated_secret_name(name),
                "specDisabledGeneration": spec_disabled_generation,
                "conditions": conditions,
            },
        }),
    );
}

/// Writes `status.delivery` under the dispatcher's field manager, as the
/// dispatcher records failures and turn-offs.
pub fn write_delivery_status(namespace: &str, name: &str, delivery: Value) {
    apply_status(
        outbound_webhooks::dispatcher::health::status::FIELD_MANAGER,
        false,
        &json!({
            "apiVersion": api_version(),
            "kind": OutboundWebhook::kind(&()),
            "metadata": {"name": name, "namespace": namespace},
            "status": {"delivery": delivery},
        }),
    );
}

/// The hook's UID.
pub fn uid(namespace: &str, hook: &str) -> String {
    jsonpath(namespace, "owh", hook, "{.metadata.uid}")
}

/// The hook's `metadata.generation`.
pub fn generation(namespace: &str, hook: &str) -> i64 {
    jsonpath(namespace, "owh", hook, "{.metadata.generation}")
        .trim()
        .parse()
        .expect("generation is a number")
}

/// A condition of a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

/// The hook's condition of the given type.
pub fn condition(namespace: &str, hook: &str, type_: &str) -> Option<Cond> {
    let json = get_json(namespace, "owh", hook)?;
    condition_of(&json, type_)
}

/// The condition of the given type in a hook's JSON.
pub fn condition_of(json: &Value, type_: &str) -> Option<Cond> {
    json["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| Cond {
            status: c["status"].as_str().unwrap_or_default().to_string(),
            reason: c["reason"].as_str().unwrap_or_default().to_string(),
            message: c["message"].as_str().unwrap_or_default().to_string(),
            observed_generation: c["observedGeneration"].as_i64(),
            last_transition_time: c["lastTransitionTime"].as_str().unwrap_or_default().to_string(),
        })
}

/// Waits until the hook's condition has this status and reason for its
/// current generation; returns it.
pub fn wait_condition(namespace: &str, hook: &str, type_: &str, status: &str, reason: &str, timeout: Duration) -> Cond {
    wait_for(
        &format!("{namespace}/{hook} {type_}={status}/{reason}"),
        timeout,
        || {
            let json = get_json(namespace, "owh", hook).ok_or("no such hook")?;
            let generation = json["metadata"]["generation"].as_i64();
            match condition_of(&json, type_) {
                Some(c) if c.status == status && c.reason == reason && c.observed_generation == generation => Ok(c),
                other => Err(format!("{other:?} (generation {generation:?})")),
            }
        },
    )
}

/// Waits until the hook is `Ready=True/Active` for its current generation.
pub fn wait_active(namespace: &str, hook: &str, timeout: Duration) -> Cond {
    wait_condition(namespace, hook, conditions::READY, "True", ready::ACTIVE, timeout)
}

/// Waits until the hook is `Ready=False` for this reason, current generation.
pub fn wait_not_ready(namespace: &str, hook: &str, reason: &str, timeout: Duration) -> Cond {
    wait_condition(namespace, hook, conditions::READY, "False", reason, timeout)
}

/// The data of a hook's generated Secret, or None when it does not exist.
pub fn generated_secret(namespace: &str, hook: &str) -> Option<BTreeMap<String, String>> {
    secret_data(namespace, &generated_secret_name(hook))
}

/// The token of a hook's generated Secret, waiting for it to exist.
pub fn wait_token(namespace: &str, hook: &str, timeout: Duration) -> String {
    wait_for(&format!("the token of {namespace}/{hook}"), timeout, || {
        generated_secret(namespace, hook)
            .and_then(|d| d.get(TOKEN_KEY).cloned())
            .ok_or_else(|| "no Secret yet".to_string())
    })
}

/// Fails unless the hook's generated Secret (waited for) holds `token`.
pub fn assert_token_kept(namespace: &str, hook: &str, token: &str, message: &str) {
    assert_eq!(wait_token(namespace, hook, SOON), token, "{message}");
}

/// One hook's Accepted verdict in a namespace listing.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// `metadata.creationTimestamp`.
    pub created: String,
    /// Its Accepted condition.
    pub accepted: Option<Cond>,
    /// Whether that condition is for the current generation.
    pub current: bool,
}

/// Every hook of a namespace: name -> its Accepted verdict.
pub fn accepted_conditions(namespace: &str) -> BTreeMap<String, Verdict> {
    let list: Value = serde_json::from_str(&kubectl_ok(&["get", "owh", "-n", namespace, "-o", "json"])).expect("JSON");
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|hook| {
                    let accepted = condition_of(hook, conditions::ACCEPTED);
                    let current = accepted
                        .as_ref()
                        .is_some_and(|c| c.observed_generation == hook["metadata"]["generation"].as_i64());
                    let name = hook["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    let created = hook["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    (
                        name,
                        Verdict {
                            created,
                            accepted,
                            current,
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
