//! The operations endpoints every long-running process serves:
//! `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;

/// Whether the process is ready to serve; shared between the work loop that
/// sets it and the `/readyz` handler that reports it.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (true) or not (false).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The ops server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsServerError {
    /// Binding the listen address failed.
    #[error("binding the ops endpoints to {addr}: {source}")]
    Bind {
        /// The address from `--http-addr`.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving the ops endpoints: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OpsServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OpsServerError::Bind { addr, source })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { registry, readiness });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(OpsServerError::Serve)
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}"),
        ),
    }
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
