//! The fast receiver: hyper on its own runtime in this process, answering
//! 200 at once on `/fast` and after [`SLOW_RECEIVER`] on `/slow`.
//!
//! It shares this process's clock with the loaders, so scenario 2 measures
//! XADD to arrival without comparing clocks of two processes.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};

use crate::Error;

/// How long `/slow` takes to answer (scenario 3's slow hook).
pub const SLOW_RECEIVER: Duration = Duration::from_secs(5);

/// Counts arrivals per path (`/fast`, `/slow`); records (event id, arrival)
/// while `recording` is on.
#[derive(Default)]
pub struct ReceiverState {
    /// Requests answered on `/fast`.
    pub fast: AtomicU64,
    /// Requests answered on `/slow`.
    pub slow: AtomicU64,
    /// OTLP exports answered on `/v1/traces` (the dispatcher's spans with
    /// tracing on; not deliveries).
    pub spans: AtomicU64,
    /// Whether to record arrivals (only scenario 2 needs them).
    pub recording: AtomicBool,
    /// `webhook-id` and arrival time of each request while recording.
    pub arrivals: Mutex<Vec<(String, Instant)>>,
}

async fn receive(req: Request<Incoming>, state: Arc<ReceiverState>) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let slow = req.uri().path() == "/slow";
    if req.uri().path() == "/v1/traces" {
        let _ = req.into_body().collect().await;
        state.spans.fetch_add(1, Relaxed);
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    record_arrival(&state.recording, &state.arrivals, &req, arrived);
    let _ = req.into_body().collect().await;
    if slow {
        tokio::time::sleep(SLOW_RECEIVER).await;
        state.slow.fetch_add(1, Relaxed);
    } else {
        state.fast.fetch_add(1, Relaxed);
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Records (the request's `webhook-id`, `arrived`) in `arrivals` while
/// `recording` is on.
pub fn record_arrival(
    recording: &AtomicBool,
    arrivals: &Mutex<Vec<(String, Instant)>>,
    req: &Request<Incoming>,
    arrived: Instant,
) {
    if recording.load(Relaxed) {
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        arrivals.lock().expect("arrivals lock").push((id, arrived));
    }
}

/// Starts the receiver on its own runtime (so the driver's runtime never
/// delays an answer); returns its port and state, and the runtime, which
/// must outlive every delivery.
pub fn start_receiver() -> Result<(u16, Arc<ReceiverState>, tokio::runtime::Runtime), Error> {
    let state = Arc::new(ReceiverState::default());
    let st = state.clone();
    let (port, runtime) = serve_on_own_runtime("receiver", move |stream| {
        let st = st.clone();
        async move {
            let service = service_fn(move |req| receive(req, st.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
    })?;
    Ok((port, state, runtime))
}

/// Listens on a free port of 127.0.0.1 from a runtime of its own (two
/// threads named `name`) and runs `serve` on each accepted connection in
/// a task of its own; returns the port and the runtime.
pub fn serve_on_own_runtime<F, Fut>(name: &str, serve: F) -> Result<(u16, tokio::runtime::Runtime), Error>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    });
    Ok((port, runtime))
}

/// Waits until `counter` has grown by `target` or `timeout` passed; returns
/// how many arrived and when the last one did.
pub async fn wait_count(counter: &AtomicU64, start: u64, target: u64, timeout: Duration) -> (u64, Instant) {
    let deadline = Instant::now() + timeout;
    let mut last = counter.load(Relaxed);
    let mut last_at = Instant::now();
    loop {
        let now = counter.load(Relaxed);
        if now != last {
            last = now;
            last_at = Instant::now();
        }
        if now - start >= target || Instant::now() > deadline {
            return (now - start, last_at);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
