//! Why the controller stopped.

use super::leader;
use crate::ops_server;

/// The controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No Kubernetes client configuration was usable.
    #[error("loading the Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Client(kube::Error),
    /// The ops endpoints could not be served.
    #[error(transparent)]
    OpsServer(#[from] ops_server::OpsServerError),
    /// Leadership was lost; the process exits so it never writes as a follower.
    #[error(transparent)]
    Leadership(#[from] leader::LeaderError),
    /// The ops endpoints stopped while leading.
    #[error("the ops endpoints stopped")]
    OpsStopped,
    /// A cache could not be filled.
    #[error("waiting for the {0} cache: the watch stopped")]
    Cache(&'static str),
}
