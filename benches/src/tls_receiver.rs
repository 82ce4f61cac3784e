//! The fleet's receivers (scenario 8): one HTTPS listener on loopback that
//! every fleet host name resolves to, so each hook's host is a pool and a
//! TLS session of its own for a client, answering 200 after a set latency
//! over HTTP/1.1 or HTTP/2 (ALPN), counting TLS handshakes (full and
//! resumed) and requests, and recording each arrival by event id. The CA
//! and the certificate for `*.live.test` are made with openssl, as an
//! operator would make a private CA.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{
    HandshakeKind, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::ServerSessionMemoryCache,
};

use crate::{
    Error,
    receiver::{record_arrival, serve_on_own_runtime},
};

/// What the receivers counted.
#[derive(Default)]
pub struct FleetState {
    /// Requests answered.
    pub requests: AtomicU64,
    /// TLS handshakes without a resumed session.
    pub full_handshakes: AtomicU64,
    /// TLS handshakes that resumed a session.
    pub resumed_handshakes: AtomicU64,
    /// Connections that negotiated HTTP/2.
    pub h2_connections: AtomicU64,
    /// Whether arrivals are recorded (the latency phase only).
    pub recording: AtomicBool,
    /// (event id, arrival) of each request while recording.
    pub arrivals: Mutex<Vec<(String, Instant)>>,
}

/// The throwaway CA and the receivers' certificate.
pub struct Certs {
    /// The CA's PEM file (the dispatcher's `--destination-ca-file`).
    pub ca_file: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

/// Makes a CA and a certificate for `*.live.test` signed by it in `dir`.
pub fn make_certs(dir: &Path) -> Result<Certs, Error> {
    std::fs::create_dir_all(dir)?;
    let run = |args: &[&str]| -> Result<(), Error> {
        let out = Command::new("openssl").args(args).current_dir(dir).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into())
        }
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:*.live.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"])?;
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=outbound-webhooks bench CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "server.key",
    ])?;
    run(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        "/CN=fleet.live.test",
        "-out",
        "server.csr",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    Ok(Certs {
        ca_file: dir.join("ca.pem"),
        chain: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

async fn receive(
    req: Request<Incoming>,
    state: Arc<FleetState>,
    latency: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    record_arrival(&state.recording, &state.arrivals, &req, arrived);
    let _ = req.into_body().collect().await;
    tokio::time::sleep(latency).await;
    state.requests.fetch_add(1, Relaxed);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Starts the receivers on their own runtime; returns the port, the
/// counters and the runtime (which must outlive every delivery).
pub fn start(certs: &Certs, latency: Duration) -> Result<(u16, Arc<FleetState>, tokio::runtime::Runtime), Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.chain)
        .map_err(|e| format!("reading {}: {e}", certs.chain.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading {}: {e}", certs.chain.display()))?;
    let key = PrivateKeyDer::from_pem_file(&certs.key).map_err(|e| format!("reading {}: {e}", certs.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the receivers' certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Room for a session per fleet host, so a client that resumes can.
    config.session_storage = ServerSessionMemoryCache::new(8192);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let state = Arc::new(FleetState::default());
    let st = state.clone();
    let (port, runtime) = serve_on_own_runtime("fleet-receiver", move |stream| {
        let (st, acceptor) = (st.clone(), acceptor.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let (_, session) = tls.get_ref();
            match session.handshake_kind() {
                Some(HandshakeKind::Resumed) => st.resumed_handshakes.fetch_add(1, Relaxed),
                _ => st.full_handshakes.fetch_add(1, Relaxed),
            };
            if session.alpn_protocol() == Some(b"h2") {
                st.h2_connections.fetch_add(1, Relaxed);
            }
            let service = service_fn(move |req| receive(req, st.clone(), latency));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })?;
    Ok((port, state, runtime))
}
