//! The reconciler of one OutboundWebhook: decides its slot from the
//! namespace's hooks in the cache, makes sure its signing secret exists,
//! writes the controller's part of its status when that changes, and
//! queues Events for the changes people care about (published off the
//! reconcile path, see [`super::events`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};

use super::{
    acceptance::{self, Candidate},
    delivering::events::DeliveringEvents,
    events::EventQueue,
    hook_index::HookIndex,
    metrics::Metrics,
    secrets::secret::{self, SecretError},
    status::{self, AcceptanceOutcome, ControllerStatus, EventNote, SecretOutcome, Severity},
};
use crate::{
    contract::conditions::secret_ready,
    contract::resource::{MAX_WEBHOOKS_ANNOTATION, OutboundWebhook},
};

/// Field manager of the controller's status writes (the dispatcher uses
/// `outbound-webhooks-dispatcher` for `status.delivery`).
pub const FIELD_MANAGER: &str = "outbound-webhooks-controller";

/// Retry interval for problems the controller cannot watch for (a referenced
/// Secret created without the label, a conflicting unlabelled Secret removed).
const PROBLEM_RECHECK: Duration = Duration::from_secs(5);
/// How long a status this process wrote outranks the cache: far longer
/// than the cache takes to see the write.
const TRUST_WRITTEN: Duration = Duration::from_secs(30);
/// Periodic re-check of a healthy hook, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(15 * 60);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Every hook in scope, by namespace.
    pub hooks: HookIndex,
    /// Cache of Secrets labelled `outboundwebhooks.io/webhook-secret=true`.
    pub secrets: Store<Secret>,
    /// Cache of Namespaces (for the limit annotation).
    pub namespaces: Store<Namespace>,
    /// `--max-webhooks-per-namespace`.
    pub default_limit: usize,
    /// `--allow-http`.
    pub allow_http: bool,
    /// `--rotation-overlap`: how long a rotated-out token still signs.
    pub rotation_overlap: Duration,
    /// Where Kubernetes Events go to be published.
    pub events: EventQueue,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The status this process last wrote per hook UID, and when. This
    /// replica is the only writer while it leads, so a recent entry is never
    /// older than the cache; it keeps a lagging cache from causing duplicate
    /// writes and Events.
    pub written: Arc<Mutex<HashMap<String, (ControllerStatus, Instant)>>>,
    /// Consecutive failures per hook UID, for the retry backoff.
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
    /// The Failing/Recovered Events published per hook, to pace them.
    pub delivering_events: DeliveringEvents,
    /// Whether each filter compiles (acceptance reads it for every peer).
    pub filters: acceptance::FilterVerdicts,
}

/// A reconcile failed in a way worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Handling the signing secret failed.
    #[error("signing secret of {namespace}/{name}: {source}")]
    Secret {
        /// Namespace of the hook.
        namespace: String,
        /// Name of the hook.
        name: String,
        /// What failed.
        source: SecretError,
    },
    /// Writing the status failed.
    #[error("patching status of {namespace}/{name}: {source}")]
    Status {
        /// Namespace of the hook.
        namespace: String,
        /// Name of the hook.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

impl Context {
    /// The controller-owned status this process knows for the hook: what it
    /// wrote in the last [`TRUST_WRITTEN`], else what the cache holds (so a
    /// status someone else changed is repaired on a later pass).
    fn known_status(&self, hook: &OutboundWebhook) -> ControllerStatus {
        let uid = hook.uid().unwrap_or_default();
        let written = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .filter(|(_, at)| at.elapsed() < TRUST_WRITTEN)
            .map(|(status, _)| status.clone());
        written.unwrap_or_else(|| ControllerStatus::from_status(hook.status.as_ref()))
    }

    /// Whether the hook may hold a slot whatever the limit: its destination
    /// and its filter.
    fn eligible(&self, hook: &OutboundWebhook) -> Result<(), acceptance::Ineligible> {
        acceptance::check_destination(&hook.spec.url, self.allow_http)?;
        self.filters.check(hook.spec.filter.as_deref())
    }

    /// Where the hook stands under its namespace's limit. Computed from the
    /// cache alone: no API call, whatever the number of hooks.
    fn acceptance(&self, hook: &OutboundWebhook) -> AcceptanceOutcome {
        if let Err(ineligible) = self.eligible(hook) {
            return AcceptanceOutcome::Ineligible(ineligible);
        }
        let namespace = hook.namespace().unwrap_or_default();
        let annotation = self
            .namespaces
            .get(&ObjectRef::new(&namespace))
            .and_then(|ns| ns.annotations().get(MAX_WEBHOOKS_ANNOTATION).cloned());
        let limit = acceptance::effective_limit(annotation.as_deref(), self.default_limit);
        let mut peers = self.hooks.in_namespace(&namespace);
        peers.retain(|h| h.metadata.deletion_timestamp.is_none() && self.eligible(h).is_ok());
        let known: Vec<(String, Option<i64>, bool)> = peers
            .iter()
            .map(|h| {
                (
                    h.name_any(),
                    h.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
                    self.known_status(h).is_accepted(),
                )
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = known
            .iter()
            .map(|(name, created, accepted)| Candidate {
                name,
                created: *created,
                accepted: *accepted,
            })
            .collect();
        let accepted = acceptance::accepted_set(&candidates, limit.value);
        if accepted.contains(hook.name_any().as_str()) {
            AcceptanceOutcome::Accepted {
                limit: limit.value,
                limit_problem: limit.problem,
            }
        } else {
            AcceptanceOutcome::OrgLimitExceeded {
                limit: limit.value,
                accepted: accepted.len(),
                limit_problem: limit.problem,
            }
        }
    }
}

/// Reconciles one hook (the entry point given to the kube-runtime Controller).
pub async fn reconcile(hook: Arc<OutboundWebhook>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let result = reconcile_hook(&hook, &ctx).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hook.uid().unwrap_or_default());
    }
    result
}

async fn reconcile_hook(hook: &OutboundWebhook, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = hook.name_any();
    let namespace = hook.namespace().unwrap_or_default();
    if hook.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let acceptance = ctx.acceptance(hook);
    let is_accepted = matches!(acceptance, AcceptanceOutcome::Accepted { .. });
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_error = |source| ReconcileError::Secret {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };

    let mut secret_events = Vec::new();
    let mut rotation = secret::Rotated::default();
    let secret = if let Some(reference) = &hook.spec.secret_ref {
        secret::check_reference(&secrets, &ctx.secrets, hook, reference)
            .await
            .map_err(secret_error)?
    } else if is_accepted {
        let ensured = secret::ensure_generated(&secrets, &ctx.secrets, hook)
            .await
            .map_err(secret_error)?;
        let secret_name = secret::generated_secret_name(&name);
        if ensured.created {
            tracing::info!(hook = %name, %namespace, secret = %secret_name, "generated the signing secret");
            secret_events.push(EventNote {
                severity: Severity::Normal,
                reason: "SecretGenerated".into(),
                note: format!("generated the signing secret {secret_name} (keys token and standard-webhooks-secret)"),
            });
        }
        if ensured.adopted {
            secret_events.push(EventNote {
                severity: Severity::Normal,
                reason: "SecretAdopted".into(),
                note: format!("adopted Secret {secret_name} of a deleted hook of the same name, keeping its token"),
            });
        }
        match (ensured.outcome, ensured.secret) {
            (SecretOutcome::Generated { name, .. }, Some(current)) => {
                rotation = secret::rotate_generated(&secrets, hook, current, ctx.rotation_overlap)
                    .await
                    .map_err(secret_error)?;
                secret_events.append(&mut rotation.events);
                SecretOutcome::Generated {
                    name,
                    rotation: rotation.note.clone(),
                }
            }
            (outcome, _) => outcome,
        }
    } else {
        secret::observe_generated(&ctx.secrets, hook)
    };

    // Header Secrets matter only once the signing secret is usable.
    let secret = match secret {
        SecretOutcome::Generated { ref name, .. } | SecretOutcome::Referenced { ref name, .. }
            if hook.spec.headers.iter().any(|h| h.value_from.is_some()) =>
        {
            match secret::check_header_secrets(&secrets, &ctx.secrets, hook)
                .await
                .map_err(secret_error)?
            {
                Some((reason, message)) => SecretOutcome::HeaderProblem {
                    name: name.clone(),
                    reason,
                    message,
                },
                None => secret,
            }
        }
        other => other,
    };

    let previous = ctx.known_status(hook);
    let now = Time(jiff::Timestamp::now());
    let desired = status::desired_status(hook, &previous, &acceptance, &secret, &now);
    // Evaluated on every reconcile, not only on a write: a Failing held
    // back by the pacing goes out at a later one.
    let delivering_event = ctx.delivering_events.note(
        &hook.uid().unwrap_or_default(),
        previous.condition(crate::contract::conditions::DELIVERING),
        desired.condition(crate::contract::conditions::DELIVERING),
        Instant::now(),
    );
    let over_budget_event = ctx.delivering_events.over_budget_note(
        &hook.uid().unwrap_or_default(),
        hook.status
            .as_ref()
            .and_then(|s| s.delivery.as_ref())
            .and_then(|d| d.over_budget.as_ref()),
        &desired
            .condition(crate::contract::conditions::DELIVERING)
            .map(|c| c.message.clone())
            .unwrap_or_default(),
        Instant::now(),
    );
    // Transitions first, then what happened to the Secret, as people read them.
    let mut events = Vec::new();
    if desired != previous {
        let api: Api<OutboundWebhook> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "outboundwebhooks.io/v1alpha1",
            "kind": "OutboundWebhook",
            "status": &desired,
        });
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| ReconcileError::Status {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        ctx.metrics.status_writes.inc();
        let ready = desired.condition(crate::contract::conditions::READY);
        tracing::info!(
            hook = %name,
            %namespace,
            generation = ?hook.metadata.generation,
            ready = ready.map(|c| c.reason.as_str()).unwrap_or(""),
            "status updated"
        );
        events = status::transition_events(&previous, &desired);
        let secret_message = |s: &ControllerStatus| {
            s.condition(crate::contract::conditions::SECRET_READY)
                .map(|c| c.message.clone())
                .unwrap_or_default()
        };
        // Once per new message, not per reconcile.
        if rotation.refused_promote && secret_message(&previous) != secret_message(&desired) {
            events.push(EventNote {
                severity: Severity::Warning,
                reason: "SecretPromotionRefused".into(),
                note: secret_message(&desired),
            });
        }
        ctx.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hook.uid().unwrap_or_default(), (desired, Instant::now()));
    }
    events.extend(delivering_event);
    events.extend(over_budget_event);
    events.append(&mut secret_events);
    ctx.events.publish(hook.object_ref(&()), events).await;

    Ok(match secret {
        SecretOutcome::Problem { reason, .. }
            if is_accepted && (reason == secret_ready::SECRET_NOT_FOUND || reason == secret_ready::SECRET_CONFLICT) =>
        {
            Action::requeue(PROBLEM_RECHECK)
        }
        SecretOutcome::Problem { reason, .. } | SecretOutcome::HeaderProblem { reason, .. }
            if reason == secret_ready::SECRET_NOT_FOUND && (hook.spec.secret_ref.is_some() || is_accepted) =>
        {
            Action::requeue(PROBLEM_RECHECK)
        }
        // The end of a rotation's overlap, when previous-token is removed.
        _ => Action::requeue(rotation.recheck.map_or(RESYNC, |end| end.min(RESYNC))),
    })
}

/// Retries a failed reconcile with exponential backoff per hook
/// (0.5 s doubling up to 60 s).
pub fn error_policy(hook: Arc<OutboundWebhook>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(hook.uid().unwrap_or_default()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    tracing::warn!(error = %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(7);
    (Duration::from_millis(500) * 2u32.pow(exponent)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(8), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
