//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas can
//! run and only one reconciles.
//!
//! Own code rather than kube-lease-manager: that crate's followers re-read
//! the Lease only when their cached copy would expire, so a Lease released on
//! SIGTERM is not taken over until a full lease duration later; a rolling
//! update must hand over at once. Expiry is judged by how long the Lease has
//! been seen unchanged on this machine's monotonic clock (as client-go does),
//! so clock skew between nodes does not matter.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;

/// What a candidate should do after reading the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take the Lease (free, released or expired).
    Acquire,
    /// Renew our own Lease.
    Renew,
    /// Someone else holds a live Lease.
    Wait,
}

/// Decides from the Lease holder and how long this record has been seen
/// unchanged whether to take, renew or leave the Lease.
pub fn decide(holder: Option<&str>, me: &str, lease_duration: Duration, unchanged_for: Duration) -> Step {
    match holder {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::Acquire,
        Some(_) if unchanged_for > lease_duration => Step::Acquire,
        Some(_) => Step::Wait,
    }
}

/// How often to retry (followers) and renew (the leader): a third of the
/// duration, between 0.5 s and 2 s, so a released Lease is taken within
/// about a second.
pub fn retry_period(lease_duration: Duration) -> Duration {
    (lease_duration / 3).clamp(Duration::from_millis(500), Duration::from_secs(2))
}

/// Leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica took the Lease or renewals failed past the deadline.
    #[error("lost the Lease {namespace}/{name}: {why}")]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What happened.
        why: String,
    },
}

/// A Lease record as last read: holder and renew time.
type Record = (Option<String>, Option<String>);

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    /// The record last read (holder, renew time) and since when it is unchanged.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// A candidate named `identity` for Lease `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: None,
        }
    }

    /// This candidate's identity (the Lease's holderIdentity when leading).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One round: read the Lease and take or renew it when allowed.
    /// Ok(true) when this candidate holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record: Record = (
            spec.holder_identity.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        let since = match &self.observed {
            Some((seen, since)) if *seen == record => *since,
            _ => Instant::now(),
        };
        self.observed = Some((record, since));
        // A holder's own lease duration governs its expiry, not ours.
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.duration);
        let step = decide(
            spec.holder_identity.as_deref(),
            &self.identity,
            their_duration,
            since.elapsed(),
        );
        if step == Step::Wait {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: if step == Step::Renew {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if step == Step::Renew {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        });
        // replace carries the resourceVersion read above: of two candidates
        // racing for a free Lease, exactly one wins.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease; `on_attempt` hears whether
    /// the Lease could be read (for readiness).
    pub async fn acquire(&mut self, mut on_attempt: impl FnMut(bool)) {
        // Followers look twice per renew period, so a stale Lease is taken
        // within its duration plus one renew period of the last renewal.
        let period = retry_period(self.duration) / 2;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => on_attempt(true),
                Err(e) => {
                    on_attempt(false);
                    tracing::warn!(error = %e, lease = %self.name, "reading the leader Lease failed; retrying");
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Renews the Lease until it is lost; returns why. Renewals that keep
    /// failing for two thirds of the duration count as lost, so this replica
    /// stops before another may take over.
    pub async fn keep_renewing(&mut self) -> LeaderError {
        let period = retry_period(self.duration);
        let deadline = self.duration * 2 / 3;
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return self.lost("another replica holds it"),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "renewing the leader Lease failed");
                    if last_renewal.elapsed() > deadline {
                        return self.lost(&format!("no renewal for {:?}: {e}", last_renewal.elapsed()));
                    }
                }
            }
        }
    }

    fn lost(&self, why: &str) -> LeaderError {
        LeaderError::Lost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            why: why.to_string(),
        }
    }

    /// Gives the Lease up (when held) so another replica takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(3);

    #[test]
    fn a_free_or_released_lease_is_taken() {
        assert_eq!(decide(None, "me", D, Duration::ZERO), Step::Acquire);
        assert_eq!(decide(Some(""), "me", D, Duration::ZERO), Step::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(decide(Some("me"), "me", D, Duration::from_secs(100)), Step::Renew);
    }

    #[test]
    fn a_live_foreign_lease_is_left_alone_until_it_goes_stale() {
        assert_eq!(decide(Some("other"), "me", D, Duration::from_secs(2)), Step::Wait);
        assert_eq!(decide(Some("other"), "me", D, D), Step::Wait);
        assert_eq!(
            decide(Some("other"), "me", D, Duration::from_millis(3001)),
            Step::Acquire
        );
    }

    #[test]
    fn the_retry_period_is_a_third_of_the_duration_within_bounds() {
        assert_eq!(retry_period(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(retry_period(Duration::from_secs(15)), Duration::from_secs(2));
        assert_eq!(retry_period(Duration::from_secs(1)), Duration::from_millis(500));
    }
}
