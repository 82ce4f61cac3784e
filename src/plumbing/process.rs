//! What every long-running subcommand needs from its process: its host
//! name (the Pod name) and a shutdown token cancelled by SIGTERM or SIGINT.

use tokio_util::sync::CancellationToken;

/// The host name (in a Pod: the Pod name), from `HOSTNAME` or the kernel;
/// `fallback` when neither is known.
pub fn host_name(fallback: &str) -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| fallback.to_string())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (logging which).
pub fn cancel_on_signal(shutdown: &CancellationToken) {
    let token = shutdown.clone();
    tokio::spawn(async move {
        let terminate = async {
            #[cfg(unix)]
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = terminate => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
}
